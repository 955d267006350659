"""Spilling the media of calls in progress, the capture side: serialisation, LegSpool.spill, the
tracker's spill rounds, spilled media read back by a saver, disk errors, and the memory bound it buys.
The sealed sink itself (recorder.saving.sealed_spill) is in test_recorder_spill.py."""

from __future__ import annotations

import collections
import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.calls import CapturedCall
from callrec.capture.model.media import RtpPackets
from callrec.capture.model.packets import PacketBatch
from callrec.capture.model.spilled import SpillError, SpillSink
from callrec.capture.sources.capture_file import read_batches
from callrec.capture.streams.medialog import LegSpool
from callrec.capture.streams.spill import MemorySink, decode_chunk, encode_chunk
from callrec.capture.tracking.handoff import resolve_spilled
from callrec.capture.tracking.tracker import CallTracker, TrackerConfig
from callrec.recorder.saving.sealed_spill import SUFFIX, SealedSpill, SpillFiles
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.spill_helpers import S, assert_same_calls, assert_same_packets, chunk, flip

ROOT = Path(__file__).resolve().parents[2]
LAB_PCAP = ROOT / "pcaps" / "lab" / "lab_pcmu_12s.pcap"
I64 = st.integers(-(2**63), 2**63 - 1)


# -- serialisation ---------------------------------------------------------------------------------


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPackets:
    n = draw(st.integers(0, 40))
    payload = np.frombuffer(draw(st.binary(max_size=400)), dtype=np.uint8).copy()
    size = payload.shape[0]

    def ints(elements: st.SearchStrategy[int]) -> np.ndarray:
        return np.array(draw(st.lists(elements, min_size=n, max_size=n)), dtype=np.int64)

    column = draw(
        st.sampled_from([I64, st.integers(0, 255), st.integers(-129, 70000), st.integers(0, 2**32 - 1)])
    )
    offsets = ints(st.integers(0, size))
    lengths = np.array([draw(st.integers(0, size - int(o))) for o in offsets], dtype=np.int64)
    return RtpPackets(
        ints(I64),
        ints(column),
        ints(st.integers(0, 2**32 - 1)),
        ints(st.integers(-(2**31), 2**31)),
        ints(st.integers(0, 127)),
        np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=np.bool_),
        payload,
        offsets,
        lengths,
    )


@settings(max_examples=200, deadline=None)
@given(rtp_packets())
def test_chunk_serialisation_round_trip_is_exact(packets: RtpPackets) -> None:
    data = encode_chunk(packets)
    back = decode_chunk(data)
    assert_same_packets(back, packets)
    assert back.payload.flags.writeable
    assert encode_chunk(back) == data


def test_chunk_serialisation_is_compact_for_g711() -> None:
    c = chunk(1_764_000_000 * S, 500)
    assert len(encode_chunk(c)) <= 500 * (160 + 25) + 64  # 57 bytes of columns a packet became 25


@pytest.mark.parametrize("cut", [0, 5, 40, -1])
def test_decode_rejects_cut_or_foreign_bytes(cut: int) -> None:
    data = encode_chunk(chunk(0, 10))
    with pytest.raises(SpillError):
        decode_chunk(data[:cut])
    with pytest.raises(SpillError, match="not a spilled chunk"):
        decode_chunk(b"XXXX" + data[4:])


# -- LegSpool ----------------------------------------------------------------------------------------


def _pieces() -> list[RtpPackets]:
    """Chunks as the tracker appends them: one a second, one adopted late (early media, older
    timestamps) and one that shares a wider payload array (a select, not a take)."""
    t0 = 1_764_000_000 * S
    pieces = [chunk(t0 + k * S, 50, seq0=k * 50, seed=k) for k in range(1, 12)]
    pieces.insert(3, chunk(t0, 25, size=80, seq0=60000, seed=99))  # adopted out of order
    wide = chunk(t0 + 12 * S, 50, seq0=600, seed=12)
    pieces.append(wide.select(np.arange(0, 50, 2, dtype=np.int64)))
    return pieces


@pytest.mark.parametrize("keep_recent_ns", [0, 1 * S, 3 * S, 100 * S])
def test_leg_spool_spill_reads_back_the_same_packets(keep_recent_ns: int) -> None:
    plain, spilled, sink = LegSpool(), LegSpool(), MemorySink()
    for piece in _pieces():
        plain.append(piece)
        spilled.append(piece)
        spilled.spill(sink, "leg-7", keep_recent_ns)
        assert spilled.count == plain.count and spilled.payload_bytes == plain.payload_bytes
    if keep_recent_ns < 100 * S:
        assert spilled.spilled and spilled.resident_bytes < plain.resident_bytes
    else:
        assert not spilled.spilled
    assert_same_packets(spilled.packets(), plain.packets())
    spilled.release()
    assert not sink.chunks.get("leg-7") and not spilled.spilled


