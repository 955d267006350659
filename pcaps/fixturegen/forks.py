"""Scenarios about dialog identity (issue 3): a forked INVITE (two early dialogs, one answers) and
a Call-ID used again by a second, later call."""

from __future__ import annotations

import dataclasses

from .calls import CALLEE, CALLER, media_endpoints, parties, standard_leg
from .constants import MS, S, scenario_start_ns
from .expected import expected_call
from .fixture import Fixture
from .frames import Capture
from .indialog import bye
from .rtp import emit_leg
from .signals import noise
from .sip import Dialog, make_sdp


def fx_forked(i: int) -> Fixture:
    """A forking proxy (the callee's address) fans the INVITE out to two devices of the callee.
    Device 1 (To-tag b22k1) answers 180 with SDP (an early dialog with its own media endpoint,
    which never sends), device 2 (b22k2) 180 without SDP, then 200 OK with SDP: media flows
    between the caller and device 2 only."""
    n = 22
    cap = Capture()
    t0 = scenario_start_ns(i)
    a, proxy = parties(n)
    # both devices' responses reach the caller through the proxy (the wire source); Contact, SDP
    # and To-tag are each device's own
    dev1 = dataclasses.replace(proxy, sdp_ip="203.0.113.61", rtp_port=52000, tag="b22k1")
    dev2 = dataclasses.replace(proxy, sdp_ip="203.0.113.62", rtp_port=52100, tag="b22k2")
    d = Dialog(cap, f"fx{n:02d}-fork-{t0 // S:x}@{a.ip}", a, proxy, branch_seed=0x5EED0000 + n)
    d.invite(t0, make_sdp(a, "PCMU", 1000 + n))
    d.response(t0 + 4 * MS, 100, "Trying")
    d.b = dev1
    d.response(t0 + 70 * MS, 180, "Ringing", sdp=make_sdp(dev1, "PCMU", 3000 + n))
    d.b = dev2
    d.response(t0 + 95 * MS, 180, "Ringing")
    t200 = t0 + 900 * MS
    d.response(t200, 200, "OK", sdp=make_sdp(dev2, "PCMU", 4000 + n))
    d.ack(t200 + 8 * MS)
    caller = standard_leg(CALLER, "PCMU", n, t200, 150)
    callee = standard_leg(CALLEE, "PCMU", n, t200, 150, signal=noise(22002, 10000))
    dev2_media = ("203.0.113.62", 52100)
    emit_leg(cap, caller, (a.ip, a.rtp_port), dev2_media)
    emit_leg(cap, callee, dev2_media, (a.ip, a.rtp_port))
    legs = [caller, callee]
    bye(d, max(leg.end_ns for leg in legs) + 40 * MS, 2)
    return Fixture(
        "forked_invite",
        "Forked INVITE: one INVITE, 100, 180 with SDP from device 1 (To-tag b22k1, media "
        "203.0.113.61:52000, never sends), 180 from device 2 (To-tag b22k2), 200 OK with SDP from "
        "device 2 (203.0.113.62:52100), ACK, 3 s of media between the caller and device 2, BYE. "
        "One call, answered by device 2, recorded from its media.",
        cap,
        [expected_call(d, "completed", legs)],
    )


def fx_callid_reuse(i: int) -> Fixture:
    """Two calls between the same parties and ports with the same Call-ID: the first ends with BYE,
    the second starts 5 s later (new tags, branches, SSRCs, signals, PCMA)."""
    n = 23
    cap = Capture()
    t0 = scenario_start_ns(i)
    a, b = parties(n)
    call_id = f"fx{n:02d}-reused-{t0 // S:x}@{a.ip}"
    out = []
    start = t0
    for k, codec in enumerate(("PCMU", "PCMA")):
        if k:
            a = dataclasses.replace(a, tag="a23r2x")
            b = dataclasses.replace(b, tag="b23r2y")
        d = Dialog(cap, call_id, a, b, branch_seed=0x5EED0000 + n + 0x100 * k)
        d.invite(start, make_sdp(a, codec, 1000 + n + 10 * k))
        d.response(start + 4 * MS, 100, "Trying")
        d.response(start + 60 * MS, 180, "Ringing")
        t200 = start + 500 * MS
        d.response(t200, 200, "OK", sdp=make_sdp(b, codec, 2000 + n + 10 * k))
        d.ack(t200 + 8 * MS)
        over: dict = {} if not k else dict(ssrc=0x2B3C0000 + n, seq0=9000, ts0=4_000_000)
        caller = standard_leg(CALLER, codec, n, t200, 100, **over)
        over = {} if not k else dict(ssrc=0x6D7E0000 + n, seq0=12000, ts0=8_000_000)
        callee = standard_leg(CALLEE, codec, n, t200, 100, signal=noise(23002 + k, 10000), **over)
        if k:
            caller = dataclasses.replace(caller, signal={"kind": "tone", "hz": 660, "amplitude": 7000})
        ends = media_endpoints(a, b)
        emit_leg(cap, caller, *ends[CALLER])
        emit_leg(cap, callee, *ends[CALLEE])
        legs = [caller, callee]
        bye(d, max(leg.end_ns for leg in legs) + 40 * MS, 2)
        out.append(expected_call(d, "completed", legs))
        start = d.times["end"] + 5 * S
    return Fixture(
        "callid_reuse",
        "Two calls with the same Call-ID between the same addresses and ports: call 1 (PCMU, 2 s) "
        "ends with BYE, call 2 (new tags and branches, CSeq from 1 again, PCMA, new SSRCs and "
        "signals) starts 5 s later. Two calls, in order; expected.json lists both under the one "
        "Call-ID, matched by start time.",
        cap,
        out,
    )
