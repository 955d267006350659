"""Recording files at rest: atomic, checksummed writes under a root directory.

:class:`RecordingStore` is the single box's :class:`~callrec.store.objects.base.ObjectStore`: its
callers depend only on that protocol, so the S3 store (:mod:`callrec.store.objects.s3`) takes its
place when ``[storage] url`` says so.

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
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from callrec.store.errors import AlreadyExists, NotFound, StoreError
from callrec.store.files import fsync_dir, os_errors, syncfs
from callrec.store.objects.base import (
    Chunk,
    RecordingWriter,
    StoredFile,
    StoreStatus,
    check_digest,
    digest_stream,
    normalize_name,
)

FILE_MODE = 0o600
DIR_MODE = 0o700

__all__ = ["Chunk", "RecordingStore", "RecordingWriter", "StoredFile", "normalize_name"]


class RecordingStore:
    """Plain (unsealed) files under ``root``; see the module docstring for the write protocol.

    ``tmp_dir`` (e.g. the home's ``tmp/``) holds temp files when it is on the target's filesystem
    (a rename cannot cross filesystems: with ``recordings/`` mounted apart, or ``None``, temp files are
    made next to their target)."""

    kind = "local"

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

    def location(self, relative_path: str | PurePosixPath) -> str:
        """The file's absolute path."""
        return str(self.path_of(relative_path))

    def local_path(self, relative_path: str | PurePosixPath) -> Path:
        """The file of a stored name (see :meth:`path_of`)."""
        return self.path_of(relative_path)

    def extend_retention(self, relative_path: str | PurePosixPath, until_ns: int) -> None:
        """Nothing to do: a local directory has no Object Lock (the catalogue's expiry governs)."""

    def set_legal_hold(self, relative_path: str | PurePosixPath, on: bool) -> None:
        """Nothing to do: a local directory has no Object Lock (the catalogue's holds govern)."""

    def check(self) -> None:
        """Raise :class:`StoreError` unless the root is a writable directory."""
        found = self.status()
        if not found.reachable:
            raise StoreError(found.error or f"cannot use {self.root}")

    def status(self) -> StoreStatus:
        """The directory, and whether it exists and is writable."""
        if not self.root.is_dir():
            return StoreStatus("local", str(self.root), "off", False, f"{self.root} does not exist")
        if not os.access(self.root, os.W_OK | os.X_OK):
            return StoreStatus("local", str(self.root), "off", False, f"cannot write to {self.root}")
        return StoreStatus("local", str(self.root), "off", True)

    def exists(self, relative_path: str | PurePosixPath) -> bool:
        """Whether a file is stored under ``relative_path``."""
        return self.path_of(relative_path).is_file()

    def write(
        self,
        relative_name: str,
        chunks: Iterable[Chunk],
        *,
        replace: bool = False,
        sync: bool = True,
        retain_until_ns: int | None = None,
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
        with self.open(relative_path) as handle:
            return digest_stream(handle)

    def verify(self, relative_path: str | PurePosixPath, sha256: str, size: int | None = None) -> None:
        """Raise :class:`IntegrityError` unless the stored bytes hash to ``sha256`` (and have
        ``size`` bytes, when given); :class:`NotFound` if the file is missing."""
        actual_size, actual = self.checksum(relative_path)
        check_digest(normalize_name(relative_path), actual_size, actual, sha256, size)

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