def test_leg_spool_keeps_the_recent_window_in_memory() -> None:
    spool, sink = LegSpool(), MemorySink()
    for piece in _pieces()[:12]:
        spool.append(piece)
    spool.spill(sink, "leg-1", 3 * S)
    newest = max(int(c.ts_ns.max()) for c in spool.chunks)
    assert all(int(c.ts_ns.max()) >= newest - 3 * S for c in spool.chunks)
    assert len(spool.chunks) == 4 and len(spool.spilled) == 1  # the older ones in one chunk
    assert spool.resident_bytes == sum(int(c.payload.shape[0]) for c in spool.chunks)


def test_leg_spool_keeps_the_chunk_when_the_sink_fails() -> None:
    plain, spool, sink = LegSpool(), LegSpool(), MemorySink()
    for piece in _pieces():
        plain.append(piece)
        spool.append(piece)
    sink.fail = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        spool.spill(sink, "leg-1", 2 * S)
    assert not spool.spilled and spool.resident_bytes == plain.resident_bytes
    assert len(spool.chunks) < len(plain.chunks)  # joined once, kept
    sink.fail = None
    assert spool.spill(sink, "leg-1", 2 * S) > 0
    assert_same_packets(spool.packets(), plain.packets())


# -- the tracker -------------------------------------------------------------------------------------


def _batches(path: Path, batch_bytes: int = 16 * 1024) -> list[PacketBatch]:
    return list(read_batches(path, batch_bytes=batch_bytes))


def _track(
    batches: list[PacketBatch], sink: SpillSink | None = None, defer: bool = False
) -> tuple[list[CapturedCall], CallTracker]:
    frames, tracker = FrameDecoder(), CallTracker(TrackerConfig(defer_spilled=defer, timeout_check_s=0.1))
    calls: list[CapturedCall] = []
    for batch in batches:
        calls += tracker.feed(frames.decode(batch))
        if sink is not None:
            tracker.spill_pending(sink)
    return calls + tracker.flush(), tracker


@pytest.fixture(scope="module")
def lab_batches() -> list[PacketBatch]:
    return _batches(LAB_PCAP)


def test_tracker_spill_gives_the_same_calls_memory_sink(lab_batches: list[PacketBatch]) -> None:
    reference, _ = _track(lab_batches)
    sink = MemorySink()
    calls, tracker = _track(lab_batches, sink)
    assert tracker.counters["spilled_packets"] > 0 and tracker.counters["spill_write_errors"] == 0
    assert_same_calls(calls, reference)
    assert not any(sink.chunks.values())  # every finished leg was discarded


def test_tracker_spill_gives_the_same_calls_sealed_sink(
    lab_batches: list[PacketBatch], tmp_path: Path
) -> None:
    reference, _ = _track(lab_batches)
    sink = SealedSpill(tmp_path / "spool" / "calls")
    calls, tracker = _track(lab_batches, sink)
    assert tracker.counters["spilled_packets"] > 0
    assert sink.stats().chunks_written > 0 and sink.stats().chunks_read == sink.stats().chunks_written
    assert_same_calls(calls, reference)
    assert all(p.stat().st_size == 0 for p in (tmp_path / "spool" / "calls").iterdir())  # emptied for reuse
    assert sink.stats().bytes_on_disk == 0 and sink.stats().files == 0


