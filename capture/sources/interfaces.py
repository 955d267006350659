"""Live capture on Linux: AF_PACKET sockets with TPACKET_V3 rings, one per interface, as PacketBatches.

::

    source = LiveSource(["eth1", "eth2"], LiveConfig(buffer_bytes=64 << 20))
    decoder, tracker = FrameDecoder(), CallTracker()
    for batch in source.batches():          # an empty batch every ``idle_timeout_s`` on a quiet line
        calls = tracker.feed(decoder.decode(batch))
        ...
        if shutting_down:
            source.stop()                   # batches() returns at its next wake-up
    source.close()

Each interface gets its own socket and ring (:class:`capture.sources.ring.Ring`); the kernel runs the BPF
filter (:mod:`capture.sources.bpf`; :data:`capture.sources.bpf.DEFAULT_FILTER` unless another expression
is given)
before a frame takes ring space, so the filter is also what keeps the drop counters at zero on a busy
mirror port. One ring block becomes one :class:`PacketBatch` (the block copied once; outer VLAN tags
put back), so :class:`capture.frames.decoder.FrameDecoder` and the tracker work as on capture files.

Waiting is ``poll(2)`` over every ring's socket with a timeout: :meth:`LiveSource.poll` returns the
blocks ready (an empty list when the line was idle for ``timeout_s``), :meth:`LiveSource.batches`
yields them and an empty batch per idle timeout, until :meth:`LiveSource.stop`.

Several interfaces: blocks are taken round-robin, one per ready ring per round, so batches from
different interfaces interleave within about one block's worth of time (``block_timeout_ms`` at low
rates); the tracker tolerates that (RTP seen shortly before its SDP is kept, see
``TrackerConfig.orphan_window_s``).

Fanout (``LiveConfig.fanout = (group_id, "hash")``): sockets that join the same group on the same
interface share its packets, by flow hash, so several worker processes can each run a source. The
flow hash keeps a 5-tuple (and all fragments of a datagram: the kernel hashes fragments by addresses
only) in one worker, but a call's SIP and its RTP are different flows: whatever runs behind fanout
workers must bring a call's signalling and media together again.

Counters: :meth:`LiveSource.stats` reads ``PACKET_STATISTICS`` (the kernel resets it on every read;
the source keeps the cumulative sums) and reports frames/bytes delivered per interface.
"""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from callrec.capture.model.packets import PacketBatch
from callrec.capture.sources.base import InterfaceStats, SourceStats, empty_batch
from callrec.capture.sources.bpf import (
    DEFAULT_FILTER,
    DEFAULT_SNAPLEN,
    FilterProgram,
    accept_all,
    compile_filter,
)
from callrec.capture.sources.ring import FANOUT_MODES, CaptureSetupError, Ring, RingConfig

__all__ = ["CaptureSetupError", "LiveConfig", "LiveSource", "FANOUT_MODES"]

_POLL_MASK = select.POLLIN | select.POLLERR | select.POLLPRI


