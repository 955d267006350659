"""Frames to UDP datagrams: link layer, VLAN tags, IPv4/IPv6, fragment reassembly, UDP.

:class:`FrameDecoder` decodes a whole :class:`PacketBatch` with numpy: the first 80 bytes of
every frame are gathered as one row each (``capture.model.gather.rows(buf, offsets, 80)``, ~10 ns a
row; element-wise fancy indexing costs ~60x more and is kept out of per-byte work). The link layer
is read per link type with column slices, then IPv4 (20-byte header) or IPv6 (UDP directly after
the fixed header) and the UDP header are checked as columns; link headers (tags included) have
even lengths, so one big-endian ``uint16`` view of the rows reads every 16-bit field. Frames of any
other shape (fragments, IPv4 options, IPv6 extension headers, more than two VLAN tags, PPPoE,
MPLS) go one by one through :class:`capture.frames.scalar.FrameParser`, which states the rules
both paths follow.

Output rows stay in capture order; a reassembled datagram takes the place and timestamp of the
fragment that completed it, and its payload is appended after the batch buffer (and its padding)
in the output buffer.

Counters: each frame counts once, as ``udp_datagrams`` or as why it was skipped:
``unsupported_linktype``, ``truncated``, ``not_ip``, ``bad_ip_header``, ``tcp``, ``not_udp``,
``bad_udp_header``, or, for fragments, ``ip_fragment_pending``, ``fragment_duplicate``,
``fragment_overlap``, ``fragment_bad``. Per datagram, the reassembler adds ``reassembled``,
``fragment_timeout``, ``fragment_evicted`` and ``fragment_incomplete``.
"""

from __future__ import annotations

import collections
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from callrec.capture.frames.fragments import Reassembler
from callrec.capture.frames.scalar import (
    AF_INET6,
    ETHER_LIKE,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    IPV6_EXTENSIONS,
    PROTO_TCP,
    PROTO_UDP,
    SLOW_ETHERTYPES,
    Datagram,
    FrameParser,
)
from callrec.capture.frames.tunnels import IP_TUNNEL_PROTOS, UDP_TUNNEL_PORTS
from callrec.capture.model.gather import rows as gather_rows
from callrec.capture.model.packets import (
    BUFFER_PADDING,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    DatagramBatch,
    PacketBatch,
)
from callrec.capture.sip.tcp import SipStreams

I64 = npt.NDArray[np.int64]
_T = TypeVar("_T", bound=np.generic)
U8 = npt.NDArray[np.uint8]

_L3_ROW = 48  # IPv6 header + UDP header (IPv4 + UDP is 28)
_ROW = 80  # link header (<= 20) + two VLAN tags + the above
_PAD = bytes(BUFFER_PADDING)

# Verdict codes of the vectorized path.
OK, SLOW = 0, 1
# Tunnelled and SIP-over-TCP frames take the scalar path (capture.frames.tunnels, capture.sip.tcp).
_TUNNEL_PROTOS = np.array(sorted(IP_TUNNEL_PROTOS), dtype=np.uint8)
_TUNNEL_PORTS = np.array(sorted(UDP_TUNNEL_PORTS), dtype=np.int64)

_REASONS = (
    "",
    "",
    "unsupported_linktype",
    "truncated",
    "not_ip",
    "bad_ip_header",
    "tcp",
    "not_udp",
    "bad_udp_header",
)
UNSUPPORTED, TRUNCATED, NOT_IP, BAD_IP, TCP, NOT_UDP, BAD_UDP = range(2, 9)


def _is_tag(et: I64) -> npt.NDArray[np.bool_]:
    return (et == 0x8100) | (et == 0x88A8) | (et == 0x9100)


