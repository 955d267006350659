"""The tracker's state of a call in progress, and the hand-on: a :class:`CapturedCall` built from it.

:class:`TrackedCall` / :class:`TrackedLeg` are what :class:`capture.tracker.CallTracker` keeps per
call; when the call ends :func:`hand_on` reads each leg's packets back (spilled chunks included, then
released), drops media later than the end (plus a grace) and non-audio payload types, merges the
payload formats (static table, sender's SDP, receiver's SDP) and builds the :class:`CapturedCall`.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import numpy as np

from capture.calls import CALLER_TO_CALLEE, CallEvent, CapturedCall, CapturedLeg, Endpoint
from capture.dialog import CallDialog
from capture.media import STATIC_PAYLOAD_TYPES, LegSpool, MediaFormat, RtpPackets
from capture.sidemedia import drop_payload_types
from capture.spill import SpillError


@dataclass(slots=True)
class TrackedLeg:
    leg_id: int
    direction: str
    spool: LegSpool = field(default_factory=LegSpool)
    sources: dict[int, Endpoint] = field(default_factory=dict)
    destinations: dict[int, Endpoint] = field(default_factory=dict)
    rtcp_packets: int = 0
    zrtp: bool = False  # ZRTP packets seen: the media after them is SRTP


@dataclass(slots=True)
class TrackedCall:
    dialog: CallDialog
    legs: dict[str, TrackedLeg]
    formats: dict[str, dict[int, MediaFormat]]  # receiving side -> its payload formats
    encrypted: dict[str, bool] = field(default_factory=dict)  # side -> its latest SDP is encrypted


def leg_key(leg_id: int) -> str:
    """The name a leg's spilled chunks go by in a spill sink."""
    return f"leg-{leg_id}"


def read_leg(leg: TrackedLeg, dialog: CallDialog, counters: collections.Counter[str]) -> RtpPackets:
    """A finished leg's packets, spilled chunks read back and released. Spilled chunks that cannot be
    read (damaged, tampered, disk error) are counted, noted as an event of the call, and left out."""
    spool = leg.spool
    try:
        return spool.packets()
    except (SpillError, OSError) as exc:
        counters["spill_read_errors"] += 1
        lost = sum(ref.packets for ref in spool.spilled)
        ts = dialog.ended_ns if dialog.ended_ns is not None else dialog.last_sip_ns
        summary = f"{lost} spilled media packets lost"
        dialog.events.append(CallEvent(ts, "media", summary, detail=f"{leg.direction}: {exc}"))
        spool.spilled.clear()
        return spool.packets()
    finally:
        spool.release()


def hand_on(
    call: TrackedCall, ended_ns: int, grace_ns: int, counters: collections.Counter[str]
) -> CapturedCall:
    """The :class:`CapturedCall` of a call that ended (its legs' pending packets already appended)."""
    d = call.dialog
    legs = {}
    cutoff = None
    if d.terminal and d.ended_ns is not None:
        cutoff = d.ended_ns + grace_ns
    for direction, leg in call.legs.items():
        packets = read_leg(leg, d, counters)
        if cutoff is not None and len(packets) and int(packets.ts_ns[-1]) > cutoff:
            late = packets.ts_ns > cutoff
            counters["rtp_after_call_end"] += int(late.sum())
            packets = packets.take(np.flatnonzero(~late))
        packets = drop_payload_types(packets, d.non_audio_payload_types, counters)
        receiver = "callee" if direction == CALLER_TO_CALLEE else "caller"
        sender = "caller" if receiver == "callee" else "callee"
        formats = {
            **STATIC_PAYLOAD_TYPES,
            **call.formats.get(sender, {}),
            **call.formats.get(receiver, {}),
        }
        legs[direction] = CapturedLeg(
            direction,
            formats,
            packets,
            tuple(leg.sources.values()),
            tuple(leg.destinations.values()),
            leg.rtcp_packets,
            encrypted=call.encrypted.get(receiver, False) or leg.zrtp,
        )
    return CapturedCall(
        call_id=d.call_id,
        state=d.state,
        started_ns=d.started_ns,
        answered_ns=d.answered_ns,
        ended_ns=ended_ns,
        end_reason=d.end_reason,
        caller=d.caller,
        callee=d.callee,
        caller_uri=d.caller_uri,
        callee_uri=d.callee_uri,
        request_uri=d.request_uri,
        caller_display=d.caller_display,
        callee_display=d.callee_display,
        final_status=d.final_status,
        legs=legs,
        events=tuple(d.events),
        sip_headers=d.headers,
    )
