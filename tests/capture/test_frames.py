"""capture.frames.decoder: frames to UDP datagrams (link types, VLAN, IPv4/IPv6, fragments), both paths."""

from __future__ import annotations

import ipaddress
import random
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.frames.fragments import Reassembler
from callrec.capture.model.packets import BUFFER_PADDING, DatagramBatch, PacketBatch, address_text
from callrec.capture.sources.capture_file import read_batches

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"
NS = 1_000_000_000

# Per-frame counter keys: every frame counts exactly once in one of them.
PER_FRAME = {
    "udp_datagrams",
    "unsupported_linktype",
    "truncated",
    "not_ip",
    "bad_ip_header",
    "tcp",  # TCP without a SIP stream reassembler
    "tcp_segments",  # TCP handed to the SIP stream reassembler
    "bad_tcp_header",
    "not_udp",
    "bad_udp_header",
    "ip_fragment_pending",
    "fragment_duplicate",
    "fragment_overlap",
    "fragment_bad",
    "bad_tunnel_header",  # a mirror tunnel (GRE, ERSPAN, VXLAN, IP-in-IP ...) too short or malformed
    "tunnel_depth",
    "tunnel_not_ip",
    "hep_not_udp",
}


# -- builders ---------------------------------------------------------------------------------


def a4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def a6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def udp(sport: int, dport: int, payload: bytes, length: int | None = None) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload) if length is None else length, 0) + payload


def ipv4(
    payload: bytes,
    src: str = "10.0.0.1",
    dst: str = "10.0.0.2",
    proto: int = 17,
    ident: int = 1,
    frag: int = 0,
    options: bytes = b"",
    total: int | None = None,
    first: int | None = None,
) -> bytes:
    ihl = 5 + len(options) // 4
    b0 = 0x40 | ihl if first is None else first
    size = ihl * 4 + len(payload) if total is None else total
    head = struct.pack("!BBHHHBBH4s4s", b0, 0, size, ident, frag, 64, proto, 0, a4(src), a4(dst))
    return head + options + payload


def ipv6(
    payload: bytes, src: str = "2001:db8::1", dst: str = "2001:db8::2", nh: int = 17, plen: int | None = None
) -> bytes:
    size = len(payload) if plen is None else plen
    return struct.pack("!IHBB", 0x60000000, size, nh, 64) + a6(src) + a6(dst) + payload


def ext(nh: int, size8: int = 0) -> bytes:
    """A hop-by-hop / routing / destination options header of 8 * (size8 + 1) bytes (PadN inside)."""
    body = bytes([1, 4 + 8 * size8]) + bytes(4 + 8 * size8)
    return bytes([nh, size8]) + body


def frag6(nh: int, offset: int, more: bool, ident: int) -> bytes:
    return struct.pack("!BBHI", nh, 0, offset | int(more), ident)


def eth(l3: bytes, ethertype: int = 0x0800, tags: tuple[tuple[int, int], ...] = ()) -> bytes:
    out = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb"
    for tpid, vid in tags:
        out += struct.pack("!HH", tpid, vid)
    return out + struct.pack("!H", ethertype) + l3


def sll(l3: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00", proto) + l3


def sll2(l3: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", proto, 0, 2, 1, 0, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00") + l3


def make_batch(
    frames: list[tuple[bytes, int]],
    ts: list[int] | None = None,
    first_number: int = 1,
    caplens: list[int] | None = None,
    seed: int = 0,
) -> PacketBatch:
    """Frames in one buffer, separated by junk (as record headers would be), then zero padding."""
    rng = random.Random(seed)
    parts, offsets, pos = [], [], 0
    for data, _ in frames:
        gap = bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 16])))
        parts += [gap, data]
        offsets.append(pos + len(gap))
        pos += len(gap) + len(data)
    buffer = b"".join(parts) + bytes(BUFFER_PADDING)
    n = len(frames)
    return PacketBatch(
        buffer=buffer,
        offsets=np.array(offsets, dtype=np.int64),
        caplens=np.array([len(d) for d, _ in frames] if caplens is None else caplens, dtype=np.int64),
        ts_ns=np.array(ts if ts is not None else [NS * (i + 1) for i in range(n)], dtype=np.int64),
        linktypes=np.array([lt for _, lt in frames], dtype=np.int64),
        first_number=first_number,
    )


Row = tuple[int, int, str, str, int, int, int, bytes]


