"""Anchors: the audit trail's signed checkpoints kept outside the catalogue, where whoever edits the
catalogue file (and the head file beside it) cannot take them back.

Every checkpoint (seq, hash, signature) is appended to an :class:`AnchorStore`; verification
then requires every anchored entry to be present with the anchored hash, and a trail shorter than
its last anchor is truncated. A store is append-only by contract: anchors are never rewritten or
removed, only added in seq order.

:class:`FileAnchorStore` is one box's store: a file of JSON lines (on another mount, or in
``/var/log/callrec``), opened ``O_APPEND`` and synced after every line. A fleet can anchor in an
object store under a retention lock by implementing the same interface.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from callrec.store.errors import StoreError

_TAIL_BYTES = 4096  # one anchor line is ~250 bytes: the last one is in the file's last 4 KiB


@dataclass(frozen=True, slots=True)
class Anchor:
    """One anchored checkpoint: the entry's ``seq`` and ``hash``, the Ed25519 ``signature`` over
    them (:func:`store.audit.chain.signed_message`), the signing key's fingerprint, when."""

    seq: int
    hash: str
    signature: str
    key_fingerprint: str
    at: str


@dataclass(frozen=True, slots=True)
class AnchorRead:
    """What a store holds: its anchors in the order appended, and lines it could not read."""

    anchors: list[Anchor]
    unreadable: list[str]


class AnchorStore(Protocol):
    """Where checkpoints are anchored outside the catalogue (append-only)."""

    @property
    def location(self) -> str:
        """Where the anchors are, for messages (a path, a bucket and key)."""
        ...

    def append(self, anchor: Anchor) -> None:
        """Add ``anchor`` durably, after every earlier one; raise :class:`StoreError` if it cannot."""
        ...

    def read(self) -> AnchorRead:
        """Every anchor (none if the store does not exist yet)."""
        ...

    def latest(self) -> Anchor | None:
        """The last anchor appended, if any (cheap: read before every checkpoint)."""
        ...


class FileAnchorStore:
    """Anchors as JSON lines in one append-only file (mode 0600, made on the first append)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @property
    def location(self) -> str:
        return str(self.path)

    def append(self, anchor: Anchor) -> None:
        line = (json.dumps(asdict(anchor), sort_keys=True, separators=(",", ":")) + "\n").encode()
        created = not self.path.exists()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot anchor the audit trail in {self.path}: {exc.strerror or exc}") from exc
        try:
            if os.write(fd, line) != len(line):
                raise StoreError(f"cannot anchor the audit trail in {self.path}: short write")
            os.fsync(fd)
        except OSError as exc:
            raise StoreError(f"cannot anchor the audit trail in {self.path}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                directory = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(directory)
                finally:
                    os.close(directory)

    def read(self) -> AnchorRead:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return AnchorRead([], [])
        except OSError as exc:
            return AnchorRead([], [f"cannot read {self.path}: {exc.strerror or exc}"])
        anchors: list[Anchor] = []
        unreadable: list[str] = []
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            anchor = _parse(line)
            if anchor is not None:
                anchors.append(anchor)
            elif number < len(lines):  # the last line without its newline: an append cut by a crash
                unreadable.append(f"line {number} of {self.path} is not an anchor")
        return AnchorRead(anchors, unreadable)

    def latest(self) -> Anchor | None:
        try:
            with self.path.open("rb") as stream:
                size = stream.seek(0, os.SEEK_END)
                stream.seek(max(0, size - _TAIL_BYTES))
                tail = stream.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read the audit anchors {self.path}: {exc.strerror or exc}") from exc
        for line in reversed(tail.split(b"\n")):
            anchor = _parse(line) if line.strip() else None
            if anchor is not None:
                return anchor
        return None


def _parse(line: bytes) -> Anchor | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    if not isinstance(value, Mapping) or type(value.get("seq")) is not int:
        return None
    texts = [value.get(name) for name in ("hash", "signature", "key_fingerprint", "at")]
    if not all(isinstance(text, str) for text in texts):
        return None
    return Anchor(value["seq"], *(str(text) for text in texts))
