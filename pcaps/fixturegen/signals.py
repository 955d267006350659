"""The known signals a leg sends, and the xorshift32 PRNG behind the noise and the jitter.

``{"kind": "tone", "hz": H, "amplitude": A}``
    x[n] = round(A * sin(2*pi * ((H*n) mod 8000) / 8000))      (H an integer)
``{"kind": "noise", "seed": S, "amplitude": A}``
    low-pass noise: u[n] = (xorshift32 state >> 21) - 1024 (state seeded with S, stepped once
    per sample), y[n] = sum_k c[k] * u[n-k] with c = 1 2 3 4 3 2 1 (u[<0] = 0),
    x[n] = (y[n] * A) // 16384  (so |x| <= A; nulls at 2000 Hz and its multiples)
"""

from __future__ import annotations

import math

from .constants import RATE

NOISE_TAPS = (1, 2, 3, 4, 3, 2, 1)

TONE_CALLER = {"kind": "tone", "hz": 440, "amplitude": 8000}
TONE_CALLEE = {"kind": "tone", "hz": 1000, "amplitude": 6000}


def xorshift32(state: int) -> int:
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


def noise(seed: int, amplitude: int) -> dict:
    """A noise signal's spec (as written to expected.json)."""
    return {"kind": "noise", "seed": seed, "amplitude": amplitude}


def signal_samples(spec: dict, count: int) -> list[int]:
    """Samples 0 .. count-1 of a leg's signal."""
    kind = spec["kind"]
    amp = int(spec["amplitude"])
    if kind == "tone":
        hz = int(spec["hz"])
        return [round(amp * math.sin(2.0 * math.pi * ((hz * n) % RATE) / RATE)) for n in range(count)]
    if kind == "noise":
        state = int(spec["seed"]) & 0xFFFFFFFF or 1
        hist = [0] * len(NOISE_TAPS)
        out = []
        for _ in range(count):
            state = xorshift32(state)
            hist = [(state >> 21) - 1024] + hist[:-1]
            y = sum(c * u for c, u in zip(NOISE_TAPS, hist, strict=True))
            out.append((y * amp) // 16384)
        return out
    raise ValueError(f"unknown signal kind {kind!r}")


def prng_bytes(state: int, count: int) -> tuple[int, bytes]:
    """``count`` bytes from xorshift32 (the low byte of each step) and the state after them."""
    out = bytearray()
    for _ in range(count):
        state = xorshift32(state)
        out.append(state & 0xFF)
    return state, bytes(out)
