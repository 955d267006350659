"""RTP/RTCP headers: the scalar parser, the vectorized column parser, and their agreement."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.model.errors import ParseError, Truncated
from callrec.capture.model.packets import BUFFER_PADDING
from callrec.capture.streams.rtp import is_rtcp, parse_rtp, parse_rtp_columns


def packet(
    *,
    seq: int = 1,
    ts: int = 160,
    ssrc: int = 0x11223344,
    pt: int = 0,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    ext: bytes | None = None,
    payload: bytes = b"\x01\x02\x03",
    pad: int = 0,
) -> bytes:
    b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext is not None else 0) | len(csrcs)
    out = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if ext is not None:
        out += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    out += payload
    if pad:
        out += bytes(pad - 1) + bytes([pad])
    return out


def columns(packets: list[bytes]):
    buf = b"".join(packets) + bytes(BUFFER_PADDING)
    offsets = np.cumsum([0] + [len(p) for p in packets[:-1]]).astype(np.int64)
    lengths = np.array([len(p) for p in packets], dtype=np.int64)
    ts = np.arange(len(packets), dtype=np.int64) * 1000
    return parse_rtp_columns(buf, offsets, lengths, ts)


def test_plain_header() -> None:
    h = parse_rtp(packet(seq=65535, ts=0xFFFFFFFF, pt=8, marker=True))
    assert (h.version, h.sequence_number, h.timestamp, h.ssrc) == (2, 65535, 0xFFFFFFFF, 0x11223344)
    assert (h.payload_type, h.marker, h.payload) == (8, True, b"\x01\x02\x03")


def test_csrcs_extension_and_padding_are_removed_from_the_payload() -> None:
    h = parse_rtp(packet(csrcs=(7, 9), ext=b"abcdefgh", payload=b"xyz", pad=5))
    assert h.csrcs == (7, 9) and h.extension_profile == 0xBEDE and h.extension_data == b"abcdefgh"
    assert h.payload == b"xyz" and h.padding_length == 5


@pytest.mark.parametrize(
    ("data", "error", "text"),
    [
        (b"\x80\x00\x00", Truncated, "shorter than the 12-byte header"),
        (packet()[:1] + b"\x00" * 11, None, None),
        (bytes([0x40]) + packet()[1:], ParseError, "RTP version 1, expected 2"),
        (bytes([0x82]) + packet()[1:12] + b"\x00\x00\x00\x01", Truncated, "truncated CSRC list"),
        (bytes([0x90]) + packet()[1:12] + b"\xbe", Truncated, "truncated extension header"),
        (bytes([0x90]) + packet()[1:12] + b"\xbe\xde\x00\x02abcd", Truncated, "truncated extension"),
        (bytes([0xA0]) + packet()[1:12] + b"ab\x00", ParseError, "padding length 0 is invalid"),
        (bytes([0xA0]) + packet()[1:12] + b"ab\x09", ParseError, "padding length 9 is invalid"),
    ],
)
def test_bad_headers_raise_specific_errors(
    data: bytes, error: type[Exception] | None, text: str | None
) -> None:
    if error is None:
        parse_rtp(data)
        return
    with pytest.raises(error, match=text):
        parse_rtp(data)


def test_rtcp_is_told_apart_by_packet_type() -> None:
    assert is_rtcp(bytes([0x80, 200]) + bytes(26))  # sender report
    assert is_rtcp(bytes([0x81, 201]) + bytes(30))  # receiver report
    assert not is_rtcp(packet(pt=0)) and not is_rtcp(packet(pt=111, marker=True))
    assert not is_rtcp(bytes([0x80, 200]))


def test_columns_match_the_scalar_parser_and_mark_invalid_rows() -> None:
    good = [
        packet(seq=i, ts=i * 160, pt=i % 2 * 8, marker=i == 3, payload=bytes([i]) * (160 + i))
        for i in range(5)
    ]
    odd = packet(csrcs=(1,), ext=b"abcd", payload=b"pp", pad=3)
    bad = [b"\x80\x00" + bytes(8), bytes([0x8F]) + bytes(20)]  # too short; 15 CSRCs announced
    packets, valid = columns([*good, bad[0], odd, bad[1]])
    assert valid.tolist() == [True] * 5 + [False, True, False]
    assert len(packets) == 6
    for i, raw in enumerate([*good, odd]):
        h = parse_rtp(raw)
        assert packets.seq[i] == h.sequence_number and packets.rtp_ts[i] == h.timestamp
        assert packets.ssrc[i] == h.ssrc and packets.payload_type[i] == h.payload_type
        assert bool(packets.marker[i]) == h.marker and packets.payload_bytes(i) == h.payload
    assert packets.ts_ns.tolist() == [0, 1000, 2000, 3000, 4000, 6000]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=80), min_size=1, max_size=20))
def test_columns_agree_with_scalar_on_any_bytes(datas: list[bytes]) -> None:
    datas = [d if i % 2 else bytes([0x80 | (d[0] & 0x3F)]) + d[1:] if d else d for i, d in enumerate(datas)]
    packets, valid = columns(datas)
    j = 0
    for raw, ok in zip(datas, valid.tolist(), strict=True):
        try:
            h = parse_rtp(raw)
        except ParseError:
            assert not ok, raw
            continue
        assert ok, raw
        assert packets.payload_bytes(j) == h.payload and packets.seq[j] == h.sequence_number
        j += 1
    assert j == len(packets)


@given(st.binary(max_size=64))
def test_scalar_parser_raises_only_parse_errors(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_rtp(data)
