"""The crash journal: sealed round trip, rotation and prune, damage, keys, budget and full disks."""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import callrec.recorder.journal.segments as journal_mod
from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.calls import CallState
from callrec.capture.model.packets import BUFFER_PADDING, PacketBatch
from callrec.capture.sources.capture_file import open_capture
from callrec.capture.tracking.tracker import CallTracker
from callrec.recorder.journal.key import JournalKeyError, load_or_create_key
from callrec.recorder.journal.segments import (
    HEADER_BYTES,
    RECORD_HEAD_BYTES,
    Journal,
    PlainChunk,
    ReplayReport,
    replay,
    rotate_key,
)
from callrec.recorder.journal.writer import JournalWriter

LAB = Path(__file__).resolve().parents[2] / "pcaps" / "lab" / "lab_pcmu_12s.pcap"
S = 1_000_000_000
Frame = tuple[int, int, bytes]


def lab_batches(batch_bytes: int = 1 << 14) -> list[PacketBatch]:
    with open_capture(LAB, batch_bytes) as reader:
        return list(reader.batches())


def frames_of(batches: list[PacketBatch]) -> list[Frame]:
    out = []
    for b in batches:
        for i in range(len(b)):
            start = int(b.offsets[i])
            out.append((int(b.ts_ns[i]), int(b.linktypes[i]), b.buffer[start : start + int(b.caplens[i])]))
    return out


def write(directory: Path, key: bytes, batches: list[PacketBatch], **kwargs: float) -> Journal:
    """A journal with one chunk per batch (the daemon flushes once a second)."""
    journal = Journal(directory, key, **kwargs)  # type: ignore[arg-type]
    for b in batches:
        journal.append(b)
        assert journal.flush()
    journal.close()
    return journal


def read(directory: Path, key: bytes) -> tuple[list[PacketBatch], ReplayReport]:
    report = ReplayReport()
    return list(replay(directory, key, report)), report


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return load_or_create_key(tmp_path / "journal.key")


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_round_trip_of_a_capture_is_byte_identical(tmp_path: Path, key: bytes) -> None:
    batches = lab_batches()
    journal = write(tmp_path / "j", key, batches)
    got, report = read(tmp_path / "j", key)
    assert frames_of(got) == frames_of(batches)
    assert report.chunks_read == len(batches) and report.frames == sum(map(len, batches))
    assert report.chunks_torn == report.chunks_rejected == 0 and not report.problems
    assert [b.first_number for b in got][:2] == [1, len(got[0]) + 1]
    for b in got:
        assert b.offsets.dtype == b.caplens.dtype == b.ts_ns.dtype == b.linktypes.dtype == np.int64
        assert len(b.buffer) >= int(b.offsets[-1] + b.caplens[-1]) + BUFFER_PADDING
    stats = journal.stats()
    assert stats.chunks_written == len(batches) and stats.dropped_chunks == 0
    assert stats.bytes_used == sum(p.stat().st_size for p in segments(tmp_path / "j"))
    assert stats.oldest_ts_ns == int(batches[0].ts_ns.min())
    sealed = b"".join(p.read_bytes() for p in segments(tmp_path / "j"))
    assert batches[0].buffer[int(batches[0].offsets[3]) :][:40] not in sealed  # nothing in the clear


