"""Requests inside an established dialog (re-INVITE, BYE with any CSeq) and legs in segments.

A leg that pauses (hold), moves to another port (re-INVITE) or changes SSRC is several ``LegSpec``
segments of one direction; :func:`continue_leg` makes the next one so that it carries the same
signal on the same 20 ms grid (``sample0``), and ``expected.expected_call`` merges them into one LEG.
"""

from __future__ import annotations

import dataclasses

from .constants import FRAME_SAMPLES, MS, PTIME_NS
from .rtp import LegSpec
from .sip import Dialog, _message


def request(
    d: Dialog, ts: int, method: str, cseq: int, suffix: str, by_caller: bool = True, sdp: bytes = b""
) -> str:
    """An in-dialog request (both tags) from the caller or the callee; returns its Via branch."""
    uac, uas = (d.a, d.b) if by_caller else (d.b, d.a)
    branch = f"z9hG4bK{d.seed:08x}{suffix}"
    headers = d._request_headers(branch, f"{cseq} {method}", to_tagged=True, by_caller=by_caller)
    if method == "INVITE":
        headers.append(f"Contact: <{uac.contact}>")
    d._send(ts, _message(f"{method} {uas.contact} SIP/2.0", headers, sdp), by_caller)
    return branch


def reply(
    d: Dialog,
    ts: int,
    branch: str,
    method: str,
    cseq: int,
    by_caller: bool = True,
    sdp: bytes = b"",
    code: int = 200,
    reason: str = "OK",
) -> None:
    """The response to an in-dialog request sent by the caller (``by_caller``) or the callee."""
    uac, uas = (d.a, d.b) if by_caller else (d.b, d.a)
    headers = d._headers(uac, uas, branch, f"{cseq} {method}", True)
    if method == "INVITE":
        headers.append(f"Contact: <{uas.contact}>")
    headers.append("Server: callrec-fixture/1.0")
    d._send(ts, _message(f"SIP/2.0 {code} {reason}", headers, sdp), not by_caller)


def reinvite(
    d: Dialog, ts: int, cseq: int, offer: bytes, answer_sdp: bytes, suffix: str, by_caller: bool = True
) -> int:
    """re-INVITE with ``offer``, 200 OK with ``answer_sdp`` 30 ms later, ACK 6 ms after that.
    Returns the ACK's time."""
    branch = request(d, ts, "INVITE", cseq, suffix, by_caller, offer)
    reply(d, ts + 30 * MS, branch, "INVITE", cseq, by_caller, answer_sdp)
    request(d, ts + 36 * MS, "ACK", cseq, suffix + "k", by_caller)
    return ts + 36 * MS


def bye(d: Dialog, ts: int, cseq: int, by_caller: bool = True) -> None:
    """BYE with CSeq ``cseq`` and its 200 OK 3 ms later; the call's end."""
    d.times["end"] = ts
    branch = request(d, ts, "BYE", cseq, "by", by_caller)
    reply(d, ts + 3 * MS, branch, "BYE", cseq, by_caller)


def continue_leg(leg: LegSpec, gap: int, count: int, **overrides) -> LegSpec:
    """The segment after ``leg``: ``gap`` 20 ms slots without packets, then ``count`` packets that
    continue the signal; the sequence numbers go on from ``leg`` (nothing is lost), the RTP clock
    runs through the gap. ``overrides``: other fields (a new SSRC, seq / timestamp base, ...)."""
    slots = leg.count + gap
    fields: dict = dict(
        start_ns=leg.start_ns + slots * PTIME_NS,
        count=count,
        sample0=leg.sample0 + slots * FRAME_SAMPLES,
        seq0=(leg.seq0 + leg.count) & 0xFFFF,
        ts0=(leg.ts0 + slots * FRAME_SAMPLES) & 0xFFFFFFFF,
        jitter_seed=leg.jitter_seed + 1000,
        lost=frozenset(),
        dup={},
        delay={},
    )
    fields.update(overrides)
    return dataclasses.replace(leg, **fields)
