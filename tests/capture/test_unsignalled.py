"""Unsignalled calls: RTP whose SIP was not captured, recognised by its shape and paired up."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CallState, CapturedCall
from callrec.capture.model.errors import ParseError
from callrec.capture.sources.capture_file import open_capture
from callrec.capture.streams.unsignalled import looks_encrypted
from callrec.capture.tracking.tracker import CallTracker, TrackerConfig
from tests.helpers.builders import CALLEE_IP, CALLER_IP, Row, batch, rtp, sdp, sip

MS = 1_000_000
S = 1_000_000_000
URI = "sip:1002@example.com"
A, B = "192.0.2.10", "192.0.2.20"
REAL = Path(__file__).resolve().parents[2] / "pcaps" / "real"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "pcaps"


def _stream(
    src: str, sport: int, dst: str, dport: int, ssrc: int, n: int, t0: int = 0, pt: int = 0, size: int = 160
) -> list[Row]:
    return [
        (t0 + i * 20 * MS, src, sport, dst, dport, rtp(1000 + i, 8000 + i * 160, ssrc, pt, b"\x55" * size))
        for i in range(n)
    ]


def _by_time(*streams: list[Row]) -> list[Row]:
    return sorted((row for rows in streams for row in rows), key=lambda r: r[0])


def _run(rows: list[Row], config: TrackerConfig | None = None, chunks: int = 1):
    tracker = CallTracker(config)
    out: list[CapturedCall] = []
    size = max(1, len(rows) // chunks + 1)
    for i in range(0, len(rows), size):
        out += tracker.feed(batch(rows[i : i + size]))
    out += tracker.flush()
    return tracker, out


def _unsignalled(calls: list[CapturedCall]) -> list[CapturedCall]:
    return [c for c in calls if c.state == CallState.UNSIGNALLED]


def test_a_two_way_stream_pair_without_sip_is_one_call_with_two_legs() -> None:
    rows = _by_time(
        _stream(A, 4000, B, 6000, 0xA, 50, t0=10 * MS), _stream(B, 6000, A, 4000, 0xB, 40, t0=15 * MS)
    )
    tracker, calls = _run(rows)
    [call] = calls
    assert call.state == CallState.UNSIGNALLED
    assert call.call_id == "unsignalled-192.0.2.10:4000-192.0.2.20:6000-0000000a"
    assert (call.caller, call.callee) == ("192.0.2.10:4000", "192.0.2.20:6000")  # A sent first
    assert call.started_ns == 10 * MS and call.ended_ns == 10 * MS + 49 * 20 * MS
    assert call.end_reason == "end of capture"
    a, b = call.legs[CALLER_TO_CALLEE], call.legs[CALLEE_TO_CALLER]
    assert a.packets.seq.tolist() == list(range(1000, 1050)) and set(a.packets.ssrc.tolist()) == {0xA}
    assert len(b.packets) == 40 and set(b.packets.ssrc.tolist()) == {0xB}
    assert a.packets.payload_bytes(7) == b"\x55" * 160
    assert a.formats[0].encoding == "PCMU" and not a.encrypted
    assert [str(e) for e in a.sources] == ["192.0.2.10:4000"] and [str(e) for e in a.destinations] == [
        "192.0.2.20:6000"
    ]
    [note] = call.events
    assert note.kind == "note" and "without signalling" in note.summary
    assert tracker.counters["unsignalled_calls"] == 1 and tracker.counters["unsignalled_streams"] == 2
    assert tracker.counters["rtp_packets"] == 90 and tracker.counters["rtp_unmatched"] == 0


def test_a_one_way_stream_is_a_one_legged_call() -> None:
    tracker, calls = _run(_stream(B, 6000, A, 4000, 0xB, 30, pt=8))
    [call] = _unsignalled(calls)
    assert list(call.legs) == [CALLER_TO_CALLEE]
    assert call.caller == "192.0.2.20:6000" and len(call.legs[CALLER_TO_CALLEE].packets) == 30


def test_dynamic_payload_types_are_kept_but_unknown() -> None:
    _, calls = _run(_stream(A, 4000, B, 6000, 0xA, 30, pt=111))
    [call] = calls
    leg = call.legs[CALLER_TO_CALLEE]
    assert len(leg.packets) == 30 and 111 not in leg.formats
    assert "111 dynamic, no SDP" in call.events[0].detail


def test_the_decoder_leaves_an_unknown_payload_type_silent() -> None:
    from callrec.decode.render import render_call

    rows = _by_time(_stream(A, 4000, B, 6000, 0xA, 30, pt=111), _stream(B, 6000, A, 4000, 0xB, 30, pt=8))
    _, [call] = _run(rows)
    rendered = render_call(call)
    assert rendered.legs[CALLER_TO_CALLEE].filtered == {"unknown_pt:111": 30}
    assert rendered.legs[CALLEE_TO_CALLER].audio_packets == 30
    assert not rendered.samples[:, 0].any()


def test_junk_that_looks_like_rtp_for_a_few_packets_is_no_call() -> None:
    rng = random.Random(7)
    burst = [
        (i * MS, "203.0.113.5", 9999, "203.0.113.6", 53, bytes([0x80, 0]) + rng.randbytes(40))
        for i in range(8)
    ]
    # a long UDP flow whose first byte happens to be 0x80: random "sequence numbers", one SSRC field
    flow = [
        (
            100 * MS + i * 20 * MS,
            "203.0.113.7",
            7777,
            "203.0.113.8",
            8888,
            bytes([0x80, rng.choice([0, 8, 96])]) + rng.randbytes(2) + bytes(8) + rng.randbytes(60),
        )
        for i in range(200)
    ]
    tracker, calls = _run(burst + flow)
    assert calls == []
    assert tracker.counters["rtp_unmatched"] == 208
    assert tracker.counters["unsignalled_rejected_sequence"] == 1
    assert tracker.counters["unsignalled_rejected_too_few_packets"] >= 1
    assert tracker.counters["unsignalled_calls"] == 0


def test_bursts_and_odd_payload_types_are_rejected() -> None:
    instant = [(i * 1000, A, 4000, B, 6000, rtp(i, i * 160, 0xA)) for i in range(40)]  # 40 in 40 us
    odd = _stream(A, 4002, B, 6002, 0xC, 40, t0=10 * S, pt=72)  # RTCP's range, not a payload type
    tracker, calls = _run(instant + odd)
    assert calls == []
    assert tracker.counters["unsignalled_rejected_too_short"] == 1
    assert tracker.counters["unsignalled_rejected_payload_type"] == 1


def test_video_without_signalling_is_not_a_call() -> None:
    rows = []
    for frame in range(30):  # 4 packets per frame share the 90 kHz timestamp
        for k in range(4):
            seq = frame * 4 + k
            rows.append(
                (frame * 33 * MS + k * MS, A, 5000, B, 7000, rtp(seq, frame * 3000, 0x7, 96, b"\x11" * 1000))
            )
    tracker, calls = _run(rows)
    assert calls == [] and tracker.counters["unsignalled_rejected_video"] == 1
    assert tracker.counters["video_rtp"] == 120


def _sip_call(t0: int, a_port: int, b_port: int, call_id: str = "c1@test") -> list[Row]:
    """INVITE with the caller's SDP, then 200 OK with the callee's 100 ms later."""
    offer = sip(f"INVITE {URI} SIP/2.0", call_id=call_id, body=sdp(CALLER_IP, a_port))
    answer = sip("SIP/2.0 200 OK", call_id=call_id, to_tag="b1", body=sdp(CALLEE_IP, b_port))
    return [
        (t0, CALLER_IP, 5060, CALLEE_IP, 5060, offer),
        (t0 + 100 * MS, CALLEE_IP, 5060, CALLER_IP, 5060, answer),
    ]


def _bye(t: int, call_id: str = "c1@test") -> Row:
    return (t, CALLER_IP, 5060, CALLEE_IP, 5060, sip(f"BYE {URI} SIP/2.0", call_id=call_id, cseq="2 BYE"))


def test_rtp_claimed_by_a_late_sdp_within_the_window_goes_to_the_sip_call() -> None:
    early = _by_time(
        _stream(CALLER_IP, 4000, CALLEE_IP, 6000, 0xA, 60), _stream(CALLEE_IP, 6000, CALLER_IP, 4000, 0xB, 60)
    )
    signalling = _sip_call(1100 * MS, 4000, 6000)  # SDP 1.1 s after the first packet: inside 2 s
    rows = _by_time(early, signalling, [_bye(3 * S)])
    tracker, calls = _run(rows)
    [call] = calls
    assert call.state == CallState.COMPLETED
    assert len(call.legs[CALLER_TO_CALLEE].packets) == 60 and len(call.legs[CALLEE_TO_CALLER].packets) == 60
    assert tracker.counters["unsignalled_calls"] == 0 and tracker.counters["rtp_unmatched"] == 0


def test_a_stream_flowing_since_before_the_window_is_adopted_whole() -> None:
    """The SDP comes 3 s after the media started (beyond the 2 s window) while it still flows:
    the part that had gone on to the unsignalled streams is the SIP call's too."""
    media = _stream(CALLER_IP, 4000, CALLEE_IP, 6000, 0xA, 250)
    signalling = _sip_call(3 * S, 4000, 6000)
    tracker, calls = _run(_by_time(media, signalling, [_bye(6 * S)]), chunks=9)
    [call] = calls
    leg = call.legs[CALLER_TO_CALLEE].packets
    assert leg.seq.tolist() == list(range(1000, 1250))
    assert tracker.counters["unsignalled_calls"] == 0


