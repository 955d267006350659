"""What stays in memory of media spilled to disk: references to chunks (:class:`SpillRef`,
:class:`SpillRefs`), a finished leg's spilled part (:class:`SpilledMedia`), and the interfaces of
whatever writes and reads the chunks (:class:`SpillSink`, :class:`SpillReader`)."""

from __future__ import annotations

import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from callrec.capture.model.media import RtpPackets


class SpillError(ValueError):
    """A spilled chunk that cannot be read back: damaged, tampered with, or not a chunk. The message
    names the file (or the sink) and the chunk."""


@dataclass(frozen=True, slots=True)
class SpillRef:
    """Where a sink put one chunk: what a :class:`~capture.model.media.LegSpool` keeps in memory instead.
    ``offset`` and ``length`` are the sink's own (a file position, a record size); ``packets`` and
    ``payload_bytes`` describe the chunk."""

    leg_key: str
    index: int
    offset: int
    length: int
    packets: int
    payload_bytes: int


class SpillRefs:
    """A leg's :class:`SpillRef` s in the order written, kept as five integer arrays and one key: a
    live capture spills every leg every second, and an hour-long call's 7,200 reference objects took
    about a megabyte where these take 300 KB. A sequence of :class:`SpillRef` (made when read)."""

    __slots__ = ("leg_key", "_columns")

    def __init__(self, refs: Iterable[SpillRef] = ()) -> None:
        self.leg_key = ""
        self._columns = tuple(array.array("q") for _ in range(5))  # index, offset, length, packets, payload
        for ref in refs:
            self.append(ref)

    def append(self, ref: SpillRef) -> None:
        if self._columns[0] and ref.leg_key != self.leg_key:
            raise ValueError(f"a reference of {ref.leg_key!r} among those of {self.leg_key!r}")
        self.leg_key = ref.leg_key
        for column, value in zip(
            self._columns, (ref.index, ref.offset, ref.length, ref.packets, ref.payload_bytes), strict=True
        ):
            column.append(value)

    def clear(self) -> None:
        for column in self._columns:
            del column[:]

    def __len__(self) -> int:
        return len(self._columns[0])

    def __getitem__(self, i: int) -> SpillRef:
        index, offset, length, packets, payload = (column[i] for column in self._columns)
        return SpillRef(self.leg_key, index, offset, length, packets, payload)

    def __iter__(self) -> Iterator[SpillRef]:
        for i in range(len(self)):
            yield self[i]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SpillRefs) and list(self) == list(other)

    def __getstate__(self) -> tuple[str, tuple[bytes, ...]]:
        return self.leg_key, tuple(column.tobytes() for column in self._columns)

    def __setstate__(self, state: tuple[str, tuple[bytes, ...]]) -> None:
        self.leg_key = state[0]
        self._columns = tuple(array.array("q", data) for data in state[1])

    @property
    def packets(self) -> int:
        return sum(self._columns[3])

    def copy(self) -> SpillRefs:
        out = SpillRefs()
        out.__setstate__(self.__getstate__())
        return out


@dataclass(frozen=True, slots=True)
class SpilledMedia:
    """A finished leg's older packets, left in the sink and handed on with the call, so that whoever saves
    the call reads them back (a saver process: :func:`capture.tracking.handoff.resolve_spilled`) instead
    of the
    capture loop. ``location`` is the sink's name for the leg's chunks (a file); the packets of
    ``drop_payload_types`` are dropped once read, as they were from the packets kept in memory."""

    location: str
    refs: SpillRefs
    drop_payload_types: frozenset[int] = frozenset()

    @property
    def leg_key(self) -> str:
        return self.refs.leg_key


class SpillReader(Protocol):
    """Reads chunks by location, with no state of the sink that wrote them (another process can):
    one, or all of a leg's at once."""

    def read_at(self, location: str, ref: SpillRef) -> RtpPackets: ...

    def read_all(self, location: str, refs: Iterable[SpillRef]) -> list[RtpPackets]: ...


class SpillSink(Protocol):
    """Somewhere to put chunks of a leg's packets until the call ends.

    * ``write`` stores one chunk (``write_record``: one already encoded) and returns its reference;
      raises :class:`OSError` if it cannot (disk full, read-only, over a budget): the caller keeps the
      chunk in memory.
    * ``read`` returns the chunk as written; raises :class:`SpillError` (or :class:`OSError`) if it
      cannot, naming the file.
    * ``discard`` forgets every chunk of ``leg_key``; it never raises.
    * ``location`` names where ``leg_key``'s chunks are, for a :class:`SpillReader`.
    """

    def write(self, leg_key: str, chunk: RtpPackets) -> SpillRef: ...

    def write_record(
        self, leg_key: str, data: bytes | bytearray, packets: int, payload_bytes: int
    ) -> SpillRef: ...

    def read(self, ref: SpillRef) -> RtpPackets: ...

    def discard(self, leg_key: str) -> None: ...

    def location(self, leg_key: str) -> str: ...
