"""Serial-number arithmetic (RFC 1982) for RTP sequence numbers and timestamps: the half-range
edges pinned with explicit examples, unwrapping checked with hypothesis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.model.serial import (
    SEQ_MOD,
    TS_MOD,
    seq_diff,
    seq_gt,
    ts_diff,
    ts_gt,
    unwrap_seq,
    unwrap_ts,
)


@pytest.mark.parametrize(
    ("a", "b", "diff", "gt"),
    [
        (0, 65535, 1, True),  # the wrap: 0 comes right after 65535
        (65535, 0, -1, False),
        (5, 5, 0, False),
        (32767, 0, 32767, True),  # the largest distance still "after"
        (0, 32767, -32767, False),
        (32768, 0, -32768, False),  # exactly half the range: neither comes after the other
        (0, 32768, -32768, False),
        (32769, 0, -32767, False),
        (65535, 32767, -32768, False),
        (100, 65500, 136, True),
    ],
)
def test_seq_half_range_edges(a: int, b: int, diff: int, gt: bool) -> None:
    assert seq_diff(a, b) == diff
    assert seq_gt(a, b) is gt


@pytest.mark.parametrize(
    ("a", "b", "diff", "gt"),
    [
        (0, TS_MOD - 1, 1, True),
        (TS_MOD - 1, 0, -1, False),
        (2**31 - 1, 0, 2**31 - 1, True),
        (2**31, 0, -(2**31), False),  # half range: not after
        (0, 2**31, -(2**31), False),
        (160, TS_MOD - 160, 320, True),  # one 20 ms G.711 packet either side of the wrap
    ],
)
def test_ts_half_range_edges(a: int, b: int, diff: int, gt: bool) -> None:
    assert ts_diff(a, b) == diff
    assert ts_gt(a, b) is gt


@given(st.integers(0, SEQ_MOD - 1), st.integers(-32768, 32767))
def test_seq_diff_inverts_modular_addition(a: int, d: int) -> None:
    b = (a + d) % SEQ_MOD
    assert seq_diff(b, a) == d
    assert seq_gt(b, a) is (d > 0)
    if d != -32768:
        assert seq_diff(a, b) == -d


@given(st.integers(0, TS_MOD - 1), st.integers(-(2**31), 2**31 - 1))
def test_ts_diff_inverts_modular_addition(a: int, d: int) -> None:
    b = (a + d) % TS_MOD
    assert ts_diff(b, a) == d
    assert ts_gt(b, a) is (d > 0)


def _arrival_order(n: int, window: int, seed: int) -> np.ndarray:
    """A permutation in which no packet moves by ``window`` places or more."""
    rng = np.random.default_rng(seed)
    return np.argsort(np.arange(n) + rng.uniform(0, window, n), kind="stable")


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(SEQ_MOD - 3000, SEQ_MOD + 10),  # runs start just before (or at) the wrap
    n=st.integers(1, 4000),
    window=st.integers(1, 500),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_in_window_permutation_across_65535_unwraps_to_the_true_sequence(
    first: int, n: int, window: int, seed: int
) -> None:
    true = first + np.arange(n, dtype=np.int64)
    arrival = true[_arrival_order(n, window, seed)]
    raw = arrival % SEQ_MOD
    ext = unwrap_seq(raw)
    # Without history the first packet is taken at face value: right up to whole cycles.
    assert ext[0] == raw[0]
    shift = arrival - ext
    assert np.all(shift == shift[0]) and shift[0] % SEQ_MOD == 0
    # Continuing from a known ext_seq within half a range gives the true values exactly.
    np.testing.assert_array_equal(unwrap_seq(raw, start=int(true[0]) - 1), arrival)


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(TS_MOD - 200_000, TS_MOD + 1000),
    steps=st.lists(st.sampled_from([80, 160, 240, 960, 8000, 160 * 250, 1 << 20]), min_size=1, max_size=800),
    window=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
def test_timestamps_across_2_to_the_32_unwrap_to_the_true_values(
    first: int, steps: list[int], window: int, seed: int
) -> None:
    true = first + np.concatenate(([0], np.cumsum(steps)[:-1])).astype(np.int64)
    arrival = true[_arrival_order(true.shape[0], window, seed)]
    raw = arrival % TS_MOD
    ext = unwrap_ts(raw)
    shift = arrival - ext
    assert np.all(shift == shift[0]) and shift[0] % TS_MOD == 0
    np.testing.assert_array_equal(unwrap_ts(raw, start=int(true[0])), arrival)


def test_unwrap_of_nothing_and_of_one() -> None:
    assert unwrap_seq([]).shape == (0,)
    assert unwrap_seq([7]).tolist() == [7]
    assert unwrap_seq([3], start=65535 + 65536).tolist() == [65536 * 2 + 3]
    assert unwrap_ts([5], start=TS_MOD - 5).tolist() == [TS_MOD + 5]


def test_unwrap_treats_a_jump_of_half_the_range_or_more_as_backwards() -> None:
    # Only distances below half the range are "after": a larger step is read as going back.
    assert unwrap_seq([0, 32767, 65534]).tolist() == [0, 32767, 65534]  # steps of 32767: forward
    assert unwrap_seq([0, 32767, 65535]).tolist() == [0, 32767, -1]  # a step of 32768: back
    assert unwrap_seq([0, 32768]).tolist() == [0, -32768]
    assert unwrap_ts([0, 2**31]).tolist() == [0, -(2**31)]
