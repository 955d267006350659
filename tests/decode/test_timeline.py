"""The timeline: filtering, segments, reordering, anchoring, drift, placement, leg statistics.

Packets are built directly as ``RtpPackets`` (no pcap): each test knows when every packet's
audio was spoken (``true`` capture time) and checks the exact sample index it lands on.
The helpers here are imported by ``test_decode_render.py`` too.
"""

from __future__ import annotations

import numpy as np
import pytest

from callrec.capture.model.calls import CALLER_TO_CALLEE
from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.g711 import ALAW_TABLE, ULAW_TABLE
from callrec.decode.jitter import rfc3550_jitter as _rfc3550_jitter
from callrec.decode.timeline import analyse_leg
from tests.helpers.legs import (
    FORMATS,
    MS,
    SPP,
    T0,
    S,
    by_arrival,
    decoded,
    join,
    make_leg,
    render_leg,
    stream,
    true_ns,
)

# ---------------------------------------------------------------------------------------------


def test_in_order_packets_are_placed_back_to_back() -> None:
    p = stream(50)
    samples, timeline = render_leg(p)
    np.testing.assert_array_equal(samples, decoded(p))
    stats = analyse_leg(make_leg(p)).stats
    assert (stats.packets, stats.audio_packets, stats.expected, stats.lost) == (50, 50, 50, 0)
    assert (stats.duplicates, stats.late, stats.segments, stats.reanchors) == (0, 0, 1, 0)
    assert stats.first_media_ns == T0 and stats.last_media_ns == T0 + 50 * 20 * MS
    assert stats.ssrcs == (0x1111_1111,) and stats.codecs == ("PCMU",)
    assert stats.max_gap_ms == 0.0 and stats.jitter_max_ms == 0.0 and stats.sample_rate_hz == 8000


def test_loss_leaves_silence_of_exact_length_at_the_exact_place() -> None:
    p = stream(50)
    kept = p.select(np.setdiff1d(np.arange(50), [10, 11, 30]))
    samples, timeline = render_leg(kept)
    want = decoded(p)
    want[10 * SPP : 12 * SPP] = 0
    want[30 * SPP : 31 * SPP] = 0
    np.testing.assert_array_equal(samples, want)
    stats = analyse_leg(make_leg(kept)).stats
    assert (stats.expected, stats.lost, stats.audio_packets) == (50, 3, 47)
    assert stats.max_gap_ms == pytest.approx(40.0)


def test_duplicates_do_not_change_the_output() -> None:
    p = stream(40)
    copies = p.select(np.array([5, 7, 7]))
    copies = RtpPackets(
        copies.ts_ns + 30 * MS,
        copies.seq,
        copies.rtp_ts,
        copies.ssrc,
        copies.payload_type,
        copies.marker,
        copies.payload,
        copies.payload_offsets,
        copies.payload_lengths,
    )
    with_copies = by_arrival(join(p, copies))
    samples, _ = render_leg(with_copies)
    np.testing.assert_array_equal(samples, decoded(p))
    stats = analyse_leg(make_leg(with_copies)).stats
    assert (stats.duplicates, stats.lost, stats.expected, stats.late) == (3, 0, 40, 0)


def test_reordering_is_undone() -> None:
    jitter = np.zeros(40, dtype=np.int64)
    jitter[[5, 17, 18]] = 45 * MS  # each overtaken by the two packets after it
    p = by_arrival(stream(40, jitter_ns=jitter))
    assert not np.all(np.diff(p.seq) == 1)
    samples, _ = render_leg(p)
    np.testing.assert_array_equal(samples, decoded(stream(40)))
    assert analyse_leg(make_leg(p)).stats.late == 3


def test_sequence_and_timestamp_wrap_are_invisible() -> None:
    wrapped = stream(60, seq0=65_500, ts0=(1 << 32) - 20 * SPP - 7)
    plain = stream(60)
    drop = np.setdiff1d(np.arange(60), [35, 36])  # seq 65535 and 0: loss across the wrap
    samples, _ = render_leg(wrapped.select(drop))
    want, _ = render_leg(plain.select(drop))
    np.testing.assert_array_equal(samples, want)
    stats = analyse_leg(make_leg(wrapped.select(drop))).stats
    assert (stats.expected, stats.lost) == (60, 2)


def test_jitter_does_not_move_a_single_sample() -> None:
    rng = np.random.default_rng(7)
    jitter = rng.integers(0, 30 * MS, 500)
    jitter[::25] = 0  # the fastest packets of each half second had no queueing
    p = by_arrival(stream(500, jitter_ns=jitter, delay_ns=3 * MS))
    samples, timeline = render_leg(p)
    np.testing.assert_array_equal(samples, decoded(stream(500)))
    assert timeline.stats.first_media_ns == T0 + 3 * MS  # sender time + the smallest path delay


