"""store.objects.local: atomic writes (with failure injection), modes, checksums, names."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from callrec.store.errors import AlreadyExists, IntegrityError, InvalidArgument, NotFound, StoreError
from callrec.store.objects.local import Chunk, RecordingStore, RecordingWriter, StoredFile, normalize_name

NAME = "recordings/2026/11/28/42.wav"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tmp").mkdir()
    return tmp_path


@pytest.fixture
def store(root: Path) -> RecordingStore:
    return RecordingStore(root, tmp_dir=root / "tmp")


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def failing_chunks(exc: BaseException, good: int = 3) -> Iterator[bytes]:
    for _ in range(good):
        yield b"x" * 1000
    raise exc


def test_write_returns_what_was_stored(store: RecordingStore, root: Path) -> None:
    chunks: list[Chunk] = [b"RIFF", bytearray(b"\x00" * 5000), memoryview(b"data")]
    stored = store.write(NAME, chunks)
    content = b"RIFF" + b"\x00" * 5000 + b"data"
    assert stored == StoredFile(
        path=root / NAME, relative_path=NAME, bytes=len(content), sha256=hashlib.sha256(content).hexdigest()
    )
    assert (root / NAME).read_bytes() == content
    assert all_files(root) == [NAME]  # no temp file anywhere


def test_write_modes_are_exact_whatever_the_umask(store: RecordingStore, root: Path) -> None:
    old = os.umask(0o000)
    try:
        stored = store.write(NAME, [b"abc"])
    finally:
        os.umask(old)
    assert mode(stored.path) == 0o600
    for directory in ("recordings", "recordings/2026", "recordings/2026/11", "recordings/2026/11/28"):
        assert mode(root / directory) == 0o700, directory


def test_write_empty_and_generator_input(store: RecordingStore) -> None:
    empty = store.write("a/empty.wav", [])
    assert (empty.bytes, empty.sha256) == (0, hashlib.sha256(b"").hexdigest())
    many = store.write("a/many.wav", (bytes([i % 256]) * 10 for i in range(10_000)))
    assert many.bytes == 100_000


def test_temp_files_next_to_target_without_tmp_dir(root: Path) -> None:
    store = RecordingStore(root)
    store.write(NAME, [b"abc"])
    with pytest.raises(ZeroDivisionError):
        store.write("recordings/2026/11/28/43.wav", failing_chunks(ZeroDivisionError()))
    assert all_files(root) == [NAME]


@pytest.mark.parametrize("exc", [ValueError("decoder broke"), KeyboardInterrupt(), OSError(5, "source gone")])
def test_failure_in_chunk_iterator_leaves_nothing(
    store: RecordingStore, root: Path, exc: BaseException
) -> None:
    with pytest.raises(type(exc)) as raised:
        store.write(NAME, failing_chunks(exc))
    assert raised.value is exc  # the caller's own exception, unchanged (not wrapped)
    assert not (root / NAME).exists()
    assert all_files(root) == []


def test_failed_overwrite_keeps_the_old_file(store: RecordingStore, root: Path) -> None:
    store.write(NAME, [b"old"])
    with pytest.raises(RuntimeError):
        store.write(NAME, failing_chunks(RuntimeError()), replace=True)
    assert (root / NAME).read_bytes() == b"old"
    assert all_files(root) == [NAME]


def test_fsync_failure_is_a_store_error_and_cleans_up(
    store: RecordingStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    store.write("recordings/2026/11/28/41.wav", [b"earlier"])  # directories exist: the file fsync fails first
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match=r"cannot write recording .*42\.wav.*No space left on device"):
        store.write(NAME, [b"abc"])
    monkeypatch.undo()
    assert all_files(root) == ["recordings/2026/11/28/41.wav"]


def test_rename_failure_is_a_store_error_and_cleans_up(
    store: RecordingStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_replace(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StoreError, match="cannot move recording .* into place"):
        store.write(NAME, [b"abc"])
    assert all_files(root) == []


def test_write_refuses_to_overwrite_unless_asked(store: RecordingStore, root: Path) -> None:
    store.write(NAME, [b"first"])
    with pytest.raises(AlreadyExists, match="already exists"):
        store.write(NAME, [b"second"])
    assert (root / NAME).read_bytes() == b"first"
    stored = store.write(NAME, [b"second"], replace=True)
    assert (root / NAME).read_bytes() == b"second" and stored.bytes == 6
    assert mode(root / NAME) == 0o600


def test_write_needs_an_existing_root(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        RecordingStore(tmp_path / "nope").write("a.wav", [b""])


@pytest.mark.parametrize(
    "name",
    ["", "/etc/passwd", "../x.wav", "a/../../x.wav", "a//b.wav", "a/./b.wav", "a\\b.wav", "a/", "a\x00b"],
)
def test_names_cannot_escape_the_root(store: RecordingStore, name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid recording name"):
        store.write(name, [b"x"])
    with pytest.raises(InvalidArgument):
        store.open(name)


def test_normalize_name() -> None:
    assert normalize_name("a/b/c.wav") == "a/b/c.wav"


def test_open_verify_checksum(store: RecordingStore) -> None:
    stored = store.write(NAME, [b"hello ", b"world"])
    with store.open(NAME) as handle:
        assert handle.read() == b"hello world"
    assert store.checksum(NAME) == (11, stored.sha256)
    store.verify(NAME, stored.sha256)
    store.verify(NAME, stored.sha256.upper(), size=11)
    assert store.exists(NAME) and not store.exists("recordings/other.wav")


def test_verify_detects_changed_bytes(store: RecordingStore, root: Path) -> None:
    stored = store.write(NAME, [b"hello world"])
    (root / NAME).write_bytes(b"hello World")
    with pytest.raises(IntegrityError, match=r"recording .*42\.wav is damaged"):
        store.verify(NAME, stored.sha256)
    with pytest.raises(IntegrityError, match="has 11 bytes, the catalogue says 12"):
        store.verify(NAME, stored.sha256, size=12)


def test_missing_files_are_not_found(store: RecordingStore) -> None:
    with pytest.raises(NotFound, match=r"no recording file recordings/2026/11/28/42\.wav"):
        store.open(NAME)
    with pytest.raises(NotFound):
        store.verify(NAME, "0" * 64)
    with pytest.raises(NotFound):
        store.delete(NAME)
    assert store.delete(NAME, missing_ok=True) is False


def test_delete(store: RecordingStore, root: Path) -> None:
    store.write(NAME, [b"x"])
    assert store.delete(NAME) is True
    assert not (root / NAME).exists()


class XorWriter:
    """Stand-in for the future sealing writer: transforms the stream, reuses the atomic store."""

    def __init__(self, inner: RecordingStore) -> None:
        self.inner = inner

    def write(self, relative_name: str, chunks: Iterable[Chunk], *, replace: bool = False) -> StoredFile:
        return self.inner.write(
            relative_name, (bytes(b ^ 0x55 for b in chunk) for chunk in chunks), replace=replace
        )


def test_recording_writer_protocol_allows_a_replacement(store: RecordingStore, root: Path) -> None:
    writers: list[RecordingWriter] = [store, XorWriter(store)]
    assert all(isinstance(writer, RecordingWriter) for writer in writers)
    writers[1].write("sealed.bin", [b"\x00\x01"])
    assert (root / "sealed.bin").read_bytes() == b"\x55\x54"


def test_unsynced_writes_then_one_sync(tmp_path) -> None:
    from callrec.store.objects.local import RecordingStore

    store = RecordingStore(tmp_path)
    stored = [store.write(f"r/{i}.bin", [b"x" * 1000], sync=False) for i in range(5)]
    store.sync_all()
    assert [s.bytes for s in stored] == [1000] * 5
    assert all(store.exists(s.relative_path) for s in stored)
    assert not list((tmp_path / "r").glob(".*.tmp"))