class FrameDecoder:
    """Decodes batches of frames into UDP datagrams; state (fragments) carries across batches.

    ``force_slow`` sends every frame through the scalar path (for cross-checks and debugging).
    """

    def __init__(self, *, reassembler: Reassembler | None = None, force_slow: bool = False) -> None:
        self.counters: collections.Counter[str] = collections.Counter()
        if reassembler is None:
            reassembler = Reassembler(counters=self.counters)
        else:
            reassembler.counters = self.counters
        self.reassembler = reassembler
        self.force_slow = force_slow
        self.streams = SipStreams(self.counters)
        self._parser = FrameParser(self.counters, reassembler, self.streams)

    def finish(self) -> None:
        """End of input: count datagrams still waiting for fragments, and SIP over TCP messages
        still incomplete."""
        self.reassembler.clear()
        self.streams.close()

    def decode(self, batch: PacketBatch) -> DatagramBatch:
        n = len(batch)
        if self.force_slow or n == 0:
            codes = np.full(n, SLOW, dtype=np.int64)
            fast = _Columns.empty()
        else:
            codes, fast = _vector(batch)
            counts = np.bincount(codes, minlength=len(_REASONS))
            for code in range(2, len(_REASONS)):
                if counts[code]:
                    self.counters[_REASONS[code]] += int(counts[code])
            if counts[OK]:
                self.counters["udp_datagrams"] += int(counts[OK])
        slow = np.flatnonzero(codes == SLOW)
        return self._assemble(batch, fast, self._slow(batch, slow))

    def _slow(self, batch: PacketBatch, rows: I64) -> list[tuple[int, Datagram]]:
        parse = self._parser.parse
        buf = batch.buffer
        found = []
        for i, off, cap, lt, ts in zip(
            rows.tolist(),
            batch.offsets[rows].tolist(),
            batch.caplens[rows].tolist(),
            batch.linktypes[rows].tolist(),
            batch.ts_ns[rows].tolist(),
            strict=True,
        ):
            got = parse(buf, off, cap, lt, ts)
            if got is not None:
                found.append((i, got))
                if self._parser.tcp_messages:  # one TCP segment completed several SIP messages
                    found.extend((i, d) for d in self._parser.tcp_messages)
                    self._parser.tcp_messages.clear()
        return found

    def _assemble(
        self, batch: PacketBatch, fast: _Columns, slow: list[tuple[int, Datagram]]
    ) -> DatagramBatch:
        buffer = batch.buffer
        cols = fast
        if slow:
            extra: list[bytes] = []
            pos = len(buffer)
            starts, lengths = [], []
            for _, d in slow:
                if d[6] is None:
                    starts.append(d[4])
                else:
                    starts.append(pos)
                    extra.append(d[6])
                    pos += len(d[6])
                lengths.append(d[5])
            if extra:
                buffer = b"".join([buffer, *extra, _PAD])
            rows = np.array([i for i, _ in slow], dtype=np.int64)
            more = _Columns(
                rows=rows,
                src=np.frombuffer(b"".join(d[0] for _, d in slow), dtype=np.uint8).reshape(-1, 16).copy(),
                dst=np.frombuffer(b"".join(d[1] for _, d in slow), dtype=np.uint8).reshape(-1, 16).copy(),
                sport=np.array([d[2] for _, d in slow], dtype=np.int64),
                dport=np.array([d[3] for _, d in slow], dtype=np.int64),
                start=np.array(starts, dtype=np.int64),
                length=np.array(lengths, dtype=np.int64),
                vlan=np.array([d[7] for _, d in slow], dtype=np.int64),
            )
            cols = fast.merge(more)
        return DatagramBatch(
            buffer=buffer,
            ts_ns=batch.ts_ns[cols.rows],
            src_addr=cols.src,
            dst_addr=cols.dst,
            src_port=cols.sport,
            dst_port=cols.dport,
            payload_offsets=cols.start,
            payload_lengths=cols.length,
            vlan=cols.vlan,
            numbers=cols.rows + batch.first_number,
        )


class _Columns:
    """Datagram columns with the batch row each came from."""

    __slots__ = ("rows", "src", "dst", "sport", "dport", "start", "length", "vlan")

    def __init__(
        self, rows: I64, src: U8, dst: U8, sport: I64, dport: I64, start: I64, length: I64, vlan: I64
    ) -> None:
        self.rows, self.src, self.dst = rows, src, dst
        self.sport, self.dport, self.start, self.length, self.vlan = sport, dport, start, length, vlan

    @staticmethod
    def empty() -> _Columns:
        z = np.zeros(0, dtype=np.int64)
        a = np.zeros((0, 16), dtype=np.uint8)
        return _Columns(z, a, a, z, z, z, z, z)

    def merge(self, other: _Columns) -> _Columns:
        if not self.rows.shape[0]:
            return other
        order = np.argsort(np.concatenate([self.rows, other.rows]), kind="stable")
        return _Columns(
            _cat(self.rows, other.rows, order),
            _cat(self.src, other.src, order),
            _cat(self.dst, other.dst, order),
            _cat(self.sport, other.sport, order),
            _cat(self.dport, other.dport, order),
            _cat(self.start, other.start, order),
            _cat(self.length, other.length, order),
            _cat(self.vlan, other.vlan, order),
        )


