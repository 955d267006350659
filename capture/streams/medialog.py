"""The tracker's pending media: a log of routed RTP with a leg column (:class:`MediaLog`), split into
per-leg spools (:class:`LegSpool`) when calls end or the log grows, and drained in leg order
(:class:`LegBlock`) for a spill round. Spilled chunks are referenced, not held
(:mod:`callrec.capture.model.spilled`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from callrec.capture.model.media import RtpPackets, gather_payloads, join_chunks, payload_rows
from callrec.capture.model.spilled import SpillRef, SpillRefs, SpillSink

I64 = npt.NDArray[np.int64]

# Rows of the stacked integer columns of :meth:`MediaLog.split`.
_TS, _SEQ, _RTP_TS, _SSRC, _PT, _MARKER, _LENGTHS, _STARTS = range(8)


@dataclass(slots=True)
class LegSpool:
    """Collects chunks of RTP columns for one leg; bounded by the call's lifetime, or, for a live
    capture, by :meth:`spill` (older chunks go to a :class:`~capture.streams.spill.SpillSink`, only their
    references stay). ``count`` and ``payload_bytes`` are totals; ``resident_bytes`` is what is in
    memory."""

    chunks: list[RtpPackets] = field(default_factory=list)
    count: int = 0
    payload_bytes: int = 0
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None
    resident_bytes: int = 0  # payload bytes of ``chunks`` (not spilled)
    spilled: SpillRefs = field(default_factory=SpillRefs)  # in append order, before ``chunks``
    sink: SpillSink | None = None
    leg_key: str = ""

    def append(self, chunk: RtpPackets) -> None:
        n = len(chunk)
        if n == 0:
            return
        self.chunks.append(chunk)
        self.count += n
        size = int(chunk.payload.shape[0])
        self.payload_bytes += size
        self.resident_bytes += size
        if self.first_ts_ns is None:
            self.first_ts_ns = int(chunk.ts_ns[0])
        self.last_ts_ns = int(chunk.ts_ns[-1])

    def add_spilled(
        self, sink: SpillSink, leg_key: str, ref: SpillRef, first_ts_ns: int, last_ts_ns: int
    ) -> None:
        """Count packets that went to ``sink`` straight from the media log (after every chunk in memory,
        which must have been spilled first: the spilled chunks come before the ones in memory)."""
        if self.chunks:
            raise ValueError("packets in memory would come after packets spilled later")
        if self.sink is not None and (sink is not self.sink or leg_key != self.leg_key):
            raise ValueError(f"leg spool already spilled to {self.leg_key!r} of another sink")
        self.spilled.append(ref)
        self.count += ref.packets
        self.payload_bytes += ref.payload_bytes
        if self.first_ts_ns is None:
            self.first_ts_ns = first_ts_ns
        self.last_ts_ns = last_ts_ns
        self.sink, self.leg_key = sink, leg_key

    def spill(self, sink: SpillSink, leg_key: str, keep_recent_ns: int) -> int:
        """Move the oldest chunks, those entirely older than the last ``keep_recent_ns`` of capture time,
        to ``sink`` as one chunk; returns the packets moved. An :class:`OSError` from the sink goes on to
        the caller and the chunks stay in memory (joined, so that the next try does not join again)."""
        if self.sink is not None and (sink is not self.sink or leg_key != self.leg_key):
            raise ValueError(f"leg spool already spilled to {self.leg_key!r} of another sink")
        if not self.chunks:
            return 0
        cutoff = max(int(c.ts_ns.max()) for c in self.chunks) - keep_recent_ns
        n = 0
        while n < len(self.chunks) and int(self.chunks[n].ts_ns.max()) < cutoff:
            n += 1
        if n == 0:
            return 0
        chunk = self.chunks[0] if n == 1 else join_chunks(self.chunks[:n])
        try:
            ref = sink.write(leg_key, chunk)
        except OSError:
            self.chunks[:n] = [chunk]
            raise
        del self.chunks[:n]
        self.spilled.append(ref)
        self.resident_bytes -= int(chunk.payload.shape[0])
        self.sink, self.leg_key = sink, leg_key
        return len(chunk)

    def packets(self) -> RtpPackets:
        """All packets in arrival (capture) order (spilled chunks read back: :class:`~capture.streams.spill.
        SpillError` or :class:`OSError` if the sink cannot)."""
        chunks = self.chunks
        if self.spilled and self.sink is not None:
            chunks = [self.sink.read(ref) for ref in self.spilled] + chunks
        if not chunks:
            return RtpPackets.empty()
        if len(chunks) == 1:
            return chunks[0]
        joined = join_chunks(chunks)
        if bool((np.diff(joined.ts_ns) < 0).any()):  # chunks adopted out of order (early media)
            joined = joined.select(np.argsort(joined.ts_ns, kind="stable"))
        return joined

    def release(self) -> None:
        """Forget the spilled chunks (once :meth:`packets` has read them): the sink discards them."""
        if self.sink is not None:
            self.sink.discard(self.leg_key)
        self.spilled.clear()
        self.sink = None

    def join(self) -> RtpPackets:
        """The chunks in memory concatenated as they were appended."""
        return join_chunks(self.chunks)


class MediaLog:
    """Routed packets not yet filed per leg: appended per segment with a leg-id column, and split
    into per-leg pieces rarely (one join and one sort for everything pending), so that per-leg
    overhead is paid per split, not per segment or batch."""

    def __init__(self) -> None:
        self._chunks: list[tuple[I64, RtpPackets]] = []
        self.count = 0
        self.payload_bytes = 0

    def append(self, legs: I64, packets: RtpPackets) -> None:
        self._chunks.append((legs, packets))
        self.count += len(packets)
        self.payload_bytes += int(packets.payload.shape[0])

    def split(self) -> list[tuple[int, RtpPackets]]:
        """Everything pending as ``(leg id, packets in arrival order)``, one piece per leg; empties
        the log. The whole log is put in leg order at once (:meth:`drain`); each leg then copies its
        own contiguous slice, so that no leg's piece keeps the others' memory alive."""
        block = self.drain()
        if block is None:
            return []
        return [(leg_id, block.piece(i)) for i, leg_id in enumerate(block.leg_ids)]

    def drain(self) -> LegBlock | None:
        """Everything pending in leg order (one stable sort, one gather per column and one of the
        payloads), for :meth:`split` or to be spilled leg by leg without a piece per leg; empties the
        log. None if it was empty."""
        if not self._chunks:
            return None
        chunks = [packets for _, packets in self._chunks]
        legs = np.concatenate([leg for leg, _ in self._chunks])
        self._chunks = []
        self.count = self.payload_bytes = 0
        order = _leg_order(legs)
        sorted_legs = legs[order]
        columns = _sorted_columns(chunks, order)
        joined = chunks[0].payload if len(chunks) == 1 else np.concatenate([c.payload for c in chunks])
        payload, offsets = _gather_in_order(joined, columns[_STARTS], columns[_LENGTHS])
        columns[_STARTS] = offsets  # now each payload's start in ``payload`` (leg order, contiguous per leg)
        bounds = np.flatnonzero(sorted_legs[1:] != sorted_legs[:-1]) + 1
        starts = np.concatenate(([0], bounds)).astype(np.int64)
        ends = np.append(bounds, sorted_legs.shape[0]).astype(np.int64)
        return LegBlock(sorted_legs[starts].tolist(), starts, ends, columns, payload)

    def take_legs(self, leg_ids: Iterable[int]) -> dict[int, RtpPackets]:
        """Copies of the pending packets of ``leg_ids`` (legs whose calls end now), each in arrival order,
        without splitting the whole log: the log is joined into one chunk (so the next time it is that
        chunk and what came since), then only those legs' rows are taken. Their rows stay in the log;
        the next :meth:`split` drops them with their legs. Cost: the rows pending, not the legs."""
        wanted = np.fromiter(leg_ids, dtype=np.int64)
        if not self._chunks or wanted.shape[0] == 0:
            return {}
        if len(self._chunks) > 1:
            legs = np.concatenate([leg for leg, _ in self._chunks])
            self._chunks = [(legs, join_chunks([packets for _, packets in self._chunks]))]
        legs, packets = self._chunks[0]
        rows = np.flatnonzero(np.isin(legs, wanted))
        if rows.shape[0] == 0:
            return {}
        rows = rows[np.argsort(legs[rows], kind="stable")]
        ids = legs[rows]
        bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        return {
            int(part_ids[0]): packets.take(part)
            for part, part_ids in zip(np.split(rows, bounds), np.split(ids, bounds), strict=True)
        }

    def take(self, leg_id: int) -> list[RtpPackets]:
        """Copies of one leg's pending packets (the log keeps its rows until the next split)."""
        out = []
        for legs, packets in self._chunks:
            rows = np.flatnonzero(legs == leg_id)
            if rows.shape[0]:
                out.append(packets.take(rows))
        return out


