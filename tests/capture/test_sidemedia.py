"""Media besides the audio: video RTP is counted and kept out of the legs; a re-INVITE to T.38
fax ends the audio cleanly and its UDPTL is never parsed as RTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CallState, CapturedCall
from callrec.capture.sip.dialog import CallDialog
from callrec.capture.sip.message import parse_message
from callrec.capture.sip.sdp import T38, VIDEO
from callrec.capture.sources.capture_file import open_capture
from callrec.capture.tracking.tracker import CallTracker, TrackerConfig
from tests.helpers.builders import CALLEE_IP, CALLER_IP, Row, batch, rtp, sdp, sip

MS = 1_000_000
S = 1_000_000_000
URI = "sip:1002@example.com"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "pcaps"
REAL = Path(__file__).resolve().parents[2] / "pcaps" / "real"
VIDEO_LINES = "m=video {port} RTP/AVP 96 34\r\na=rtpmap:96 H264/90000\r\na=sendrecv"


def _t38(addr: str, port: int, audio_port: int | None = None) -> bytes:
    lines = ["v=0", f"o=- 1 2 IN IP4 {addr}", "s=-", f"c=IN IP4 {addr}", "t=0 0"]
    if audio_port is not None:
        lines.append(f"m=audio {audio_port} RTP/AVP 0")
    lines += [f"m=image {port} udptl t38", "a=T38FaxVersion:0", "a=T38FaxRateManagement:transferredTCF"]
    return ("\r\n".join(lines) + "\r\n").encode()


def _invite(t: int, body: bytes, cseq: int = 1, to_tag: str | None = None) -> Row:
    msg = sip(f"INVITE {URI} SIP/2.0", cseq=f"{cseq} INVITE", to_tag=to_tag, body=body)
    return (t, CALLER_IP, 5060, CALLEE_IP, 5060, msg)


def _ok(t: int, body: bytes, cseq: int = 1) -> Row:
    msg = sip("SIP/2.0 200 OK", cseq=f"{cseq} INVITE", to_tag="b1", body=body)
    return (t, CALLEE_IP, 5060, CALLER_IP, 5060, msg)


def _bye(t: int) -> Row:
    return (t, CALLER_IP, 5060, CALLEE_IP, 5060, sip(f"BYE {URI} SIP/2.0", cseq="9 BYE", to_tag="b1"))


def _audio(t0: int, n: int, a_port: int = 4000, b_port: int = 6000, seq0: int = 0) -> list[Row]:
    rows = []
    for i in range(n):
        t, seq = t0 + i * 20 * MS, seq0 + i
        rows.append((t, CALLER_IP, a_port, CALLEE_IP, b_port, rtp(seq, seq * 160, 0xA)))
        rows.append((t + 5 * MS, CALLEE_IP, b_port, CALLER_IP, a_port, rtp(seq, seq * 160, 0xB)))
    return rows


def _udptl(t0: int, n: int, a_port: int, b_port: int, seq0: int = 0) -> list[Row]:
    """UDPTL: a 16-bit sequence number, then the IFP packet. From 32768 on, its first byte has
    the RTP version bits and the datagram looks like RTP."""
    rows = []
    for i in range(n):
        seq = (seq0 + i) & 0xFFFF
        ifp = seq.to_bytes(2, "big") + b"\x06\xd0\x01\x00" + bytes(12)
        rows.append((t0 + i * 40 * MS, CALLER_IP, a_port, CALLEE_IP, b_port, ifp))
        rows.append((t0 + i * 40 * MS + MS, CALLEE_IP, b_port, CALLER_IP, a_port, ifp))
    return rows


def _run(rows: list[Row], config: TrackerConfig | None = None, chunks: int = 1):
    tracker = CallTracker(config)
    out: list[CapturedCall] = []
    rows = sorted(rows, key=lambda r: r[0])
    size = max(1, len(rows) // chunks + 1)
    for i in range(0, len(rows), size):
        out += tracker.feed(batch(rows[i : i + size]))
    return tracker, out + tracker.flush()


# -- video ----------------------------------------------------------------------------------------


def _video(t0: int, n: int, a_port: int, b_port: int, pt: int = 96) -> list[Row]:
    rows = []
    for i in range(n):
        t = t0 + i * 33 * MS
        rows.append((t, CALLER_IP, a_port, CALLEE_IP, b_port, rtp(i, i * 3000, 0xCA, pt, b"\x65" * 900)))
        rows.append((t + MS, CALLEE_IP, b_port, CALLER_IP, a_port, rtp(i, i * 3000, 0xCB, pt, b"\x65" * 900)))
    return rows


def test_video_on_its_own_ports_is_counted_and_kept_out_of_the_legs() -> None:
    offer = sdp(CALLER_IP, 4000, extra=VIDEO_LINES.format(port=4002))
    answer = sdp(CALLEE_IP, 6000, extra=VIDEO_LINES.format(port=6002))
    rows = [_invite(0, offer), _ok(100 * MS, answer)]
    rows += _audio(200 * MS, 50) + _video(200 * MS, 60, 4002, 6002) + [_bye(3 * S)]
    tracker, [call] = _run(rows, chunks=3)
    assert call.state == CallState.COMPLETED
    for direction, ssrc in ((CALLER_TO_CALLEE, 0xA), (CALLEE_TO_CALLER, 0xB)):
        assert set(call.legs[direction].packets.ssrc.tolist()) == {ssrc}
        assert len(call.legs[direction].packets) == 50
    assert tracker.counters["video_rtp"] == 120
    assert tracker.counters["rtp_unmatched"] == 0 and tracker.counters["unsignalled_calls"] == 0
    assert "video 198.51.100.10:4002: not recorded" in call.events[0].detail


def test_video_that_arrives_before_its_sdp_is_not_an_unsignalled_call() -> None:
    answer = sdp(CALLEE_IP, 6000, extra=VIDEO_LINES.format(port=6002))
    early = _video(0, 40, 4002, 6002)  # the caller's camera starts before the answer names 6002
    offer = sdp(CALLER_IP, 4000, extra=VIDEO_LINES.format(port=4002))
    rows = early + [_invite(0, offer), _ok(1 * S, answer)] + _audio(1100 * MS, 20) + [_bye(3 * S)]
    tracker, calls = _run(rows)
    assert [c.state for c in calls] == [CallState.COMPLETED]
    assert tracker.counters["video_rtp"] == 80


def test_video_sharing_the_audio_port_is_told_apart_by_payload_type() -> None:
    """BUNDLE-style: the video section names the audio's own port; its packets ride the audio
    5-tuple and are dropped from the legs by payload type."""
    offer = sdp(CALLER_IP, 4000, extra=VIDEO_LINES.format(port=4000))
    answer = sdp(CALLEE_IP, 6000, extra=VIDEO_LINES.format(port=6000))
    rows = [_invite(0, offer), _ok(100 * MS, answer)]
    rows += _audio(200 * MS, 50) + _video(200 * MS, 30, 4000, 6000) + [_bye(3 * S)]
    tracker, [call] = _run(rows)
    for leg in call.legs.values():
        assert set(leg.packets.payload_type.tolist()) == {0} and len(leg.packets) == 50
    assert tracker.counters["video_rtp"] == 60


def test_a_video_rtcp_port_on_the_audio_port_leaves_the_audio_alone() -> None:
    """Video at 3999 implies its RTCP at 4000, which is the audio's own port: audio wins."""
    offer = sdp(CALLER_IP, 4000, extra=VIDEO_LINES.format(port=3999))
    rows = [_invite(0, offer), _ok(100 * MS, sdp(CALLEE_IP, 6000))] + _audio(200 * MS, 30) + [_bye(2 * S)]
    tracker, [call] = _run(rows)
    assert len(call.legs[CALLEE_TO_CALLER].packets) == 30 and len(call.legs[CALLER_TO_CALLEE].packets) == 30
    assert tracker.counters["video_rtp"] == 0