def test_tracker_spill_on_a_full_disk_keeps_the_media(
    lab_batches: list[PacketBatch],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reference, _ = _track(lab_batches)
    caplog.set_level(logging.INFO, logger="callrec.recorder.saving.sealed_spill")
    sink = SealedSpill(tmp_path / "calls")
    real = os.pwritev
    state = {"writes": 0}

    def flaky(fd: int, parts: list[bytes], offset: int) -> int:
        state["writes"] += 1
        if state["writes"] % 3 == 0:  # every third write: disk full, part of it written first
            os.pwrite(fd, parts[0], offset)
            raise OSError(errno.ENOSPC, "No space left on device")
        if state["writes"] % 3 == 1:  # a short write the sink completes
            return os.pwrite(fd, parts[0], offset)
        return real(fd, parts, offset)

    monkeypatch.setattr("callrec.recorder.saving.sealed_spill.os.pwritev", flaky)
    calls, tracker = _track(lab_batches, sink)
    assert tracker.counters["spill_write_errors"] > 0 and sink.stats().write_errors > 0
    assert tracker.counters["spilled_packets"] > 0
    assert any("No space left" in line for line in caplog.messages)
    assert_same_calls(calls, reference)


def test_tracker_notes_spilled_media_that_cannot_be_read(
    lab_batches: list[PacketBatch], tmp_path: Path
) -> None:
    sink = SealedSpill(tmp_path / "calls")
    frames, tracker = FrameDecoder(), CallTracker()
    calls: list[CapturedCall] = []
    tampered = False
    for batch in lab_batches:
        calls += tracker.feed(frames.decode(batch))
        tracker.spill_pending(sink)
        files = sorted((tmp_path / "calls").glob(f"*{SUFFIX}"))
        if files and not tampered and files[0].stat().st_size > 200:
            flip(files[0], 100)
            tampered = True
    calls += tracker.flush()
    assert tampered and tracker.counters["spill_read_errors"] == 1
    events = [e for c in calls for e in c.events if "spilled media packets lost" in e.summary]
    assert len(events) == 1 and "failed authentication" in events[0].detail and SUFFIX in events[0].detail
    assert all(p.stat().st_size == 0 for p in (tmp_path / "calls").iterdir())  # emptied for reuse


def test_deferred_spilled_media_is_read_back_by_whoever_saves_the_call(
    lab_batches: list[PacketBatch], tmp_path: Path
) -> None:
    reference, _ = _track(lab_batches)
    sink = SealedSpill(tmp_path / "calls")
    calls, tracker = _track(lab_batches, sink, defer=True)
    spilled = [leg.spilled for c in calls for leg in c.legs.values() if leg.spilled is not None]
    assert spilled and tracker.counters["spilled_packets"] == sum(r.packets for m in spilled for r in m.refs)
    assert sink.stats().chunks_read == 0 and sink.stats().files == len(spilled)  # not read, not discarded
    # another process: a reader with the key alone, by file
    reader, counters = SpillFiles(sink.key), collections.Counter[str]()
    resolved = [resolve_spilled(c, reader, counters) for c in calls]
    assert all(leg.spilled is None for c in resolved for leg in c.legs.values())
    assert_same_calls(resolved, reference)
    assert not counters
    for media in spilled:
        sink.discard(media.leg_key)
    assert sink.stats().files == 0 and sink.stats().bytes_on_disk == 0


@pytest.mark.parametrize("defer", [False, True])
def test_spilling_the_whole_media_log_gives_the_same_calls(
    lab_batches: list[PacketBatch], tmp_path: Path, defer: bool
) -> None:
    """The live capture's round: everything pending for calls in progress to the sink, one record per
    leg (version 2 rows); read back by the tracker, or by a saver with the key alone."""
    reference, _ = _track(lab_batches)
    sink = SealedSpill(tmp_path / "calls")
    calls, tracker = _track(lab_batches, sink, defer=defer)
    assert tracker.counters["spilled_packets"] > 0 and tracker.counters["spill_write_errors"] == 0
    if defer:
        reader = SpillFiles(sink.key)
        calls = [resolve_spilled(c, reader, collections.Counter()) for c in calls]
    assert_same_calls(calls, reference)


def test_spilling_the_whole_media_log_on_a_full_disk_keeps_the_media(lab_batches: list[PacketBatch]) -> None:
    reference, _ = _track(lab_batches)
    sink = MemorySink()
    frames, tracker = FrameDecoder(), CallTracker()
    calls: list[CapturedCall] = []
    for n, batch in enumerate(lab_batches):
        calls += tracker.feed(frames.decode(batch))
        sink.fail = OSError(errno.ENOSPC, "No space left on device") if n % 3 == 1 else None
        tracker.spill_pending(sink)
    calls += tracker.flush()
    assert tracker.counters["spill_write_errors"] > 0 and tracker.counters["spilled_packets"] > 0
    assert_same_calls(calls, reference)


@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 65535), st.integers(0, 2**32 - 1), st.integers(0, 90)),
        max_size=60,
    )
)
@settings(max_examples=150, deadline=None)
def test_version_2_records_are_each_legs_packets(rows: list[tuple[int, int, int, int]]) -> None:
    from callrec.capture.streams.medialog import MediaLog
    from callrec.capture.streams.spill import block_records

    log = MediaLog()
    n = len(rows)
    legs = np.array([r[0] for r in rows], dtype=np.int64)
    lengths = np.array([r[3] for r in rows], dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    payload = np.concatenate(
        [np.full(k, i % 256, np.uint8) for i, k in enumerate(lengths.tolist())] or [np.zeros(0, np.uint8)]
    )
    seq = np.array([r[1] for r in rows], dtype=np.int64)
    ts = np.array([r[2] for r in rows], dtype=np.int64)
    packets = RtpPackets(ts * 7, seq, ts, ts ^ 0xFFFF, seq % 128, seq % 3 == 0, payload, offsets, lengths)
    if n:
        log.append(legs, packets)
    block = log.drain()
    if block is None:
        assert n == 0
        return
    records = block_records(block)
    assert records is not None
    for i in range(len(block.leg_ids)):
        assert_same_packets(decode_chunk(records(i)), block.piece(i))


# -- when the spilled part is read back by the saver ---------------------------------------------------


def test_deferred_spilled_media_that_cannot_be_read_is_noted_in_the_call(
    lab_batches: list[PacketBatch], tmp_path: Path
) -> None:
    sink = SealedSpill(tmp_path / "calls")
    calls, _ = _track(lab_batches, sink, defer=True)
    call = next(c for c in calls if any(leg.spilled for leg in c.legs.values()))
    direction, leg = next((d, leg) for d, leg in call.legs.items() if leg.spilled is not None)
    assert leg.spilled is not None
    flip(Path(leg.spilled.location), leg.spilled.refs[0].offset + 40)
    counters = collections.Counter[str]()
    resolved = resolve_spilled(call, SpillFiles(sink.key), counters)
    assert counters["spill_read_errors"] == 1
    assert_same_packets(resolved.legs[direction].packets, leg.packets)  # the part in memory stays
    lost = sum(r.packets for r in leg.spilled.refs)
    notes = [e for e in resolved.events if e.summary == f"{lost} spilled media packets lost"]
    assert len(notes) == 1 and direction in notes[0].detail and "failed authentication" in notes[0].detail
    with pytest.raises(SpillError, match="another key|failed authentication"):
        SpillFiles(b"\x01" * 32).read_at(leg.spilled.location, leg.spilled.refs[-1])


# -- the memory bound ---------------------------------------------------------------------------------


def test_memory_per_call_is_bounded_with_spill(tmp_path: Path) -> None:
    path = write_calls(tmp_path / "long.pcap", [CallSpec("1001", "1002", seconds=240.0)])
    batches = _batches(path, batch_bytes=64 * 1024)  # ~3.3 s of this call (both legs) per batch
    results = {}
    for spill in (False, True):
        frames, tracker = FrameDecoder(), CallTracker()
        sink = SealedSpill(tmp_path / f"calls-{spill}")
        peak, samples = 0, []
        for n, batch in enumerate(batches):
            tracker.feed(frames.decode(batch))
            held = tracker.memory_bytes()  # before the round: the most a round leaves in memory
            peak = max(peak, held)
            if n % 5 == 4:
                samples.append(held)
            if spill:
                tracker.spill_pending(sink)
        calls = tracker.flush()
        assert len(calls) == 1 and len(calls[0].legs["caller->callee"].packets) == 12_000
        results[spill] = (peak, samples)
    without, with_spill = results[False], results[True]
    # Without: everything (2 legs x 240 s x 8000 B/s) is held by the end; with: at most the payload of the
    # one batch since the last round.
    assert without[0] > 3_500_000
    assert with_spill[0] < 64 * 1024, with_spill[0]
    assert with_spill[1][-1] <= with_spill[1][len(with_spill[1]) // 4] + 30_000  # not growing
    assert without[1][-1] > 2.5 * without[1][len(without[1]) // 4]  # growing


def test_spill_refs_keep_what_was_appended_compactly() -> None:
    import pickle

    from callrec.capture.model.spilled import SpillRef, SpillRefs

    refs = [SpillRef("leg-4", i, 1000 * i, 900 + i, 50, 8000) for i in range(3600)]
    kept = SpillRefs(refs)
    assert len(kept) == 3600 and kept[17] == refs[17] and list(kept) == refs and kept.packets == 180_000
    again = pickle.loads(pickle.dumps(kept))
    assert again == kept and again.leg_key == "leg-4"
    copy = kept.copy()
    kept.clear()
    assert not kept and len(copy) == 3600
    with pytest.raises(ValueError, match="leg-5"):
        copy.append(SpillRef("leg-5", 0, 0, 1, 1, 1))
    assert len(pickle.dumps(copy)) < 3600 * 48  # five 8-byte integers a reference, not an object each