def test_an_earlier_unsignalled_call_on_the_same_ports_stays_its_own() -> None:
    old = _stream(CALLER_IP, 4000, CALLEE_IP, 6000, 0xE, 50)  # ends at 1 s
    signalling = _sip_call(20 * S, 4000, 6000)
    new = _stream(CALLER_IP, 4000, CALLEE_IP, 6000, 0xA, 50, t0=20 * S + 200 * MS)
    _, calls = _run(_by_time(old, signalling, new, [_bye(23 * S)]))
    by_state = {c.state: c for c in calls}
    assert set(by_state) == {CallState.UNSIGNALLED, CallState.COMPLETED}
    assert set(by_state[CallState.UNSIGNALLED].legs[CALLER_TO_CALLEE].packets.ssrc.tolist()) == {0xE}
    assert set(by_state[CallState.COMPLETED].legs[CALLER_TO_CALLEE].packets.ssrc.tolist()) == {0xA}


def test_config_off_counts_and_drops_as_before() -> None:
    rows = _by_time(_stream(A, 4000, B, 6000, 0xA, 50), _stream(B, 6000, A, 4000, 0xB, 50))
    tracker, calls = _run(rows, TrackerConfig(unsignalled=False))
    assert calls == []
    assert tracker.counters["rtp_unmatched"] == 100 and tracker.counters["unsignalled_calls"] == 0


