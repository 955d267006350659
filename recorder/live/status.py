"""The live capture's status, metrics and control requests (see :mod:`recorder.live.service` and
:mod:`recorder.live.control_socket`): what ``callrec status`` shows, what Prometheus reads, and the checks of
``callrec calls record|pause|resume`` (the asking user's role and scope, every request audited)."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping
from typing import Any

from callrec.recorder.live.control_socket import Peer
from callrec.recorder.live.notify import Metric
from callrec.recorder.live.state import RunningCapture
from callrec.recorder.policy.modes import Signal
from callrec.store.access.principals import Principal, Users, resolve_principal
from callrec.store.catalogue.db import iso_from_ns
from callrec.store.errors import AccessDenied

log = logging.getLogger(__name__)

NS = 1_000_000_000
ACTIONS = ("start", "stop", "pause", "resume")


def status(capture: RunningCapture) -> dict[str, Any]:
    stats = capture.source.stats()
    disk = shutil.disk_usage(capture.home.root)
    journal = capture.journal.stats() if capture.journal is not None else None
    now_ns = time.time_ns() + capture.clock_offset_ns
    return {
        "source": capture.options.source_name,
        "uptime_s": round(time.monotonic() - capture.started_monotonic, 1),
        "calls_in_progress": [
            {
                "call_id": d.call_id,
                "caller": d.caller,
                "callee": d.callee,
                "state": str(d.state),
                "started_at": iso_from_ns(d.started_ns),
                "seconds": round((now_ns - d.started_ns) / NS, 1),
                "commands": [s.action for s in capture.commands.get(d.call_id, [])],
            }
            for d in capture.tracker.in_progress()
        ],
        "packets_per_s": round(capture.pps, 1),
        "frames": stats.frames,
        "kernel_drops": stats.kernel_drops,
        "recorded": capture.counts.recorded,
        "not_recorded": dict(capture.counts.not_recorded),
        "failed": capture.counts.failed,
        "interrupted": capture.counts.interrupted,
        "recovered": capture.counts.recovered,
        "waiting": capture.saver_state["waiting"],
        "saving": len(capture.unsaved),
        "lost": capture.counts.lost,
        "journal_bytes": journal.bytes_used if journal is not None else 0,
        "media_memory_bytes": capture.tracker.memory_bytes(),
        "spill_bytes": capture.spill.stats().bytes_on_disk,
        "disk_free_bytes": disk.free,
        "disk_used_bytes": disk.used,
        "last_error": capture.last_error or capture.saver_state["last_error"],
        "config_files": [str(p) for p in capture.config.files],
    }


def status_line(capture: RunningCapture) -> str:
    return (
        f"{capture.tracker.calls_in_progress if hasattr(capture, 'tracker') else 0} calls, "
        f"{capture.pps:.0f} pkt/s, {capture.source.stats().kernel_drops} drops, "
        f"{capture.counts.recorded} recorded"
        + (f", {error}" if (error := capture.last_error or capture.saver_state["last_error"]) else "")
    )


def metrics(capture: RunningCapture) -> list[Metric]:
    stats = capture.source.stats()
    journal = capture.journal.stats() if capture.journal is not None else None
    return [
        ("callrec_calls_active", "gauge", "Calls in progress.", [({}, capture.tracker.calls_in_progress)]),
        (
            "callrec_media_memory_bytes",
            "gauge",
            "Media payload of calls in progress held in memory.",
            [({}, capture.tracker.memory_bytes())],
        ),
        (
            "callrec_spill_bytes",
            "gauge",
            "Media of calls in progress spilled to sealed files.",
            [({}, capture.spill.stats().bytes_on_disk)],
        ),
        ("callrec_calls_recorded_total", "counter", "Calls recorded.", [({}, capture.counts.recorded)]),
        (
            "callrec_calls_skipped_total",
            "counter",
            "Calls not recorded, by reason.",
            [({"reason": r}, n) for r, n in sorted(capture.counts.not_recorded.items())],
        ),
        (
            "callrec_calls_failed_total",
            "counter",
            "Calls whose processing failed.",
            [({}, capture.counts.failed)],
        ),
        (
            "callrec_calls_lost_total",
            "counter",
            "Calls lost while storage was unavailable.",
            [({}, capture.counts.lost)],
        ),
        (
            "callrec_calls_waiting",
            "gauge",
            "Calls waiting for storage.",
            [({}, capture.saver_state["waiting"])],
        ),
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
                    {"error": capture.last_error or capture.saver_state["last_error"]},
                    1 if capture.last_error or capture.saver_state["last_error"] else 0,
                )
            ],
        ),
    ]


def handle_request(capture: RunningCapture, message: Mapping[str, Any], peer: Peer) -> dict[str, Any]:
    command = message.get("command")
    user = peer.user
    try:
        principal = resolve_principal(Users(capture.catalogue.db), user, None)
    except AccessDenied as exc:
        capture.audit.record(
            user=user, action=f"capture.{command}", outcome="denied", detail={"reason": str(exc)}
        )
        return {"ok": False, "error": str(exc)}
    if command == "status":
        if not principal.allows("capture.status"):
            capture.audit.record(user=user, action="capture.status", outcome="denied")
            return {"ok": False, "error": f"{user} ({principal.role}) may not see the capture's status"}
        return {"ok": True, **status(capture)}
    if command == "signal":
        return _signal(capture, message, principal, user)
    return {"ok": False, "error": f"unknown command {command!r} (status, signal)"}


def _signal(
    capture: RunningCapture, message: Mapping[str, Any], principal: Principal, user: str
) -> dict[str, Any]:
    action, selector = message.get("action"), str(message.get("call") or "")
    if action not in ACTIONS:
        return {"ok": False, "error": f"action must be one of {', '.join(ACTIONS)}"}
    matches = [d for d in capture.tracker.in_progress() if selector in (d.call_id, d.caller, d.callee)]
    detail = {"call": selector, "action": action}
    if not principal.allows("calls.control"):
        capture.audit.record(user=user, action="calls.control", outcome="denied", detail=detail)
        return {"ok": False, "error": f"{user} ({principal.role}) may not control recordings"}
    if len(matches) != 1:
        found = ", ".join(f"{d.call_id} ({d.caller} -> {d.callee})" for d in matches)
        why = f"{len(matches)} calls in progress match {selector!r}" + (f": {found}" if found else "")
        return {"ok": False, "error": why + "; give the Call-ID (callrec status lists them)"}
    dialog = matches[0]
    row = {
        "queue": dialog.headers.get(capture.config.queue_header),
        "caller": dialog.caller,
        "callee": dialog.callee,
    }
    if not principal.can_see(row):
        capture.audit.record(
            user=user,
            action="calls.control",
            outcome="denied",
            detail={**detail, "reason": "outside scope"},
        )
        return {"ok": False, "error": f"the call is outside the scope of {user}"}
    at = time.time_ns() + capture.clock_offset_ns
    capture.commands.setdefault(dialog.call_id, []).append(
        Signal(at, str(action), f"{action} by {user} (control socket)")
    )
    capture.audit.record(user=user, action="calls.control", detail={**detail, "call_id": dialog.call_id})
    log.info(f"{user} asked to {action} the recording of {dialog.call_id}")
    return {"ok": True, "call_id": dialog.call_id, "action": action, "at": iso_from_ns(at)}