def _cat(a: npt.NDArray[_T], b: npt.NDArray[_T], order: I64) -> npt.NDArray[_T]:
    return np.concatenate([a, b])[order]


def _link(lt: int, rows: U8, cap: I64) -> tuple[I64, I64, I64, I64]:
    """Per frame of one link type: (verdict so far, IP version, link header length, VLAN)."""
    n = rows.shape[0]
    w16 = rows.view(">u2")  # every 16-bit field read here is at an even offset

    def be16(col: int) -> I64:
        return w16[:, col // 2].astype(np.int64)

    vlan = np.full(n, -1, dtype=np.int64)
    code = np.zeros(n, dtype=np.int64)
    if lt in ETHER_LIKE:
        at, base = ETHER_LIKE[lt]
        et = be16(at)
        hdr = np.full(n, base, dtype=np.int64)
        tag = _is_tag(et)
        if bool(tag.any()):
            vlan = np.where(tag, be16(base) & 0x0FFF, -1)
            et = np.where(tag, be16(base + 2), et)
            hdr += 4 * tag
            tag &= _is_tag(et)
            if bool(tag.any()):
                et = np.where(tag, be16(base + 6), et)
                hdr += 4 * tag
                code[tag & _is_tag(et)] = SLOW  # three or more tags
        version = np.where(et == ETHERTYPE_IPV4, 4, np.where(et == ETHERTYPE_IPV6, 6, 0))
        short = cap < hdr
        code[np.isin(et, list(SLOW_ETHERTYPES)) & ~short] = SLOW  # PPPoE, MPLS
    elif lt in (LINKTYPE_NULL, LINKTYPE_LOOP):
        af = np.ascontiguousarray(rows[:, :4]).view("<u4")[:, 0].astype(np.int64)
        swapped = np.ascontiguousarray(rows[:, :4]).view(">u4")[:, 0].astype(np.int64)
        af = np.where(af & 0xFFFF0000, swapped, af)
        version = np.where(af == 2, 4, np.where(np.isin(af, list(AF_INET6)), 6, 0))
        hdr = np.full(n, 4, dtype=np.int64)
        short = cap < 4
    elif lt == LINKTYPE_RAW:
        nibble = (rows[:, 0] >> 4).astype(np.int64)
        version = np.where((nibble == 4) | (nibble == 6), nibble, 0)
        hdr = np.zeros(n, dtype=np.int64)
        short = cap < 1
    elif lt in (LINKTYPE_IPV4, LINKTYPE_IPV6):
        version = np.full(n, 4 if lt == LINKTYPE_IPV4 else 6, dtype=np.int64)
        hdr = np.zeros(n, dtype=np.int64)
        short = np.zeros(n, dtype=bool)
    else:
        code[:] = UNSUPPORTED
        return code, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64), vlan
    code = np.where(code == SLOW, SLOW, np.where(short, TRUNCATED, np.where(version == 0, NOT_IP, OK)))
    return code, version, hdr, vlan