def _leg_order(legs: I64) -> I64:
    """Stable order of ``legs`` (a radix sort when the ids span less than 65536)."""
    if legs.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(legs.min()), int(legs.max())
    if lo >= 0 and hi - lo < 1 << 16:
        return np.argsort((legs - lo).astype(np.uint16), kind="stable")
    return np.argsort(legs, kind="stable")


def _sorted_columns(chunks: list[RtpPackets], order: I64) -> I64:
    """The integer columns of ``chunks`` joined, stacked (rows ``_TS`` .. ``_STARTS``) and put in
    ``order``; ``_STARTS`` is each payload's start in the chunks' payloads joined."""
    n = int(order.shape[0])
    joined = np.empty((8, n), dtype=np.int64)
    names = ("ts_ns", "seq", "rtp_ts", "ssrc", "payload_type", "marker", "payload_lengths")
    for row, name in enumerate(names):
        np.concatenate([getattr(c, name) for c in chunks], out=joined[row], casting="unsafe")
    shifts = np.cumsum([0] + [int(c.payload.shape[0]) for c in chunks[:-1]])
    np.concatenate([c.payload_offsets + s for c, s in zip(chunks, shifts, strict=True)], out=joined[_STARTS])
    return joined[:, order]


def _gather_in_order(
    buf: npt.NDArray[np.uint8], starts: I64, lengths: I64
) -> tuple[npt.NDArray[np.uint8], I64]:
    """Like :func:`gather_payloads`, but the ranges one after the other in row order whatever their
    lengths (gather_payloads groups them by length): each row's bytes at ``cumsum(lengths)``."""
    offsets = np.cumsum(lengths) - lengths
    n = int(lengths.shape[0])
    if n == 0 or bool((lengths == lengths[0]).all()):
        return gather_payloads(buf, starts, lengths)[0], offsets
    out = np.empty(int(lengths.sum()), dtype=np.uint8)
    for size in np.unique(lengths).tolist():
        if size == 0:
            continue
        rows = np.flatnonzero(lengths == size)
        data = payload_rows(buf, starts[rows], size)
        out[(offsets[rows][:, None] + np.arange(size)).reshape(-1)] = data.reshape(-1)
    return out, offsets


