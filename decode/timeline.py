"""One leg's RTP on the capture clock: filter, segment, reorder, anchor, track drift, place.

Audio is placed by RTP timestamp, never by arrival time: within a stretch where the sender's
clock is trusted, packet ``i`` starts exactly ``(ext_ts_i - ext_ts_0) * rate / clock`` samples
after packet 0, so consecutive packets are sample-contiguous and arrival jitter cannot
shift a single sample. Arrival times are used only to pin each stretch to the capture clock,
through a robust fit of ``offset = arrival_ns - ext_ts * 1e9 / clock``:

* Network delay only ever adds to the offset, so its *lower envelope* is the sender's clock
  plus the smallest path delay. One packet's offset is that plus its own queueing delay,
  which is why anchoring on the first packet (as many recorders do) puts a whole channel
  late by whatever that packet happened to wait. A short stretch is anchored on the minimum
  over all its packets rather than over its first second only: a congested start (ARP,
  route set-up, a busy uplink) then costs nothing.
* Phone clocks drift against the capture clock by tens of ppm (10-30 ms over five minutes).
  Over a long stretch the envelope is a line: the minimum of each few-second window, fitted
  by least squares (congested windows rejected, slope clamped to +/-500 ppm). Placement
  follows the line in steps of 2 ms (a step moves a run of packets by 16 samples at 8 kHz),
  so the error stays under 1 ms instead of growing to 180 ms over an hour at 50 ppm.
* A segment ends at an SSRC change, a change of RTP clock or a sequence restart; inside a
  segment a stretch ends at a timestamp jump. At a candidate (an offset step of more than
  20 ms between consecutive arrivals, or a silence of 200 ms, where markers are set) the
  envelope of the next 50 packets is compared with that of the 50 before: earlier by 20 ms
  (impossible for honest timestamps: packets cannot arrive before they were sent) or later
  by 500 ms (beyond plausible queueing) re-anchors. A single late packet never does, as the
  window after it holds its punctual successors; a single packet with a wild timestamp
  becomes a stretch of its own, placed by its arrival instead of hours away.
  (The envelope arithmetic and its constants are in :mod:`decode.envelope`.)

Non-audio packets (RFC 4733 events, comfort noise, FEC) and encrypted legs are dropped first, so
they never move the timeline; stretch anchors (``LegTimeline.anchors``) place events and comfort
noise on the audio's clock. Gaps stay zeros of the right length; on overlap the later ext_seq wins.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import CapturedLeg
from callrec.capture.model.media import RtpPackets
from callrec.capture.model.serial import seq_diff, unwrap_seq, unwrap_ts
from callrec.decode.codecs import decoder_for, format_for, is_audio_format
from callrec.decode.codecs.base import AudioDecoder
from callrec.decode.codecs.g711 import G711Codes, G711Decoder
from callrec.decode.envelope import envelope_fit, timestamp_jumps
from callrec.decode.events import Anchor
from callrec.decode.jitter import rfc3550_jitter
from callrec.decode.resample import resample

I16 = npt.NDArray[np.int16]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

NS = 1_000_000_000
MAX_DROPOUT = 3000  # RFC 3550 A.1: a larger sequence jump is a restart, not loss
MAX_MISORDER = 100  # RFC 3550 A.1: how far back a returning SSRC may resume
DRIFT_STEP_NS = 2_000_000
# Shortcuts for the common leg (one SSRC and payload type, in order, G.711 decoded as it is placed)
# that skip sorting, selecting and decoding ahead; each gives exactly what the general code gives,
# which tests/test_render_fastpath.py checks by turning them off.
FAST_PATHS = True


@dataclass(frozen=True, slots=True)
class LegStats:
    """What happened to one leg's media, for the catalogue and for diagnosis.

    Sequence accounting covers every packet of the leg (events share the audio's sequence
    space). ``lost`` is ``expected - received`` over unique packets (RFC 3550 counts copies as
    received, which can make its figure negative). ``late``: arrived after a higher ``ext_seq``.
    ``filtered``: packets not placed, by reason (``non_audio:telephone-event``, ``encrypted``, ...).
    """

    packets: int = 0
    audio_packets: int = 0
    expected: int = 0
    lost: int = 0
    duplicates: int = 0
    late: int = 0
    ssrcs: tuple[int, ...] = ()
    codecs: tuple[str, ...] = ()
    filtered: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    reanchors: int = 0
    decode_errors: int = 0  # packets the codec could not decode (silence of their length instead)
    concealed: int = 0  # losses filled by the decoder (Opus: FEC repair or concealment)...
    repaired: int = 0  # ...of which rebuilt from the next packet's in-band FEC
    drift_ppm: float = 0.0  # sender's clock against the capture's (longest stretch): > 0 runs fast
    drift_steps: int = 0
    first_media_ns: int | None = None
    last_media_ns: int | None = None  # end of the last packet's audio
    max_gap_ms: float = 0.0
    jitter_mean_ms: float = 0.0
    jitter_max_ms: float = 0.0
    sample_rate_hz: int = 0  # highest decoded rate on the leg (0: no audio)


@dataclass(frozen=True, slots=True)
class PlacedBlock:
    """Decoded packets of one decoder, in ``ext_seq`` order, with where each one goes.

    Packet ``i`` starts at capture time ``origin_ns[i] + ticks[i] * 1e9 / clock_rate_hz``.
    Packets sharing an ``origin_ns`` are placed from ``ticks`` with integer arithmetic, so
    contiguous timestamps give contiguous samples: one slice copy per run, not per packet.
    """

    sample_rate_hz: int
    clock_rate_hz: int
    pcm: I16 | G711Codes  # G.711 is decoded as it is placed (see decode.codecs.g711)
    pcm_starts: I64
    counts: I64
    origin_ns: I64
    ticks: I64

    def start_indices(self, start_ns: int, rate_hz: int) -> I64:
        """Sample index of each packet in a recording that starts at ``start_ns``."""
        base = np.rint((self.origin_ns - start_ns) * (rate_hz / NS)).astype(np.int64)
        return base + (self.ticks * rate_hz) // self.clock_rate_hz

    def start_ns(self) -> I64:
        return self.origin_ns + np.rint(self.ticks * (NS / self.clock_rate_hz)).astype(np.int64)

    def end_ns(self) -> I64:
        return self.start_ns() + np.rint(self.counts * (NS / self.sample_rate_hz)).astype(np.int64)

    def end_index(self, start_ns: int, rate_hz: int) -> int:
        if self.sample_rate_hz == rate_hz:
            return int((self.start_indices(start_ns, rate_hz) + self.counts).max())
        return int(np.rint((int(self.end_ns().max()) - start_ns) * (rate_hz / NS)))

    def place_into(self, out: I16, start_ns: int, rate_hz: int) -> None:
        """Copy this block's audio into ``out`` (sample 0 at ``start_ns``), resampling if needed."""
        if self.sample_rate_hz == rate_hz:
            _copy_runs(out, self.start_indices(start_ns, rate_hz), self.pcm, self.pcm_starts, self.counts)
            return
        # Place at the decoded rate on a local buffer, convert it, then copy it in whole (its
        # silent edges included: blocks of different rates on one leg are not expected to overlap).
        local_start = int(self.start_ns().min())
        index = self.start_indices(local_start, self.sample_rate_hz)
        local = np.zeros(int((index + self.counts).max()), dtype=np.int16)
        _copy_runs(local, index, self.pcm, self.pcm_starts, self.counts)
        converted = resample(local, self.sample_rate_hz, rate_hz)
        at = int(np.rint((local_start - start_ns) * (rate_hz / NS)))
        _copy_runs(out, np.array([at]), converted, np.array([0]), np.array([converted.shape[0]]))


