"""The fixture audio checks themselves: they accept the ground truth and reject typical recorder mistakes."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.helpers.fixture_check import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    FIXTURES,
    RATE,
    check_audio,
    generator,
    leg_reference,
    span_mask,
)

# -- the checker itself: it accepts the ground truth and rejects typical recorder mistakes ---------


def _perfect_recording(call: dict[str, Any]) -> np.ndarray:
    n = int(round(call["duration_s"] * RATE))
    cols = []
    for d in (CALLER_TO_CALLEE, CALLEE_TO_CALLER):
        leg = call["legs"][d]
        cols.append(leg_reference(leg, n) if leg["signal"] else np.zeros(n))
    return np.stack(cols, axis=1).astype(np.int16)


def _mutate(kind: str, call: dict[str, Any], x: np.ndarray) -> np.ndarray:
    x = x.copy()
    caller = call["legs"][CALLER_TO_CALLEE]
    if kind == "swap":
        return x[:, ::-1].copy()
    if kind == "shift_left_5ms":
        x[:, 0] = np.roll(x[:, 0], 40)
    elif kind == "fill_lost_slots":  # packet-loss concealment by repetition
        for s, e in caller["silent"]:
            a, b = int(round(s * RATE)), int(round(e * RATE))
            x[a:b, 0] = x[a - (b - a) : a, 0]
    elif kind == "jittered_placement":  # every 3rd packet 1 ms late, as arrival-time placement would do
        start = int(round(caller["origin_s"] * RATE))
        for k in range(start, len(x) - 168, 480):
            x[k + 8 : k + 168, 0] = x[k : k + 160, 0].copy()
    elif kind == "dropped_packet":
        s, e = caller["active"][-1]
        a = int(round(s * RATE)) + 800
        x[a : a + 160, 0] = 0
    elif kind == "wrong_decoder":  # mu-law bytes decoded as A-law
        gen = generator()
        x[:, 0] = [gen.alaw2lin(gen.lin2ulaw(int(v))) if v else 0 for v in x[:, 0]]
    elif kind == "comfort_noise_in_gaps":
        quiet = ~span_mask(call["legs"][CALLEE_TO_CALLER]["active"], len(x), RATE)
        x[quiet, 1] = np.where(np.arange(quiet.sum()) % 2, 1, -1)
    elif kind == "too_long":
        x = np.concatenate([x, np.zeros((800, 2), dtype=np.int16)])
    return x


@pytest.mark.parametrize(
    "kind",
    [
        "none",
        "swap",
        "shift_left_5ms",
        "fill_lost_slots",
        "jittered_placement",
        "dropped_packet",
        "wrong_decoder",
        "comfort_noise_in_gaps",
        "too_long",
    ],
)
def test_checker_catches(kind: str) -> None:
    expected = json.loads((FIXTURES / "loss_dup_reorder.expected.json").read_text(encoding="utf-8"))
    call = expected["calls"][0]
    samples = _mutate(kind, call, _perfect_recording(call))
    problems = check_audio(call, RATE, samples, float(expected["placement_tolerance_s"]))
    if kind == "none":
        assert problems == []
    else:
        assert problems, f"the audio checks did not notice {kind}"
