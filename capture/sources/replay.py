"""A capture file as a packet source: as fast as possible, or paced to its timestamps.

:class:`ReplaySource` wraps :func:`capture.sources.capture_file.open_capture` behind the same interface as the
live source (:class:`capture.sources.base.PacketSource`), so the packet loop, and its tests, run unchanged on
a file. With ``speed`` > 0 the frames come out when they are due, ``speed`` times as fast as they
were captured (1.0: capture speed): a file batch is cut into slices of at most ``slice_s`` of capture
time, each handed out when its last frame is due, and a gap longer than ``idle_timeout_s`` (a call on
hold) yields empty batches as an idle live line does. ``speed`` 0 hands out the file's batches at once.

Slices share the file batch's buffer (no copy); ``first_number`` continues across slices.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

import numpy as np

from callrec.capture.model.packets import PacketBatch
from callrec.capture.sources.base import InterfaceStats, SourceStats, empty_batch
from callrec.capture.sources.capture_file import DEFAULT_BATCH_BYTES, open_capture

_NS = 1_000_000_000


def slice_batch(batch: PacketBatch, start: int, stop: int) -> PacketBatch:
    """Frames ``start:stop`` of ``batch`` (same buffer)."""
    return PacketBatch(
        buffer=batch.buffer,
        offsets=batch.offsets[start:stop],
        caplens=batch.caplens[start:stop],
        ts_ns=batch.ts_ns[start:stop],
        linktypes=batch.linktypes[start:stop],
        first_number=batch.first_number + start,
    )


class ReplaySource:
    """Frames of a pcap/pcapng file (see the module docstring). ``clock`` and ``sleep`` are
    injectable for tests (defaults: ``time.monotonic`` and ``time.sleep``)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        speed: float = 0.0,
        idle_timeout_s: float = 0.2,
        slice_s: float = 0.01,
        batch_bytes: int = DEFAULT_BATCH_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed < 0:
            raise ValueError(f"replay speed must be >= 0, not {speed}")
        self.path = os.fspath(path)
        self.speed = speed
        self.idle_timeout_s = idle_timeout_s
        self.slice_ns = max(1, int(slice_s * _NS))
        self._clock = clock
        self._sleep = sleep
        self._reader = open_capture(self.path, batch_bytes)
        self._stopped = False
        self._frames = 0
        self._bytes = 0
        self._chunks = 0
        self._origin: tuple[float, int] | None = None  # (wall clock, capture ts) of the first frame

    @property
    def linktypes(self) -> set[int]:
        return self._reader.linktypes

    def batches(self) -> Iterator[PacketBatch]:
        """The file's frames, paced when ``speed`` > 0; ends at the end of the file or on :meth:`stop`."""
        for batch in self._reader.batches():
            self._chunks += 1
            if self.speed == 0:
                if self._stopped:
                    return
                self._count(batch)
                yield batch
                continue
            if self._origin is None and len(batch):
                self._origin = (self._clock(), int(batch.ts_ns[0]))
            for piece in self._slices(batch):
                yield from self._wait(int(piece.ts_ns[-1]), piece.first_number)
                if self._stopped:
                    return
                self._count(piece)
                yield piece

    def _slices(self, batch: PacketBatch) -> Iterator[PacketBatch]:
        ts = batch.ts_ns
        n = len(batch)
        start = 0
        while start < n:
            limit = int(ts[start]) + self.slice_ns
            stop = start + max(1, int(np.searchsorted(ts[start:], limit, side="right")))
            yield slice_batch(batch, start, stop)
            start = stop

    def _wait(self, ts_ns: int, number: int) -> Iterator[PacketBatch]:
        """Sleep until the frame captured at ``ts_ns`` is due; an empty batch per idle timeout."""
        wall0, ts0 = self._origin or (self._clock(), ts_ns)
        due = wall0 + (ts_ns - ts0) / _NS / self.speed
        while not self._stopped:
            left = due - self._clock()
            if left <= 0:
                return
            if left > self.idle_timeout_s:
                self._sleep(self.idle_timeout_s)
                yield empty_batch(number)
            else:
                self._sleep(left)

    def _count(self, batch: PacketBatch) -> None:
        self._frames += len(batch)
        self._bytes += int(batch.caplens.sum())

    def stats(self) -> SourceStats:
        one = InterfaceStats(name=self.path, frames=self._frames, bytes=self._bytes, blocks=self._chunks)
        return SourceStats.of((one,))

    def stop(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self._stopped = True
        self._reader.close()

    def __enter__(self) -> ReplaySource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