def test_jitter_statistic_is_rfc3550() -> None:
    rng = np.random.default_rng(3)
    p = by_arrival(stream(300, jitter_ns=rng.integers(0, 12 * MS, 300)))
    stats = analyse_leg(make_leg(p)).stats
    ts = p.rtp_ts.astype(np.float64)
    j, values = 0.0, []
    for k in range(1, len(p)):  # RFC 3550 A.8, in timestamp units
        d = (p.ts_ns[k] - p.ts_ns[k - 1]) * 8000 / S - (ts[k] - ts[k - 1])
        j += (abs(d) - j) / 16
        values.append(j / 8)  # ms at 8 kHz
    assert stats.jitter_mean_ms == pytest.approx(np.mean(values), rel=1e-9)
    assert stats.jitter_max_ms == pytest.approx(np.max(values), rel=1e-9)


def test_jitter_filter_matches_the_recursion_across_blocks() -> None:
    x = np.random.default_rng(5).exponential(1e6, 1000)
    j, want = 0.0, []
    for d in x:
        j += (d - j) / 16
        want.append(j)
    np.testing.assert_allclose(_rfc3550_jitter(x), want, rtol=1e-10)


def test_a_late_first_packet_does_not_shift_the_channel() -> None:
    jitter = np.zeros(100, dtype=np.int64)
    jitter[:4] = [35 * MS, 30 * MS, 20 * MS, 10 * MS]  # a burst at the start (e.g. ARP, route setup)
    p = by_arrival(stream(100, jitter_ns=jitter))
    samples, timeline = render_leg(p)
    assert timeline.stats.first_media_ns == T0  # anchored on the first packet it would be T0 + 35 ms
    np.testing.assert_array_equal(samples, decoded(stream(100)))


def test_silence_suppression_keeps_the_anchor_and_leaves_exact_silence() -> None:
    talk = stream(50)
    again = stream(
        50, seq0=1050, ts0=50_000 + 200 * SPP, start_ns=T0 + 200 * 20 * MS, marker_first=True, seed=2
    )
    samples, timeline = render_leg(join(talk, again))
    want = np.zeros(250 * SPP, dtype=np.int16)
    want[: 50 * SPP] = decoded(talk)
    want[200 * SPP :] = decoded(again)
    np.testing.assert_array_equal(samples, want)
    assert (timeline.stats.lost, timeline.stats.reanchors) == (0, 0)
    assert timeline.stats.max_gap_ms == pytest.approx(3000.0)


@pytest.mark.parametrize(
    "jump", [10_000_000, -5_000_000, 800, (1 << 31) - 1], ids=["fwd-1250s", "back-625s", "fwd-100ms", "half"]
)
def test_a_timestamp_jump_reanchors_on_arrival(jump: int) -> None:
    first = stream(60)
    second = stream(60, seq0=1060, ts0=50_000 + 60 * SPP + jump, start_ns=T0 + 60 * 20 * MS, seed=2)
    samples, timeline = render_leg(join(first, second))
    np.testing.assert_array_equal(samples, np.concatenate((decoded(first), decoded(second))))
    assert timeline.stats.reanchors == 1 and timeline.stats.segments == 1 and timeline.stats.lost == 0


def test_one_very_late_packet_does_not_reanchor() -> None:
    jitter = np.zeros(120, dtype=np.int64)
    jitter[20] = 700 * MS
    p = by_arrival(stream(120, jitter_ns=jitter))
    samples, timeline = render_leg(p)
    np.testing.assert_array_equal(samples, decoded(stream(120)))
    assert (timeline.stats.reanchors, timeline.stats.late) == (0, 1)


def test_an_ssrc_change_starts_a_new_segment_anchored_on_its_own_arrivals() -> None:
    a = stream(50, ssrc=0xA)
    b = stream(50, ssrc=0xB, seq0=33_000, ts0=3_000_000_000, start_ns=T0 + 1500 * MS, delay_ns=0, seed=2)
    samples, timeline = render_leg(join(a, b))
    want = np.zeros(12_000 + 50 * SPP, dtype=np.int16)
    want[: 50 * SPP] = decoded(a)
    want[12_000:] = decoded(b)
    np.testing.assert_array_equal(samples, want)
    assert timeline.stats.ssrcs == (0xA, 0xB) and timeline.stats.segments == 2
    assert (timeline.stats.expected, timeline.stats.lost) == (100, 0)


