"""Value types that carry packets through the capture path in batches.

Per-packet Python objects are what makes a capture path slow, so packets travel as columns
(numpy arrays) over one shared byte buffer. A batch is processed and then dropped: whatever
must outlive it (RTP payloads of a call) is copied out.

Endpoints (address + port) are identified by a 64-bit key, :func:`endpoint_key`. For IPv4 it
is exact (``address << 16 | port``); for IPv6 it is a 63-bit mix of the address and port
with the top bit set, so the two families never collide and two IPv6 endpoints collide with
probability about 2**-63 per pair.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Padding after the last frame of a batch buffer so that fixed-width row gathers
# (numpy sliding windows over the buffer) never run past its end.
BUFFER_PADDING = 128

# Link-layer types (LINKTYPE_* values of pcap/pcapng).
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family in host byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_LOOP = 108  # OpenBSD loopback: address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

IPV4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"

_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_TOP_BIT = np.uint64(1 << 63)


@dataclass(frozen=True, slots=True)
class PacketBatch:
    """Frames as read from a capture source, in capture order.

    ``buffer`` holds the frames at ``offsets`` (``caplens`` bytes each, as captured) followed
    by at least :data:`BUFFER_PADDING` bytes. ``linktypes`` gives each frame's link type
    (pcapng files may mix interfaces). ``first_number`` is the 1-based number of the batch's
    first frame within its source, as Wireshark numbers frames.
    """

    buffer: bytes
    offsets: npt.NDArray[np.int64]
    caplens: npt.NDArray[np.int64]
    ts_ns: npt.NDArray[np.int64]
    linktypes: npt.NDArray[np.int64]
    first_number: int = 1

    def __len__(self) -> int:
        return int(self.offsets.shape[0])


@dataclass(frozen=True, slots=True)
class DatagramBatch:
    """UDP datagrams (after VLAN, IP and fragment reassembly), one row each, in capture order.

    ``buffer`` holds the UDP payloads at ``payload_offsets`` / ``payload_lengths``, followed by at
    least :data:`BUFFER_PADDING` bytes. Addresses are 16 bytes (IPv4 as ``::ffff:a.b.c.d``).
    ``vlan`` is the outermost VLAN id or -1. ``numbers`` are the frame numbers in the source
    (for a reassembled datagram, the frame that completed it).
    """

    buffer: bytes
    ts_ns: npt.NDArray[np.int64]
    src_addr: npt.NDArray[np.uint8]  # shape (n, 16)
    dst_addr: npt.NDArray[np.uint8]  # shape (n, 16)
    src_port: npt.NDArray[np.int64]
    dst_port: npt.NDArray[np.int64]
    payload_offsets: npt.NDArray[np.int64]
    payload_lengths: npt.NDArray[np.int64]
    vlan: npt.NDArray[np.int64]
    numbers: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])

    def payload(self, i: int) -> bytes:
        start = int(self.payload_offsets[i])
        return self.buffer[start : start + int(self.payload_lengths[i])]


def endpoint_keys(addr: npt.NDArray[np.uint8], port: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
    """64-bit endpoint keys for rows of 16-byte addresses and ports (see module docstring)."""
    n = addr.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    a = np.ascontiguousarray(addr, dtype=np.uint8)
    be = a.view(">u4").reshape(n, 4).astype(np.uint64)
    p = np.asarray(port, dtype=np.uint64)
    v4 = (be[:, 0] == 0) & (be[:, 1] == 0) & (be[:, 2] == 0xFFFF)
    keys = (be[:, 3] << np.uint64(16)) | p
    if not bool(v4.all()):
        hi = (be[:, 0] << np.uint64(32)) | be[:, 1]
        lo = (be[:, 2] << np.uint64(32)) | be[:, 3]
        with np.errstate(over="ignore"):
            h = (hi * _MIX1) ^ (lo + (p << np.uint64(48)))
            h ^= h >> np.uint64(31)
            h *= _MIX2
            h ^= h >> np.uint64(29)
        keys = np.where(v4, keys, h | _TOP_BIT)
    return keys


def address_bytes(address: str) -> bytes:
    """16-byte form of an IPv4 or IPv6 address string (IPv4 mapped into ``::ffff:0:0/96``)."""
    ip = ipaddress.ip_address(address)
    if ip.version == 4:
        return IPV4_MAPPED_PREFIX + ip.packed
    return ip.packed


def endpoint_key(address: str, port: int) -> int:
    """The key of one endpoint given as text (as it appears in SDP)."""
    addr = np.frombuffer(address_bytes(address), dtype=np.uint8).reshape(1, 16)
    return int(endpoint_keys(addr, np.array([port], dtype=np.int64))[0])


def address_text(addr16: bytes) -> str:
    """Text form of a 16-byte address (IPv4-mapped addresses shown as IPv4)."""
    if addr16[:12] == IPV4_MAPPED_PREFIX:
        return str(ipaddress.IPv4Address(addr16[12:]))
    return str(ipaddress.IPv6Address(addr16))
