"""Matching a recorded channel against what a phone sent: the lag by FFT cross-correlation and the
normalised correlation of the overlapping parts."""

from __future__ import annotations

import numpy as np

MAX_LAG_S = 2.0


def best_lag(
    recording: np.ndarray, sent: np.ndarray, rate: int, max_lag_s: float = MAX_LAG_S
) -> tuple[int, float]:
    """Where ``sent`` starts inside ``recording`` (samples; may be negative) by FFT cross-correlation
    within +-max_lag_s, and the normalised correlation of the overlapping parts at that lag."""
    x = np.asarray(recording, dtype=np.float64)
    y = np.asarray(sent, dtype=np.float64)
    size = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    r = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    max_lag = int(max_lag_s * rate)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([r[: max_lag + 1], r[size - max_lag :]])
    lag = int(lags[int(np.argmax(values))])
    return lag, overlap_correlation(x, y, lag)


def overlap_correlation(x: np.ndarray, y: np.ndarray, lag: int) -> float:
    """Normalised correlation of x[n + lag] and y[n] where both exist."""
    start = max(0, -lag)
    stop = min(len(y), len(x) - lag)
    if stop - start < 100:
        return 0.0
    a = x[start + lag : stop + lag]
    b = y[start:stop]
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b)) / den if den > 0 else 0.0
