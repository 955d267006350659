"""Recording files at rest: atomic, checksummed writes under a root directory.

:class:`RecordingStore` is the plain implementation; the recorder depends only on the small
:class:`RecordingWriter` protocol, so a sealing writer (encrypt-as-you-write, a later issue) can
take its place, e.g. by transforming the chunk stream and delegating to a ``RecordingStore``.

A write never leaves a partial file under its final name: bytes go to a temp file (``O_EXCL``,
mode 0600) in ``tmp_dir`` or the target's directory, are fsynced, then renamed into place and the
directory fsynced. If anything fails, including the caller's chunk iterator, the temp file is
removed and the exception propagates.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol, runtime_checkable

from callrec.store.errors import AlreadyExists, IntegrityError, InvalidArgument, NotFound, StoreError
from callrec.store.files import fsync_dir, os_errors, syncfs

Chunk = bytes | bytearray | memoryview
"""A piece of a recording as handed to :meth:`RecordingWriter.write`."""

FILE_MODE = 0o600
DIR_MODE = 0o700
_READ_SIZE = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file as written: absolute ``path``, ``relative_path`` (POSIX, relative to the store's
    root, what the catalogue records), size in ``bytes`` and hex ``sha256`` of those bytes."""

    path: Path
    relative_path: str
    bytes: int
    sha256: str


@runtime_checkable
class RecordingWriter(Protocol):
    """What the recorder needs to put a recording at rest. Implementations must be atomic:
    either the whole file exists under ``relative_name`` afterwards, or nothing does."""

    def write(self, relative_name: str, chunks: Iterable[Chunk], *, replace: bool = False) -> StoredFile:
        """Store the concatenation of ``chunks`` under ``relative_name``."""
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


