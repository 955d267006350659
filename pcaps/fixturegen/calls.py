"""The call sequences the scenarios share: parties, call set-up, media legs, RTCP, teardown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .constants import FRAME_SAMPLES, MS, S
from .expected import expected_call
from .frames import Capture
from .rtp import Endpoint, LegSpec, emit_leg, rtcp_sr
from .signals import TONE_CALLEE, TONE_CALLER
from .sip import Dialog, Party, make_sdp

CALLER = "caller->callee"
CALLEE = "callee->caller"

InviteHook = Callable[[Dialog, int, bytes], None]


def parties(n: int, ipv6: bool = False) -> tuple[Party, Party]:
    """Caller / callee of call n (distinct numbers and addresses per call)."""
    if ipv6:
        a_ip, b_ip = f"2001:db8:10::{n}a", f"2001:db8:20::{n}b"
    else:
        a_ip, b_ip = f"198.51.100.{10 + 2 * n}", f"198.51.100.{110 + 2 * n}"
    caller = Party(
        user=f"+3522000{n:02d}01", display=f"Caller {n}", ip=a_ip, rtp_port=40000 + 2 * n, tag=f"a{n:02d}f1x"
    )
    callee = Party(
        user=f"+3522000{n:02d}02", display=f"Callee {n}", ip=b_ip, rtp_port=50000 + 2 * n, tag=f"b{n:02d}f2y"
    )
    return caller, callee


def open_dialog(
    cap: Capture,
    t0: int,
    n: int,
    codec: str = "PCMU",
    label: str = "",
    caller: Party | None = None,
    callee: Party | None = None,
    ipv6: bool = False,
    invite_hook: InviteHook | None = None,
) -> Dialog:
    """Call n's dialog: the INVITE with the caller's offer at t0 (through ``invite_hook`` when
    given) and the callee's 100 Trying 4 ms later. ``label`` goes into the Call-ID."""
    pa, pb = parties(n, ipv6)
    a, b = caller or pa, callee or pb
    host = a.adv_ip if ":" not in a.adv_ip else "v6"
    call_id = f"fx{n:02d}-{label + '-' if label else ''}{t0 // S:x}@{host}"
    d = Dialog(cap, call_id, a, b, branch_seed=0x5EED0000 + n)
    offer = make_sdp(a, codec, 1000 + n)
    if invite_hook:
        invite_hook(d, t0, offer)
    else:
        d.invite(t0, offer)
    d.response(t0 + 4 * MS, 100, "Trying")
    return d


def answer(d: Dialog, ts: int, codec: str, n: int, ack_after: int) -> None:
    """200 OK with the callee's answer, the caller's ACK ``ack_after`` ns later."""
    d.response(ts, 200, "OK", sdp=make_sdp(d.b, codec, 2000 + n))
    d.ack(ts + ack_after)


def standard_leg(direction: str, codec: str, n: int, t200: int, count: int, **overrides) -> LegSpec:
    """Call n's leg in ``direction`` as a standard call sends it after a 200 OK at ``t200``:
    the callee starts 12.5 ms after the 200 OK, the caller 31.625 ms after it."""
    if direction == CALLER:
        ssrc, seq0, ts0, start, signal = 0x1A2B0000, 1000 + 17 * n, 160_000 + 7 * n, 31_625_000, TONE_CALLER
    else:
        ssrc, seq0, ts0, start, signal = 0x5C6D0000, 30000 + 5 * n, 9_000_000 + 3 * n, 12_500_000, TONE_CALLEE
    fields: dict = dict(
        ssrc=ssrc + n,
        seq0=seq0,
        ts0=ts0,
        start_ns=t200 + start,
        count=count,
        signal=signal,
        jitter_seed=2 * n + (1 if direction == CALLER else 2),
    )
    fields.update(overrides)
    return LegSpec(direction=direction, codec=codec, **fields)


def media_endpoints(a: Party, b: Party) -> dict[str, tuple[Endpoint, Endpoint]]:
    """(source, destination) of each direction's RTP: the caller sends to the callee's SDP
    endpoint, the callee answers to where the caller's RTP comes from (symmetric RTP)."""
    caller_side, callee_side = (a.ip, a.src_rtp_port), (b.ip, b.media_port)
    return {CALLER: (caller_side, callee_side), CALLEE: (callee_side, caller_side)}


def emit_legs(cap: Capture, d: Dialog, legs: list[LegSpec]) -> None:
    endpoints = media_endpoints(d.a, d.b)
    for leg in legs:
        emit_leg(cap, leg, *endpoints[leg.direction])


# direction -> (delay after the first report, NTP seconds base, packets / 160-octet payloads sent)
_RTCP_PLAN = {CALLER: (0, 0xEE000000, 48), CALLEE: (13 * MS, 0xEE100000, 49)}


def send_rtcp(cap: Capture, d: Dialog, n: int, ts: int, legs: list[LegSpec]) -> None:
    """One RTCP SR+SDES per leg, from and to the RTP ports + 1."""
    endpoints = media_endpoints(d.a, d.b)
    for leg in legs:
        after, ntp_base, packets = _RTCP_PLAN[leg.direction]
        (src_ip, src_port), (dst_ip, dst_port) = endpoints[leg.direction]
        sender = d.a if leg.direction == CALLER else d.b
        report = rtcp_sr(
            leg.ssrc, ntp_base + n, leg.ts0 + 8000, packets, packets * FRAME_SAMPLES, f"{sender.user}@fixture"
        )
        cap.udp(ts + after, src_ip, src_port + 1, dst_ip, dst_port + 1, report, "rtp")


def hang_up(d: Dialog, legs: list[LegSpec], after: int, by_caller: bool = True) -> dict:
    """BYE ``after`` ns past the end of the last packet; returns expected.json's call."""
    d.bye(max(leg.end_ns for leg in legs) + after, by_caller=by_caller)
    return expected_call(d, "completed", legs)


@dataclass(frozen=True)
class CallSpec:
    """A standard call: INVITE / 100 / 180 / 200 / ACK, media both ways, BYE / 200."""

    n: int  # call number: parties, Call-ID, SSRCs, seeds
    codec: str = "PCMU"
    at_ns: int = 0  # INVITE time after the scenario's start
    seconds: float = 3.0
    caller: Party | None = None
    callee: Party | None = None
    ipv6: bool = False
    caller_leg: dict = field(default_factory=dict)  # LegSpec fields that differ from standard_leg's
    callee_leg: dict = field(default_factory=dict)
    callee_sends: bool = True
    rtcp: bool = False
    by_caller: bool = True
    invite_hook: InviteHook | None = None


def standard_call(cap: Capture, t0: int, spec: CallSpec) -> dict:
    """Puts a standard call on the wire from t0 + spec.at_ns; returns expected.json's call."""
    n, codec = spec.n, spec.codec
    t0 += spec.at_ns
    d = open_dialog(cap, t0, n, codec, "", spec.caller, spec.callee, spec.ipv6, spec.invite_hook)
    d.response(t0 + 60 * MS, 180, "Ringing")
    t200 = t0 + 500 * MS
    answer(d, t200, codec, n, ack_after=8 * MS)
    count = round(spec.seconds * 50)
    legs = [standard_leg(CALLER, codec, n, t200, count, **spec.caller_leg)]
    if spec.callee_sends:
        legs.append(standard_leg(CALLEE, codec, n, t200, count, **spec.callee_leg))
    emit_legs(cap, d, legs)
    if spec.rtcp:
        send_rtcp(cap, d, n, t200 + 1 * S + 7 * MS, legs)
    return hang_up(d, legs, 40 * MS, by_caller=spec.by_caller)
