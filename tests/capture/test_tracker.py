"""The tracker: SIP dialogs, media bound to legs by SDP, call lifecycle, counters."""

from __future__ import annotations

import numpy as np

from callrec.capture.model.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CallState
from callrec.capture.tracking.tracker import CallTracker, TrackerConfig
from tests.helpers.builders import CALLEE_IP, CALLER_IP, batch, rtp, sdp, sip

MS = 1_000_000
S = 1_000_000_000
URI = "sip:1002@example.com"


def _setup(
    t0: int = 0, call_id: str = "c1@test", a_port: int = 4000, b_port: int = 6000, early: bool = False
):
    rows = [
        (
            t0,
            CALLER_IP,
            5060,
            CALLEE_IP,
            5060,
            sip(f"INVITE {URI} SIP/2.0", call_id=call_id, body=sdp(CALLER_IP, a_port)),
        ),
        (t0 + 1 * MS, CALLEE_IP, 5060, CALLER_IP, 5060, sip("SIP/2.0 100 Trying", call_id=call_id)),
    ]
    if early:
        rows.append(
            (
                t0 + 2 * MS,
                CALLEE_IP,
                5060,
                CALLER_IP,
                5060,
                sip(
                    "SIP/2.0 183 Session Progress", call_id=call_id, to_tag="b1", body=sdp(CALLEE_IP, b_port)
                ),
            )
        )
    else:
        rows.append(
            (
                t0 + 2 * MS,
                CALLEE_IP,
                5060,
                CALLER_IP,
                5060,
                sip("SIP/2.0 180 Ringing", call_id=call_id, to_tag="b1"),
            )
        )
    return rows


def _answer(t: int, call_id: str = "c1@test", b_port: int = 6000):
    return [
        (
            t,
            CALLEE_IP,
            5060,
            CALLER_IP,
            5060,
            sip("SIP/2.0 200 OK", call_id=call_id, to_tag="b1", body=sdp(CALLEE_IP, b_port)),
        ),
        (
            t + 1 * MS,
            CALLER_IP,
            5060,
            CALLEE_IP,
            5060,
            sip(f"ACK {URI} SIP/2.0", call_id=call_id, cseq="1 ACK", to_tag="b1"),
        ),
    ]


def _media(t0: int, n: int, a_port: int = 4000, b_port: int = 6000, both: bool = True):
    rows = []
    for i in range(n):
        t = t0 + i * 20 * MS
        rows.append((t, CALLER_IP, a_port, CALLEE_IP, b_port, rtp(i, i * 160, 0xA)))
        if both:
            rows.append((t + 5 * MS, CALLEE_IP, b_port, CALLER_IP, a_port, rtp(100 + i, 5000 + i * 160, 0xB)))
    return rows


def _bye(t: int, call_id: str = "c1@test"):
    return [
        (
            t,
            CALLER_IP,
            5060,
            CALLEE_IP,
            5060,
            sip(f"BYE {URI} SIP/2.0", call_id=call_id, cseq="2 BYE", to_tag="b1"),
        ),
        (
            t + 1 * MS,
            CALLEE_IP,
            5060,
            CALLER_IP,
            5060,
            sip("SIP/2.0 200 OK", call_id=call_id, cseq="2 BYE", to_tag="b1"),
        ),
    ]


