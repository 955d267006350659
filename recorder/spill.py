"""Sealed spill files: where the live capture puts the older media of calls in progress.

:meth:`capture.tracker.CallTracker.spill` (once a second in the live loop) hands the media of each
leg older than a few seconds to :class:`SealedSpill`, which appends it to that leg's file in the spill
directory (``<home>/spool/calls/leg-<n>.spill``) and returns a reference; the tracker keeps only the
references, so memory per call is bounded by the recent window. When the call ends the chunks are read
back, verified and the file is deleted (:meth:`SealedSpill.discard`).

Format. Each chunk (:func:`capture.spill.encode_chunk`) is one record: a head (marker ``CRS\\x01``,
chunk index, ciphertext length; big-endian), a random 12-byte nonce, then the AES-256-GCM ciphertext
and tag. The associated data binds the record to its leg key and chunk index, so a record moved to
another file or position, replayed or cut is rejected (:class:`~capture.spill.SpillError`, naming the
file). Files are written with ``pwrite`` at the end this process knows, so a torn write (disk full
half-way) is overwritten by the next chunk; nothing is ``fsync``-ed: the spill is not for durability.

Threat model. Unlike the journal (:mod:`recorder.journal`), a spill is never read by another process:
after a crash the journal recovers the calls in progress and the spills are useless, so :meth:`clear`
deletes them at the next start. So the key is *ephemeral*: 32 random bytes made when the sink is
created, held only in the capture process's memory, never written anywhere. A copy of the spill
directory (a backup, a disk pulled from the appliance, a file left by a crash) is unreadable by anyone,
including someone who can read the whole state directory as the callrec user afterwards; only someone
who can read the live process's memory can read the spill, and they could read the calls' media there
anyway. The files are 0600 in a 0700 directory.

Disk errors. The spill is an optimisation: :meth:`SealedSpill.write` raising :class:`OSError` (ENOSPC,
EROFS, EIO, or ``budget_bytes`` reached) leaves the chunk in the tracker's memory; failures are counted
(:meth:`SealedSpill.stats`) and logged when they start and when writing works again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from capture.media import RtpPackets
from capture.spill import SpillError, SpillRef, decode_chunk, encode_chunk

MARK, VERSION = b"CRS\x01", 1
KEY_BYTES, NONCE_BYTES, TAG_BYTES = 32, 12, 16
SUFFIX = ".spill"
_RECORD = struct.Struct(">4sII")  # marker, chunk index, ciphertext length (tag included)
_AAD = struct.Struct(">14sBH")  # label, version, leg key length (then the key, then the index)
_INDEX = struct.Struct(">I")
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


class SealedSpill:
    """A :class:`capture.spill.SpillSink` of sealed, append-only files, one per leg, in ``directory``.

    ``key``: tests only (default: a fresh random key, see the module docstring). ``budget_bytes``:
    the most the spill files may take together (a write beyond raises ENOSPC: the chunk stays in
    memory). Owned by the capture loop: not thread-safe."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        budget_bytes: int | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        key = key if key is not None else secrets.token_bytes(KEY_BYTES)
        if len(key) != KEY_BYTES:
            raise ValueError(f"spill key of {len(key)} bytes, not {KEY_BYTES}")
        self.directory = Path(directory)
        self.budget_bytes = budget_bytes
        self.log = log
        self._aead = AESGCM(key)
        self._legs: dict[str, _LegFile] = {}
        self._stats = SpillStats()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- the sink ---------------------------------------------------------------------------------

    def write(self, leg_key: str, chunk: RtpPackets) -> SpillRef:
        leg = self._legs.get(leg_key)
        if leg is None:  # registered before the first write: discard() deletes a torn first record too
            leg = self._legs[leg_key] = _LegFile(self.directory / f"{_checked(leg_key)}{SUFFIX}")
            self._stats.files += 1
        index = leg.chunks
        plain = encode_chunk(chunk)
        length = len(plain) + TAG_BYTES
        record_bytes = _RECORD.size + NONCE_BYTES + length
        try:
            if self.budget_bytes is not None and self._stats.bytes_on_disk + record_bytes > self.budget_bytes:
                raise OSError(errno.ENOSPC, f"spill budget of {self.budget_bytes} bytes reached")
            nonce = secrets.token_bytes(NONCE_BYTES)
            sealed = self._aead.encrypt(nonce, plain, _aad(leg_key, index))
            _pwrite_all(leg.path, [_RECORD.pack(MARK, index, length) + nonce, sealed], leg.size)
        except OSError as exc:
            self._stats.write_errors += 1
            text = f"cannot spill to {leg.path}: {exc.strerror or exc}"
            if self._stats.last_error is None:
                self.log(f"{text}; media of calls in progress stays in memory")
            self._stats.last_error = text
            raise
        if self._stats.last_error is not None:
            self.log(f"spilling to {self.directory} works again")
            self._stats.last_error = None
        ref = SpillRef(leg_key, index, leg.size, record_bytes, len(chunk), int(chunk.payload.shape[0]))
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
        path = leg.path
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            data = os.pread(fd, ref.length, ref.offset)
        finally:
            os.close(fd)
        where = f"spill file {path}, chunk {ref.index} at byte {ref.offset}"
        if len(data) != ref.length:
            raise SpillError(f"{where}: cut short ({len(data)} of {ref.length} bytes)")
        mark, index, length = _RECORD.unpack_from(data)
        if mark != MARK or index != ref.index or _RECORD.size + NONCE_BYTES + length != ref.length:
            raise SpillError(f"{where}: damaged record head")
        nonce = data[_RECORD.size : _RECORD.size + NONCE_BYTES]
        try:
            plain = self._aead.decrypt(nonce, data[_RECORD.size + NONCE_BYTES :], _aad(ref.leg_key, index))
        except InvalidTag:
            raise SpillError(f"{where}: failed authentication (damaged or tampered with)") from None
        try:
            chunk = decode_chunk(plain)
        except SpillError as exc:
            raise SpillError(f"{where}: {exc}") from None
        if len(chunk) != ref.packets:
            raise SpillError(f"{where}: {len(chunk)} packets, {ref.packets} were written")
        self._stats.chunks_read += 1
        self._stats.bytes_read += ref.length
        return chunk

    def discard(self, leg_key: str) -> None:
        leg = self._legs.pop(leg_key, None)
        if leg is None:
            return
        self._stats.files -= 1
        self._stats.bytes_on_disk -= leg.size
        try:
            leg.path.unlink(missing_ok=True)
        except OSError as exc:  # never raises: clear() at the next start removes it
            self._stats.last_error = f"cannot delete {leg.path}: {exc.strerror or exc}"

    # -- housekeeping -----------------------------------------------------------------------------

    def clear(self) -> int:
        """Delete every spill file in the directory (at start: a crashed run's, unreadable anyway; at
        shutdown: whatever is left). Returns how many were deleted."""
        removed = 0
        for path in self.directory.glob(f"*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        self._legs.clear()
        self._stats.files = self._stats.bytes_on_disk = 0
        return removed

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


def _checked(leg_key: str) -> str:
    if not LEG_KEY.match(leg_key):
        raise ValueError(f"leg key {leg_key!r} is not a safe file name")
    return leg_key


def _aad(leg_key: str, index: int) -> bytes:
    name = leg_key.encode()
    return _AAD.pack(b"callrec-spill\x00", VERSION, len(name)) + name + _INDEX.pack(index)


def _pwrite_all(path: Path, parts: list[bytes], offset: int) -> None:
    """Write ``parts`` one after the other at ``offset`` of ``path`` (created 0600 if need be)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        total = sum(len(part) for part in parts)
        written = os.pwritev(fd, parts, offset)  # one call, no copy joining the parts
        if written < total:  # short write: the rest one by one (raises ENOSPC if the disk is full)
            view = memoryview(b"".join(parts))[written:]
            while view:
                more = os.pwrite(fd, view, offset + written)
                if more <= 0:
                    raise OSError(errno.EIO, f"short write to {path}")
                view, written = view[more:], written + more
    finally:
        os.close(fd)
