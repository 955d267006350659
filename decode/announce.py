"""Finding a known announcement (the consent prompt) in a call's decoded audio.

A recorder that may only record after the caller has heard "this call may be recorded" must know
when that prompt ended in the leg that carries it (callee -> caller, played by the PBX or IVR).
The prompt arrives through a codec (G.711, Opus, ...), at another level, maybe with loss, so it is
matched by its short-time spectrum rather than its waveform:

* both signals are cut, each at its own rate, into 32 ms frames every 10 ms (Hann window) and
  summarised per frame as the log energy of :data:`BANDS` bands between 250 and 3,800 Hz (the
  telephone band every codec keeps), so a 16 kHz prompt matches an 8 kHz or 48 kHz call;
* a change of level adds a constant to every log energy, a codec's small spectral errors stay
  small: the score at each lag is the Pearson correlation between the prompt's feature matrix and
  the same-sized stretch of the call's, which ignores the constant;
* the prompt is trimmed to its voiced part first (frames within :data:`ACTIVE_DB` of its loudest),
  so the match ends where its last word ends, not where its file's trailing silence would.

Scores of a prompt against other speech, even the same voice, stay below 0.4 here; the prompt
through G.711 or Opus scores above 0.8. :data:`DEFAULT_MIN_SCORE` sits between. Time resolution
is one hop (10 ms).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.decode.formats.wav import read_wav

RATE_HZ = 8000  # FRAME and HOP are in samples at this rate; other rates scale them
FRAME = 256  # 32 ms
HOP = 80  # 10 ms
BANDS = 16
LOW_HZ, HIGH_HZ = 250.0, 3800.0
ACTIVE_DB = 35.0  # voiced frames: within this of the loudest frame
FLOOR = 1e-3  # added to band energies (full scale is about 1): silence is not -inf
DEFAULT_MIN_SCORE = 0.6
PREFIX_S = 1.0  # how much of the prompt's start shows it began (a caller hanging up during it)
F64 = npt.NDArray[np.float64]


class AnnouncementError(ValueError):
    """The announcement file cannot be used (unreadable, empty, silent, too short)."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """A prompt ready for matching: its band features (frames x bands) and voiced length."""

    features: F64
    seconds: float  # voiced part, first to last voiced frame end

    @property
    def frames(self) -> int:
        return int(self.features.shape[0])


@dataclass(frozen=True, slots=True)
class Match:
    """Where the prompt was found: it starts ``start_s`` and ends ``end_s`` after the audio's first
    sample. ``complete`` is False when only its beginning was heard (the audio ends inside it)."""

    start_s: float
    end_s: float
    score: float
    complete: bool = True


def load_announcement(path: str | os.PathLike[str]) -> Announcement:
    """Read a WAV prompt (16-bit PCM, any rate, mono or stereo) and prepare it for matching."""
    try:
        samples, rate = read_wav(path)
    except (OSError, EOFError, ValueError) as exc:
        raise AnnouncementError(f"cannot read {path}: {exc}") from None
    return announcement_from_samples(samples, rate)


def announcement_from_samples(samples: npt.NDArray[np.int16], rate_hz: int) -> Announcement:
    features = band_features(samples, rate_hz)
    if features.shape[0] == 0:
        raise AnnouncementError("the announcement is shorter than one 32 ms frame")
    power_db = frame_power_db(samples, rate_hz)[: features.shape[0]]
    if power_db.max() < -60.0:
        raise AnnouncementError("the announcement is silent")
    voiced = np.flatnonzero(power_db >= power_db.max() - ACTIVE_DB)
    first, last = int(voiced[0]), int(voiced[-1])
    trimmed = features[first : last + 1]
    if trimmed.shape[0] < 20:
        raise AnnouncementError("the announcement's voiced part is shorter than 0.2 s")
    seconds = ((last - first) * HOP + FRAME) / RATE_HZ
    return Announcement(trimmed, seconds)


def _frames(samples: npt.NDArray[np.int16], rate_hz: int) -> F64:
    """The signal (channels mixed, full scale 1.0) cut into 32 ms frames every 10 ms."""
    if samples.ndim == 2:
        samples = samples.mean(axis=1).astype(np.int16)
    frame = round(FRAME * rate_hz / RATE_HZ)
    hop = round(HOP * rate_hz / RATE_HZ)
    x = samples.astype(np.float64) / 32768.0
    if x.shape[0] < frame:
        return np.zeros((0, frame))
    return np.lib.stride_tricks.sliding_window_view(x, frame)[::hop]


def frame_power_db(samples: npt.NDArray[np.int16], rate_hz: int) -> F64:
    """Each frame's mean power in dB below full scale."""
    frames = _frames(samples, rate_hz)
    return np.asarray(10.0 * np.log10((frames * frames).mean(axis=1) + 1e-12), dtype=np.float64)


