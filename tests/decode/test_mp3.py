"""MP3 encoding: streamed chunks, rates and bitrates, and a round trip through FFmpeg's decoder."""

from __future__ import annotations

import io
import time

import av
import numpy as np
import pytest

from callrec.decode.formats.mp3 import (
    Mp3Error,
    bitrates,
    check_settings,
    default_bitrate,
    mp3_chunks,
    read_mp3,
)
from callrec.decode.formats.mp3_gapless import read_info


def speechlike(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Voiced bursts: a wandering pitch with harmonics, syllable-rate envelope, pauses, noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 110 + 40 * seed + 25 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 12) if k * 300 < rate / 2)
    envelope = np.clip(np.sin(2 * np.pi * (2.5 + seed) * t), 0, None) ** 2
    signal = 6000 * voice * envelope + rng.normal(0, 150, t.size)
    return np.clip(signal, -32768, 32767).astype(np.int16)


def decode(data: bytes) -> tuple[np.ndarray, int]:
    """PCM (float, shape (n, channels), scaled to int16 range) and rate of an MP3 stream."""
    with av.open(io.BytesIO(data), format="mp3") as container:
        parts = []
        for frame in container.decode(audio=0):
            array = frame.to_ndarray()
            parts.append(array.T if frame.format.is_planar else array.reshape(-1, frame.layout.nb_channels))
            rate = frame.sample_rate
    return np.concatenate(parts).astype(np.float64) * 32768, rate


def best_lag(source: np.ndarray, decoded: np.ndarray, max_lag: int = 4000) -> tuple[int, float]:
    """The delay of ``decoded`` against ``source`` (FFT cross-correlation) and the normalized
    correlation of the two at that delay."""
    a = source.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(decoded))))
    xcorr = np.fft.irfft(np.fft.rfft(decoded, n) * np.conj(np.fft.rfft(a, n)), n)[: max_lag + 1]
    lag = int(np.argmax(xcorr))
    b = decoded[lag : lag + len(a)]
    a = a[: len(b)]
    return lag, float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def test_stereo_8khz_round_trip_starts_on_time_and_lasts_as_long_as_the_input() -> None:
    # FFmpeg reads the gapless tag: LAME's 576-sample delay, the decoder's 529 and the padding
    # of the last frames are gone (decoded plainly before the tag: 1,105 samples late, 1.6 k long)
    source = np.stack([speechlike(6, 8000, 1), speechlike(6, 8000, 2)], axis=1)
    data = b"".join(mp3_chunks(source, 8000))
    decoded, rate = decode(data)
    assert rate == 8000 and decoded.shape == source.shape
    for channel in (0, 1):
        lag, corr = best_lag(source[:, channel], decoded[:, channel])
        assert lag == 0
        assert corr >= 0.9, corr
    # the channels are not swapped or mixed
    _, crossed = best_lag(source[:, 0], decoded[:, 1], max_lag=0)
    assert abs(crossed) < 0.3


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (16000, 1), (16000, 2), (48000, 2), (11025, 2)])
def test_rates_and_channels_are_kept(rate: int, channels: int) -> None:
    source = np.stack([speechlike(2, rate, c + 1) for c in range(channels)], axis=1)
    decoded, decoded_rate = decode(b"".join(mp3_chunks(source, rate)))
    assert decoded_rate == rate and decoded.shape == source.shape
    lag, corr = best_lag(source[:, 0], decoded[:, 0])
    assert lag == 0 and corr >= 0.9


@pytest.mark.parametrize(
    ("rate", "channels", "kbps"),
    [
        (8000, 2, None),
        (8000, 2, 8),
        (8000, 1, 160),
        (16000, 2, None),
        (24000, 1, 8),
        (48000, 2, None),
        (44100, 1, 32),
    ],
)
def test_the_gapless_tag_says_exactly_what_lame_wrote(rate: int, channels: int, kbps: int | None) -> None:
    """For lengths around every frame boundary: the tag's sample count is the input's (mp3_chunks
    also counts LAME's frames against the tag's and fails on a difference), FFmpeg accepts its
    CRC (it then names the encoder) and decodes exactly that many samples, even where the tag
    does not fit a frame of the stream's bitrate (8 kbit/s at 24 kHz: 24-byte frames)."""
    spf = 1152 if rate >= 32000 else 576
    rng = np.random.default_rng(rate + channels)
    for n in sorted(
        {1, spf - 1, spf, spf + 1, 5 * spf - 1, 5 * spf, 7 * spf + 13, int(rng.integers(2, 40_000))}
    ):
        source = rng.normal(0, 3000, (n, channels)).astype(np.int16)
        data = b"".join(mp3_chunks(source, rate, kbps))
        info = read_info(data)
        assert info is not None and info.samples == n and info.delay == 576
        assert info.stream_bytes in (0, len(data))  # stated where LAME's frames all have one size
        with av.open(io.BytesIO(data), format="mp3") as container:
            assert container.streams.audio[0].metadata.get("encoder") == "LAME3.100"
        decoded, _ = read_mp3(data)
        assert decoded.shape == (n, channels)
        if n >= 2 * spf:  # FFmpeg leaves its 529 samples on streams of under two frames
            assert decode(data)[0].shape == (n, channels)


