"""File primitives with the appliance's guarantees: a file written whole or not at all
(:func:`write_atomic`: temp file beside it, fsync, rename or no-clobber link, directory fsync),
durable directory entries and file systems, short-read-safe reads, and ``OSError`` turned into one
:class:`~callrec.store.errors.StoreError` line that names the path."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from callrec.store.errors import AlreadyExists, StoreError

FILE_MODE = 0o600


def read_exact(stream: BinaryIO, size: int) -> bytes:
    """``size`` bytes, or fewer only at the end of the stream (pipes may return short reads)."""
    data = stream.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size and (more := stream.read(size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def skip_bytes(stream: BinaryIO, size: int) -> int:
    """Move ``size`` bytes on, seeking where possible; returns how many bytes were there."""
    if stream.seekable():
        here = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(min(here + size, end))
        return min(size, end - here)
    skipped = 0
    while skipped < size and (block := stream.read(min(size - skipped, 1 << 20))):
        skipped += len(block)
    return skipped


def syncfs(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    syncfs = getattr(libc, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def os_errors(action: str, path: Path | None) -> Iterator[None]:
    """Turn an ``OSError`` from our own file operations into a one-line :class:`StoreError`."""
    try:
        yield
    except OSError as exc:
        where = f" {path}" if path is not None else ""
        raise StoreError(f"{action}{where}: {exc.strerror or exc}") from exc


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries durable; filesystems that cannot fsync directories are fine."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StoreError(f"cannot open directory {directory}: {exc.strerror or exc}") from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise StoreError(f"cannot sync directory {directory}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def write_atomic(
    path: Path, write: Callable[[BinaryIO], object], *, replace: bool = True, mode: int = FILE_MODE
) -> None:
    """Call ``write`` with a temp file beside ``path`` (``O_EXCL``, ``mode`` whatever the umask),
    fsync it, move it into place and fsync the directory: on any error (the caller's, the disk's) no
    partial file is left and an existing ``path`` is untouched.

    Without ``replace`` an existing file is never clobbered (:class:`AlreadyExists`): ``link(2)``,
    unlike ``rename(2)``, refuses a file that appeared meanwhile."""
    directory = path.parent if str(path.parent) else Path(".")
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    with os_errors("cannot create a temp file in", directory):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        with os_errors("cannot write", path), open(fd, "wb", closefd=True) as handle:
            os.fchmod(fd, mode)
            write(handle)
            handle.flush()
            os.fsync(fd)
        if replace:
            with os_errors("cannot move into place", path):
                os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise AlreadyExists(f"{path} already exists") from None
            except OSError:  # no hard links here (e.g. a FAT stick): check, then rename
                if path.exists():
                    raise AlreadyExists(f"{path} already exists") from None
                with os_errors("cannot move into place", path):
                    os.rename(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(directory)
