"""``callrec capture`` on a mirror port with real softphones (../shared/lab), as root.

The lab (../shared/lab/README.md) builds namespaces uaA and uaB joined by a bridge in namespace sw,
whose every frame is mirrored to tap:eth0, a SPAN port. ``callrec capture --interface eth0`` runs
inside namespace tap (our process, ended by its PID) while

* call.sh makes one baresip call (PCMU, 8 s of talk time; ground truth A_sent.wav / B_sent.wav), and
* load.sh makes 50 concurrent SIPp calls (10 s each, 20 calls/s; each side plays espeak-ng speech
  made from A_source.wav / B_source.wav as G.711 RTP),

then it is stopped with SIGTERM. Every call must be recorded, completed (none interrupted), with both
channels matching what each side sent (normalised cross-correlation >= 0.95 for the baresip call,
>= 0.9 for every SIPp call), and the kernel must have dropped no frame.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.audio_match import best_lag
from tests.helpers.fixture_check import export_wav, read_wav, run_cli
from tests.helpers.keyset import provision
from tests.helpers.live_env import Capture

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT.parent / "shared" / "lab"
LOAD_CALLS = 50

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab builds network namespaces (root)"),
    pytest.mark.skipif(not (LAB / "call.sh").exists(), reason=f"no lab at {LAB}"),
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("baresip", "sipp", "tcpdump", "tshark", "espeak-ng", "sox", "ip")),
        reason="the lab's tools are missing (make system-deps installs them)",
    ),
]


def _lab_up() -> bool:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return bool(
        {line.split()[0] for line in listed.splitlines() if line.strip()} & {"uaA", "uaB", "sw", "tap"}
    )


def _lab(script: str, *args: str, out: Path) -> None:
    done = subprocess.run(
        ["bash", str(LAB / script), *args],
        env={**os.environ, "LAB_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, (
        f"{script} {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if _lab_up():
        pytest.skip("a lab is already up (ip netns list): another lab run in progress?")
    tmp = tmp_path_factory.mktemp("live-lab")
    home = provision(tmp / "home")
    out = tmp / "lab-out"
    subprocess.run(["bash", str(LAB / "netns-up.sh")], check=True, capture_output=True, timeout=120)
    capture = None
    try:
        capture = Capture(
            home, ["--interface", "eth0"], tmp / "capture.log", prefix=["ip", "netns", "exec", "tap"]
        )
        capture.wait_for("capture started")
        _lab("call.sh", "PCMU", "8", "live_call", out=out)
        _lab("load.sh", str(LOAD_CALLS), "10", "live_load", out=out)
        time.sleep(2.0)  # the last BYE: answered, handed on 0.25 s later, committed within 0.1 s
        status = capture.status()
        capture.signal(signal.SIGTERM)
        assert capture.wait() == 0
        log = capture.log
    finally:
        if capture is not None:
            capture.stop()
        subprocess.run(["bash", str(LAB / "netns-down.sh")], check=False, capture_output=True, timeout=120)
    return {"home": home, "out": out, "status": status, "log": log}


def _calls(home: Path) -> list[dict[str, Any]]:
    res = run_cli("--home", str(home), "calls", "list", "--json", "--limit", "1000")
    assert res.exit_code == 0, res.describe()
    listed: list[dict[str, Any]] = json.loads(res.stdout)
    return listed


def _load_call_ids(out: Path) -> set[str]:
    """The Call-IDs of the SIPp calls, read by tshark from the lab's own capture of the mirror."""
    done = subprocess.run(
        [
            "tshark",
            "-r",
            str(out / "live_load.pcap"),
            "-Y",
            'sip.Method == "INVITE"',
            "-T",
            "fields",
            "-e",
            "sip.Call-ID",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(done.stdout.split())


def _correlation(recording: np.ndarray, sent: np.ndarray) -> float:
    _, corr = best_lag(recording.astype(np.float64), sent.astype(np.float64), 8000, max_lag_s=2.0)
    return corr


def test_no_frame_dropped_and_every_call_recorded(recorded: dict[str, Any]) -> None:
    status = recorded["status"]
    assert status["kernel_drops"] == 0 and status["frames"] > 50_000, status
    assert status["calls_in_progress"] == [] and status["waiting"] == 0 and status["lost"] == 0
    calls = _calls(recorded["home"])
    load = json.loads((recorded["out"] / "live_load.json").read_text())
    baresip = json.loads((recorded["out"] / "live_call.json").read_text())
    load_ids = _load_call_ids(recorded["out"])
    expected = {baresip["sip_call_id"], *load_ids}
    assert len(load_ids) == LOAD_CALLS == load["distinct_call_ids"]
    assert {c["call_id"] for c in calls} == expected
    for call in calls:
        assert call["state"] == "completed" and call["end_reason"] == "bye", call
        assert call["recording"] is not None and call["recording"]["seconds"] > 7.5, call
    assert (
        f"capture stopped (SIGTERM): {LOAD_CALLS + 1} recorded, 0 not recorded, 0 interrupted"
        in recorded["log"]
    )
    assert recorded["log"].count("\nrecorded ") == LOAD_CALLS + 1


def test_the_softphone_call_matches_what_each_side_sent(recorded: dict[str, Any], tmp_path: Path) -> None:
    meta = json.loads((recorded["out"] / "live_call.json").read_text())
    (call,) = [c for c in _calls(recorded["home"]) if c["call_id"] == meta["sip_call_id"]]
    rate, samples = export_wav(recorded["home"], call, tmp_path / "call.wav")
    assert rate == 8000
    for column, side in ((0, "A"), (1, "B")):
        _, sent = read_wav(recorded["out"] / "live_call" / f"{side}_sent.wav")
        assert _correlation(samples[:, column], sent[:, 0]) >= 0.95, side


def test_every_load_call_matches_both_sides(recorded: dict[str, Any], tmp_path: Path) -> None:
    load_ids = _load_call_ids(recorded["out"])
    sources = {side: read_wav(recorded["out"] / "live_load" / f"{side}_source.wav")[1][:, 0] for side in "AB"}
    calls = [c for c in _calls(recorded["home"]) if c["call_id"] in load_ids]
    assert len(calls) == LOAD_CALLS
    worst = 1.0
    for call in calls:
        _, samples = export_wav(recorded["home"], call, tmp_path / f"{call['id']}.wav")
        for column, side in ((0, "A"), (1, "B")):
            corr = _correlation(samples[:, column], sources[side][: samples.shape[0] + 8000])
            worst = min(worst, corr)
            assert corr >= 0.9, (call["call_id"], side, corr)
    assert worst >= 0.9
