"""The arithmetic that pins a stretch of RTP to the capture clock, for :mod:`decode.timeline`.

Where a stretch's timestamps stop agreeing with arrival times (:func:`timestamp_jumps`) and the
line under its arrival offsets (:func:`envelope_fit`); the module docstring of
:mod:`decode.timeline` explains why the lower envelope, and why a line. Kept apart so the
timeline module stays readable; both run once per stretch of every leg of every call saved,
which is why the common case (packets in order, an uncongested path) skips the sorting and
refitting that only disorder or congestion need, with results identical to the full work.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

NS = 1_000_000_000
ENVELOPE_PACKETS = 50  # packets either side of a candidate jump whose envelopes are compared
CANDIDATE_STEP_NS = 20_000_000
SILENCE_NS = 200_000_000
EARLY_TOLERANCE_NS = 20_000_000
LATE_TOLERANCE_NS = 500_000_000
DRIFT_WINDOW_NS = 4 * NS
DRIFT_MIN_WINDOWS = 5  # a fit needs 20 s of media; shorter stretches drift < 1 ms at 50 ppm
DRIFT_MIN_WINDOW_PACKETS = 10
DRIFT_CONGESTED_NS = 1_000_000  # a window minimum this far above the median residual is rejected
DRIFT_MAX = 500e-6
DRIFT_FITS = 3  # least-squares passes at most (each rejecting congested windows)
FAST_PATHS = True  # see decode.timeline.FAST_PATHS: the same results, with less work


def timestamp_jumps(offset: F64, arrival_ns: I64) -> I64:
    """Positions (arrival order) where the timestamps stop agreeing with arrival times."""
    if offset.shape[0] < 2:
        return np.zeros(0, dtype=np.int64)
    k = ENVELOPE_PACKETS
    step = np.diff(offset)
    candidate = (np.abs(step) > CANDIDATE_STEP_NS) | (np.diff(arrival_ns) > SILENCE_NS)
    where = np.flatnonzero(candidate) + 1
    if where.shape[0] == 0:
        return where
    windows = sliding_window_view(np.concatenate((np.full(k, np.inf), offset, np.full(k, np.inf))), k)
    before = windows[where].min(axis=1)  # min of offset[p - k : p]
    after = windows[where + k].min(axis=1)  # min of offset[p : p + k]
    jump = (after < before - EARLY_TOLERANCE_NS) | (after > before + LATE_TOLERANCE_NS)
    return where[jump]


def envelope_fit(media_ns: F64, offset_ns: F64) -> tuple[float, float]:
    """Slope (drift, dimensionless) and intercept (ns at media 0) of the offsets' lower envelope.

    Short stretches: no slope, the minimum offset. Long ones: least squares through the
    minimum of each window (at the time it occurred), twice rejecting windows whose minimum
    sits well above the others (a congested network then, not the sender's clock). A pass that
    rejects exactly the windows the previous one did would refit the same points to the same
    line, so the passes stop there (on a clean path, after the first).
    """
    floor = float(offset_ns.min())
    if float(media_ns.max()) < DRIFT_MIN_WINDOWS * DRIFT_WINDOW_NS:
        return 0.0, floor
    window = (media_ns // DRIFT_WINDOW_NS).astype(np.int64)
    w, off, med = window, offset_ns, media_ns
    if not FAST_PATHS or bool((window[1:] < window[:-1]).any()):  # in ext_seq order timestamps rarely go back
        order = np.argsort(window, kind="stable")
        w, off, med = window[order], offset_ns[order], media_ns[order]
    firsts = np.flatnonzero(np.concatenate(([True], w[1:] != w[:-1])))
    sizes = np.diff(np.append(firsts, w.shape[0]))
    minima = np.minimum.reduceat(off, firsts)
    group = np.repeat(np.arange(firsts.shape[0]), sizes)
    at_min = np.flatnonzero(off == minima[group])
    hit_group = group[at_min]  # ascending: the first hit of each window is where its group starts
    if FAST_PATHS:
        first_hit = np.flatnonzero(np.concatenate(([True], hit_group[1:] != hit_group[:-1])))
    else:
        _, first_hit = np.unique(hit_group, return_index=True)
    times = med[at_min[first_hit]]
    usable = sizes >= DRIFT_MIN_WINDOW_PACKETS
    t, y = times[usable], minima[usable]
    if t.shape[0] < DRIFT_MIN_WINDOWS:
        return 0.0, floor
    keep = np.ones(t.shape[0], dtype=np.bool_)
    slope = intercept = 0.0
    for _ in range(DRIFT_FITS):
        slope, intercept = (float(v) for v in np.polyfit(t[keep], y[keep], 1))
        residual = y - (intercept + slope * t)
        kept = residual <= float(np.median(residual[keep])) + DRIFT_CONGESTED_NS
        settled = bool((kept == keep).all())
        keep = kept
        if settled and FAST_PATHS:
            break
    slope = min(max(slope, -DRIFT_MAX), DRIFT_MAX)
    intercept = float(np.mean(y[keep] - slope * t[keep]))
    return slope, intercept
