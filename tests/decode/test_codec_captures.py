"""Real captures of every codec, decoded through the real pipeline and held to a real reference.

The Wireshark wiki's ``sip-rtp-*.pcap`` (pcaps/real/wireshark-wiki/) are SIPp calling FreeSWITCH
1.6.12, one call per codec variant, and FreeSWITCH plays the *same prompt* in every call. So the
G.711 call (bit-exact decoder) is a reference for every 8 kHz codec and the L16/16000 call (PCM, no
codec at all) for every 16 kHz one: each call is imported and exported with the CLI
(``callrec --home H import F --json``, ``calls export ID --out x.wav``) and its channel must
correlate with the reference at the best lag by at least the codec's figure below (measured value
minus a margin), besides plausible level and spectrum: RMS of speech where RTP flowed, < 0.1 % of
samples at full scale, energy below 4 kHz for narrowband. The AMR-NB capture has no SIP and is
decoded directly (packets from capture.sources.capture_file, capture.frames.decoder and capture.streams.rtp).
"""

from __future__ import annotations

import io
import json
import wave
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from callrec.capture.model.media import MediaFormat
from callrec.cli.main import cli
from callrec.decode.codecs import decoder_for
from callrec.decode.resample import resample
from tests.helpers.codec_signals import (
    REAL,
    best_correlation,
    capture_streams,
    full_scale_share,
    one_stream,
    rms,
    spectrum_below,
)
from tests.helpers.keyset import provision

WIKI = REAL / "wireshark-wiki"


@cache
def export_calls(capture: str, home: Path) -> list[tuple[dict[str, Any], np.ndarray, int]]:
    """Every recorded call of ``capture``: (call JSON, the channel that carries media, rate)."""
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(home), "import", str(WIKI / capture), "--json"])
    assert result.exit_code == 0, result.output
    calls = json.loads(result.stdout)
    out = []
    for call in calls:
        if call["recording"] is None:
            continue
        wav_path = home / f"{call['id']}.wav"
        done = runner.invoke(
            cli, ["--home", str(home), "calls", "export", str(call["id"]), "--out", str(wav_path)]
        )
        assert done.exit_code == 0, done.output
        with wave.open(io.BytesIO(wav_path.read_bytes())) as w:
            rate = w.getframerate()
            stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
        channel = stereo[:, int(np.abs(stereo[:, 1]).sum() > np.abs(stereo[:, 0]).sum())]
        out.append((call, channel.copy(), rate))
    return out


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision(tmp_path_factory.mktemp("codec-captures"))


def reference(home: Path, rate: int) -> np.ndarray:
    """The prompt: G.711 for 8 kHz, L16/16000 for 16 kHz, L16/48000 resampled for other rates."""
    if rate == 8000:
        return next(
            ch for call, ch, _ in export_calls("sip-rtp-g711.pcap", home) if call["codecs"] == ["PCMU"]
        )
    l16 = {r: ch for _, ch, r in export_calls("sip-rtp-l16.pcap", home)}
    return l16[rate] if rate in l16 else resample(l16[48000], 48000, rate)


# (capture, codec as the call lists it, recording rate, minimum correlation with the reference)
CALLS = [
    ("sip-rtp-g722.pcap", "G722", 16000, 0.99),
    ("sip-rtp-g726.pcap", "G726-16", 8000, 0.97),
    ("sip-rtp-g726.pcap", "G726-24", 8000, 0.98),
    ("sip-rtp-g726.pcap", "G726-32", 8000, 0.99),
    # FreeSWITCH's 40 kbit/s stream decodes 5 dB quieter and less alike (0.78) whichever way it
    # is read; FFmpeg's own 40 kbit/s encoder round-trips at 0.999 (test_decode_codecs.py).
    ("sip-rtp-g726.pcap", "G726-40", 8000, 0.70),
    ("sip-rtp-g726.pcap", "AAL2-G726-16", 8000, 0.97),
    ("sip-rtp-g726.pcap", "AAL2-G726-32", 8000, 0.99),
    ("sip-rtp-g726.pcap", "AAL2-G726-40", 8000, 0.70),
    ("sip-rtp-gsm.pcap", "GSM", 8000, 0.95),
    ("sip-rtp-g729a.pcap", "G729", 8000, 0.75),  # CELP at 8 kbit/s: waveform 0.81
    ("sip-rtp-ilbc.pcap", "iLBC", 8000, 0.72),  # 13.3 kbit/s, 30 ms frames: 0.79
    ("sip-rtp-speex.pcap", "speex", 8000, 0.72),  # 0.80
    ("sip-rtp-speex.pcap", "speex", 16000, 0.75),  # 0.84
    ("sip-rtp-dvi4.pcap", "DVI4", 8000, 0.99),
    ("sip-rtp-dvi4.pcap", "DVI4", 16000, 0.99),
    ("sip-rtp-l16.pcap", "L16", 8000, 0.999),
]


