"""``callrec capture`` as a process: shutdown, crash recovery, reload, the control socket, bad
configurations, a full recordings disk, and the systemd unit.

The packets come from ``--replay FILE --speed S`` (capture.sources.replay: the same loop as a mirror port,
paced to the capture's timestamps), so these tests need neither root nor a network; the live
mirror-port tests with real softphones are in test_live_lab.py. Synthetic calls come from
tests/helpers/callpcap.py (PCMU both ways, BYE answered).
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from callrec.store.access.principals import Users
from callrec.store.catalogue.db import Catalogue
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.fixture_check import parse_time
from tests.helpers.keyset import provision
from tests.helpers.live_env import Capture, calls_json, run_callrec

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "callrec-capture.service"


def empty_pcap(path: Path) -> Path:
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return provision(tmp_path / "home")


def children(pid: int) -> list[int]:
    """Child processes of ``pid`` (from /proc), leaving out multiprocessing's resource tracker."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if "resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(child))
    return found


def by_caller(calls: list[dict]) -> dict[str, dict]:
    return {c["caller"]: c for c in calls}


@pytest.mark.parametrize("saver", ["process", "inline"])
def test_sigterm_records_the_call_in_progress_as_interrupted(saver: str, home: Path, tmp_path: Path) -> None:
    pcap = write_calls(tmp_path / "long.pcap", [CallSpec("100", "200", seconds=30)])
    args = ["--replay", str(pcap), "--speed", "1", "--saver", saver]
    capture = Capture(home, args, tmp_path / "capture.log")
    try:
        capture.wait_for("capture started")
        deadline = time.monotonic() + 20
        while not capture.status()["calls_in_progress"] and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)
        capture.signal(signal.SIGTERM)
        assert capture.wait() == 0
    finally:
        capture.stop()
    (call,) = calls_json(home)
    assert call["end_reason"] == "interrupted by shutdown" and call["state"] == "answered"
    assert 1.0 < call["recording"]["seconds"] < 10.0
    assert "recorded call0-1@test 100 -> 200" in capture.log and "interrupted by shutdown" in capture.log
    assert "capture stopped (SIGTERM): 1 recorded, 0 not recorded, 1 interrupted" in capture.log
    assert not list((home / "journal").glob("*.seg"))  # a clean stop leaves nothing to recover
    assert run_callrec(home, "calls", "verify").returncode == 0


def test_kill_9_then_restart_recovers_the_call_in_progress(home: Path, tmp_path: Path) -> None:
    # call0 (100 -> 200): 0-3.5 s, ended before the kill; call1 (101 -> 201): from 8 s for 20 s, in
    # progress at the kill. Two files joined into one capture (the second without its file header).
    first = write_calls(tmp_path / "a.pcap", [CallSpec("100", "200", seconds=3)], seed=1)
    second = write_calls(
        tmp_path / "b.pcap", [CallSpec("101", "201", seconds=20, start_s=1_764_000_008.0)], seed=2
    )
    merged = tmp_path / "merged.pcap"
    merged.write_bytes(first.read_bytes() + second.read_bytes()[24:])
    capture = Capture(home, ["--replay", str(merged), "--speed", "2"], tmp_path / "first.log")
    try:
        capture.wait_for("recorded call0-1@test")
        deadline = time.monotonic() + 20
        seconds_at_kill = 0.0
        while time.monotonic() < deadline:
            in_progress = capture.status()["calls_in_progress"]
            if in_progress and in_progress[0]["seconds"] >= 4:
                seconds_at_kill = in_progress[0]["seconds"]
                break
            time.sleep(0.2)
        savers = children(capture.process.pid)
        assert len(savers) == 2  # the saver processes (--savers 2)
        capture.signal(signal.SIGKILL)
        assert capture.wait() == -signal.SIGKILL
    finally:
        capture.stop()
    # orphaned, the savers notice and end (they commit what they saved; the journal has the rest)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in savers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in savers if Path(f"/proc/{pid}").exists()]
    assert list((home / "journal").glob("*.seg"))
    killed_at = by_caller(calls_json(home))
    assert set(killed_at) == {"100"}  # call1 was only in memory (and in the journal)
    restart = Capture(home, ["--replay", str(empty_pcap(tmp_path / "empty.pcap"))], tmp_path / "second.log")
    try:
        assert restart.wait() == 0
    finally:
        restart.stop()
    assert (
        "recovery done: 1 recorded (1 cut by the crash, marked recovered), 1 recorded before it"
        in restart.log
    )
    calls = by_caller(calls_json(home))
    assert set(calls) == {"100", "101"}
    assert calls["100"]["end_reason"] == "bye" and calls["100"]["state"] == "completed"
    assert calls["101"]["end_reason"] == "recovered after a crash"
    # the journal is flushed every 0.25 s of wall time by its thread (at most 1.2 s of this capture's time
    # lost, with slack, at speed 2); the call's audio starts 0.52 s after its INVITE
    recovered = calls["101"]["recording"]["seconds"]
    assert seconds_at_kill - 0.52 - 2 * 1.2 <= recovered <= seconds_at_kill, (recovered, seconds_at_kill)
    assert calls["100"]["recording"]["seconds"] == killed_at["100"]["recording"]["seconds"]
    assert run_callrec(home, "calls", "verify").returncode == 0
    assert not list((home / "journal").glob("*.seg"))