def rows(out: DatagramBatch) -> list[Row]:
    assert out.buffer[-BUFFER_PADDING:] == bytes(BUFFER_PADDING)
    assert bool((out.payload_offsets + out.payload_lengths <= len(out.buffer) - BUFFER_PADDING).all())
    return [
        (
            int(out.numbers[i]),
            int(out.ts_ns[i]),
            address_text(bytes(out.src_addr[i])),
            address_text(bytes(out.dst_addr[i])),
            int(out.src_port[i]),
            int(out.dst_port[i]),
            int(out.vlan[i]),
            out.payload(i),
        )
        for i in range(len(out))
    ]


def both_paths(batches: list[PacketBatch]) -> tuple[list[Row], Counter[str]]:
    """Decode with the vectorized and the forced scalar path; they must agree exactly."""
    results = []
    for force in (False, True):
        decoder = FrameDecoder(force_slow=force)
        got = [r for b in batches for r in rows(decoder.decode(b))]
        results.append((got, decoder.counters))
    assert results[0] == results[1]
    got, counters = results[0]
    assert sum(v for k, v in counters.items() if k in PER_FRAME) == sum(len(b) for b in batches)
    return got, counters


PAYLOAD = b"INVITE sip:bob@example.com SIP/2.0\r\n"
V4 = ipv4(udp(5060, 5062, PAYLOAD))
V6 = ipv6(udp(5060, 5062, PAYLOAD))


# -- link types -------------------------------------------------------------------------------


LINKS = [
    ("ethernet", eth(V4), 1, "10.0.0.1"),
    ("ethernet6", eth(V6, 0x86DD), 1, "2001:db8::1"),
    ("sll", sll(V4), 113, "10.0.0.1"),
    ("sll6", sll(V6, 0x86DD), 113, "2001:db8::1"),
    ("sll2", sll2(V4), 276, "10.0.0.1"),
    ("null_le", struct.pack("<I", 2) + V4, 0, "10.0.0.1"),
    ("null_be", struct.pack(">I", 2) + V4, 0, "10.0.0.1"),
    ("null6_bsd", struct.pack("<I", 24) + V6, 0, "2001:db8::1"),
    ("null6_freebsd", struct.pack("<I", 28) + V6, 0, "2001:db8::1"),
    ("null6_darwin", struct.pack(">I", 30) + V6, 0, "2001:db8::1"),
    ("loop", struct.pack(">I", 2) + V4, 108, "10.0.0.1"),
    ("loop6", struct.pack(">I", 24) + V6, 108, "2001:db8::1"),
    ("raw4", V4, 101, "10.0.0.1"),
    ("raw6", V6, 101, "2001:db8::1"),
    ("ipv4", V4, 228, "10.0.0.1"),
    ("ipv6", V6, 229, "2001:db8::1"),
]


@pytest.mark.parametrize(("name", "data", "linktype", "src"), LINKS, ids=[x[0] for x in LINKS])
def test_every_linktype(name: str, data: bytes, linktype: int, src: str) -> None:
    got, counters = both_paths([make_batch([(data, linktype)], ts=[7 * NS], first_number=41)])
    dst = src[:-1] + "2"
    assert got == [(41, 7 * NS, src, dst, 5060, 5062, -1, PAYLOAD)]
    assert counters == Counter(udp_datagrams=1)


def test_mixed_linktypes_in_one_batch_keep_capture_order() -> None:
    frames = [(d, lt) for _, d, lt, _ in LINKS] * 2
    got, _ = both_paths([make_batch(frames, seed=3)])
    assert [r[0] for r in got] == list(range(1, len(frames) + 1))


def test_unsupported_linktype_is_only_counted() -> None:
    got, counters = both_paths([make_batch([(eth(V4), 105), (eth(V4), 127)])])
    assert got == [] and counters == Counter(unsupported_linktype=2)


def test_ipv4_mapped_addresses_and_columns() -> None:
    out = FrameDecoder().decode(make_batch([(eth(V4), 1), (eth(V6, 0x86DD), 1)]))
    assert out.src_addr.dtype == np.uint8 and out.src_addr.shape == (2, 16)
    assert bytes(out.src_addr[0]) == bytes(10) + b"\xff\xff" + a4("10.0.0.1")
    assert bytes(out.dst_addr[1]) == a6("2001:db8::2")
    for col in (
        out.ts_ns,
        out.src_port,
        out.dst_port,
        out.payload_offsets,
        out.payload_lengths,
        out.vlan,
        out.numbers,
    ):
        assert col.dtype == np.int64