def test_rotation_by_capture_time_and_prune(tmp_path: Path, key: bytes) -> None:
    batches = lab_batches(1 << 13)
    directory = tmp_path / "j"
    journal = Journal(directory, key, segment_seconds=2)
    for b in batches:
        journal.append(b)
        journal.flush()
    files = segments(directory)
    assert len(files) == journal.stats().segments >= 6
    assert [f.name for f in files][:2] == ["000000000000.seg", "000000000001.seg"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    all_frames = frames_of(batches)
    cut = all_frames[len(all_frames) // 2][0]
    removed = journal.prune(cut)
    assert removed >= 2
    kept = frames_of(read(directory, key)[0])
    assert kept == all_frames[-len(kept) :] and kept[0][0] <= cut  # whole segments only
    assert journal.stats().oldest_ts_ns == kept[0][0]
    # no call in progress: everything but the segment being written goes
    journal.prune(all_frames[-1][0] + S)
    assert len(segments(directory)) == 1 and journal.stats().segments == 1
    journal.close()
    # a later run continues the numbering; its prune bounds inherited segments by the next one's start
    last = segments(directory)[-1].name
    again = Journal(directory, key, segment_seconds=2)
    assert again.stats().segments == 1 and again.stats().oldest_ts_ns is not None
    again.append(batches[-1])
    again.flush()
    assert segments(directory)[-1].name > last
    assert again.prune(all_frames[-1][0] + 1) == 1
    again.close()


def test_torn_last_record_loses_only_that_chunk(tmp_path: Path, key: bytes) -> None:
    batches = lab_batches()
    directory = tmp_path / "j"
    write(directory, key, batches)
    path = segments(directory)[-1]
    whole = path.read_bytes()
    last_size = len(whole) - _record_starts(whole)[-1]
    expected = frames_of(batches[:-1])
    for cut in (1, 5, RECORD_HEAD_BYTES, RECORD_HEAD_BYTES + 11, last_size // 2, last_size - 1):
        path.write_bytes(whole[: len(whole) - cut])
        got, report = read(directory, key)
        assert frames_of(got) == expected, cut
        assert report.chunks_torn == 1 and report.chunks_rejected == 0
    path.write_bytes(whole[: len(whole) - last_size])  # cut at a record boundary: what a crash looks like
    got, report = read(directory, key)
    assert frames_of(got) == expected and report.chunks_torn == 0
    path.write_bytes(whole[: HEADER_BYTES // 2])  # a segment cut inside its header
    assert frames_of(read(directory, key)[0]) == frames_of(batches[: -len(_record_starts(whole))])


def _record_starts(data: bytes) -> list[int]:
    """Offsets of the records of an intact segment."""
    starts, pos = [], HEADER_BYTES
    while pos < len(data):
        starts.append(pos)
        pos += RECORD_HEAD_BYTES + int.from_bytes(data[pos + 8 : pos + 12], "big")
    return starts


@pytest.mark.parametrize("where", ["ciphertext", "nonce", "record head", "segment header"])
def test_a_flipped_byte_rejects_one_chunk_only(tmp_path: Path, key: bytes, where: str) -> None:
    batches = lab_batches()
    directory = tmp_path / "j"
    write(directory, key, batches, segment_seconds=60)
    (path,) = segments(directory)
    data = bytearray(path.read_bytes())
    starts = _record_starts(bytes(data))
    victim = 2
    at = {
        "ciphertext": starts[victim] + RECORD_HEAD_BYTES + 12 + 100,
        "nonce": starts[victim] + RECORD_HEAD_BYTES + 3,
        "record head": starts[victim] + 9,  # the length field
        "segment header": 30,  # the key id
    }[where]
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    got, report = read(directory, key)
    if where == "segment header":
        assert frames_of(got) == frames_of(batches) and report.damaged_headers == 1
        return
    assert frames_of(got) == frames_of(batches[:victim] + batches[victim + 1 :])
    assert report.chunks_rejected == 1 and report.chunks_torn == 0
    assert report.chunks_read == len(batches) - 1


def test_moved_or_duplicated_records_are_rejected(tmp_path: Path, key: bytes) -> None:
    batches = lab_batches()
    directory = tmp_path / "j"
    write(directory, key, batches, segment_seconds=60)
    (path,) = segments(directory)
    data = path.read_bytes()
    starts = _record_starts(data)
    first = data[starts[0] : starts[1]]
    path.write_bytes(data + first)  # chunk 0 again at the end
    got, report = read(directory, key)
    assert frames_of(got) == frames_of(batches) and report.chunks_rejected == 1
    other = tmp_path / "k"
    write(other, key, batches[:1], segment_seconds=60)
    os.rename(path, other / "000000000001.seg")  # a whole segment under another number
    got, report = read(other, key)
    assert frames_of(got) == frames_of(batches[:1]) and report.damaged_headers == 1
    assert report.chunks_rejected == len(batches) + 1


def test_wrong_key_is_an_error_naming_the_journal(tmp_path: Path, key: bytes) -> None:
    directory = tmp_path / "spool" / "journal"
    write(directory, key, lab_batches()[:2])
    other = load_or_create_key(tmp_path / "other.key")
    with pytest.raises(JournalKeyError, match=str(directory)):
        replay(directory, other)  # at once, before any batch
    with pytest.raises(JournalKeyError, match="another key"):
        Journal(directory, other)
    assert read(tmp_path / "missing", key)[0] == []


def test_key_file_is_created_0600_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "journal.key"
    key = load_or_create_key(path)
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in tmp_path.iterdir()] == ["journal.key"]  # no temp file left
    path.chmod(0o640)
    with pytest.raises(JournalKeyError, match="0640.*group or others"):
        load_or_create_key(path)
    path.chmod(0o600)
    path.write_bytes(key + b"\n")
    with pytest.raises(JournalKeyError, match="33 bytes"):
        load_or_create_key(path)
    link = tmp_path / "link.key"
    link.symlink_to(path)
    with pytest.raises(JournalKeyError, match="symbolic link"):
        load_or_create_key(link)


def test_rotate_key_deletes_the_journal_and_makes_a_new_key(tmp_path: Path, key: bytes) -> None:
    directory = tmp_path / "j"
    write(directory, key, lab_batches()[:3])
    new = rotate_key(directory, tmp_path / "journal.key")
    assert new != key and load_or_create_key(tmp_path / "journal.key") == new
    assert segments(directory) == [] and stat.S_IMODE((tmp_path / "journal.key").stat().st_mode) == 0o600
    write(directory, new, lab_batches()[:1])
    assert len(read(directory, new)[0]) == 1


def test_budget_drops_chunks_without_raising_and_resumes_after_prune(tmp_path: Path, key: bytes) -> None:
    batches = lab_batches(1 << 13)
    directory = tmp_path / "j"
    journal = Journal(directory, key, segment_seconds=1, budget_bytes=60_000)
    results = []
    for b in batches:
        journal.append(b)
        results.append(journal.flush())
    stats = journal.stats()
    assert False in results and stats.bytes_used <= 60_000
    assert stats.dropped_chunks == results.count(False) and stats.dropped_frames > 0
    assert stats.last_error is not None and "budget of 60000 bytes" in stats.last_error
    assert journal.prune(int(batches[-1].ts_ns[-1])) >= 1
    journal.append(batches[-1])
    assert journal.flush() and journal.stats().chunks_written == results.count(True) + 1
    journal.close()


def test_disk_full_drops_chunks_and_writes_resume(
    tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="callrec.recorder.journal.segments")
    batches = lab_batches()
    directory = tmp_path / "j"
    journal = Journal(directory, key, segment_seconds=60)
    real_writev = os.writev

    def half_then_full(fd: int, buffers: list[memoryview]) -> int:
        if buffers and len(buffers[0]) > 100:  # write part of the record first, then fail
            return real_writev(fd, [buffers[0][: len(buffers[0]) // 2]])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    journal.append(batches[0])
    assert journal.flush()
    monkeypatch.setattr(journal_mod.os, "writev", half_then_full)
    for b in batches[1:3]:
        journal.append(b)
        assert journal.flush() is False  # never raises into the capture loop
    stats = journal.stats()
    assert stats.dropped_chunks == 2 and stats.dropped_frames == len(batches[1]) + len(batches[2])
    assert stats.last_error is not None and "No space left on device" in stats.last_error
    monkeypatch.setattr(journal_mod.os, "writev", real_writev)
    for b in batches[3:]:
        journal.append(b)
        assert journal.flush()
    journal.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # one when the failure starts, one when it ends: not one per chunk
    assert "dropped" in lines[0] and "No space left" in lines[0] and "writing again" in lines[1]
    got, report = read(directory, key)
    assert frames_of(got) == frames_of(batches[:1] + batches[3:])
    assert report.chunks_torn == report.chunks_rejected == 0  # the partial record was cut off again
    assert journal.stats().bytes_used == sum(p.stat().st_size for p in segments(directory))


def test_read_only_filesystem_when_opening_a_segment(
    tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = lab_batches()
    directory = tmp_path / "j"
    journal = Journal(directory, key)
    real_open = os.open

    def erofs(path: object, flags: int, mode: int = 0o777) -> int:
        if str(path).endswith(".seg"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, flags, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(journal_mod.os, "open", erofs)
    journal.append(batches[0])
    assert not journal.flush() and "Read-only file system" in str(journal.stats().last_error)
    monkeypatch.setattr(journal_mod.os, "open", real_open)
    journal.append(batches[1])
    assert journal.flush()
    journal.close()
    assert frames_of(read(directory, key)[0]) == frames_of(batches[1:2])


def test_replaying_a_capture_cut_mid_call_recovers_the_call(tmp_path: Path, key: bytes) -> None:
    batches = lab_batches(1 << 13)
    half = batches[: len(batches) // 2]
    directory = tmp_path / "j"
    journal = Journal(directory, key)
    for b in half:
        journal.append(b)
        journal.flush()
    del journal  # a crash: nothing closed
    decoder, tracker = FrameDecoder(), CallTracker()
    calls = []
    for b in replay(directory, key):
        calls += tracker.feed(decoder.decode(b))
    assert calls == [] and tracker.calls_in_progress == 1
    calls = tracker.flush()
    assert len(calls) == 1
    call = calls[0]
    assert call.state != CallState.COMPLETED and call.call_id == "e12fc1533408a4ff"
    assert sum(len(leg.packets) for leg in call.legs.values()) > 100


def _random_batch(data: st.DataObject) -> PacketBatch:
    draw = data.draw
    sizes = draw(st.lists(st.integers(0, 300), min_size=1, max_size=20))
    gaps = draw(st.lists(st.integers(0, 20), min_size=len(sizes), max_size=len(sizes)))
    body = bytearray()
    offsets = []
    for size, gap in zip(sizes, gaps, strict=True):
        body += os.urandom(gap)
        offsets.append(len(body))
        body += os.urandom(size)
    order = draw(st.permutations(range(len(sizes)))) if draw(st.booleans()) else range(len(sizes))
    n = len(sizes)
    return PacketBatch(
        buffer=bytes(body) + bytes(BUFFER_PADDING),
        offsets=np.array([offsets[i] for i in order], dtype=np.int64),
        caplens=np.array([sizes[i] for i in order], dtype=np.int64),
        ts_ns=np.array(draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n)), dtype=np.int64),
        linktypes=np.array(draw(st.lists(st.sampled_from([1, 101, 113, 276]), min_size=n, max_size=n))),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_batches_round_trip(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    directory = tmp_path_factory.mktemp("j")
    key = os.urandom(32)
    batches = [_random_batch(data) for _ in range(data.draw(st.integers(1, 4)))]
    journal = Journal(directory, key, segment_seconds=data.draw(st.sampled_from([1e-9, 10.0])))
    for b in batches:
        journal.append(b)
        if data.draw(st.booleans()):
            journal.flush()
    journal.close()
    assert frames_of(read(directory, key)[0]) == frames_of(batches)


@pytest.fixture(scope="module")
def flip_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[PacketBatch], Path, bytes]:
    directory, key, batches = tmp_path_factory.mktemp("flip") / "j", os.urandom(32), lab_batches(1 << 15)
    write(directory, key, batches, segment_seconds=60)
    return batches, directory, key


@settings(max_examples=60, deadline=None)
@given(where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_loses_at_most_one_chunk(
    flip_case: tuple[list[PacketBatch], Path, bytes], where: float, bit: int
) -> None:
    batches, directory, key = flip_case
    (path,) = segments(directory)
    whole = path.read_bytes()
    damaged = bytearray(whole)
    damaged[int(where * len(whole))] ^= 1 << bit
    try:
        path.write_bytes(bytes(damaged))
        got, report = read(directory, key)
    finally:
        path.write_bytes(whole)
    kept = frames_of(got)
    lost = [i for i, b in enumerate(batches) if not set(frames_of([b])) <= set(kept)]
    assert len(lost) <= 1 and report.chunks_torn + report.chunks_rejected == len(lost)
    assert kept == [f for i, b in enumerate(batches) if i not in lost for f in frames_of([b])]


def test_the_writer_thread_writes_what_the_loop_appended_in_order(tmp_path: Path, key: bytes) -> None:
    batches = lab_batches(1 << 13)
    directory = tmp_path / "j"
    writer = JournalWriter(Journal(directory, key, segment_seconds=2), max_queued=len(batches) + 1)
    for b in batches:
        writer.append(b)
        writer.flush()
    writer.wait()
    assert writer.stats().chunks_written == len(batches) and writer.stats().dropped_chunks == 0
    all_frames = frames_of(batches)
    cut = all_frames[len(all_frames) // 2][0]
    writer.prune(cut)  # queued behind the writes: runs after them, in the thread
    writer.close()
    assert not writer.journal._unsynced
    kept = frames_of(read(directory, key)[0])
    assert kept == all_frames[-len(kept) :] and kept[0][0] <= cut < all_frames[-1][0]


def test_a_writer_behind_a_slow_disk_drops_chunks_instead_of_stalling_the_loop(
    tmp_path: Path, key: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    batches = lab_batches(1 << 13)[:8]
    journal = Journal(tmp_path / "j", key)
    gate = threading.Event()
    real_write = journal.write

    def slow_write(chunk: PlainChunk, *, sync: bool = True) -> bool:
        gate.wait(timeout=30)
        return real_write(chunk, sync=sync)

    journal.write = slow_write  # type: ignore[method-assign]
    writer = JournalWriter(journal, max_queued=2)
    for b in batches:  # the first chunk blocks the thread, two more wait, the rest are dropped
        writer.append(b)
        writer.flush()
        time.sleep(0.01)
    gate.set()
    writer.close()
    stats = writer.stats()
    assert stats.chunks_written == 3 and stats.dropped_chunks == len(batches) - 3
    assert stats.dropped_frames == sum(map(len, batches[3:]))
    assert "the disk is too slow: 2 chunks wait already" in caplog.text
    assert frames_of(read(tmp_path / "j", key)[0]) == frames_of(batches[:3])


def test_chunks_that_queued_up_are_synced_once(
    tmp_path: Path, key: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = lab_batches(1 << 13)[:6]
    journal = Journal(tmp_path / "j", key)
    gate = threading.Event()
    real_write = journal.write
    syncs: list[int] = []
    real_sync = os.fdatasync

    def first_waits(chunk: PlainChunk, *, sync: bool = True) -> bool:
        gate.wait(timeout=30)
        return real_write(chunk, sync=sync)

    def counted(fd: int) -> None:
        syncs.append(fd)
        real_sync(fd)

    journal.write = first_waits  # type: ignore[method-assign]
    writer = JournalWriter(journal)
    writer.append(batches[0])
    writer.flush()
    time.sleep(0.05)  # the thread now waits in the first write
    monkeypatch.setattr(journal_mod.os, "fdatasync", counted)
    for b in batches[1:]:
        writer.append(b)
        writer.flush()
    gate.set()
    writer.close()
    # the segment's header, then the first chunk, then the five that queued behind it: three syncs
    assert len(syncs) == 3
    assert frames_of(read(tmp_path / "j", key)[0]) == frames_of(batches)
