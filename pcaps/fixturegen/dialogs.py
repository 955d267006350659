"""Scenarios whose SIP flow is not the standard call's: early media, CANCEL, 486."""

from __future__ import annotations

from .calls import CALLEE, CALLER, answer, emit_legs, hang_up, open_dialog, standard_leg
from .constants import MS, S, scenario_start_ns
from .expected import expected_call
from .fixture import Fixture
from .frames import Capture
from .sip import Dialog, make_sdp


def _open(i: int, n: int, codec: str, label: str) -> tuple[Capture, int, Dialog]:
    """Scenario i's capture, its start, and call n's dialog there (INVITE, 100 Trying)."""
    cap = Capture()
    t0 = scenario_start_ns(i)
    return cap, t0, open_dialog(cap, t0, n, codec, label=label)


def fx_early_media(i: int) -> Fixture:
    cap, t0, d = _open(i, 6, "PCMU", "early")
    d.response(t0 + 80 * MS, 183, "Session Progress", sdp=make_sdp(d.b, "PCMU", 2006))
    t200 = t0 + 2 * S + 100 * MS
    answer(d, t200, "PCMU", 6, ack_after=9 * MS)
    # callee media starts right after the 183 (ringback / announcement) and continues through the
    # 200 with the same SSRC; the caller starts after the ACK, and its last packet ends 31.625 ms
    # after the callee's.
    early = dict(seq0=20000, ts0=777_000, start_ns=t0 + 100 * MS, jitter_seed=13)
    legs = [
        standard_leg(CALLEE, "PCMU", 6, t200, 250, **early),
        standard_leg(CALLER, "PCMU", 6, t200, 150, seq0=500, ts0=55_555, jitter_seed=14),
    ]
    emit_legs(cap, d, legs)
    call = hang_up(d, legs, 50 * MS, by_caller=False)
    return Fixture(
        "early_media",
        "Early media: 183 Session Progress with SDP, callee RTP 2 s before the "
        "200 OK (same SSRC before and after), caller RTP after the ACK; the callee hangs up. "
        "The recording starts at the callee's first early-media packet.",
        cap,
        [call],
    )


def fx_cancelled(i: int) -> Fixture:
    cap, t0, d = _open(i, 7, "PCMU", "cancel")
    d.response(t0 + 50 * MS, 180, "Ringing")
    t_cancel = t0 + 3 * S
    d.cancel(t_cancel)
    d.response(t_cancel + 4 * MS, 200, "OK", method="CANCEL")
    d.response(t_cancel + 5 * MS, 487, "Request Terminated")
    d.ack(t_cancel + 8 * MS, for_2xx=False)
    return Fixture(
        "cancelled",
        "INVITE, 100, 180, CANCEL after 3 s of ringing, 200 (CANCEL), 487, ACK: no media, nothing to record.",
        cap,
        [expected_call(d, "cancelled", [])],
    )


def fx_busy(i: int) -> Fixture:
    cap, t0, d = _open(i, 8, "PCMA", "busy")
    d.response(t0 + 800 * MS, 486, "Busy Here")
    d.ack(t0 + 806 * MS, for_2xx=False)
    d.times["end"] = d.times["final"]
    call = expected_call(d, "rejected", [])
    return Fixture("busy_486", "INVITE, 100, 486 Busy Here, ACK: rejected, no media.", cap, [call])
