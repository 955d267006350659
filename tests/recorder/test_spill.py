"""The sealed spill sink (recorder.saving.sealed_spill): files per leg, sealed records that cannot be
moved, replayed
or read with another key, disk errors and budgets, files made ahead and emptied by a thread."""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrec.capture.model.spilled import SpillError
from callrec.capture.streams.medialog import LegSpool
from callrec.recorder.saving.sealed_spill import SUFFIX, SealedSpill
from tests.helpers.spill_helpers import S, assert_same_packets, chunk, flip

# -- the sealed sink --------------------------------------------------------------------------------


@pytest.fixture
def sealed(tmp_path: Path) -> Iterator[SealedSpill]:
    yield SealedSpill(tmp_path / "calls")


def test_sealed_sink_round_trip_and_discard(sealed: SealedSpill) -> None:
    pieces = [chunk(k * S, 50, seed=k) for k in range(4)]
    refs = [sealed.write("leg-1", p) for p in pieces] + [sealed.write("leg-2", pieces[0])]
    assert [r.index for r in refs] == [0, 1, 2, 3, 0]
    for ref, piece in zip(refs, pieces + pieces[:1], strict=True):
        assert_same_packets(sealed.read(ref), piece)
    path = sealed.path_of("leg-1")
    assert path is not None and path.parent == sealed.directory and path.name.endswith(SUFFIX)
    assert path.stat().st_mode & 0o777 == 0o600
    assert sealed.directory.stat().st_mode & 0o777 == 0o700
    assert (
        b"\xde\xad\xbe\xef" not in path.read_bytes()
        and pieces[0].payload.tobytes()[:32] not in path.read_bytes()
    )
    assert sealed.stats().files == 2 and sealed.stats().bytes_on_disk == sum(r.length for r in refs)
    sealed.discard("leg-1")
    sealed.discard("leg-1")  # twice: nothing
    assert path.stat().st_size == 0 and sealed.stats().files == 1  # emptied, kept for the next leg
    assert sealed.path_of("leg-1") is None
    with pytest.raises(SpillError, match="discarded"):
        sealed.read(refs[0])
    assert_same_packets(sealed.read(refs[-1]), pieces[0])
    ref = sealed.write("leg-9", pieces[2])  # the emptied file serves the next leg
    assert sealed.path_of("leg-9") == path and ref.offset == 0
    assert_same_packets(sealed.read(ref), pieces[2])
    assert sealed.clear() == 2 and not list(sealed.directory.glob(f"*{SUFFIX}"))


def test_sealed_sink_without_open_files_to_spare_opens_per_write_and_deletes(tmp_path: Path) -> None:
    sink = SealedSpill(tmp_path / "calls", max_open=0)
    refs = [sink.write("leg-1", chunk(k * S, 20, seed=k)) for k in range(3)]
    path = sink.path_of("leg-1")
    assert path is not None and path.exists()
    assert_same_packets(sink.read(refs[1]), chunk(S, 20, seed=1))
    sink.discard("leg-1")
    assert not path.exists()


@pytest.mark.parametrize("where", ["head", "nonce", "ciphertext", "tag"])
def test_sealed_sink_detects_tampering(sealed: SealedSpill, where: str) -> None:
    refs = [sealed.write("leg-3", chunk(k * S, 20, seed=k)) for k in range(3)]
    ref = refs[1]
    at = {"head": 5, "nonce": 14, "ciphertext": 40, "tag": ref.length - 1}[where]
    path = sealed.path_of("leg-3")
    assert path is not None
    flip(path, ref.offset + at)
    with pytest.raises(SpillError, match=str(path)):
        sealed.read(ref)
    sealed.read(refs[0])
    sealed.read(refs[2])