def test_thresholds_are_configurable() -> None:
    rows = _stream(A, 4000, B, 6000, 0xA, 10)
    assert _run(rows)[1] == []
    _, calls = _run(rows, TrackerConfig(unsignalled_min_packets=5, unsignalled_min_s=0.1))
    assert len(calls) == 1


def test_an_idle_conversation_ends_on_the_media_timeout() -> None:
    rows = _stream(A, 4000, B, 6000, 0xA, 50)
    rows.append((20 * S, "198.51.100.1", 1, "198.51.100.2", 2, b"\x00" * 20))  # time passes on the wire
    tracker = CallTracker(TrackerConfig(media_timeout_s=10))
    [call] = tracker.feed(batch(rows))
    assert call.end_reason == "rtp inactivity" and len(call.legs[CALLER_TO_CALLEE].packets) == 50
    assert tracker.flush() == []


def test_the_relayed_copy_of_a_signalled_call_is_not_a_call() -> None:
    """A media relay in the capture: the SIP call's SSRCs seen again on the relay's other side."""
    signalling = _sip_call(0, 4000, 6000)
    media = _stream(CALLER_IP, 4000, CALLEE_IP, 6000, 0xA, 100, t0=200 * MS)
    relayed = _stream("203.0.113.50", 30000, "203.0.113.60", 8000, 0xA, 100, t0=201 * MS)
    tracker, calls = _run(_by_time(signalling, media, relayed))
    assert [c.state for c in calls] == [CallState.ANSWERED]
    assert tracker.counters["unsignalled_rejected_relayed"] == 1 and tracker.counters["rtp_unmatched"] == 100


def test_a_reused_ssrc_at_another_time_is_not_taken_for_a_relay() -> None:
    """Some devices use a fixed SSRC: the same value long after a SIP call is another call."""
    signalling = _sip_call(0, 4000, 6000) + [_bye(3 * S)]
    media = _stream(CALLER_IP, 4000, CALLEE_IP, 6000, 0xA, 100, t0=200 * MS)
    later = _stream("203.0.113.50", 30000, "203.0.113.60", 8000, 0xA, 100, t0=60 * S)
    tracker, calls = _run(_by_time(signalling, media, later))
    assert sorted(c.state for c in calls) == [CallState.COMPLETED, CallState.UNSIGNALLED]
    assert tracker.counters["unsignalled_rejected_relayed"] == 0


def test_srtp_payloads_mark_the_leg_encrypted() -> None:
    rows = _stream(A, 4000, B, 6000, 0xA, 50, size=170)  # PCMU 20 ms + a 10-byte auth tag
    _, [call] = _run(rows)
    assert call.legs[CALLER_TO_CALLEE].encrypted
    assert "SRTP" in call.events[0].detail
    plain = _run(_stream(A, 4000, B, 6000, 0xA, 50))[1][0]
    assert not looks_encrypted(plain.legs[CALLER_TO_CALLEE].packets)


