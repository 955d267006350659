"""capture.sip.sdp: SDP bodies from real captures, every attribute the recorder reads, and properties."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.capture.model.errors import ParseError
from callrec.capture.model.media import MediaFormat
from callrec.capture.sip.message import parse_message
from callrec.capture.sip.sdp import STATIC_PAYLOAD_TYPES, SdpMedia, SessionDescription, parse_sdp

DATA = Path(__file__).resolve().parents[1] / "data" / "sip"


def real_sdp(name: str) -> bytes:
    [body] = parse_message((DATA / name).read_bytes()).sdp_bodies()
    return body


REAL_SDP = [
    name
    for name in sorted(path.name for path in DATA.glob("*.sip"))
    if name not in {"srtp-invite-ipfrag.sip", "mscml-multipart-invite.sip"}
    and parse_message((DATA / name).read_bytes()).sdp_bodies()
]


def sdp(*lines: str, eol: str = "\r\n") -> bytes:
    return (eol.join(lines) + eol).encode()


HEAD = ("v=0", "o=alice 2890844526 2890844527 IN IP4 198.51.100.1", "s=call", "t=0 0")


# --- static table ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pt", "encoding", "clock", "channels"),
    [
        (0, "PCMU", 8000, 1),
        (3, "GSM", 8000, 1),
        (4, "G723", 8000, 1),
        (5, "DVI4", 8000, 1),
        (6, "DVI4", 16000, 1),
        (7, "LPC", 8000, 1),
        (8, "PCMA", 8000, 1),
        (9, "G722", 8000, 1),  # 16 kHz audio, 8 kHz RTP clock (RFC 3551 4.5.2)
        (10, "L16", 44100, 2),
        (11, "L16", 44100, 1),
        (12, "QCELP", 8000, 1),
        (13, "CN", 8000, 1),
        (14, "MPA", 90000, 1),
        (15, "G728", 8000, 1),
        (16, "DVI4", 11025, 1),
        (17, "DVI4", 22050, 1),
        (18, "G729", 8000, 1),
        (34, "H263", 90000, 1),
    ],
)
def test_static_payload_types(pt: int, encoding: str, clock: int, channels: int) -> None:
    assert STATIC_PAYLOAD_TYPES[pt] == MediaFormat(pt, encoding, clock, channels)


def test_static_table_has_no_dynamic_or_reserved_types() -> None:
    assert all(pt < 96 for pt in STATIC_PAYLOAD_TYPES)
    assert not {1, 2, 19, 20, 35} & set(STATIC_PAYLOAD_TYPES)


# --- real bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_SDP)
def test_real_bodies_parse(name: str) -> None:
    session = parse_sdp(real_sdp(name))
    assert session.version == 0
    assert session.media
    assert all(m.connection_address for m in session.media)
    assert parse_sdp(real_sdp(name).decode()) == session  # str in, same result


def test_real_offer_with_mixed_case_direction() -> None:
    session = parse_sdp(real_sdp("g711-invite.sip"))
    assert (session.origin_username, session.origin_session_id, session.origin_version) == (
        "Clarent",
        "120386",
        "120387",
    )
    assert session.origin_address == "200.57.7.196" and session.session_name == "Clarent C5CM"
    assert session.connection_address == "200.57.7.196"
    [audio] = session.audio()
    assert (audio.media, audio.port, audio.port_count, audio.protocol) == ("audio", 40376, 1, "RTP/AVP")
    assert audio.formats == ("8", "18", "4", "0")
    assert audio.direction == "sendrecv"  # written "a=SendRecv"
    assert list(audio.formats_by_pt()) == [8, 18, 4, 0]
    assert audio.attributes[-1] == ("SendRecv", None)


def test_real_answer_encoding_names_in_registered_spelling() -> None:
    [audio] = parse_sdp(real_sdp("g711-200-ok.sip")).audio()
    formats = audio.formats_by_pt()
    assert formats[8] == MediaFormat(8, "PCMA", 8000)  # written "pcma/8000"
    assert audio.rtpmap[8] == "pcma/8000"  # the attribute itself is kept as written
    assert formats[98] == MediaFormat(98, "iLBC", 8000)
    assert formats[101] == MediaFormat(101, "telephone-event", 8000, 1, "0-15")
    assert audio.fmtp == {101: "0-15"} and audio.rtpmap[97] == "speex/8000"
    assert audio.ptime_ms is None and not audio.is_encrypted


def test_real_directions_and_ptime() -> None:
    [offer] = parse_sdp(real_sdp("dvi4-invite-recvonly.sip")).audio()
    [answer] = parse_sdp(real_sdp("dvi4-200-ok-sendonly.sip")).audio()
    assert (offer.direction, answer.direction) == ("recvonly", "sendonly")
    assert answer.ptime_ms == 20
    assert offer.formats_by_pt() == {5: MediaFormat(5, "DVI4", 8000)}


def test_real_session_without_connection_and_mikey() -> None:
    session = parse_sdp(real_sdp("mikey-invite.sip"))
    assert session.connection_address is None
    assert session.attributes[0][0] == "key-mgmt"
    [audio] = session.audio()
    assert audio.connection_address == "192.168.0.2"
    assert audio.protocol == "RTP/SAVP" and audio.is_encrypted
    assert audio.formats_by_pt()[8] == MediaFormat(8, "PCMA", 8000, 1)  # "PCMA/8000/1"


def test_real_sdes_srtp() -> None:
    [audio] = parse_sdp(real_sdp("srtp-invite.sip")).audio()
    assert audio.is_encrypted
    assert (audio.ptime_ms, audio.maxptime_ms) == (20, 150)
    assert [name for name, _ in audio.attributes].count("crypto") == 1
    assert audio.formats_by_pt()[111] == MediaFormat(111, "G726-32", 8000)


def test_real_video_and_static_types_without_rtpmap() -> None:
    session = parse_sdp(real_sdp("video-invite.sip"))
    assert [m.media for m in session.media] == ["audio", "video"]
    assert [m.media for m in session.audio()] == ["audio"]
    audio, video = session.media
    formats = audio.formats_by_pt()
    assert list(formats) == [107, 100, 106, 6, 0, 105, 8, 18, 3, 5, 101]
    assert formats[6] == STATIC_PAYLOAD_TYPES[6] and formats[0] == STATIC_PAYLOAD_TYPES[0]
    assert formats[18] == MediaFormat(18, "G729", 8000, 1, "annexb=yes")
    assert formats[107] == MediaFormat(107, "BV32", 16000)
    assert video.formats_by_pt()[125].fmtp.startswith("profile-level-id=42e00a")
    assert video.direction == audio.direction == "sendonly"
    assert video.port == 5064


def test_real_t38_image_stream() -> None:
    [image] = parse_sdp(real_sdp("t38-reinvite.sip")).media
    assert (image.media, image.protocol, image.formats) == ("image", "udptl", ("t38",))
    assert image.formats_by_pt() == {}
    assert not image.is_encrypted
    assert ("T38FaxVersion", "0") in image.attributes


def test_real_ipv6_connection() -> None:
    session = parse_sdp(real_sdp("ipv6-invite.sip"))
    assert session.connection_address == "fe80:0:0:0:21a:a0ff:fe07:32e0"
    assert session.media[0].connection_address == "fe80:0:0:0:21a:a0ff:fe07:32e0"


def test_real_ice_attributes_at_session_level() -> None:
    session = parse_sdp(real_sdp("zrtp-xlite-invite.sip"))
    assert session.attributes == (("ice-ufrag", "64f1a0"), ("ice-pwd", "6c3a6e332f19287d6887564731372ec9"))
    [audio] = session.audio()
    assert ("candidate", "1 1 UDP 659136 192.168.10.41 64508 typ host") in audio.attributes
    assert audio.formats_by_pt()[8] == STATIC_PAYLOAD_TYPES[8]


# --- hand-made bodies ------------------------------------------------------------------------------

FULL = sdp(
    *HEAD[:3],
    "c=IN IP4 224.2.17.12/127  ",
    "t=0 0",
    "b=AS:64",
    "a=sendonly",
    "a=tool:x:y",
    "m=audio 49170/2 RTP/AVP 0 9 18 96 97 98 122",
    "i=the audio",
    "a=rtpmap:96 opus/48000/2",
    "a=RTPMAP:9 G722/8000",
    "a=fmtp:18 annexb=no",
    "a=fmtp:96 minptime=10;useinbandfec=1",
    "a=rtpmap:97 telephone-event/8000",
    "a=rtpmap:122 bad",
    "a=rtpmap:123 PCMU/8000",
    "a=ptime:20.0",
    "a=maxptime:40",
    "a=rtcp:53020 IN IP4 198.51.100.7",
    "a=rtcp-mux",
    "m=audio 0 RTP/AVP 8",
    "a=inactive",
    "m=audio 50000 RTP/SAVPF 111",
    "c=IN IP6 2001:db8::5",
    "a=rtcp:50001",
    "a=recvonly",
    "a=fingerprint:sha-256 AB:CD",
    "m=video 51372 RTP/AVP 99",
    "a=rtpmap:99 h263-1998/90000",
    "x=unknown line type",
    "Z=capital letters too",
)


def test_session_level_fields() -> None:
    session = parse_sdp(FULL)
    assert session.connection_address == "224.2.17.12"  # TTL suffix stripped
    assert session.direction == "sendonly"
    assert session.attributes == (("sendonly", None), ("tool", "x:y"))
    assert len(session.media) == 4
    assert [m.port for m in session.audio()] == [49170, 50000]  # port 0 is disabled


def test_media_level_fields() -> None:
    first, disabled, secure, video = parse_sdp(FULL).media
    assert (first.port, first.port_count, first.formats) == (
        49170,
        2,
        ("0", "9", "18", "96", "97", "98", "122"),
    )
    assert first.connection_address == "224.2.17.12"  # inherited from the session
    assert first.direction == "sendonly"  # inherited from the session
    assert (first.ptime_ms, first.maxptime_ms) == (20, 40)
    assert (first.rtcp_port, first.rtcp_address, first.rtcp_mux) == (53020, "198.51.100.7", True)
    assert first.rtpmap == {
        96: "opus/48000/2",
        9: "G722/8000",
        97: "telephone-event/8000",
        122: "bad",
        123: "PCMU/8000",
    }
    assert first.fmtp == {18: "annexb=no", 96: "minptime=10;useinbandfec=1"}
    assert first.formats_by_pt() == {
        0: MediaFormat(0, "PCMU", 8000),
        9: MediaFormat(9, "G722", 8000),
        18: MediaFormat(18, "G729", 8000, 1, "annexb=no"),  # static type + a=fmtp
        96: MediaFormat(96, "opus", 48000, 2, "minptime=10;useinbandfec=1"),
        97: MediaFormat(97, "telephone-event", 8000),
    }  # 98 has no rtpmap, 122's rtpmap is unusable, 123 is not offered
    assert first.attributes[0] == ("rtpmap", "96 opus/48000/2")
    assert ("rtcp-mux", None) in first.attributes
    assert not first.is_disabled and not first.is_encrypted

    assert disabled.is_disabled and disabled.direction == "inactive"
    assert (secure.connection_address, secure.direction) == ("2001:db8::5", "recvonly")
    assert (secure.rtcp_port, secure.rtcp_address, secure.rtcp_mux) == (50001, None, False)
    assert secure.is_encrypted
    assert video.formats_by_pt() == {99: MediaFormat(99, "h263-1998", 90000)}
    assert video.direction == "sendonly"


def test_line_endings_and_trailing_space_do_not_matter() -> None:
    crlf = parse_sdp(FULL)
    assert parse_sdp(FULL.replace(b"\r\n", b"\n")) == crlf
    assert parse_sdp(FULL.replace(b"\r\n", b"   \r\n") + b"\r\n\r\n") == crlf


def test_missing_origin_and_name_are_tolerated() -> None:
    session = parse_sdp(sdp("v=0", "c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0"))
    assert (session.origin_username, session.origin_address, session.session_name) == ("", "", "")
    assert session.media[0].connection_address == "192.0.2.1"
    short_origin = parse_sdp(sdp("v=0", "o=- 1", "s=", "m=audio 4000 RTP/AVP"))
    assert short_origin.origin_session_id == "" and short_origin.media[0].formats == ()
    assert short_origin.media[0].connection_address is None


def test_connection_variants() -> None:
    def address(line: str) -> str | None:
        return parse_sdp(sdp("v=0", line, "m=audio 4000 RTP/AVP 0")).connection_address

    assert address("c=IN IP4 233.252.0.1/127/3") == "233.252.0.1"
    assert address("c=IN IP6 ff15::101/3") == "ff15::101"
    assert address("c=IN IP4 0.0.0.0") == "0.0.0.0"  # RFC 2543 hold: kept for the caller to judge
    assert address("c=IN IP4") is None  # broken c= line ignored


@pytest.mark.parametrize(
    ("protocol", "attribute", "encrypted"),
    [
        ("RTP/AVP", None, False),
        ("RTP/AVPF", None, False),
        ("RTP/SAVP", None, True),
        ("RTP/SAVPF", None, True),
        ("UDP/TLS/RTP/SAVPF", None, True),
        ("udp/tls/rtp/savp", None, True),
        ("RTP/AVP", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc", True),
        ("RTP/AVP", "a=zrtp-hash:1.10 abcdef", True),
        ("RTP/AVP", "a=fingerprint:sha-1 00:11", True),
        ("RTP/AVP", "a=ptime:20", False),
    ],
)
def test_encryption_detection(protocol: str, attribute: str | None, encrypted: bool) -> None:
    lines = [f"m=audio 4000 {protocol} 0"] + ([attribute] if attribute else [])
    [media] = parse_sdp(sdp("v=0", *lines)).media
    assert media.is_encrypted is encrypted


def test_session_level_fingerprint_covers_every_medium() -> None:
    session = parse_sdp(
        sdp("v=0", "a=fingerprint:sha-256 AB", "m=audio 4000 RTP/AVP 0", "m=video 0 RTP/AVP 31")
    )
    assert all(m.is_encrypted for m in session.media)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n\r\n",
        b"o=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\n",  # v= not first
        b"hello\r\n",
        b"v=0\r\nthis is not sdp\r\n",
        b"v=0\r\na\r\n",
        b"v=0\r\n=x\r\n",
        b"v=0\r\n1=x\r\n",
        b"v=zero\r\n",
        b"  v=0\r\n",
        b"v=0\r\nm=audio\r\n",
        b"v=0\r\nm=audio 4000\r\n",
        b"v=0\r\nm=audio abc RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 70000 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio 4000/0 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio \xd9\xa1 RTP/AVP 0\r\n",  # Arabic-Indic digit one
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(ParseError) as info:
        parse_sdp(body)
    assert info.value.reason == "sdp_malformed"


def test_tolerated_oddities() -> None:
    session = parse_sdp(
        sdp(
            "v=0",
            "m=audio 4000 RTP/AVP 0 8 300 abc 101",
            "a=ptime:abc",
            "a=maxptime:1.5x",
            "a=rtcp:",
            "a=rtcp:none",
            "a=rtpmap:x PCMU/8000",
            "a=rtpmap:101 telephone-event/8000/many",
            "a=fmtp:abc whatever",
            "a=sendrecv",
            "a=inactive",
            "a=",
            "a=:value",
        )
    )
    [media] = session.media
    assert (media.ptime_ms, media.maxptime_ms, media.rtcp_port) == (None, None, None)
    assert media.direction == "inactive"  # the last direction attribute wins
    assert list(media.formats_by_pt()) == [0, 8, 101]
    assert media.formats_by_pt()[101].channels == 1
    assert media.attributes[-2:] == (("", None), ("", "value"))


def test_audio_helper_and_dataclasses() -> None:
    media = SdpMedia("audio", 4000, 1, "RTP/AVP", ("0",))
    assert media.direction == "sendrecv" and media.formats_by_pt() == {0: STATIC_PAYLOAD_TYPES[0]}
    session = SessionDescription(
        0, "", "", "", "", "", None, "sendrecv", (media, SdpMedia("audio", 0, 1, "RTP/AVP", ()))
    )
    assert session.audio() == [media]