def test_sealed_sink_rejects_records_moved_between_legs_or_places(sealed: SealedSpill) -> None:
    a = sealed.write("leg-1", chunk(0, 20))
    sealed.write("leg-1", chunk(S, 20))
    b = sealed.write("leg-2", chunk(0, 20, seed=5))
    one, two = sealed.path_of("leg-1"), sealed.path_of("leg-2")
    assert one is not None and two is not None
    data = one.read_bytes()
    two.write_bytes(data[a.offset : a.offset + a.length])  # leg 1's chunk 0 in leg 2's file
    with pytest.raises(SpillError, match="failed authentication"):
        sealed.read(b)
    one.write_bytes(data[a.length :] + data[: a.length])  # chunks swapped
    with pytest.raises(SpillError, match="damaged record head"):
        sealed.read(a)
    one.write_bytes(data[: a.length // 2])
    with pytest.raises(SpillError, match="cut short"):
        sealed.read(a)


def test_another_sink_cannot_read_the_files(tmp_path: Path) -> None:
    first = SealedSpill(tmp_path / "calls")
    first.write("leg-1", chunk(0, 20))
    ref = first.write("leg-1", chunk(S, 20))
    second = SealedSpill(tmp_path / "calls")  # a restart: a new, random key
    second.write("leg-1", chunk(0, 20))  # the same file: chunk 0 rewritten, chunk 1 is first's
    with pytest.raises(SpillError, match="failed authentication"):
        second.read(ref)


def test_clear_removes_leftovers(tmp_path: Path) -> None:
    crashed = SealedSpill(tmp_path / "calls")
    crashed.write("leg-1", chunk(0, 20))
    crashed.write("leg-2", chunk(0, 20))
    (tmp_path / "calls" / "other.txt").write_text("not ours")
    started = SealedSpill(tmp_path / "calls")
    assert started.clear() == 2
    assert [p.name for p in (tmp_path / "calls").iterdir()] == ["other.txt"]


def test_sealed_sink_budget_and_disk_errors_keep_chunks_in_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="callrec.recorder.saving.sealed_spill")
    sink = SealedSpill(tmp_path / "calls", budget_bytes=12_000)
    spool = LegSpool()
    for k in range(6):
        spool.append(chunk(k * S, 50, seed=k))  # 8000 payload bytes a chunk
    spool.spill(sink, "leg-1", 4 * S)  # one chunk: 8 kB fits
    assert len(spool.spilled) == 1
    for k in range(6, 9):
        spool.append(chunk(k * S, 50, seed=k))
    with pytest.raises(OSError) as info:
        spool.spill(sink, "leg-1", 4 * S)
    assert info.value.errno == errno.ENOSPC and sink.stats().write_errors == 1
    assert len(spool.spilled) == 1 and spool.resident_bytes == 8 * 8000
    assert caplog.messages and "budget" in caplog.messages[0]
    sink.budget_bytes = None
    spool.spill(sink, "leg-1", 4 * S)
    assert caplog.messages[-1].startswith("spilling to") and sink.stats().last_error is None
    expected = LegSpool()
    for k in range(9):
        expected.append(chunk(k * S, 50, seed=k))
    assert_same_packets(spool.packets(), expected.packets())


def test_sealed_sink_refuses_unsafe_leg_keys(sealed: SealedSpill) -> None:
    with pytest.raises(ValueError, match="safe file name"):
        sealed.write("../escape", chunk(0, 5))


def test_files_made_ahead_serve_new_legs_and_go_at_close(tmp_path: Path) -> None:
    sink = SealedSpill(tmp_path / "calls")
    sink.make_ahead(8)
    deadline = time.monotonic() + 10
    while len(list(sink.directory.glob(f"*{SUFFIX}"))) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    ahead = set(sink.directory.glob(f"*{SUFFIX}"))
    assert len(ahead) == 8 and all(p.stat().st_size == 0 for p in ahead)
    refs = [sink.write(f"leg-{n}", chunk(0, 10, seed=n)) for n in range(3)]
    assert {sink.path_of(f"leg-{n}") for n in range(3)} <= ahead  # made ahead, not created by write
    assert_same_packets(sink.read(refs[2]), chunk(0, 10, seed=2))
    used = sink.path_of("leg-0")
    assert used is not None and used.stat().st_size > 0
    sink.discard("leg-0")  # emptied by the thread, then ready for another leg
    while used.stat().st_size and time.monotonic() < deadline:
        time.sleep(0.01)
    assert used.stat().st_size == 0 and sink.stats().files == 2
    assert sink.clear() >= 8  # the maker goes on after a clear (start-up)
    while not list(sink.directory.glob(f"*{SUFFIX}")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(sink.directory.glob(f"*{SUFFIX}"))
    sink.close()
    assert not list(sink.directory.glob(f"*{SUFFIX}")) and sink.stats().files == 0
