"""Mirroring tunnels: where the packet inside a GRE, ERSPAN, IP-in-IP, VXLAN, GENEVE or HEP wrapper starts.

Pure functions over a byte buffer and explicit bounds (``start``, ``end``: the tunnel's IP or UDP
payload, trailer padding excluded), so the frame parser can hand in its batch buffer and go on at the
returned offset in the same buffer. Nothing here recurses: the caller does, and should stop after
:data:`MAX_DEPTH` tunnels (a packet inside more wrappers is counted, not followed).

Results:

- :class:`Inner` ``(kind, offset, end, encap)``: an Ethernet frame (``kind == "ethernet"``) or an
  IPv4/IPv6 packet starts at ``offset`` and ends at ``end`` (exclusive) in the same buffer. ``encap``
  names the wrapper (``"gre"``, ``"erspan1"``, ``"erspan2"``, ``"erspan3"``, ``"pptp"``, ``"ipip"``,
  ``"etherip"``, ``"vxlan"``, ``"geneve"``) for counters.
- :class:`HepDatagram`: HEP (v1/v2 fixed header, v3 chunks) carries the captured payload with its
  addresses and ports, not a frame, so it comes back as a UDP (or TCP) datagram description.
- ``None``: not a tunnel (the protocol or port is not one of ours, or a datagram on a tunnel port
  does not look like that tunnel: RTCP on port 4789, say); parse the packet as usual.

Malformed tunnels raise :class:`capture.model.errors.Truncated` (reason ``"truncated"``) or
:class:`capture.model.errors.ParseError` with reason ``"bad_tunnel_header"``; a well-formed tunnel that
carries something other than IP or Ethernet (PPP control, GRE keepalive, WCCP, MPLS pseudowire, a HEP
keepalive without payload) raises ``ParseError`` with reason ``"tunnel_not_ip"``. No other exception
leaves this module.

Formats:

- GRE (IP protocol 47). Version 0 (RFC 2784/2890, RFC 1701 routing): C or R adds checksum + offset
  (4 bytes), K a key (4), S a sequence number (4), R then a list of source route entries ending with a
  null one. Protocol 0x0800/0x86DD: IP; 0x6558: Ethernet (transparent bridging); 0x8847/0x8848: MPLS
  labels, then IP by its version nibble; 0x88BE with S: ERSPAN type II (8-byte header, version 1),
  without S: ERSPAN type I (Ethernet directly); 0x22EB: ERSPAN type III (12-byte header, version 2,
  an 8-byte platform subheader when O is set; frame type 0 is Ethernet, 2 is IP). Version 1
  (enhanced GRE, PPTP, RFC 2637): K required (payload length and call id), S and A (acknowledgment
  number) optional, protocol 0x880B: PPP (address/control 0xFF03 optional, protocol field of 1 or
  2 bytes; 0x0021 IPv4, 0x0057 IPv6).
- IP-in-IP: protocol 4 (IPv4 inside) and 41 (IPv6 inside); EtherIP (97, RFC 3378): 2-byte header
  (version 3), then Ethernet.
- VXLAN (UDP destination port 4789, RFC 7348): 8-byte header, I flag (0x08) set and no flags but I
  and G (group policy); then Ethernet. With the P flag (0x04; VXLAN-GPE, also on port 4790), the
  last byte of the first word says what follows: 1 IPv4, 2 IPv6, 3 Ethernet. GENEVE (6081,
  RFC 8926): version 0, options, ethertype 0x6558/0x0800/0x86DD.
- HEP on :data:`HEP_PORTS` (destination): v3 starts with ``HEP3`` and a 16-bit total length, then
  chunks (vendor 16, type 16, length 16 with the 6-byte chunk header): 1 family, 2 IP protocol, 3/4
  IPv4 source/destination, 5/6 IPv6, 7/8 ports, 9/10 seconds/microseconds, 11 HEP protocol type
  (1 SIP, 5 RTCP, ...), 15 payload, 16 gzip/zlib-compressed payload; other vendors' chunks are
  skipped. v1/v2: version, length, family (2 or 10), protocol, ports (8 bytes, network order),
  addresses (8 or 32), then for v2 a 12-byte time header (seconds, microseconds little-endian as
  Kamailio and sngrep write them, capture id), then the payload.
"""

from __future__ import annotations