# -- VLAN -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "vlan"),
    [
        ((), -1),
        (((0x8100, 24),), 24),
        (((0x8100, 0x2000 | 4094),), 4094),
        (((0x88A8, 100), (0x8100, 200)), 100),
        (((0x9100, 7), (0x8100, 8)), 7),
        (((0x9100, 5), (0x88A8, 6), (0x8100, 9)), 5),
        (((0x8100, 1),) * 5, 1),
    ],
)
def test_vlan_tags_keep_the_outer_id(tags: tuple[tuple[int, int], ...], vlan: int) -> None:
    got, counters = both_paths([make_batch([(eth(V4, tags=tags), 1), (eth(V6, 0x86DD, tags=tags), 1)])])
    assert [r[6] for r in got] == [vlan, vlan] and [r[7] for r in got] == [PAYLOAD] * 2


def test_vlan_after_linux_cooked_header() -> None:
    data = sll(struct.pack("!HH", 30, 0x0800) + V4, proto=0x8100)
    got, _ = both_paths([make_batch([(data, 113), (sll2(struct.pack("!HH", 31, 0x86DD) + V6, 0x8100), 276)])])
    assert [r[6] for r in got] == [30, 31]


def test_vlan_tag_cut_short_is_truncated() -> None:
    data = eth(V4, tags=((0x8100, 5),))
    _, counters = both_paths([make_batch([(data, 1)] * 4, caplens=[13, 14, 16, 17])])
    assert counters == Counter(truncated=4)


# -- IPv4 / IPv6 shapes -----------------------------------------------------------------------


def test_ipv4_options_take_the_scalar_path() -> None:
    data = eth(ipv4(udp(1, 2, b"x" * 10), options=b"\x94\x04\x00\x00" * 2))
    got, counters = both_paths([make_batch([(data, 1)])])
    assert [r[7] for r in got] == [b"x" * 10]


def test_ipv6_extension_headers() -> None:
    chain = ext(43) + ext(60, 1) + ext(17) + udp(7, 8, b"ext")
    ah = bytes([17, 2]) + bytes(14)  # AH: (payload len 2 + 2) * 4 = 16 bytes
    frames = [
        (eth(ipv6(chain, nh=0), 0x86DD), 1),
        (eth(ipv6(ah + udp(9, 10, b"ah"), nh=51), 0x86DD), 1),
        (eth(ipv6(frag6(17, 0, False, 99) + udp(11, 12, b"atomic"), nh=44), 0x86DD), 1),
        (eth(ipv6(b"\x00" * 16, nh=50), 0x86DD), 1),  # ESP: encrypted
        (eth(ipv6(b"", nh=59), 0x86DD), 1),  # no next header
        (eth(ipv6(ext(17, 3)[:16], nh=0), 0x86DD), 1),  # extension header longer than the payload
        (eth(ipv6(udp(1, 2, b"t"), nh=6), 0x86DD), 1),
        (eth(ipv6(b"\x80\x00" + bytes(6), nh=58), 0x86DD), 1),  # ICMPv6
    ]
    got, counters = both_paths([make_batch(frames)])
    assert [(r[0], r[4], r[7]) for r in got] == [(1, 7, b"ext"), (2, 9, b"ah"), (3, 11, b"atomic")]
    # the TCP "segment" is a UDP header under protocol 6: data offset 0, a malformed TCP header
    assert counters == Counter(udp_datagrams=3, not_udp=3, bad_ip_header=1, bad_tcp_header=1)


def test_skipped_frames_are_counted_by_reason() -> None:
    frames = [
        (eth(b"\x00\x01\x08\x00\x06\x04" + bytes(22), 0x0806), 1),  # ARP
        (eth(V4, 0x05DC), 1),  # 802.3 length field
        (eth(ipv4(b"\x00" * 20, proto=6)), 1),  # TCP
        (eth(ipv4(b"\x08\x00" + bytes(6), proto=1)), 1),  # ICMP
        (eth(ipv4(udp(1, 2, b""), first=0x55)), 1),  # version 5
        (eth(ipv4(udp(1, 2, b""), first=0x44)), 1),  # IHL 4
        (eth(ipv4(udp(1, 2, b""), total=12)), 1),  # total length below the header
        (eth(ipv4(udp(1, 2, b"abc"), total=200)), 1),  # total length beyond the capture: truncated
        (eth(ipv4(udp(1, 2, b"abc", length=20))), 1),  # UDP length beyond the IP payload
        (eth(ipv4(udp(1, 2, b"abc", length=7))), 1),  # UDP length below its header
        (eth(ipv4(b"\x00\x01\x00\x02")), 1),  # IP payload shorter than a UDP header
        (eth(ipv6(udp(1, 2, b"x"), plen=300), 0x86DD), 1),  # IPv6 payload beyond the capture
        (eth(V6, 0x0800), 1),  # IPv6 behind the IPv4 ethertype
        (V4, 229),
        (V6, 228),  # version does not match the link type
        (b"\x00", 101),
        (b"", 101),
        (b"\x00\x00", 0),
        (b"\x00" * 13, 1),
        (b"\x50" + bytes(30), 101),
    ]
    got, counters = both_paths([make_batch(frames)])
    assert got == []
    assert counters == Counter(
        not_ip=4, bad_tcp_header=1, not_udp=1, bad_ip_header=6, truncated=5, bad_udp_header=3
    )