@dataclass(frozen=True, slots=True)
class LiveConfig:
    """Settings of a live source (the same for each of its interfaces).

    ``buffer_bytes`` is the ring size per interface, rounded down to whole blocks of ``block_bytes``
    (at least 2). ``filter`` is a tcpdump-style expression (``None``: keep every frame). ``fanout`` is
    ``(group_id, mode)`` with mode one of ``hash``, ``lb``, ``cpu``, ``rollover``, ``random``,
    ``queue``; ``fanout_defrag`` asks the kernel to reassemble IP fragments before hashing (the
    worker then receives the reassembled datagram as one frame).
    """

    buffer_bytes: int = 32 << 20
    block_bytes: int = 1 << 20
    block_timeout_ms: int = 10
    idle_timeout_s: float = 0.2
    promiscuous: bool = True
    filter: str | None = DEFAULT_FILTER
    snaplen: int = DEFAULT_SNAPLEN
    ignore_outgoing: bool = False
    fanout: tuple[int, str] | None = None
    fanout_defrag: bool = False

    def ring_config(self) -> RingConfig:
        blocks = max(2, self.buffer_bytes // self.block_bytes)
        return RingConfig(
            block_size=self.block_bytes,
            block_count=blocks,
            block_timeout_ms=self.block_timeout_ms,
            promiscuous=self.promiscuous,
            ignore_outgoing=self.ignore_outgoing,
            fanout=self.fanout,
            fanout_defrag=self.fanout_defrag,
        )


class LiveSource:
    """Live frames from one or more interfaces (see the module docstring)."""

    def __init__(self, interfaces: str | Sequence[str], config: LiveConfig | None = None) -> None:
        names = [interfaces] if isinstance(interfaces, str) else list(interfaces)
        if not names:
            raise CaptureSetupError("live capture: no interface given")
        if len(set(names)) != len(names):
            raise CaptureSetupError(f"live capture: interface listed twice in {names}")
        self.config = config or LiveConfig()
        self.interfaces = names
        self._programs: dict[int, FilterProgram] = {}
        self._rings: list[Ring] = []
        self._final: tuple[InterfaceStats, ...] = ()  # the counters at close()
        self._stopped = False
        self._next_number = 1
        self._poller = select.poll()
        ring_config = self.config.ring_config()
        try:
            for name in names:
                ring = Ring(name, ring_config, self._program)
                self._rings.append(ring)
                self._poller.register(ring.fileno(), _POLL_MASK)
        except BaseException:
            self.close()
            raise

    def _program(self, linktype: int) -> FilterProgram | None:
        if linktype not in self._programs:
            expr = self.config.filter
            snaplen = self.config.snaplen
            code = accept_all(snaplen) if expr is None else compile_filter(expr, linktype, snaplen)
            self._programs[linktype] = FilterProgram(code)
        return self._programs[linktype]

    @property
    def linktypes(self) -> set[int]:
        return {r.linktype for r in self._rings}

    def _take(self) -> list[PacketBatch]:
        """Every block that is ready now, round-robin over the rings."""
        out: list[PacketBatch] = []
        while True:
            took = False
            for ring in self._rings:
                batch = ring.read_block(self._next_number)
                if batch is not None:
                    self._next_number += len(batch)
                    out.append(batch)
                    took = True
            if not took or len(out) >= 4 * len(self._rings):
                return out

    def poll(self, timeout_s: float | None = None) -> list[PacketBatch]:
        """The blocks ready within ``timeout_s`` (default ``idle_timeout_s``); [] if none came."""
        if not self._rings:
            return []
        out = self._take()
        if out:
            return out
        timeout = self.config.idle_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + max(0.0, timeout)
        while not self._stopped:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self._poller.poll(max(1, int(left * 1000 + 0.999)))
            out = self._take()
            if out:
                return out
        return []

    def batches(self) -> Iterator[PacketBatch]:
        """Batches as blocks arrive, an empty batch per idle timeout, until :meth:`stop`."""
        self._stopped = False
        while not self._stopped and self._rings:
            got = self.poll()
            if got:
                yield from got
            elif not self._stopped:
                yield empty_batch(self._next_number)

    def stop(self) -> None:
        self._stopped = True

    def stats(self) -> SourceStats:
        if not self._rings:
            return SourceStats.of(self._final)
        per = []
        for ring in self._rings:
            c = ring.kernel_stats()
            per.append(
                InterfaceStats(
                    name=ring.ifname,
                    frames=c.frames,
                    bytes=c.bytes,
                    blocks=c.blocks,
                    kernel_packets=c.kernel_packets,
                    kernel_drops=c.kernel_drops,
                    kernel_freezes=c.kernel_freezes,
                )
            )
        return SourceStats.of(tuple(per))

    def close(self) -> None:
        self._stopped = True
        if self._rings:
            self._final = self.stats().interfaces
        rings, self._rings = self._rings, []
        for ring in rings:
            with contextlib.suppress(KeyError, ValueError):
                self._poller.unregister(ring.fileno())
            ring.close()

    def __enter__(self) -> LiveSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
