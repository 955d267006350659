"""Classic pcap and pcapng writers (own code: the bytes depend on nothing but the frames)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

SNAPLEN = 262144


@dataclass(order=True)
class Frame:
    ts_ns: int
    order: int
    data: bytes = field(compare=False)
    iface: int = field(default=0, compare=False)
    orig_len: int | None = field(default=None, compare=False)

    @property
    def wire_len(self) -> int:
        return len(self.data) if self.orig_len is None else self.orig_len


def write_pcap(path: Path, frames: list[Frame], linktype: int) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, linktype)]
    for f in frames:
        sec, nsec = divmod(f.ts_ns, 1_000_000_000)
        if nsec % 1000:
            raise ValueError("classic pcap holds microseconds only")
        out.append(struct.pack("<IIII", sec, nsec // 1000, len(f.data), f.wire_len))
        out.append(f.data)
    path.write_bytes(b"".join(out))


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _pcapng_options(*options: tuple[int, bytes]) -> bytes:
    """The options followed by opt_endofopt."""
    out = b""
    for code, value in (*options, (0, b"")):
        out += struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)
    return out


def write_pcapng(path: Path, frames: list[Frame], interfaces: list[tuple[int, int, str]]) -> None:
    """interfaces: (linktype, tsresol as a power of ten, name), indexed by Frame.iface."""
    shb_opts = _pcapng_options((4, b"callrec pcaps/make_fixtures.py"))
    blocks = [_pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_opts)]
    for linktype, tsresol, name in interfaces:
        opts = _pcapng_options((2, name.encode()), (9, bytes([tsresol])))
        blocks.append(_pcapng_block(1, struct.pack("<HHI", linktype, 0, SNAPLEN) + opts))
    for f in frames:
        tsresol = interfaces[f.iface][1]
        units, rem = divmod(f.ts_ns * 10**tsresol, 1_000_000_000)
        if rem:
            raise ValueError(f"timestamp {f.ts_ns} does not fit interface {f.iface}'s resolution")
        header = struct.pack("<IIIII", f.iface, units >> 32, units & 0xFFFFFFFF, len(f.data), f.wire_len)
        blocks.append(_pcapng_block(6, header + f.data))
    path.write_bytes(b"".join(blocks))
