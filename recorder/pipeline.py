"""The offline pipeline: capture files -> calls -> stereo recordings -> catalogue.

One call whose processing fails is stored as failed with its reason; the others go on. Every
packet that is skipped is counted by reason (frames, SIP and RTP counters together).
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from capture.calls import CallState, CapturedCall
from capture.frames import FrameDecoder
from capture.pcapfile import open_capture
from capture.tracker import CallTracker, TrackerConfig
from decode.mp3 import mp3_chunks
from decode.render import RenderedCall, render_call
from decode.wav import wav_chunks
from recorder.config import Config
from recorder.decide import CallDecision, decide_call, keep_channels
from recorder.modes import REDACTED, RecordingPlan, Span, plan_recording, stored_samples
from recorder.records import call_row, event_rows, leg_rows
from store.catalogue import Catalogue, iso_from_ns
from store.home import Home
from store.keys import KeyDirectory
from store.retention import expiry_ns
from store.vault import SEALED_SUFFIX, SealedRecording, Vault

ProgressCallback = Callable[[int], None]

# Catalogue rows are written in batched transactions of this many calls.
CATALOGUE_BATCH = 64


@dataclass(slots=True)
class FileReport:
    """What one capture file gave: frames read, calls found and recorded, what was skipped."""

    path: str
    frames: int = 0
    calls_found: int = 0
    recorded: int = 0
    not_recorded: collections.Counter[str] = field(default_factory=collections.Counter)
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ImportReport:
    files: list[str] = field(default_factory=list)
    per_file: list[FileReport] = field(default_factory=list)
    packets: int = 0
    calls_found: int = 0
    recorded: int = 0
    created_ids: list[int] = field(default_factory=list)
    already_present: int = 0
    not_recorded: collections.Counter[str] = field(default_factory=collections.Counter)
    failed: int = 0
    skipped_packets: collections.Counter[str] = field(default_factory=collections.Counter)
    warnings: list[str] = field(default_factory=list)  # e.g. a capture cut in the middle of a record
    counters: collections.Counter[str] = field(default_factory=collections.Counter)


# Counters that describe what was seen or done, not packets that were skipped.
INFO_COUNTERS = frozenset(
    {
        "udp_datagrams",
        "ip_fragment_pending",
        "reassembled",  # frames
        "sip_messages",
        "sip_keepalive",
        "rtp_packets",
        "rtcp_packets",
        "calls_seen",
        "calls_finished",
        "rtp_adopted_before_sdp",
        "rtp_peers_learned",
        "rtp_endpoint_shared",
        "zrtp_packets",  # tracker
        "tcp_segments",
        "tcp_out_of_order",
        "tcp_retransmission",
        "tcp_resync",  # SIP over TCP
        "unsignalled_calls",
        "unsignalled_streams",  # RTP-only calls reconstructed without SIP
        "sip_tls_connections",
        "sip_websocket_connections",  # signalling seen but not readable
    }
)


def check_captures(paths: Sequence[str | os.PathLike[str]]) -> None:
    """Check every file's format before anything is written (raises ``UnsupportedFormat``)."""
    for path in paths:
        open_capture(path).close()


def import_captures(
    paths: Sequence[str | os.PathLike[str]],
    home: Home,
    *,
    progress: ProgressCallback | None = None,
    tracker_config: TrackerConfig | None = None,
    config: Config | None = None,
) -> ImportReport:
    """Import capture files into ``home``; returns what was found, recorded and skipped.

    Recordings are sealed to the home's current recording key: without keys (``callrec keys
    init``) nothing is imported (:class:`store.errors.KeyMissing`)."""
    check_captures(paths)
    home.open(create=True)
    vault = Vault(KeyDirectory(home.keys), home.recording_store())
    vault.check_ready()
    config = config or Config.defaults()
    if tracker_config is None and config.capture:
        tracker_config = TrackerConfig(**config.capture)
    importer = _Importer(home, vault, config, tracker_config)
    try:
        for path in paths:
            importer.import_file(Path(path), progress)
    finally:
        importer.close()
    return importer.report


_PendingRow = tuple[
    dict[str, object], list[dict[str, object]], list[dict[str, object]], tuple[str, bytes] | None
]


