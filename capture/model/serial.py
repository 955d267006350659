"""Serial-number arithmetic (RFC 1982) for RTP sequence numbers and timestamps.

All wrap-around handling lives here. Raw values are ``seq`` (16 bit) and ``rtp_ts`` (32 bit);
unwrapped values are ``ext_seq`` and ``ext_ts`` (int64, continuing past the wrap).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32


def seq_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in 16-bit serial arithmetic (-32768..32767)."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_diff(a: int, b: int) -> int:
    """Signed distance from ``b`` to ``a`` in 32-bit serial arithmetic."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def seq_gt(a: int, b: int) -> bool:
    """True if 16-bit ``a`` comes after ``b`` (half-range comparison)."""
    return seq_diff(a, b) > 0


def ts_gt(a: int, b: int) -> bool:
    """True if 32-bit ``a`` comes after ``b`` (half-range comparison)."""
    return ts_diff(a, b) > 0


def _unwrap(values: npt.ArrayLike, bits: int, start: int | None) -> npt.NDArray[np.int64]:
    raw = np.asarray(values, dtype=np.int64)
    if raw.size == 0:
        return raw.copy()
    mod = 1 << bits
    half = mod >> 1
    steps = np.diff(raw)
    steps = ((steps + half) & (mod - 1)) - half  # each step as a signed half-range distance
    first = int(raw[0]) if start is None else start + (((int(raw[0]) - start + half) & (mod - 1)) - half)
    out = np.empty_like(raw)
    out[0] = first
    np.cumsum(steps, out=out[1:])
    out[1:] += first
    return out


def unwrap_seq(seq: npt.ArrayLike, start: int | None = None) -> npt.NDArray[np.int64]:
    """Extended sequence numbers for ``seq`` in arrival order.

    Each packet is placed relative to the one that arrived before it, so any reordering of
    less than half the range (32768 packets) unwraps correctly across 65535 -> 0. ``start`` is
    the ext_seq of a previous packet to continue from (for streams processed in pieces).
    """
    return _unwrap(seq, 16, start)


def unwrap_ts(rtp_ts: npt.ArrayLike, start: int | None = None) -> npt.NDArray[np.int64]:
    """Extended RTP timestamps for ``rtp_ts`` in arrival order (32-bit wrap), like :func:`unwrap_seq`."""
    return _unwrap(rtp_ts, 32, start)
