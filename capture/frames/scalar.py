"""One frame at a time: the reference decoder and the slow path of :mod:`capture.frames.decoder`.

The vectorized path in :mod:`capture.frames.decoder` handles the common shapes and sends everything else
here (fragments, IPv6 extension headers, IPv4 options, more than two VLAN tags). Both follow the
same rules in the same order, so a frame gets the same verdict on either path (the tests check):

1. Link layer. Ethernet (ethertype at 12), Linux cooked SLL (protocol at 14, 16-byte header) and
   SLL2 (protocol at 0, 20-byte header) may be followed by 802.1Q/802.1ad tags (0x8100, 0x88a8,
   0x9100; the outermost VLAN id is kept). NULL and LOOP carry a 4-byte address family, NULL in
   the capturing host's byte order, LOOP in network order: a value with a non-zero upper half is
   taken byte-swapped, which reads both. AF 2 is IPv4; 10, 23, 24, 28, 30 are IPv6 on the various
   systems. RAW says the version in the first nibble; IPV4/IPV6 link types fix it. PPPoE sessions
   and MPLS label stacks after the (tagged) link header are read too.
2. IPv4: at least 20 bytes, version 4, IHL >= 5, total length >= IHL; total length within the
   captured bytes (else "truncated"; bytes past it are trailer padding, e.g. Ethernet's 60-byte
   minimum). Checksums are not verified (mirror ports see offloaded, unfinished checksums).
   Fragments go to the :class:`Reassembler`.
3. IPv6: 40 bytes, version 6, payload length within the captured bytes. Hop-by-hop (0), routing
   (43), destination options (60) and AH (51) headers are skipped; a fragment header (44) sends
   the fragmentable part to the reassembler (an atomic fragment, offset 0 without M, is read in
   place, RFC 6946), and the header chain goes on in the reassembled payload.
4. Upper layer: TCP is counted as "tcp", other protocols as "not_udp". UDP needs 8 <= length <=
   the IP payload; the payload is the first length - 8 bytes after the header.
"""

from __future__ import annotations

import collections
import struct

from callrec.capture.frames.fragments import Reassembler
from callrec.capture.frames.tunnels import (
    IP_TUNNEL_PROTOS,
    MAX_DEPTH,
    UDP_TUNNEL_PORTS,
    HepDatagram,
    Inner,
    decapsulate_ip,
    decapsulate_udp,
)
from callrec.capture.model.errors import ParseError
from callrec.capture.model.packets import (
    IPV4_MAPPED_PREFIX,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
)
from callrec.capture.sip.tcp import SipStreams

VLAN_TAGS = frozenset((0x8100, 0x88A8, 0x9100))
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
# Between the link header and IP, read on the slow path: PPPoE session (6-byte header and the
# 2-byte PPP protocol, 0x0021 IPv4 / 0x0057 IPv6) and MPLS (4-byte labels up to the one with the
# bottom-of-stack bit, then IP told by its version nibble; pseudowires count as not IP).
ETHERTYPE_PPPOE = 0x8864
SLOW_ETHERTYPES = frozenset((ETHERTYPE_PPPOE, 0x8847, 0x8848))
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
AF_INET6 = frozenset((10, 23, 24, 28, 30))
IPV6_SKIPPED = frozenset((0, 43, 60))  # length in 8-byte units, not counting the first 8
IPV6_AH = 51  # length in 4-byte units, not counting the first 8
IPV6_FRAGMENT = 44
IPV6_EXTENSIONS = IPV6_SKIPPED | {IPV6_AH, IPV6_FRAGMENT}
PROTO_TCP = 6
PROTO_UDP = 17

# Link types with an ethertype-like field: (offset of the field, header length).
ETHER_LIKE = {
    LINKTYPE_ETHERNET: (12, 14),
    LINKTYPE_LINUX_SLL: (14, 16),
    LINKTYPE_LINUX_SLL2: (0, 20),
}

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_AF = struct.Struct("<I").unpack_from

