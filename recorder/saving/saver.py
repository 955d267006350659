"""Finished calls to sealed recordings and catalogue rows: what the offline import and the live
capture share.

For each call: the rules decide whether audio may be kept (:mod:`recorder.policy.decide`), the recording
modes which part (:mod:`recorder.policy.modes`: on-demand spans, pauses, consent); only that part is
rendered into the rule's format and channels and sealed (:mod:`store.crypto.vault`), the file written
atomically before its row. Rows are committed in batches (one ``syncfs`` for the batch's files
first). One call whose processing fails is stored as failed with its reason; the others go on.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from callrec.capture.model.calls import CallState, CapturedCall
from callrec.decode.formats.mp3 import mp3_chunks
from callrec.decode.formats.wav import wav_chunks
from callrec.decode.render import RenderedCall, render_call
from callrec.recorder.config import Config
from callrec.recorder.policy.decide import CallDecision, decide_call, keep_channels
from callrec.recorder.policy.modes import (
    REDACTED,
    RecordingPlan,
    Signal,
    Span,
    plan_recording,
    stored_samples,
)
from callrec.recorder.saving.records import call_row, event_rows, leg_rows
from callrec.store.catalogue.db import Catalogue, iso_from_ns
from callrec.store.crypto.vault import SEALED_SUFFIX, SealedRecording, Vault
from callrec.store.errors import StorageUnreachable, StoreError
from callrec.store.retention.policy import expiry_ns

log = logging.getLogger(__name__)

# Catalogue rows are written in batched transactions of this many calls.
CATALOGUE_BATCH = 64

PendingRow = tuple[
    dict[str, object], list[dict[str, object]], list[dict[str, object]], tuple[str, bytes] | None
]


class StorageUnavailable(Exception):
    """The recordings directory or the catalogue cannot be written (disk full, read-only, locked): the
    call itself is fine and can be saved again later."""


class SaveCounts(Protocol):
    """Where :class:`CallSaver` counts what it did (an import's report, the live capture's totals)."""

    calls_found: int
    recorded: int
    already_present: int
    failed: int
    not_recorded: collections.Counter[str]
    created_ids: list[int]


@dataclass(slots=True)
class SaveTotals:
    """A plain :class:`SaveCounts` (the live capture's totals; its saver process's own)."""

    calls_found: int = 0
    recorded: int = 0
    already_present: int = 0
    failed: int = 0
    not_recorded: collections.Counter[str] = field(default_factory=collections.Counter)
    created_ids: list[int] = field(default_factory=list)


class CallSaver:
    """Saves finished calls into one home: ``save`` each, ``flush_rows`` to commit, ``close``."""

    def __init__(self, catalogue: Catalogue, vault: Vault, config: Config, counts: SaveCounts) -> None:
        self.catalogue = catalogue
        self.vault = vault
        self.recordings = vault.recordings
        self.config = config
        self.counts = counts
        self.unreadable: Mapping[frozenset[str], str] = {}  # signalling seen but unreadable (TLS, WS)
        self._rows: list[PendingRow] = []
        self._pending_keys: set[tuple[str, int]] = set()  # (Call-ID, start) of the rows not committed yet

    @property
    def pending(self) -> int:
        """Calls saved but not committed yet."""
        return len(self._rows)

    def save(
        self,
        call: CapturedCall,
        source: str,
        *,
        commands: Sequence[Signal] = (),
        end_reason: str | None = None,
    ) -> dict[str, object] | None:
        """Render, seal and queue the row of one finished call; returns the row, or ``None`` when the
        call is in the catalogue already. ``commands`` are start/stop/pause/resume requests given to the
        live capture for it; ``end_reason`` replaces the capture's (a call cut short by a shutdown or a
        crash). :class:`StorageUnavailable` leaves nothing counted or queued: save it again later."""
        if end_reason is not None:
            call = replace(call, end_reason=end_reason)
        try:
            present = self.catalogue.find_call(call.call_id, call.started_ns) is not None
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"catalogue: {exc}") from exc
        if present or (call.call_id, call.started_ns) in self._pending_keys:
            self.counts.calls_found += 1
            self.counts.already_present += 1  # imported before: nothing to render or write
            return None
        rendered: RenderedCall | None = None
        sealed: SealedRecording | None = None
        plan: RecordingPlan | None = None
        stored_s = 0.0
        error = None
        why = None
        decided = decide_call(call, self.config)
        retention = self.config.retention_class(decided.decision.retention)
        expires = expiry_ns(call.started_ns, retention)
        try:
            why = decided.blocked
            if why is None:  # the rules select this call: render, then seal what they allow
                rendered = render_call(call)
                if rendered.samples.shape[0] > 0:
                    plan, sealed, stored_s = self._record(call, rendered, decided, commands, expires)
                why = plan.blocked if plan is not None and plan.blocked else None
                why = why or not_recorded_reason(call, recorded=sealed is not None)
        except StorageUnavailable:
            raise
        except Exception as exc:  # one broken call never stops the others
            error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "call %s could not be processed: %s",
                call.call_id,
                error,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            self.counts.failed += 1
            why = "processing failed"
            sealed = None
        self.counts.calls_found += 1
        if sealed is not None:
            self.counts.recorded += 1
        else:
            self.counts.not_recorded[why or "no media"] += 1
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
        row.update(retention_class=retention.name, expires_ns=expires, expires_at=iso_from_ns(expires))
        wrapped = None
        if sealed is not None:
            row.update(sealed.row_fields())
            wrapped = (sealed.key_fingerprint, sealed.wrapped_key)
        events = event_rows(call, rendered)
        if plan is not None:
            events = plan_events(events, plan)
        if call.state == CallState.UNSIGNALLED:
            events += unreadable_signalling(call, self.unreadable)
        self._rows.append((row, leg_rows(call, rendered), events, wrapped))
        self._pending_keys.add((call.call_id, call.started_ns))
        if len(self._rows) >= CATALOGUE_BATCH:
            with contextlib.suppress(StorageUnavailable):  # the rows stay pending: committed later
                self.flush_rows()
        return row

    def _record(
        self,
        call: CapturedCall,
        rendered: RenderedCall,
        decided: CallDecision,
        commands: Sequence[Signal],
        expires_ns: int | None,
    ) -> tuple[RecordingPlan, SealedRecording | None, float]:
        """Plan which spans are kept (on-demand, pause, consent), then seal only those, in the
        rule's format and channels, kept by the store until ``expires_ns`` (Object Lock). Returns
        the plan, the sealed recording and its seconds."""
        decision = decided.decision
        controls = self.config.controls
        plan = plan_recording(call, rendered, decision, controls, self.config.consent, commands)
        if plan.blocked:
            return plan, None, 0.0
        samples, _ = stored_samples(rendered, plan, controls.pause_fill)
        if samples.shape[0] == 0:
            return plan, None, 0.0
        samples = keep_channels(samples, decision.channels)
        rate = rendered.sample_rate_hz
        name = recording_name(call, f".{decision.format}{SEALED_SUFFIX}")
        chunks = mp3_chunks(samples, rate) if decision.format == "mp3" else wav_chunks(samples, rate)
        try:  # no catalogued call has this name (checked in save): a file there is a crash's orphan
            sealed = self.vault.seal(name, chunks, sync=False, replace=True, retain_until_ns=expires_ns)
        except OSError as exc:
            raise StorageUnavailable(f"writing {name}: {exc}") from exc
        except StorageUnreachable as exc:  # the object store is down or refuses us: not this call's fault
            raise StorageUnavailable(str(exc)) from exc
        except StoreError as exc:
            if isinstance(exc.__cause__, OSError):  # full, read-only, gone: not this call's fault
                raise StorageUnavailable(str(exc)) from exc
            raise
        return plan, sealed, samples.shape[0] / rate

    def flush_rows(self) -> None:
        """Make the batch's recording files durable (one syncfs), then commit their rows."""
        if not self._rows:
            return
        try:
            self.recordings.sync_all()
            results = self.catalogue.add_calls(self._rows, sign=self.vault.sign)  # signed as stored
        except (OSError, sqlite3.Error) as exc:  # the rows stay pending, all or none committed
            raise StorageUnavailable(f"committing {len(self._rows)} calls: {exc}") from exc
        for call_id, created in results:
            if created:
                self.counts.created_ids.append(call_id)
            else:  # imported meanwhile by another process
                self.counts.already_present += 1
        self._rows.clear()
        self._pending_keys.clear()

    def close(self) -> None:
        self.flush_rows()
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
