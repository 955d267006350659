"""The ground truth of ``NAME.expected.json``.

Times in seconds; "recording" times are relative to the start of the recording, i.e. the first
media packet of the call in either direction::

  {
    "description": str,
    "capture": "NAME.pcap",                # the capture file next to this one
    "sample_rate": 8000,                   # of the signals below (G.711)
    "placement_tolerance_s": 0.002,        # how far a recorder may shift a leg
    "calls": [{
      "call_id": str,                      # match key
      "state": "completed" | "cancelled" | "rejected" | ...,
      "caller": str, "callee": str,        # user part of From / To
      "started_at": ISO-8601 UTC,          # first INVITE on the wire
      "answered_at": ISO-8601 UTC | null,  # 200 OK to the INVITE
      "ended_at": ISO-8601 UTC,            # BYE / CANCEL / final error response
      "ended_at_tolerance_s": 0.05,        # BYE vs its 200 OK, CANCEL vs 487
      "recorded": bool,                    # a recording exists (there was media)
      "duration_s": float | null,          # recording length: first media packet to end of last
      "duration_tolerance_s": float,
      "legs": {
        "caller->callee": LEG, "callee->caller": LEG
      }
    }]
  }
  LEG = {
    "packets": int,         # RTP packets of the leg on the wire, duplicates included,
                            # malformed / truncated RTP excluded
    "duplicates": int,      # of which duplicates (same seq again)
    "lost": int,            # sequence numbers never seen (between first and last)
    "ssrc": int | null,     # the first SSRC
    "ssrcs": [int, ...],    # only when the leg changes SSRC: all of them, in order
    "codec": "PCMU" | "PCMA" | null,
    "payload_type": int | null,
    "signal": {...} | null, # see fixturegen.signals; null: the leg sent nothing
    "origin_s": float | null,   # recording time of the leg's sample n = 0
    "active": [[s, e], ...],    # where this leg's packets are (merged 20 ms slots)
    "silent": [[s, e], ...]     # the 20 ms slots of lost packets (merged); a leg that sends
                                # nothing has [[0, duration_s]]. Everything outside "active"
                                # must be digital silence (exact zeros) in the export.
  }
"""

from __future__ import annotations

import datetime as _dt

from .constants import DURATION_TOLERANCE_S, ENDED_AT_TOLERANCE_S
from .g711 import payload_type
from .rtp import LegSpec
from .sip import Dialog

DIRECTIONS = ("caller->callee", "callee->caller")


def _iso(ts_ns: int) -> str:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    t = _dt.datetime.fromtimestamp(sec, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{t}.{ns // 1000:06d}Z"


def _spans(indices: list[int], offset_s: float) -> list[list[float]]:
    spans: list[list[float]] = []
    for i in sorted(indices):
        s = round(offset_s + i * 0.02, 6)
        e = round(offset_s + (i + 1) * 0.02, 6)
        if spans and abs(spans[-1][1] - s) < 1e-9:
            spans[-1][1] = e
        else:
            spans.append([s, e])
    return spans


def _leg_entry(
    packets: int = 0,
    duplicates: int = 0,
    lost: int = 0,
    ssrc: int | None = None,
    codec: str | None = None,
    signal: dict | None = None,
    origin_s: float | None = None,
    active: list | None = None,
    silent: list | None = None,
) -> dict:
    return {
        "packets": packets,
        "duplicates": duplicates,
        "lost": lost,
        "ssrc": ssrc,
        "codec": codec,
        "payload_type": payload_type(codec) if codec else None,
        "signal": signal,
        "origin_s": origin_s,
        "active": active or [],
        "silent": silent or [],
    }


def expected_leg(leg: LegSpec | None, rec_start: int | None, duration: float | None) -> dict:
    """One LEG of expected.json; ``leg`` None: the direction sent nothing."""
    if leg is None:
        return _leg_entry(silent=[[0.0, duration]] if rec_start is not None else [])
    assert rec_start is not None
    assert 0 not in leg.lost and leg.count - 1 not in leg.lost
    origin = round((leg.start_ns - rec_start) / 1e9, 6)
    received = [i for i in range(leg.count) if i not in leg.lost]
    return _leg_entry(
        packets=len(received) + len(leg.dup),
        duplicates=len(leg.dup),
        lost=len(leg.lost),
        ssrc=leg.ssrc,
        codec=leg.codec,
        signal=leg.signal,
        origin_s=origin,
        active=_spans(received, origin),
        silent=_spans(sorted(leg.lost), origin),
    )


def _merge(spans: list[list[float]]) -> list[list[float]]:
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1] + 1e-9:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return out


def expected_segmented_leg(segments: list[LegSpec], rec_start: int | None, duration: float | None) -> dict:
    """One LEG made of several ``LegSpec`` segments of one direction (a gap for a hold, a new port
    after a re-INVITE, a new SSRC): each later segment continues the first one's signal
    (``sample0``) on the same 20 ms grid, so the leg keeps one origin. Several SSRCs are listed,
    in order, as ``ssrcs``."""
    if len(segments) == 1:
        return expected_leg(segments[0], rec_start, duration)
    segments = sorted(segments, key=lambda s: s.start_ns)
    first = segments[0]
    entries = [expected_leg(s, rec_start, duration) for s in segments]
    for seg in segments[1:]:
        assert seg.signal == first.signal and seg.codec == first.codec
        assert seg.start_ns - first.start_ns == seg.sample0 // 160 * 20_000_000 and seg.sample0 % 160 == 0
    out = dict(entries[0])
    for key in ("packets", "duplicates", "lost"):
        out[key] = sum(e[key] for e in entries)
    out["active"] = _merge([span for e in entries for span in e["active"]])
    out["silent"] = _merge([span for e in entries for span in e["silent"]])
    ssrcs = list(dict.fromkeys(s.ssrc for s in segments))
    if len(ssrcs) > 1:
        out["ssrcs"] = ssrcs
    return out


def expected_call(dialog: Dialog, state: str, legs: list[LegSpec]) -> dict:
    """One call of expected.json from its dialog's times and the legs it sent (several segments
    of one direction make one LEG, see ``expected_segmented_leg``)."""
    by_dir: dict[str, list[LegSpec]] = {}
    for leg in legs:
        by_dir.setdefault(leg.direction, []).append(leg)
    rec_start = min((leg.start_ns for leg in legs), default=None)
    rec_end = max((leg.end_ns for leg in legs), default=None)
    recorded = rec_start is not None
    duration = round((rec_end - rec_start) / 1e9, 6) if recorded else None
    legs_out = {
        d: expected_segmented_leg(by_dir[d], rec_start, duration)
        if d in by_dir
        else expected_leg(None, rec_start, duration)
        for d in DIRECTIONS
    }
    t = dialog.times
    return {
        "call_id": dialog.call_id,
        "state": state,
        "caller": dialog.a.user,
        "callee": dialog.b.user,
        "started_at": _iso(t["invite"]),
        "answered_at": _iso(t["answer"]) if "answer" in t else None,
        "ended_at": _iso(t.get("end", t.get("final", 0))),
        "ended_at_tolerance_s": ENDED_AT_TOLERANCE_S,
        "recorded": recorded,
        "duration_s": duration,
        "duration_tolerance_s": DURATION_TOLERANCE_S,
        "legs": legs_out,
    }
