"""capture.sip.message: name-addr and URI helpers, SIP detection on any port, and framing on a stream."""

from __future__ import annotations

import pytest

from callrec.capture.model.errors import NeedMoreData, ParseError
from callrec.capture.sip.addresses import NameAddr, parse_name_addr, parse_params, uri_host, uri_user
from callrec.capture.sip.message import looks_like_sip, message_length, parse_message
from tests.capture.test_sip import BASE, build

# --- name-addr and URIs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            '"Alice" <sip:alice@x;transport=udp>;tag=1',
            NameAddr("Alice", "sip:alice@x;transport=udp", {"tag": "1"}),
        ),
        ("<sip:x>", NameAddr("", "sip:x", {})),
        ("sip:bob@host;tag=2", NameAddr("", "sip:bob@host", {"tag": "2"})),
        ("sip:bob@host", NameAddr("", "sip:bob@host", {})),
        ("Bob Smith <sip:bob@host>;TAG=3;lr", NameAddr("Bob Smith", "sip:bob@host", {"tag": "3", "lr": ""})),
        ('"A \\"B\\" C\\\\" <sip:a@b>', NameAddr('A "B" C\\', "sip:a@b", {})),
        (
            '"Philippec2"<sip:10009@192.168.10.2>;tag=0e',
            NameAddr("Philippec2", "sip:10009@192.168.10.2", {"tag": "0e"}),
        ),
        ('"" <sip:a@b>', NameAddr("", "sip:a@b", {})),
        ('<sip:a@b>;x="quoted;value";tag=9', NameAddr("", "sip:a@b", {"x": "quoted;value", "tag": "9"})),
        ("  <tel:+1555> ; tag = 4 ", NameAddr("", "tel:+1555", {"tag": "4"})),
        ("*", NameAddr("", "*", {})),
    ],
)
def test_parse_name_addr(value: str, expected: NameAddr) -> None:
    assert parse_name_addr(value) == expected
    assert parse_name_addr(value).tag == expected.params.get("tag")


@pytest.mark.parametrize("value", ['"Alice <sip:a@b>', '"Alice" sip:a@b', "Alice <sip:a@b", '"x\\'])
def test_parse_name_addr_errors(value: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_name_addr(value)
    assert info.value.reason == "sip_malformed"


def test_unparseable_from_gives_none() -> None:
    msg = parse_message(
        build("INVITE sip:b@y SIP/2.0", "Call-ID: x", "CSeq: 1 INVITE", 'From: "broken <sip:a@b>')
    )
    assert msg.from_addr is None and msg.from_tag is None and msg.to_addr is None and msg.to_tag is None


def test_parse_params() -> None:
    assert parse_params(";Branch=z9hG4bK1;rport;received=192.0.2.1;branch=second") == {
        "branch": "z9hG4bK1",
        "rport": "",
        "received": "192.0.2.1",
    }
    assert parse_params("") == {}


@pytest.mark.parametrize(
    ("uri", "user", "host"),
    [
        ("sip:+352123@host;user=phone", "+352123", "host"),
        ("sip:+1-555-0100@gw.example.com;user=phone", "+15550100", "gw.example.com"),
        ("sip:+352-123@host", "+352-123", "host"),  # not user=phone: the user part as it is
        ("tel:+1-555-0100;phone-context=x", "+15550100", ""),
        ("tel:(555).0100", "5550100", ""),
        ("TEL:%2B33%201", "+33 1", ""),
        ("sip:host", "", "host"),
        ("sip:Host.Example.COM:5060;transport=tcp", "", "host.example.com"),
        ("sips:alice@Atlanta.com:5061", "alice", "atlanta.com"),
        ("sip:alice:secret@atlanta.com", "alice", "atlanta.com"),
        ("sip:j%40rgen@x", "j@rgen", "x"),
        ("sip:%E2%82%AC@x", "\u20ac", "x"),
        ("sip:bob@[2001:db8::1]:5060;transport=udp", "bob", "2001:db8::1"),
        ("sip:[2001:db8::1]", "", "2001:db8::1"),
        ("sip:bob@192.0.2.1?subject=project%20x", "bob", "192.0.2.1"),
        ("<sip:carol@chicago.com>", "carol", "chicago.com"),
        ("sip:u@fec0:0:0:0:216:d3ff:fe0d:22c", "u", "fec0:0:0:0:216:d3ff:fe0d:22c"),
        ("mailto:a@b", "", ""),
        ("urn:service:sos", "", ""),
        ("", "", ""),
    ],
)
def test_uri_user_and_host(uri: str, user: str, host: str) -> None:
    assert uri_user(uri) == user
    assert uri_host(uri) == host


# --- detection and stream framing ------------------------------------------------------------------

STUN_BINDING = bytes.fromhex("000100002112a442") + bytes(12)
RTP_PCMA = bytes([0x80, 0x08, 0x12, 0x34]) + bytes(8) + b"\xd5" * 160


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"OPTIONS rtsp://cam/stream RTSP/1.0\r\n\r\n",
        b"GET sip:x HTTP/1.1\r\n\r\n",
        b"INVITE sip:a b SIP/2.0\r\n\r\n",
        b"INVITE sip:b@y SIP/2.0",  # no line end
        b"SIP/2.0 20 OK\r\n",
        b"SIP/2.0 abc OK\r\n",
        b"SIP/2.0",
        b"\r\n\r\n",
        b"",
        b"\x00" * 40,
        STUN_BINDING,
        RTP_PCMA,
        bytes(range(256)),
    ],
)
def test_looks_like_sip_rejects(data: bytes) -> None:
    assert not looks_like_sip(data)


@pytest.mark.parametrize(
    "data",
    [
        b"INVITE sip:b@y SIP/2.0\r\n",
        b"OPTIONS sips:b@y SIP/2.0\n",
        b"INVITE tel:+15550100 SIP/2.0\r\n",
        b"INFO SIP:b@y sip/2.0\r\n",
        b"SIP/2.0 200 OK\r\n",
        b"SIP/2.0 200\r\n",
        b"\r\n\r\nBYE sip:b@y SIP/2.0\r\n",
    ],
)
def test_looks_like_sip_accepts(data: bytes) -> None:
    assert looks_like_sip(data)


def test_message_length_on_a_stream() -> None:
    first = build("MESSAGE sip:b@y SIP/2.0", *BASE, "Content-Length: 5", body=b"hello")
    second = build("SIP/2.0 200 OK", *BASE, "l:3", body=b"abc", eol="\n")
    third = build("BYE sip:b@y SIP/2.0", *BASE)  # no Content-Length: no body
    stream = b"\r\n\r\n" + first + b"\r\n" + second + third
    offsets = []
    offset = 0
    while offset < len(stream):
        size = message_length(stream, offset)
        offsets.append(offset)
        assert parse_message(stream[offset : offset + size]).call_id == "abc@host"
        offset += size
    assert offset == len(stream)
    assert offsets == [0, 4 + len(first), 4 + len(first) + 2 + len(second)]
    for cut in range(len(first) + 4):
        with pytest.raises(NeedMoreData):
            message_length(stream[:cut])
    with pytest.raises(NeedMoreData):
        message_length(b"\r\n\r\n")


def test_message_length_folded_content_length_and_limits() -> None:
    data = build("MESSAGE sip:b@y SIP/2.0", *BASE, "Content-Length:", " 4", body=b"abcdXYZ")
    assert message_length(data) == len(data) - 3
    with pytest.raises(ParseError):
        message_length(b"INVITE sip:b@y SIP/2.0\r\nX: " + b"x" * 70_000)
    with pytest.raises(ValueError):
        message_length(data, len(data) + 1)
