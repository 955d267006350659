"""pcapng blocks for :mod:`capture.sources.capture_file`: sections, interfaces, packet blocks.

Quirks, from the pcapng specification (draft-ietf-opsawg-pcapng):

- A file is one or more sections, each starting with a Section Header Block whose byte-order
  magic (0x1a2b3c4d) sets the byte order of everything up to the next section, which may differ.
  The SHB type 0x0a0d0d0a reads the same in both orders. Interface ids restart in each section.
- An Interface Description Block gives the link type, the snap length and the timestamp units:
  ``if_tsresol`` (option 9) is 10**-n seconds, or 2**-n when its top bit is set (default 10**-6);
  ``if_tsoffset`` (option 14) is a signed number of seconds to add to every timestamp.
- Enhanced Packet Blocks (type 6) carry interface id, a 64-bit timestamp split in two 32-bit
  halves and the captured length. Simple Packet Blocks (type 3) have no interface (interface 0)
  and no timestamp: they get the previous packet's. Their captured length is the original length
  cut to the block and to interface 0's snap length. Obsolete Packet Blocks (type 2) are an EPB
  with a 16-bit interface id. Every other block type is skipped.

EPBs, the only common packet block, are walked with one ``unpack_from`` each; their headers are
then gathered as numpy rows and converted for the whole batch. Other blocks go one by one.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.errors import ParseError, Truncated, UnsupportedFormat
from callrec.capture.sources.walk import I64, MAX_CAPLEN, Walk, header_rows

# Blocks other than packet blocks are small; anything above this is corruption.
MAX_BLOCK = 16 << 20

SHB = 0x0A0D0D0A
IDB = 1
OPB = 2
SPB = 3
EPB = 6
_BOM_LE = b"\x4d\x3c\x2b\x1a"
_BOM_BE = b"\x1a\x2b\x3c\x4d"
_MIN_LEN = {SHB: 28, IDB: 20, OPB: 32, SPB: 16, EPB: 32}
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14
_NS = 1_000_000_000
_MAX_TSOFFSET = 1 << 33  # seconds; ~272 years, keeps ns in int64


@dataclass(frozen=True, slots=True)
class Interface:
    """One IDB: link type, snap length (0: none), ticks per second and offset added (ns)."""

    linktype: int
    snaplen: int
    units: int
    offset_ns: int


def ticks_to_ns(ticks: npt.NDArray[np.uint64], units: int, offset_ns: int = 0) -> I64:
    """Convert timestamps in ``1/units`` seconds to integer ns (floor).

    Exact for every decimal resolution and for binary ones down to 2**-33 s; finer binary
    resolutions may come out one nanosecond low.
    """
    if units == _NS:
        ns = ticks.astype(np.int64)
    elif _NS % units == 0:
        ns = ticks.astype(np.int64) * (_NS // units)
    else:
        u = np.uint64(units)
        sec = (ticks // u).astype(np.int64)
        frac = ticks % u
        if units <= 1 << 33:
            sub = frac * np.uint64(_NS) // u
        elif units % _NS == 0:
            sub = frac // np.uint64(units // _NS)
        else:
            shift = units.bit_length() - 34
            sub = (frac >> np.uint64(shift)) * np.uint64(_NS) // np.uint64(units >> shift)
        ns = sec * _NS + sub.astype(np.int64)
    if offset_ns:
        ns = ns + offset_ns
    return ns


def _resolution(path: str, value: int, at: int) -> int:
    """Ticks per second for an ``if_tsresol`` byte."""
    exponent = value & 0x7F
    units = 2**exponent if value & 0x80 else 10**exponent
    if units >= 1 << 64:
        raise ParseError(f"{path}: interface at offset {at} has an unusable if_tsresol 0x{value:02x}")
    return units


class PcapngWalker:
    """Walks pcapng blocks in a buffer that always starts at a block boundary."""

    def __init__(self, path: str, head: bytes) -> None:
        self._path = path
        if len(head) < 28:
            raise Truncated(f"{path}: file ends inside the pcapng section header ({len(head)} of 28 bytes)")
        self._order(head, 0, first=True)
        self.interfaces: list[Interface] = []
        self.linktypes: set[int] = set()
        self._sec_base = 0  # index in ``interfaces`` of this section's interface 0
        self._last_ts = 0  # for SPBs, which carry no timestamp

    def _order(self, buf: bytes | bytearray, pos: int, first: bool = False) -> None:
        """Read a SHB's byte-order magic and version, and switch to its byte order."""
        bom = bytes(buf[pos + 8 : pos + 12])
        if bom == _BOM_LE:
            order = "<"
        elif bom == _BOM_BE:
            order = ">"
        else:
            err = UnsupportedFormat if first else ParseError
            raise err(
                f"{self._path}: pcapng section header at offset {pos} has a bad byte-order magic "
                f"0x{bom.hex()}"
            )
        major, minor = struct.unpack_from(order + "HH", buf, pos + 12)
        if major != 1:
            err = UnsupportedFormat if first else ParseError
            raise err(f"{self._path}: pcapng version {major}.{minor} is not supported (only 1.x)")
        self._o = order
        self._dtype = order + "u4"
        self._hdr = struct.Struct(order + "II").unpack_from

    def walk(self, buf: bytearray, end: int, base: int) -> Walk:
        pos = 0
        hdr = self._hdr
        epbs: list[int] = []
        add = epbs.append
        # Packets of other block types, in file order: data offset, caplen, ts (None: SPB), linktype.
        others: list[tuple[int, int, int | None, int]] = []
        need = 0
        error: ParseError | None = None
        while pos + 12 <= end:
            btype, blen = hdr(buf, pos)
            if btype == EPB and 32 <= blen <= end - pos:
                add(pos)
                pos += blen
                continue
            try:
                if btype == SHB:
                    if pos:  # a new section: finish this walk in the old byte order
                        break
                    if end < 28:
                        need = 28
                        break
                    self._order(buf, pos)
                    hdr = self._hdr
                    btype, blen = hdr(buf, pos)
                if blen < _MIN_LEN.get(btype, 12) or blen % 4 or blen > MAX_BLOCK:
                    raise ParseError(
                        f"{self._path}: block of type 0x{btype:x} at offset {base + pos} "
                        f"has a bad length {blen}"
                    )
                if blen > end - pos:
                    need = blen
                    break
                self._block(btype, buf, pos, blen, base, others)
            except ParseError as exc:
                error = exc
                break
            except struct.error as exc:  # an option running past its block
                error = ParseError(f"{self._path}: malformed block at offset {base + pos}: {exc}")
                break
            pos += blen
        else:
            need = 12 if pos < end else 0
        w = Walk(pos=pos, need=0 if error else need)
        self._columns(w, buf, end, base, np.array(epbs, dtype=np.int64), others)
        if error is not None and w.error is None:
            w.error = error
        return w

    def _block(
        self,
        btype: int,
        buf: bytearray,
        pos: int,
        blen: int,
        base: int,
        others: list[tuple[int, int, int | None, int]],
    ) -> None:
        o = self._o
        if btype == SHB:
            self._sec_base = len(self.interfaces)
        elif btype == IDB:
            linktype, _res, snaplen = struct.unpack_from(o + "HHI", buf, pos + 8)
            units, offset = 1_000_000, 0
            opt, stop = pos + 16, pos + blen - 4
            while opt + 4 <= stop:
                code, olen = struct.unpack_from(o + "HH", buf, opt)
                if code == 0 or opt + 4 + olen > stop:
                    break
                if code == _OPT_TSRESOL and olen >= 1:
                    units = _resolution(self._path, buf[opt + 4], base + pos)
                elif code == _OPT_TSOFFSET and olen >= 8:
                    offset = struct.unpack_from(o + "q", buf, opt + 4)[0]
                    if abs(offset) > _MAX_TSOFFSET:
                        raise ParseError(
                            f"{self._path}: interface at offset {base + pos} has an absurd "
                            f"if_tsoffset of {offset} s"
                        )
                opt += 4 + (olen + 3) // 4 * 4
            self.interfaces.append(Interface(linktype, snaplen, units, offset * _NS))
            self.linktypes.add(linktype)
        elif btype == SPB:
            if len(self.interfaces) <= self._sec_base:
                raise ParseError(
                    f"{self._path}: simple packet block at offset {base + pos} "
                    "comes before any interface block"
                )
            iface = self.interfaces[self._sec_base]
            caplen = min(struct.unpack_from(o + "I", buf, pos + 8)[0], blen - 16)
            if iface.snaplen:
                caplen = min(caplen, iface.snaplen)
            self._check_caplen(caplen, base + pos)
            others.append((pos + 12, caplen, None, iface.linktype))
        elif btype == OPB:
            ifid, _drops, hi, lo, caplen = struct.unpack_from(o + "HHIII", buf, pos + 8)
            iface = self._interface(ifid, base + pos)
            self._check_caplen(caplen, base + pos)
            if caplen > blen - 32:
                raise ParseError(
                    f"{self._path}: packet block at offset {base + pos} is shorter than "
                    f"its captured length {caplen}"
                )
            ticks = np.array([(hi << 32) | lo], dtype=np.uint64)
            ts = int(ticks_to_ns(ticks, iface.units, iface.offset_ns)[0])
            others.append((pos + 28, caplen, ts, iface.linktype))

    def _interface(self, ifid: int, at: int) -> Interface:
        index = self._sec_base + ifid
        if index >= len(self.interfaces):
            raise ParseError(
                f"{self._path}: packet block at offset {at} refers to interface {ifid}, "
                f"but the section has {len(self.interfaces) - self._sec_base}"
            )
        return self.interfaces[index]

    def _check_caplen(self, caplen: int, at: int) -> None:
        if caplen > MAX_CAPLEN:
            raise ParseError(
                f"{self._path}: packet block at offset {at} announces {caplen} captured "
                f"bytes (more than {MAX_CAPLEN}); the file is corrupt"
            )

    def _columns(
        self,
        w: Walk,
        buf: bytearray,
        end: int,
        base: int,
        starts: I64,
        others: list[tuple[int, int, int | None, int]],
    ) -> None:
        """Turn the EPB offsets and the other packets into the walk's columns, in file order."""
        n = int(starts.shape[0])
        offsets, caplens = starts + 28, np.zeros(n, np.int64)
        ts, linktypes = np.zeros(n, np.int64), np.zeros(n, np.int64)
        if n:
            rows = header_rows(buf, end, starts, 28, self._dtype)
            blen, ifid, caplens = rows[:, 1], rows[:, 2], rows[:, 5].astype(np.int64)
            count = len(self.interfaces) - self._sec_base
            bad = (caplens > MAX_CAPLEN) | (caplens > blen.astype(np.int64) - 32) | (ifid >= count)
            bad |= (blen & 3) != 0
            first_bad = int(np.argmax(bad)) if bool(bad.any()) else n
            if first_bad < n:
                self._fail(w, int(starts[first_bad]), base, int(ifid[first_bad]), int(caplens[first_bad]))
                n = first_bad
                rows, caplens, ifid, starts, offsets = (
                    rows[:n],
                    caplens[:n],
                    ifid[:n],
                    starts[:n],
                    offsets[:n],
                )
                ts, linktypes = ts[:n], linktypes[:n]
            if n:
                ticks = (rows[:, 3].astype(np.uint64) << np.uint64(32)) | rows[:, 4].astype(np.uint64)
                ifaces = self.interfaces[self._sec_base :]
                linktypes = np.array([i.linktype for i in ifaces], dtype=np.int64)[ifid]
                single = bool((ifid == ifid[0]).all())
                for k in [int(ifid[0])] if single else np.unique(ifid).tolist():
                    iface = ifaces[k]
                    if single:
                        ts = ticks_to_ns(ticks, iface.units, iface.offset_ns)
                    else:
                        sel = ifid == k
                        ts[sel] = ticks_to_ns(ticks[sel], iface.units, iface.offset_ns)
        if w.error is not None:
            others = [o for o in others if o[0] < w.pos + 28]
        if others:
            o_off = np.array([o[0] for o in others], dtype=np.int64)
            o_cap = np.array([o[1] for o in others], dtype=np.int64)
            o_ts = np.array([-1 if o[2] is None else o[2] for o in others], dtype=np.int64)
            o_lt = np.array([o[3] for o in others], dtype=np.int64)
            known = np.concatenate([np.ones(n, bool), np.array([o[2] is not None for o in others])])
            offsets = np.concatenate([offsets, o_off])
            order = np.argsort(offsets, kind="stable")
            offsets = offsets[order]
            caplens = np.concatenate([caplens, o_cap])[order]
            ts = np.concatenate([ts, o_ts])[order]
            linktypes = np.concatenate([linktypes, o_lt])[order]
            known = known[order]
            if not bool(known.all()):  # SPBs: the previous packet's timestamp
                idx = np.where(known, np.arange(known.shape[0]), -1)
                np.maximum.accumulate(idx, out=idx)
                ts = np.where(idx >= 0, ts[np.maximum(idx, 0)], self._last_ts)
        if ts.shape[0]:
            self._last_ts = int(ts[-1])
        w.offsets, w.caplens, w.ts_ns, w.linktypes = offsets, caplens, ts, linktypes

    def _fail(self, w: Walk, start: int, base: int, ifid: int, caplen: int) -> None:
        count = len(self.interfaces) - self._sec_base
        if ifid >= count:
            why = f"refers to interface {ifid}, but the section has {count}"
        elif caplen > MAX_CAPLEN:
            why = f"announces {caplen} captured bytes (more than {MAX_CAPLEN}); the file is corrupt"
        else:
            why = f"has a bad length or is shorter than its captured length {caplen}"
        w.error = ParseError(f"{self._path}: packet block at offset {base + start} {why}")
        w.pos = start
        w.need = 0