import struct
import zlib
from typing import Literal, NamedTuple

from callrec.capture.model.errors import ParseError, Truncated
from callrec.capture.model.packets import IPV4_MAPPED_PREFIX

# A packet inside more than this many tunnels is counted ("tunnel_depth"), not followed.
MAX_DEPTH = 4

PROTO_IPIP = 4
PROTO_IPV6 = 41
PROTO_GRE = 47
PROTO_ETHERIP = 97
IP_TUNNEL_PROTOS = frozenset((PROTO_IPIP, PROTO_IPV6, PROTO_GRE, PROTO_ETHERIP))

VXLAN_PORT = 4789
VXLAN_GPE_PORT = 4790
GENEVE_PORT = 6081
HEP_PORTS = frozenset((9060,))
UDP_TUNNEL_PORTS = frozenset((VXLAN_PORT, VXLAN_GPE_PORT, GENEVE_PORT)) | HEP_PORTS

GRE_IPV4 = 0x0800
GRE_IPV6 = 0x86DD
GRE_TEB = 0x6558
GRE_ERSPAN2 = 0x88BE
GRE_ERSPAN3 = 0x22EB
GRE_PPP = 0x880B
GRE_MPLS = frozenset((0x8847, 0x8848))

HEP_MAX_PAYLOAD = 65535  # a decompressed HEP payload larger than this is refused

Kind = Literal["ethernet", "ipv4", "ipv6"]

_U16 = struct.Struct("!H").unpack_from
_U32 = struct.Struct("!I").unpack_from
_HEP2_TIME = struct.Struct("<II").unpack_from
_AF_INET6 = frozenset((10, 23, 24, 28, 30))


class Inner(NamedTuple):
    """A frame or packet to parse at ``offset`` (up to ``end``) in the buffer that was passed in."""

    kind: Kind
    offset: int
    end: int
    encap: str


class HepDatagram(NamedTuple):
    """A datagram a HEP agent captured: addresses are 16 bytes (IPv4 as ``::ffff:a.b.c.d``)."""

    src: bytes
    dst: bytes
    src_port: int
    dst_port: int
    transport: int  # IP protocol: 17 UDP, 6 TCP, ...
    ts_ns: int | None  # capture time the agent reported
    payload: bytes
    hep_type: int | None  # HEP v3 chunk 11: 1 SIP, 5 RTCP, ...; None for v1/v2
    version: int


def _bounds(data: bytes, start: int, end: int) -> None:
    if start < 0 or end > len(data) or start > end:
        raise ParseError(
            f"tunnel bounds {start}..{end} outside a {len(data)}-byte buffer", reason="bad_tunnel_header"
        )


def _need(pos: int, size: int, end: int, what: str) -> None:
    if pos + size > end:
        raise Truncated(f"{what}: needs {size} bytes at {pos}, the packet ends at {end}")


def _not_ip(what: str) -> ParseError:
    return ParseError(what, reason="tunnel_not_ip")


def _bad(what: str) -> ParseError:
    return ParseError(what, reason="bad_tunnel_header")


def decapsulate_ip(proto: int, data: bytes, start: int, end: int) -> Inner | None:
    """The packet inside the IP payload ``data[start:end]`` of protocol ``proto``.

    ``None`` when ``proto`` is not a tunnel (see :data:`IP_TUNNEL_PROTOS`).
    """
    if proto not in IP_TUNNEL_PROTOS:
        return None
    _bounds(data, start, end)
    if proto == PROTO_GRE:
        return _gre(data, start, end)
    if proto == PROTO_IPIP:
        return Inner("ipv4", start, end, "ipip")
    if proto == PROTO_IPV6:
        return Inner("ipv6", start, end, "ipip")
    _need(start, 2, end, "EtherIP header")
    if data[start] >> 4 != 3:
        raise _bad(f"EtherIP version {data[start] >> 4}")
    return _ethernet(start + 2, end, "etherip")