def test_ethernet_trailer_padding_and_fcs_are_not_payload() -> None:
    short = eth(ipv4(udp(1000, 2000, b"hi")))
    padded = short + bytes(60 - len(short)) + b"\xde\xad\xbe\xef"
    v6 = eth(ipv6(udp(1000, 2000, b"hi")), 0x86DD) + b"\xff" * 6
    got, _ = both_paths([make_batch([(padded, 1), (v6, 1)])])
    assert [r[7] for r in got] == [b"hi", b"hi"]


def test_udp_length_shorter_than_ip_payload_bounds_the_payload() -> None:
    data = eth(ipv4(udp(1, 2, b"abcdef", length=11)))
    got, _ = both_paths([make_batch([(data, 1)])])
    assert got[0][7] == b"abc"


def test_frame_cut_by_snaplen_is_truncated() -> None:
    data = eth(V4)
    _, counters = both_paths([make_batch([(data, 1)] * 3, caplens=[len(data) - 1, 30, 14])])
    assert counters == Counter(truncated=3)


def test_pppoe_and_mpls() -> None:
    pppoe = struct.pack("!BBHHH", 0x11, 0, 0x18E5, len(V4) + 2, 0x0021) + V4
    pppoe6 = struct.pack("!BBHHH", 0x11, 0, 0x18E5, len(V6) + 2, 0x0057) + V6
    mpls = struct.pack("!I", (100 << 12) | 64) + struct.pack("!I", (200 << 12) | 0x100 | 64) + V4
    frames = [
        (eth(pppoe, 0x8864), 1),
        (eth(pppoe6, 0x8864, tags=((0x8100, 3),)), 1),
        (eth(mpls, 0x8847), 1),
        (eth(struct.pack("!BBHHH", 0x11, 0, 1, 2, 0xC021), 0x8864), 1),  # LCP
        (eth(struct.pack("!I", 0x100) + bytes(20), 0x8847), 1),
        (eth(b"\x00\x00", 0x8847), 1),
    ]
    got, counters = both_paths([make_batch(frames)])
    assert [(r[6], r[7]) for r in got] == [(-1, PAYLOAD), (3, PAYLOAD), (-1, PAYLOAD)]
    assert counters == Counter(udp_datagrams=3, not_ip=2, truncated=1)


# -- fragments --------------------------------------------------------------------------------