@dataclass(frozen=True, slots=True)
class PlacedLeg:
    """One leg rendered as mono int16 over the recording span (sample 0 at ``start_ns``)."""

    direction: str
    samples: I16
    sample_rate_hz: int
    start_ns: int
    stats: LegStats


@dataclass(frozen=True, slots=True)
class LegTimeline:
    """A leg analysed and decoded, not yet placed: the recording span depends on both legs."""

    direction: str
    blocks: tuple[PlacedBlock, ...]
    stats: LegStats
    anchors: tuple[Anchor, ...] = ()  # each stretch's place on the capture clock

    @property
    def sample_rates(self) -> set[int]:
        return {b.sample_rate_hz for b in self.blocks}

    def end_index(self, start_ns: int, rate_hz: int) -> int:
        return max((b.end_index(start_ns, rate_hz) for b in self.blocks), default=0)

    def place_into(self, out: I16, start_ns: int, rate_hz: int) -> None:
        """Write the leg's audio into ``out`` (zeros, sample 0 at ``start_ns``; a strided column
        of the stereo array will do, which saves an interleaving copy of the whole call)."""
        for block in self.blocks:  # segments in arrival order; inside one, ext_seq order
            block.place_into(out, start_ns, rate_hz)

    def place(self, start_ns: int, rate_hz: int, n_samples: int) -> PlacedLeg:
        """The leg's audio over ``n_samples`` at ``rate_hz`` from ``start_ns``; silence elsewhere."""
        out = np.zeros(n_samples, dtype=np.int16)
        self.place_into(out, start_ns, rate_hz)
        return PlacedLeg(self.direction, out, rate_hz, start_ns, self.stats)


