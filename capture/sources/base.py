"""What every packet source offers: batches, counters, close. Live rings and capture files alike.

:class:`PacketSource` is the one interface the packet loop sees:
:class:`capture.sources.interfaces.LiveSource`
(AF_PACKET rings), :class:`capture.sources.replay.ReplaySource` (a capture file, paced to its timestamps or
as fast as possible) both yield :class:`capture.model.packets.PacketBatch` es in capture order.

Sources that wait for packets (live, or replay at capture speed) yield an *empty* batch when nothing
arrived within their idle timeout, so the loop gets control back for timers and shutdown; consumers
treat a batch of length 0 as "nothing new, time passed".
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from callrec.capture.model.packets import BUFFER_PADDING, PacketBatch

_EMPTY_I64 = np.zeros(0, dtype=np.int64)


def empty_batch(first_number: int) -> PacketBatch:
    """A batch of no frames (what an idle source yields when its timeout passes)."""
    return PacketBatch(
        buffer=bytes(BUFFER_PADDING),
        offsets=_EMPTY_I64,
        caplens=_EMPTY_I64,
        ts_ns=_EMPTY_I64,
        linktypes=_EMPTY_I64,
        first_number=first_number,
    )


@dataclass(frozen=True, slots=True)
class InterfaceStats:
    """Counters of one interface (cumulative since the source opened).

    ``kernel_packets`` is what the kernel's ``PACKET_STATISTICS`` reports as ``tp_packets``: frames
    that passed the filter, *including* those dropped; ``kernel_drops`` (``tp_drops``) are frames
    lost because the ring was full. ``kernel_freezes`` counts the times the ring ran full.
    """

    name: str
    frames: int = 0  # frames delivered in batches
    bytes: int = 0  # captured bytes delivered
    blocks: int = 0  # ring blocks (live) or file chunks (replay) read
    kernel_packets: int = 0
    kernel_drops: int = 0
    kernel_freezes: int = 0


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Counters of a whole source: the sums over its interfaces, and each interface."""

    frames: int = 0
    bytes: int = 0
    kernel_packets: int = 0
    kernel_drops: int = 0
    interfaces: tuple[InterfaceStats, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, interfaces: tuple[InterfaceStats, ...]) -> SourceStats:
        return cls(
            frames=sum(i.frames for i in interfaces),
            bytes=sum(i.bytes for i in interfaces),
            kernel_packets=sum(i.kernel_packets for i in interfaces),
            kernel_drops=sum(i.kernel_drops for i in interfaces),
            interfaces=interfaces,
        )


class PacketSource(Protocol):
    """A source of packet batches: live interfaces or a capture file."""

    def batches(self) -> Iterator[PacketBatch]:
        """Batches in capture order until the source ends or :meth:`stop` is called; an empty batch
        means the source was idle for its timeout."""
        ...

    def stats(self) -> SourceStats:
        """Counters so far (live sources read the kernel's counters)."""
        ...

    def stop(self) -> None:
        """Make :meth:`batches` return at its next wake-up (safe from a signal handler)."""
        ...

    def close(self) -> None:
        """Release sockets, rings and files; :meth:`batches` must not be resumed afterwards."""
        ...
