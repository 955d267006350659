"""Catalogue rows for a finished call: what ``store`` keeps of capture and decode results.

``store`` never sees capture or decode types; this module is the one place they are turned
into plain rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from callrec.capture.model.calls import CALLER_TO_CALLEE, LEG_DIRECTIONS, CapturedCall, CapturedLeg
from callrec.decode.events import DtmfEvent, call_dtmf_events
from callrec.decode.quality import leg_codecs, loss_bursts
from callrec.decode.render import RenderedCall
from callrec.store.catalogue.db import iso_from_ns
from callrec.store.objects.base import StoredFile

Row = dict[str, Any]


def _iso(ns: int | None) -> str | None:
    return None if ns is None else iso_from_ns(ns)


def leg_codec(leg: CapturedLeg) -> str:
    """Encoding names of the leg's audio payload types, most used first (e.g. "PCMU")."""
    return ",".join(leg_codecs(leg))


def ssrc_text(leg: CapturedLeg) -> str:
    if len(leg.packets) == 0:
        return ""
    _, first = np.unique(leg.packets.ssrc, return_index=True)
    ordered = leg.packets.ssrc[np.sort(first)]
    return ",".join(f"0x{int(s):08x}" for s in ordered.tolist())


def call_codecs(call: CapturedCall) -> list[str]:
    names: list[str] = []
    for direction in LEG_DIRECTIONS:
        leg = call.legs.get(direction)
        if leg is None:
            continue
        names += [name for name in leg_codecs(leg) if name not in names]
    return names


def call_row(
    call: CapturedCall,
    rendered: RenderedCall | None,
    stored: StoredFile | None,
    *,
    source: str,
    error: str | None,
    not_recorded: str | None = None,
) -> Row:
    return {
        "call_id": call.call_id,
        "started_ns": call.started_ns,
        "started_at": _iso(call.started_ns),
        "answered_at": _iso(call.answered_ns),
        "ended_at": _iso(call.ended_ns),
        "duration_s": round((call.ended_ns - call.started_ns) / 1e9, 3),
        "caller": call.caller,
        "callee": call.callee,
        "caller_uri": call.caller_uri,
        "callee_uri": call.callee_uri,
        "request_uri": call.request_uri,
        "caller_display": call.caller_display,
        "callee_display": call.callee_display,
        "direction": "unknown",
        "state": str(call.state),
        "end_reason": call.end_reason,
        "final_status": call.final_status,
        "codecs": ",".join(call_codecs(call)),
        "source": source,
        "error": error,
        "not_recorded": not_recorded,
        "recording_path": stored.relative_path if stored else None,
        "recording_bytes": stored.bytes if stored else None,
        "recording_sha256": stored.sha256 if stored else None,
        "sample_rate": rendered.sample_rate_hz if stored and rendered else None,
        "channels": int(rendered.samples.shape[1]) if stored and rendered else None,
        "recording_seconds": round(rendered.duration_s, 3) if stored and rendered else None,
        "recording_started_at": _iso(rendered.start_ns) if stored and rendered else None,
    }


def leg_rows(call: CapturedCall, rendered: RenderedCall | None) -> list[Row]:
    rows = []
    for direction in LEG_DIRECTIONS:
        leg = call.legs.get(direction)
        if leg is None:
            continue
        stats = rendered.legs.get(direction) if rendered else None
        quality = rendered.quality.get(direction) if rendered else None
        packets = leg.packets
        row: Row = {
            "direction": direction,
            "codec": leg_codec(leg),
            "packets": len(packets),
            "ssrc": ssrc_text(leg),
            "src": ",".join(str(e) for e in leg.sources),
            "dst": ",".join(str(e) for e in leg.destinations),
            "first_media_at": _iso(int(packets.ts_ns[0])) if len(packets) else None,
            "last_media_at": _iso(int(packets.ts_ns[-1])) if len(packets) else None,
            "rtcp_packets": leg.rtcp_packets,
        }
        if stats is not None:
            row.update(
                expected=stats.expected,
                lost=stats.lost,
                duplicates=stats.duplicates,
                late=stats.late,
                max_gap_ms=round(stats.max_gap_ms, 1),
                jitter_mean_ms=round(stats.jitter_mean_ms, 2),
                jitter_max_ms=round(stats.jitter_max_ms, 2),
            )
        if quality is not None and quality.mos is not None:
            row["mos"] = round(quality.mos, 2)
        rows.append(row)
    return rows


def event_rows(call: CapturedCall, rendered: RenderedCall | None = None) -> list[Row]:
    """SIP messages and RFC 4733 key presses (kind ``dtmf``, summary the digit), by time.

    Key presses come from ``rendered`` (placed on the audio's clock); without it (rendering
    failed) they are read again from the packets and start at their first packet's arrival."""
    dtmf: tuple[DtmfEvent, ...] = ()
    if rendered is not None:
        dtmf = rendered.events
    else:
        try:
            dtmf = call_dtmf_events(call)
        except Exception:  # the call is stored as failed already; keep its SIP events
            dtmf = ()
    rows: list[Row] = [
        {
            "ts_ns": e.ts_ns,
            "at": _iso(e.ts_ns),
            "kind": e.kind,
            "summary": e.summary,
            "sender": e.sender,
            "detail": e.detail,
        }
        for e in call.events
    ]
    rows += [
        {
            "ts_ns": d.start_ns,
            "at": _iso(d.start_ns),
            "kind": "dtmf",
            "summary": d.digit,
            "sender": d.sender,
            "detail": d.detail,
        }
        for d in dtmf
    ]
    for direction, leg in call.legs.items():
        sender = "caller" if direction == CALLER_TO_CALLEE else "callee"
        stats = rendered.legs.get(direction) if rendered is not None else None
        if stats is not None and stats.lost == 0:
            continue  # the timeline counted every sequence number: no gap to look for
        for burst in loss_bursts(leg.packets):
            rows.append(
                {
                    "ts_ns": burst.start_ns,
                    "at": _iso(burst.start_ns),
                    "kind": "loss",
                    "summary": f"{burst.packets} packet{'s' if burst.packets != 1 else ''} lost",
                    "sender": sender,
                    "detail": f"duration {round((burst.end_ns - burst.start_ns) / 1e6)} ms",
                }
            )
    rows.sort(key=lambda row: row["ts_ns"])  # stable: a SIP message first at the same instant
    return rows
