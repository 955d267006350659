"""Scenarios that change something in the middle of an answered call (issue 3): a re-INVITE that
moves the media port, a 60 s hold, an SSRC change, RTCP multiplexed on the RTP port, and a call
that never says BYE (it ends by the media timeout)."""

from __future__ import annotations

import dataclasses

from .calls import CALLEE, CALLER, media_endpoints, open_dialog, standard_leg
from .constants import FRAME_SAMPLES, MS, PTIME_NS, S, scenario_start_ns
from .expected import expected_call
from .fixture import Fixture
from .frames import Capture
from .indialog import bye, continue_leg, reinvite
from .rtp import LegSpec, emit_leg, rtcp_sr
from .signals import noise
from .sip import Dialog, make_sdp

# capture.tracking.tracker.TrackerConfig.media_timeout_s: an answered call without media or SIP this long ends
MEDIA_TIMEOUT_S = 300


def _answered(
    i: int, n: int, codec: str = "PCMU", label: str = "", extra: tuple[str, ...] = ()
) -> tuple[Capture, Dialog, int]:
    """Scenario i's capture and call n: INVITE (SDP lines ``extra`` added), 100, 180, 200 with the
    answer (``extra`` too), ACK. Returns the capture, the dialog and the 200 OK's time."""
    cap = Capture()
    t0 = scenario_start_ns(i)

    def invite(d: Dialog, ts: int, _offer: bytes) -> None:
        d.invite(ts, make_sdp(d.a, codec, 1000 + n, extra=extra))

    d = open_dialog(cap, t0, n, codec, label=label, invite_hook=invite)
    d.response(t0 + 60 * MS, 180, "Ringing")
    t200 = t0 + 500 * MS
    d.response(t200, 200, "OK", sdp=make_sdp(d.b, codec, 2000 + n, extra=extra))
    d.ack(t200 + 8 * MS)
    return cap, d, t200


def _emit(cap: Capture, legs: list[LegSpec], src, dst) -> None:
    for leg in legs:
        emit_leg(cap, leg, src, dst)


def fx_reinvite_port(i: int) -> Fixture:
    """The caller re-INVITEs 1.5 s into the call with a new media port; from packet 78 on both
    directions use it (same SSRCs, sequence numbers and timestamps going on)."""
    n = 19
    cap, d, t200 = _answered(i, n, label="reinv")
    moved = dataclasses.replace(d.a, rtp_port=d.a.rtp_port + 100)
    t_re = t200 + 1500 * MS
    reinvite(
        d,
        t_re,
        2,
        make_sdp(moved, "PCMU", 1000 + n, version=1001 + n),
        make_sdp(d.b, "PCMU", 2000 + n, version=2001 + n),
        "ri",
    )
    caller1 = standard_leg(CALLER, "PCMU", n, t200, 78)
    callee1 = standard_leg(CALLEE, "PCMU", n, t200, 78, signal=noise(19002, 10000))
    caller2, callee2 = continue_leg(caller1, 0, 72), continue_leg(callee1, 0, 72)
    assert caller2.start_ns > t_re + 36 * MS and callee2.start_ns > t_re + 36 * MS
    a_old, a_new, b = (d.a.ip, d.a.rtp_port), (moved.ip, moved.rtp_port), (d.b.ip, d.b.rtp_port)
    _emit(cap, [caller1], a_old, b)
    _emit(cap, [caller2], a_new, b)
    _emit(cap, [callee1], b, a_old)
    _emit(cap, [callee2], b, a_new)
    legs = [caller1, caller2, callee1, callee2]
    d.a = moved
    bye(d, max(leg.end_ns for leg in legs) + 40 * MS, 3)
    return Fixture(
        "reinvite_port_change",
        "PCMU call; 1.5 s in, the caller re-INVITEs (CSeq 2, SDP version +1) with a new media port "
        f"({a_old[1]} -> {a_new[1]}); after the 200 OK / ACK both directions use the new port with "
        "the same SSRCs, sequence numbers and timestamps going on. One call, 150 + 150 packets, "
        "the recording goes on without a gap.",
        cap,
        [expected_call(d, "completed", legs)],
    )


