"""A sealed, segmented journal of captured frames, so that calls in progress survive a crash.

The live daemon :meth:`~Journal.append` s every batch it captured (after the kernel filter) and
calls :meth:`~Journal.flush` once a second: the frames since the last flush are sealed (AES-256-GCM)
as one chunk, appended to the current segment as one record and ``fdatasync``-ed, so a crash (kill
-9, power loss) loses at most the last second. On the next start :func:`replay` yields every intact
chunk as a batch; the daemon feeds them to the frame decoder and call tracker, records the calls as
'recovered', then calls :func:`rotate_key`. Segments (``<n:012d>.seg``, a new one every
``segment_seconds`` of capture time) start with a header (magic, version, key id, number, first ts,
crc32); each record is a head (marker, chunk index, length, crc32) and a random nonce + ciphertext.
A chunk's associated data (magic, version, key id, segment number, chunk index) comes from the file
name and the key alone: a damaged header loses nothing; a chunk moved, replayed or out of order is
rejected. After a damaged record head reading resumes at the next valid one; an unreadable tail is a
torn write. A cut at a record boundary looks like a crash, and is one as far as recovery goes.

Threat model. The appliance must reopen the journal after a crash with nobody at hand, so it is
*not* sealed to the recording public key (the appliance cannot open that): it uses a local key, 32
random bytes in a 0600 file in the state directory (:func:`load_or_create_key`). The journal holds
only calls in progress (seconds to minutes), is pruned continuously (:meth:`Journal.prune`) and is
deleted, with a new key, on each clean start after recovery (:func:`rotate_key`). The key sits
beside it, so sealing protects against a copy of the journal without the key (a backup of the spool
directory alone), not against someone who can read the state directory as the callrec user, who
could read the live process's memory anyway.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import re
import secrets
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callrec.capture.model.packets import BUFFER_PADDING, PacketBatch
from callrec.recorder.journal.key import KEY_BYTES, JournalError, JournalKeyError, key_id, write_key
from callrec.store.errors import StoreError
from callrec.store.files import fsync_dir

log = logging.getLogger(__name__)

MAGIC, VERSION, SYNC = b"\x89CRJRNL\n", 1, b"CRJ\x01"
NONCE_BYTES, TAG_BYTES = 12, 16
DEFAULT_SEGMENT_SECONDS, DEFAULT_BUDGET_BYTES, DEFAULT_MAX_CHUNK_BYTES = 10.0, 1 << 30, 64 << 20
SEGMENT_NAME = re.compile(r"^(\d{12})\.seg$")

_HEADER, _RECORD, _AAD = struct.Struct(">8sH16sQq"), struct.Struct(">4sII"), struct.Struct(">8sH16sQI")
_CRC, _COUNT = struct.Struct(">I"), struct.Struct("<I")
HEADER_BYTES, RECORD_HEAD_BYTES = _HEADER.size + 4, _RECORD.size + 4
_PAD = bytes(BUFFER_PADDING)
Buffer = bytes | mmap.mmap
_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class JournalStats:
    """``oldest_ts_ns``: first capture time held (None: empty); ``last_error``: latest failure."""

    bytes_used: int
    segments: int
    chunks_written: int
    frames_written: int
    dropped_chunks: int
    dropped_frames: int
    last_error: str | None
    oldest_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class PlainChunk:
    """Frames appended between two flushes, not sealed yet: the pieces of the record's plaintext."""

    parts: list[bytes]
    frames: int
    first_ts: int
    last_ts: int