def test_sighup_reload_keeps_the_old_configuration_when_the_new_one_is_broken(
    home: Path, tmp_path: Path
) -> None:
    pcap = write_calls(tmp_path / "three.pcap", [CallSpec(f"10{n}", "200", seconds=2) for n in range(3)])
    config = home / "callrec.toml"
    capture = Capture(home, ["--replay", str(pcap), "--speed", "2"], tmp_path / "capture.log")
    try:
        capture.wait_for("recorded call0-1@test")
        config.write_text('[[rules]]\nname = "nothing"\nrecord = "sometimes"\n', encoding="utf-8")
        capture.signal(signal.SIGHUP)
        capture.wait_for("reload refused, the configuration in use stays")
        config.write_text('[[rules]]\nname = "nothing"\nrecord = "never"\n', encoding="utf-8")
        capture.signal(signal.SIGHUP)
        capture.wait_for("configuration reloaded")
        assert capture.wait() == 0
    finally:
        capture.stop()
    assert f"{config}: rules[0] 'nothing': record" in capture.log
    calls = by_caller(calls_json(home))
    assert calls["100"]["recording"] is not None and calls["100"]["rule"] == "default"
    assert calls["102"]["recording"] is None
    assert calls["102"]["not_recorded"] == "rule 'nothing': record = never"
    assert "not recorded call2-1@test 102 -> 200: rule 'nothing': record = never" in capture.log


def test_an_invalid_configuration_exits_78(home: Path, tmp_path: Path) -> None:
    (home / "callrec.toml").write_text("[controls]\nstart = 5\n", encoding="utf-8")
    capture = Capture(home, ["--replay", str(empty_pcap(tmp_path / "e.pcap"))], tmp_path / "capture.log")
    try:
        assert capture.wait() == 78
    finally:
        capture.stop()
    assert "configuration error:" in capture.log and "controls.start" in capture.log


def test_control_socket_starts_pauses_and_stops_an_on_demand_recording(home: Path, tmp_path: Path) -> None:
    (home / "callrec.toml").write_text(
        '[[rules]]\nname = "advisors"\nrecord = "on-demand"\n', encoding="utf-8"
    )
    pcap = write_calls(tmp_path / "call.pcap", [CallSpec("100", "200", seconds=14)])
    capture = Capture(home, ["--replay", str(pcap), "--speed", "1"], tmp_path / "capture.log")
    try:
        capture.wait_for("capture started")
        deadline = time.monotonic() + 20
        while not capture.status()["calls_in_progress"] and time.monotonic() < deadline:
            time.sleep(0.1)
        status = capture.status()
        assert status["ok"] and status["source"] == "replay:call.pcap" and status["kernel_drops"] == 0
        (in_progress,) = status["calls_in_progress"]
        assert in_progress["caller"] == "100" and in_progress["callee"] == "200"
        asked = {}

        def ask(*args: str) -> None:
            out = run_callrec(home, "calls", *args).stdout.strip()  # "<action> asked for call ID at ISO"
            asked[out.split()[0]] = out.rsplit(" at ", 1)[1]

        ask("record", "100", "--start")
        time.sleep(1.0)
        ask("pause", in_progress["call_id"])
        assert capture.status()["calls_in_progress"][0]["commands"] == ["start", "pause"]
        time.sleep(1.0)
        ask("resume", "200")
        time.sleep(1.0)
        ask("record", "100", "--stop")
        missing = run_callrec(home, "calls", "pause", "999", check=False)
        assert missing.returncode == 1 and "0 calls in progress match '999'" in missing.stderr
        assert capture.wait() == 0
    finally:
        capture.stop()
    (call,) = calls_json(home)
    (span,) = call["recording"]["spans"]
    assert span["by"].startswith("start by ") and span["by"].endswith("(control socket)")
    assert (span["from"], span["to"]) == (asked["start"], asked["stop"])
    (pause,) = call["paused_spans"]
    assert pause["by"].startswith("pause by ") and (pause["from"], pause["to"]) == (
        asked["pause"],
        asked["resume"],
    )
    length = (parse_time(asked["stop"]) - parse_time(asked["start"])).total_seconds()
    assert abs(call["recording"]["seconds"] - length) < 0.002
    audit = run_callrec(home, "audit", "list", "--json").stdout
    assert audit.count('"calls.control"') == 4 and '"capture.status"' not in audit.replace(
        '"action": "capture.status"', ""
    )


