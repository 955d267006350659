"""RIFF/WAVE PCM 16-bit writing as a stream of byte chunks, reading for tests and exports.

:func:`wav_chunks` yields the file as bytes (a 44-byte header, then the samples in chunks of
bounded size) so that the store can seal each chunk as it goes: an hour of 48 kHz stereo is
never one 700 MB ``bytes`` object, and plain audio never has to touch the disk whole. On a
little-endian machine the chunks are views of the samples themselves, not copies: a copy of a
minute of call cost as much as sealing it, most of it page faults on the fresh memory.
"""

from __future__ import annotations

import os
import struct
import sys
import wave
from collections.abc import Iterator
from typing import BinaryIO, Protocol

import numpy as np
import numpy.typing as npt

I16 = npt.NDArray[np.int16]

HEADER_BYTES = 44
CHUNK_FRAMES = 1 << 16  # 256 KiB of 16-bit stereo per chunk
_MAX_DATA_BYTES = 0xFFFFFFFF - (HEADER_BYTES - 8)  # RIFF sizes are 32-bit
WAVE_FORMAT_PCM = 1


class Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


def as_frames(samples: npt.ArrayLike) -> I16:
    """``samples`` as int16 of shape ``(n, channels)`` (a 1-D array is one channel); else an error."""
    array = np.asarray(samples)
    if array.dtype != np.int16:
        raise TypeError(f"samples must be int16, got {array.dtype}")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(f"samples must have shape (n, channels), got {array.shape}")
    return array


def wav_header(n_frames: int, channels: int, sample_rate_hz: int) -> bytes:
    """The canonical 44-byte header: RIFF, a 16-byte ``fmt `` chunk (PCM), ``data`` size."""
    block_align = channels * 2
    data_bytes = n_frames * block_align
    if data_bytes > _MAX_DATA_BYTES:
        raise ValueError(f"{data_bytes} bytes of audio do not fit a RIFF/WAVE file (4 GiB limit)")
    return b"".join(
        (
            b"RIFF",
            struct.pack("<I", HEADER_BYTES - 8 + data_bytes),
            b"WAVE",
            b"fmt ",
            struct.pack(
                "<IHHIIHH",
                16,
                WAVE_FORMAT_PCM,
                channels,
                sample_rate_hz,
                sample_rate_hz * block_align,
                block_align,
                16,
            ),
            b"data",
            struct.pack("<I", data_bytes),
        )
    )


def wav_chunks(
    samples: npt.ArrayLike, sample_rate_hz: int, chunk_frames: int = CHUNK_FRAMES
) -> Iterator[bytes | memoryview]:
    """The WAV file for int16 ``samples`` of shape ``(n, channels)`` (or mono ``(n,)``), as
    the header followed by chunks of at most ``chunk_frames`` frames, little endian. Chunks may
    be read-only views of ``samples`` (see the module docstring): change ``samples`` only once
    they have been used."""
    if chunk_frames <= 0:
        raise ValueError("chunk_frames must be positive")
    frames = as_frames(samples)
    yield wav_header(frames.shape[0], frames.shape[1], sample_rate_hz)
    views = sys.byteorder == "little" and frames.flags.c_contiguous
    for start in range(0, frames.shape[0], chunk_frames):
        part = frames[start : start + chunk_frames]
        yield part.data.cast("B").toreadonly() if views else part.astype("<i2").tobytes()


def write_wav(
    sink: Writable, samples: npt.ArrayLike, sample_rate_hz: int, chunk_frames: int = CHUNK_FRAMES
) -> int:
    """Stream the WAV file into ``sink`` (anything with ``write(bytes)``); returns bytes written."""
    total = 0
    for chunk in wav_chunks(samples, sample_rate_hz, chunk_frames):
        sink.write(chunk)
        total += len(chunk)
    return total


def read_wav(source: str | os.PathLike[str] | BinaryIO) -> tuple[I16, int]:
    """Samples (int16, shape ``(n, channels)``) and sample rate of a 16-bit PCM WAV file."""
    with wave.open(source if not isinstance(source, os.PathLike) else os.fspath(source), "rb") as w:
        if w.getsampwidth() != 2 or w.getcomptype() != "NONE":
            raise ValueError(f"not 16-bit PCM WAV (width {w.getsampwidth()}, {w.getcomptype()})")
        channels, rate = w.getnchannels(), w.getframerate()
        data = w.readframes(w.getnframes())
    samples = np.frombuffer(data, dtype="<i2").astype(np.int16).reshape(-1, channels)
    return samples, rate


def mono_mix(samples: npt.ArrayLike) -> I16:
    """Average of the channels, rounded half away from zero and clipped to int16: one channel
    for players and exports that want mono, at no risk of wrap-around on loud material."""
    frames = as_frames(samples)
    total = frames.astype(np.int32).sum(axis=1)
    channels = frames.shape[1]
    mean = np.sign(total) * ((np.abs(total) * 2 + channels) // (2 * channels))
    return np.clip(mean, -32768, 32767).astype(np.int16)
