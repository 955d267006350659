"""Real softphone calls from the lab (pcaps/lab/), held to what each phone actually said.

pcaps/make_lab_captures.sh made each NAME.pcap with ../shared/lab/call.sh: two baresip user agents
in network namespaces, a mirror port, espeak-ng speech. NAME/A_sent.wav and NAME/B_sent.wav are
exactly what the caller (A) and the callee (B) fed to their encoders; NAME.json has the call's
metadata (Call-ID, parties, talk time, RTP streams as tshark saw them on the mirror).

For each lab call: import, export, then
* left correlates with A_sent and right with B_sent (normalised cross-correlation >= 0.95 on the
  overlap, at the lag found by FFT cross-correlation within +-2 s);
* those lags are where the RTP says: each within 20 ms of its leg's first packet (relative to the
  recording's start, the call's first media packet), and left vs right consistent within 20 ms;
* the channels are not swapped: left does not correlate with B_sent, nor right with A_sent;
* the recording lasts the talk time (within 100 ms); call metadata and packet counts agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.audio_match import best_lag
from tests.helpers.fixture_check import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    PCAPS,
    export_wav,
    import_capture,
    legs_by_direction,
    read_wav,
    to_rate,
)

LAB = PCAPS / "lab"
METAS = sorted(LAB.glob("*.json"))
MIN_CORRELATION = 0.95
MAX_CROSS_TALK = 0.30  # a channel's best correlation with the OTHER side's voice
LAG_TOLERANCE_S = 0.020
DURATION_TOLERANCE_S = 0.100


def _user(uri: str) -> str:
    return uri.split(":", 1)[1].split("@", 1)[0]


@pytest.mark.parametrize("meta_path", METAS, ids=[p.stem for p in METAS])
def test_lab_call(meta_path: Path, tmp_path: Path) -> None:
    meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    home = tmp_path / "home"
    calls = import_capture(home, LAB / meta["pcap"])
    assert [c.get("call_id") for c in calls] == [meta["sip_call_id"]], calls
    call = calls[0]
    problems: list[str] = []
    want = {"state": "completed", "caller": _user(meta["a"]["uri"]), "callee": _user(meta["b"]["uri"])}
    for key, value in want.items():
        if call.get(key) != value:
            problems.append(f"{key} is {call.get(key)!r}, expected {value!r}")

    # the legs: packets per direction as tshark saw them on the mirror (NAME.json "wire")
    a, b = meta["a"], meta["b"]
    first_packet: dict[str, float] = {}
    legs = legs_by_direction(call)
    for s in meta["wire"]["rtp_streams"]:
        if s["src"] == a["ip"] and int(s["sport"]) == a["rtp_port"]:
            direction = CALLER_TO_CALLEE
        elif s["src"] == b["ip"] and int(s["sport"]) == b["rtp_port"]:
            direction = CALLEE_TO_CALLER
        else:
            continue
        first_packet[direction] = min(first_packet.get(direction, s["start_time"]), s["start_time"])
        got = sum(int(leg.get("packets") or 0) for leg in legs.get(direction, []))
        if got != int(s["pkts"]):
            problems.append(f"{direction}: {got} RTP packets, tshark saw {s['pkts']}")
    assert set(first_packet) == {CALLER_TO_CALLEE, CALLEE_TO_CALLER}, meta["wire"]["rtp_streams"]

    recording = call.get("recording")
    assert recording, f"no recording: {call}"
    talk = float(meta["talk_s"])
    if abs(float(recording["seconds"]) - talk) > DURATION_TOLERANCE_S:
        problems.append(
            f"recording is {recording['seconds']} s, the talk time {talk} s (+- {DURATION_TOLERANCE_S})"
        )

    rate, samples = export_wav(home, call, tmp_path / "lab.wav")
    left, right = to_rate(samples[:, 0], rate), to_rate(samples[:, 1], rate)
    sent = {}
    for side in ("A", "B"):
        sent_rate, mono = read_wav(LAB / meta["wav"][f"{side}_sent"]["file"])
        sent[side] = to_rate(mono[:, 0], sent_rate)
    t0 = min(first_packet.values())
    results = {}
    for label, channel, side, other, direction in (
        ("left", left, "A", "B", CALLER_TO_CALLEE),
        ("right", right, "B", "A", CALLEE_TO_CALLER),
    ):
        lag, corr = best_lag(channel, sent[side], 8000)
        cross_lag, cross = best_lag(channel, sent[other], 8000)
        expected_lag = first_packet[direction] - t0
        results[label] = (lag / 8000, expected_lag)
        if corr < MIN_CORRELATION:
            problems.append(
                f"{label} vs {side}_sent: correlation {corr:.3f} at lag {lag / 8000:+.3f} s, want >= "
                f"{MIN_CORRELATION} (vs {other}_sent: {cross:.3f})"
            )
        if abs(cross) > MAX_CROSS_TALK:
            problems.append(
                f"{label} correlates {cross:.3f} with {other}_sent (lag {cross_lag / 8000:+.3f} s): "
                "channels swapped or mixed?"
            )
        if abs(lag / 8000 - expected_lag) > LAG_TOLERANCE_S:
            problems.append(
                f"{label}: {side}_sent starts at {lag / 8000:+.4f} s in the recording, its first RTP "
                f"packet at {expected_lag:+.4f} s (+- {LAG_TOLERANCE_S})"
            )
    (lag_l, exp_l), (lag_r, exp_r) = results["left"], results["right"]
    if abs((lag_l - lag_r) - (exp_l - exp_r)) > LAG_TOLERANCE_S:
        problems.append(
            f"left and right are misaligned: lags {lag_l:+.4f} / {lag_r:+.4f} s, expected "
            f"{exp_l:+.4f} / {exp_r:+.4f} s"
        )
    assert not problems, f"{meta_path.stem}:\n  " + "\n  ".join(problems)
