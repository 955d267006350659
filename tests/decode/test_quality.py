"""Leg quality: RFC 3550 jitter and the E-model (ITU-T G.107 simplified, G.113 codec values).

Expected figures are computed by hand from the formulas in ``decode/quality.py``'s docstring:
``R = 93.2 - Id - Ie_eff`` with ``d = 40 ms + 2 x jitter``, ``Id = 0.024 d`` below 177.3 ms,
``Ie_eff = Ie + (95 - Ie) Ppl / (Ppl / BurstR + Bpl)``, ``MOS = 1 + 0.035 R + 7e-6 R (R-60)(100-R)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from callrec.capture.model.media import MediaFormat
from callrec.cli.main import cli
from callrec.decode.jitter import rfc3550_jitter
from callrec.decode.quality import (
    G711_WITHOUT_PLC,
    IMPAIRMENTS,
    burst_ratio,
    delay_impairment,
    effective_impairment,
    estimate_mos,
    leg_quality,
    main_codec,
    mos_from_r,
    r_factor,
)
from callrec.decode.timeline import analyse_leg
from tests.helpers.keyset import provision
from tests.helpers.legs import MS, SPP, T0, make_leg, stream

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "pcaps" / "fixtures"


# -- RFC 3550 jitter ---------------------------------------------------------------------------


@given(st.lists(st.floats(0, 1e8, allow_nan=False), max_size=700))
def test_jitter_filter_is_the_rfc3550_recursion(steps: list[float]) -> None:
    expected, j = [], 0.0
    for d in steps:
        j += (abs(d) - j) / 16
        expected.append(j)
    np.testing.assert_allclose(rfc3550_jitter(np.array(steps)), expected, rtol=1e-9, atol=1e-3)


# -- the E-model, against hand-computed values ------------------------------------------------


def test_a_perfect_g711_leg_rates_about_4_4() -> None:
    # d = 40 ms: Id = 0.96, R = 92.24, MOS = 1 + 3.2284 + 7e-6 * 92.24 * 32.24 * 7.76
    assert r_factor(IMPAIRMENTS["PCMA"], 0.0) == pytest.approx(92.24)
    assert estimate_mos("PCMA", 0.0) == pytest.approx(4.38994, abs=1e-4)
    assert estimate_mos("pcmu", 0.0) == estimate_mos("PCMA", 0.0)


def test_five_percent_random_loss_on_g711() -> None:
    # with PLC (Bpl 25.1): Ie_eff = 95 * 5 / 30.1 = 15.7807, R = 76.4593
    assert effective_impairment(IMPAIRMENTS["PCMU"], 5.0) == pytest.approx(15.78073, abs=1e-4)
    assert estimate_mos("PCMU", 5.0) == pytest.approx(3.88345, abs=1e-4)
    # without PLC (Bpl 4.3): Ie_eff = 95 * 5 / 9.3 = 51.0753, R = 41.1647
    r = r_factor(G711_WITHOUT_PLC, 5.0)
    assert r == pytest.approx(41.16473, abs=1e-4)
    assert mos_from_r(r) == pytest.approx(2.12144, abs=1e-4)  # well under 3.7


def test_codec_loss_burstiness_and_delay() -> None:
    assert estimate_mos("G729", 0.0) == pytest.approx(4.07000, abs=1e-4)  # Ie 11: R = 81.24
    assert estimate_mos("G729", 2.0) == pytest.approx(3.74504, abs=1e-4)  # Ie_eff = 11 + 84 * 2 / 21 = 19
    # the same 5 % in bursts (BurstR 2) hurts more: Ie_eff = 475 / 27.6 = 17.2101
    assert estimate_mos("PCMA", 5.0, burst_ratio=2.0) == pytest.approx(3.82315, abs=1e-4)
    # 100 ms of jitter: d = 240 ms, Id = 0.024 * 240 + 0.11 * (240 - 177.3) = 12.657
    assert delay_impairment(240.0) == pytest.approx(12.657)
    assert estimate_mos("PCMA", 0.0, jitter_mean_ms=100.0) == pytest.approx(4.04436, abs=1e-4)
    assert estimate_mos("x-no-values", 0.0) is None  # no planning values: no estimate


def test_r_to_mos_ends() -> None:
    assert mos_from_r(-5) == mos_from_r(0) == mos_from_r(3) == 1.0  # the cubic dips below 1 there
    assert mos_from_r(100) == mos_from_r(120) == 4.5
    assert mos_from_r(50) == pytest.approx(1 + 1.75 + 7e-6 * 50 * -10 * 50)


@given(st.floats(-50, 150), st.floats(-50, 150))
def test_mos_rises_with_r(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 1.0 <= mos_from_r(low) <= mos_from_r(high) <= 4.5


@given(
    st.sampled_from(sorted(IMPAIRMENTS)),
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(0.5, 20),
    st.floats(0, 300),
)
def test_mos_falls_as_loss_grows(codec: str, a: float, b: float, burst: float, jitter: float) -> None:
    low, high = sorted((a, b))
    better = estimate_mos(codec, low, burst, jitter)
    worse = estimate_mos(codec, high, burst, jitter)
    assert better is not None and worse is not None
    assert 1.0 <= worse <= better <= 4.5


@given(st.sampled_from(sorted(IMPAIRMENTS)), st.floats(0, 30), st.floats(0, 500), st.floats(0, 500))
def test_mos_falls_as_jitter_grows(codec: str, loss: float, a: float, b: float) -> None:
    low, high = sorted((a, b))
    better, worse = estimate_mos(codec, loss, 1.0, low), estimate_mos(codec, loss, 1.0, high)
    assert better is not None and worse is not None and worse <= better


# -- burst ratio and a leg's figures ----------------------------------------------------------


def test_burst_ratio_from_sequence_numbers() -> None:
    p = stream(1000)
    assert burst_ratio(p) == 1.0  # nothing lost
    burst = p.select(np.setdiff1d(np.arange(1000), np.arange(500, 550)))
    assert burst_ratio(burst) == pytest.approx(1 / (1 / 950 + 1 / 50))  # one burst of 50: 47.5
    rng = np.random.default_rng(5)
    random_loss = stream(20_000, seq0=65_000)  # and across the sequence wrap
    assert burst_ratio(random_loss.select(np.flatnonzero(rng.random(20_000) >= 0.05))) == pytest.approx(
        1, abs=0.05
    )


def test_leg_quality_of_a_lossy_leg_with_duplicates() -> None:
    p = stream(200)
    lost = [20, 60, 100, 140, 180]  # isolated: 2.5 % random-like loss
    keep = np.setdiff1d(np.arange(200), lost)
    packets = p.select(np.concatenate((keep, [10, 11])))  # two duplicates
    leg = make_leg(packets)
    stats = analyse_leg(leg).stats
    quality = leg_quality(stats, leg)
    assert (quality.codec, quality.packets_received, quality.loss_percent) == ("PCMU", 195, 2.5)
    assert quality.burst_ratio == pytest.approx(1 / (5 / 195 + 1))  # isolated losses: just below 1
    assert quality.delay_ms == pytest.approx(40.0)  # no jitter in this stream
    assert quality.mos == pytest.approx(estimate_mos("PCMU", 2.5, quality.burst_ratio))


def test_legs_without_audio_or_values_have_no_mos() -> None:
    events = stream(5, pt=101, ts_ticks=np.zeros(5), payload=np.zeros((5, 4), np.uint8))
    assert leg_quality(analyse_leg(make_leg(events)).stats, make_leg(events)).mos is None
    other = make_leg(stream(50, pt=97), formats={97: MediaFormat(97, "x-no-values", 8000)})
    quality = leg_quality(analyse_leg(other).stats, other)
    assert quality.codec == "x-no-values" and quality.mos is None and quality.loss_percent == 0.0
    assert main_codec(make_leg(stream(3, pt=13))) == ""  # comfort noise is not a codec


def test_jitter_lowers_a_legs_mos() -> None:
    jitter = np.random.default_rng(3).exponential(20 * MS, 300).astype(np.int64)
    leg = make_leg(stream(300, jitter_ns=jitter, start_ns=T0 + SPP))
    quality = leg_quality(analyse_leg(leg).stats, leg)
    assert quality.delay_ms > 60 and quality.mos is not None
    assert quality.mos < 4.38  # 4.39 without jitter


# -- stored and shown -------------------------------------------------------------------------


def test_mos_is_stored_per_leg_and_shown(tmp_path: Path) -> None:
    home = str(provision(tmp_path / "home"))
    runner = CliRunner()
    files = [str(FIXTURES / "basic_pcmu.pcap"), str(FIXTURES / "loss_dup_reorder.pcap")]
    result = runner.invoke(cli, ["--home", home, "import", "--json", *files], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    basic, lossy = json.loads(result.stdout)
    for leg in basic["legs"]:  # no loss, jitter under 0.6 ms
        assert leg["mos"] == pytest.approx(4.39, abs=0.01)
    caller = lossy["legs"][0]  # 4 of 200 lost, one burst of 3
    assert (caller["lost"], caller["expected"]) == (4, 200)
    assert 3.5 < caller["mos"] < basic["legs"][0]["mos"]
    shown = runner.invoke(cli, ["--home", home, "calls", "show", str(basic["id"]), "--json"])
    assert [leg["mos"] for leg in json.loads(shown.stdout)["legs"]] == [leg["mos"] for leg in basic["legs"]]


def test_loss_bursts_by_sequence_number_across_the_wrap() -> None:
    from callrec.capture.model.media import RtpPackets
    from callrec.decode.quality import loss_bursts

    seqs = [65530, 65531, 65534, 65535, 0, 4, 5, 5, 6]  # 65532-3 lost, 1-3 lost, a duplicate of 5
    n = len(seqs)
    seq = np.array(seqs, dtype=np.int64)
    arrival = np.array([0, 20, 80, 100, 120, 200, 220, 221, 240], dtype=np.int64) * 1_000_000
    z = np.zeros(n, dtype=np.int64)
    packets = RtpPackets(arrival, seq, z, z + 7, z, np.zeros(n, bool), np.zeros(0, np.uint8), z, z)
    bursts = loss_bursts(packets)
    assert [(b.packets, b.start_ns // 1_000_000, b.end_ns // 1_000_000) for b in bursts] == [
        (2, 40, 80),
        (3, 140, 200),
    ]
    assert loss_bursts(packets, limit=1) == bursts[:1]
    restart = RtpPackets(
        arrival[:2],
        np.array([10, 9000]),
        z[:2],
        z[:2],
        z[:2],
        np.zeros(2, bool),
        np.zeros(0, np.uint8),
        z[:2],
        z[:2],
    )
    assert loss_bursts(restart) == []  # a jump over MAX_DROPOUT is a restart, not 8989 lost packets
