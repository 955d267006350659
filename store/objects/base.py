"""What every recording store offers, local directory or S3 bucket: the :class:`ObjectStore` protocol.

Callers (the vault, retention, the CLI and the portal) depend on this protocol alone, never on a
backend by name: recordings are addressed by their store-relative name (``recordings/2026/11/28/42.wav``,
what the catalogue records), written from an iterable of chunks, read back through a seekable binary
file, checked by sha256, and deleted when retention says so and the store allows it.

Backends without Object Lock (the local directory) accept the retention and legal-hold calls and do
nothing with them: the catalogue's holds and expiries still govern the purge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol, runtime_checkable

from callrec.store.errors import IntegrityError, InvalidArgument

Chunk = bytes | bytearray | memoryview
"""A piece of a recording as handed to :meth:`ObjectStore.write`."""

READ_SIZE = 1 << 20
"""Block size of checksum reads."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A recording as written: ``path`` (the absolute file of a local store, ``None`` in an object
    store), ``relative_path`` (POSIX, what the catalogue records), size in ``bytes`` and hex
    ``sha256`` of those bytes."""

    path: Path | None
    relative_path: str
    bytes: int
    sha256: str


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """What ``callrec status`` shows of the recording store: its ``kind`` (``local`` or ``s3``),
    where it is (a directory, or ``s3://bucket/prefix at endpoint``), its Object Lock mode
    (``off`` for a local store), whether it answered, and why not."""

    kind: str
    location: str
    object_lock: str
    reachable: bool
    error: str | None = None


@runtime_checkable
class RecordingWriter(Protocol):
    """What the recorder needs to put a recording at rest. Implementations must be atomic:
    either the whole recording exists under ``relative_name`` afterwards, or nothing does."""

    def write(self, relative_name: str, chunks: Iterable[Chunk], *, replace: bool = False) -> StoredFile:
        """Store the concatenation of ``chunks`` under ``relative_name``."""
        ...


@runtime_checkable
class ObjectStore(Protocol):
    """A recording store: see the module docstring. Every failure is a :class:`StoreError` with
    a one-line message (:class:`NotFound`, :class:`ObjectLocked`, :class:`StorageUnreachable`, ...)."""

    kind: str

    def write(
        self,
        relative_name: str,
        chunks: Iterable[Chunk],
        *,
        replace: bool = False,
        sync: bool = True,
        retain_until_ns: int | None = None,
    ) -> StoredFile:
        """Store ``chunks`` atomically; ``retain_until_ns``: keep it from deletion until then
        (Object Lock; ignored by stores without it). ``sync=False`` defers durability to
        :meth:`sync_all`."""
        ...

    def sync_all(self) -> None:
        """Make every earlier ``write(sync=False)`` durable."""
        ...

    def open(self, relative_path: str | PurePosixPath) -> BinaryIO:
        """A seekable binary file over the stored bytes (:class:`NotFound` if missing)."""
        ...

    def exists(self, relative_path: str | PurePosixPath) -> bool:
        """Whether something is stored under the name."""
        ...

    def checksum(self, relative_path: str | PurePosixPath) -> tuple[int, str]:
        """Size in bytes and hex sha256 of the stored bytes."""
        ...

    def verify(self, relative_path: str | PurePosixPath, sha256: str, size: int | None = None) -> None:
        """Raise :class:`IntegrityError` unless the stored bytes hash to ``sha256`` (and size)."""
        ...

    def delete(self, relative_path: str | PurePosixPath, *, missing_ok: bool = False) -> bool:
        """Remove the recording (every stored version of it); whether something was removed.
        :class:`ObjectLocked` when the store refuses (retention or legal hold)."""
        ...

    def location(self, relative_path: str | PurePosixPath) -> str:
        """Where the recording is, for people: a file path, or ``s3://bucket/key``."""
        ...

    def local_path(self, relative_path: str | PurePosixPath) -> Path | None:
        """The file that holds the recording when it is a local file, else ``None``."""
        ...

    def extend_retention(self, relative_path: str | PurePosixPath, until_ns: int) -> None:
        """Keep the recording from deletion until at least ``until_ns`` (never shortens)."""
        ...

    def set_legal_hold(self, relative_path: str | PurePosixPath, on: bool) -> None:
        """Set or clear the recording's legal hold in the store."""
        ...

    def check(self) -> None:
        """The start-up check: raise a one-line :class:`StoreError` unless the store can be used."""
        ...

    def status(self) -> StoreStatus:
        """Where the store is and whether it answers (never raises)."""
        ...


def normalize_name(relative_name: str | PurePosixPath) -> str:
    """Validate a store-relative name and return it in canonical POSIX form (``a/b/c.wav``).

    Absolute names, ``.``/``..`` components, empty components, backslashes and NUL are refused,
    so a name can never point outside the store's root."""
    text = str(relative_name)
    if not text or "\x00" in text or "\\" in text or text.startswith("/"):
        raise InvalidArgument(f"invalid recording name {text!r}: use a relative path like 'a/b.wav'")
    parts = text.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidArgument(f"invalid recording name {text!r}: use a relative path like 'a/b.wav'")
    return "/".join(parts)


def check_digest(name: str, actual_size: int, actual: str, sha256: str, size: int | None) -> None:
    """The comparison behind :meth:`ObjectStore.verify`: :class:`IntegrityError` on a mismatch."""
    if size is not None and actual_size != size:
        raise IntegrityError(f"recording {name} has {actual_size} bytes, the catalogue says {size}")
    if actual != sha256.strip().lower():
        raise IntegrityError(f"recording {name} is damaged: sha256 {actual}, the catalogue says {sha256}")


def digest_stream(handle: BinaryIO) -> tuple[int, str]:
    """Size and hex sha256 of what ``handle`` reads to its end, in :data:`READ_SIZE` blocks."""
    digest = hashlib.sha256()
    size = 0
    while block := handle.read(READ_SIZE):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()