@dataclass(slots=True)
class ReplayReport:
    """By :func:`replay`: torn = unreadable tails (crash mid-write), rejected = forged or damaged."""

    chunks_read: int = 0
    chunks_torn: int = 0
    chunks_rejected: int = 0
    frames: int = 0
    damaged_headers: int = 0
    problems: list[str] = field(default_factory=list)

    def _note(self, counter: str, problem: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        self.problems.append(problem)


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    first_ts: int | None  # None: header unreadable
    last_ts: int | None  # None: not known (a segment of an earlier run)
    size: int


def rotate_key(directory: str | os.PathLike[str], key_path: str | os.PathLike[str]) -> bytes:
    """After recovery: delete every segment, then replace the key (both durable); the new key."""
    root = Path(directory)
    try:
        for _, path in _segment_files(root):
            path.unlink()
        if root.is_dir():
            fsync_dir(root)
        key = secrets.token_bytes(KEY_BYTES)
        write_key(Path(key_path), key, replace=True)
    except OSError as exc:  # (a directory that cannot be synced raises StoreError: one line too)
        raise JournalError(f"cannot rotate the journal {root}: {exc.strerror or exc}") from exc
    return key


class Journal:
    """The writing side. Only the constructor raises (:class:`JournalError`, at startup): a chunk that
    would pass ``budget_bytes`` or fails to write (ENOSPC, EROFS, EIO) is dropped, counted (:meth:`stats`)
    and logged when the failure starts and ends; the next flush tries again. Owned by the capture loop."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        key: bytes,
        *,
        segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    ) -> None:
        if len(key) != KEY_BYTES:
            raise JournalKeyError(f"a journal key is {KEY_BYTES} bytes, not {len(key)}")
        self.directory = Path(directory)
        self.segment_ns = max(1, int(segment_seconds * 1e9))
        self.budget_bytes, self.max_chunk_bytes = budget_bytes, max_chunk_bytes
        self._key, self._key_id = key, key_id(key)
        self._pending: list[tuple[bytes, _I64, _I64, _I64]] = []  # frames, ts, caplens, linktypes
        self._pending_bytes = self._index = 0
        self.flush_when_full = True  # past max_chunk_bytes append flushes (JournalWriter does it itself)
        self._fd: int | None = None
        self._unsynced = False  # the current segment has records not fdatasync-ed yet
        self._chunks = self._frames = self._dropped_chunks = self._dropped_frames = 0
        self._last_error: str | None = None
        self._failing = False
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._segments = [self._inherit(n, p) for n, p in _segment_files(self.directory)]
        except OSError as exc:
            raise JournalError(f"cannot open the journal {self.directory}: {exc.strerror or exc}") from exc
        self._next_number = self._segments[-1].number + 1 if self._segments else 0

    def _inherit(self, number: int, path: Path) -> _Segment:
        parsed = _read_header(path, number)
        if parsed is not None and parsed[0] != self._key_id:
            raise JournalKeyError(f"journal {self.directory}: {path.name} is sealed with another key")
        return _Segment(number, path, parsed[1] if parsed else None, None, path.stat().st_size)

    def append(self, batch: PacketBatch) -> None:
        """Copy a batch's frames out until the next :meth:`flush` (done here past ``max_chunk_bytes``)."""
        if not len(batch):
            return
        data = _gather(batch)
        self._pending.append((data, batch.ts_ns, batch.caplens, batch.linktypes))
        self._pending_bytes += len(data) + 14 * len(batch)
        if self.flush_when_full and self._pending_bytes >= self.max_chunk_bytes:
            self.flush()

    @property
    def pending_bytes(self) -> int:
        """Bytes appended since the last flush (or take)."""
        return self._pending_bytes

    def flush(self) -> bool:
        """Seal, write and fdatasync what was appended since the last flush; whether it was written."""
        chunk = self.take()
        return True if chunk is None else self.write(chunk)

    def take(self) -> PlainChunk | None:
        """What was appended since the last flush, as one chunk to :meth:`write` (None: nothing), so that
        a writer thread can do the sealing, writing and syncing (:mod:`recorder.journal.writer`)."""
        if not self._pending:
            return None
        ts, caplens, linktypes = (np.concatenate([p[i] for p in self._pending]) for i in (1, 2, 3))
        frames, cols = len(ts), (ts.astype("<i8"), caplens.astype("<u4"), linktypes.astype("<u2"))
        parts = [_COUNT.pack(frames), *(c.tobytes() for c in cols), *(p[0] for p in self._pending)]
        self._pending, self._pending_bytes = [], 0
        return PlainChunk(parts, frames, int(ts.min()), int(ts.max()))

    def write(self, chunk: PlainChunk, *, sync: bool = True) -> bool:
        """Seal, write and (unless told not to: :meth:`sync` later) fdatasync one chunk from :meth:`take`;
        whether it was written."""
        parts, frames = chunk.parts, chunk.frames
        try:
            why = self._write_chunk(parts, chunk.first_ts, chunk.last_ts, sync)
        except (OSError, StoreError) as exc:
            why = f"cannot write the journal {self.directory}: {getattr(exc, 'strerror', None) or exc}"
        if why is not None:
            self.drop(frames, why)
            return False
        self._chunks, self._frames = self._chunks + 1, self._frames + frames
        if self._failing:
            self._failing = False
            log.warning("journal %s: writing again (%d chunks dropped)", self.directory, self._dropped_chunks)
        return True

    def sync(self) -> None:
        """fdatasync what :meth:`write` wrote without syncing (a failure is logged, like a failed write)."""
        if self._fd is not None and self._unsynced:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self._last_error = f"cannot sync the journal {self.directory}: {exc.strerror or exc}"
                log.error("journal: %s", self._last_error)
            self._unsynced = False

    def _write_chunk(self, plain: list[bytes], first_ts: int, last_ts: int, sync: bool = True) -> str | None:
        """Seal the pieces one by one (no copy of the whole chunk), write them in a new segment if due;
        returns why the chunk was not written, or None."""
        seg = self._segments[-1] if self._fd is not None else None
        new = seg is None or seg.first_ts is None or first_ts - seg.first_ts >= self.segment_ns
        record_bytes = RECORD_HEAD_BYTES + NONCE_BYTES + sum(map(len, plain)) + TAG_BYTES
        need, used = record_bytes + (HEADER_BYTES if new else 0), sum(s.size for s in self._segments)
        if used + need > self.budget_bytes:
            return f"journal {self.directory} budget of {self.budget_bytes} bytes reached ({used} used)"
        if new or seg is None or self._fd is None:
            self._close_segment()
            seg, self._fd = self._open_segment(first_ts)
        index, nonce = self._index, secrets.token_bytes(NONCE_BYTES)
        seal = Cipher(algorithms.AES(self._key), modes.GCM(nonce)).encryptor()
        seal.authenticate_additional_data(_AAD.pack(MAGIC, VERSION, self._key_id, seg.number, index))
        sealed = [seal.update(p) for p in plain] + [seal.finalize()]
        head = _RECORD.pack(SYNC, index, record_bytes - RECORD_HEAD_BYTES)
        try:
            _write_all(self._fd, [head, _CRC.pack(zlib.crc32(head)), nonce, *sealed, seal.tag])
            if sync:
                os.fdatasync(self._fd)
            self._unsynced = not sync
        except OSError:  # undo a partial record; failing that, leave the segment (replay skips the tail)
            try:
                os.ftruncate(self._fd, seg.size)
            except OSError:
                self._close_segment()
            raise
        seg.size += record_bytes
        seg.last_ts = last_ts if seg.last_ts is None else max(seg.last_ts, last_ts)
        self._index += 1
        return None

    def _open_segment(self, first_ts: int) -> tuple[_Segment, int]:
        number = self._next_number
        path = self.directory / f"{number:012d}.seg"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        self._next_number += 1  # a name that failed once is not tried again
        try:
            fixed = _HEADER.pack(MAGIC, VERSION, self._key_id, number, first_ts)
            _write_all(fd, [fixed, _CRC.pack(zlib.crc32(fixed))])
            os.fdatasync(fd)
            fsync_dir(self.directory)
        except (OSError, StoreError):
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        seg = _Segment(number, path, first_ts, None, HEADER_BYTES)
        self._segments.append(seg)
        self._index = 0
        return seg, fd

    def _close_segment(self) -> None:
        self.sync()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def prune(self, keep_from_ns: int) -> int:
        """Delete whole segments (not the one being written) whose last frame, or else the next one's
        first, is older than ``keep_from_ns``; how many. Failures are logged, in ``last_error``."""
        keep: list[_Segment] = []
        segments = self._segments
        nexts = [s.first_ts for s in segments[1:]] + [None]
        for i, seg in enumerate(segments):
            last = nexts[i] if seg.last_ts is None else seg.last_ts
            if (self._fd is not None and i + 1 == len(segments)) or last is None or last >= keep_from_ns:
                keep.append(seg)
                continue
            try:
                seg.path.unlink(missing_ok=True)
            except OSError as exc:
                self._last_error = f"cannot delete journal segment {seg.path}: {exc.strerror or exc}"
                log.error("journal: %s", self._last_error)
                keep.append(seg)
        removed, self._segments = len(segments) - len(keep), keep
        if removed:
            try:
                fsync_dir(self.directory)
            except StoreError as exc:
                self._last_error = str(exc)
        return removed

    def drop(self, frames: int, why: str) -> None:
        """Count a chunk that was never written (a writer thread's queue full), logged as a failure is."""
        self._dropped_chunks += 1
        self._dropped_frames += frames
        if not self._failing or why != self._last_error:
            log.error("journal: dropped %d frames: %s", frames, why)
        self._failing, self._last_error = True, why

    def stats(self) -> JournalStats:
        segs = list(self._segments)
        oldest = min((s.first_ts for s in segs if s.first_ts is not None), default=None)
        counts = (self._chunks, self._frames, self._dropped_chunks, self._dropped_frames)
        return JournalStats(sum(s.size for s in segs), len(segs), *counts, self._last_error, oldest)

    def close(self) -> None:
        """Flush what is buffered and close the current segment (the files stay)."""
        self.flush()
        self._close_segment()


def _gather(batch: PacketBatch) -> bytes:
    """The batch's frames back to back. Frames in order and apart (pcap records, ring blocks): one
    boolean mask over their span, ~1 ns a byte; otherwise one slice per frame."""
    offsets, caplens = batch.offsets, batch.caplens
    n, ends = offsets.shape[0], offsets + caplens
    start, stop = int(offsets[0]), int(ends[-1])
    if n > 1 and not bool((offsets[1:] >= ends[:-1]).all()):
        view = memoryview(batch.buffer)
        return b"".join(map(view.__getitem__, map(slice, offsets.tolist(), ends.tolist())))
    lengths = np.zeros(2 * n, dtype=np.int64)
    lengths[2::2] = offsets[1:] - ends[:-1]
    lengths[1::2] = caplens
    mask = np.repeat(np.tile(np.array([False, True]), n), lengths)
    return np.frombuffer(batch.buffer, dtype=np.uint8, count=stop - start, offset=start)[mask].tobytes()


def replay(
    directory: str | os.PathLike[str], key: bytes, report: ReplayReport | None = None
) -> Iterator[PacketBatch]:
    """Every intact chunk of every segment, in order, as a batch the frame decoder accepts; damage is
    skipped and counted in ``report``, never raised. Raises :class:`JournalKeyError` at once (before
    any batch) if a segment was sealed with another key; a missing directory is an empty journal."""
    root = Path(directory)
    if len(key) != KEY_BYTES:
        raise JournalKeyError(f"a journal key is {KEY_BYTES} bytes, not {len(key)}")
    kid = key_id(key)
    try:
        files = _segment_files(root)
        for number, path in files:
            parsed = _read_header(path, number)
            if parsed is not None and parsed[0] != kid:
                raise JournalKeyError(f"journal {root} was sealed with another key ({path.name})")
    except OSError as exc:
        raise JournalError(f"cannot read the journal {root}: {exc.strerror or exc}") from exc
    return _replay(files, AESGCM(key), kid, report if report is not None else ReplayReport())


def _replay(
    files: list[tuple[int, Path]], aead: AESGCM, kid: bytes, report: ReplayReport
) -> Iterator[PacketBatch]:
    first_number = 1
    for number, path in files:
        try:  # mapped, not read: a segment may hold hundreds of MB (the map is closed when dropped)
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                data: Buffer = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) if size else b""
            if _read_header(path, number) is None:
                report._note("damaged_headers", f"{path.name}: damaged header")
        except OSError as exc:
            report.problems.append(f"{path.name}: unreadable ({exc.strerror or exc})")
            continue
        for plain in _records(data, path.name, aead, kid, number, report):
            batch = _to_batch(plain, first_number)
            if batch is None:
                report._note("chunks_rejected", f"{path.name}: malformed chunk")
                continue
            report.chunks_read, report.frames = report.chunks_read + 1, report.frames + len(batch)
            first_number += len(batch)
            yield batch


