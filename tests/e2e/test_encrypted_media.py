"""Encrypted media is reported, never decoded into noise; a hold of any length never ends a call."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from callrec.capture.model.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CallState
from callrec.capture.tracking.tracker import CallTracker, TrackerConfig
from callrec.cli.main import cli
from callrec.decode.render import render_call
from tests.helpers.builders import CALLEE_IP, CALLER_IP, batch, rtp, sdp, sip
from tests.helpers.keyset import provision

REAL = Path(__file__).resolve().parents[2] / "pcaps" / "real"
MS, S = 1_000_000, 1_000_000_000
URI = "sip:1002@example.com"


def _import(home: Path, capture: Path) -> list[dict]:
    provision(home)
    result = CliRunner().invoke(cli, ["--home", str(home), "import", "--json", str(capture)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sdes_srtp_calls_are_reported_not_recorded(tmp_path: Path) -> None:
    calls = _import(tmp_path, REAL / "voipshark" / "SIP-SRTP-Normal_Call_two_parties.pcap")
    assert len(calls) == 2
    for call in calls:
        assert call["recording"] is None
        assert call["not_recorded"] == "media encrypted: cannot record"
        assert all(leg["packets"] > 1000 for leg in call["legs"])  # the media was there, encrypted
    assert not list(tmp_path.rglob("*.wav"))


def test_zrtp_in_the_media_stream_is_detected(tmp_path: Path) -> None:
    [call] = _import(tmp_path, REAL / "wireshark-wiki" / "Asterisk_ZFONE_XLITE.pcap")
    assert call["recording"] is None and call["not_recorded"] == "media encrypted: cannot record"


def _call(offer: bytes, answer: bytes, hold_at: int | None = None, media_until: int = 2 * S) -> list:
    rows = [
        (0, CALLER_IP, 5060, CALLEE_IP, 5060, sip(f"INVITE {URI} SIP/2.0", body=offer)),
        (100 * MS, CALLEE_IP, 5060, CALLER_IP, 5060, sip("SIP/2.0 200 OK", to_tag="b1", body=answer)),
        (101 * MS, CALLER_IP, 5060, CALLEE_IP, 5060, sip(f"ACK {URI} SIP/2.0", cseq="1 ACK", to_tag="b1")),
    ]
    t, i = 200 * MS, 0
    while t < media_until:
        rows.append((t, CALLER_IP, 4000, CALLEE_IP, 6000, rtp(i, i * 160, 0xA)))
        rows.append((t + 5 * MS, CALLEE_IP, 6000, CALLER_IP, 4000, rtp(i, i * 160, 0xB)))
        t, i = t + 20 * MS, i + 1
    if hold_at is not None:
        held = sdp(CALLER_IP, 4000, direction="sendonly")
        rows.append((hold_at, CALLER_IP, 5060, CALLEE_IP, 5060,
                     sip(f"INVITE {URI} SIP/2.0", cseq="2 INVITE", to_tag="b1", body=held)))  # fmt: skip
        rows.append((hold_at + MS, CALLEE_IP, 5060, CALLER_IP, 5060,
                     sip("SIP/2.0 200 OK", cseq="2 INVITE", to_tag="b1",
                         body=sdp(CALLEE_IP, 6000, direction="recvonly"))))  # fmt: skip
    return rows


def test_an_srtp_leg_stays_silent_and_the_other_is_recorded() -> None:
    crypto = "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
    offer = sdp(CALLER_IP, 4000)  # the caller receives plain RTP
    answer = sdp(CALLEE_IP, 6000, extra=crypto).replace(b"RTP/AVP", b"RTP/SAVP")  # the callee SRTP
    tracker = CallTracker()
    calls = tracker.feed(batch(_call(offer, answer))) + tracker.flush()
    call = calls[0]
    assert call.legs[CALLER_TO_CALLEE].encrypted and not call.legs[CALLEE_TO_CALLER].encrypted
    rendered = render_call(call)
    assert not np.any(rendered.samples[:, 0])  # ciphertext is never decoded
    assert np.any(rendered.samples[:, 1])
    assert rendered.legs[CALLER_TO_CALLEE].filtered == {"encrypted": len(call.legs[CALLER_TO_CALLEE].packets)}


def test_a_hold_longer_than_the_media_timeout_does_not_end_the_call() -> None:
    rows = _call(sdp(CALLER_IP, 4000), sdp(CALLEE_IP, 6000), hold_at=2 * S + 10 * MS)
    rows.append((1000 * S, "192.0.2.1", 1, "192.0.2.2", 2, b"\x00" * 20))  # 16 minutes on hold
    tracker = CallTracker(TrackerConfig(media_timeout_s=300))
    assert tracker.feed(batch(rows)) == []
    assert tracker.calls_in_progress == 1
    # without the hold the same silence ends it
    rows = _call(sdp(CALLER_IP, 4000), sdp(CALLEE_IP, 6000))
    rows.append((1000 * S, "192.0.2.1", 1, "192.0.2.2", 2, b"\x00" * 20))
    ended = CallTracker(TrackerConfig(media_timeout_s=300)).feed(batch(rows))
    assert len(ended) == 1 and ended[0].end_reason.startswith("timeout: no media")
    assert ended[0].state == CallState.ANSWERED


def test_a_held_call_still_ends_at_the_maximum_call_length() -> None:
    rows = _call(sdp(CALLER_IP, 4000), sdp(CALLEE_IP, 6000), hold_at=2 * S + 10 * MS)
    rows.append((50_000 * S, "192.0.2.1", 1, "192.0.2.2", 2, b"\x00" * 20))
    ended = CallTracker(TrackerConfig(max_call_s=12 * 3600)).feed(batch(rows))
    assert len(ended) == 1 and "without BYE" in ended[0].end_reason


SHARED = Path(__file__).resolve().parents[3] / "shared" / "pcaps"


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/pcaps is not beside this checkout")
def test_media_of_sip_over_tls_is_recorded_and_says_why_it_has_no_signalling(tmp_path: Path) -> None:
    [call] = _import(tmp_path, SHARED / "wireshark-wiki" / "sip-tls-1.3-and-rtcp" / "sip.pcap")
    assert call["state"] == "unsignalled" and call["recording"] is not None
    shown = CliRunner().invoke(cli, ["--home", str(tmp_path), "calls", "show", str(call["id"]), "--json"])
    notes = [e for e in json.loads(shown.stdout)["events"] if e["summary"] == "signalling encrypted"]
    assert [e["detail"] for e in notes] == [
        "SIP over TLS (port 5061) between 217.12.244.34 and 217.12.247.98: "
        "the call's signalling cannot be read"
    ]