def fx_hold(i: int) -> Fixture:
    return _hold(i, 20, 60, "hold_60s")


def fx_long_hold(i: int) -> Fixture:
    return _hold(i, 32, MEDIA_TIMEOUT_S + 20, "hold_past_media_timeout")


def _hold(i: int, n: int, seconds: int, name: str) -> Fixture:
    """1.5 s of media, the caller holds (a=sendonly, answered a=recvonly), ``seconds`` without any
    RTP, resume (a=sendrecv) and 1.5 s more; the recording is silent during the hold."""
    cap, d, t200 = _answered(i, n, label="hold")
    caller1 = standard_leg(CALLER, "PCMU", n, t200, 75, signal=noise(1000 * n + 1, 12000))
    callee1 = standard_leg(CALLEE, "PCMU", n, t200, 75)
    t_hold = t200 + 1600 * MS
    t_resume = t_hold + seconds * S
    reinvite(
        d,
        t_hold,
        2,
        make_sdp(d.a, "PCMU", 1000 + n, "sendonly", version=1001 + n),
        make_sdp(d.b, "PCMU", 2000 + n, "recvonly", version=2001 + n),
        "ho",
    )
    reinvite(
        d,
        t_resume,
        3,
        make_sdp(d.a, "PCMU", 1000 + n, version=1002 + n),
        make_sdp(d.b, "PCMU", 2000 + n, version=2002 + n),
        "re",
    )
    # media resumes on the first 20 ms slot of each leg's grid after the resume's ACK
    resumed = t_resume + 40 * MS
    gap_a = -(-(resumed - caller1.end_ns) // PTIME_NS)
    gap_b = -(-(resumed - callee1.end_ns) // PTIME_NS)
    caller2, callee2 = continue_leg(caller1, gap_a, 75), continue_leg(callee1, gap_b, 75)
    legs = [caller1, caller2, callee1, callee2]
    ends = media_endpoints(d.a, d.b)
    _emit(cap, [caller1, caller2], *ends[CALLER])
    _emit(cap, [callee1, callee2], *ends[CALLEE])
    bye(d, max(leg.end_ns for leg in legs) + 40 * MS, 4)
    longer = ""
    if seconds > MEDIA_TIMEOUT_S:
        longer = (
            f" (longer than the media timeout, {MEDIA_TIMEOUT_S} s: a hold of any length never ends a call)"
        )
    return Fixture(
        name,
        f"PCMU call put on hold for {seconds} s{longer}: 1.5 s of media, re-INVITE a=sendonly answered "
        f"a=recvonly, no RTP at all for {seconds} s, re-INVITE a=sendrecv, 1.5 s more media (same "
        "SSRCs, sequence numbers going on, RTP clock run through the hold), BYE. One call that does "
        "not end during the hold; the recording spans the whole call with exact silence during the hold.",
        cap,
        [expected_call(d, "completed", legs)],
    )


def fx_ssrc_change(i: int) -> Fixture:
    """The callee's stream changes SSRC (and sequence / timestamp bases) after 1.5 s without any
    signalling; its channel goes on seamlessly."""
    n = 21
    cap, d, t200 = _answered(i, n, label="ssrc")
    caller = standard_leg(CALLER, "PCMU", n, t200, 150)
    callee1 = standard_leg(CALLEE, "PCMU", n, t200, 75, signal=noise(21002, 11000))
    callee2 = continue_leg(callee1, 0, 75, ssrc=0x7E570000 + n, seq0=61000, ts0=3_141_592_653)
    ends = media_endpoints(d.a, d.b)
    _emit(cap, [caller], *ends[CALLER])
    _emit(cap, [callee1, callee2], *ends[CALLEE])
    legs = [caller, callee1, callee2]
    bye(d, max(leg.end_ns for leg in legs) + 40 * MS, 2)
    return Fixture(
        "ssrc_change",
        "PCMU call whose callee stream changes SSRC 1.5 s in, mid-stream and unsignalled (new SSRC, "
        "sequence numbers and RTP timestamps restart elsewhere, timing continuous): one callee leg with "
        "two SSRCs, its channel continuous.",
        cap,
        [expected_call(d, "completed", legs)],
    )


def fx_rtcp_mux(i: int) -> Fixture:
    """a=rtcp-mux on both sides; every second each side sends an RTCP SR+SDES on its RTP port."""
    n = 24
    cap, d, t200 = _answered(i, n, label="mux", extra=("a=rtcp-mux",))
    caller = standard_leg(CALLER, "PCMU", n, t200, 150)
    callee = standard_leg(CALLEE, "PCMU", n, t200, 150, signal=noise(24002, 10000))
    ends = media_endpoints(d.a, d.b)
    _emit(cap, [caller], *ends[CALLER])
    _emit(cap, [callee], *ends[CALLEE])
    for k in range(3):
        for leg, base, after in ((caller, 0xEE200000, 7), (callee, 0xEE300000, 11)):
            (src_ip, src_port), (dst_ip, dst_port) = ends[leg.direction]
            sent = 50 * k + 25
            sender = d.a if leg is caller else d.b
            report = rtcp_sr(
                leg.ssrc,
                base + k,
                leg.ts0 + sent * FRAME_SAMPLES,
                sent,
                sent * FRAME_SAMPLES,
                f"{sender.user}@fixture",
            )
            cap.udp(leg.start_ns + sent * PTIME_NS + after * MS, src_ip, src_port, dst_ip, dst_port, report)
    legs = [caller, callee]
    bye(d, max(leg.end_ns for leg in legs) + 40 * MS, 2)
    return Fixture(
        "rtcp_mux",
        "PCMU call with a=rtcp-mux in offer and answer: each side sends 3 RTCP SR+SDES compound "
        "packets on its RTP port (same 5-tuple as its RTP). They are not RTP packets (not counted) "
        "and not audio (the channels stay exact).",
        cap,
        [expected_call(d, "completed", legs)],
    )


def fx_no_bye(i: int) -> Fixture:
    """3 s of media, then nothing: no BYE. An unrelated OPTIONS keep-alive 310 s later moves the
    capture clock past the media timeout, so the call ends by it, still answered."""
    n = 25
    cap, d, t200 = _answered(i, n, label="nobye")
    caller = standard_leg(CALLER, "PCMU", n, t200, 150)
    callee = standard_leg(CALLEE, "PCMU", n, t200, 150, signal=noise(25002, 10000))
    ends = media_endpoints(d.a, d.b)
    _emit(cap, [caller], *ends[CALLER])
    _emit(cap, [callee], *ends[CALLEE])
    last = max(caller.end_ns, callee.end_ns) - PTIME_NS
    d.times["end"] = last  # the last media packet (its jitter is well inside the tolerance)
    t_later = last + (MEDIA_TIMEOUT_S + 10) * S
    options = (
        f"OPTIONS sip:{d.b.host}:{d.b.sip_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {d.a.host}:{d.a.sip_port};branch=z9hG4bKka{n:04d};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{d.a.user}@{d.a.host}>;tag=ka{n}\r\n"
        f"To: <sip:{d.b.host}>\r\n"
        f"Call-ID: keepalive-{n}@{d.a.host}\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    cap.udp(t_later, d.a.ip, d.a.sip_port, d.b.ip, d.b.sip_port, options, "sip")
    call = expected_call(d, "answered", [caller, callee])
    call["end_reason"] = f"timeout: no media or signalling for {MEDIA_TIMEOUT_S} s"
    return Fixture(
        "no_bye_timeout",
        "Answered PCMU call whose media just stops after 3 s: no BYE, no more SIP in the dialog. An "
        f"unrelated OPTIONS {MEDIA_TIMEOUT_S + 10} s later moves the capture clock past the media "
        f"timeout (TrackerConfig.media_timeout_s = {MEDIA_TIMEOUT_S}): the call ends by it at its last "
        "media packet, state answered, and is recorded.",
        cap,
        [call],
    )
