"""The lab's hard scenarios (pcaps/lab/scenarios/: real softphones and SIPp on a mirror port):
hold, SIP over TCP, VLAN, fragmented INVITE, impairment, early media, SSRC and codec changes.

For each: the call is found and completed, each direction's RTP packets are those on the wire,
and the recording spans the media (early media included). Scenario-specific checks follow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from callrec.cli.main import cli
from callrec.decode.formats.wav import read_wav
from tests.helpers.audio_match import best_lag
from tests.helpers.keyset import provision

SCENARIOS = Path(__file__).resolve().parents[2] / "pcaps" / "lab" / "scenarios"
NAMES = sorted(p.stem for p in SCENARIOS.glob("*.json"))


def _import(tmp_path: Path, name: str) -> tuple[dict[str, Any], dict[str, Any], np.ndarray, int]:
    meta = json.loads((SCENARIOS / f"{name}.json").read_text())
    home = provision(tmp_path / "home")
    runner = CliRunner()
    result = runner.invoke(cli, ["--home", str(home), "import", "--json", str(SCENARIOS / f"{name}.pcap")])
    assert result.exit_code == 0, result.output
    calls = json.loads(result.stdout)
    assert [c["call_id"] for c in calls] == [meta["sip_call_id"]]
    out = tmp_path / "x.wav"
    export = ["--home", str(home), "calls", "export", str(calls[0]["id"]), "--out", str(out)]
    assert runner.invoke(cli, export).exit_code == 0
    samples, rate = read_wav(out)
    return meta, calls[0], samples, rate


def test_every_scenario_is_here() -> None:
    assert len(NAMES) == 8, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_scenario_is_recorded_whole(name: str, tmp_path: Path) -> None:
    meta, call, samples, rate = _import(tmp_path, name)
    assert call["state"] == "completed" and call["recording"] is not None
    legs = {leg["direction"]: leg for leg in call["legs"]}
    wire = {"caller->callee": 0, "callee->caller": 0}
    first, last = [], []
    for s in meta["wire"]["rtp_streams"]:
        direction = "caller->callee" if s["src"] == meta["a"]["ip"] else "callee->caller"
        wire[direction] += int(s["pkts"])
        first.append(float(s["start_time"]))
        last.append(float(s["end_time"]))
    assert {d: legs[d]["packets"] for d in wire} == wire
    span = max(last) - min(first) + 0.02  # the last packet's 20 ms
    assert abs(call["recording"]["seconds"] - span) < 0.1, (call["recording"]["seconds"], span)
    assert samples.shape[0] / rate == pytest.approx(call["recording"]["seconds"], abs=0.001)
    for column in (0, 1):
        assert np.any(samples[:, column]), f"channel {column} is silent"


def test_a_hold_is_exact_silence_in_both_channels_and_the_call_goes_on(tmp_path: Path) -> None:
    meta, call, samples, rate = _import(tmp_path, "sc_hold_pcmu_18s")
    [hold] = meta["scenario"]["hold"]
    start = min(float(s["start_time"]) for s in meta["wire"]["rtp_streams"])  # the recording's 0
    a = int((float(hold["hold_time"]) + 0.2 - start) * rate)
    b = int((float(hold["resume_time"]) - 0.2 - start) * rate)
    assert b - a > 5 * rate
    assert not np.any(samples[a:b])  # nothing was sent during the hold: silence, not a cut
    after = b + int(0.6 * rate)
    assert np.any(samples[after:, 0]) and np.any(samples[after:, 1])  # and the call went on
    assert call["state"] == "completed" and call["end_reason"] == "bye"


def test_both_halves_of_a_codec_change_are_decoded(tmp_path: Path) -> None:
    _, call, samples, rate = _import(tmp_path, "sc_codecchange_12s")
    assert set(call["codecs"]) == {"PCMU", "PCMA"}
    half = samples.shape[0] // 2
    for column in (0, 1):
        for part in (samples[: half - rate, column], samples[half + rate :, column]):
            level = float(np.sqrt(np.mean(part.astype(np.float64) ** 2)))
            assert 200 < level < 12000  # speech level: a wrong law would be loud noise or near silence


def test_both_channels_stay_on_the_wire_through_an_ssrc_change(tmp_path: Path) -> None:
    """Each side's audio before and after its SSRC change is where the wire put it (within 20 ms).

    NAME/X_sent.wav joins the parts a side played end to end; on the wire the callee paused 45.9 ms
    (the caller 8.9 ms) between its last packet of the old SSRC and its first of the new one, so a
    part is located on its own: the samples of part k are ``packets * 160`` long, and it belongs at
    its RTP stream's first packet on the mirror (relative to the recording's sample 0, the call's
    first packet). Measured against the joined file as a whole, the pause would read as the second
    half of the callee channel "placed 46 ms late"."""
    meta, call, samples, rate = _import(tmp_path, "sc_ssrcchange_pcmu_12s")
    streams = meta["wire"]["rtp_streams"]
    t0 = min(float(s["start_time"]) for s in streams)
    problems = []
    for side, column in (("A", 0), ("B", 1)):
        sent, sent_rate = read_wav(SCENARIOS / meta["wav"][f"{side}_sent"]["file"])
        assert sent_rate == rate == 8000
        channel = samples[:, column].astype(np.float64)
        parts = [p for p in meta["rtp_parts_played"] if p["side"] == side]
        assert len(parts) == 2  # before and after the change
        at = 0
        for part in parts:
            piece = sent[at : at + int(part["packets"]) * 160, 0].astype(np.float64)
            at += piece.shape[0]
            [wire] = [s for s in streams if s["ssrc"].lower() == part["ssrc"].lower()]
            truth = round((float(wire["start_time"]) - t0) * rate)
            lo = max(truth - rate // 5, 0)  # search 200 ms either side of the truth
            lag, corr = best_lag(channel[lo : truth + piece.shape[0] + rate // 5], piece, rate, 0.4)
            error_ms = (lo + lag - truth) * 1000 / rate
            if abs(error_ms) > 20 or corr < 0.95:
                where = f"{side} part {part['part']} ({part['ssrc']})"
                problems.append(f"{where}: {error_ms:+.1f} ms, corr {corr:.3f}")
    assert not problems, problems
    callee = next(leg for leg in call["legs"] if leg["direction"] == "callee->caller")
    assert callee["ssrc"].count(",") == 1 and 40 < callee["max_gap_ms"] < 50  # the pause kept, not closed