def test_packets_interleaved_at_an_ssrc_change_rejoin_their_segment() -> None:
    jitter = np.zeros(50, dtype=np.int64)
    jitter[49] = 45 * MS  # A's last packet arrives after B's first two
    a = stream(50, ssrc=0xA, jitter_ns=jitter)
    b = stream(50, ssrc=0xB, seq0=9, ts0=77, start_ns=T0 + 50 * 20 * MS, seed=2)
    p = by_arrival(join(a, b))
    assert p.ssrc[49] == 0xB and p.ssrc[51] == 0xA
    samples, timeline = render_leg(p)
    np.testing.assert_array_equal(samples, np.concatenate((decoded(stream(50)), decoded(b))))
    assert timeline.stats.segments == 2


def test_a_queued_start_after_an_ssrc_change_does_not_shift_the_new_segment() -> None:
    # the new stream's first packets wait behind something (a re-opened socket, ARP) and arrive
    # in a burst; the new segment is anchored on its envelope, not on its first arrival
    jitter = np.zeros(60, dtype=np.int64)
    jitter[:6] = [41 * MS, 37 * MS, 30 * MS, 21 * MS, 12 * MS, 2 * MS]
    a = stream(50, ssrc=0xA)
    after = T0 + 50 * 20 * MS + 46 * MS
    b = stream(60, ssrc=0xB, seq0=40_000, ts0=9_000_000, start_ns=after, jitter_ns=jitter)
    samples, timeline = render_leg(by_arrival(join(a, b)))
    gap = 46 * 8  # the sender's pause between the two SSRCs, kept as silence
    np.testing.assert_array_equal(samples, np.concatenate((decoded(a), np.zeros(gap, np.int16), decoded(b))))
    assert timeline.stats.segments == 2 and timeline.stats.reanchors == 0


def test_telephone_events_and_comfort_noise_never_move_the_audio() -> None:
    audio = stream(100)
    events = stream(
        8,
        pt=101,
        seq0=2000,
        ts0=50_000 + 40 * SPP,
        ts_ticks=np.zeros(8),
        start_ns=T0 + 40 * 20 * MS,
        payload=np.tile(np.array([1, 0x0A, 0, 160], dtype=np.uint8), (8, 1)),
    )
    cn = stream(
        3, pt=13, seq0=3000, ts0=123, start_ns=T0 + 70 * 20 * MS, payload=np.full((3, 1), 40, np.uint8)
    )
    p = by_arrival(join(audio, events, cn))
    samples, timeline = render_leg(p)
    np.testing.assert_array_equal(samples, decoded(audio))
    assert timeline.stats.filtered == {"non_audio:telephone-event": 8, "non_audio:cn": 3}
    assert timeline.stats.audio_packets == 100 and timeline.stats.packets == 111


def test_events_sharing_the_sequence_space_are_not_counted_lost() -> None:
    audio = stream(60)
    keep = np.setdiff1d(np.arange(60), np.arange(20, 25))  # the phone sent events instead of audio
    events = stream(
        5,
        pt=101,
        seq0=1020,
        ts0=50_000 + 20 * SPP,
        ts_ticks=np.zeros(5),
        start_ns=T0 + 20 * 20 * MS,
        payload=np.zeros((5, 4), np.uint8),
    )
    stats = analyse_leg(make_leg(by_arrival(join(audio.select(keep), events)))).stats
    assert (stats.expected, stats.lost, stats.audio_packets) == (60, 0, 55)


def test_unknown_payload_types_and_missing_decoders_are_counted() -> None:
    formats = {**FORMATS, 96: MediaFormat(96, "LPC", 8000)}  # FFmpeg could, Callrec does not (unverified)
    p = join(
        stream(20),
        stream(4, pt=96, seq0=1020, start_ns=T0 + 20 * 20 * MS),
        stream(2, pt=77, seq0=1024, start_ns=T0 + 24 * 20 * MS),
    )
    timeline = analyse_leg(make_leg(p, formats=formats))
    assert timeline.stats.filtered == {"no_decoder:LPC/8000": 4, "unknown_pt:77": 2}
    assert timeline.stats.audio_packets == 20


def test_static_payload_types_decode_without_sdp() -> None:
    p = stream(10, pt=8)
    samples, _ = render_leg(p, formats={})
    np.testing.assert_array_equal(samples, decoded(p, ALAW_TABLE))


def test_where_packets_overlap_the_later_sequence_number_wins() -> None:
    ticks = np.arange(20) * SPP
    ticks[10:] -= SPP  # packet 10 repeats packet 9's timestamp with new audio
    jitter = np.zeros(20, dtype=np.int64)
    jitter[9] = 25 * MS  # and arrives before it
    p = stream(20, ts_ticks=ticks, jitter_ns=jitter)
    arrived = by_arrival(p)
    assert arrived.seq[9] == 1010
    samples, _ = render_leg(arrived)
    payloads = decoded(p)
    np.testing.assert_array_equal(samples[: 9 * SPP], payloads[: 9 * SPP])
    np.testing.assert_array_equal(samples[9 * SPP :], payloads[10 * SPP :])


