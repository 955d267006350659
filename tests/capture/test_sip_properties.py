"""capture.sip.message under hypothesis: any bytes, mutated and truncated real messages, generated round
trips."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.capture.model.errors import NeedMoreData, ParseError, Truncated
from callrec.capture.sip.addresses import (
    NameAddr,
    parse_name_addr,
    parse_params,
    split_header_list,
    uri_host,
    uri_user,
)
from callrec.capture.sip.message import canonical_header_name, looks_like_sip, message_length, parse_message
from tests.capture.test_sip import REAL

# --- properties ------------------------------------------------------------------------------------


def check_parse(data: bytes) -> None:
    """Only ParseErrors may escape, and whatever parses has a usable API."""
    looks_like_sip(data)
    with contextlib.suppress(ParseError):
        assert 0 < message_length(data) <= len(data)
    try:
        msg = parse_message(data)
    except ParseError:
        return
    assert msg.call_id and msg.cseq and msg.summary()
    for value in (msg.from_addr, msg.to_addr, msg.p_asserted_identity):
        assert value is None or isinstance(value, NameAddr)
    assert isinstance(msg.sdp_bodies(), list)
    assert msg.via_branch is None or isinstance(msg.via_branch, str)
    assert msg.content_length in (None, len(msg.body))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_parse_errors(data: bytes) -> None:
    check_parse(data)


@settings(max_examples=400)
@given(
    st.sampled_from([path.read_bytes() for path in REAL]),
    st.lists(st.tuples(st.integers(0, 2000), st.binary(min_size=1, max_size=4)), max_size=6),
)
def test_mutated_real_messages_raise_only_parse_errors(data: bytes, edits: list[tuple[int, bytes]]) -> None:
    mutated = bytearray(data)
    for position, replacement in edits:
        at = position % (len(mutated) + 1)
        mutated[at : at + len(replacement)] = replacement
    check_parse(bytes(mutated))


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_uri_and_name_addr_helpers_raise_only_parse_errors(text: str) -> None:
    assert isinstance(uri_user(text), str) and isinstance(uri_host(text), str)
    assert all(item.strip(" \t") for item in split_header_list(text))
    assert isinstance(parse_params(text), dict)
    with contextlib.suppress(ParseError):
        parse_name_addr(text)


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_every_truncated_prefix_is_truncated(path: Path) -> None:
    """Every real message announces its body length, so no proper prefix is a message."""
    data = path.read_bytes()
    for cut in range(len(data)):
        with pytest.raises(Truncated):
            parse_message(data[:cut])
        with pytest.raises(NeedMoreData):
            message_length(data[:cut])


TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
RESERVED = {"call-id", "cseq", "content-length"}
header_name = st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda name: canonical_header_name(name) not in RESERVED
)
word = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters=" \t\r\n"), min_size=1, max_size=12
)
header_value = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=60).filter(
        lambda value: value == value.strip(" \t")
    ),
    st.lists(word, max_size=6).map(" ".join),  # words: places to fold
)


Generated = tuple[bytes, tuple[tuple[str, str], ...], bytes, str]
FOLDS = (" ", "\t", "   ")
COLONS = (":", " :", ": ", ":\t", ":   ")


def fold_points(value: str) -> list[int]:
    """Single spaces between two non-blank characters: folding there unfolds to the same value."""
    return [
        i
        for i in range(1, len(value) - 1)
        if value[i] == " " and " " not in value[i - 1 : i + 2 : 2] and "\t" not in value[i - 1 : i + 2 : 2]
    ]


@st.composite
def messages(draw: st.DrawFn) -> Generated:
    """A message with generated headers (some folded, odd spacing), the headers and body expected
    back, and the summary."""
    if draw(st.booleans()):
        method = draw(st.text(TOKEN_CHARS, min_size=1, max_size=10))
        start = f"{method} sip:{draw(st.text('abc123', min_size=1))}@h SIP/2.0"
        summary = method
    else:
        code = draw(st.integers(100, 699))
        reason = draw(st.text("abcdefg OK", max_size=20).map(lambda text: text.strip(" ")))
        start = f"SIP/2.0 {code} {reason}"
        summary = f"{code} {reason}" if reason else str(code)
    call_id = draw(st.text(TOKEN_CHARS + "@", min_size=1, max_size=30))
    cseq = f"{draw(st.integers(0, 2**31 - 1))} {draw(st.text(TOKEN_CHARS, min_size=1, max_size=10))}"
    extra = draw(st.lists(st.tuples(header_name, header_value), max_size=12))
    body = draw(st.binary(max_size=200))
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    rng = draw(st.randoms(use_true_random=False))
    lines = [f"Call-ID: {call_id}", f"CSeq:  {cseq}"]
    expected = [("call-id", call_id), ("cseq", cseq)]
    for name, value in extra:
        spaces = fold_points(value)
        if spaces and rng.random() < 0.5:  # fold at a single space: unfolding gives it back
            cut = rng.choice(spaces)
            lines.append(f"{name}: {value[:cut]}{eol}{rng.choice(FOLDS)}{value[cut + 1 :]}")
        else:
            lines.append(f"{name}{rng.choice(COLONS)}{value}")
        expected.append((canonical_header_name(name), value))
    lines.append(f"Content-Length: {len(body)}")
    expected.append(("content-length", str(len(body))))
    data = (eol.join([start, *lines]) + eol + eol).encode() + body + draw(st.binary(max_size=10))
    return data, tuple(expected), body, summary


@settings(max_examples=300)
@given(messages())
def test_round_trip_of_generated_messages(case: Generated) -> None:
    data, expected, body, summary = case
    msg = parse_message(data)
    assert msg.headers == expected
    assert msg.body == body
    assert msg.summary() == summary
    assert msg.call_id == expected[0][1]
    assert msg.cseq == (int(expected[1][1].split(" ")[0]), expected[1][1].split(" ")[1])
    assert looks_like_sip(data)
    for name, value in expected:
        assert value in msg.header_values(name)