def test_the_control_socket_checks_the_callers_role(home: Path, tmp_path: Path) -> None:
    import pwd

    me = pwd.getpwuid(os.geteuid()).pw_name
    run_callrec(home, "import", str(empty_pcap(tmp_path / "empty.pcap")))  # creates the catalogue
    with Catalogue(home / "catalogue.db") as catalogue:  # set-up through the library: boss, and me an auditor
        users = Users(catalogue.db)
        users.add("boss", "admin", by="test", now_ns=time.time_ns())
        users.add(me, "auditor", by="boss", now_ns=time.time_ns())
    pcap = write_calls(tmp_path / "call.pcap", [CallSpec("100", "200", seconds=6)])
    capture = Capture(home, ["--replay", str(pcap), "--speed", "1"], tmp_path / "capture.log")
    try:
        capture.wait_for("capture started")
        status = run_callrec(home, "status", check=False)
        assert status.returncode == 1 and "may not see the capture's status" in status.stderr
        record = run_callrec(home, "calls", "record", "100", "--start", check=False)
        assert record.returncode == 1 and "may not control recordings" in record.stderr
    finally:
        capture.stop()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)")
def test_a_full_recordings_disk_delays_recordings_until_space_returns(home: Path, tmp_path: Path) -> None:
    recordings = home / "recordings"
    recordings.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "callrec-test", str(recordings)], check=True)
    try:
        filler = recordings / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):  # until ENOSPC
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        pcap = write_calls(tmp_path / "calls.pcap", [CallSpec(f"10{n}", "200", seconds=2) for n in range(3)])
        capture = Capture(home, ["--replay", str(pcap), "--speed", "2"], tmp_path / "capture.log")
        try:
            capture.wait_for("storage unavailable")
            time.sleep(1)
            assert capture.process.poll() is None or capture.process.returncode == 0
            assert calls_json(home) == []  # nothing half-written in the catalogue
            filler.unlink()
            capture.wait_for("storage available again: waiting calls recorded", timeout_s=20)
            assert capture.wait() == 0
        finally:
            capture.stop()
        calls = calls_json(home)
        assert len(calls) == 3 and all(c["recording"] for c in calls)
        assert run_callrec(home, "calls", "verify").returncode == 0
    finally:
        subprocess.run(["umount", str(recordings)], check=False)


def merge_pcaps(out: Path, *paths: Path) -> Path:
    """One capture of the records of ``paths`` in time order (all written by callpcap: same header)."""
    records = []
    for path in paths:
        data = path.read_bytes()
        at = 24
        while at < len(data):
            seconds, micros, length, _ = struct.unpack_from("<IIII", data, at)
            records.append((seconds, micros, data[at : at + 16 + length]))
            at += 16 + length
    records.sort(key=lambda r: (r[0], r[1]))
    out.write_bytes(paths[0].read_bytes()[:24] + b"".join(r[2] for r in records))
    return out