def test_a_stream_stored_before_the_tag_is_still_read_on_time() -> None:
    source = np.stack([speechlike(3, 8000, 1), speechlike(3, 8000, 2)], axis=1)
    tagged = b"".join(mp3_chunks(source, 8000))
    untagged = tagged[read_info(tagged).tag_bytes :]  # what mp3_chunks wrote before
    assert read_info(untagged) is None
    old, _ = read_mp3(untagged, source.shape[0])
    new, _ = read_mp3(tagged)
    assert old.shape == new.shape == source.shape
    np.testing.assert_array_equal(old, new)  # the same frames, the same samples


def test_mono_accepts_a_flat_array() -> None:
    flat = speechlike(2, 8000, 3)
    assert b"".join(mp3_chunks(flat, 8000)) == b"".join(mp3_chunks(flat.reshape(-1, 1), 8000))


def test_chunks_are_streamed_and_independent_of_the_block_size() -> None:
    source = np.stack([speechlike(4, 8000, 1), speechlike(4, 8000, 2)], axis=1)
    small = list(mp3_chunks(source, 8000, chunk_frames=2000))
    assert len(small) > 10 and all(isinstance(c, bytes) and c for c in small)
    assert b"".join(small) == b"".join(mp3_chunks(source, 8000))


def test_default_bitrates_and_cbr_size() -> None:
    assert default_bitrate(8000, 2) == 48 and default_bitrate(8000, 1) == 24
    assert default_bitrate(16000, 2) == 64 and default_bitrate(48000, 2) == 128
    source = np.stack([speechlike(10, 8000, 1), speechlike(10, 8000, 2)], axis=1)
    for kbps in (None, 16, 64):
        size = len(b"".join(mp3_chunks(source, 8000, kbps)))
        expected = (kbps or 48) * 1000 / 8 * 10
        assert abs(size - expected) / expected < 0.05, (kbps, size)


def test_unsupported_settings_are_refused_before_encoding() -> None:
    stereo = np.zeros((800, 2), dtype=np.int16)
    with pytest.raises(Mp3Error, match=r"no 44000 Hz sample rate .*8, 11\.025, 12, 16"):
        mp3_chunks(stereo, 44000)
    with pytest.raises(Mp3Error, match=r"bitrate 100 kbit/s is not supported at 8000 Hz \(MPEG-2\.5: 8, 16"):
        mp3_chunks(stereo, 8000, 100)
    with pytest.raises(Mp3Error, match="bitrate 320 kbit/s is not supported at 16000 Hz"):
        check_settings(16000, 2, 320)
    assert check_settings(48000, 2, 320) == 320 and 8 in bitrates(8000) and 8 not in bitrates(48000)
    with pytest.raises(Mp3Error, match="one or two channels, not 3"):
        mp3_chunks(np.zeros((800, 3), dtype=np.int16), 8000)
    with pytest.raises(TypeError, match="int16"):
        mp3_chunks(np.zeros((800, 2)), 8000)


def test_empty_input_is_a_valid_near_empty_stream() -> None:
    data = b"".join(mp3_chunks(np.zeros((0, 2), dtype=np.int16), 8000))
    decoded, rate = decode(data)
    assert rate == 8000 and len(data) < 2000 and not decoded.any()


def test_encoding_is_much_faster_than_realtime() -> None:
    source = np.tile(np.stack([speechlike(10, 8000, 1), speechlike(10, 8000, 2)], axis=1), (6, 1))
    started = time.perf_counter()
    for _ in mp3_chunks(source, 8000):
        pass
    assert time.perf_counter() - started < 1.0  # 60 s of stereo; measured 0.1 s (~600x)