def _records(
    data: Buffer, name: str, aead: AESGCM, kid: bytes, number: int, report: ReplayReport
) -> Iterator[bytes]:
    """The plaintexts of a segment's authentic records, in order."""
    pos, size, last_index = HEADER_BYTES, len(data), -1
    while pos < size:
        head = _read_head(data, pos)
        if head is None:  # a damaged head: go on at the next valid one
            at = pos + 1
            while (at := data.find(SYNC, at)) >= 0 and _read_head(data, at) is None:
                at += 1
            if at < 0:
                return report._note("chunks_torn", f"{name}: {size - pos} unreadable bytes at the end (torn)")
            report._note("chunks_rejected", f"{name}: damaged record at offset {pos}")
            pos = at
            continue
        (index, length), body = head, pos + RECORD_HEAD_BYTES
        if body + length > size or length < NONCE_BYTES + TAG_BYTES:
            return report._note("chunks_torn", f"{name}: last record cut short at offset {pos} (torn)")
        pos = body + length
        try:
            if index <= last_index:
                raise InvalidTag
            aad = _AAD.pack(MAGIC, VERSION, kid, number, index)
            plain = aead.decrypt(data[body : body + NONCE_BYTES], data[body + NONCE_BYTES : pos], aad)
        except InvalidTag:
            report._note("chunks_rejected", f"{name}: chunk {index} fails authentication or is out of order")
            continue
        last_index = index
        yield plain