class _Importer:
    def __init__(
        self, home: Home, vault: Vault, config: Config, tracker_config: TrackerConfig | None
    ) -> None:
        self.home = home
        self.catalogue = Catalogue(home.catalogue_path)
        self.vault = vault
        self.recordings = vault.recordings
        self.config = config
        self.tracker_config = tracker_config
        self.report = ImportReport()
        self._rows: list[_PendingRow] = []
        self._unreadable: dict[frozenset[str], str] = {}  # the current file's unreadable signalling

    def import_file(self, path: Path, progress: ProgressCallback | None) -> None:
        self.report.files.append(str(path))
        before = (self.report.packets, self.report.calls_found, self.report.recorded)
        not_recorded_before = collections.Counter(self.report.not_recorded)
        frames = FrameDecoder()
        self._unreadable = frames.streams.unreadable
        tracker = CallTracker(self.tracker_config)
        source = path.name
        done = 0
        with open_capture(path) as reader:
            for batch in reader.batches():
                self.report.packets += len(batch)
                for call in tracker.feed(frames.decode(batch)):
                    self._save(call, source)
                if progress is not None:
                    position = reader.position
                    progress(position - done)
                    done = position
        self.report.warnings += [f"{path.name}: {w}" for w in reader.warnings]
        for call in tracker.flush():
            self._save(call, source)
        frames.finish()
        self._flush_rows()
        file_report = FileReport(
            str(path),
            frames=self.report.packets - before[0],
            calls_found=self.report.calls_found - before[1],
            recorded=self.report.recorded - before[2],
            not_recorded=self.report.not_recorded - not_recorded_before,
            warnings=list(reader.warnings),
        )
        for counters in (frames.counters, tracker.counters):
            for key, value in counters.items():
                self.report.counters[key] += value
                if key not in INFO_COUNTERS and not key.startswith("decapsulated_") and value:
                    self.report.skipped_packets[key] += value
                    file_report.skipped[key] += value
        self.report.per_file.append(file_report)

    def _save(self, call: CapturedCall, source: str) -> None:
        self.report.calls_found += 1
        if self.catalogue.find_call(call.call_id, call.started_ns) is not None:
            self.report.already_present += 1  # imported before: nothing to render or write
            return
        rendered: RenderedCall | None = None
        sealed: SealedRecording | None = None
        plan: RecordingPlan | None = None
        stored_s = 0.0
        error = None
        why = None
        decided = decide_call(call, self.config)
        try:
            why = decided.blocked
            if why is None:  # the rules select this call: render, then seal what they allow
                rendered = render_call(call)
                if rendered.samples.shape[0] > 0:
                    plan, sealed, stored_s = self._record(call, rendered, decided)
                why = plan.blocked if plan is not None and plan.blocked else None
                why = why or not_recorded_reason(call, recorded=sealed is not None)
        except Exception as exc:  # one broken call never stops the others
            error = f"{type(exc).__name__}: {exc}"
            self.report.failed += 1
            why = "processing failed"
            sealed = None
        if sealed is not None:
            self.report.recorded += 1
        else:
            self.report.not_recorded[why or "no media"] += 1
        stored = sealed.stored if sealed is not None else None
        row = call_row(call, rendered, stored, source=source, error=error, not_recorded=why)
        decision = decided.decision
        row.update(
            queue=decided.queue, direction=decided.direction, rule=decision.rule, rule_reason=decision.reason
        )
        if plan is not None:
            row.update(plan_fields(plan, stored_s if sealed is not None else None))
            if sealed is not None:
                row.update(recording_format=decision.format, recording_seconds=round(stored_s, 3))
        retention = self.config.retention_class(decision.retention)
        expires = expiry_ns(call.started_ns, retention)
        row.update(retention_class=retention.name, expires_ns=expires, expires_at=iso_from_ns(expires))
        wrapped = None
        if sealed is not None:
            row.update(sealed.row_fields())
            wrapped = (sealed.key_fingerprint, sealed.wrapped_key)
        row.update(self.vault.sign(row))
        events = event_rows(call, rendered)
        if plan is not None:
            events = plan_events(events, plan)
        if call.state == CallState.UNSIGNALLED:
            events += unreadable_signalling(call, self._unreadable)
        self._rows.append((row, leg_rows(call, rendered), events, wrapped))
        if len(self._rows) >= CATALOGUE_BATCH:
            self._flush_rows()

    def _record(
        self, call: CapturedCall, rendered: RenderedCall, decided: CallDecision
    ) -> tuple[RecordingPlan, SealedRecording | None, float]:
        """Plan which spans are kept (on-demand, pause, consent), then seal only those, in the
        rule's format and channels. Returns the plan, the sealed recording and its seconds."""
        decision = decided.decision
        controls = self.config.controls
        plan = plan_recording(call, rendered, decision, controls, self.config.consent)
        if plan.blocked:
            return plan, None, 0.0
        samples, _ = stored_samples(rendered, plan, controls.pause_fill)
        if samples.shape[0] == 0:
            return plan, None, 0.0
        samples = keep_channels(samples, decision.channels)
        rate = rendered.sample_rate_hz
        name = recording_name(call, f".{decision.format}{SEALED_SUFFIX}")
        chunks = mp3_chunks(samples, rate) if decision.format == "mp3" else wav_chunks(samples, rate)
        return plan, self.vault.seal(name, chunks, sync=False), samples.shape[0] / rate

    def _flush_rows(self) -> None:
        """Make the batch's recording files durable (one syncfs), then commit their rows."""
        if not self._rows:
            return
        self.recordings.sync_all()
        results = self.catalogue.add_calls(self._rows)
        for call_id, created in results:
            if created:
                self.report.created_ids.append(call_id)
            else:  # the same call twice in this import (a capture given twice)
                self.report.already_present += 1
        self._rows.clear()

    def close(self) -> None:
        self._flush_rows()
        self.catalogue.close()