@pytest.mark.parametrize("sizes", ["same", "mixed"])
def test_heavy_reordering_gathers_payloads_correctly(sizes: str) -> None:
    n = 400
    rng = np.random.default_rng(11)
    lengths = np.full(n, SPP) if sizes == "same" else rng.choice([80, 160, 240], n)
    ticks = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    flat = rng.integers(0, 256, int(lengths.sum()), dtype=np.uint8)
    order = np.argsort(np.arange(n) + rng.uniform(0, 6, n))  # shuffled within a few packets
    starts = ticks[order]
    p = RtpPackets(
        ts_ns=T0 + np.maximum.accumulate(ticks[order]) * 125_000 + 50 * MS,
        seq=1000 + order,
        rtp_ts=50_000 + ticks[order],
        ssrc=np.full(n, 5),
        payload_type=np.zeros(n, np.int64),
        marker=np.zeros(n, bool),
        payload=flat,
        payload_offsets=starts,
        payload_lengths=lengths[order],
    )
    samples, timeline = render_leg(p, start_ns=T0 + 50 * MS)
    np.testing.assert_array_equal(samples, ULAW_TABLE[flat])
    assert timeline.stats.late > 0


def test_drift_of_50_ppm_over_10_minutes_stays_within_a_millisecond() -> None:
    n = 30_000
    rng = np.random.default_rng(2)
    jitter = rng.exponential(2 * MS, n).astype(np.int64)
    p = by_arrival(stream(n, drift_ppm=50.0, jitter_ns=jitter, delay_ns=4 * MS))
    timeline = analyse_leg(make_leg(p))
    truth = true_ns(n, drift_ppm=50.0) + 4 * MS
    start = T0
    placed = np.concatenate([b.start_indices(start, 8000) for b in timeline.blocks])
    want = np.rint((truth - start) * 8000 / S).astype(np.int64)
    assert np.abs(placed - want).max() <= 8  # 1 ms; without correction the end is 30 ms (240 samples) off
    assert timeline.stats.drift_ppm == pytest.approx(50.0, abs=2.0)
    assert 13 <= timeline.stats.drift_steps <= 17  # 30 ms in 2 ms steps
    assert timeline.stats.reanchors == 0


def test_a_leg_of_only_events_places_nothing() -> None:
    p = stream(5, pt=101, ts_ticks=np.zeros(5), payload=np.zeros((5, 4), np.uint8))
    timeline = analyse_leg(make_leg(p))
    assert timeline.blocks == () and timeline.stats.first_media_ns is None
    assert timeline.stats.expected == 5 and timeline.stats.filtered == {"non_audio:telephone-event": 5}
    assert timeline.place(T0, 8000, 100).samples.tolist() == [0] * 100


def test_an_empty_or_missing_leg() -> None:
    assert analyse_leg(None, CALLER_TO_CALLEE).stats.packets == 0
    assert analyse_leg(make_leg(RtpPackets.empty())).blocks == ()


@pytest.mark.parametrize("where", [0, 30, 59])
def test_a_single_wild_timestamp_is_placed_by_its_arrival_not_hours_away(where: int) -> None:
    ticks = np.arange(60) * SPP
    ticks[where] += 1 << 30  # 37 hours at 8 kHz: a corrupted or foreign timestamp
    p = stream(60, ts_ticks=ticks)
    samples, timeline = render_leg(p)
    np.testing.assert_array_equal(samples, decoded(p))  # nothing moved, the span is not 37 hours
    assert timeline.stats.first_media_ns == T0 and timeline.stats.last_media_ns == T0 + 60 * 20 * MS


def test_a_codec_change_mid_stream_is_seamless_and_each_part_uses_its_own_law() -> None:
    """A re-INVITE switches PCMU (PT 0) to PCMA (PT 8): same SSRC, sequence and timestamps go on."""
    n, switch = 100, 60
    packets = stream(n)
    pt = np.where(np.arange(n) < switch, 0, 8)
    switched = RtpPackets(
        packets.ts_ns, packets.seq, packets.rtp_ts, packets.ssrc, pt, packets.marker,
        packets.payload, packets.payload_offsets, packets.payload_lengths,
    )  # fmt: skip
    timeline = analyse_leg(make_leg(switched))
    out = timeline.place(T0, 8000, n * SPP).samples
    first, second = switched.select(np.arange(switch)), switched.select(np.arange(switch, n))
    assert out[: switch * SPP].tolist() == decoded(first, ULAW_TABLE).tolist()
    assert out[switch * SPP :].tolist() == decoded(second, ALAW_TABLE).tolist()
    assert timeline.stats.codecs == ("PCMU", "PCMA") and timeline.stats.lost == 0