def test_video_endpoints_are_released_with_their_call() -> None:
    offer = sdp(CALLER_IP, 4000, extra=VIDEO_LINES.format(port=4002))
    rows = [_invite(0, offer), _ok(100 * MS, sdp(CALLEE_IP, 6000)), _bye(1 * S)]
    rows += _video(10 * S, 1, 4002, 6002)  # long after the call: nobody's video any more
    tracker, _ = _run(rows)
    assert tracker.counters["video_rtp"] == 0 and tracker.counters["rtp_unmatched"] == 2


def test_dialog_offers_name_the_kind_of_each_section() -> None:
    body = sdp(CALLER_IP, 4000, extra=VIDEO_LINES.format(port=4002) + "\r\nm=application 5000 UDP/BFCP *")
    dialog = CallDialog(parse_message(_invite(0, body)[5]), 0)
    offers = dialog.on_message(parse_message(_invite(0, body)[5]), 0)
    assert [(o.kind, o.endpoint.port) for o in offers] == [("audio", 4000), (VIDEO, 4002), ("other", 5000)]
    assert dialog.non_audio_payload_types == frozenset({96, 34})
    assert not dialog.fax


# -- T.38 -----------------------------------------------------------------------------------------


def _fax_call(t38_caller: int, t38_callee: int, fax_s: int = 10, seq0: int = 0) -> list[Row]:
    rows = [_invite(0, sdp(CALLER_IP, 4000)), _ok(100 * MS, sdp(CALLEE_IP, 6000))]
    rows += _audio(200 * MS, 100)  # 2 s of audio
    rows += [
        _invite(2300 * MS, _t38(CALLER_IP, t38_caller), 2, "b1"),
        _ok(2400 * MS, _t38(CALLEE_IP, t38_callee), 2),
    ]
    rows += _udptl(2500 * MS, fax_s * 25, t38_caller, t38_callee, seq0)
    return rows + [_bye((3 + fax_s) * S)]