def analyse_leg(leg: CapturedLeg | None, direction: str = "") -> LegTimeline:
    """Filter, segment, reorder, anchor and decode one leg (see the module docstring)."""
    if leg is None or len(leg.packets) == 0:
        return LegTimeline(direction or (leg.direction if leg else ""), (), LegStats())
    packets = leg.packets
    keep, clocks, filtered = _audio_packets(leg)
    kept = np.flatnonzero(keep)
    every = FAST_PATHS and kept.shape[0] == len(packets)  # the common leg: audio only, nothing to select
    audio = packets if every else packets.select(kept)
    clock = clocks if every else clocks[kept]
    acc = _Accumulator()
    spaces = _segments(packets, np.zeros(len(packets), dtype=np.int64))
    for seg_index in spaces:
        _account(packets.seq[seg_index], acc)
    # One RTP clock over all the packets splits them exactly as no clock did: the same segments.
    one_clock = every and bool((clock == clock[0]).all())
    for seg_index in spaces if one_clock else _segments(audio, clock):
        whole = FAST_PATHS and seg_index.shape[0] == len(audio)  # then it is every index in order
        _analyse_segment(audio if whole else audio.select(seg_index), int(clock[seg_index[0]]), leg, acc)
    stats = acc.stats(len(packets), filtered)
    return LegTimeline(direction or leg.direction, tuple(acc.blocks), stats, tuple(acc.anchors))


def _audio_packets(leg: CapturedLeg) -> tuple[npt.NDArray[np.bool_], I64, dict[str, int]]:
    """Which packets carry decodable audio, each packet's RTP clock, and why the rest do not
    (an encrypted leg's payloads are ciphertext: decoding them would only make noise)."""
    pts = leg.packets.payload_type
    clocks = np.zeros(pts.shape[0], dtype=np.int64)
    keep = np.zeros(pts.shape[0], dtype=np.bool_)
    filtered: dict[str, int] = {}
    if leg.encrypted:
        return keep, clocks, {"encrypted": int(pts.shape[0])} if pts.shape[0] else {}
    if FAST_PATHS and pts.shape[0] and pts[0] == pts.min() == pts.max():  # one payload type: no sort needed
        values, counts = pts[:1], np.array([pts.shape[0]])
    else:
        values, counts = np.unique(pts, return_counts=True)
    for pt, count in zip(values.tolist(), counts.tolist(), strict=True):
        fmt = format_for(pt, leg.formats)
        if fmt is None:
            filtered[f"unknown_pt:{pt}"] = count
        elif not is_audio_format(fmt):
            filtered[f"non_audio:{fmt.encoding.lower()}"] = count
        elif decoder_for(fmt) is None:
            filtered[f"no_decoder:{fmt.encoding}/{fmt.clock_rate_hz}"] = count
        else:
            rows = pts == pt
            keep |= rows
            clocks[rows] = fmt.clock_rate_hz
    empty = keep & (leg.packets.payload_lengths == 0)  # keep-alives: no audio, stale timestamps
    if empty.any():
        filtered["empty_payload"] = int(empty.sum())
        keep &= ~empty
    return keep, clocks, filtered