@pytest.mark.parametrize(("capture", "codec", "rate", "minimum"), CALLS, ids=lambda v: str(v))
def test_real_call_decodes_to_the_prompt(
    home: Path, capture: str, codec: str, rate: int, minimum: float
) -> None:
    calls = [(c, ch) for c, ch, r in export_calls(capture, home) if c["codecs"] == [codec] and r == rate]
    assert len(calls) == 1, [(c["codecs"], r) for c, _, r in export_calls(capture, home)]
    call, channel = calls[0]
    leg = next(leg for leg in call["legs"] if leg["packets"])
    packet_s = 0.03 if codec == "iLBC" else 0.02
    assert call["recording"]["seconds"] == pytest.approx(leg["packets"] * packet_s, abs=0.05)
    assert full_scale_share(channel) < 0.001
    assert 300 < rms(channel) < 3000  # the prompt is about -31 dBFS (rms 866 in the G.711 call)
    if rate == 8000:
        assert spectrum_below(channel, rate, 3500) > 0.99
    lag, corr = best_correlation(reference(home, rate), channel, rate // 20)
    assert corr >= minimum, (codec, lag, corr)


def test_wideband_speex_at_32_khz_matches_the_prompt(home: Path) -> None:
    calls = [(c, ch) for c, ch, r in export_calls("sip-rtp-speex.pcap", home) if r == 32000]
    assert len(calls) == 1
    channel = calls[0][1]
    assert full_scale_share(channel) < 0.001 and 300 < rms(channel) < 3000
    assert best_correlation(reference(home, 32000), channel, 3200)[1] >= 0.6  # 0.70 against resampled 48 kHz


def test_opus_hybrid_multi_frame_packets_decode(home: Path) -> None:
    """Five Opus packets (hybrid, 1-3 frames each, 20-40 ms), stereo SDP: decoded mono at 48 kHz."""
    (call, channel, rate), = export_calls("sip-rtp-opus-hybrid.pcap", home)  # fmt: skip
    assert call["codecs"] == ["opus"] and rate == 48000
    assert rms(channel) > 100 and full_scale_share(channel) < 0.001


AMR = REAL / "rtpdump-hdiniz" / "sample1_ipv4_amr-nb.pcap"


def test_amr_nb_volte_capture_without_sip() -> None:
    """VoLTE AMR-NB, bandwidth-efficient (sample-audio.sdp: AMR/8000, no octet-align), dynamic
    PT 113 / 118, every packet captured twice. Modes 4.75-12.2 kbit/s, SID and NO_DATA frames."""
    packets = capture_streams(AMR)
    streams = {
        (int(s), int(p)) for s, p in zip(packets.ssrc.tolist(), packets.payload_type.tolist(), strict=True)
    }
    assert len(streams) == 6
    for ssrc, pt in sorted(streams):
        leg = one_stream(packets, ssrc, pt)
        decoder = decoder_for(MediaFormat(pt, "AMR", 8000))
        assert decoder is not None
        pcm, counts = decoder.decode(leg)
        assert decoder.bad_packets == 0 and set(counts.tolist()) == {160}
        assert full_scale_share(pcm) < 0.001 and spectrum_below(pcm, 8000, 4000) == pytest.approx(1.0)
        steps = np.diff(leg.rtp_ts)
        assert bool((steps[np.diff(leg.seq) == 1] % 160 == 0).all())  # one 20 ms frame per packet
        assert rms(pcm) > 50


def capture_payloads(encoding: str) -> list[bytes]:
    """The payloads of the real call for ``encoding`` (for the corruption tests)."""
    capture = {"GSM": "sip-rtp-gsm.pcap", "G729": "sip-rtp-g729a.pcap", "ILBC": "sip-rtp-ilbc.pcap"}
    packets = capture_streams(WIKI / capture.get(encoding, "sip-rtp-speex.pcap"))
    audio = packets.select(np.flatnonzero(packets.payload_type != 101))
    first = one_stream(audio, int(audio.ssrc[0]), int(audio.payload_type[0]))
    return [first.payload_bytes(i) for i in range(len(first))]


@pytest.mark.parametrize(
    ("capture", "fmt", "ticks"),
    [
        ("sip-rtp-gsm.pcap", MediaFormat(3, "GSM", 8000), 160),
        ("sip-rtp-g729a.pcap", MediaFormat(18, "G729", 8000), 160),
        ("sip-rtp-ilbc.pcap", MediaFormat(99, "iLBC", 8000), 240),
        ("sip-rtp-g722.pcap", MediaFormat(9, "G722", 8000), 160),
        ("sip-rtp-dvi4.pcap", MediaFormat(5, "DVI4", 8000), 160),
    ],
)
def test_samples_per_packet_follow_the_rtp_clock(capture: str, fmt: MediaFormat, ticks: int) -> None:
    packets = capture_streams(WIKI / capture)
    audio = packets.select(np.flatnonzero(packets.payload_type == fmt.payload_type))
    leg = one_stream(audio, int(audio.ssrc[0]), fmt.payload_type)
    decoder = decoder_for(fmt)
    assert decoder is not None
    _, counts = decoder.decode(leg)
    step = np.diff(leg.rtp_ts)[0]
    assert step == ticks
    assert bool((counts * decoder.clock_rate_hz == step * decoder.sample_rate_hz).all())
