"""capture.frames.tunnels: only ParseError after valid headers, and the real tunnelled captures."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.frames.tunnels import (
    HepDatagram,
    Inner,
    decapsulate_ip,
    decapsulate_udp,
)
from callrec.capture.model.errors import ParseError
from callrec.capture.sources.capture_file import read_batches
from tests.capture.test_tunnels import SHARED, _v4, hep3_sip, walk_frame

# -- random bytes after valid headers: only ParseError leaves ------------------------------------

PREFIXES = [
    (47, b"\x00\x00\x08\x00"),
    (47, b"\xb0\x00\x65\x58" + bytes(12)),
    (47, b"\x10\x00\x88\xbe\x00\x00\x00\x01"),
    (47, b"\x00\x00\x88\xbe"),
    (47, b"\x00\x00\x22\xeb"),
    (47, b"\x30\x81\x88\x0b"),
    (47, b"\x00\x00\x88\x47"),
    (47, b"\x40\x00\x08\x00\x00\x00\x00\x00"),
    (97, b"\x30\x00"),
    (4, b""),
    (41, b""),
]
UDP_PREFIXES = [
    (4789, b"\x08\x00\x00\x00"),
    (6081, b"\x00"),
    (9060, b"HEP3"),
    (9060, b"\x02"),
    (9060, b"\x01\x00\x0a"),
]


def _inner_in_bounds(got: object, start: int, end: int) -> None:
    if isinstance(got, Inner):
        assert start <= got.offset <= got.end <= end
        assert got.kind in ("ethernet", "ipv4", "ipv6")


@settings(max_examples=400, deadline=None)
@given(which=st.integers(0, len(PREFIXES) - 1), tail=st.binary(max_size=80), lead=st.binary(max_size=5))
def test_random_ip_tunnel_payloads_raise_only_parse_errors(which: int, tail: bytes, lead: bytes) -> None:
    proto, prefix = PREFIXES[which]
    data = lead + prefix + tail
    try:
        got = decapsulate_ip(proto, data + b"\x00" * 16, len(lead), len(data))
    except ParseError:
        return
    _inner_in_bounds(got, len(lead), len(data))


@settings(max_examples=400, deadline=None)
@given(which=st.integers(0, len(UDP_PREFIXES) - 1), tail=st.binary(max_size=120))
def test_random_udp_tunnel_payloads_raise_only_parse_errors(which: int, tail: bytes) -> None:
    port, prefix = UDP_PREFIXES[which]
    data = prefix + tail
    try:
        got = decapsulate_udp(5, port, data + b"\xff" * 16, 0, len(data))
    except ParseError:
        return
    _inner_in_bounds(got, 0, len(data))
    if isinstance(got, HepDatagram):
        assert len(got.src) == len(got.dst) == 16


@settings(max_examples=200, deadline=None)
@given(proto=st.sampled_from([4, 41, 47, 97]), data=st.binary(max_size=64))
def test_random_bytes_anywhere_raise_only_parse_errors(proto: int, data: bytes) -> None:
    calls = [
        lambda: decapsulate_ip(proto, data, 0, len(data)),
        lambda: decapsulate_udp(1, 9060, data, 0, len(data)),
        lambda: decapsulate_udp(1, 4789, data, 0, len(data)),
        lambda: decapsulate_udp(1, 6081, data, 0, len(data)),
    ]
    for call in calls:
        with contextlib.suppress(ParseError):
            call()


def test_hep3_chunks_with_random_values() -> None:
    chunks = hep3_sip()
    for cut in range(6, len(chunks)):  # every prefix of a valid packet, length field adjusted
        body = b"HEP3" + struct.pack("!H", cut) + chunks[6:cut]
        with contextlib.suppress(ParseError):
            decapsulate_udp(1, 9060, body, 0, len(body))


# -- real captures ---------------------------------------------------------------------------------


def _frames(path: Path) -> list[tuple[int, bytes, int, int, int]]:
    """(number, buffer, offset, end, linktype) for every frame, in the shared batch buffers."""
    out = []
    for batch in read_batches(path):
        for i in range(len(batch)):
            off, cap = int(batch.offsets[i]), int(batch.caplens[i])
            out.append((batch.first_number + i, batch.buffer, off, off + cap, int(batch.linktypes[i])))
    return out


def _tshark_inner(path: Path, transport: str) -> dict[int, tuple[str, str, int, int]]:
    """frame number -> the innermost (src, dst, sport, dport) tshark shows for SIP frames."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-Y",
            "sip",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            f"{transport}.srcport",
            "-e",
            f"{transport}.dstport",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {}
    for line in out.splitlines():
        number, src, dst, sport, dport = line.split("\t")
        rows[int(number)] = (src.split(",")[-1], dst.split(",")[-1], int(sport), int(dport))
    return rows


def _real(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{name} is not in ../shared/pcaps")
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    return path


REAL = [
    # file, transport, encapsulations of every SIP frame, SIP frames expected
    ("heplify/erspan_sip_ipv4_udp.pcapng", "udp", ("gre",), 140),
    ("sngrep/ipip.pcap", "tcp", ("ipip",), 2),
    ("ndpi/gre.pcapng", "udp", ("pptp",), 1),
    ("heplify/ipip0.pcap", "udp", (), 8),
]


@pytest.mark.parametrize(("name", "transport", "encaps", "count"), REAL)
def test_real_tunnelled_captures_match_tshark(
    name: str, transport: str, encaps: tuple[str, ...], count: int
) -> None:
    import ipaddress

    path = _real(name)
    expected = _tshark_inner(path, transport)
    seen = 0
    for number, buf, off, end, lt in _frames(path):
        found = walk_frame(buf, off, end, lt)
        if found is None or not found.encaps:
            continue
        assert found.encaps == encaps, number
        assert found.transport == transport
        if number not in expected:  # a TCP segment tshark does not call SIP (ACKs)
            continue
        src, dst, sport, dport = expected[number]
        mapped = lambda a: _v4(a) if "." in a else ipaddress.IPv6Address(a).packed  # noqa: E731
        assert (found.src, found.dst, found.sport, found.dport) == (mapped(src), mapped(dst), sport, dport)
        head = found.payload.split(b"\r\n", 1)[0]
        assert b"SIP/2.0" in head, (number, head)
        seen += 1
    if not encaps:  # no tunnel at all: every SIP frame is a direct UDP datagram
        direct = [walk_frame(buf, off, end, lt) for _, buf, off, end, lt in _frames(path)]
        assert sum(1 for f in direct if f is not None and f.transport == "udp") == count
        return
    assert seen == count
