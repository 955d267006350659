"""The facts of a call that rules match: direction, parties, the dialled number, queue, PBX
addresses, codecs, start and talk time (:class:`CallFacts`, from a :class:`CapturedCall`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from callrec.capture.model.calls import CallState, CapturedCall
from callrec.recorder.policy.direction import call_addresses


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the rules look at. ``addresses`` are the caller's and the callee's (None when not known);
    ``duration_s`` is talk time: answer to end (0 for a call never answered)."""

    direction: str
    caller: str
    callee: str
    request_uri: str = ""
    queue: str | None = None
    addresses: tuple[str | None, str | None] = (None, None)
    codecs: tuple[str, ...] = ()
    started_ns: int = 0
    duration_s: float = 0.0


def facts_from_call(
    call: CapturedCall, direction: str, queue: str | None, codecs: Sequence[str]
) -> CallFacts:
    """The facts of a finished call. An unsignalled call (RTP only) counts as talking from its start."""
    if call.answered_ns is not None:
        talk_ns = call.ended_ns - call.answered_ns
    elif call.state is CallState.UNSIGNALLED:
        talk_ns = call.ended_ns - call.started_ns
    else:
        talk_ns = 0
    return CallFacts(
        direction=direction,
        caller=call.caller,
        callee=call.callee,
        request_uri=call.request_uri,
        queue=queue,
        addresses=call_addresses(call),
        codecs=tuple(codecs),
        started_ns=call.started_ns,
        duration_s=max(talk_ns, 0) / 1e9,
    )


def call_codecs(call: CapturedCall) -> tuple[str, ...]:
    """The encodings of the payload types the call's media used (both legs, sorted), or those the SDP
    offered when no packet was seen. Unknown payload types are left out."""
    found: set[str] = set()
    for leg in call.legs.values():
        used = set(leg.packets.payload_type.tolist()) if len(leg.packets) else set(leg.formats)
        found |= {leg.formats[pt].encoding for pt in used if pt in leg.formats}
    return tuple(sorted(found, key=str.casefold))
