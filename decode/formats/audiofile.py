"""A stored recording's bytes (WAV or MP3, as the rule's ``format`` chose) back to samples."""

from __future__ import annotations

import io
import wave

import numpy as np
import numpy.typing as npt

from callrec.decode.formats.mp3 import Mp3Error, read_mp3
from callrec.decode.formats.wav import read_wav


class AudioFileError(ValueError):
    """The bytes are neither a 16-bit WAV file nor a readable MP3 stream."""


def audio_format(data: bytes) -> str:
    """``wav`` (RIFF/WAVE) or ``mp3`` (anything else is tried as MP3)."""
    return "wav" if data[:4] == b"RIFF" and data[8:12] == b"WAVE" else "mp3"


def read_audio(data: bytes, frames: int | None = None) -> tuple[npt.NDArray[np.int16], int]:
    """Samples ``(n, channels)`` and rate of a stored recording; ``frames`` cuts an MP3's padding."""
    try:
        if audio_format(data) == "wav":
            return read_wav(io.BytesIO(data))
        return read_mp3(data, frames)
    except (wave.Error, EOFError, ValueError, Mp3Error) as exc:
        raise AudioFileError(f"the recording is neither a 16-bit WAV file nor an MP3 stream: {exc}") from None
