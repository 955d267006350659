"""WAV writing (streamed in chunks) and reading, and the mono mix for exports."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from callrec.decode.formats.wav import HEADER_BYTES, mono_mix, read_wav, wav_chunks, wav_header, write_wav


def _stereo(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-32768, 32768, (n, 2)).astype(np.int16)


def test_bytes_parse_back_identical_with_the_stdlib(tmp_path: Path) -> None:
    samples = _stereo(10_001)
    path = tmp_path / "call.wav"
    with path.open("wb") as sink:
        written = write_wav(sink, samples, 8000, chunk_frames=4096)
    assert written == path.stat().st_size == HEADER_BYTES + 10_001 * 4
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 8000, 10_001)
        assert w.getcomptype() == "NONE"
        frames = w.readframes(w.getnframes())
    assert frames == samples.astype("<i2").tobytes()
    back, rate = read_wav(path)
    assert rate == 8000 and back.dtype == np.int16
    np.testing.assert_array_equal(back, samples)


def test_header_fields_and_sizes() -> None:
    header = wav_header(1000, 2, 16_000)
    assert len(header) == HEADER_BYTES
    riff, riff_size, wave_id, fmt, fmt_size = struct.unpack_from("<4sI4s4sI", header)
    assert (riff, riff_size, wave_id, fmt, fmt_size) == (b"RIFF", 36 + 4000, b"WAVE", b"fmt ", 16)
    tag, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", header, 20)
    assert (tag, channels, rate, byte_rate, align, bits) == (1, 2, 16_000, 64_000, 4, 16)
    assert header[36:40] == b"data" and struct.unpack_from("<I", header, 40)[0] == 4000


def test_chunks_are_bounded_and_join_to_the_file() -> None:
    samples = _stereo(1000)
    chunks = list(wav_chunks(samples, 8000, chunk_frames=300))
    assert [len(c) for c in chunks] == [44, 1200, 1200, 1200, 400]
    sink = io.BytesIO()
    write_wav(sink, samples, 8000)
    assert b"".join(chunks) == sink.getvalue()
    sink.seek(0)
    back, rate = read_wav(sink)
    np.testing.assert_array_equal(back, samples)


def test_empty_and_mono() -> None:
    assert list(wav_chunks(np.zeros((0, 2), np.int16), 8000)) == [wav_header(0, 2, 8000)]
    mono = np.arange(-5, 5, dtype=np.int16)
    sink = io.BytesIO()
    write_wav(sink, mono, 8000)
    sink.seek(0)
    back, _ = read_wav(sink)
    assert back.shape == (10, 1) and back[:, 0].tolist() == mono.tolist()


def test_bad_input_is_refused() -> None:
    with pytest.raises(TypeError):
        list(wav_chunks(np.zeros((4, 2), np.float32), 8000))
    with pytest.raises(ValueError):
        list(wav_chunks(np.zeros((4, 2, 1), np.int16), 8000))
    with pytest.raises(ValueError):
        wav_header(1 << 31, 2, 8000)  # beyond RIFF's 4 GiB


def test_mono_mix_averages_rounds_and_never_wraps() -> None:
    stereo = np.array(
        [[32767, 32767], [-32768, -32768], [1, 2], [-1, -2], [100, -100], [3, 0]], dtype=np.int16
    )
    assert mono_mix(stereo).tolist() == [32767, -32768, 2, -2, 0, 2]
    assert mono_mix(stereo).dtype == np.int16
    assert mono_mix(np.array([[5], [-7]], dtype=np.int16)).tolist() == [5, -7]