def test_ipv6_endpoints_are_named() -> None:
    x, y = "2001:db8::10", "2001:db8::20"
    rows = _by_time(_stream(x, 4000, y, 6000, 0xA, 30), _stream(y, 6000, x, 4000, 0xB, 30, t0=5 * MS))
    _, [call] = _run(rows)
    assert (call.caller, call.callee) == ("[2001:db8::10]:4000", "[2001:db8::20]:6000")
    assert len(call.legs[CALLEE_TO_CALLER].packets) == 30


def test_an_ssrc_change_stays_in_one_call() -> None:
    rows = _stream(A, 4000, B, 6000, 0xA, 40) + _stream(A, 4000, B, 6000, 0xC, 40, t0=800 * MS)
    tracker, [call] = _run(rows)
    assert call.legs[CALLER_TO_CALLEE].packets.ssrc.tolist() == [0xA] * 40 + [0xC] * 40
    assert tracker.counters["unsignalled_streams"] == 2


def test_streams_beyond_the_cap_are_dropped_and_counted() -> None:
    rows = _by_time(*(_stream(A, 4000 + 2 * k, B, 6000, 0x10 + k, 30) for k in range(5)))
    tracker, calls = _run(rows, TrackerConfig(unsignalled_max_streams=3))
    assert len(calls) == 3
    assert tracker.counters["unsignalled_streams_dropped"] == 2 and tracker.counters["rtp_unmatched"] == 60


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    chunks=st.integers(min_value=1, max_value=12),
    sizes=st.tuples(
        st.integers(25, 45), st.integers(25, 45), st.integers(25, 45), st.just(0) | st.integers(25, 45)
    ),
)
def test_interleaved_unsignalled_calls_are_told_apart(
    data: st.DataObject, chunks: int, sizes: tuple[int, int, int, int]
) -> None:
    """Two unsignalled calls on different ports, their packets shuffled into any interleaving
    (each stream's own order kept), in batches split anywhere: two calls, every packet in its leg."""
    streams = [
        _stream(A, 4000, B, 6000, 0xA1, sizes[0]),
        _stream(B, 6000, A, 4000, 0xB1, sizes[1]),
        _stream(A, 4100, B, 6100, 0xA2, sizes[2]),
        _stream(B, 6100, A, 4100, 0xB2, sizes[3]),
    ]
    labels = data.draw(st.permutations([k for k, n in enumerate(sizes) for _ in range(n)]))
    merged = [streams[k].pop(0) for k in labels]
    rows = [(n * 20 * MS, *row[1:]) for n, row in enumerate(merged)]  # capture time follows the order
    tracker, calls = _run(rows, chunks=chunks)
    assert len(calls) == 2 and tracker.counters["rtp_unmatched"] == 0
    for call in calls:
        ports = {int(call.caller.rsplit(":", 1)[1]), int(call.callee.rsplit(":", 1)[1])}
        base = 0 if ports == {4000, 6000} else 2
        assert ports == ({4000, 6000} if base == 0 else {4100, 6100})
        by_sender = {str(leg.sources[0]): leg.packets for leg in call.legs.values()}
        sent = {
            f"{A}:{4000 + 100 * (base // 2)}": sizes[base],
            f"{B}:{6000 + 100 * (base // 2)}": sizes[base + 1],
        }
        assert {k: len(v) for k, v in by_sender.items()} == {k: n for k, n in sent.items() if n}
        for packets in by_sender.values():
            assert packets.seq.tolist() == list(range(1000, 1000 + len(packets)))


# -- real captures --------------------------------------------------------------------------------


def _capture(path: Path, config: TrackerConfig | None = None) -> tuple[CallTracker, list[CapturedCall]]:
    frames, tracker = FrameDecoder(), CallTracker(config)
    calls: list[CapturedCall] = []
    with open_capture(path) as reader:
        for raw in reader.batches():
            calls += tracker.feed(frames.decode(raw))
    return tracker, calls + tracker.flush()


