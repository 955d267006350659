"""The render's shortcuts for the common leg give exactly what the general code gives.

``decode.timeline.FAST_PATHS`` and ``decode.envelope.FAST_PATHS`` switch off every shortcut (no
sort when packets are in order, no select of all packets, a single run, G.711 decoded as it is
placed, the drift fit stopping once it settles). Each case renders a call with them on and off
and compares everything: samples, span, leg statistics, anchors, events and quality.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import callrec.decode.envelope as envelope
import callrec.decode.timeline as timeline
from callrec.capture.model.media import RtpPackets
from callrec.decode.codecs.g711 import (
    _ALAW_PAIRS,
    _ULAW_PAIRS,
    ALAW_TABLE,
    ULAW_TABLE,
    G711Codes,
    decode_bytes,
)
from callrec.decode.render import RenderedCall, render_call
from tests.decode.test_render import call_of
from tests.helpers.legs import MS, T0, join, stream


@contextmanager
def general_paths() -> Iterator[None]:
    saved = timeline.FAST_PATHS, envelope.FAST_PATHS
    timeline.FAST_PATHS = envelope.FAST_PATHS = False
    try:
        yield
    finally:
        timeline.FAST_PATHS, envelope.FAST_PATHS = saved


def assert_same(fast: RenderedCall, general: RenderedCall) -> None:
    np.testing.assert_array_equal(fast.samples, general.samples)
    assert fast.samples.dtype == general.samples.dtype == np.int16
    assert (fast.sample_rate_hz, fast.start_ns, fast.duration_s) == (
        general.sample_rate_hz,
        general.start_ns,
        general.duration_s,
    )
    assert fast.legs == general.legs
    assert fast.events == general.events
    assert fast.quality == general.quality


def render_both(caller: RtpPackets | None, callee: RtpPackets | None) -> RenderedCall:
    call = call_of(caller, callee)
    fast = render_call(call)
    with general_paths():
        general = render_call(call)
    assert_same(fast, general)
    return fast


def disturbed(
    packets: RtpPackets, rng: np.random.Generator, loss: float, dup: float, swaps: int
) -> RtpPackets:
    """The packets with some lost, some duplicated and some neighbours swapped (arrival order)."""
    n = len(packets)
    order = np.flatnonzero(rng.random(n) >= loss)
    if order.shape[0] == 0:
        order = np.array([0])
    copies = order[rng.random(order.shape[0]) < dup]
    order = np.sort(np.concatenate((order, copies)), kind="stable")
    for _ in range(swaps):
        if order.shape[0] > 2:
            k = int(rng.integers(0, order.shape[0] - 1))
            order[[k, k + 1]] = order[[k + 1, k]]
    return packets.select(order)


def test_in_order_call_is_unchanged() -> None:
    jitter = np.random.default_rng(3).integers(0, 3 * MS, 1500)
    rendered = render_both(stream(1500, jitter_ns=jitter), stream(1500, ssrc=0x2222, seed=2, delay_ns=5 * MS))
    assert rendered.samples.shape[0] >= 1500 * 160


def test_drift_fit_with_congestion_and_drift() -> None:
    rng = np.random.default_rng(5)
    jitter = rng.integers(0, 2 * MS, 3000)
    jitter[400:1000] += 15 * MS  # 12 s congested: whole drift windows above the envelope, rejected
    rendered = render_both(stream(3000, jitter_ns=jitter, drift_ppm=40.0), None)
    assert abs(rendered.legs["caller->callee"].drift_ppm - 40.0) < 5.0


def test_sequence_and_timestamp_wrap() -> None:
    render_both(stream(400, seq0=65_400, ts0=(1 << 32) - 20_000), stream(300, seq0=65_535, ssrc=7))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 1400),
    seed=st.integers(0, 2**32 - 1),
    loss=st.sampled_from([0.0, 0.0, 0.02, 0.3]),
    dup=st.sampled_from([0.0, 0.0, 0.05]),
    swaps=st.sampled_from([0, 0, 3, 50]),
    second_ssrc=st.booleans(),
    alaw_tail=st.booleans(),
    size=st.sampled_from([160, 160, 161, 80]),
    drift=st.sampled_from([0.0, 30.0, -60.0]),
    jump=st.booleans(),
)
def test_any_leg_renders_as_the_general_code_does(
    n: int,
    seed: int,
    loss: float,
    dup: float,
    swaps: int,
    second_ssrc: bool,
    alaw_tail: bool,
    size: int,
    drift: float,
    jump: bool,
) -> None:
    rng = np.random.default_rng(seed)
    payload = rng.integers(0, 256, (n, size), dtype=np.uint8)
    ticks = np.arange(n, dtype=np.int64) * size
    if jump and n > 4:
        ticks[n // 2 :] += 8000 * 30  # a timestamp jump: a re-anchored stretch
    jitter = rng.integers(0, 4 * MS, n)
    first = stream(n, payload=payload, ts_ticks=ticks, jitter_ns=jitter, drift_ppm=drift, seed=seed)
    parts = [disturbed(first, rng, loss, dup, swaps)]
    if alaw_tail:
        parts.append(stream(50, start_ns=T0 + n * 20 * MS, seq0=1000 + n, ts0=50_000 + n * size, pt=8))
    if second_ssrc:
        parts.append(stream(120, start_ns=T0 + 7 * MS, ssrc=0x3333, seq0=9, seed=seed + 1))
    render_both(join(*parts), stream(max(n // 2, 1), ssrc=0x4444, seed=seed + 2))


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=0, max_size=3000), offset=st.integers(0, 1), stride=st.integers(1, 3))
def test_g711_pairs_and_deferred_codes_equal_the_table(data: bytes, offset: int, stride: int) -> None:
    raw = np.frombuffer(bytes(offset) + data, dtype=np.uint8)[offset:]
    for table, pairs in ((ULAW_TABLE, _ULAW_PAIRS), (ALAW_TABLE, _ALAW_PAIRS)):
        expected: npt.NDArray[np.int16] = table[raw]
        np.testing.assert_array_equal(decode_bytes(raw, table, pairs), expected)
        out = np.zeros((raw.shape[0], stride), dtype=np.int16)
        start = raw.shape[0] // 3
        G711Codes(raw, table, pairs).copy_into(out[: raw.shape[0] - start, 0], start)
        np.testing.assert_array_equal(out[: raw.shape[0] - start, 0], expected[start:])
