"""The journal's key: 32 random bytes in a 0600 file beside the journal (see
:mod:`recorder.journal.segments` for
why a local key), read with every check a key file deserves, created and replaced atomically."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from callrec.store.errors import StoreError
from callrec.store.files import fsync_dir

KEY_BYTES = 32


class JournalError(StoreError):
    """The journal or its key cannot be used (a startup error: one line, exit 78)."""


class JournalKeyError(JournalError):
    """The journal key file is unsafe or malformed, or the journal was sealed with another key."""


def key_id(key: bytes) -> bytes:
    """The 16-byte name of a journal key (one-way: it reveals nothing about the key)."""
    return hashlib.sha256(b"callrec-journal-key-id\x00" + key).digest()[:16]


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The journal key in ``path``, or a new random one created there atomically (mode 0600). Raises
    :class:`JournalKeyError` for a key file others may read, a symlink, or a wrong size."""
    target, key = Path(path), secrets.token_bytes(KEY_BYTES)
    try:
        try:
            return _read_key(target)
        except FileNotFoundError:
            write_key(target, key, replace=False)
    except FileExistsError:  # another process made it first
        return _read_key(target)
    except OSError as exc:  # (a directory that cannot be synced raises StoreError: one line too)
        raise JournalError(f"cannot read or create the journal key {target}: {exc.strerror or exc}") from exc
    return key


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise JournalKeyError(f"journal key {path} is a symbolic link: refusing it") from None
        raise
    try:
        st, data = os.fstat(fd), os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise JournalKeyError(f"journal key {path} has mode {mode:04o}: group or others may read it")
    if len(data) != KEY_BYTES:
        raise JournalKeyError(f"journal key {path} has {len(data)} bytes, not {KEY_BYTES}: not a key")
    return data


def write_key(path: Path, key: bytes, *, replace: bool) -> None:
    """Temp file (O_EXCL, 0600, fsync), link (or rename) into place, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            _write_fully(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        (os.replace if replace else os.link)(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def _write_fully(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
