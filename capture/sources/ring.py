"""One AF_PACKET socket with a TPACKET_V3 receive ring, read one block at a time as a PacketBatch.

Standard library only (``socket``, ``mmap``, ``struct``) plus numpy; ctypes only holds the filter.
Layouts and constants are those of ``<linux/if_packet.h>``:

- the ring is ``tp_block_nr`` blocks of ``tp_block_size`` bytes (``struct tpacket_req3``). The kernel
  fills a block with packets and hands it over (``block_status`` gets ``TP_STATUS_USER``) when it is
  full or ``tp_retire_blk_tov`` ms after its first packet; user space gives it back by writing
  ``TP_STATUS_KERNEL``. Blocks are used in order, so the reader only looks at the next one.
- a block starts with ``struct tpacket_block_desc`` (version, offset_to_priv, then
  ``tpacket_hdr_v1``: block_status @8, num_pkts @12, offset_to_first_pkt @16, blk_len @20 (bytes used
  from the block start), seq_num @24, first/last timestamps); packets follow as a chain of
  ``struct tpacket3_hdr`` (48 bytes: tp_next_offset @0, tp_sec @4, tp_nsec @8, tp_snaplen @12, tp_len
  @16, tp_status @20, tp_mac @24 (u16), tp_net @26, hv1: tp_rxhash @28, tp_vlan_tci @32, tp_vlan_tpid
  @36), each frame at ``tp_mac`` bytes from its header.

A block becomes a batch with one copy: the used part of the block (headers included) is the batch
buffer, and frame offsets point past the headers, as :mod:`capture.sources.capture_file` does with record
headers. The kernel removes the outer VLAN tag of received frames and reports it in ``tp_vlan_tci``
(``TP_STATUS_VLAN_VALID``; the TPID in ``tp_vlan_tpid`` with ``TP_STATUS_VLAN_TPID_VALID``): the tag is
put back into the copy (the 12 MAC bytes move 4 bytes down into the header gap, the tag follows), so
the frame decoder sees the frame as it was on the wire.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.gather import row_view
from callrec.capture.model.packets import BUFFER_PADDING, LINKTYPE_ETHERNET, LINKTYPE_RAW, PacketBatch
from callrec.capture.sources.bpf import FilterProgram

I64 = npt.NDArray[np.int64]

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
SO_ATTACH_FILTER = 26
SIOCGIFHWADDR = 0x8927
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
ETH_P_ALL = 3

TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6

FANOUT_MODES = {"hash": 0, "lb": 1, "cpu": 2, "rollover": 3, "random": 4, "queue": 5}
PACKET_FANOUT_FLAG_ROLLOVER = 0x1000
PACKET_FANOUT_FLAG_DEFRAG = 0x8000

# ARPHRD_* (the interface's hardware type) to the link type of its frames on a SOCK_RAW socket.
_LINKTYPES = {1: LINKTYPE_ETHERNET, 772: LINKTYPE_ETHERNET, 519: LINKTYPE_RAW, 0xFFFE: LINKTYPE_RAW}

_HDR = 48  # sizeof(struct tpacket3_hdr)
_VLAN = 4
_PAD = bytes(BUFFER_PADDING)
_U32 = struct.Struct("=I")
_BLOCK = struct.Struct("=III")  # block_status, num_pkts, offset_to_first_pkt (from byte 8)
_BLOCK_LEN = struct.Struct("=I")
_MAC12 = np.arange(12, dtype=np.int64)
_TAG4 = np.arange(4, dtype=np.int64)


class CaptureSetupError(OSError):
    """A live capture that cannot start: no such interface, no permission, a ring the kernel refuses."""


@dataclass(frozen=True, slots=True)
class RingConfig:
    """Ring geometry and socket options of one interface's capture socket.

    ``block_size`` must be a multiple of the page size and hold the largest frame (with GRO, 64 KiB);
    the ring takes ``block_size * block_count`` bytes of locked kernel memory. ``block_timeout_ms``
    bounds how long a packet waits in a block that is not full. ``fanout`` joins a fanout group
    (``(group_id, mode)``, mode one of :data:`FANOUT_MODES`) so that several sockets, typically in
    several processes, share the interface's packets.
    """

    block_size: int = 1 << 20
    block_count: int = 32
    block_timeout_ms: int = 10
    promiscuous: bool = True
    ignore_outgoing: bool = False
    fanout: tuple[int, str] | None = None
    fanout_defrag: bool = False


@dataclass(slots=True)
class RingCounters:
    frames: int = 0
    bytes: int = 0
    blocks: int = 0
    kernel_packets: int = 0
    kernel_drops: int = 0
    kernel_freezes: int = 0


class Ring:
    """The capture socket of one interface and its mapped ring; ``program`` gives the filter for the
    interface's link type (None: no filter)."""

    def __init__(
        self, ifname: str, config: RingConfig, program: Callable[[int], FilterProgram | None]
    ) -> None:
        self.ifname = ifname
        self.config = config
        self.counters = RingCounters()
        page = mmap.PAGESIZE
        if config.block_size <= 0 or config.block_size % page:
            raise CaptureSetupError(f"{ifname}: block size {config.block_size} is not a multiple of {page}")
        if config.block_count < 1:
            raise CaptureSetupError(f"{ifname}: block count {config.block_count} must be at least 1")
        self._block = 0
        self._mm: mmap.mmap | None = None
        try:
            # Protocol 0: nothing is received until bind(), after the filter is attached.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise CaptureSetupError(f"{ifname}: live capture needs root or CAP_NET_RAW ({exc})") from exc
        try:
            self.linktype = interface_linktype(self.sock, ifname)
            self.ifindex = socket.if_nametoindex(ifname)
            self._setup(program(self.linktype))
        except BaseException:
            self.close()
            raise

    def _setup(self, program: FilterProgram | None) -> None:
        cfg = self.config
        s = self.sock
        try:
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            if program is not None:
                s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program.fprog)
            frame_size = 2048
            frames = cfg.block_size // frame_size * cfg.block_count
            req = struct.pack(
                "=7I", cfg.block_size, cfg.block_count, frame_size, frames, cfg.block_timeout_ms, 0, 0
            )
            s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
        except OSError as exc:
            raise CaptureSetupError(f"{self.ifname}: the kernel refused the capture ring ({exc})") from exc
        size = cfg.block_size * cfg.block_count
        self._mm = mmap.mmap(s.fileno(), size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        if cfg.ignore_outgoing:
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        try:
            s.bind((self.ifname, ETH_P_ALL))
        except OSError as exc:
            raise CaptureSetupError(f"{self.ifname}: cannot bind the capture socket ({exc})") from exc
        if cfg.promiscuous:
            mreq = struct.pack("=iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        if cfg.fanout is not None:
            group, mode = cfg.fanout
            if mode not in FANOUT_MODES:
                modes = ", ".join(sorted(FANOUT_MODES))
                raise CaptureSetupError(f"{self.ifname}: fanout mode {mode!r} is not one of {modes}")
            flags = PACKET_FANOUT_FLAG_DEFRAG if cfg.fanout_defrag else 0
            value = (group & 0xFFFF) | ((FANOUT_MODES[mode] | flags) << 16)
            try:
                s.setsockopt(SOL_PACKET, PACKET_FANOUT, value)
            except OSError as exc:
                raise CaptureSetupError(f"{self.ifname}: cannot join fanout group {group} ({exc})") from exc
        s.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def ready(self) -> bool:
        """Whether the next block has been handed to user space."""
        mm = self._mm
        if mm is None:
            return False
        return bool(_U32.unpack_from(mm, self._block * self.config.block_size + 8)[0] & TP_STATUS_USER)

    def read_block(self, first_number: int) -> PacketBatch | None:
        """The next block as a batch (and the block given back to the kernel), or None if not ready."""
        mm = self._mm
        if mm is None:
            return None
        base = self._block * self.config.block_size
        status, count, first = _BLOCK.unpack_from(mm, base + 8)
        if not status & TP_STATUS_USER:
            return None
        try:
            used = _BLOCK_LEN.unpack_from(mm, base + 20)[0]
            used = min(max(used, first), self.config.block_size)
            starts = self._walk(mm, base, first, count, used)
            view = memoryview(mm)
            try:
                buffer = b"".join((view[base : base + used], _PAD))
            finally:
                view.release()
        finally:
            _U32.pack_into(mm, base + 8, TP_STATUS_KERNEL)
            self._block = (self._block + 1) % self.config.block_count
        batch = self._batch(buffer, starts, first_number)
        c = self.counters
        c.blocks += 1
        c.frames += len(batch)
        c.bytes += int(batch.caplens.sum())
        return batch

    @staticmethod
    def _walk(mm: mmap.mmap, base: int, first: int, count: int, used: int) -> list[int]:
        """Header offsets (from the block start) of the block's packets, following tp_next_offset."""
        at = _U32.unpack_from
        starts = []
        off = first
        limit = used - _HDR
        for _ in range(count):
            if off > limit:
                break
            starts.append(off)
            nxt = at(mm, base + off)[0]
            if nxt == 0:
                break
            off += nxt
        return starts

    def _batch(self, buffer: bytes, starts: list[int], first_number: int) -> PacketBatch:
        n = len(starts)
        pos = np.array(starts, dtype=np.int64)
        arr = np.frombuffer(buffer, dtype=np.uint8)
        rows = row_view(arr, _HDR)[pos]
        words = rows.view(np.uint32)  # native byte order, as the kernel writes them
        halves = rows.view(np.uint16)
        ts_ns = words[:, 1].astype(np.int64) * 1_000_000_000 + words[:, 2].astype(np.int64)
        caplens = words[:, 3].astype(np.int64)
        status = words[:, 5]
        offsets = pos + halves[:, 12].astype(np.int64)
        linktypes = np.full(n, self.linktype, dtype=np.int64)
        tagged = np.flatnonzero(status & TP_STATUS_VLAN_VALID)
        if tagged.shape[0] and self.linktype == LINKTYPE_ETHERNET:
            buffer = self._retag(buffer, offsets, caplens, rows, status, tagged)
        return PacketBatch(
            buffer=buffer,
            offsets=offsets,
            caplens=caplens,
            ts_ns=ts_ns,
            linktypes=linktypes,
            first_number=first_number,
        )

    @staticmethod
    def _retag(
        buffer: bytes,
        offsets: I64,
        caplens: I64,
        rows: npt.NDArray[np.uint8],
        status: npt.NDArray[np.uint32],
        tagged: I64,
    ) -> bytes:
        """Put the outer VLAN tag the kernel removed back in front of the EtherType (in place of the
        4 header bytes before the frame); ``offsets`` and ``caplens`` of those rows change."""
        words = rows[tagged].view(np.uint32)
        tci = (words[:, 8] & 0xFFFF).astype(np.uint16)
        tpid = np.where(
            status[tagged] & TP_STATUS_VLAN_TPID_VALID, rows[tagged].view(np.uint16)[:, 18], 0x8100
        ).astype(np.uint16)
        tpid = np.where(tpid == 0, np.uint16(0x8100), tpid)
        mac = offsets[tagged]
        out = bytearray(buffer)
        arr = np.frombuffer(out, dtype=np.uint8)
        arr[(mac - _VLAN)[:, None] + _MAC12] = arr[mac[:, None] + _MAC12]
        tag = np.empty((tagged.shape[0], 4), dtype=np.uint8)
        tag[:, 0:2] = tpid.astype(">u2").view(np.uint8).reshape(-1, 2)
        tag[:, 2:4] = tci.astype(">u2").view(np.uint8).reshape(-1, 2)
        arr[(mac + 12 - _VLAN)[:, None] + _TAG4] = tag
        offsets[tagged] -= _VLAN
        caplens[tagged] += _VLAN
        return bytes(out)

    def kernel_stats(self) -> RingCounters:
        """Read ``PACKET_STATISTICS`` (which the kernel resets on every read) into the cumulative
        counters, and return them."""
        if self._mm is not None:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
            packets, drops, freezes = struct.unpack("=3I", raw)
            c = self.counters
            c.kernel_packets += packets
            c.kernel_drops += drops
            c.kernel_freezes += freezes
        return self.counters

    def close(self) -> None:
        if self._mm is not None:
            with contextlib.suppress(OSError):
                self.kernel_stats()
            self._mm.close()
            self._mm = None
        self.sock.close()


def interface_linktype(sock: socket.socket, ifname: str) -> int:
    """The link type of the frames a SOCK_RAW packet socket reads on ``ifname``: from the ARPHRD type
    (``SIOCGIFHWADDR``, asked through ``sock`` so it is answered in the socket's network namespace)."""
    try:
        got = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, struct.pack("16s16x", ifname.encode()))
    except OSError as exc:
        raise CaptureSetupError(f"{ifname}: no such network interface ({exc.strerror})") from exc
    hatype = struct.unpack_from("=H", got, 16)[0]
    if hatype not in _LINKTYPES:
        raise CaptureSetupError(f"{ifname}: hardware type {hatype} is not supported (Ethernet or raw IP)")
    return _LINKTYPES[hatype]


def interface_names() -> list[str]:
    """Network interfaces of the calling thread's network namespace."""
    return sorted(name for _, name in socket.if_nameindex())