def decapsulate_udp(
    src_port: int, dst_port: int, data: bytes, start: int, end: int, hep_ports: frozenset[int] = HEP_PORTS
) -> Inner | HepDatagram | None:
    """The packet inside the UDP payload ``data[start:end]``.

    ``None`` when the destination port is not a tunnel port (:data:`VXLAN_PORT`,
    :data:`VXLAN_GPE_PORT`, :data:`GENEVE_PORT`, ``hep_ports``) or the payload does not look like that tunnel.
    """
    del src_port  # tunnels are told by the destination port; kept for a stable signature
    if dst_port in (VXLAN_PORT, VXLAN_GPE_PORT):
        _bounds(data, start, end)
        return _vxlan(data, start, end)
    if dst_port == GENEVE_PORT:
        _bounds(data, start, end)
        return _geneve(data, start, end)
    if dst_port in hep_ports:
        _bounds(data, start, end)
        return _hep(data, start, end)
    return None


def _ethernet(offset: int, end: int, encap: str) -> Inner:
    _need(offset, 14, end, f"Ethernet frame in {encap}")
    return Inner("ethernet", offset, end, encap)


def _by_nibble(data: bytes, offset: int, end: int, encap: str) -> Inner:
    _need(offset, 1, end, f"IP packet in {encap}")
    version = data[offset] >> 4
    if version == 4:
        return Inner("ipv4", offset, end, encap)
    if version == 6:
        return Inner("ipv6", offset, end, encap)
    raise _not_ip(f"{encap} carries IP version {version}")


def _gre(data: bytes, start: int, end: int) -> Inner:
    _need(start, 4, end, "GRE header")
    flags = _U16(data, start)[0]
    ptype = _U16(data, start + 2)[0]
    version = flags & 7
    pos = start + 4
    if version == 1:
        return _pptp(data, flags, ptype, pos, end)
    if version != 0:
        raise _bad(f"GRE version {version}")
    routing = bool(flags & 0x4000)
    if flags & 0x8000 or routing:
        pos += 4  # checksum and offset (RFC 1701) / reserved1 (RFC 2784)
    if flags & 0x2000:
        pos += 4  # key
    sequenced = bool(flags & 0x1000)
    if sequenced:
        pos += 4
    _need(start, pos - start, end, "GRE optional fields")
    if routing:
        pos = _gre_routes(data, pos, end)
    if ptype == GRE_IPV4:
        return Inner("ipv4", pos, end, "gre")
    if ptype == GRE_IPV6:
        return Inner("ipv6", pos, end, "gre")
    if ptype == GRE_TEB:
        return _ethernet(pos, end, "gre")
    if ptype == GRE_ERSPAN2:
        if not sequenced:
            return _ethernet(pos, end, "erspan1")
        _need(pos, 8, end, "ERSPAN type II header")
        if data[pos] >> 4 != 1:
            raise _bad(f"ERSPAN type II header version {data[pos] >> 4}")
        return _ethernet(pos + 8, end, "erspan2")
    if ptype == GRE_ERSPAN3:
        return _erspan3(data, pos, end)
    if ptype in GRE_MPLS:
        return _mpls(data, pos, end)
    raise _not_ip(f"GRE protocol type 0x{ptype:04x}")


def _gre_routes(data: bytes, pos: int, end: int) -> int:
    """Skips RFC 1701 source route entries up to the null one; returns the payload offset."""
    while True:
        _need(pos, 4, end, "GRE source route entry")
        family = _U16(data, pos)[0]
        length = data[pos + 3]
        pos += 4
        if family == 0 and length == 0:
            return pos
        _need(pos, length, end, "GRE source route entry")
        pos += length


def _erspan3(data: bytes, pos: int, end: int) -> Inner:
    _need(pos, 12, end, "ERSPAN type III header")
    if data[pos] >> 4 != 2:
        raise _bad(f"ERSPAN type III header version {data[pos] >> 4}")
    frame_type = (data[pos + 10] >> 2) & 0x1F
    optional = data[pos + 11] & 1
    pos += 12
    if optional:
        _need(pos, 8, end, "ERSPAN type III platform subheader")
        pos += 8
    if frame_type == 0:
        return _ethernet(pos, end, "erspan3")
    if frame_type == 2:
        return _by_nibble(data, pos, end, "erspan3")
    raise _not_ip(f"ERSPAN type III frame type {frame_type}")


def _mpls(data: bytes, pos: int, end: int) -> Inner:
    while True:
        _need(pos, 4, end, "MPLS label")
        bottom = data[pos + 2] & 1
        pos += 4
        if bottom:
            return _by_nibble(data, pos, end, "gre")


