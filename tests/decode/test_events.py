"""RFC 4733 telephone-events as call events: folding updates and retransmitted ends, lost ends,
repeated digits, timestamp wrap, long events, any clock rate, the audio's anchor, and real
captures (SIPp's one-digit files, the Wireshark wiki's SIP_DTMF2.cap) down to ``calls show``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.calls import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    CallEvent,
    CallState,
    CapturedCall,
    CapturedLeg,
)
from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.capture.sources.capture_file import read_batches
from callrec.capture.streams.medialog import LegSpool
from callrec.capture.streams.rtp import parse_rtp_columns
from callrec.capture.tracking.tracker import CallTracker
from callrec.cli.main import cli
from callrec.decode.events import Anchor, anchored_time, call_dtmf_events, dtmf_events, event_name
from callrec.decode.render import render_call
from callrec.decode.timeline import analyse_leg
from callrec.recorder.saving.records import event_rows
from tests.decode.test_render import call_of
from tests.helpers.keyset import provision
from tests.helpers.legs import FORMATS, MS, SPP, T0, by_arrival, join, make_leg, stream

ROOT = Path(__file__).resolve().parents[2]
SIPP = ROOT / "pcaps" / "real" / "sipp"
SIP_DTMF2 = ROOT / "pcaps" / "real" / "wireshark-wiki" / "SIP_DTMF2.cap"
SSRC = 0x1111_1111  # the audio's SSRC in test_decode_timeline.stream()
TE = 101
S_PER_PRESS = 1_000_000_000  # between synthetic key presses


@dataclass
class Pkt:
    arrival_ns: int
    seq: int
    rtp_ts: int
    payload: bytes
    pt: int = TE
    ssrc: int = SSRC
    marker: bool = False


def block(code: int, duration: int, *, end: bool = False, volume: int = 10) -> bytes:
    """The 4-byte RFC 4733 event block."""
    return bytes([code, (0x80 if end else 0) | volume, duration >> 8, duration & 0xFF])


def key_press(
    code: int,
    rtp_ts: int,
    first_ns: int,
    *,
    seq0: int = 5000,
    updates: int = 6,
    step: int = 160,
    end_copies: int = 3,
    volume: int = 10,
    step_ns: int = 20 * MS,
    pt: int = TE,
) -> list[Pkt]:
    """One event as a sender emits it: updates with growing durations every ``step`` ticks, then
    the end packet ``end_copies`` times (same sequence number, as SIPp and Asterisk send it)."""
    out = [
        Pkt(
            first_ns + i * step_ns,
            seq0 + i,
            rtp_ts,
            block(code, (i + 1) * step, volume=volume),
            pt,
            SSRC,
            i == 0,
        )
        for i in range(updates)
    ]
    end = block(code, (updates + 1) * step, end=True, volume=volume)
    at = first_ns + updates * step_ns
    out += [Pkt(at + k * MS // 10, seq0 + updates, rtp_ts, end, pt) for k in range(end_copies)]
    return out


def packets_of(pkts: list[Pkt]) -> RtpPackets:
    lengths = np.array([len(p.payload) for p in pkts], dtype=np.int64)
    return RtpPackets(
        ts_ns=np.array([p.arrival_ns for p in pkts], dtype=np.int64),
        seq=np.array([p.seq & 0xFFFF for p in pkts], dtype=np.int64),
        rtp_ts=np.array([p.rtp_ts & 0xFFFF_FFFF for p in pkts], dtype=np.int64),
        ssrc=np.array([p.ssrc for p in pkts], dtype=np.int64),
        payload_type=np.array([p.pt for p in pkts], dtype=np.int64),
        marker=np.array([p.marker for p in pkts], dtype=np.bool_),
        payload=np.frombuffer(b"".join(p.payload for p in pkts), dtype=np.uint8).copy(),
        payload_offsets=np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64),
        payload_lengths=lengths,
    )


def events_leg(pkts: list[Pkt], formats: dict[int, MediaFormat] | None = None) -> CapturedLeg:
    return make_leg(packets_of(pkts), CALLER_TO_CALLEE, formats)


# -- synthetic packets ------------------------------------------------------------------------


def test_updates_and_three_end_packets_are_one_event() -> None:
    (event,) = dtmf_events(events_leg(key_press(5, 1000, T0)))
    assert (event.digit, event.duration_ms, event.volume_dbm0) == ("5", 140.0, -10)  # 7 x 160 ticks
    assert event.ended and not event.anchored and event.start_ns == T0
    assert event.sender == "caller" and event.detail == "duration 140 ms, volume -10 dBm0"


def test_a_lost_end_still_gives_the_digit_with_the_last_duration() -> None:
    pkts = key_press(11, 1000, T0, end_copies=0)
    del pkts[3]  # an update lost too: the later ones carry the duration
    (event,) = dtmf_events(events_leg(pkts))
    assert (event.digit, event.duration_ms, event.ended) == ("#", 120.0, False)
    assert event.detail == "duration 120 ms, volume -10 dBm0, end not seen"


def test_reordered_and_duplicated_updates_keep_the_longest_duration() -> None:
    pkts = key_press(3, 1000, T0)
    pkts = [pkts[0], pkts[2], pkts[1], *pkts[3:], pkts[4]]  # one late, one repeated after the end
    (event,) = dtmf_events(events_leg(pkts))
    assert (event.digit, event.duration_ms, event.ended) == ("3", 140.0, True)


def test_the_same_digit_twice_is_two_events() -> None:
    first = key_press(1, 1000, T0)
    second = key_press(1, 1000 + 4000, T0 + 500 * MS, seq0=5010)  # new timestamp: a new press
    events = dtmf_events(events_leg(first + second))
    assert [e.digit for e in events] == ["1", "1"]
    assert [e.start_ns for e in events] == [T0, T0 + 500 * MS]


def test_event_codes_are_named() -> None:
    assert [event_name(c) for c in range(17)] == [*"0123456789*#ABCD", "event 16"]
    pkts: list[Pkt] = []
    for i, code in enumerate((10, 11, 12, 15, 16)):
        pkts += key_press(code, 1000 + i * 8000, T0 + i * S_PER_PRESS, seq0=5000 + 20 * i)
    assert [e.digit for e in dtmf_events(events_leg(pkts))] == ["*", "#", "A", "D", "event 16"]


def test_rtp_timestamp_wrap_between_and_inside_events() -> None:
    near = (1 << 32) - 320
    pkts = key_press(7, near, T0) + key_press(8, near + 8000, T0 + S_PER_PRESS, seq0=5010)  # 8000: wrapped
    events = dtmf_events(events_leg(pkts))
    assert [(e.digit, e.rtp_ts, e.duration_ms) for e in events] == [("7", near, 140.0), ("8", 7680, 140.0)]


def test_long_events_sent_as_segments_are_joined() -> None:
    first = [Pkt(T0, 5000, 1000, block(0, 0xFFFF))]  # RFC 4733 2.5.1.3: the maximum, then a new segment
    second = [Pkt(T0 + 8 * S_PER_PRESS, 5001, 1000 + 0xFFFF, block(0, 800, end=True))]
    (event,) = dtmf_events(events_leg(first + second))
    assert event.duration_ms == pytest.approx((0xFFFF + 800) / 8)
    assert event.ended and event.start_ns == T0


def test_any_clock_rate_and_payload_type_from_the_formats() -> None:
    formats = {120: MediaFormat(120, "telephone-event", 48000)}
    pkts = key_press(9, 1000, T0, step=960, pt=120)  # 20 ms at 48 kHz
    (event,) = dtmf_events(events_leg(pkts, formats))
    assert (event.digit, event.duration_ms) == ("9", 140.0)
    assert dtmf_events(events_leg(pkts, {})) == ()  # a dynamic type without SDP: not an event


def test_short_or_foreign_packets_are_ignored() -> None:
    pkts = [Pkt(T0, 5000, 1000, b"\x05\x0a"), Pkt(T0, 5001, 1000, block(5, 160), pt=0)]
    assert dtmf_events(events_leg(pkts)) == ()
    assert dtmf_events(None) == () and dtmf_events(make_leg(RtpPackets.empty())) == ()


# -- placement on the audio's clock -----------------------------------------------------------


def test_an_event_starts_where_its_timestamp_sits_in_the_audio() -> None:
    audio = stream(100, delay_ns=30 * MS)  # audio packet i is heard at T0 + 30 ms + i x 20 ms
    # The key goes down at audio sample 40 x 160; its first packet leaves 20 ms later and waits 45 ms.
    press = key_press(4, 50_000 + 40 * SPP, T0 + 40 * 20 * MS + 65 * MS, seq0=1100)
    leg = make_leg(by_arrival(join(audio, packets_of(press))))
    timeline = analyse_leg(leg)
    (event,) = dtmf_events(leg, timeline.anchors)
    placed = np.concatenate([b.start_ns() for b in timeline.blocks])
    assert event.anchored and event.start_ns == placed[40] == T0 + 30 * MS + 40 * 20 * MS
    assert dtmf_events(leg)[0].start_ns == T0 + 40 * 20 * MS + 65 * MS  # no anchors: arrival


def test_anchoring_across_a_timestamp_wrap() -> None:
    ts0 = (1 << 32) - 20 * SPP  # the audio wraps after 20 packets
    audio = stream(100, ts0=ts0, delay_ns=10 * MS)
    press = key_press(2, ts0 + 60 * SPP, T0 + 60 * 20 * MS + 30 * MS, seq0=1100)  # raw ts 6400
    leg = make_leg(by_arrival(join(audio, packets_of(press))))
    (event,) = dtmf_events(leg, analyse_leg(leg).anchors)
    assert event.rtp_ts == 40 * SPP and event.anchored
    assert event.start_ns == T0 + 10 * MS + 60 * 20 * MS


def test_a_timestamp_that_disagrees_with_the_arrival_falls_back_to_it() -> None:
    anchor = Anchor(SSRC, 8000, 50_000, 100 * SPP, T0)
    assert anchored_time([anchor], SSRC, 8000, 50_000 + 8000, T0 + 1010 * MS) == T0 + 1000 * MS
    assert anchored_time([anchor], SSRC, 8000, 50_000 + 8000, T0 + 900 * MS) is None  # before it was sent
    assert anchored_time([anchor], SSRC, 8000, 50_000 + 8000, T0 + 3000 * MS) is None  # 2 s late
    assert anchored_time([anchor], SSRC + 1, 8000, 50_000, T0) is None  # another SSRC
    assert anchored_time([anchor], SSRC, 16000, 50_000, T0) is None  # another clock
    drifting = Anchor(SSRC, 8000, 50_000, 100 * SPP, T0, drift=1e-3)
    assert drifting.capture_time(50_000 + 8000) == T0 + 1001 * MS


def test_events_never_move_the_audio_and_come_out_of_render_in_time_order() -> None:
    audio = stream(100)
    callee_audio = stream(100, ssrc=0x2222_2222, seed=7)
    press = packets_of(key_press(6, 50_000 + 10 * SPP, T0 + 10 * 20 * MS, seq0=1100))
    late = packets_of(key_press(0, 50_000 + 50 * SPP, T0 + 50 * 20 * MS, seq0=1200))
    callee_press = packets_of(key_press(12, 50_000 + 30 * SPP, T0 + 30 * 20 * MS, seq0=1300))
    callee_press = RtpPackets(
        callee_press.ts_ns, callee_press.seq, callee_press.rtp_ts, np.full(len(callee_press), 0x2222_2222),
        callee_press.payload_type, callee_press.marker, callee_press.payload, callee_press.payload_offsets,
        callee_press.payload_lengths,
    )  # fmt: skip
    plain = render_call(call_of(audio, callee_audio, FORMATS))
    with_events = render_call(
        call_of(by_arrival(join(audio, press, late)), by_arrival(join(callee_audio, callee_press)), FORMATS)
    )
    np.testing.assert_array_equal(plain.samples, with_events.samples)
    assert plain.events == ()
    got = [(e.digit, e.sender, e.start_ns - T0, e.anchored) for e in with_events.events]
    assert got == [
        ("6", "caller", 200 * MS, True),
        ("A", "callee", 600 * MS, True),
        ("0", "caller", 1000 * MS, True),
    ]


def test_catalogue_rows_mix_sip_and_dtmf_by_time() -> None:
    leg = events_leg(key_press(5, 1000, T0 + 2 * MS))
    sip = (CallEvent(T0 - MS, "sip", "INVITE", "caller"), CallEvent(T0 + S_PER_PRESS, "sip", "BYE", "callee"))
    call = CapturedCall(
        "c", CallState.COMPLETED, T0 - MS, T0, T0 + S_PER_PRESS, "bye", "1", "2", "u1", "u2", "r",
        legs={CALLER_TO_CALLEE: leg}, events=sip,
    )  # fmt: skip
    for rendered in (None, render_call(call)):  # without a rendering the packets are read again
        rows = event_rows(call, rendered)
        assert [(r["kind"], r["summary"], r["sender"]) for r in rows] == [
            ("sip", "INVITE", "caller"), ("dtmf", "5", "caller"), ("sip", "BYE", "callee"),
        ]  # fmt: skip
        assert rows[1]["ts_ns"] == T0 + 2 * MS and rows[1]["detail"] == "duration 140 ms, volume -10 dBm0"


# -- real captures ----------------------------------------------------------------------------


def leg_from_capture(path: Path, formats: dict[int, MediaFormat]) -> CapturedLeg:
    """Every RTP packet of an RTP-only capture as one leg (frames -> UDP -> RTP columns)."""
    frames = FrameDecoder()
    spool = LegSpool()
    for batch in read_batches(path):
        datagrams = frames.decode(batch)
        packets, _ = parse_rtp_columns(
            datagrams.buffer, datagrams.payload_offsets, datagrams.payload_lengths, datagrams.ts_ns
        )
        spool.append(packets)
    return CapturedLeg(CALLER_TO_CALLEE, formats, spool.packets())


SIPP_DIGITS = {**{str(d): str(d) for d in range(10)}, "star": "*", "pound": "#"}


@pytest.mark.parametrize("name", sorted(SIPP_DIGITS))
def test_sipp_one_digit_files(name: str) -> None:
    leg = leg_from_capture(SIPP / f"dtmf_2833_{name}.pcap", {101: MediaFormat(101, "telephone-event", 8000)})
    assert len(leg.packets) == 10
    (event,) = dtmf_events(leg)
    assert event.digit == SIPP_DIGITS[name]
    assert (event.duration_ms, event.volume_dbm0, event.ended) == (280.0, -10, True)
    assert event.start_ns == int(leg.packets.ts_ns[0])


def sip_dtmf2_call() -> CapturedCall:
    frames, tracker = FrameDecoder(), CallTracker()
    calls = []
    for batch in read_batches(SIP_DTMF2):
        calls += tracker.feed(frames.decode(batch))
    calls += tracker.flush()
    (answered,) = [c for c in calls if c.answered_ns is not None]
    return answered


def test_sip_dtmf2_digits_from_the_callee_on_the_audio_clock() -> None:
    call = sip_dtmf2_call()
    rendered = render_call(call)
    events = rendered.events
    assert "".join(e.digit for e in events) == "6789123"
    assert {(e.sender, e.duration_ms, e.volume_dbm0, e.ended, e.anchored) for e in events} == {
        ("callee", 120.0, -7, True, True)
    }
    te = call.legs[CALLEE_TO_CALLER].packets
    for event in events:  # the first packet of each leaves at the key's start (duration 0)
        first = int(te.ts_ns[np.flatnonzero(te.rtp_ts == event.rtp_ts)[0]])
        assert abs(first - event.start_ns) <= 2 * MS  # measured: 3 us
    assert call_dtmf_events(call) != events  # arrival times differ slightly from the anchored ones
    assert [e.digit for e in call_dtmf_events(call)] == list("6789123")


def test_sip_dtmf2_events_in_calls_show(tmp_path: Path) -> None:
    home = str(provision(tmp_path / "home"))
    runner = CliRunner()
    imported = runner.invoke(
        cli, ["--home", home, "import", "--json", str(SIP_DTMF2)], catch_exceptions=False
    )
    assert imported.exit_code == 0, imported.output
    (answered,) = [c for c in json.loads(imported.stdout) if c["answered_at"]]
    shown = runner.invoke(cli, ["--home", home, "calls", "show", str(answered["id"]), "--json"])
    events = json.loads(shown.stdout)["events"]
    dtmf = [e for e in events if e["kind"] == "dtmf"]
    assert [e["summary"] for e in dtmf] == list("6789123")
    assert {(e["sender"], e["detail"]) for e in dtmf} == {("callee", "duration 120 ms, volume -7 dBm0")}
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    assert any(e["kind"] == "sip" for e in events)
