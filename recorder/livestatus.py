"""The live capture's status, metrics and control requests (see :mod:`recorder.live` and
:mod:`recorder.control`): what ``callrec status`` shows, what Prometheus reads, and the checks of
``callrec calls record|pause|resume`` (the asking user's role and scope, every request audited)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from recorder.control import Peer
from recorder.modes import Signal
from recorder.notify import Metric
from store.access import Principal, Users, resolve_principal
from store.catalogue import iso_from_ns
from store.errors import AccessDenied

if TYPE_CHECKING:
    from recorder.live import CaptureService

NS = 1_000_000_000
ACTIONS = ("start", "stop", "pause", "resume")


def status(self: CaptureService) -> dict[str, Any]:
    stats = self.source.stats()
    disk = shutil.disk_usage(self.home.root)
    journal = self.journal.stats() if self.journal is not None else None
    now_ns = time.time_ns() + self.clock_offset_ns
    return {
        "source": self.options.source_name,
        "uptime_s": round(time.monotonic() - self._started, 1),
        "calls_in_progress": [
            {
                "call_id": d.call_id,
                "caller": d.caller,
                "callee": d.callee,
                "state": str(d.state),
                "started_at": iso_from_ns(d.started_ns),
                "seconds": round((now_ns - d.started_ns) / NS, 1),
                "commands": [s.action for s in self.commands.get(d.call_id, [])],
            }
            for d in self.tracker.in_progress()
        ],
        "packets_per_s": round(self.pps, 1),
        "frames": stats.frames,
        "kernel_drops": stats.kernel_drops,
        "recorded": self.counts.recorded,
        "not_recorded": dict(self.counts.not_recorded),
        "failed": self.counts.failed,
        "interrupted": self.counts.interrupted,
        "recovered": self.counts.recovered,
        "waiting": self.saver_state["waiting"],
        "saving": len(self.unsaved),
        "lost": self.counts.lost,
        "journal_bytes": journal.bytes_used if journal is not None else 0,
        "media_memory_bytes": self.tracker.memory_bytes(),
        "spill_bytes": self.spill.stats().bytes_on_disk,
        "disk_free_bytes": disk.free,
        "disk_used_bytes": disk.used,
        "last_error": self.last_error or self.saver_state["last_error"],
        "config_files": [str(p) for p in self.config.files],
    }


def status_line(self: CaptureService) -> str:
    return (
        f"{self.tracker.calls_in_progress if hasattr(self, 'tracker') else 0} calls, "
        f"{self.pps:.0f} pkt/s, {self.source.stats().kernel_drops} drops, "
        f"{self.counts.recorded} recorded"
        + (f", {error}" if (error := self.last_error or self.saver_state["last_error"]) else "")
    )


def metrics(self: CaptureService) -> list[Metric]:
    stats = self.source.stats()
    journal = self.journal.stats() if self.journal is not None else None
    return [
        ("callrec_calls_active", "gauge", "Calls in progress.", [({}, self.tracker.calls_in_progress)]),
        (
            "callrec_media_memory_bytes",
            "gauge",
            "Media payload of calls in progress held in memory.",
            [({}, self.tracker.memory_bytes())],
        ),
        (
            "callrec_spill_bytes",
            "gauge",
            "Media of calls in progress spilled to sealed files.",
            [({}, self.spill.stats().bytes_on_disk)],
        ),
        ("callrec_calls_recorded_total", "counter", "Calls recorded.", [({}, self.counts.recorded)]),
        (
            "callrec_calls_skipped_total",
            "counter",
            "Calls not recorded, by reason.",
            [({"reason": r}, n) for r, n in sorted(self.counts.not_recorded.items())],
        ),
        (
            "callrec_calls_failed_total",
            "counter",
            "Calls whose processing failed.",
            [({}, self.counts.failed)],
        ),
        (
            "callrec_calls_lost_total",
            "counter",
            "Calls lost while storage was unavailable.",
            [({}, self.counts.lost)],
        ),
        ("callrec_calls_waiting", "gauge", "Calls waiting for storage.", [({}, self.saver_state["waiting"])]),
        (
            "callrec_packets_total",
            "counter",
            "Frames captured.",
            [({"interface": i.name}, i.frames) for i in stats.interfaces],
        ),
        (
            "callrec_kernel_drops_total",
            "counter",
            "Frames the kernel dropped (ring full).",
            [({"interface": i.name}, i.kernel_drops) for i in stats.interfaces],
        ),
        (
            "callrec_spool_bytes",
            "gauge",
            "Bytes in the crash journal.",
            [({}, journal.bytes_used if journal else 0)],
        ),
        (
            "callrec_last_error",
            "gauge",
            "1 while the last operation failed.",
            [
                (
                    {"error": self.last_error or self.saver_state["last_error"]},
                    1 if self.last_error or self.saver_state["last_error"] else 0,
                )
            ],
        ),
    ]


def handle_request(self: CaptureService, message: Mapping[str, Any], peer: Peer) -> dict[str, Any]:
    command = message.get("command")
    user = peer.user
    try:
        principal = resolve_principal(Users(self.catalogue.db), user, None)
    except AccessDenied as exc:
        self.audit.record(
            user=user, action=f"capture.{command}", outcome="denied", detail={"reason": str(exc)}
        )
        return {"ok": False, "error": str(exc)}
    if command == "status":
        if not principal.allows("capture.status"):
            self.audit.record(user=user, action="capture.status", outcome="denied")
            return {"ok": False, "error": f"{user} ({principal.role}) may not see the capture's status"}
        return {"ok": True, **status(self)}
    if command == "signal":
        return _signal(self, message, principal, user)
    return {"ok": False, "error": f"unknown command {command!r} (status, signal)"}


def _signal(
    self: CaptureService, message: Mapping[str, Any], principal: Principal, user: str
) -> dict[str, Any]:
    action, selector = message.get("action"), str(message.get("call") or "")
    if action not in ACTIONS:
        return {"ok": False, "error": f"action must be one of {', '.join(ACTIONS)}"}
    matches = [d for d in self.tracker.in_progress() if selector in (d.call_id, d.caller, d.callee)]
    detail = {"call": selector, "action": action}
    if not principal.allows("calls.control"):
        self.audit.record(user=user, action="calls.control", outcome="denied", detail=detail)
        return {"ok": False, "error": f"{user} ({principal.role}) may not control recordings"}
    if len(matches) != 1:
        found = ", ".join(f"{d.call_id} ({d.caller} -> {d.callee})" for d in matches)
        why = f"{len(matches)} calls in progress match {selector!r}" + (f": {found}" if found else "")
        return {"ok": False, "error": why + "; give the Call-ID (callrec status lists them)"}
    dialog = matches[0]
    row = {
        "queue": dialog.headers.get(self.config.queue_header),
        "caller": dialog.caller,
        "callee": dialog.callee,
    }
    if not principal.can_see(row):
        self.audit.record(
            user=user,
            action="calls.control",
            outcome="denied",
            detail={**detail, "reason": "outside scope"},
        )
        return {"ok": False, "error": f"the call is outside the scope of {user}"}
    at = time.time_ns() + self.clock_offset_ns
    self.commands.setdefault(dialog.call_id, []).append(
        Signal(at, str(action), f"{action} by {user} (control socket)")
    )
    self.audit.record(user=user, action="calls.control", detail={**detail, "call_id": dialog.call_id})
    self.log(f"{user} asked to {action} the recording of {dialog.call_id}")
    return {"ok": True, "call_id": dialog.call_id, "action": action, "at": iso_from_ns(at)}