def _segments(audio: RtpPackets, clock: I64) -> list[I64]:
    """Arrival-order indices of each segment (one SSRC and RTP clock, one sequence space).

    A segment is a run of one SSRC and clock in arrival order; a run whose SSRC comes back
    and resumes its sequence within RFC 3550's limits (packets interleaved at an SSRC change,
    media resumed after hold) rejoins the earlier segment instead of being anchored alone.
    """
    n = len(audio)
    if n == 0:
        return []
    seq_step = np.diff(unwrap_seq(audio.seq))  # signed half-range distance to the previous arrival
    split = np.ones(n, dtype=np.bool_)
    split[1:] = (
        (audio.ssrc[1:] != audio.ssrc[:-1]) | (clock[1:] != clock[:-1]) | (np.abs(seq_step) > MAX_DROPOUT)
    )
    run_starts = np.flatnonzero(split)
    if FAST_PATHS and run_starts.shape[0] == 1:  # one SSRC, clock and sequence run: what most legs are
        return [np.arange(n)]
    run_ends = np.append(run_starts[1:], n)
    open_segments: dict[tuple[int, int], tuple[int, int]] = {}
    run_segment: list[int] = []
    segment_count = 0
    seq = audio.seq
    for start, end in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        key = (int(audio.ssrc[start]), int(clock[start]))
        previous = open_segments.get(key)
        if previous is not None and -MAX_MISORDER <= seq_diff(int(seq[start]), previous[1]) <= MAX_DROPOUT:
            segment = previous[0]
        else:
            segment = segment_count
            segment_count += 1
        open_segments[key] = (segment, int(seq[end - 1]))
        run_segment.append(segment)
    segment_of = np.repeat(np.array(run_segment, dtype=np.int64), run_ends - run_starts)
    order = np.argsort(segment_of, kind="stable")
    bounds = np.flatnonzero(np.diff(segment_of[order])) + 1
    return [part for part in np.split(order, bounds) if part.shape[0]]


@dataclass(slots=True)
class _Accumulator:
    blocks: list[PlacedBlock] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    ssrcs: list[int] = field(default_factory=list)
    codecs: list[str] = field(default_factory=list)
    jitter: list[F64] = field(default_factory=list)
    drift: tuple[int, float] = (0, 0.0)  # (packets, slope) of the longest stretch
    anchors: list[Anchor] = field(default_factory=list)

    def stats(self, packets: int, filtered: dict[str, int]) -> LegStats:
        c = self.counts
        media: dict[str, Any] = {}
        if self.blocks:
            starts = np.concatenate([b.start_ns() for b in self.blocks])
            ends = np.concatenate([b.end_ns() for b in self.blocks])
            # the blocks of an in-order segment come sorted: a stable sort would not move them
            if not FAST_PATHS or bool((starts[1:] < starts[:-1]).any()):
                order = np.argsort(starts, kind="stable")
                starts, ends = starts[order], ends[order]
            gaps = starts[1:] - np.maximum.accumulate(ends)[:-1]
            jitter = np.concatenate(self.jitter)
            media = {
                "first_media_ns": int(starts.min()),
                "last_media_ns": int(ends.max()),
                "max_gap_ms": max(float(gaps.max()), 0.0) / 1e6 if gaps.shape[0] else 0.0,
                "jitter_mean_ms": float(jitter.mean()) / 1e6 if jitter.shape[0] else 0.0,
                "jitter_max_ms": float(jitter.max()) / 1e6 if jitter.shape[0] else 0.0,
                "sample_rate_hz": max(b.sample_rate_hz for b in self.blocks),
            }
        return LegStats(
            packets=packets,
            audio_packets=c["placed"],
            expected=c["expected"],
            lost=c["expected"] - c["received"],
            duplicates=c["duplicates"],
            late=c["late"],
            ssrcs=tuple(self.ssrcs),
            codecs=tuple(self.codecs),
            filtered=filtered,
            segments=c["segments"],
            reanchors=c["reanchors"],
            drift_ppm=round(-self.drift[1] * 1e6, 3),
            drift_steps=c["drift_steps"],
            decode_errors=c["decode_errors"],
            concealed=c["concealed"],
            repaired=c["repaired"],
            **media,
        )