def _pptp(data: bytes, flags: int, ptype: int, pos: int, end: int) -> Inner:
    """Enhanced GRE (RFC 2637): key (payload length, call id), then optional sequence and ack."""
    if flags & 0xC000 or not flags & 0x2000:
        raise _bad(f"enhanced GRE flags 0x{flags:04x}")
    if ptype != GRE_PPP:
        raise _bad(f"enhanced GRE protocol type 0x{ptype:04x}")
    _need(pos, 4, end, "enhanced GRE key")
    length = _U16(data, pos)[0]
    pos += 4
    if flags & 0x1000:
        pos += 4
    if flags & 0x0080:
        pos += 4
    _need(pos, length, end, "enhanced GRE payload")
    if not length:
        raise _not_ip("enhanced GRE acknowledgment without payload")
    stop = pos + length
    if data[pos] == 0xFF:  # address and control fields (not compressed away)
        _need(pos, 2, stop, "PPP address and control")
        if data[pos + 1] != 0x03:
            raise _bad(f"PPP control 0x{data[pos + 1]:02x}")
        pos += 2
    _need(pos, 1, stop, "PPP protocol")
    if data[pos] & 1:  # protocol field compressed to one byte
        ppp = data[pos]
        pos += 1
    else:
        _need(pos, 2, stop, "PPP protocol")
        ppp = _U16(data, pos)[0]
        pos += 2
    if ppp == 0x21:
        return Inner("ipv4", pos, stop, "pptp")
    if ppp == 0x57:
        return Inner("ipv6", pos, stop, "pptp")
    raise _not_ip(f"PPP protocol 0x{ppp:04x}")


def _vxlan(data: bytes, start: int, end: int) -> Inner | None:
    if end - start < 8:
        return None
    flags = data[start]
    if not flags & 0x08 or data[start + 7]:
        return None  # RTP/RTCP have version 2 in the top bits and no I flag pattern
    if flags & 0x04:  # VXLAN-GPE: version 0, next protocol in the last reserved byte
        if flags & 0xF0 or data[start + 1 : start + 3] != b"\0\0":
            return None
        following = data[start + 3]
        if following == 3:
            return _ethernet(start + 8, end, "vxlan")
        if following in (1, 2):
            return Inner("ipv4" if following == 1 else "ipv6", start + 8, end, "vxlan")
        raise _not_ip(f"VXLAN-GPE next protocol {following}")
    if flags & 0x7F != 0x08:
        return None
    if flags & 0x80 and data[start + 1] & ~0x48 & 0xFF:
        return None  # group policy (G): only the D and A flags
    if not flags & 0x80 and data[start + 1 : start + 4] != b"\0\0\0":
        return None
    return _ethernet(start + 8, end, "vxlan")


def _geneve(data: bytes, start: int, end: int) -> Inner | None:
    if end - start < 8 or data[start] >> 6:
        return None  # GENEVE is version 0; RTP/RTCP are version 2
    pos = start + 8 + (data[start] & 0x3F) * 4
    _need(start, pos - start, end, "GENEVE options")
    ptype = _U16(data, start + 2)[0]
    if ptype == GRE_TEB:
        return _ethernet(pos, end, "geneve")
    if ptype == GRE_IPV4:
        return Inner("ipv4", pos, end, "geneve")
    if ptype == GRE_IPV6:
        return Inner("ipv6", pos, end, "geneve")
    raise _not_ip(f"GENEVE protocol type 0x{ptype:04x}")


def _hep(data: bytes, start: int, end: int) -> HepDatagram | None:
    if end - start >= 6 and data[start : start + 4] == b"HEP3":
        return _hep3(data, start, end)
    if end - start >= 4 and data[start] in (1, 2) and (data[start + 2] == 2 or data[start + 2] in _AF_INET6):
        return _hep2(data, start, end)
    return None