def v4_fragments(payload: bytes, size: int, ident: int = 7, src: str = "10.0.0.1") -> list[bytes]:
    """IPv4 fragments of a UDP datagram, ``size`` bytes of IP payload each (multiple of 8)."""
    body = udp(5060, 5060, payload)
    out = []
    for start in range(0, len(body), size):
        more = start + size < len(body)
        out.append(
            ipv4(body[start : start + size], src=src, ident=ident, frag=(0x2000 if more else 0) | start // 8)
        )
    return out


def v6_fragments(
    payload: bytes, size: int, ident: int = 7, lead: bytes = b"", lead_nh: int = 44
) -> list[bytes]:
    body = udp(5060, 5060, payload)
    out = []
    for start in range(0, len(body), size):
        more = start + size < len(body)
        out.append(ipv6(lead + frag6(17, start, more, ident) + body[start : start + size], nh=lead_nh))
    return out


BIG = bytes(range(256)) * 12  # 3072 bytes


@pytest.mark.parametrize("order", ["in", "reverse", "shuffled"])
def test_ipv4_fragments_reassemble_in_the_completing_frame_position(order: str) -> None:
    frags = [eth(f) for f in v4_fragments(BIG, 1480)]
    idx = list(range(len(frags)))
    if order == "reverse":
        idx.reverse()
    elif order == "shuffled":
        random.Random(5).shuffle(idx)
    frames = [(eth(V4), 1)] + [(frags[i], 1) for i in idx] + [(eth(V6, 0x86DD), 1)]
    ts = [NS * (i + 1) for i in range(len(frames))]
    got, counters = both_paths([make_batch(frames, ts=ts)])
    last = len(frags) + 1
    assert [(r[0], r[1], r[7]) for r in got] == [
        (1, NS, PAYLOAD),
        (last, last * NS, BIG),
        (last + 1, (last + 1) * NS, PAYLOAD),
    ]
    assert counters["reassembled"] == 1 and counters["ip_fragment_pending"] == len(frags) - 1


def test_ipv6_fragments_with_extension_headers_before_and_after() -> None:
    body = ext(17) + udp(5060, 5060, BIG)  # a destination options header inside the fragmentable part
    frags = []
    for start in range(0, len(body), 1232):
        more = start + 1232 < len(body)
        frags.append(ipv6(ext(44) + frag6(60, start, more, 0xABCDEF) + body[start : start + 1232], nh=0))
    frames = [(eth(f, 0x86DD), 1) for f in reversed(frags)]
    got, counters = both_paths([make_batch(frames)])
    assert [(r[0], r[2], r[7]) for r in got] == [(len(frags), "2001:db8::1", BIG)]


def test_fragments_across_batches_and_reassembled_bytes_after_the_buffer() -> None:
    frags = [(eth(f), 1) for f in v4_fragments(BIG, 1480)] + [
        (eth(f, 0x86DD), 1) for f in v6_fragments(BIG, 1024)
    ]
    batches = [
        make_batch([fr, (eth(V4), 1)], first_number=1 + 2 * i, ts=[NS * i, NS * i + 1], seed=i)
        for i, fr in enumerate(frags)
    ]
    got, counters = both_paths(batches)
    assert [(r[0], r[7]) for r in got if r[7] == BIG] == [(5, BIG), (13, BIG)]
    out = FrameDecoder()
    for b in batches[:2]:
        out.decode(b)
    done = out.decode(batches[2])
    assert len(done.buffer) == len(batches[2].buffer) + len(BIG) + BUFFER_PADDING
    assert int(done.payload_offsets[0]) == len(batches[2].buffer)


def test_fragments_through_a_pcap_file_with_tiny_batches(tmp_path: Path) -> None:
    frames = (
        [eth(V4)]
        + [eth(f) for f in v4_fragments(BIG, 1480)]
        + [eth(f, 0x86DD) for f in v6_fragments(BIG, 800)]
    )
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    records = b"".join(struct.pack("<IIII", i, 0, len(f), len(f)) + f for i, f in enumerate(frames))
    path = tmp_path / "frag.pcap"
    path.write_bytes(header + records)
    results = []
    for batch_bytes in (1, 2000, 1 << 20):
        decoder = FrameDecoder()
        results.append([r for b in read_batches(path, batch_bytes) for r in rows(decoder.decode(b))])
    assert results[0] == results[1] == results[2]
    assert [(r[0], len(r[7])) for r in results[0]] == [
        (1, len(PAYLOAD)),
        (4, len(BIG)),
        (len(frames), len(BIG)),
    ]


def test_fragment_timeout_and_bounds_are_counted() -> None:
    decoder = FrameDecoder(reassembler=Reassembler(max_pending=2, timeout_ns=30 * NS))
    first = [eth(v4_fragments(BIG, 1480, ident=i)[0]) for i in range(3)]
    decoder.decode(make_batch([(f, 1) for f in first], ts=[0, 1, 2]))
    assert decoder.counters["fragment_evicted"] == 1
    rest = eth(v4_fragments(BIG, 1480, ident=1)[1])
    decoder.decode(make_batch([(rest, 1)], ts=[31 * NS]))
    assert decoder.counters["fragment_timeout"] == 2
    decoder.finish()
    assert decoder.counters["fragment_incomplete"] == 1


def test_duplicate_fragment_is_ignored() -> None:
    frags = [eth(f) for f in v4_fragments(BIG, 1480)]
    got, counters = both_paths([make_batch([(frags[0], 1), (frags[0], 1), (frags[1], 1), (frags[2], 1)])])
    assert [r[7] for r in got] == [BIG] and counters["fragment_duplicate"] == 1