class RecordingStore:
    """Plain (unsealed) files under ``root``; see the module docstring for the write protocol.

    ``tmp_dir`` (e.g. the home's ``tmp/``) holds temp files when it is on the target's filesystem
    (a rename cannot cross filesystems: with ``recordings/`` mounted apart, or ``None``, temp files are
    made next to their target)."""

    def __init__(
        self, root: str | os.PathLike[str], *, tmp_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.root = Path(root).absolute()
        self.tmp_dir = Path(tmp_dir).absolute() if tmp_dir is not None else None

    def __repr__(self) -> str:
        return f"RecordingStore({str(self.root)!r})"

    def path_of(self, relative_path: str | PurePosixPath) -> Path:
        """Absolute path of a store-relative name (validated, not checked for existence)."""
        return self.root.joinpath(*normalize_name(relative_path).split("/"))

    def exists(self, relative_path: str | PurePosixPath) -> bool:
        """Whether a file is stored under ``relative_path``."""
        return self.path_of(relative_path).is_file()

    def write(
        self, relative_name: str, chunks: Iterable[Chunk], *, replace: bool = False, sync: bool = True
    ) -> StoredFile:
        """Write ``chunks`` atomically to ``relative_name`` and return what was stored.

        With ``sync=False`` the file and directory are not fsynced one by one: the caller writes a
        batch, makes it durable with one :meth:`sync_all`, and only then records the files (the
        catalogue rows); a crash before that can leave files without rows, never rows without files.

        Raises :class:`AlreadyExists` if the name is taken and ``replace`` is false, and
        :class:`StoreError` for filesystem failures (full disk, permissions). Exceptions raised by
        the ``chunks`` iterator propagate unchanged; in every failure case no temp file remains
        and the final name is untouched."""
        name = normalize_name(relative_name)
        final = self.path_of(name)
        if not self.root.is_dir():
            raise StoreError(f"recording store {self.root} does not exist")
        if not replace and final.exists():
            raise AlreadyExists(f"recording {name} already exists")
        self._make_dirs(final.parent)
        tmp_dir = self.tmp_dir or final.parent
        self._make_dirs(tmp_dir)
        if tmp_dir != final.parent and os.stat(tmp_dir).st_dev != os.stat(final.parent).st_dev:
            tmp_dir = final.parent
        tmp_path = tmp_dir / f".{final.name}.{secrets.token_hex(8)}.tmp"
        with os_errors("cannot create a temp file in", tmp_dir):
            fd = os.open(
                tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE
            )
        try:
            size, digest = _write_fd(fd, chunks, name, sync)
            if not replace and final.exists():
                raise AlreadyExists(f"recording {name} already exists")
            with os_errors(f"cannot move recording {name} into place in", final.parent):
                os.replace(tmp_path, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise
        if sync:
            fsync_dir(final.parent)
            if tmp_dir != final.parent:
                fsync_dir(tmp_dir)
        return StoredFile(path=final, relative_path=name, bytes=size, sha256=digest)

    def sync_all(self) -> None:
        """Make every earlier ``write(sync=False)`` durable: one ``syncfs(2)`` of the store's
        filesystem (``sync(2)`` where syncfs is not available), instead of two fsyncs per file."""
        with os_errors("cannot open", self.root):
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with os_errors("cannot sync", self.root):
                syncfs(fd)
        finally:
            os.close(fd)

    def open(self, relative_path: str | PurePosixPath) -> BinaryIO:
        """Open a stored file for reading (binary). Raises :class:`NotFound` if it is missing."""
        path = self.path_of(relative_path)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no recording file {normalize_name(relative_path)} in {self.root}") from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None

    def checksum(self, relative_path: str | PurePosixPath) -> tuple[int, str]:
        """Size in bytes and hex sha256 of a stored file, read in 1 MiB blocks."""
        digest = hashlib.sha256()
        size = 0
        with self.open(relative_path) as handle:
            while block := handle.read(_READ_SIZE):
                digest.update(block)
                size += len(block)
        return size, digest.hexdigest()

    def verify(self, relative_path: str | PurePosixPath, sha256: str, size: int | None = None) -> None:
        """Raise :class:`IntegrityError` unless the stored bytes hash to ``sha256`` (and have
        ``size`` bytes, when given); :class:`NotFound` if the file is missing."""
        actual_size, actual = self.checksum(relative_path)
        name = normalize_name(relative_path)
        if size is not None and actual_size != size:
            raise IntegrityError(f"recording {name} has {actual_size} bytes, the catalogue says {size}")
        if actual != sha256.strip().lower():
            raise IntegrityError(f"recording {name} is damaged: sha256 {actual}, the catalogue says {sha256}")

    def delete(self, relative_path: str | PurePosixPath, *, missing_ok: bool = False) -> bool:
        """Remove a stored file and fsync its directory. Returns whether a file was removed;
        a missing file raises :class:`NotFound` unless ``missing_ok`` (for idempotent purges)."""
        path = self.path_of(relative_path)
        try:
            os.unlink(path)
        except FileNotFoundError:
            if missing_ok:
                return False
            raise NotFound(f"no recording file {normalize_name(relative_path)} in {self.root}") from None
        except OSError as exc:
            raise StoreError(f"cannot delete {path}: {exc.strerror or exc}") from None
        fsync_dir(path.parent)
        return True

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents below the root, each 0700, fsyncing parents."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            if current == self.root or current == current.parent:
                break
            missing.append(current)
            current = current.parent
        for path in reversed(missing):
            with os_errors("cannot create directory", path):
                try:
                    path.mkdir(mode=DIR_MODE)
                except FileExistsError:
                    if not path.is_dir():
                        raise
                    continue
                os.chmod(path, DIR_MODE)
            fsync_dir(path.parent)


def _write_fd(fd: int, chunks: Iterable[Chunk], name: str, sync: bool = True) -> tuple[int, str]:
    """Write every chunk to ``fd`` (closing it), fsync unless told not to, return size and sha256."""
    digest = hashlib.sha256()
    size = 0
    try:
        handle = open(fd, "wb", closefd=True)  # noqa: SIM115 - closed by the with below
    except BaseException:
        os.close(fd)
        raise
    with handle:
        with os_errors(f"cannot write recording {name}", None):
            os.fchmod(fd, FILE_MODE)  # exact mode whatever the umask
        for chunk in chunks:
            view = memoryview(chunk)
            with os_errors(f"cannot write recording {name}", None):
                handle.write(view)
            digest.update(view)
            size += view.nbytes
        with os_errors(f"cannot write recording {name}", None):
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
    return size, digest.hexdigest()