def _hep2(data: bytes, start: int, end: int) -> HepDatagram:
    version = data[start]
    family = data[start + 2]
    transport = data[start + 3]
    _need(start, 8, end, "HEP header")
    sport, dport = _U16(data, start + 4)[0], _U16(data, start + 6)[0]
    pos = start + 8
    if family == 2:
        _need(pos, 8, end, "HEP IPv4 addresses")
        src = IPV4_MAPPED_PREFIX + data[pos : pos + 4]
        dst = IPV4_MAPPED_PREFIX + data[pos + 4 : pos + 8]
        pos += 8
    else:
        _need(pos, 32, end, "HEP IPv6 addresses")
        src = bytes(data[pos : pos + 16])
        dst = bytes(data[pos + 16 : pos + 32])
        pos += 32
    ts_ns = None
    if version == 2:
        _need(pos, 12, end, "HEP time header")
        sec, usec = _HEP2_TIME(data, pos)
        ts_ns = sec * 1_000_000_000 + usec * 1000
        pos += 12
    return HepDatagram(src, dst, sport, dport, transport, ts_ns, bytes(data[pos:end]), None, version)


def _hep3(data: bytes, start: int, end: int) -> HepDatagram:
    total = _U16(data, start + 4)[0]
    if total < 6:
        raise _bad(f"HEP3 length {total}")
    _need(start, total, end, "HEP3 packet")
    stop = start + total
    pos = start + 6
    family = transport = sport = dport = hep_type = None
    src4 = dst4 = src6 = dst6 = payload = None
    sec = usec = None
    while pos < stop:
        _need(pos, 6, stop, "HEP3 chunk header")
        vendor, ctype, size = _U16(data, pos)[0], _U16(data, pos + 2)[0], _U16(data, pos + 4)[0]
        if size < 6:
            raise _bad(f"HEP3 chunk length {size}")
        _need(pos, size, stop, "HEP3 chunk")
        body = pos + 6
        n = size - 6
        pos += size
        if vendor != 0:
            continue
        if ctype in (1, 2, 11):
            if n < 1:
                raise _bad(f"HEP3 chunk {ctype} is empty")
            if ctype == 1:
                family = data[body]
            elif ctype == 2:
                transport = data[body]
            else:
                hep_type = data[body]
        elif ctype in (3, 4, 5, 6):
            want = 4 if ctype < 5 else 16
            if n != want:
                raise _bad(f"HEP3 address chunk {ctype} of {n} bytes")
            value = bytes(data[body : body + n])
            if ctype == 3:
                src4 = value
            elif ctype == 4:
                dst4 = value
            elif ctype == 5:
                src6 = value
            else:
                dst6 = value
        elif ctype in (7, 8):
            if n != 2:
                raise _bad(f"HEP3 port chunk {ctype} of {n} bytes")
            if ctype == 7:
                sport = _U16(data, body)[0]
            else:
                dport = _U16(data, body)[0]
        elif ctype in (9, 10):
            if n != 4:
                raise _bad(f"HEP3 time chunk {ctype} of {n} bytes")
            if ctype == 9:
                sec = _U32(data, body)[0]
            else:
                usec = _U32(data, body)[0]
        elif ctype == 15:
            payload = bytes(data[body : body + n])
        elif ctype == 16:
            payload = _inflate(bytes(data[body : body + n]))
    if payload is None:
        raise _not_ip("HEP3 packet without payload (keepalive or report)")
    if sport is None or dport is None:
        raise _bad("HEP3 packet without ports")
    if family in _AF_INET6 or (family is None and src6 is not None):
        if src6 is None or dst6 is None:
            raise _bad("HEP3 IPv6 packet without addresses")
        src, dst = src6, dst6
    else:
        if src4 is None or dst4 is None:
            raise _bad("HEP3 packet without IPv4 addresses")
        src, dst = IPV4_MAPPED_PREFIX + src4, IPV4_MAPPED_PREFIX + dst4
    ts_ns = None if sec is None else sec * 1_000_000_000 + (usec or 0) * 1000
    return HepDatagram(
        src, dst, sport, dport, 17 if transport is None else transport, ts_ns, payload, hep_type, 3
    )


def _inflate(blob: bytes) -> bytes:
    """A HEP3 compressed payload (gzip or zlib), at most :data:`HEP_MAX_PAYLOAD` bytes."""
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        out = inflater.decompress(blob, HEP_MAX_PAYLOAD + 1)
    except zlib.error as exc:
        raise _bad(f"HEP3 compressed payload: {exc}") from exc
    if len(out) > HEP_MAX_PAYLOAD:
        raise _bad("HEP3 compressed payload inflates past the limit")
    if not inflater.eof:
        raise Truncated("HEP3 compressed payload ends early")
    return out