def test_volte_amr_without_sip_pairs_six_streams_into_four_calls() -> None:
    """rtpdump-hdiniz/sample1_ipv4_amr-nb.pcap: AMR-NB with dynamic PT 113/118, SDP not captured;
    tshark finds 6 streams (2463 packets) between one handset port range and one gateway port."""
    tracker, calls = _capture(REAL / "rtpdump-hdiniz" / "sample1_ipv4_amr-nb.pcap")
    assert [c.state for c in calls] == [CallState.UNSIGNALLED] * 4
    assert sum(len(leg.packets) for c in calls for leg in c.legs.values()) == 2463
    assert sorted(len(c.legs) for c in calls) == [1, 1, 2, 2]
    assert all(c.callee == "10.175.69.220:1236" for c in calls)  # the handset spoke first
    assert {int(pt) for c in calls for leg in c.legs.values() for pt in leg.packets.payload_type} == {
        113,
        118,
    }
    assert tracker.counters["unsignalled_streams"] == 6 and tracker.counters["rtp_unmatched"] == 0


def test_opus_rtp_without_sip_is_one_leg() -> None:
    _, [call] = _capture(REAL / "asterisk-testsuite" / "16_bit_48khz_60_fec_rtp.pcapng")
    assert call.state == CallState.UNSIGNALLED and list(call.legs) == [CALLER_TO_CALLEE]
    assert len(call.legs[CALLER_TO_CALLEE].packets) == 3000


def test_single_dtmf_digits_are_too_short_for_a_call() -> None:
    for digit in ("0", "5", "star"):
        tracker, calls = _capture(REAL / "sipp" / f"dtmf_2833_{digit}.pcap")
        assert calls == [] and tracker.counters["rtp_unmatched"] == 10


def test_a_relays_other_side_is_not_an_unsignalled_call() -> None:
    """SIP_CALL_RTP_G711: the relay repeats the call's two SSRCs on other ports (891 + 548
    packets); they are the SIP call's media seen twice, not a second call."""
    tracker, calls = _capture(REAL / "wireshark-wiki" / "SIP_CALL_RTP_G711")
    assert CallState.UNSIGNALLED not in {c.state for c in calls}
    assert tracker.counters["unsignalled_rejected_relayed"] == 2
    on = tracker.counters["rtp_packets"]
    tracker_off, calls_off = _capture(
        REAL / "wireshark-wiki" / "SIP_CALL_RTP_G711", TrackerConfig(unsignalled=False)
    )
    assert len(calls_off) == len(calls) and tracker_off.counters["rtp_packets"] == on


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{name} is not in ../shared/pcaps")
    return path


def test_shared_rtp_only_pcma_conversation() -> None:
    """pcap2wav-wangduanduan/one.pcap: PCMA both ways, 479 packets, no SIP."""
    _, [call] = _capture(_shared("pcap2wav-wangduanduan/one.pcap"))
    assert len(call.legs) == 2 and sum(len(leg.packets) for leg in call.legs.values()) == 479
    assert {int(pt) for leg in call.legs.values() for pt in np.unique(leg.packets.payload_type)} == {8}


def test_shared_sip_over_tls_calls_become_unsignalled_and_srtp_is_marked() -> None:
    """voipshark: the same two-party calls with SIP over TLS, once RTP and once SRTP."""
    _, plain = _capture(_shared("voipshark/SIP-over-TLS-RTP-Normal_Call_two_parties.pcap"))
    _, secret = _capture(_shared("voipshark/SIP-over-TLS-RSA-SRTP_Normal_Call_two_parties.pcap"))
    assert [c.state for c in plain] == [CallState.UNSIGNALLED] * 2 == [c.state for c in secret]
    assert not any(leg.encrypted for c in plain for leg in c.legs.values())
    assert all(leg.encrypted for c in secret for leg in c.legs.values())


def test_shared_rtp_only_captures_by_the_manifest() -> None:
    """Every capture the manifest calls RTP only (and not SRTP, video or a heuristic negative) that
    holds a stream of 25 packets or more gives at least one unsignalled call; the nDPI
    false-positive flows give none."""
    manifest = SHARED / "MANIFEST.tsv"
    if not manifest.is_file():
        pytest.skip("../shared/pcaps is not beside this checkout")
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    checked = 0
    for row in rows:
        features = row["features"].split(",")
        path = SHARED / row["file"]
        if "rtp-only" not in features or "negative" in features or not path.is_file():
            continue
        try:
            tracker, calls = _capture(path)
        except ParseError:  # a format Callrec refuses (snoop, Sniffer): not this test's business
            continue
        longest = max(
            (int(n.split("(")[1].rstrip(")")) for n in row["codecs"].split() if "(" in n), default=0
        )
        seen = tracker.counters["rtp_packets"] + tracker.counters["rtp_unmatched"]
        if longest >= 40 and seen:  # (DangerM.pcap's RTP is inside GTP-U, not opened here)
            assert _unsignalled(calls), row["file"]
        checked += 1
    assert checked >= 30
    tracker, calls = _capture(_shared("ndpi/false_positives.pcapng"))
    assert calls == []
