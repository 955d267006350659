"""Tunnel decapsulation (capture.frames.tunnels): hand-built packets of every kind, malformed and random
bytes (only ParseError leaves), and the tunnelled real captures in ../shared/pcaps checked against
the addresses tshark shows for the inner packets."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import NamedTuple

import pytest
from scapy.contrib.erspan import ERSPAN, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, GRE_PPTP, Dot1Q, Ether
from scapy.layers.ppp import PPP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw

from callrec.capture.frames.tunnels import (
    HEP_PORTS,
    MAX_DEPTH,
    HepDatagram,
    Inner,
    decapsulate_ip,
    decapsulate_udp,
)
from callrec.capture.model.errors import ParseError, Truncated
from callrec.capture.model.packets import IPV4_MAPPED_PREFIX, LINKTYPE_ETHERNET, LINKTYPE_RAW

SHARED = Path(__file__).resolve().parents[3] / "shared" / "pcaps"
SIP = b"INVITE sip:bob@example.com SIP/2.0\r\nCall-ID: tunnel-test\r\n\r\n"
A4, B4 = "192.0.2.1", "192.0.2.2"  # outer (tunnel endpoints)
C4, D4 = "198.51.100.10", "198.51.100.20"  # inner (the call)
C6, D6 = "2001:db8::10", "2001:db8::20"


# -- a small reference walker: what framescalar.py will do with these functions ---------------


class Found(NamedTuple):
    transport: str  # "udp", "tcp" or "hep"
    src: bytes
    dst: bytes
    sport: int
    dport: int
    payload: bytes
    encaps: tuple[str, ...]


def _v4(addr: str) -> bytes:
    return IPV4_MAPPED_PREFIX + bytes(int(x) for x in addr.split("."))


def _v6(addr: str) -> bytes:
    import ipaddress

    return ipaddress.IPv6Address(addr).packed


def walk_frame(buf: bytes, off: int, end: int, linktype: int = LINKTYPE_ETHERNET) -> Found | None:
    if linktype == LINKTYPE_RAW:
        return _ip(buf, off, end, buf[off] >> 4, (), 0)
    return _ether(buf, off, end, (), 0)


def _ether(buf: bytes, off: int, end: int, encaps: tuple[str, ...], depth: int) -> Found | None:
    if end - off < 14:
        raise Truncated("ethernet")
    et, pos = struct.unpack_from("!H", buf, off + 12)[0], off + 14
    while et in (0x8100, 0x88A8):
        et, pos = struct.unpack_from("!H", buf, pos + 2)[0], pos + 4
    if et not in (0x0800, 0x86DD):
        return None
    return _ip(buf, pos, end, 4 if et == 0x0800 else 6, encaps, depth)


def _ip(buf: bytes, off: int, end: int, version: int, encaps: tuple[str, ...], depth: int) -> Found | None:
    if version == 4:
        ihl, total, proto = (buf[off] & 15) * 4, struct.unpack_from("!H", buf, off + 2)[0], buf[off + 9]
        src, dst = (
            IPV4_MAPPED_PREFIX + buf[off + 12 : off + 16],
            IPV4_MAPPED_PREFIX + buf[off + 16 : off + 20],
        )
        start, stop = off + ihl, off + total
    else:
        proto, plen = buf[off + 6], struct.unpack_from("!H", buf, off + 4)[0]
        src, dst = buf[off + 8 : off + 24], buf[off + 24 : off + 40]
        start, stop = off + 40, off + 40 + plen
    assert stop <= end
    inner = decapsulate_ip(proto, buf, start, stop)
    if inner is not None:
        return _follow(buf, inner, encaps, depth)
    sport, dport = struct.unpack_from("!HH", buf, start)
    if proto == 6:
        return Found("tcp", src, dst, sport, dport, buf[start + (buf[start + 12] >> 4) * 4 : stop], encaps)
    if proto != 17:
        return None
    ulen = struct.unpack_from("!H", buf, start + 4)[0]
    got = decapsulate_udp(sport, dport, buf, start + 8, start + ulen)
    if isinstance(got, HepDatagram):
        return Found("hep", got.src, got.dst, got.src_port, got.dst_port, got.payload, (*encaps, "hep"))
    if got is not None:
        return _follow(buf, got, encaps, depth)
    return Found("udp", src, dst, sport, dport, buf[start + 8 : start + ulen], encaps)


def _follow(buf: bytes, inner: Inner, encaps: tuple[str, ...], depth: int) -> Found | None:
    assert inner.offset <= inner.end
    if depth + 1 > MAX_DEPTH:
        raise ParseError("too deep", reason="tunnel_depth")
    encaps = (*encaps, inner.encap)
    if inner.kind == "ethernet":
        return _ether(buf, inner.offset, inner.end, encaps, depth + 1)
    return _ip(buf, inner.offset, inner.end, 4 if inner.kind == "ipv4" else 6, encaps, depth + 1)


def walk(pkt: Packet | bytes) -> Found | None:
    raw = bytes(pkt)
    framed = b"\xee" * 7 + raw + b"\xee" * 9  # a frame inside a bigger buffer: bounds matter
    return walk_frame(framed, 7, 7 + len(raw))


def eth() -> Packet:
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def inner_udp4() -> Packet:
    return IP(src=C4, dst=D4) / UDP(sport=5060, dport=5062) / Raw(SIP)


def inner_udp6() -> Packet:
    return IPv6(src=C6, dst=D6) / UDP(sport=5060, dport=5062) / Raw(SIP)


def check(found: Found | None, *encaps: str, v6: bool = False) -> None:
    assert found is not None
    assert found.payload == SIP
    assert (found.src, found.dst) == ((_v6(C6), _v6(D6)) if v6 else (_v4(C4), _v4(D4)))
    assert (found.sport, found.dport) == (5060, 5062)
    assert found.encaps == encaps


# -- GRE -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("chksum", [0, 1])
@pytest.mark.parametrize("key", [0, 1])
@pytest.mark.parametrize("seq", [0, 1])
def test_gre_optional_words(chksum: int, key: int, seq: int) -> None:
    gre = GRE(chksum_present=chksum, key_present=key, seqnum_present=seq, key=0x1234, sequence_number=7)
    check(walk(eth() / IP(src=A4, dst=B4) / gre / inner_udp4()), "gre")


def test_gre_ipv6_inside_and_outside() -> None:
    check(walk(eth() / IPv6(src="2001:db8:1::1", dst="2001:db8:1::2") / GRE() / inner_udp6()), "gre", v6=True)
    check(walk(eth() / IP(src=A4, dst=B4) / GRE(key_present=1) / inner_udp6()), "gre", v6=True)


def test_gre_transparent_ethernet_with_vlan() -> None:
    frame = eth() / IP(src=A4, dst=B4) / GRE(proto=0x6558) / eth() / Dot1Q(vlan=12) / inner_udp4()
    check(walk(frame), "gre")


def test_gre_rfc1701_routing_entries_are_skipped() -> None:
    sre = struct.pack("!HBB", 0x0800, 0, 8) + bytes(8) + struct.pack("!HBB", 0, 0, 0)
    header = struct.pack("!HH", 0x4000, 0x0800) + struct.pack("!HH", 0, 0) + sre
    payload = header + bytes(inner_udp4())
    check(walk(eth() / IP(src=A4, dst=B4, proto=47) / Raw(payload)), "gre")


def test_gre_mpls_inside() -> None:
    labels = struct.pack("!I", (100 << 12) | 0x40) + struct.pack("!I", (200 << 12) | 0x140)
    payload = struct.pack("!HH", 0, 0x8847) + labels + bytes(inner_udp4())
    check(walk(eth() / IP(src=A4, dst=B4, proto=47) / Raw(payload)), "gre")


def test_erspan_type_i_ii_iii() -> None:
    mirrored = eth() / inner_udp4()
    outer = eth() / IP(src=A4, dst=B4)
    check(walk(outer / GRE(proto=0x88BE) / mirrored), "erspan1")
    frame2 = (
        outer / GRE(proto=0x88BE, seqnum_present=1, sequence_number=3) / ERSPAN_II(session_id=5) / mirrored
    )
    check(walk(frame2), "erspan2")
    check(walk(outer / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(session_id=5) / mirrored), "erspan3")
    with_sub = outer / GRE(proto=0x22EB) / ERSPAN_III(o=1) / ERSPAN_PlatformSpecific(platf_id=3) / mirrored
    check(walk(with_sub), "erspan3")
    check(walk(outer / GRE(proto=0x22EB) / ERSPAN_III(ft=2) / inner_udp4()), "erspan3")
    assert ERSPAN is not None  # scapy's generic layer binds the two above


def test_pptp_gre_ppp_variants() -> None:
    ip = bytes(inner_udp4())
    outer = eth() / IP(src=A4, dst=B4)
    for ppp in (b"\xff\x03\x00\x21", b"\x00\x21", b"\x21", b"\xff\x03\x21"):
        for seq, ack in ((0, 0), (1, 0), (1, 1), (0, 1)):
            gre = GRE_PPTP(seqnum_present=seq, acknum_present=ack, payload_len=len(ppp) + len(ip), call_id=9)
            check(walk(outer / gre / Raw(ppp + ip)), "pptp")
    six = bytes(inner_udp6())
    check(walk(outer / GRE_PPTP(payload_len=2 + len(six)) / PPP(proto=0x57) / Raw(six)), "pptp", v6=True)


def test_pptp_control_and_ack_only_are_not_ip() -> None:
    lcp = b"\xff\x03\xc0\x21\x01\x01\x00\x04"
    with pytest.raises(ParseError) as info:
        walk(eth() / IP(src=A4, dst=B4) / GRE_PPTP(payload_len=len(lcp)) / Raw(lcp))
    assert info.value.reason == "tunnel_not_ip"
    with pytest.raises(ParseError) as info:
        walk(eth() / IP(src=A4, dst=B4) / GRE_PPTP(seqnum_present=0, acknum_present=1, payload_len=0))
    assert info.value.reason == "tunnel_not_ip"


# -- IP in IP, EtherIP -------------------------------------------------------------------------


def test_ip_in_ip_all_four_combinations() -> None:
    check(walk(eth() / IP(src=A4, dst=B4) / inner_udp4()), "ipip")
    check(walk(eth() / IPv6(src="2001:db8:1::1", dst="2001:db8:1::2") / inner_udp4()), "ipip")
    check(walk(eth() / IP(src=A4, dst=B4) / inner_udp6()), "ipip", v6=True)
    check(walk(eth() / IPv6(src="2001:db8:1::1", dst="2001:db8:1::2") / inner_udp6()), "ipip", v6=True)


def test_etherip() -> None:
    check(
        walk(eth() / IP(src=A4, dst=B4, proto=97) / Raw(b"\x30\x00" + bytes(eth() / inner_udp4()))), "etherip"
    )


# -- UDP tunnels ---------------------------------------------------------------------------------


def test_vxlan_and_geneve() -> None:
    outer = eth() / IP(src=A4, dst=B4)
    rfc7348 = struct.pack("!II", 0x08000000, 42 << 8)
    check(walk(outer / UDP(sport=40000, dport=4789) / Raw(rfc7348) / eth() / inner_udp4()), "vxlan")
    # scapy writes the GPE form (P flag, next protocol 3 = Ethernet)
    check(walk(outer / UDP(sport=40000, dport=4789) / VXLAN(vni=42) / eth() / inner_udp4()), "vxlan")
    gpe_ip = struct.pack("!II", 0x0C000001, 42 << 8)
    check(walk(outer / UDP(sport=40000, dport=4790) / Raw(gpe_ip) / inner_udp4()), "vxlan")
    gbp = outer / UDP(sport=40000, dport=4789) / VXLAN(flags=0x88, gpflags=0x40, gpid=7, vni=1)
    check(walk(gbp / eth() / inner_udp4()), "vxlan")
    check(walk(outer / UDP(sport=40000, dport=6081) / GENEVE(proto=0x6558) / eth() / inner_udp4()), "geneve")
    opts = struct.pack("!BBHI", 2, 0, 0x0800, 7 << 8) + bytes(8)  # GENEVE with 8 bytes of options
    check(walk(outer / UDP(sport=40000, dport=6081) / Raw(opts + bytes(inner_udp4()))), "geneve")


def test_rtp_and_rtcp_on_tunnel_ports_are_plain_datagrams() -> None:
    rtcp = b"\x81\xc9\x00\x07" + bytes(28)
    rtp = b"\x80\x00\x00\x01" + bytes(8) + b"\xff" * 160
    for port in (4789, 4790, 6081, 9060):
        for body in (rtcp, rtp, b"SIP/2.0 200 OK\r\n\r\n", b""):
            found = walk(eth() / IP(src=C4, dst=D4) / UDP(sport=5004, dport=port) / Raw(body))
            assert found is not None and found.encaps == () and found.payload == body


# -- HEP -------------------------------------------------------------------------------------------


def chunk(ctype: int, body: bytes, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", vendor, ctype, 6 + len(body)) + body


def hep3(*chunks: bytes) -> bytes:
    body = b"".join(chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def hep3_sip(v6: bool = False, payload_chunk: bytes | None = None) -> bytes:
    if v6:
        addrs = chunk(1, b"\x0a") + chunk(5, _v6(C6)) + chunk(6, _v6(D6))
    else:
        addrs = chunk(1, b"\x02") + chunk(3, _v4(C4)[12:]) + chunk(4, _v4(D4)[12:])
    return hep3(
        addrs,
        chunk(2, b"\x11"),
        chunk(7, struct.pack("!H", 5060)),
        chunk(8, struct.pack("!H", 5062)),
        chunk(9, struct.pack("!I", 1_700_000_000)),
        chunk(10, struct.pack("!I", 123456)),
        chunk(11, b"\x01"),
        chunk(12, struct.pack("!I", 2001)),
        chunk(7, b"vendor-specific", vendor=0x0022),
        payload_chunk if payload_chunk is not None else chunk(15, SIP),
    )


def hep_udp(body: bytes, dport: int = 9060) -> Packet:
    return eth() / IP(src=A4, dst=B4) / UDP(sport=33333, dport=dport) / Raw(body)


def test_hep3_ipv4_ipv6_and_compressed() -> None:
    check(walk(hep_udp(hep3_sip())), "hep")
    check(walk(hep_udp(hep3_sip(v6=True))), "hep", v6=True)
    check(walk(hep_udp(hep3_sip(payload_chunk=chunk(16, gzip.compress(SIP))))), "hep")
    raw = hep3_sip()
    got = decapsulate_udp(33333, 9060, raw, 0, len(raw))
    assert isinstance(got, HepDatagram)
    assert (got.transport, got.ts_ns, got.hep_type, got.version) == (17, 1_700_000_000_123_456_000, 1, 3)


def test_hep3_without_payload_is_not_ip() -> None:
    keepalive = hep3(chunk(12, struct.pack("!I", 2001)))
    with pytest.raises(ParseError) as info:
        decapsulate_udp(1, 9060, keepalive, 0, len(keepalive))
    assert info.value.reason == "tunnel_not_ip"


def hep2_sip(version: int = 2, v6: bool = False) -> bytes:
    head = struct.pack("!BBBBHH", version, 0, 10 if v6 else 2, 17, 5060, 5062)
    addrs = _v6(C6) + _v6(D6) if v6 else _v4(C4)[12:] + _v4(D4)[12:]
    stamp = struct.pack("<IIHxx", 1_600_000_000, 500, 7) if version == 2 else b""
    return head + addrs + stamp + SIP


def test_hep_v1_v2() -> None:
    check(walk(hep_udp(hep2_sip())), "hep")
    check(walk(hep_udp(hep2_sip(v6=True))), "hep", v6=True)
    check(walk(hep_udp(hep2_sip(version=1))), "hep")
    raw = hep2_sip()
    got = decapsulate_udp(1, 9060, raw, 0, len(raw))
    assert isinstance(got, HepDatagram) and got.ts_ns == 1_600_000_000_000_500_000


def test_hep_ports_are_configurable() -> None:
    raw = hep3_sip()
    assert decapsulate_udp(1, 9999, raw, 0, len(raw)) is None
    assert isinstance(decapsulate_udp(1, 9999, raw, 0, len(raw), hep_ports=frozenset({9999})), HepDatagram)
    assert 9060 in HEP_PORTS


# -- not tunnels, malformed tunnels, nesting ---------------------------------------------------


def test_other_protocols_are_not_tunnels() -> None:
    data = bytes(64)
    for proto in (1, 6, 17, 50, 132):
        assert decapsulate_ip(proto, data, 0, 64) is None
    for port in (53, 5060, 5004, 4791):
        assert decapsulate_udp(1, port, data, 0, 64) is None


MALFORMED = [
    (47, b"\x20\x00\x08\x00\x00\x00", Truncated),  # key announced, 2 of 4 bytes there
    (47, b"\x00\x07\x08\x00", ParseError),  # GRE version 7
    (47, b"\x00\x00\x65\x58" + bytes(8), Truncated),  # Ethernet shorter than its header
    (47, b"\x10\x00\x88\xbe\x00\x00\x00\x01\x20\x00", Truncated),  # ERSPAN II header cut
    (47, b"\x10\x00\x88\xbe\x00\x00\x00\x01" + b"\x20" + bytes(7 + 14), ParseError),  # version 2, not 1
    (47, b"\x00\x00\x22\xeb" + b"\x20" + bytes(10) + b"\x01" + bytes(4), Truncated),  # O without subheader
    (47, b"\x00\x00\x22\xeb" + b"\x10" + bytes(11 + 14), ParseError),  # type III with version 1
    (47, b"\x30\x01\x88\x0b\x00\x40\x00\x01", Truncated),  # PPTP payload longer than the packet
    (47, b"\x10\x01\x88\x0b\x00\x00\x00\x01", ParseError),  # PPTP without the key bit
    (47, b"\x00\x00\x88\x47\x00\x00\x00\x00", Truncated),  # MPLS without bottom of stack
    (47, b"\x40\x00\x08\x00" + bytes(4) + b"\x08\x00\x00\x10", Truncated),  # route entry cut
    (97, b"\x40\x00" + bytes(14), ParseError),  # EtherIP version 4
    (97, b"\x30", Truncated),
]


@pytest.mark.parametrize(("proto", "data", "error"), MALFORMED)
def test_malformed_ip_tunnels(proto: int, data: bytes, error: type[ParseError]) -> None:
    padded = data + b"\xaa" * 50  # bytes past ``end`` belong to the next frame and are not read
    with pytest.raises(error):
        decapsulate_ip(proto, padded, 0, len(data))


@pytest.mark.parametrize(
    ("port", "data"),
    [
        (4789, b"\x08\x00\x00\x00\x00\x00\x2a\x00" + bytes(10)),  # inner Ethernet cut
        (6081, b"\x3f\x00\x65\x58" + bytes(20)),  # 252 bytes of options announced
        (9060, b"HEP3\x00\x40" + bytes(10)),  # HEP3 longer than the datagram
        (9060, b"HEP3\x00\x0c\x00\x00\x00\x0f\x00\x09"),  # chunk longer than the packet
        (9060, b"\x02\x10\x02\x11\x13\xc4\x13\xc4\x01\x02"),  # HEPv2 addresses cut
    ],
)
def test_truncated_udp_tunnels(port: int, data: bytes) -> None:
    with pytest.raises(Truncated):
        decapsulate_udp(1, port, data + b"\xaa" * 50, 0, len(data))


def test_bad_hep3_chunks() -> None:
    for bad in (
        hep3(chunk(3, b"\x01\x02"), chunk(15, SIP)),  # 2-byte IPv4 address
        hep3(chunk(15, SIP)),  # no ports, no addresses
        b"HEP3\x00\x0c\x00\x00\x00\x0f\x00\x03",  # chunk length below its header
        hep3_sip(payload_chunk=chunk(16, b"not compressed")),
    ):
        with pytest.raises(ParseError) as info:
            decapsulate_udp(1, 9060, bad, 0, len(bad))
        assert info.value.reason == "bad_tunnel_header"


def test_bounds_outside_the_buffer_are_refused() -> None:
    with pytest.raises(ParseError):
        decapsulate_ip(47, bytes(10), 4, 20)
    with pytest.raises(ParseError):
        decapsulate_udp(1, 4789, bytes(10), 8, 4)


def test_nesting_is_followed_up_to_the_limit() -> None:
    frame = eth() / IP(src=A4, dst=B4) / UDP(sport=1, dport=4789) / VXLAN() / eth() / IP(src=A4, dst=B4)
    frame = frame / GRE() / IPv6(src="2001:db8:1::1", dst="2001:db8:1::2") / inner_udp4()
    check(walk(frame), "vxlan", "gre", "ipip")
    deep: Packet = inner_udp4()
    for _ in range(MAX_DEPTH + 1):
        deep = IP(src=A4, dst=B4) / deep
    with pytest.raises(ParseError) as info:
        walk(eth() / deep)
    assert info.value.reason == "tunnel_depth"
    assert MAX_DEPTH == 4