def unreadable_signalling(
    call: CapturedCall, unreadable: Mapping[frozenset[str], str]
) -> list[dict[str, object]]:
    """An event naming the signalling of a media-only call when the capture shows it but it cannot
    be read (SIP over TLS, SIP over WebSocket) between the same two hosts."""
    hosts = frozenset(party.rsplit(":", 1)[0].strip("[]") for party in (call.caller, call.callee))
    what = unreadable.get(hosts)
    if what is None:
        return []
    detail = f"{what} between {' and '.join(sorted(hosts))}: the call's signalling cannot be read"
    return [{"ts_ns": call.started_ns, "kind": "note", "summary": "signalling encrypted", "detail": detail}]


def plan_fields(plan: RecordingPlan, stored_s: float | None) -> dict[str, object]:
    """The catalogue's columns for what the recording modes decided."""

    def spans(items: list[Span], offsets: bool) -> str:
        rows = []
        at = 0.0
        for span in items:
            row: dict[str, object] = {"from": iso_from_ns(span.start_ns), "to": iso_from_ns(span.end_ns)}
            if offsets:
                row["at_s"] = round(at, 3)
                at += span.seconds
            if span.by:
                row["by"] = span.by
            rows.append(row)
        return json.dumps(rows, separators=(",", ":"))

    consent = plan.consent
    fields: dict[str, object] = {
        "consent": consent.state if not consent.how else f"{consent.state}: {consent.how}",
        "consent_at": iso_from_ns(consent.at_ns) if consent.at_ns is not None else None,
        "paused_spans": spans(plan.paused, False) if plan.paused else None,
    }
    if stored_s is not None:
        fields["recorded_spans"] = spans(plan.recorded, True)
        if plan.recorded:
            fields["recording_started_at"] = iso_from_ns(plan.recorded[0].start_ns)
    return fields


def plan_events(events: list[dict[str, object]], plan: RecordingPlan) -> list[dict[str, object]]:
    """The call's events with the modes' own (recording started/stopped, paused/resumed, consent),
    and every key pressed during a pause redacted."""
    for row in events:
        ts = row["ts_ns"]
        if row["kind"] == "dtmf" and isinstance(ts, int) and plan.redacts(ts):
            row.update(summary=REDACTED, detail="keyed during a pause: not kept")
    events += [
        {"ts_ns": e.ts_ns, "kind": e.kind, "summary": e.summary, "sender": e.sender, "detail": e.detail}
        for e in plan.events
    ]
    events.sort(key=lambda row: int(row["ts_ns"]))  # type: ignore[call-overload]
    return events


def not_recorded_reason(call: CapturedCall, *, recorded: bool) -> str | None:
    """Why a call has no recording, or a silent channel; ``None`` when both sides were recorded."""
    encrypted = [d for d, leg in call.legs.items() if leg.encrypted and len(leg.packets)]
    if not recorded:
        return "media encrypted: cannot record" if encrypted else "no media"
    if encrypted:
        return f"{', '.join(encrypted)} media encrypted: cannot record (silent channel)"
    return None


def recording_name(call: CapturedCall, suffix: str = ".wav") -> str:
    """``recordings/YYYY/MM/DD/<start>-<digest>.wav``: known before the catalogue row exists, so
    the file can be written (atomically) first and the row after it."""
    started = datetime.fromtimestamp(call.started_ns // 1_000_000_000, UTC)
    digest = hashlib.sha256(f"{call.call_id}\0{call.started_ns}".encode()).hexdigest()[:16]
    return f"recordings/{started:%Y/%m/%d}/{started:%Y%m%dT%H%M%SZ}-{digest}{suffix}"