def _vector(batch: PacketBatch) -> tuple[I64, _Columns]:
    """Verdicts for every frame and the columns of those decoded here (verdict OK)."""
    buf = np.frombuffer(batch.buffer, dtype=np.uint8)
    offs, cap, lts = batch.offsets, batch.caplens, batch.linktypes
    rows = gather_rows(buf, offs, _ROW)
    first = int(lts[0])
    if bool((lts == first).all()):
        code, version, hdr, vlan = _link(first, rows, cap)
    else:
        n = offs.shape[0]
        code, version = np.zeros(n, np.int64), np.zeros(n, np.int64)
        hdr, vlan = np.zeros(n, np.int64), np.zeros(n, np.int64)
        for lt in np.unique(lts).tolist():
            sel = lts == lt
            code[sel], version[sel], hdr[sel], vlan[sel] = _link(lt, rows[sel], cap[sel])
    # Link headers, tags included, have even lengths, so the IP header's 16-bit fields are at even
    # offsets of the row: one big-endian uint16 view reads them all.
    h0 = int(hdr[0])
    if bool((hdr == h0).all()):
        ip = rows[:, h0 : h0 + _L3_ROW]
        ip16 = rows.view(">u2")[:, h0 // 2 : (h0 + _L3_ROW) // 2]
    else:
        ip = gather_rows(buf, offs + hdr, _L3_ROW)
        ip16 = ip.view(">u2")

    def be16(col: int) -> I64:
        return ip16[:, col // 2].astype(np.int64)

    avail = cap - hdr
    b0 = ip[:, 0]
    ver = b0 >> 4
    is4 = version == 4
    # IPv4 with a 20-byte header; UDP at 20.
    ihl = (b0 & 15).astype(np.int64) * 4
    total4 = be16(2)
    proto4 = ip[:, 9]
    ulen4 = be16(24)
    room4 = total4 - 20
    v4 = np.select(
        [
            avail < 20,
            (ver != 4) | (ihl < 20) | (total4 < ihl),
            total4 > avail,
            ihl != 20,
            (ip16[:, 3] & 0x3FFF) != 0,
            (proto4 == PROTO_TCP) | np.isin(proto4, _TUNNEL_PROTOS),
            proto4 != PROTO_UDP,
            (room4 < 8) | (ulen4 < 8) | (ulen4 > room4),
            np.isin(be16(22), _TUNNEL_PORTS),
        ],
        [TRUNCATED, BAD_IP, TRUNCATED, SLOW, SLOW, SLOW, NOT_UDP, BAD_UDP, SLOW],
        OK,
    )  # TCP: SIP streams
    if bool(is4.all()):
        code = np.where(code != OK, code, v4)
    else:
        # IPv6 with UDP directly after the fixed header; UDP at 40.
        room6 = be16(4)
        nh = ip[:, 6]
        ulen6 = be16(44)
        v6 = np.select(
            [
                avail < 40,
                ver != 6,
                room6 + 40 > avail,
                np.isin(nh, list(IPV6_EXTENSIONS)),
                (nh == PROTO_TCP) | np.isin(nh, _TUNNEL_PROTOS),
                nh != PROTO_UDP,
                (room6 < 8) | (ulen6 < 8) | (ulen6 > room6),
                np.isin(be16(42), _TUNNEL_PORTS),
            ],
            [TRUNCATED, BAD_IP, TRUNCATED, SLOW, SLOW, NOT_UDP, BAD_UDP, SLOW],
            OK,
        )
        code = np.where(code != OK, code, np.where(is4, v4, v6))
    ok = np.flatnonzero(code == OK)
    m = ok.shape[0]
    if not m:
        return code, _Columns.empty()
    all_ok = m == code.shape[0]
    w = ip if all_ok else ip[ok]
    w16 = ip16 if all_ok else ip16[ok]
    ok4 = is4 if all_ok else is4[ok]
    src = np.zeros((m, 16), dtype=np.uint8)
    dst = np.zeros((m, 16), dtype=np.uint8)
    if bool(ok4.all()):
        src[:, 10:12] = 0xFF
        dst[:, 10:12] = 0xFF
        src[:, 12:] = w[:, 12:16]
        dst[:, 12:] = w[:, 16:20]
        udp: int | I64 = 20
        sport, dport, ulen = w16[:, 10], w16[:, 11], w16[:, 12]
    else:
        src[ok4, 10:12] = 0xFF
        dst[ok4, 10:12] = 0xFF
        src[ok4, 12:] = w[ok4, 12:16]
        dst[ok4, 12:] = w[ok4, 16:20]
        ok6 = ~ok4
        src[ok6] = w[ok6, 8:24]
        dst[ok6] = w[ok6, 24:40]
        udp = np.where(ok4, 20, 40)
        sport = np.where(ok4, w16[:, 10], w16[:, 20])
        dport = np.where(ok4, w16[:, 11], w16[:, 21])
        ulen = np.where(ok4, w16[:, 12], w16[:, 22])
    cols = _Columns(
        rows=ok,
        src=src,
        dst=dst,
        sport=sport.astype(np.int64),
        dport=dport.astype(np.int64),
        start=(offs if all_ok else offs[ok]) + (hdr if all_ok else hdr[ok]) + udp + 8,
        length=ulen.astype(np.int64) - 8,
        vlan=vlan if all_ok else vlan[ok],
    )
    return code, cols
