"""RFC 3550 interarrival jitter (section 6.4.1) over a leg's transit-time steps, vectorised."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]

JITTER_GAIN = 1.0 / 16.0  # RFC 3550 6.4.1: J += (|D| - J) / 16
_JITTER_BLOCK = 256


def rfc3550_jitter(transit_steps: F64) -> F64:
    """RFC 3550 6.4.1 interarrival jitter after each packet, from ``|D|`` (the change in transit
    time between consecutive packets), starting from 0.

    The update ``J_k = r J_(k-1) + g |D_k|`` (``g = 1/16``, ``r = 1 - g``) unrolls over a block to
    ``J_k = r^(k+1) J_in + g r^k sum_(i<=k) r^-i |D_i|``; with blocks of 256 packets ``r^-i``
    stays below 2e7, so float64 keeps the sum exact enough and Python loops once per block.
    """
    steps = np.asarray(transit_steps, dtype=np.float64)
    out = np.empty_like(steps)
    r = 1.0 - JITTER_GAIN
    carry_weight = r ** np.arange(1, _JITTER_BLOCK + 1, dtype=np.float64)  # r^(k+1)
    unroll = r ** -np.arange(_JITTER_BLOCK, dtype=np.float64)  # r^-i
    level = 0.0
    for first in range(0, steps.shape[0], _JITTER_BLOCK):
        block = steps[first : first + _JITTER_BLOCK]
        m = block.shape[0]
        sums = np.cumsum(block * unroll[:m])
        values = carry_weight[:m] * level + JITTER_GAIN * (carry_weight[:m] / r) * sums
        out[first : first + m] = values
        level = float(values[-1])
    return out
