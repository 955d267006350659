"""The tracker's state of a call in progress, and the hand-on: a :class:`CapturedCall` built from it.

:class:`TrackedCall` / :class:`TrackedLeg` are what :class:`capture.tracking.tracker.CallTracker` keeps per
call; when the call ends :func:`hand_on` reads each leg's packets back (spilled chunks included, then
released), drops media later than the end (plus a grace) and non-audio payload types, merges the
payload formats (static table, sender's SDP, receiver's SDP) and builds the :class:`CapturedCall`.

A live capture defers the spilled chunks (``defer_spilled``): reading back a thirty-second call's
chunks costs the capture loop about a millisecond, and hundreds of calls can end within a second. The
call is then handed on with its legs' :class:`~capture.streams.spill.SpilledMedia`, the sink keeps the chunks,
and the saver that records the call reads them (:func:`resolve_spilled`); the capture discards them
once the call is saved. Only calls in progress are spilled, so a spilled chunk is never later than
the call's end.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field, replace

import numpy as np

from callrec.capture.model.calls import CALLER_TO_CALLEE, CallEvent, CapturedCall, CapturedLeg, Endpoint
from callrec.capture.model.media import STATIC_PAYLOAD_TYPES, MediaFormat, RtpPackets, join_chunks
from callrec.capture.model.spilled import SpilledMedia, SpillError, SpillReader
from callrec.capture.sip.dialog import CallDialog
from callrec.capture.streams.medialog import LegSpool
from callrec.capture.streams.sidemedia import drop_payload_types


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
        lost = spool.spilled.packets
        ts = dialog.ended_ns if dialog.ended_ns is not None else dialog.last_sip_ns
        summary = f"{lost} spilled media packets lost"
        dialog.events.append(CallEvent(ts, "media", summary, detail=f"{leg.direction}: {exc}"))
        spool.spilled.clear()
        return spool.packets()
    finally:
        spool.release()


def _deferred(leg: TrackedLeg, dialog: CallDialog) -> tuple[RtpPackets, SpilledMedia | None]:
    """A leg's packets in memory, and what it has in the sink (handed on, not read, not discarded)."""
    spool = leg.spool
    if not spool.spilled or spool.sink is None:
        return read_leg(leg, dialog, collections.Counter()), None
    spilled = SpilledMedia(
        spool.sink.location(spool.leg_key), spool.spilled.copy(), dialog.non_audio_payload_types
    )
    return (spool.join() if spool.chunks else RtpPackets.empty()), spilled


def resolve_spilled(
    call: CapturedCall, reader: SpillReader, counters: collections.Counter[str]
) -> CapturedCall:
    """``call`` with its legs' spilled packets read back (in front of those handed on in memory). Chunks
    that cannot be read (damaged, tampered, a disk error) are counted (``spill_read_errors``), noted as
    an event of the call and left out, as :func:`read_leg` does."""
    legs = dict(call.legs)
    events = list(call.events)
    for direction, leg in call.legs.items():
        spilled = leg.spilled
        if spilled is None:
            continue
        try:
            chunks = reader.read_all(spilled.location, spilled.refs)
        except (SpillError, OSError) as exc:
            counters["spill_read_errors"] += 1
            lost = spilled.refs.packets
            events.append(
                CallEvent(
                    call.ended_ns, "media", f"{lost} spilled media packets lost", detail=f"{direction}: {exc}"
                )
            )
            chunks = []
        older = (
            drop_payload_types(join_chunks(chunks), spilled.drop_payload_types, counters) if chunks else None
        )
        packets = leg.packets if older is None else join_chunks([older, leg.packets])
        if len(packets) > 1 and bool((np.diff(packets.ts_ns) < 0).any()):  # early media adopted late
            packets = packets.select(np.argsort(packets.ts_ns, kind="stable"))
        legs[direction] = replace(leg, packets=packets, spilled=None)
    return replace(call, legs=legs, events=tuple(events))


def hand_on(
    call: TrackedCall,
    ended_ns: int,
    grace_ns: int,
    counters: collections.Counter[str],
    *,
    defer_spilled: bool = False,
) -> CapturedCall:
    """The :class:`CapturedCall` of a call that ended (its legs' pending packets already appended);
    with ``defer_spilled``, spilled chunks stay in the sink (see the module docstring)."""
    d = call.dialog
    legs = {}
    cutoff = None
    if d.terminal and d.ended_ns is not None:
        cutoff = d.ended_ns + grace_ns
    for direction, leg in call.legs.items():
        spilled = None
        if defer_spilled:
            packets, spilled = _deferred(leg, d)
        else:
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
            spilled=spilled,
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