def _read_head(data: Buffer, pos: int) -> tuple[int, int] | None:
    if len(data) - pos < RECORD_HEAD_BYTES:
        return None
    sync, index, length = _RECORD.unpack_from(data, pos)
    ok = sync == SYNC and _CRC.unpack_from(data, pos + _RECORD.size)[0] == zlib.crc32(data[pos : pos + 12])
    return (index, length) if ok else None


def _to_batch(plain: bytes, first_number: int) -> PacketBatch | None:
    """A chunk's plaintext as a batch (None if its layout is inconsistent)."""
    n, at = (_COUNT.unpack_from(plain)[0] if len(plain) >= 4 else -1), _COUNT.size
    if n < 0 or len(plain) < at + 14 * n:
        return None
    ts = np.frombuffer(plain, dtype="<i8", count=n, offset=at).astype(np.int64)
    caplens = np.frombuffer(plain, dtype="<u4", count=n, offset=at + 8 * n).astype(np.int64)
    linktypes = np.frombuffer(plain, dtype="<u2", count=n, offset=at + 12 * n).astype(np.int64)
    at += 14 * n
    if int(caplens.sum()) != len(plain) - at:
        return None
    offsets = np.zeros(n, dtype=np.int64)
    np.cumsum(caplens[:-1], out=offsets[1:])
    buffer = b"".join((memoryview(plain)[at:], _PAD))
    return PacketBatch(buffer, offsets, caplens, ts, linktypes, first_number)


def _read_header(path: Path, number: int) -> tuple[bytes, int] | None:
    """(key id, first ts) of a segment header, or None if it is damaged or not this segment's."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        return None
    magic, version, kid, seg, first_ts = _HEADER.unpack_from(head)
    crc_ok = _CRC.unpack_from(head, _HEADER.size)[0] == zlib.crc32(head[: _HEADER.size])
    return (kid, first_ts) if crc_ok and (magic, version, seg) == (MAGIC, VERSION, number) else None


def _segment_files(root: Path) -> list[tuple[int, Path]]:
    found = [(m, p) for p in root.iterdir() if (m := SEGMENT_NAME.match(p.name))] if root.is_dir() else []
    return sorted((int(m.group(1)), p) for m, p in found)


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write every part (a write cut short by a signal goes on; one that writes nothing is ENOSPC)."""
    views = [memoryview(p) for p in parts]
    while views:
        done = os.writev(fd, views[:1024])  # IOV_MAX
        if done == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        while views and done >= len(views[0]):
            done -= len(views.pop(0))
        if done:
            views[0] = views[0][done:]