@dataclass(frozen=True, slots=True)
class LegBlock:
    """The media log in leg order: leg ``leg_ids[i]``'s packets are columns ``starts[i]:ends[i]`` of
    ``columns`` (rows ``_TS`` .. ``_LENGTHS``; ``_STARTS``: each payload's start in ``payload``), and
    their payloads one contiguous run of ``payload``."""

    leg_ids: list[int]
    starts: I64
    ends: I64
    columns: I64
    payload: npt.NDArray[np.uint8]

    def payload_span(self, i: int) -> tuple[int, int]:
        s, e = int(self.starts[i]), int(self.ends[i])
        if e == s:
            return 0, 0
        return int(self.columns[_STARTS, s]), int(
            self.columns[_STARTS, e - 1] + self.columns[_LENGTHS, e - 1]
        )

    def piece(self, i: int) -> RtpPackets:
        """Leg ``i``'s packets as arrays of its own (nothing of the other legs' is kept alive)."""
        s, e = int(self.starts[i]), int(self.ends[i])
        own = np.array(self.columns[:_STARTS, s:e])  # rows _TS .. _LENGTHS, one block
        first, last = self.payload_span(i)
        return RtpPackets(
            own[_TS],
            own[_SEQ],
            own[_RTP_TS],
            own[_SSRC],
            own[_PT],
            own[_MARKER] != 0,
            self.payload[first:last].copy(),
            self.columns[_STARTS, s:e] - first,
            own[_LENGTHS],
        )
