"""Every codec behind the decoder interface: registry, round trips against a known signal, RTP
packing quirks, samples per packet against the RTP clock, and corrupt payloads.

Round trips encode a speech-like signal with an encoder that is not the decoder under test
(FFmpeg's encoders through PyAV, opencore's AMR-NB, VisualOn's AMR-WB by ctypes, and this file's own
IMA, L16, AMR payload packers), packetise it as RTP the way the RFCs say, decode it through
``decoder_for`` and require a normalised correlation >= 0.95 (>= 0.85 for low-rate codecs) at the
best lag. Codecs FFmpeg can only decode (GSM, G.729, iLBC, Speex) are checked on real captures in
``test_decode_codec_captures.py``; AMR in ``test_decode_codec_amr.py``; Opus (FEC, PLC) in
``test_decode_codec_opus.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs import decoder_for
from callrec.decode.codecs.amr import AmrDecoder
from callrec.decode.codecs.dvi4 import INDEX_STEP, STEP_SIZE
from callrec.decode.codecs.g722 import G722Decoder
from callrec.decode.codecs.g726 import G726Decoder
from callrec.decode.codecs.opus import OpusDecoder
from tests.helpers.codec_signals import I16, best_correlation, encode, prompt_8k, rtp, speechlike

SECONDS = 3


def decode_all(fmt: MediaFormat, packets: RtpPackets) -> tuple[I16, np.ndarray, object]:
    decoder = decoder_for(fmt)
    assert decoder is not None, fmt
    pcm, counts = decoder.decode(packets)
    assert pcm.dtype == np.int16 and counts.dtype == np.int64
    assert int(counts.sum()) == pcm.shape[0] and counts.shape[0] == len(packets)
    return pcm, counts, decoder


def consistent_with_clock(decoder: object, counts: np.ndarray, ticks: int) -> bool:
    """Samples per packet times (clock / rate) is the RTP timestamp step."""
    clock, rate = decoder.clock_rate_hz, decoder.sample_rate_hz  # type: ignore[attr-defined]
    return bool((counts * clock == ticks * rate).all())


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        (MediaFormat(9, "G722", 8000), "G722Decoder"),
        (MediaFormat(96, "G726-32", 8000), "G726Decoder"),
        (MediaFormat(96, "AAL2-G726-16", 8000), "G726Decoder"),
        (MediaFormat(18, "G729", 8000), "G729Decoder"),
        (MediaFormat(97, "G729D", 8000), "G729Decoder"),
        (MediaFormat(3, "GSM", 8000), "GsmDecoder"),
        (MediaFormat(97, "iLBC", 8000, fmtp="mode=20"), "IlbcDecoder"),
        (MediaFormat(4, "G723", 8000), "G7231Decoder"),
        (MediaFormat(97, "speex", 16000), "SpeexDecoder"),
        (MediaFormat(11, "L16", 44100), "LinearDecoder"),
        (MediaFormat(97, "L16", 16000, 2), "LinearDecoder"),
        (MediaFormat(5, "DVI4", 8000), "Dvi4Decoder"),
        (MediaFormat(96, "AMR", 8000, fmtp="octet-align=1"), "AmrDecoder"),
        (MediaFormat(96, "AMR-WB", 16000), "AmrDecoder"),
        (MediaFormat(111, "opus", 48000, 2, "useinbandfec=1"), "OpusDecoder"),
    ],
)
def test_registry_has_a_decoder_for_every_common_voice_codec(fmt: MediaFormat, name: str) -> None:
    decoder = decoder_for(fmt)
    assert type(decoder).__name__ == name
    assert decoder_for(fmt) is not decoder  # fresh state per segment


@pytest.mark.parametrize(
    "fmt",
    [
        MediaFormat(101, "telephone-event", 8000),
        MediaFormat(13, "CN", 8000),
        MediaFormat(96, "AMR", 8000, fmtp="interleaving=4"),  # de-interleaving not supported
        MediaFormat(96, "AMR", 8000, 2),
        MediaFormat(97, "speex", 44100),
        MediaFormat(7, "LPC", 8000),
        MediaFormat(96, "opus", 48000, 6),
    ],
)
def test_non_audio_and_unsupported_variants_have_none(fmt: MediaFormat) -> None:
    assert decoder_for(fmt) is None


def test_g722_16_khz_audio_on_an_8_khz_clock() -> None:
    x = speechlike(16000, SECONDS)
    packets = rtp(encode("g722", x, 16000, 320), 160)  # 20 ms: 160 bytes, timestamp + 160
    pcm, counts, decoder = decode_all(MediaFormat(9, "G722", 8000), packets)
    assert set(counts.tolist()) == {320} and consistent_with_clock(decoder, counts, 160)
    lag, corr = best_correlation(x, pcm, 400)
    assert corr >= 0.99 and 0 <= lag <= 30  # the QMF filter pair delays by 22 samples
    # one stream: decoding in two calls equals one call (state carries over), bulk or not
    again = G722Decoder()
    halves = [again.decode(packets.select(np.arange(a, b)))[0] for a, b in ((0, 70), (70, len(packets)))]
    np.testing.assert_array_equal(np.concatenate(halves), pcm)


def _g726_packets(x: I16, kbps: int, big_endian: bool) -> list[bytes]:
    stream = b"".join(
        encode("adpcm_g726" if big_endian else "adpcm_g726le", x, 8000, 160, bit_rate=kbps * 1000)
    )
    size = kbps * 20 // 8  # 20 ms
    return [stream[i : i + size] for i in range(0, len(stream) - size + 1, size)]


@pytest.mark.parametrize("kbps", [16, 24, 32, 40])
@pytest.mark.parametrize("aal2", [False, True])
def test_g726_rate_from_the_name_and_packing_per_rfc_3551(kbps: int, aal2: bool) -> None:
    x = speechlike(8000, SECONDS, seed=kbps)
    packets = rtp(_g726_packets(x, kbps, big_endian=aal2), 160)
    fmt = MediaFormat(96, f"{'AAL2-' if aal2 else ''}G726-{kbps}", 8000)
    pcm, counts, decoder = decode_all(fmt, packets)
    assert consistent_with_clock(decoder, counts, 160)
    assert best_correlation(x, pcm, 80)[1] >= (0.95 if kbps > 16 else 0.93)
    assert not decoder.packing_swapped  # type: ignore[attr-defined]


@pytest.mark.parametrize("kbps", [16, 24, 32, 40])
@pytest.mark.parametrize("sent_big_endian", [False, True])
def test_g726_packing_under_the_wrong_name_is_detected(kbps: int, sent_big_endian: bool) -> None:
    x = prompt_8k()  # real speech: the detection judges how predictable the decoded audio is
    packets = rtp(_g726_packets(x, kbps, big_endian=sent_big_endian), 160)
    decoder = G726Decoder(kbps, aal2=not sent_big_endian)  # e.g. spandsp: AAL2 packing, "G726-32"
    pcm, _ = decoder.decode(packets)
    assert decoder.packing_swapped and decoder.big_endian == sent_big_endian
    assert best_correlation(x, pcm, 80)[1] >= 0.98
    blind = G726Decoder(kbps, aal2=not sent_big_endian, probe=False)
    assert best_correlation(x, blind.decode(packets)[0], 80)[1] < 0.8  # what the name alone gives


@pytest.mark.parametrize("kbps", [16, 24, 32, 40])
def test_g726_right_names_are_kept_for_speech_and_tones(kbps: int) -> None:
    for x in (prompt_8k(), speechlike(8000, 5, seed=7)):
        for big_endian in (False, True):
            decoder = G726Decoder(kbps, aal2=big_endian)
            decoder.decode(rtp(_g726_packets(x, kbps, big_endian), 160))
            assert not decoder.packing_swapped


def test_g723_1_frames_walked_by_their_type_bits() -> None:
    x = speechlike(8000, SECONDS, seed=3)
    frames = encode("g723_1", x, 8000, 240, bit_rate=6300)
    assert {len(f) for f in frames} == {24} and all(f[0] & 3 == 0 for f in frames)
    two = [frames[i] + frames[i + 1] for i in range(0, len(frames) - 1, 2)]  # 60 ms packets
    sid = bytes([0x02, 0, 0, 0])  # a 4-octet SID frame (type bits 10) ends one packet
    two[5] = two[5][:24] + sid
    pcm, counts, decoder = decode_all(MediaFormat(4, "G723", 8000), rtp(two, 480))
    assert consistent_with_clock(decoder, counts, 480) and decoder.bad_packets == 0  # type: ignore[attr-defined]
    assert best_correlation(x, pcm, 400)[1] >= 0.85


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (11025, 1), (16000, 2), (48000, 1)])
def test_l16_is_big_endian_and_channels_are_averaged(rate: int, channels: int) -> None:
    step = rate // 50
    x = speechlike(rate, 1, level=20000)[: rate // step * step]
    wide = np.stack([x, (x // 2).astype(np.int16)], axis=1)[:, :channels].reshape(-1)
    raw = wide.astype(">i2").tobytes()
    size = step * channels * 2
    packets = rtp([raw[i : i + size] for i in range(0, len(raw), size)], step)
    pcm, counts, decoder = decode_all(MediaFormat(97, "L16", rate, channels), packets)
    want = x if channels == 1 else np.rint((x.astype(np.int32) + x // 2) / 2).astype(np.int16)
    np.testing.assert_array_equal(pcm, want)
    assert consistent_with_clock(decoder, counts, step)


def _ima_encode(x: I16, predictor: int, index: int, track: list[int] | None = None) -> tuple[bytes, int, int]:
    """IMA ADPCM encoder (IMA recommended practice 3.0), nibbles high first as RFC 3551 packs them;
    ``track`` collects its own reconstruction, which a decoder must reproduce exactly."""
    codes = []
    for sample in x.tolist():
        step = int(STEP_SIZE[index])
        delta = sample - predictor
        code = 8 if delta < 0 else 0
        delta = abs(delta)
        vpdiff = step >> 3
        for bit, part in ((4, step), (2, step >> 1), (1, step >> 2)):
            if delta >= part:
                code |= bit
                delta -= part
                vpdiff += part
        predictor = max(-32768, min(32767, predictor - vpdiff if code & 8 else predictor + vpdiff))
        index = max(0, min(88, index + int(INDEX_STEP[code])))
        codes.append(code)
        if track is not None:
            track.append(predictor)
    return bytes((a << 4) | b for a, b in zip(codes[0::2], codes[1::2], strict=True)), predictor, index


def test_dvi4_header_state_and_nibble_order() -> None:
    x = speechlike(8000, 2, seed=5)
    payloads, predictor, index = [], 0, 0
    tracks: list[list[int]] = []
    for i in range(0, x.shape[0], 160):
        header = int(predictor).to_bytes(2, "big", signed=True) + bytes([index, 0])
        tracks.append([])
        body, predictor, index = _ima_encode(x[i : i + 160], predictor, index, tracks[-1])
        payloads.append(header + body)
    lost = {10, 11, 40}  # each packet restarts from its own header: a loss never spreads
    pcm, counts, decoder = decode_all(MediaFormat(5, "DVI4", 8000), rtp(payloads, 160, drop=lost))
    assert set(counts.tolist()) == {160} and consistent_with_clock(decoder, counts, 160)
    want = np.concatenate([tracks[i] for i in range(len(payloads)) if i not in lost]).astype(np.int16)
    np.testing.assert_array_equal(pcm, want)  # bit exact with the encoder's own reconstruction
    assert best_correlation(x, decode_all(MediaFormat(5, "DVI4", 8000), rtp(payloads, 160))[0], 10)[1] >= 0.95


CORRUPTIONS = [
    (MediaFormat(3, "GSM", 8000), 160, lambda p: p[:20]),  # not a whole 33-octet frame
    (MediaFormat(18, "G729", 8000), 160, lambda p: p[:7]),
    (MediaFormat(97, "iLBC", 8000), 240, lambda p: p[:49]),
    (MediaFormat(4, "G723", 8000), 240, lambda p: bytes([0x03]) + p[1:]),  # reserved frame type
    (MediaFormat(96, "AMR", 8000), 160, lambda p: p[:5]),  # shorter than its TOC promises
    (MediaFormat(5, "DVI4", 8000), 160, lambda p: p[:2] + bytes([200]) + p[3:]),  # step index > 88
    (MediaFormat(96, "opus", 48000, 2), 960, lambda p: bytes([p[0] | 3, 0])),  # code 3, zero frames
    (MediaFormat(97, "speex", 8000), 160, lambda p: b"\xff" * len(p)),
]


@pytest.mark.parametrize(("fmt", "ticks", "corrupt"), CORRUPTIONS, ids=lambda v: getattr(v, "encoding", ""))
def test_a_corrupt_payload_becomes_silence_of_its_length(fmt: MediaFormat, ticks: int, corrupt) -> None:  # type: ignore[no-untyped-def]
    payloads = _payloads_for(fmt)
    good, good_counts, _ = decode_all(fmt, rtp(payloads, ticks))
    broken = list(payloads)
    broken[7] = corrupt(broken[7])
    pcm, counts, decoder = decode_all(fmt, rtp(broken, ticks))
    assert decoder.bad_packets == 1  # type: ignore[attr-defined]
    np.testing.assert_array_equal(counts, good_counts)  # every packet keeps its duration
    start = int(good_counts[:7].sum())
    assert not pcm[start : start + int(counts[7])].any()
    np.testing.assert_array_equal(pcm[:start], good[:start])


def _payloads_for(fmt: MediaFormat) -> list[bytes]:
    """20 packets of real-looking payloads for ``fmt`` (encoded, or taken from a real capture)."""
    from tests.decode.test_codec_amr import NB_BITS, amr_payload
    from tests.decode.test_codec_captures import capture_payloads  # real captures for decode-only codecs

    name = fmt.encoding.upper()
    if name == "G723":
        return encode("g723_1", speechlike(8000, 1), 8000, 240, bit_rate=6300)[:20]
    if name == "AMR":
        frames = encode("libopencore_amrnb", speechlike(8000, 1), 8000, 160, bit_rate=12200)
        return [amr_payload([f], NB_BITS, False) for f in frames[:20]]
    if name == "OPUS":
        return encode("libopus", speechlike(48000, 1), 48000, 960, bit_rate=24000)[:20]
    if name == "DVI4":
        x = speechlike(8000, 1)
        return [bytes(4) + _ima_encode(x[i : i + 160], 0, 0)[0] for i in range(0, 3200, 160)]
    return capture_payloads(name)[:20]


def test_opus_decoder_is_the_libopus_one_here() -> None:
    assert isinstance(decoder_for(MediaFormat(96, "opus", 48000, 2)), OpusDecoder)
    assert isinstance(decoder_for(MediaFormat(96, "AMR-WB", 16000)), AmrDecoder)
