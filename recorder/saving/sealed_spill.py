"""Sealed spill files: where the live capture puts the older media of calls in progress.

:meth:`capture.tracking.tracker.CallTracker.spill_pending` (once a second in the live loop) hands the
media of each leg pending since the last round to :class:`SealedSpill`, which appends it to that leg's
file in the spill directory (``<home>/spool/calls/slot-<n>.spill``; a leg's file is emptied and kept
open for a later leg when the leg ends, as creating and deleting files cost several times more than
writing the chunks) and returns a reference; the tracker keeps only the references, so memory per call
is bounded by the recent window. When the call ends the chunks are read back and verified, and the file
is emptied for reuse (or deleted) (:meth:`SealedSpill.discard`).

Format. Each chunk (:func:`capture.streams.spill.encode_chunk`) is one record: a head (marker ``CRS\\x01``,
chunk index, ciphertext length; big-endian), a random 12-byte nonce, then the AES-256-GCM ciphertext
and tag. The associated data binds the record to its leg key and chunk index, so a record moved to
another file or position, replayed or cut is rejected (:class:`~capture.streams.spill.SpillError`, naming the
file). Files are written with ``pwrite`` at the end this process knows, so a torn write (disk full
half-way) is overwritten by the next chunk; nothing is ``fsync``-ed: the spill is not for durability.

Threat model. Unlike the journal (:mod:`recorder.journal.segments`), a spill outlives no run: after a crash
the journal recovers the calls in progress and the spills are useless, so :meth:`clear` deletes them at
the next start. So the key is *ephemeral*: 32 random bytes made when the sink is created, held only in
the memory of the capture process and of its saver processes (:class:`SpillFiles`: they read a finished
call's chunks; the key reaches them through the pipe that starts them), never written anywhere. A copy
of the spill directory (a backup, a disk pulled from the appliance, a file left by a crash) is
unreadable by anyone, including someone who can read the whole state directory as the callrec user
afterwards; only someone who can read those processes' memory can read the spill, and they could read
the calls' media there anyway. The files are 0600 in a 0700 directory.

Disk errors. The spill is an optimisation: :meth:`SealedSpill.write` raising :class:`OSError` (ENOSPC,
EROFS, EIO, or ``budget_bytes`` reached) leaves the chunk in the tracker's memory; failures are counted
(:meth:`SealedSpill.stats`) and logged when they start and when writing works again.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import itertools
import logging
import os
import re
import resource
import secrets
import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callrec.capture.model.media import RtpPackets
from callrec.capture.model.spilled import SpillError, SpillRef
from callrec.capture.streams.spill import decode_chunk, encode_chunk

log = logging.getLogger(__name__)

MARK, VERSION = b"CRS\x01", 1
KEY_BYTES, NONCE_BYTES, TAG_BYTES = 32, 12, 16
SUFFIX = ".spill"
_RECORD = struct.Struct(">4sII")  # marker, chunk index, ciphertext length (tag included)
_AAD = struct.Struct(">14sBH")  # label, version, leg key length (then the key, then the index)
_INDEX = struct.Struct(">I")
MAX_OPEN_FILES = 16384  # spill files kept open (two per call in progress); beyond, opened per write
MAX_FREE_FILES = 4096  # emptied files kept for reuse
LEG_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(slots=True)
class SpillStats:
    """Totals since the sink was made; ``bytes_on_disk``/``files`` are the current spill files."""

    chunks_written: int = 0
    bytes_written: int = 0
    chunks_read: int = 0
    bytes_read: int = 0
    write_errors: int = 0
    files: int = 0
    bytes_on_disk: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _LegFile:
    path: Path
    size: int = 0
    chunks: int = 0
    fd: int | None = None  # kept open between writes (opening a file per chunk cost more than the rest)


class SealedSpill:
    """A :class:`capture.streams.spill.SpillSink` of sealed, append-only files, one per leg, in ``directory``.

    ``key``: tests only (default: a fresh random key, see the module docstring). ``budget_bytes``:
    the most the spill files may take together (a write beyond raises ENOSPC: the chunk stays in
    memory). Owned by the capture loop (one thread), apart from the thread of :meth:`make_ahead`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        budget_bytes: int | None = None,
        max_open: int | None = None,
    ) -> None:
        key = key if key is not None else secrets.token_bytes(KEY_BYTES)
        if len(key) != KEY_BYTES:
            raise ValueError(f"spill key of {len(key)} bytes, not {KEY_BYTES}")
        self.directory = Path(directory)
        self.budget_bytes = budget_bytes
        self._key = key
        self._aead = AESGCM(key)
        self._legs: dict[str, _LegFile] = {}
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.max_open = max_open if max_open is not None else max(0, min(MAX_OPEN_FILES, soft // 2 - 64))
        self._open = 0  # descriptors held (legs', emptied and made-ahead files); under _lock
        self._lock = threading.Lock()
        # empty files open for the next legs: made ahead by the maker thread, or emptied when a leg ended
        self._ready: collections.deque[_LegFile] = collections.deque()
        self._emptying: collections.deque[_LegFile] = collections.deque()  # for the maker to truncate
        self._names = itertools.count(1)
        self._maker: threading.Thread | None = None
        self._wake, self._stop = threading.Event(), threading.Event()
        self.ready_target = 0
        self._stats = SpillStats()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- the sink ---------------------------------------------------------------------------------

    def write(self, leg_key: str, chunk: RtpPackets) -> SpillRef:
        return self.write_record(leg_key, encode_chunk(chunk), len(chunk), int(chunk.payload.shape[0]))

    def write_record(
        self, leg_key: str, plain: bytes | bytearray, packets: int, payload_bytes: int
    ) -> SpillRef:
        """Seal and append one encoded chunk (:func:`capture.streams.spill.encode_chunk`, or a record of
        :func:`capture.streams.spill.block_records`) of ``packets`` packets."""
        leg = self._legs.get(leg_key)
        if leg is None:  # registered before the first write: discard() deletes a torn first record too
            leg = self._legs[_checked(leg_key)] = self._new_file()
            self._stats.files += 1
        index = leg.chunks
        length = len(plain) + TAG_BYTES
        record_bytes = _RECORD.size + NONCE_BYTES + length
        try:
            if self.budget_bytes is not None and self._stats.bytes_on_disk + record_bytes > self.budget_bytes:
                raise OSError(errno.ENOSPC, f"spill budget of {self.budget_bytes} bytes reached")
            nonce = secrets.token_bytes(NONCE_BYTES)
            sealed = self._aead.encrypt(nonce, plain, _aad(leg_key, index))
            fd = self._fd(leg)
            try:
                _pwrite_all(fd, [_RECORD.pack(MARK, index, length) + nonce, sealed], leg.size, leg.path)
            finally:
                if fd != leg.fd:
                    os.close(fd)
        except OSError as exc:
            self._stats.write_errors += 1
            text = f"cannot spill to {leg.path}: {exc.strerror or exc}"
            if self._stats.last_error is None:
                log.warning("%s; media of calls in progress stays in memory", text)
            self._stats.last_error = text
            raise
        if self._stats.last_error is not None:
            log.info("spilling to %s works again", self.directory)
            self._stats.last_error = None
        ref = SpillRef(leg_key, index, leg.size, record_bytes, packets, payload_bytes)
        leg.size += record_bytes
        leg.chunks += 1
        self._stats.chunks_written += 1
        self._stats.bytes_written += record_bytes
        self._stats.bytes_on_disk += record_bytes
        return ref

    def read(self, ref: SpillRef) -> RtpPackets:
        leg = self._legs.get(ref.leg_key)
        if leg is None:
            raise SpillError(f"no spill file for {ref.leg_key} in {self.directory} (discarded?)")
        chunk = _read_record(self._aead, leg.path, ref, leg.fd)
        self._stats.chunks_read += 1
        self._stats.bytes_read += ref.length
        return chunk

    def discard(self, leg_key: str) -> None:
        leg = self._legs.pop(leg_key, None)
        if leg is None:
            return
        self._stats.files -= 1
        self._stats.bytes_on_disk -= leg.size
        if leg.fd is not None and self._maker is not None and len(self._emptying) < MAX_FREE_FILES:
            self._emptying.append(_LegFile(leg.path, fd=leg.fd))  # the maker thread empties it
            self._wake.set()
            return
        if leg.fd is not None and len(self._ready) < MAX_FREE_FILES:
            try:  # emptied and kept open for the next leg: creating and deleting files cost more
                os.ftruncate(leg.fd, 0)
            except OSError:
                pass
            else:
                self._ready.append(_LegFile(leg.path, fd=leg.fd))
                return
        self._close(leg)
        try:
            leg.path.unlink(missing_ok=True)
        except OSError as exc:  # never raises: clear() at the next start removes it
            self._stats.last_error = f"cannot delete {leg.path}: {exc.strerror or exc}"

    def location(self, leg_key: str) -> str:
        """The file of ``leg_key``'s chunks, for a :class:`SpillFiles` reader in another process."""
        leg = self._legs.get(leg_key)
        if leg is None:
            raise SpillError(f"no spill file for {leg_key} in {self.directory}")
        return str(leg.path)

    @property
    def key(self) -> bytes:
        """The ephemeral key, for the capture's own saver processes only (never written anywhere)."""
        return self._key

    def path_of(self, leg_key: str) -> Path | None:
        """The file a leg's chunks are in (None: nothing written, or discarded)."""
        leg = self._legs.get(leg_key)
        return leg.path if leg is not None else None

    def _new_file(self) -> _LegFile:
        """An empty file left by an earlier leg or made ahead, else a new name (created at the first
        write)."""
        try:
            made = self._ready.popleft()
        except IndexError:
            return _LegFile(self.directory / f"slot-{next(self._names)}{SUFFIX}")
        if len(self._ready) < self.ready_target // 2:
            self._wake.set()
        return made

    def make_ahead(self, count: int) -> None:
        """Keep about ``count`` empty files open ahead, made by a thread of their own: creating a file cost
        0.5 ms here, and the first spill round after a thousand calls started needed two thousand at once
        (the loop stalled a second and the ring overflowed). 0 stops the thread."""
        self.ready_target = count
        if count and self._maker is None:
            self._stop.clear()
            self._maker = threading.Thread(target=self._make_files, name="callrec-spill-files", daemon=True)
            self._maker.start()
        elif not count:
            self._stop_maker()
        self._wake.set()

    def _make_files(self) -> None:
        while not self._stop.is_set():
            while self._emptying:  # files of legs that ended: truncating one took up to ms under load
                leg = self._emptying.popleft()
                try:
                    os.ftruncate(leg.fd if leg.fd is not None else -1, 0)
                except OSError:
                    self._close(leg)
                    with contextlib.suppress(OSError):
                        leg.path.unlink()
                    continue
                self._ready.append(leg)
            while len(self._ready) < self.ready_target and not self._stop.is_set():
                path = self.directory / f"slot-{next(self._names)}{SUFFIX}"
                with self._lock:
                    if self._open >= self.max_open:
                        break
                    try:
                        fd = os.open(
                            path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
                        )
                    except OSError:
                        break  # the next write makes its own file and reports the error
                    self._open += 1
                self._ready.append(_LegFile(path, fd=fd))
            self._wake.wait(timeout=1.0)
            self._wake.clear()

    def _stop_maker(self) -> None:
        if self._maker is not None:
            self._stop.set()
            self._wake.set()
            self._maker.join()
            self._maker = None

    # -- housekeeping -----------------------------------------------------------------------------

    def clear(self) -> int:
        """Delete every spill file in the directory (at start: a crashed run's, unreadable anyway; at
        shutdown: whatever is left). Returns how many were deleted."""
        removed = 0
        target = self.ready_target
        self._stop_maker()
        for leg in [*self._legs.values(), *self._ready, *self._emptying]:
            self._close(leg)
        self._ready.clear()
        self._emptying.clear()
        for path in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        self._legs.clear()
        self._stats.files = self._stats.bytes_on_disk = 0
        if target:
            self.make_ahead(target)
        return removed

    def close(self) -> None:
        """Stop making files ahead and delete every spill file (at shutdown)."""
        self.ready_target = 0
        self.clear()

    def _fd(self, leg: _LegFile) -> int:
        """The leg's file, open for writing: kept open while at most ``max_open`` are, else for this once
        (the caller closes what is not ``leg.fd``)."""
        if leg.fd is not None:
            return leg.fd
        fd = os.open(leg.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with self._lock:
            if self._open < self.max_open:
                leg.fd, self._open = fd, self._open + 1
        return fd

    def _close(self, leg: _LegFile) -> None:
        if leg.fd is not None:
            with contextlib.suppress(OSError):
                os.close(leg.fd)
            with self._lock:
                leg.fd, self._open = None, self._open - 1

    def stats(self) -> SpillStats:
        s = self._stats
        return SpillStats(
            s.chunks_written,
            s.bytes_written,
            s.chunks_read,
            s.bytes_read,
            s.write_errors,
            s.files,
            s.bytes_on_disk,
            s.last_error,
        )


class SpillFiles:
    """Reads chunks that a :class:`SealedSpill` with the same key wrote, by file (a
    :class:`capture.streams.spill.SpillReader`): the capture's saver processes read a finished call's spilled
    media themselves. Holds no state but the key; opens the file for each chunk."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def read_at(self, location: str, ref: SpillRef) -> RtpPackets:
        return _read_record(self._aead, Path(location), ref, None)

    def read_all(self, location: str, refs: Iterable[SpillRef]) -> list[RtpPackets]:
        """Every chunk of ``refs`` (one leg's, in the order written), with one open and one read of the
        file's span: a leg of a thirty-second call has thirty chunks."""
        refs = list(refs)
        if not refs:
            return []
        start = min(ref.offset for ref in refs)
        end = max(ref.offset + ref.length for ref in refs)
        fd = os.open(location, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            data = memoryview(os.pread(fd, end - start, start))
        finally:
            os.close(fd)
        path = Path(location)
        return [
            _open_record(self._aead, path, ref, data[ref.offset - start : ref.offset - start + ref.length])
            for ref in refs
        ]


def _read_record(aead: AESGCM, path: Path, ref: SpillRef, fd: int | None) -> RtpPackets:
    """One chunk, checked (length, record head, authentication, packet count): :class:`SpillError`."""
    if fd is not None:
        data = os.pread(fd, ref.length, ref.offset)
    else:
        own = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            data = os.pread(own, ref.length, ref.offset)
        finally:
            os.close(own)
    return _open_record(aead, path, ref, data)


def _open_record(aead: AESGCM, path: Path, ref: SpillRef, data: bytes | memoryview) -> RtpPackets:
    where = f"spill file {path}, chunk {ref.index} at byte {ref.offset}"
    if len(data) != ref.length:
        raise SpillError(f"{where}: cut short ({len(data)} of {ref.length} bytes)")
    mark, index, length = _RECORD.unpack_from(data)
    if mark != MARK or index != ref.index or _RECORD.size + NONCE_BYTES + length != ref.length:
        raise SpillError(f"{where}: damaged record head")
    nonce = data[_RECORD.size : _RECORD.size + NONCE_BYTES]
    try:
        plain = aead.decrypt(nonce, data[_RECORD.size + NONCE_BYTES :], _aad(ref.leg_key, index))
    except InvalidTag:
        raise SpillError(f"{where}: failed authentication (damaged or tampered with)") from None
    try:
        chunk = decode_chunk(plain)
    except SpillError as exc:
        raise SpillError(f"{where}: {exc}") from None
    if len(chunk) != ref.packets:
        raise SpillError(f"{where}: {len(chunk)} packets, {ref.packets} were written")
    return chunk


def _checked(leg_key: str) -> str:
    if not LEG_KEY.match(leg_key):
        raise ValueError(f"leg key {leg_key!r} is not a safe file name")
    return leg_key


def _aad(leg_key: str, index: int) -> bytes:
    name = leg_key.encode()
    return _AAD.pack(b"callrec-spill\x00", VERSION, len(name)) + name + _INDEX.pack(index)


def _pwrite_all(fd: int, parts: list[bytes], offset: int, path: Path) -> None:
    """Write ``parts`` one after the other at ``offset`` of ``fd`` (``path`` for messages)."""
    total = sum(len(part) for part in parts)
    written = os.pwritev(fd, parts, offset)  # one call, no copy joining the parts
    if written < total:  # short write: the rest one by one (raises ENOSPC if the disk is full)
        view = memoryview(b"".join(parts))[written:]
        while view:
            more = os.pwrite(fd, view, offset + written)
            if more <= 0:
                raise OSError(errno.EIO, f"short write to {path}")
            view, written = view[more:], written + more