def band_features(samples: npt.NDArray[np.int16], rate_hz: int) -> F64:
    """Log10 band energies, one row per 10 ms hop of a 32 ms frame, of ``samples`` (channels mixed).
    Frames are cut at the signal's own rate (no resampling): the bands are in hertz."""
    frames = _frames(samples, rate_hz)
    frame = frames.shape[1]
    if frames.shape[0] == 0:
        return np.zeros((0, BANDS))
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2
    edges = np.geomspace(LOW_HZ, HIGH_HZ, BANDS + 1) * frame / rate_hz
    band_of = np.searchsorted(edges, np.arange(spectrum.shape[1]), side="right") - 1
    inside = (band_of >= 0) & (band_of < BANDS)
    energy = np.zeros((spectrum.shape[0], BANDS))
    np.add.at(energy.T, band_of[inside], spectrum[:, inside].T)
    return np.log10(energy / frame + FLOOR)


def scores(features: F64, prompt: F64) -> F64:
    """Pearson correlation of ``prompt`` (F x B) with every F-frame stretch of ``features``."""
    n, f = features.shape[0], prompt.shape[0]
    if n < f:
        return np.zeros(0)
    p = prompt - prompt.mean()
    p /= np.sqrt((p * p).sum()) or 1.0
    windows = np.lib.stride_tricks.sliding_window_view(features, (f, features.shape[1]))[:, 0]
    size = p.size
    sums = windows.sum(axis=(1, 2))
    squares = np.lib.stride_tricks.sliding_window_view((features * features).sum(axis=1), f).sum(axis=1)
    dots = np.einsum("kfb,fb->k", windows, p)  # p has zero mean: the window's mean drops out
    variance = squares - sums * sums / size
    return np.where(variance > 1e-12, dots / np.sqrt(np.maximum(variance, 1e-12)), 0.0)


def find_announcement(
    samples: npt.NDArray[np.int16],
    rate_hz: int,
    announcement: Announcement,
    *,
    search_s: float = 60.0,
    min_score: float = DEFAULT_MIN_SCORE,
) -> Match | None:
    """The first place in the first ``search_s`` seconds of mono ``samples`` where the prompt is
    heard in full; else, if the audio ends while a prompt is being heard (its first
    :data:`PREFIX_S` seconds match at the very end), an incomplete :class:`Match`; else ``None``."""
    limit = int((search_s + announcement.seconds + 1.0) * rate_hz)
    features = band_features(samples[:limit], rate_hz)
    full = scores(features, announcement.features)
    hits = np.flatnonzero(full >= min_score)
    if hits.size:
        start = _local_peak(full, int(hits[0]))
        end_s = (start + announcement.frames - 1) * HOP / RATE_HZ + FRAME / RATE_HZ
        return Match(start * HOP / RATE_HZ, end_s, float(full[start]))
    prefix_frames = min(announcement.frames, int(PREFIX_S * RATE_HZ / HOP))
    tail = scores(features, announcement.features[:prefix_frames])
    # a prefix found where the rest of the prompt no longer fits in the audio
    late = np.flatnonzero(tail >= min_score)
    late = late[late + announcement.frames > features.shape[0]]
    if late.size:
        start = _local_peak(tail, int(late[0]))
        end_s = (start + announcement.frames - 1) * HOP / RATE_HZ + FRAME / RATE_HZ
        return Match(start * HOP / RATE_HZ, end_s, float(tail[start]), complete=False)
    return None


def _local_peak(values: F64, first: int, reach: int = 10) -> int:
    """The best lag within ``reach`` hops after the first one over the threshold."""
    window = values[first : first + reach + 1]
    return first + int(np.argmax(window))
