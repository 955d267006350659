"""Recordings opened for the browser: decrypted into memory once, then served by byte ranges.

A sealed recording is authenticated chunk by chunk and its end is checked last, so no byte may be
served before the whole file has opened (:meth:`store.crypto.vault.Vault.open`). :class:`AudioCache`
keeps the few recordings being listened to in memory (never on disk), bounded by size and idle
time, so that seeking is a slice of bytes rather than another decryption.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive byte range ``first``..``last`` of a body of ``total`` bytes."""

    first: int
    last: int
    total: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.first}-{self.last}/{self.total}"


class RangeNotSatisfiable(ValueError):
    """A Range header that selects no byte of the body (answered with 416)."""


def parse_range(header: str | None, total: int) -> ByteRange | None:
    """The one range a ``Range`` header asks for, or ``None`` for the whole body (no header, or
    one we ignore as RFC 9110 allows: another unit, several ranges, bad syntax). Raises
    :class:`RangeNotSatisfiable` when it starts past the end (or the body is empty)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None:
        return None
    start, end = match.groups()
    if not start and not end:
        return None
    if not start:  # the last N bytes
        suffix = int(end)
        if suffix == 0 or total == 0:
            raise RangeNotSatisfiable(header)
        return ByteRange(max(0, total - suffix), total - 1, total)
    first = int(start)
    last = total - 1 if not end else min(int(end), total - 1)
    if end and int(end) < first:
        return None
    if first >= total:
        raise RangeNotSatisfiable(header)
    return ByteRange(first, last, total)


def wav_seconds(offset: int, header_bytes: int, byte_rate: int) -> float:
    """Seconds into the audio of a byte offset in a WAV file (0 inside the header)."""
    if byte_rate <= 0:
        return 0.0
    return round(max(0, offset - header_bytes) / byte_rate, 3)


@dataclass
class _Entry:
    data: bytes
    last_used: float


class AudioCache:
    """Opened recordings by key (the call id and its audio hash), at most ``max_bytes`` of them,
    each dropped after ``idle_s`` seconds without use. One opening per key at a time: a second
    request for a recording being opened waits for the first instead of decrypting it again."""

    def __init__(self, max_bytes: int, idle_s: float, clock: Callable[[], float]) -> None:
        self._max = max_bytes
        self._idle = idle_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._opening: dict[str, threading.Lock] = {}

    def get(self, key: str, open_: Callable[[], bytes]) -> tuple[bytes, bool]:
        """The bytes for ``key`` and whether they were cached; ``open_`` makes them when not."""
        found = self._lookup(key)
        if found is not None:
            return found, True
        with self._lock:
            gate = self._opening.setdefault(key, threading.Lock())
        with gate:
            found = self._lookup(key)
            if found is not None:
                return found, True
            try:
                data = open_()
            finally:
                with self._lock:
                    self._opening.pop(key, None)
            self._store(key, data)
            return data, False

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    @property
    def size(self) -> int:
        with self._lock:
            return sum(len(e.data) for e in self._entries.values())

    def _lookup(self, key: str) -> bytes | None:
        now = self._clock()
        with self._lock:
            self._expire(now)
            entry = self._entries.get(key)
            if entry is None:
                return None
            entry.last_used = now
            self._entries.move_to_end(key)
            return entry.data

    def _store(self, key: str, data: bytes) -> None:
        if len(data) > self._max:
            return  # served once, not kept
        with self._lock:
            self._entries[key] = _Entry(data, self._clock())
            self._entries.move_to_end(key)
            total = sum(len(e.data) for e in self._entries.values())
            while total > self._max and self._entries:
                _, dropped = self._entries.popitem(last=False)
                total -= len(dropped.data)

    def _expire(self, now: float) -> None:
        for key in [k for k, e in self._entries.items() if now - e.last_used > self._idle]:
            del self._entries[key]