def _unique_in_order(ext_seq: I64) -> tuple[I64, I64]:
    """Arrival indices of the first copy of each ``ext_seq``, in ``ext_seq`` order, and the
    indices (arrival order) of the later copies."""
    if FAST_PATHS and bool((ext_seq[1:] > ext_seq[:-1]).all()):  # in order, no copies: no sort
        return np.arange(ext_seq.shape[0]), np.zeros(0, dtype=np.int64)
    order = np.argsort(ext_seq, kind="stable")  # ties keep arrival order: the first copy wins
    duplicate = np.zeros(order.shape[0], dtype=np.bool_)
    duplicate[1:] = ext_seq[order[1:]] == ext_seq[order[:-1]]
    return order[~duplicate], np.sort(order[duplicate])


def _account(seq: I64, acc: _Accumulator) -> None:
    """RFC 3550 receiver accounting for one sequence space of the leg.

    Done over every packet of the stream, whatever its payload type: RFC 4733 events and
    comfort noise share the audio's sequence numbers, so counting audio alone would report
    each of them as a lost packet.
    """
    ext_seq = unwrap_seq(seq)
    unique, copies = _unique_in_order(ext_seq)
    running_max = np.maximum.accumulate(ext_seq)
    late = np.zeros(ext_seq.shape[0], dtype=np.bool_)
    late[1:] = ext_seq[1:] < running_max[:-1]
    late[copies] = False
    acc.counts.update(
        received=int(unique.shape[0]),
        expected=int(ext_seq[unique[-1]] - ext_seq[unique[0]] + 1),
        duplicates=int(copies.shape[0]),
        late=int(late.sum()),
    )


