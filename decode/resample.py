"""Rational sample-rate conversion with a Kaiser-windowed sinc, in polyphase form.

Needed when a call's legs decode at different rates (a G.711 leg against a G.722 or Opus
leg): the stereo file has one rate, so the lower-rate leg is converted up (or a leg is
converted down when the caller asks for a lower output rate).

Conversion by ``up/down`` is: insert ``up - 1`` zeros between samples, low-pass below the
lower of the two Nyquist frequencies, keep every ``down``-th sample. The polyphase form
computes only the kept samples: output ``m`` sits at position ``m * down`` of the upsampled
signal and needs only the taps of one phase, ``h[phase + j * up]``. The filter passes up to
85 % of the lower Nyquist frequency (3.4 kHz for 8 kHz audio, the telephone band) and
attenuates by about 75 dB from the Nyquist frequency on, so nothing folds back above -60 dB.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]

STOPBAND_DB = 75.0
# Filter half-length in zero crossings of the lower rate: sets the transition band width
# (about 15 % of the lower Nyquist frequency for the Kaiser window at STOPBAND_DB).
ZERO_CROSSINGS = 32
PASSBAND_EDGE = 0.85  # of the lower Nyquist frequency; the stop band starts at 1.0
_CHUNK_ROWS = 1 << 16


def kaiser_beta(stopband_db: float) -> float:
    """Kaiser's empirical window parameter for a given stop-band attenuation."""
    if stopband_db > 50:
        return 0.1102 * (stopband_db - 8.7)
    if stopband_db >= 21:
        return 0.5842 * (stopband_db - 21) ** 0.4 + 0.07886 * (stopband_db - 21)
    return 0.0


def design_lowpass(up: int, down: int) -> F64:
    """Low-pass taps at the upsampled rate, with gain ``up`` to make up for the inserted zeros."""
    widest = max(up, down)
    length = 2 * ZERO_CROSSINGS * widest + 1
    cutoff = 0.5 * (1.0 + PASSBAND_EDGE) / 2 / widest  # cycles per upsampled sample
    n = np.arange(length, dtype=np.float64) - (length - 1) / 2
    taps = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, kaiser_beta(STOPBAND_DB))
    return taps * (up / taps.sum())


def resample(x: npt.NDArray[np.int16], in_rate_hz: int, out_rate_hz: int) -> I16:
    """``x`` (mono int16) converted from ``in_rate_hz`` to ``out_rate_hz``, aligned in time
    (the filter's delay is compensated) and ``ceil(len(x) * out / in)`` samples long."""
    if in_rate_hz <= 0 or out_rate_hz <= 0:
        raise ValueError(f"sample rates must be positive, got {in_rate_hz} -> {out_rate_hz}")
    if in_rate_hz == out_rate_hz:
        return np.array(x, dtype=np.int16, copy=True)
    g = math.gcd(in_rate_hz, out_rate_hz)
    up, down = out_rate_hz // g, in_rate_hz // g
    n_in = int(x.shape[0])
    n_out = -(-n_in * up // down)
    if n_in == 0:
        return np.zeros(0, dtype=np.int16)
    taps = design_lowpass(up, down)
    per_phase = -(-taps.shape[0] // up)
    padded_taps = np.zeros(per_phase * up, dtype=np.float64)
    padded_taps[: taps.shape[0]] = taps
    phases = padded_taps.reshape(per_phase, up).T  # phases[p, j] = taps[p + j * up]
    delay = (taps.shape[0] - 1) // 2
    # x[i] lives at xpad[i + per_phase - 1]; zeros beyond both ends.
    xpad = np.zeros(n_in + 2 * per_phase + down, dtype=np.float64)
    xpad[per_phase - 1 : per_phase - 1 + n_in] = x
    out = np.zeros(n_out, dtype=np.float64)
    for first in range(min(up, n_out)):
        position = first * down + delay
        phase, base = position % up, position // up
        count = -(-(n_out - first) // up)
        kernel = phases[phase]
        out[first::up] = _strided_filter(xpad, kernel, base, down, count)
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def _strided_filter(xpad: F64, kernel: F64, base: int, step: int, count: int) -> F64:
    """``sum_j kernel[j] * x[base + k * step - j]`` for ``k`` in ``range(count)``."""
    taps = kernel.shape[0]
    last = base + (count - 1) * step + taps
    if last > xpad.shape[0]:
        xpad = np.concatenate((xpad, np.zeros(last - xpad.shape[0], dtype=np.float64)))
    if step <= 4:
        # np.convolve in "valid" mode gives valid[i] = sum_j kernel[j] * xpad[i + taps - 1 - j],
        # which is x[i - j]: computing every i and keeping every step-th wastes at most 4x.
        valid = np.convolve(xpad[base:last], kernel, mode="valid")
        return valid[: (count - 1) * step + 1 : step]
    windows = sliding_window_view(xpad, taps)
    reversed_kernel = kernel[::-1].copy()
    result = np.empty(count, dtype=np.float64)
    for start in range(0, count, _CHUNK_ROWS):
        rows = base + step * np.arange(start, min(count, start + _CHUNK_ROWS), dtype=np.int64)
        result[start : start + rows.shape[0]] = windows[rows] @ reversed_kernel
    return result