def test_a_reinvite_to_t38_ends_the_audio_and_udptl_is_not_rtp() -> None:
    rows = _fax_call(4010, 6010, seq0=32700)  # sequence numbers cross 32768: half look like RTP
    tracker, [call] = _run(rows, chunks=4)
    assert call.state == CallState.COMPLETED and call.end_reason == "bye"
    for leg in call.legs.values():
        assert leg.packets.seq.tolist() == list(range(100))  # the audio, and nothing after the switch
    assert tracker.counters["t38_udptl"] == 500
    assert tracker.counters["rtp_unmatched"] == 0 and tracker.counters["udp_not_sip_or_rtp"] == 0
    t38 = [e for e in call.events if e.summary == "T.38"]
    assert [e.detail for e in t38] == ["switched to T.38 fax: audio ends"]
    assert any(
        "T.38 fax (udptl) 198.51.100.20:6010" in e.detail for e in call.events if e.summary == "200 OK"
    )


def test_t38_on_the_audio_port_is_not_mixed_into_the_legs() -> None:
    """Gateways often keep the port: the image stream names the audio's endpoints."""
    tracker, [call] = _run(_fax_call(4000, 6000, seq0=32760))
    for leg in call.legs.values():
        assert leg.packets.seq.tolist() == list(range(100))
    assert tracker.counters["t38_udptl"] == 500 and tracker.counters["rtp_malformed"] == 0


def test_decoding_after_t38_reports_no_lost_audio() -> None:
    from callrec.decode.render import render_call

    _, [call] = _run(_fax_call(4000, 6000, seq0=32760))
    rendered = render_call(call)
    assert all(stats.lost == 0 and stats.packets == 100 for stats in rendered.legs.values())


def test_a_long_fax_is_not_ended_by_the_media_timeout() -> None:
    rows = _fax_call(4010, 6010, fax_s=30)
    tracker, [call] = _run(rows, TrackerConfig(media_timeout_s=5), chunks=10)
    assert call.end_reason == "bye"


def test_back_to_audio_after_t38_on_the_same_port() -> None:
    rows = _fax_call(4000, 6000, fax_s=4)[:-1]  # no BYE yet
    rows += [_invite(7 * S, sdp(CALLER_IP, 4000), 3, "b1"), _ok(7 * S + 100 * MS, sdp(CALLEE_IP, 6000), 3)]
    rows += _audio(7300 * MS, 20, seq0=100) + [_bye(9 * S)]
    tracker, [call] = _run(rows)
    for leg in call.legs.values():
        assert leg.packets.seq.tolist() == list(range(120))
    assert [e.detail for e in call.events if e.summary == "T.38"] == [
        "switched to T.38 fax: audio ends",
        "back to audio after T.38 fax",
    ]
    assert tracker.counters["t38_udptl"] == 200


def test_dialog_t38_offer_with_the_audio_disabled() -> None:
    dialog = CallDialog(parse_message(_invite(0, sdp(CALLER_IP, 4000))[5]), 0)
    offers = dialog.on_message(parse_message(_invite(1, _t38(CALLER_IP, 4000, audio_port=0), 2, "b1")[5]), 1)
    assert [(o.kind, o.endpoint.port, o.rtcp) for o in offers] == [(T38, 4000, None)]
    assert dialog.fax


# -- real captures --------------------------------------------------------------------------------


def _capture(path: Path) -> tuple[CallTracker, list[CapturedCall]]:
    if not path.is_file():
        pytest.skip(f"{path.name} is not available")
    frames, tracker = FrameDecoder(), CallTracker()
    calls: list[CapturedCall] = []
    with open_capture(path) as reader:
        for raw in reader.batches():
            calls += tracker.feed(frames.decode(raw))
    return tracker, calls + tracker.flush()


def test_shared_call_switching_to_t38_with_udptl() -> None:
    """LtoZ_rtpFilter_fail_2.pcap: PCMU, then a re-INVITE to T.38; tshark counts 81 RTP and 1063
    T.38 frames."""
    tracker, [call] = _capture(SHARED / "wireshark-wiki" / "LtoZ_rtpFilter_fail_2.pcap")
    assert tracker.counters["t38_udptl"] == 1063
    assert sum(len(leg.packets) for leg in call.legs.values()) == 81
    assert any(e.summary == "T.38" for e in call.events)


def test_shared_t38_reinvite_on_the_audio_port() -> None:
    """T38.pcap: SIP only; the image stream reuses the audio port 46012."""
    _, [call] = _capture(SHARED / "wireshark-wiki" / "T38.pcap")
    assert [e.detail for e in call.events if e.summary == "T.38"] == ["switched to T.38 fax: audio ends"]


def test_shared_h263_video_call() -> None:
    tracker, [call] = _capture(SHARED / "wireshark-wiki" / "h263-over-rtp.pcap")
    assert tracker.counters["video_rtp"] == 45
    assert tracker.counters["rtp_unmatched"] == 0


def test_real_call_with_a_video_section_keeps_its_audio() -> None:
    """isa-michalcab/real_call.pcap offers video that is never sent: the audio is unchanged."""
    tracker, calls = _capture(REAL / "isa-michalcab" / "real_call.pcap")
    assert tracker.counters["rtp_packets"] == 680 and tracker.counters["video_rtp"] == 0
    assert len(calls) == 2