def _analyse_segment(seg: RtpPackets, clock_hz: int, leg: CapturedLeg, acc: _Accumulator) -> None:
    """Unwrap, sort, de-duplicate, anchor and decode one segment (arrival order in)."""
    ext_seq = unwrap_seq(seg.seq)
    ext_ts = unwrap_ts(seg.rtp_ts)
    unique, _ = _unique_in_order(ext_seq)
    in_order = FAST_PATHS and unique.shape[0] == ext_seq.shape[0] and bool((unique[1:] > unique[:-1]).all())
    sorted_seq = ext_seq[unique]
    acc.counts.update(placed=int(unique.shape[0]), segments=1)
    ssrc = int(seg.ssrc[0])
    if ssrc not in acc.ssrcs:
        acc.ssrcs.append(ssrc)

    # Stretches (sub-segments) between timestamp jumps, found in arrival order.
    arrival_unique = unique if in_order else np.sort(unique)
    arrival_ns = seg.ts_ns[arrival_unique]
    arrival_ts = ext_ts[arrival_unique]
    offset = (arrival_ns - arrival_ns[0]).astype(np.float64) - (arrival_ts - arrival_ts[0]) * (NS / clock_hz)
    jumps = timestamp_jumps(offset, arrival_ns)
    break_seqs = ext_seq[arrival_unique[jumps]]
    break_seqs = break_seqs[break_seqs > np.maximum.accumulate(np.append(sorted_seq[0], break_seqs))[:-1]]
    acc.counts.update(reanchors=int(break_seqs.shape[0]))
    stretch = np.searchsorted(break_seqs, ext_seq[unique], side="right")

    # Anchor each stretch on its envelope; placement origin and ticks per packet (ext_seq order).
    origin = np.empty(unique.shape[0], dtype=np.int64)
    ticks = np.empty(unique.shape[0], dtype=np.int64)
    bounds = np.flatnonzero(np.diff(stretch)) + 1
    for part in np.split(np.arange(unique.shape[0]), bounds):
        rows = unique[part]
        ts, arr = ext_ts[rows], seg.ts_ns[rows]
        ts0, arr0 = int(ts.min()), int(arr.min())
        media = ((ts - ts0) * (NS / clock_hz)).astype(np.float64)
        slope, intercept = envelope_fit(media, (arr - arr0) - media)
        steps = np.rint(slope * media / DRIFT_STEP_NS)
        origin[part] = arr0 + np.rint(intercept + steps * DRIFT_STEP_NS).astype(np.int64)
        ticks[part] = ts - ts0
        acc.counts.update(drift_steps=int(steps.max() - steps.min()))
        acc.anchors.append(Anchor(ssrc, clock_hz, ts0, int(ts.max()) - ts0, arr0 + round(intercept), slope))
        if part.shape[0] > acc.drift[0]:
            acc.drift = (int(part.shape[0]), slope)

    # RFC 3550 interarrival jitter in arrival order, not across a re-anchoring.
    arrival_stretch = np.searchsorted(break_seqs, ext_seq[arrival_unique], side="right")
    transit_step = np.diff(arrival_ns).astype(np.float64) - np.diff(arrival_ts) * (NS / clock_hz)
    acc.jitter.append(rfc3550_jitter(np.abs(transit_step[np.diff(arrival_stretch) == 0])))

    # Decode runs of one payload type, in ext_seq order, with one decoder per type per segment.
    ordered = seg if in_order else seg.select(unique)
    pt = ordered.payload_type
    decoders: dict[int, AudioDecoder] = {}
    for part in np.split(np.arange(unique.shape[0]), np.flatnonzero(np.diff(pt)) + 1):
        payload_type = int(pt[part[0]])
        decoder = decoders.get(payload_type)
        if decoder is None:
            fmt = format_for(payload_type, leg.formats)
            made = decoder_for(fmt) if fmt is not None else None
            if made is None:  # _audio_packets only keeps payload types that have a decoder
                raise RuntimeError(f"no decoder for payload type {payload_type}")
            decoder = decoders[payload_type] = made
            if decoder.encoding not in acc.codecs:
                acc.codecs.append(decoder.encoding)
        packets = ordered if FAST_PATHS and part.shape[0] == len(ordered) else ordered.select(part)
        pcm: I16 | G711Codes
        if FAST_PATHS and isinstance(decoder, G711Decoder):
            pcm, counts = decoder.decode_deferred(packets)
        else:
            pcm, counts = decoder.decode(packets)
        hidden = decoder.concealment()
        if hidden is not None and hidden.counts.shape[0]:
            # Audio for lost packets (FEC repair, concealment): each piece ends where the packet
            # after the loss starts. Placed first, so received packets win where they overlap.
            back = hidden.counts * clock_hz // decoder.sample_rate_hz
            acc.blocks.append(
                PlacedBlock(
                    decoder.sample_rate_hz,
                    clock_hz,
                    hidden.pcm,
                    hidden.pcm_starts,
                    hidden.counts,
                    origin[part][hidden.before],
                    ticks[part][hidden.before] - back,
                )
            )
            acc.counts.update(concealed=int(hidden.counts.shape[0]), repaired=int(hidden.repaired.sum()))
        acc.blocks.append(
            PlacedBlock(
                decoder.sample_rate_hz,
                clock_hz,
                pcm,
                np.cumsum(counts) - counts,
                counts,
                origin[part],
                ticks[part],
            )
        )
        acc.counts.update(decode_errors=decoder.bad_packets)
        decoder.bad_packets = 0


def _copy_runs(out: I16, index: I64, pcm: I16 | G711Codes, pcm_starts: I64, counts: I64) -> None:
    """``out[index[i] : index[i] + counts[i]] = pcm[pcm_starts[i] : ...]`` for every packet, in
    order (later packets overwrite earlier ones), as one slice copy per contiguous run."""
    n = index.shape[0]
    if n == 0:
        return
    ends = index + counts
    new_run = np.ones(n, dtype=np.bool_)
    new_run[1:] = index[1:] != ends[:-1]
    first = np.flatnonzero(new_run)
    last = np.append(first[1:], n) - 1
    lengths = pcm_starts[last] + counts[last] - pcm_starts[first]
    size = out.shape[0]
    runs = zip(index[first].tolist(), pcm_starts[first].tolist(), lengths.tolist(), strict=True)
    for dst, src, length in runs:
        if dst < 0:
            src, length, dst = src - dst, length + dst, 0
        length = min(length, size - dst)
        if length > 0:
            if isinstance(pcm, G711Codes):
                pcm.copy_into(out[dst : dst + length], src)
            else:
                out[dst : dst + length] = pcm[src : src + length]
