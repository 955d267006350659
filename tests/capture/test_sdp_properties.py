"""capture.sip.sdp under hypothesis: any bytes raise only ParseError; generated bodies round trip."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.model.errors import ParseError
from callrec.capture.model.media import MediaFormat
from callrec.capture.sip.sdp import STATIC_PAYLOAD_TYPES, parse_sdp
from tests.capture.test_sdp import REAL_SDP, real_sdp, sdp

# --- properties ------------------------------------------------------------------------------------


@settings(max_examples=400)
@given(st.binary(max_size=1000))
def test_arbitrary_bytes_raise_only_parse_errors(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        for media in parse_sdp(data).media:
            assert isinstance(media.formats_by_pt(), dict)
            assert isinstance(media.is_encrypted, bool) and isinstance(media.is_disabled, bool)


LINE_STARTS = ["m=audio 1 RTP/AVP 0", "m=", "a=rtpmap:", "a=fmtp:", "a=", "c=IN", "a=rtcp:1 IN IP4", "o="]
sdp_like_line = st.tuples(st.sampled_from(LINE_STARTS), st.text(max_size=30)).map("".join)


@settings(max_examples=300)
@given(st.lists(sdp_like_line, max_size=12))
def test_sdp_like_lines_raise_only_parse_errors(lines: list[str]) -> None:
    with contextlib.suppress(ParseError):
        for media in parse_sdp("\n".join(["v=0", *lines])).media:
            assert isinstance(media.formats_by_pt(), dict)
            assert isinstance(media.is_encrypted, bool)


@pytest.mark.parametrize("name", REAL_SDP)
def test_every_truncated_real_body_raises_only_parse_errors(name: str) -> None:
    body = real_sdp(name)
    for cut in range(len(body)):
        with contextlib.suppress(ParseError):
            for media in parse_sdp(body[:cut]).media:
                media.formats_by_pt()


DYNAMIC = st.integers(96, 127)
ENCODINGS = st.sampled_from(["opus", "telephone-event", "AMR-WB", "speex", "G726-32", "H264", "red"])


@st.composite
def media_sections(draw: st.DrawFn) -> tuple[list[str], dict[str, object]]:
    kind = draw(st.sampled_from(["audio", "video", "application"]))
    port = draw(st.integers(0, 65535))
    protocol = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "RTP/AVPF"]))
    statics = draw(st.lists(st.sampled_from(sorted(STATIC_PAYLOAD_TYPES)), max_size=4, unique=True))
    dynamic = draw(
        st.dictionaries(
            DYNAMIC,
            st.tuples(ENCODINGS, st.sampled_from([8000, 16000, 48000, 90000]), st.integers(1, 2)),
            max_size=4,
        )
    )
    formats = [str(pt) for pt in statics] + [str(pt) for pt in dynamic]
    fmtp = draw(
        st.dictionaries(
            st.sampled_from([int(f) for f in formats] or [0]),
            st.text("abc=;0123", min_size=1, max_size=10).map(str.strip).filter(bool),
            max_size=2,
        )
    )
    direction = draw(st.sampled_from(["sendrecv", "sendonly", "recvonly", "inactive", None]))
    address = draw(st.sampled_from([None, "192.0.2.9", "2001:db8::9"]))
    ptime = draw(st.sampled_from([None, 10, 20, 30, 60]))
    lines = [f"m={kind} {port} {protocol} {' '.join(formats)}".rstrip()]
    if address:
        lines.append(f"c=IN {'IP6' if ':' in address else 'IP4'} {address}")
    lines += [f"a=rtpmap:{pt} {enc}/{clock}/{ch}" for pt, (enc, clock, ch) in dynamic.items()]
    lines += [f"a=fmtp:{pt} {value}" for pt, value in fmtp.items()]
    if direction:
        lines.append(f"a={direction}")
    if ptime:
        lines.append(f"a=ptime:{ptime}")
    expected_formats = {pt: STATIC_PAYLOAD_TYPES[pt] for pt in statics}
    expected_formats.update({pt: MediaFormat(pt, enc, clock, ch) for pt, (enc, clock, ch) in dynamic.items()})
    for pt, value in fmtp.items():
        if pt in expected_formats:
            old = expected_formats[pt]
            expected_formats[pt] = MediaFormat(
                old.payload_type, old.encoding, old.clock_rate_hz, old.channels, value
            )
    expected = dict(media=kind, port=port, protocol=protocol, formats=tuple(formats), address=address)
    expected.update(direction=direction, ptime=ptime, by_pt=expected_formats, encrypted="SAVP" in protocol)
    return lines, expected


@settings(max_examples=120)
@given(
    st.sampled_from([None, "198.51.100.1"]),
    st.sampled_from([None, "sendonly"]),
    st.lists(media_sections(), max_size=4),
    st.sampled_from(["\r\n", "\n"]),
)
def test_round_trip_of_generated_bodies(
    session_c: str | None,
    session_dir: str | None,
    sections: list[tuple[list[str], dict[str, object]]],
    eol: str,
) -> None:
    lines = ["v=0", "o=user 42 7 IN IP4 203.0.113.1", "s=generated"]
    if session_c:
        lines.append(f"c=IN IP4 {session_c}")
    lines.append("t=0 0")
    if session_dir:
        lines.append(f"a={session_dir}")
    for section, _ in sections:
        lines += section
    session = parse_sdp(sdp(*lines, eol=eol))
    assert (session.origin_username, session.origin_session_id, session.origin_version) == ("user", "42", "7")
    assert (session.origin_address, session.session_name) == ("203.0.113.1", "generated")
    assert session.connection_address == session_c
    assert len(session.media) == len(sections)
    for media, (_, want) in zip(session.media, sections, strict=True):
        assert (media.media, media.port, media.protocol, media.formats) == (
            want["media"], want["port"], want["protocol"], want["formats"],
        )  # fmt: skip
        assert media.connection_address == (want["address"] or session_c)
        assert media.direction == (want["direction"] or session_dir or "sendrecv")
        assert media.ptime_ms == want["ptime"]
        assert media.formats_by_pt() == want["by_pt"]
        assert media.is_encrypted == want["encrypted"]
        assert media.is_disabled == (want["port"] == 0)


def test_encoding_names_are_shown_in_their_registered_spelling() -> None:
    sdp = parse_sdp(
        b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 8 96 97\r\n"
        b"a=rtpmap:8 pcma/8000\r\na=rtpmap:96 OPUS/48000/2\r\na=rtpmap:97 X-Custom/8000\r\n"
    )
    formats = sdp.media[0].formats_by_pt()
    assert [formats[pt].encoding for pt in (8, 96, 97)] == ["PCMA", "opus", "X-Custom"]