# (src16, dst16, sport, dport, payload start, payload length, extra bytes or None, vlan).
# With ``extra`` set the payload is ``extra`` itself (start 0); otherwise it is in the frame buffer.
Datagram = tuple[bytes, bytes, int, int, int, int, bytes | None, int]


class FrameParser:
    """Decodes one frame into a UDP datagram or counts why not (see the module docstring)."""

    def __init__(
        self, counters: collections.Counter[str], reassembler: Reassembler, streams: SipStreams | None = None
    ) -> None:
        self.counters = counters
        self.reassembler = reassembler
        self.streams = streams  # SIP over TCP: complete messages come out as datagrams
        self.tcp_messages: list[Datagram] = []  # more complete messages of the last frame parsed
        self._ts_ns = 0
        self._depth = 0  # tunnels decapsulated around the packet being parsed
        self._detached = False  # the packet being parsed lies in a reassembled payload

    def parse(self, buf: bytes, off: int, caplen: int, linktype: int, ts_ns: int) -> Datagram | None:
        """The datagram in ``buf[off:off+caplen]``; ``None`` when the frame is counted instead.
        A TCP segment that completes several SIP messages returns the first; the others wait in
        :attr:`tcp_messages` for the caller."""
        self._ts_ns = ts_ns
        version, hdr, vlan = self._link(buf, off, caplen, linktype)
        if version == 4:
            return self._ipv4(buf, off + hdr, caplen - hdr, vlan, ts_ns)
        if version == 6:
            return self._ipv6(buf, off + hdr, caplen - hdr, vlan, ts_ns)
        return None

    def _drop(self, reason: str) -> None:
        self.counters[reason] += 1

    def _link(self, buf: bytes, off: int, caplen: int, linktype: int) -> tuple[int, int, int]:
        """(IP version or 0 when counted, link header length, outer VLAN id or -1)."""
        vlan = -1
        if linktype in ETHER_LIKE:
            at, hdr = ETHER_LIKE[linktype]
            if caplen < hdr:
                self._drop("truncated")
                return 0, 0, vlan
            et = _U16(buf, off + at)[0]
            while et in VLAN_TAGS:
                if caplen < hdr + 4:
                    self._drop("truncated")
                    return 0, 0, vlan
                if vlan < 0:
                    vlan = _U16(buf, off + hdr)[0] & 0x0FFF
                et = _U16(buf, off + hdr + 2)[0]
                hdr += 4
            if et in SLOW_ETHERTYPES:
                return self._tunnel(buf, off, caplen, et, hdr, vlan)
            version = 4 if et == ETHERTYPE_IPV4 else 6 if et == ETHERTYPE_IPV6 else 0
        elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            hdr = 4
            if caplen < 4:
                self._drop("truncated")
                return 0, 0, vlan
            af = _AF(buf, off)[0]
            if af & 0xFFFF0000:
                af = int.from_bytes(af.to_bytes(4, "little"), "big")
            version = 4 if af == 2 else 6 if af in AF_INET6 else 0
        elif linktype == LINKTYPE_RAW:
            hdr = 0
            if caplen < 1:
                self._drop("truncated")
                return 0, 0, vlan
            nibble = buf[off] >> 4
            version = nibble if nibble in (4, 6) else 0
        elif linktype in (LINKTYPE_IPV4, LINKTYPE_IPV6):
            hdr = 0
            version = 4 if linktype == LINKTYPE_IPV4 else 6
        else:
            self._drop("unsupported_linktype")
            return 0, 0, vlan
        if not version:
            self._drop("not_ip")
        return version, hdr, vlan

    def _tunnel(
        self, buf: bytes, off: int, caplen: int, et: int, hdr: int, vlan: int
    ) -> tuple[int, int, int]:
        """PPPoE session and MPLS between the link header and IP."""
        if et == ETHERTYPE_PPPOE:
            if caplen < hdr + 8:
                self._drop("truncated")
                return 0, 0, vlan
            ppp = _U16(buf, off + hdr + 6)[0]
            version = 4 if ppp == PPP_IPV4 else 6 if ppp == PPP_IPV6 else 0
            hdr += 8
        else:
            while True:
                if caplen < hdr + 4:
                    self._drop("truncated")
                    return 0, 0, vlan
                bottom = buf[off + hdr + 2] & 1
                hdr += 4
                if bottom:
                    break
            if caplen < hdr + 1:
                self._drop("truncated")
                return 0, 0, vlan
            nibble = buf[off + hdr] >> 4
            version = nibble if nibble in (4, 6) else 0
        if not version:
            self._drop("not_ip")
        return version, hdr, vlan

    def _ipv4(self, buf: bytes, l3: int, avail: int, vlan: int, ts_ns: int) -> Datagram | None:
        if avail < 20:
            self._drop("truncated")
            return None
        b0 = buf[l3]
        ihl = (b0 & 15) * 4
        total = _U16(buf, l3 + 2)[0]
        if b0 >> 4 != 4 or ihl < 20 or total < ihl:
            self._drop("bad_ip_header")
            return None
        if total > avail:
            self._drop("truncated")
            return None
        src = IPV4_MAPPED_PREFIX + buf[l3 + 12 : l3 + 16]
        dst = IPV4_MAPPED_PREFIX + buf[l3 + 16 : l3 + 20]
        proto = buf[l3 + 9]
        frag = _U16(buf, l3 + 6)[0] & 0x3FFF
        if frag:
            key = (4, src, dst, proto, _U16(buf, l3 + 4)[0])
            data = buf[l3 + ihl : l3 + total]
            done = self.reassembler.add(key, (frag & 0x1FFF) * 8, bool(frag & 0x2000), data, proto, ts_ns)
            if done is None:
                return None
            return self._upper(done.proto, done.payload, 0, len(done.payload), src, dst, vlan, True)
        return self._upper(proto, buf, l3 + ihl, l3 + total, src, dst, vlan, False)

    def _ipv6(self, buf: bytes, l3: int, avail: int, vlan: int, ts_ns: int) -> Datagram | None:
        if avail < 40:
            self._drop("truncated")
            return None
        if buf[l3] >> 4 != 6:
            self._drop("bad_ip_header")
            return None
        stop = l3 + 40 + _U16(buf, l3 + 4)[0]
        if stop - l3 > avail:
            self._drop("truncated")
            return None
        src = buf[l3 + 8 : l3 + 24]
        dst = buf[l3 + 24 : l3 + 40]
        nh = buf[l3 + 6]
        pos = l3 + 40
        reassembled = False
        while nh in IPV6_EXTENSIONS:
            if pos + 8 > stop:
                self._drop("bad_ip_header")
                return None
            if nh == IPV6_FRAGMENT:
                field = _U16(buf, pos + 2)[0]
                offset, more = field & 0xFFF8, bool(field & 1)
                if offset or more:
                    if reassembled:  # a fragment header inside a reassembled datagram
                        self._drop("bad_ip_header")
                        return None
                    key = (6, src, dst, _U32(buf, pos + 4)[0])
                    done = self.reassembler.add(key, offset, more, buf[pos + 8 : stop], buf[pos], ts_ns)
                    if done is None:
                        return None
                    buf, nh, pos, stop, reassembled = done.payload, done.proto, 0, len(done.payload), True
                    continue
                size = 8
            elif nh == IPV6_AH:
                size = (buf[pos + 1] + 2) * 4
            else:
                size = (buf[pos + 1] + 1) * 8
            if pos + size > stop:
                self._drop("bad_ip_header")
                return None
            nh = buf[pos]
            pos += size
        return self._upper(nh, buf, pos, stop, src, dst, vlan, reassembled)

    def _inner(self, inner: Inner, buf: bytes, vlan: int, detached: bool) -> Datagram | None:
        """Parse the packet a tunnel carries (GRE/ERSPAN, IP-in-IP, VXLAN...) as if captured."""
        if self._depth >= MAX_DEPTH:
            self._drop("tunnel_depth")
            return None
        self.counters[f"decapsulated_{inner.encap}"] += 1
        saved = self._detached
        self._depth += 1
        self._detached = detached
        try:
            if inner.kind == "ethernet":
                version, hdr, inner_vlan = self._link(
                    buf, inner.offset, inner.end - inner.offset, LINKTYPE_ETHERNET
                )
                l3, vlan = inner.offset + hdr, vlan if vlan >= 0 else inner_vlan
            else:
                version, l3 = (4 if inner.kind == "ipv4" else 6), inner.offset
            if version == 4:
                return self._ipv4(buf, l3, inner.end - l3, vlan, self._ts_ns)
            if version == 6:
                return self._ipv6(buf, l3, inner.end - l3, vlan, self._ts_ns)
            return None
        finally:
            self._depth -= 1
            self._detached = saved

    def _hep(self, hep: HepDatagram, vlan: int) -> Datagram | None:
        """A datagram a HEP capture agent sent us (its own addresses, ports and payload)."""
        self.counters["decapsulated_hep"] += 1
        if hep.transport != PROTO_UDP:
            self._drop("hep_not_udp")
            return None
        payload = bytes(hep.payload)
        return hep.src, hep.dst, hep.src_port, hep.dst_port, 0, len(payload), payload, vlan

    def _tcp(self, buf: bytes, start: int, stop: int, src: bytes, dst: bytes, vlan: int) -> Datagram | None:
        """Feed a TCP segment to the SIP stream reassembler; a message it completes becomes a
        datagram (its payload detached), as if it had come over UDP."""
        if stop - start < 20 or (buf[start + 12] >> 4) * 4 < 20 or start + (buf[start + 12] >> 4) * 4 > stop:
            self._drop("bad_tcp_header")
            return None
        sport, dport, seq = _U16(buf, start)[0], _U16(buf, start + 2)[0], _U32(buf, start + 4)[0]
        payload = bytes(buf[start + (buf[start + 12] >> 4) * 4 : stop])
        self.counters["tcp_segments"] += 1
        assert self.streams is not None
        done = self.streams.feed((src, sport, dst, dport), seq, buf[start + 13], payload, self._ts_ns)
        messages = [(src, dst, sport, dport, 0, len(m), m, vlan) for _, m in done]
        if not messages:
            return None
        self.tcp_messages.extend(messages[1:])
        return messages[0]

    def _upper(
        self, proto: int, buf: bytes, start: int, stop: int, src: bytes, dst: bytes, vlan: int, detached: bool
    ) -> Datagram | None:
        """The UDP datagram in ``buf[start:stop]``. ``detached``: ``buf`` is a reassembled payload,
        not the frame buffer, so the datagram carries its payload bytes."""
        detached = detached or self._detached
        if proto in IP_TUNNEL_PROTOS:
            try:
                inner = decapsulate_ip(proto, buf, start, stop)
            except ParseError as exc:
                self._drop(exc.reason)
                return None
            if inner is not None:
                return self._inner(inner, buf, vlan, detached)
        if proto == PROTO_TCP and self.streams is not None:
            return self._tcp(buf, start, stop, src, dst, vlan)
        if proto != PROTO_UDP:
            self._drop("tcp" if proto == PROTO_TCP else "not_udp")
            return None
        length = stop - start
        ulen = _U16(buf, start + 4)[0] if length >= 8 else 0
        if length < 8 or ulen < 8 or ulen > length:
            self._drop("bad_udp_header")
            return None
        sport, dport = _U16(buf, start)[0], _U16(buf, start + 2)[0]
        if dport in UDP_TUNNEL_PORTS:
            try:
                tunnelled = decapsulate_udp(sport, dport, buf, start + 8, start + ulen)
            except ParseError as exc:
                self._drop(exc.reason)
                return None
            if isinstance(tunnelled, Inner):
                return self._inner(tunnelled, buf, vlan, detached)
            if isinstance(tunnelled, HepDatagram):
                return self._hep(tunnelled, vlan)
        self.counters["udp_datagrams"] += 1
        if detached:
            payload = bytes(buf[start + 8 : start + ulen])
            return src, dst, sport, dport, 0, ulen - 8, payload, vlan
        return src, dst, sport, dport, start + 8, ulen - 8, None, vlan
