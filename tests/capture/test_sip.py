"""capture.sip.message: SIP message parsing on real captured messages, hand-made edge cases and properties."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from callrec.capture.model.errors import NeedMoreData, ParseError, Truncated
from callrec.capture.sip.addresses import NameAddr, parse_name_addr, split_header_list, uri_host, uri_user
from callrec.capture.sip.message import (
    COMPACT_FORMS,
    MAX_HEADERS,
    SipMessage,
    TruncatedBody,
    canonical_header_name,
    looks_like_sip,
    message_length,
    parse_message,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "sip"
REAL = sorted(DATA.glob("*.sip"))
FUZZ = sorted((DATA / "fuzz").glob("*.sip"))
# Real messages whose Content-Length promises more than the datagram holds (see README.md).
SHORT_BODY = {"srtp-invite-ipfrag.sip", "mscml-multipart-invite.sip"}
COMPLETE = [path for path in REAL if path.name not in SHORT_BODY]


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def build(start: str, *headers: str, body: bytes = b"", eol: str = "\r\n") -> bytes:
    return (eol.join((start, *headers)) + eol + eol).encode() + body


BASE = ("Call-ID: abc@host", "CSeq: 1 INVITE", "From: <sip:a@x>;tag=f1", "To: <sip:b@y>")


def test_data_files_are_present() -> None:
    assert len(REAL) >= 15
    assert len(FUZZ) >= 50


@pytest.mark.skipif(not (DATA.parents[2].parent / "shared" / "pcaps").is_dir(), reason="no ../shared/pcaps")
def test_data_files_match_their_captures() -> None:
    pytest.importorskip("scapy")
    check = subprocess.run(
        [sys.executable, str(DATA / "extract.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr


# --- real messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMPLETE, ids=lambda p: p.name)
def test_real_messages_parse(path: Path) -> None:
    data = path.read_bytes()
    assert looks_like_sip(data)
    msg = parse_message(data)
    assert msg.call_id
    number, method = msg.cseq
    assert number >= 1 and method.isupper()
    assert msg.from_tag
    assert msg.via_branch and msg.via_branch.startswith("z9hG4bK")
    assert msg.is_request == (msg.method is not None) == (msg.status_code is None)
    if msg.content_length is not None:
        assert len(msg.body) == msg.content_length
    for sdp in msg.sdp_bodies():
        assert sdp.startswith(b"v=0")
    # As a stream, the message is exactly as long as the datagram.
    assert message_length(data) == len(data)
    assert message_length(b"\r\n\r\n" + data + b"OPTIONS", 2) == len(data) + 2


def test_real_invite() -> None:
    msg = parse_message(load("g711-invite.sip"))
    assert (msg.method, msg.request_uri, msg.status_code, msg.reason) == (
        "INVITE",
        "sip:francisco@bestel.com:55060",
        None,
        None,
    )
    assert msg.summary() == "INVITE"
    assert msg.call_id == "12013223@200.57.7.195"
    assert msg.cseq == (1, "INVITE")
    assert msg.header_values("via") == [
        "SIP/2.0/UDP 200.57.7.195;branch=z9hG4bKff9b46fb055c0521cc24024da96cd290",
        "SIP/2.0/UDP 200.57.7.195:55061;branch=z9hG4bK291d90e31a47b225bd0ddff4353e9cc0",
    ]
    assert msg.via_branch == "z9hG4bKff9b46fb055c0521cc24024da96cd290"
    assert msg.from_tag == "GR52RWG346-34" and msg.to_tag is None
    assert msg.from_addr == NameAddr("", "sip:200.57.7.195:55061;user=phone", {"tag": "GR52RWG346-34"})
    assert msg.to_addr == NameAddr("francisco@bestel.com", "sip:francisco@bestel.com:55060", {})
    assert msg.content_type == "application/sdp"
    assert msg.content_length == 229 == len(msg.body)  # "Content-Length:   229": spaces after the colon
    assert msg.sdp_bodies() == [msg.body]
    assert [name for name, _ in msg.headers] == [
        "via", "via", "from", "to", "call-id", "cseq", "contact", "content-type", "content-length",
    ]  # fmt: skip


def test_real_responses() -> None:
    ringing = parse_message(load("g711-180-ringing.sip"))
    assert (ringing.method, ringing.status_code, ringing.reason) == (None, 180, "Ringing")
    assert not ringing.is_request
    assert ringing.summary() == "180 Ringing"
    assert ringing.to_tag == "298852044"
    assert ringing.body == b"" and ringing.sdp_bodies() == []
    ok = parse_message(load("g711-200-ok.sip"))
    assert ok.summary() == "200 Ok"
    assert ok.header("SERVER") == "X-Lite release 1103m"


def test_real_tel_uri_and_asserted_identity() -> None:
    msg = parse_message(load("vowifi-200-ok-tel.sip"))
    assert msg.to_addr is not None
    assert msg.to_addr.uri == "tel:22021921;phone-context=ims.mnc003.mcc724.3gppnetwork.org"
    assert msg.to_tag == "8cxuel8w"
    assert uri_user(msg.to_addr.uri) == "22021921"
    pai = msg.p_asserted_identity
    assert pai is not None and pai.uri == "sip:22025100@ZRJO04.TIM;user=phone"
    assert uri_user(pai.uri) == "22025100" and uri_host(pai.uri) == "zrjo04.tim"
    assert msg.from_addr is not None and uri_user(msg.from_addr.uri) == "+5511983461045"


def test_real_asserted_identity_with_display_name() -> None:
    pai = parse_message(load("srtp-invite.sip")).p_asserted_identity
    assert pai == NameAddr("Bob", "sip:1111@192.168.20.130", {})


def test_real_unbracketed_ipv6_request_uri() -> None:
    msg = parse_message(load("ipv6-invite.sip"))
    assert msg.request_uri == "sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060"
    assert uri_host(msg.request_uri) == "fec0:0:0:0:216:d3ff:fe0d:22c"
    assert uri_user(msg.request_uri) == "4321"


def test_real_request_uri_with_parameter_and_quoted_display() -> None:
    msg = parse_message(load("real-call-invite.sip"))
    assert msg.request_uri == "sip:test18@10.0.2.5;line=85e02c0b306c32d"
    assert msg.from_addr == NameAddr("Student 19", "sip:test19@10.0.2.15", {"tag": "as72fde7f1"})
    assert msg.header("date") == "Thu, 27 Nov 2014 23:07:30 GMT"


def test_real_ip_fragment_is_truncated_with_headers_kept() -> None:
    data = load("srtp-invite-ipfrag.sip")  # first IP fragment of a 1.5 KB INVITE
    with pytest.raises(TruncatedBody) as info:
        parse_message(data)
    assert isinstance(info.value, Truncated) and info.value.reason == "sip_truncated"
    partial = info.value.message
    assert partial.method == "INVITE" and partial.content_length == 796
    assert len(partial.body) == 551 and partial.call_id
    with pytest.raises(NeedMoreData):
        message_length(data)


def test_real_multipart_with_miscounted_content_length() -> None:
    """SIPp's MSCML INVITE announces 557 body bytes and sends 555: Truncated, but the partial
    message still yields the SDP part (which has no part headers at all)."""
    data = load("mscml-multipart-invite.sip")
    with pytest.raises(TruncatedBody) as info:
        parse_message(data)
    partial = info.value.message
    assert partial.content_type == "multipart/mixed"
    [sdp] = partial.sdp_bodies()
    assert sdp.startswith(b"v=0\r\no=PSP_SIP") and sdp.endswith(b"a=rtpmap:0 PCMU/8000\r\n")
    fixed = parse_message(data.replace(b"Content-Length:  557", b"Content-Length:  555"))
    assert fixed.sdp_bodies() == [sdp]


def test_real_fuzzed_messages_raise_only_parse_errors() -> None:
    reasons: dict[str, int] = {}
    for path in FUZZ:
        data = path.read_bytes()
        looks_like_sip(data)
        try:
            msg = parse_message(data)
        except ParseError as exc:
            reasons[exc.reason] = reasons.get(exc.reason, 0) + 1
            continue
        reasons["ok"] = reasons.get("ok", 0) + 1
        assert msg.call_id and msg.cseq
        msg.sdp_bodies(), msg.from_addr, msg.to_addr, msg.via_branch, msg.summary()
    assert set(reasons) == {"ok", "sip_malformed", "sip_missing_header", "sip_truncated"}


@pytest.mark.parametrize("path", COMPLETE, ids=lambda p: p.name)
def test_real_messages_with_lf_only_heads(path: Path) -> None:
    data = path.read_bytes()
    head, _, body = data.partition(b"\r\n\r\n")
    lf = parse_message(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    crlf = parse_message(data)
    assert lf == crlf


# --- hand-made messages ----------------------------------------------------------------------------


def test_compact_forms_are_expanded() -> None:
    lines = [f"{short}: value-{short}" for short in COMPACT_FORMS if short not in "il"]
    msg = parse_message(build("MESSAGE sip:b@y SIP/2.0", "i: abc", "CSeq: 7 MESSAGE", *lines, "l: 0"))
    assert [name for name, _ in msg.headers] == [
        "call-id", "cseq", *(COMPACT_FORMS[s] for s in COMPACT_FORMS if s not in "il"), "content-length"
    ]  # fmt: skip
    assert msg.call_id == "abc" and msg.header("I") == msg.header("Call-ID") == "abc"
    assert msg.header("v") == msg.header("VIA") == "value-v"
    assert msg.content_length == 0
    assert canonical_header_name("X") == "session-expires"
    assert canonical_header_name(" User-Agent ") == "user-agent"


def test_header_names_are_case_insensitive_and_may_have_space_before_colon() -> None:
    msg = parse_message(
        build("OPTIONS sip:b@y SIP/2.0", "CALL-ID: abc", "cseq : 2 OPTIONS", "X-Custom\t:\tv\t")
    )
    assert msg.headers == (("call-id", "abc"), ("cseq", "2 OPTIONS"), ("x-custom", "v"))


def test_folded_header_lines_are_unfolded() -> None:
    # RFC 3261 7.3.1's own example, plus a folded Via with a tab.
    msg = parse_message(
        build(
            "INVITE sip:b@y SIP/2.0",
            *BASE,
            "Subject: I know you're there,",
            "               pick up the phone   ",
            "               and talk to me!",
            "Via: SIP/2.0/UDP 192.0.2.1",
            "\t;branch=z9hG4bK77",
            "Organization:",
            "  Example",
        )
    )
    assert msg.header("subject") == "I know you're there, pick up the phone and talk to me!"
    assert msg.header("via") == "SIP/2.0/UDP 192.0.2.1 ;branch=z9hG4bK77"
    assert msg.via_branch == "z9hG4bK77"
    assert msg.header("organization") == "Example"


def test_repeated_headers_and_list_values() -> None:
    msg = parse_message(
        build(
            "INVITE sip:b@y SIP/2.0",
            "Via: SIP/2.0/UDP a.example;branch=z9hG4bK1, SIP/2.0/TCP b.example;branch=z9hG4bK2",
            "Via: SIP/2.0/UDP c.example;branch=z9hG4bK3",
            *BASE,
            'Contact: "Smith, John" <sip:j@x;a=1,2>;q=0.5, <sip:k@y>',
            "Route: <sip:p1;lr>,<sip:p2;lr>",
        )
    )
    vias = msg.header_values("via")
    assert len(vias) == 2
    assert split_header_list(vias[0]) == [
        "SIP/2.0/UDP a.example;branch=z9hG4bK1",
        "SIP/2.0/TCP b.example;branch=z9hG4bK2",
    ]
    assert msg.via_branch == "z9hG4bK1"
    contacts = split_header_list(msg.header("contact") or "")
    assert contacts == ['"Smith, John" <sip:j@x;a=1,2>;q=0.5', "<sip:k@y>"]
    assert parse_name_addr(contacts[0]) == NameAddr("Smith, John", "sip:j@x;a=1,2", {"q": "0.5"})
    assert split_header_list(msg.header("route") or "") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert split_header_list(" , ,") == []
    assert msg.header_values("record-route") == [] and msg.header("record-route") is None


def test_leading_keepalive_crlfs_and_utf8() -> None:
    data = b"\r\n\r\n\n" + build("MESSAGE sip:b@y SIP/2.0", *BASE, 'From: "J\u00fcrgen" <sip:j@x>').replace(
        b"J\xc3\xbcrgen", b"J\xc3\xbcrgen \xff"
    )
    msg = parse_message(data)
    assert msg.header_values("from")[1] == '"J\u00fcrgen \ufffd" <sip:j@x>'


@pytest.mark.parametrize(
    ("clen", "body", "expected"),
    [
        ("5", b"hello, world", b"hello"),  # extra bytes after Content-Length are discarded (18.3)
        ("12", b"hello, world", b"hello, world"),
        ("0", b"", b""),
        (None, b"the rest", b"the rest"),  # no Content-Length over UDP: the rest of the datagram
    ],
)
def test_content_length(clen: str | None, body: bytes, expected: bytes) -> None:
    extra = () if clen is None else (f"Content-Length: {clen}",)
    msg = parse_message(build("MESSAGE sip:b@y SIP/2.0", *BASE, *extra, body=body))
    assert msg.body == expected
    assert msg.content_length == (None if clen is None else int(clen))


def test_content_length_longer_than_data_is_truncated() -> None:
    with pytest.raises(Truncated) as info:
        parse_message(build("MESSAGE sip:b@y SIP/2.0", *BASE, "l: 13", body=b"hello, world"))
    assert info.value.reason == "sip_truncated"


def test_head_without_empty_line_is_truncated() -> None:
    with pytest.raises(Truncated):
        parse_message(b"INVITE sip:b@y SIP/2.0\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (("CSeq: 1 INVITE", "From: <sip:a@x>"), "sip_missing_header"),
        (("Call-ID: x", "From: <sip:a@x>"), "sip_missing_header"),
        (("Call-ID:", "CSeq: 1 INVITE"), "sip_missing_header"),
        (("Call-ID: x", "CSeq: one INVITE"), "sip_malformed"),
        (("Call-ID: x", "CSeq: 1"), "sip_malformed"),
        (("Call-ID: x", "CSeq: 12345678901 INVITE"), "sip_malformed"),
        (("Call-ID: x", "CSeq: 1 INVITE", "Content-Length: 1a"), "sip_malformed"),
        (("Call-ID: x", "CSeq: 1 INVITE", "Content-Length: -1"), "sip_malformed"),
        (("Call-ID: x", "CSeq: 1 INVITE", "Content-Length: \u0661"), "sip_malformed"),  # Arabic-Indic 1
        (("Vi a: x", "Call-ID: x", "CSeq: 1 INVITE"), "sip_malformed"),
        (("Vi\x1da: x", "Call-ID: x", "CSeq: 1 INVITE"), "sip_malformed"),
        ((": x", "Call-ID: x", "CSeq: 1 INVITE"), "sip_malformed"),
        (("no colon here", "Call-ID: x", "CSeq: 1 INVITE"), "sip_malformed"),
        ((" continuation first", "Call-ID: x", "CSeq: 1 INVITE"), "sip_malformed"),
    ],
)
def test_missing_and_malformed_headers(headers: tuple[str, ...], reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(build("INVITE sip:b@y SIP/2.0", *headers))
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "start",
    [
        "INVITE sip:b@y SIP/3.0",
        "INVITE sip:b@y",
        "INVITE  SIP/2.0",
        "INVITE nocolon SIP/2.0",
        "INV(ITE sip:b@y SIP/2.0",
        "INVITE sip:b@y SIP/2.0 extra",
        "GET / HTTP/1.1",
        "SIP/2.0 2000 OK",
        "SIP/2.0 099 Too Low",
        "SIP/2.0 700 Too High",
        "SIP/2.0 2x0 OK",
        "SIP/2.0 \u0662\u0660\u0660 OK",
        "SIP/2.0 200OK",
        "IP/2.0",
        "",
    ],
)
def test_bad_start_lines(start: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_message(build(start, *BASE))
    assert info.value.reason == "sip_malformed"


def test_start_line_variants_accepted() -> None:
    no_reason = parse_message(build("SIP/2.0 200", *BASE))
    assert (no_reason.status_code, no_reason.reason, no_reason.summary()) == (200, "", "200")
    lower = parse_message(build("sip/2.0 486 Busy Here", *BASE))
    assert lower.summary() == "486 Busy Here"
    spaced = parse_message(build("BYE  sips:b@y  SIP/2.0 ", *BASE))
    assert (spaced.method, spaced.request_uri) == ("BYE", "sips:b@y")
    tel = parse_message(build("INVITE tel:+1-555-0100 SIP/2.0", *BASE))
    assert uri_user(tel.request_uri or "") == "+15550100"


def test_limits() -> None:
    too_many = [f"X-H{i}: {i}" for i in range(MAX_HEADERS)]
    with pytest.raises(ParseError):
        parse_message(build("INVITE sip:b@y SIP/2.0", *BASE, *too_many))
    with pytest.raises(ParseError):
        parse_message(build("INVITE sip:" + "b" * 9000 + " SIP/2.0", *BASE))
    with pytest.raises(ParseError):
        parse_message(build("INVITE sip:b@y SIP/2.0", *BASE, "X-Big: " + "x" * 70_000))
    with pytest.raises(ParseError):
        parse_message(b"INVITE sip:b@y SIP/2.0\r\nX: " + b"x" * 70_000)  # never ends


# --- multipart bodies ------------------------------------------------------------------------------

SDP_A = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
SDP_B = SDP_A.replace(b"4000", b"5000")


def with_body(content_type: str | None, body: bytes) -> SipMessage:
    extra = () if content_type is None else (f"Content-Type: {content_type}",)
    return parse_message(
        build("INVITE sip:b@y SIP/2.0", *BASE, *extra, f"Content-Length: {len(body)}", body=body)
    )


def test_multipart_mixed_with_quoted_boundary() -> None:
    body = (
        b"preamble\r\n--b1 x\r\n"
        b"Content-Type: application/sdp\r\nContent-Disposition: session\r\n\r\n" + SDP_A + b"\r\n"
        b"--b1 x\r\nContent-Type: application/isup; version=itu-t92+\r\n\r\n\x01\x02--b1\r\n"
        b"--b1 x--\r\nepilogue"
    )
    msg = with_body('multipart/mixed;boundary="b1 x"', body)
    assert msg.content_type == "multipart/mixed"
    assert msg.sdp_bodies() == [SDP_A]


def test_multipart_alternative_unquoted_boundary_lf_only() -> None:
    body = (
        b"--alt\nContent-Type: text/plain\n\nhello\n"
        b"--alt\ncontent-type:Application/SDP\n\n" + SDP_A.replace(b"\r\n", b"\n") + b"\n"
        b"--alt\nContent-Type: application/sdp\n\n" + SDP_B.replace(b"\r\n", b"\n") + b"\n--alt--\n"
    )
    msg = with_body("Multipart/Alternative; boundary=alt", body)
    assert msg.sdp_bodies() == [SDP_A.replace(b"\r\n", b"\n"), SDP_B.replace(b"\r\n", b"\n")]


def test_nested_multipart() -> None:
    inner = b"--in\r\nContent-Type: application/sdp\r\n\r\n" + SDP_B + b"\r\n--in--"
    body = (
        b"--out\r\nContent-Type: application/pidf+xml\r\n\r\n<x/>\r\n"
        b"--out\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n" + inner + b"\r\n"
        b"--out--\r\n"
    )
    assert with_body("multipart/mixed; boundary=out", body).sdp_bodies() == [SDP_B]


def test_sdp_bodies_other_cases() -> None:
    assert with_body("application/sdp", SDP_A).sdp_bodies() == [SDP_A]
    assert with_body("application/SDP; charset=utf-8", SDP_A).sdp_bodies() == [SDP_A]
    assert with_body(None, SDP_A).sdp_bodies() == [SDP_A]  # no Content-Type, but it is SDP
    assert with_body(None, b"hello").sdp_bodies() == []
    assert with_body("application/dtmf-relay", b"Signal=5").sdp_bodies() == []
    assert with_body("multipart/mixed", SDP_A).sdp_bodies() == []  # no boundary
    assert with_body("application/sdp", b"").sdp_bodies() == []