def test_systemd_notifications_metrics_and_the_call_limit(home: Path, tmp_path: Path) -> None:
    import socket

    (home / "callrec.toml").write_text("[capture]\nmax_calls = 1\n", encoding="utf-8")
    first = write_calls(tmp_path / "a.pcap", [CallSpec("100", "200", seconds=4)], seed=1)
    second = write_calls(
        tmp_path / "b.pcap", [CallSpec("101", "201", seconds=2, start_s=1_764_000_001.0)], seed=2
    )
    pcap = merge_pcaps(tmp_path / "both.pcap", first, second)  # the second starts while the first runs
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.1)
    metrics = tmp_path / "callrec.prom"
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"}
    args = ["--replay", str(pcap), "--speed", "2", "--metrics-file", str(metrics)]
    capture = Capture(home, args, tmp_path / "capture.log", env=env)
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while capture.process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                messages.append(notify.recv(4096).decode())
        assert capture.wait() == 0
    finally:
        capture.stop()
        notify.close()
    fields = [field for message in messages for field in message.split("\n")]
    assert fields[0] == "READY=1" and any(f.startswith("MAINPID=") for f in fields[:3])
    assert fields.count("WATCHDOG=1") >= 3 and "STOPPING=1" in fields
    assert any(f.startswith("STATUS=") and "pkt/s" in f for f in fields)
    assert (
        "call limit reached: 1 calls in progress ([capture] max_calls); 1 new call(s) not followed"
        in capture.log
    )
    text = metrics.read_text()
    # the last write is at shutdown: the final totals
    assert "# TYPE callrec_calls_recorded_total counter\ncallrec_calls_recorded_total 1\n" in text
    assert "callrec_calls_active 0\n" in text and 'callrec_last_error{error=""} 0' in text
    assert f'callrec_kernel_drops_total{{interface="{pcap}"}} 0' in text
    (call,) = calls_json(home)
    assert call["caller"] == "100"


# -- the systemd unit ------------------------------------------------------------------------------


def test_capture_unit_settings() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    assert service["Type"] == "notify" and service["User"] == "callrec" and service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "78" and service["WatchdogSec"]
    assert service["AmbientCapabilities"] == "CAP_NET_RAW CAP_NET_ADMIN"
    assert service["CapabilityBoundingSet"] == "CAP_NET_RAW CAP_NET_ADMIN"
    assert service["RestrictAddressFamilies"] == "AF_UNIX AF_PACKET"
    assert service["ProtectSystem"] == "strict" and service["NoNewPrivileges"] == "yes"
    assert service["StateDirectory"] == "callrec" and service["ConfigurationDirectory"] == "callrec"
    assert "capture" in service["ExecStart"] and service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(service["LimitNOFILE"]) >= 8192  # two open spill files per call in progress


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_capture_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/bin/callrec", shutil.which("true") or "/bin/true"))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    if security.returncode == 0 and "Overall exposure level" in security.stdout:
        level = float(security.stdout.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
        assert level <= 2.0, security.stdout


def test_long_calls_spill_to_sealed_files_and_record_the_same_audio(home: Path, tmp_path: Path) -> None:
    pcap = write_calls(tmp_path / "long.pcap", [CallSpec("100", "200", seconds=160)])
    capture = Capture(home, ["--replay", str(pcap), "--speed", "16"], tmp_path / "capture.log")
    spilled = 0
    memory = []
    try:
        capture.wait_for("capture started")
        while capture.process.poll() is None:
            try:
                status = capture.status()
            except AssertionError:  # the capture ended between the check and the request
                break
            spilled = max(spilled, status["spill_bytes"])
            if status["calls_in_progress"]:
                memory.append(status["media_memory_bytes"])
            time.sleep(0.3)
        assert capture.wait() == 0
    finally:
        capture.stop()
    assert spilled > 0
    # 160 s of G.711 both ways is 2.56 MB of payload. Held in memory per leg: up to the spill threshold
    # (256 KiB) plus the 10 s window plus what arrives between two spills (1 s of wall time, 16 s here)
    assert memory and max(memory) < 2 * (256 * 1024 + 26 * 8000), memory
    assert not list((home / "spool" / "calls").glob("*.spill"))
    imported = provision(tmp_path / "imported")
    run_callrec(imported, "import", str(pcap))
    (live,), (offline,) = calls_json(home), calls_json(imported)
    assert live["recording"]["audio_sha256"] == offline["recording"]["audio_sha256"]
    assert live["recording"]["seconds"] == offline["recording"]["seconds"] > 159