def _run(rows, config: TrackerConfig | None = None, chunks: int = 1):
    tracker = CallTracker(config)
    out = []
    size = max(1, len(rows) // chunks + 1)
    for i in range(0, len(rows), size):
        out += tracker.feed(batch(rows[i : i + size]))
    out += tracker.flush()
    return tracker, out


def test_basic_call_routes_both_legs() -> None:
    rows = _setup() + _answer(100 * MS) + _media(110 * MS, 50) + _bye(2 * S)
    tracker, calls = _run(rows)
    assert len(calls) == 1
    call = calls[0]
    assert call.state == CallState.COMPLETED
    assert call.caller == "1001" and call.callee == "1002"
    assert call.answered_ns == 100 * MS and call.ended_ns == 2 * S
    a, b = call.legs[CALLER_TO_CALLEE], call.legs[CALLEE_TO_CALLER]
    assert len(a.packets) == 50 and set(a.packets.ssrc.tolist()) == {0xA}
    assert len(b.packets) == 50 and set(b.packets.ssrc.tolist()) == {0xB}
    assert a.formats[0].encoding == "PCMU"
    assert a.packets.payload_bytes(0) == b"\x55" * 160
    assert tracker.counters["rtp_packets"] == 100
    assert tracker.counters["rtp_unmatched"] == 0


def test_batches_split_anywhere_give_the_same_result() -> None:
    rows = _setup() + _answer(100 * MS) + _media(110 * MS, 50) + _bye(2 * S)
    _, one = _run(rows)
    for chunks in (2, 7, len(rows)):
        _, many = _run(rows, chunks=chunks)
        for d in (CALLER_TO_CALLEE, CALLEE_TO_CALLER):
            np.testing.assert_array_equal(one[0].legs[d].packets.seq, many[0].legs[d].packets.seq)
            np.testing.assert_array_equal(one[0].legs[d].packets.ts_ns, many[0].legs[d].packets.ts_ns)


def test_pending_log_split_keeps_every_packet() -> None:
    rows = _setup() + _answer(100 * MS) + _media(110 * MS, 200) + _bye(5 * S)
    _, calls = _run(rows, TrackerConfig(pending_packets=10), chunks=20)
    leg = calls[0].legs[CALLER_TO_CALLEE].packets
    assert leg.seq.tolist() == list(range(200))
    assert all(leg.payload_bytes(i) == b"\x55" * 160 for i in (0, 99, 199))


def test_early_media_before_answer_is_kept() -> None:
    rows = _setup(early=True) + [
        (10 * MS + i * 20 * MS, CALLEE_IP, 6000, CALLER_IP, 4000, rtp(i, i * 160, 0xB)) for i in range(10)
    ]
    rows += _answer(300 * MS) + _media(310 * MS, 5) + _bye(1 * S)
    _, calls = _run(rows)
    assert len(calls[0].legs[CALLEE_TO_CALLER].packets) == 15


def test_rtp_from_unexpected_source_port_is_matched_by_destination() -> None:
    rows = _setup() + _answer(100 * MS)
    rows += [
        (200 * MS + i * 20 * MS, "203.0.113.99", 31000, CALLEE_IP, 6000, rtp(i, i * 160, 0xA))
        for i in range(5)
    ]
    rows += [
        (200 * MS + i * 20 * MS, CALLEE_IP, 6000, "203.0.113.99", 31000, rtp(i, i * 160, 0xB))
        for i in range(5)
    ]
    rows += _bye(1 * S)
    _, calls = _run(rows)
    assert len(calls[0].legs[CALLER_TO_CALLEE].packets) == 5
    assert len(calls[0].legs[CALLEE_TO_CALLER].packets) == 5  # symmetric RTP: by the callee's source


def test_cancel_and_busy() -> None:
    cancel = _setup(call_id="x") + [
        (1 * S, CALLER_IP, 5060, CALLEE_IP, 5060, sip(f"CANCEL {URI} SIP/2.0", call_id="x", cseq="1 CANCEL")),
        (1 * S + MS, CALLEE_IP, 5060, CALLER_IP, 5060, sip("SIP/2.0 200 OK", call_id="x", cseq="1 CANCEL")),
        (
            1 * S + 2 * MS,
            CALLEE_IP,
            5060,
            CALLER_IP,
            5060,
            sip("SIP/2.0 487 Request Terminated", call_id="x", to_tag="b1"),
        ),
    ]
    busy = _setup(t0=2 * S, call_id="y") + [
        (3 * S, CALLEE_IP, 5060, CALLER_IP, 5060, sip("SIP/2.0 486 Busy Here", call_id="y", to_tag="b1")),
    ]
    _, calls = _run(cancel + busy)
    by_id = {c.call_id: c for c in calls}
    assert by_id["x"].state == CallState.CANCELLED and by_id["x"].final_status == 487
    assert by_id["y"].state == CallState.REJECTED and by_id["y"].final_status == 486
    assert "486" in by_id["y"].end_reason


def test_retransmissions_are_marked_not_reprocessed() -> None:
    rows = _setup()
    rows.append((50 * MS, *rows[0][1:]))  # INVITE again
    rows += _answer(100 * MS) + _bye(1 * S)
    _, calls = _run(rows)
    details = [e.detail for e in calls[0].events if e.summary == "INVITE"]
    assert details[1] == "retransmission"


def test_call_finishes_after_linger_and_frees_its_endpoints() -> None:
    first = _setup() + _answer(100 * MS) + _media(110 * MS, 5) + _bye(1 * S)
    # a second call reuses the same RTP ports 10 s later
    second = (
        _setup(t0=10 * S, call_id="c2@test")
        + _answer(10 * S + 100 * MS, "c2@test")
        + _media(10 * S + 110 * MS, 7)
    )
    tracker = CallTracker()
    done = tracker.feed(batch(first))
    assert done == []  # still lingering
    done = tracker.feed(batch(second))
    assert [c.call_id for c in done] == ["c1@test"]
    assert len(done[0].legs[CALLER_TO_CALLEE].packets) == 5
    rest = tracker.flush()
    assert rest[0].call_id == "c2@test" and len(rest[0].legs[CALLER_TO_CALLEE].packets) == 7
    assert rest[0].end_reason == "end of capture before BYE"


def test_inactivity_timeout_ends_an_answered_call() -> None:
    rows = _setup() + _answer(100 * MS) + _media(110 * MS, 5)
    rows += [(700 * S, "192.0.2.1", 1, "192.0.2.2", 2, b"\x00" * 20)]  # time passes on the wire
    tracker, calls = _run(rows, TrackerConfig(media_timeout_s=300))
    assert len(calls) == 1 and calls[0].end_reason.startswith("timeout")
    assert calls[0].ended_ns == 110 * MS + 4 * 20 * MS + 5 * MS


def test_garbage_is_counted_not_fatal() -> None:
    rows = _setup() + _answer(100 * MS)
    rows += [
        (150 * MS, CALLER_IP, 5060, CALLEE_IP, 5060, b"INVITE garbage\r\n\r\n"),
        (151 * MS, CALLER_IP, 4000, CALLEE_IP, 6000, b"\x80\x00\x00"),  # too short for RTP
        (152 * MS, CALLER_IP, 4000, CALLEE_IP, 6000, b"\xbf" + b"\x00" * 20),  # RTP with bad CSRC count
        (153 * MS, "192.0.2.1", 9, "192.0.2.2", 9, b"\x80\x00" + b"\x00" * 30),  # RTP nobody signalled
    ]
    rows += _media(200 * MS, 3) + _bye(1 * S)
    tracker, calls = _run(rows)
    assert len(calls) == 1 and len(calls[0].legs[CALLER_TO_CALLEE].packets) == 3
    assert tracker.counters["rtp_malformed"] == 1
    assert tracker.counters["rtp_unmatched"] == 1
    assert tracker.counters["udp_not_sip_or_rtp"] >= 2


def test_media_shortly_before_its_sdp_is_adopted_in_arrival_order() -> None:
    early = [(i * 20 * MS, CALLEE_IP, 6000, CALLER_IP, 4000, rtp(i, i * 160, 0xB)) for i in range(5)]
    rows = early + _setup(t0=100 * MS) + _answer(200 * MS) + _media(210 * MS, 5) + _bye(1 * S)
    tracker, calls = _run(rows)
    leg = calls[0].legs[CALLEE_TO_CALLER].packets
    assert leg.seq.tolist() == [0, 1, 2, 3, 4, 100, 101, 102, 103, 104]
    assert bool((leg.ts_ns[1:] >= leg.ts_ns[:-1]).all())
    assert tracker.counters["rtp_adopted_before_sdp"] == 5
    assert tracker.counters["rtp_unmatched"] == 0


def test_unclaimed_media_expires_and_is_counted() -> None:
    stray = [(i * 20 * MS, "192.0.2.1", 7000, "192.0.2.2", 7002, rtp(i, i * 160, 0xC)) for i in range(10)]
    rows = stray + _setup(t0=5 * S) + _answer(5 * S + 100 * MS) + _bye(6 * S)
    tracker, calls = _run(rows)
    assert tracker.counters["rtp_unmatched"] == 10
    assert len(calls[0].legs[CALLEE_TO_CALLER].packets) == 0


def test_latching_learns_the_peer_a_caller_really_talks_to() -> None:
    """Media via an unsignalled relay R: the caller sends from its SDP port to R, and R sends
    to the callee's SDP port. R answering from where the caller sends is the callee's side."""
    relay = "203.0.113.50"
    rows = _setup() + _answer(100 * MS)
    for i in range(5):
        t = 200 * MS + i * 20 * MS
        rows.append((t, CALLER_IP, 4000, relay, 7000, rtp(i, i * 160, 0xA)))
        rows.append((t + 3 * MS, relay, 7000, CALLEE_IP, 6000, rtp(i, i * 160, 0xB)))
    rows += _bye(1 * S)
    tracker, calls = _run(rows)
    assert set(calls[0].legs[CALLER_TO_CALLEE].packets.ssrc.tolist()) == {0xA}
    assert set(calls[0].legs[CALLEE_TO_CALLER].packets.ssrc.tolist()) == {0xB}
    assert tracker.counters["rtp_peers_learned"] >= 1


def test_learned_peers_are_forgotten_with_their_call() -> None:
    relay = "203.0.113.50"
    rows = _setup() + _answer(100 * MS)
    rows += [(200 * MS, CALLER_IP, 4000, relay, 7000, rtp(0, 0, 0xA))] + _bye(1 * S)
    rows += [(10 * S, relay, 7000, "192.0.2.9", 9000, rtp(0, 0, 0xD))]  # after the call: nobody's
    tracker, calls = _run(rows)
    assert len(calls[0].legs[CALLEE_TO_CALLER].packets) == 0
    assert tracker.counters["rtp_unmatched"] == 1


def test_two_live_dialogs_naming_the_same_media_both_get_it() -> None:
    """A B2BUA's two dialogs with direct media name the same endpoints: both calls record it."""
    rows = _setup(call_id="in") + _answer(100 * MS, "in")
    rows += _setup(t0=50 * MS, call_id="out") + _answer(150 * MS, "out")
    rows += _media(200 * MS, 10)
    rows += _bye(1 * S, "in") + _bye(1 * S + 10 * MS, "out")
    tracker, calls = _run(rows)
    assert sorted(c.call_id for c in calls) == ["in", "out"]
    for call in calls:
        assert call.legs[CALLER_TO_CALLEE].packets.seq.tolist() == list(range(10))
        assert len(call.legs[CALLEE_TO_CALLER].packets) == 10
    assert tracker.counters["rtp_endpoint_shared"] >= 1


def test_an_ended_call_gives_its_endpoints_to_the_next() -> None:
    first = _setup(call_id="a") + _answer(100 * MS, "a") + _media(110 * MS, 5) + _bye(300 * MS, "a")
    # the next call reuses the ports while the first still lingers after its BYE
    second = (
        _setup(t0=500 * MS, call_id="b") + _answer(600 * MS, "b") + _media(700 * MS, 8) + _bye(2 * S, "b")
    )
    tracker, calls = _run(first + second)
    by_id = {c.call_id: c for c in calls}
    assert len(by_id["a"].legs[CALLER_TO_CALLEE].packets) == 5
    assert len(by_id["b"].legs[CALLER_TO_CALLEE].packets) == 8
    assert tracker.counters["rtp_endpoint_shared"] == 0


def test_media_long_after_bye_is_not_the_calls() -> None:
    rows = _setup() + _answer(100 * MS) + _media(110 * MS, 5) + _bye(300 * MS)
    rows += [(1500 * MS, CALLER_IP, 4000, CALLEE_IP, 6000, rtp(99, 99 * 160, 0xA))]
    tracker, calls = _run(rows)
    assert calls[0].legs[CALLER_TO_CALLEE].packets.seq.tolist() == [0, 1, 2, 3, 4]
    # the BYE was answered: the call was handed on 0.25 s later, before the late packet came
    assert tracker.counters["rtp_after_call_end"] == 0 and tracker.counters["rtp_unmatched"] == 1
    # without the 200 to the BYE, the call lingers 2 s and drops the late packet itself
    tracker, calls = _run([r for r in rows if not (r[5].startswith(b"SIP/2.0 200") and b"BYE" in r[5])])
    assert calls[0].legs[CALLER_TO_CALLEE].packets.seq.tolist() == [0, 1, 2, 3, 4]
    assert tracker.counters["rtp_after_call_end"] == 1


def test_a_call_still_ringing_at_the_end_of_the_capture_keeps_its_state() -> None:
    _, calls = _run(_setup())
    assert calls[0].state == CallState.EARLY
    assert calls[0].end_reason == "end of capture before a final response"


def test_a_call_ringing_past_the_setup_timeout_failed() -> None:
    rows = _setup() + [(200 * S, "192.0.2.1", 1, "192.0.2.2", 2, b"\x00" * 20)]
    _, calls = _run(rows, TrackerConfig(setup_timeout_s=180))
    assert calls[0].state == CallState.FAILED and calls[0].end_reason.startswith("timeout")


def test_live_timeout_checks_hand_on_the_same_calls() -> None:
    """Checked ten times a second (a live capture), ending calls take their pending packets out of the
    log one by one; the calls are the same as with the import's checks."""
    rows = []
    for n in range(20):  # all talking at once, ending one by one: one leg at a time out of the log,
        t0 = n * 50 * MS  # then, with few calls left, the whole log split
        call_id = f"c{n}"
        rows += _setup(t0=t0, call_id=call_id, a_port=4000 + 10 * n, b_port=6000 + 10 * n)
        rows += _answer(t0 + 100 * MS, call_id, b_port=6000 + 10 * n)
        rows += _media(t0 + 110 * MS, 60 + 10 * n, a_port=4000 + 10 * n, b_port=6000 + 10 * n)
        rows += _bye(t0 + 1400 * MS + n * 200 * MS, call_id)
    rows.sort(key=lambda r: r[0])
    _, reference = _run(rows)
    _, live = _run(rows, TrackerConfig(timeout_check_s=0.1), chunks=80)
    assert [c.call_id for c in live] == [c.call_id for c in reference] and len(live) == 20
    for a, b in zip(live, reference, strict=True):
        for direction in a.legs:
            assert a.legs[direction].packets.seq.tolist() == b.legs[direction].packets.seq.tolist()
            assert a.legs[direction].packets.payload.tobytes() == b.legs[direction].packets.payload.tobytes()


def test_a_challenged_invite_retried_half_a_minute_later_is_one_call() -> None:
    """407, ACK, then the retry with credentials 30 s later on the same Call-ID (as X-Lite did in
    wireshark-wiki/aaa.pcap): one call, answered by the retry."""
    challenge = [
        (0, CALLER_IP, 5060, CALLEE_IP, 5060, sip(f"INVITE {URI} SIP/2.0", body=sdp(CALLER_IP, 4000))),
        (
            1 * MS,
            CALLEE_IP,
            5060,
            CALLER_IP,
            5060,
            sip("SIP/2.0 407 Proxy Authentication Required", to_tag="x"),
        ),
        (2 * MS, CALLER_IP, 5060, CALLEE_IP, 5060, sip(f"ACK {URI} SIP/2.0", cseq="1 ACK", to_tag="x")),
    ]
    retry = [
        (30 * S, CALLER_IP, 5060, CALLEE_IP, 5060,
         sip(f"INVITE {URI} SIP/2.0", cseq="2 INVITE", branch="z9hG4bKretry", body=sdp(CALLER_IP, 4000),
             extra_headers=['Proxy-Authorization: Digest username="1001"'])),
    ]  # fmt: skip
    rows = challenge + retry + _answer(31 * S) + _media(31 * S + 10 * MS, 20) + _bye(33 * S)
    _, calls = _run(rows)
    assert [c.state for c in calls] == [CallState.COMPLETED]
    assert calls[0].started_ns == 0 and len(calls[0].legs[CALLER_TO_CALLEE].packets) == 20


def test_an_invite_whose_content_length_overstates_its_body_is_kept() -> None:
    """SIPp's multipart INVITEs in wireshark-wiki/MSCML.pcap announce 2 bytes more than they carry;
    the server answered them 200, so the recorder keeps the body that arrived."""
    invite = sip(f"INVITE {URI} SIP/2.0", body=sdp(CALLER_IP, 4000))
    body_length = len(sdp(CALLER_IP, 4000))
    short = invite.replace(
        f"Content-Length: {body_length}".encode(), f"Content-Length: {body_length + 2}".encode()
    )
    rows = [(0, CALLER_IP, 5060, CALLEE_IP, 5060, short)] + _answer(100 * MS) + _media(110 * MS, 10) + _bye(S)
    tracker, calls = _run(rows)
    assert [c.state for c in calls] == [CallState.COMPLETED]
    assert len(calls[0].legs[CALLER_TO_CALLEE].packets) == 10 and tracker.counters["sip_truncated"] == 0


def test_sip_can_be_limited_to_listed_ports() -> None:
    """By default SIP is found by content on any port; with ``sip_ports`` only on those."""
    rows = _setup() + _answer(100 * MS) + _media(110 * MS, 10) + _bye(S)
    moved = [(ts, src, 5080 if sport == 5060 else sport, dst, 5080 if dport == 5060 else dport, data)
             for ts, src, sport, dst, dport, data in rows]  # fmt: skip
    assert len(_run(moved)[1]) == 1
    assert len(_run(moved, TrackerConfig(sip_ports=frozenset({5080})))[1]) == 1
    tracker, calls = _run(moved, TrackerConfig(sip_ports=frozenset({5060}), unsignalled=False))
    assert calls == [] and tracker.counters["sip_messages"] == 0
