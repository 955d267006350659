"""Live capture under load: N concurrent G.711 calls replayed at real time into ``callrec capture``.

Needs root and ``ip netns``. Builds two network namespaces of its own (``crb-send-<pid>``,
``crb-cap-<pid>``) joined by a veth pair (documentation addresses, no routes), and for each N:

1. makes (or reuses, bench/out/live_<N>x<S>s/) the frames of N concurrent calls (bench/live_sender.py:
   starts spread over 4 s, talk times S to S + 1 s, fresh random PCMU audio in every packet);
2. starts ``callrec --home <fresh home> capture --interface c0`` in the capture namespace and waits for
   its control socket;
3. starts the sender in the other namespace, which replays the frames at real time through an AF_PACKET
   socket (one ``sendmmsg`` per 10 ms tick) and logs the wall-clock time each BYE left;
4. samples the capture's memory (VmRSS before the calls, once junk UDP has written through its ring; in
   the middle of the run with all N calls in progress; just before the first BYE; VmHWM) and CPU (user +
   system from /proc/PID/stat, and every core's busy share from /proc/stat); the summary line gives the
   memory one more call costs, between the two largest passing steps (``rss_per_call_marginal_kib``);
5. waits until the last BYE + 3 s, reads ``status`` through the control socket (kernel drops, frames),
   sends SIGTERM and waits for the capture;
6. reads the catalogue: recordings vs N, latency = ``imported_at`` (the commit that makes the call
   searchable) minus the BYE's send time, and exports a sample of recordings (``callrec calls export``)
   to compare each channel with the μ-law audio that direction sent: the whole-call correlation at the
   best lag (``corr_min``), and packet by packet (``packets_missing_max``: sent 20 ms packets not found
   bit-exact, in order, beyond the one packet each of the recorder's 2 ms drift steps may alter).

Prints one JSON line per N and a summary line with the largest N that passed: no kernel or softnet drop,
every call recorded complete (ended by its BYE), no packet missing from a sampled channel. Random audio
decorrelates at any shift, so one 2 ms drift step lowers ``corr_min`` a lot; ``--strict-corr`` also
requires ``corr_min >= --min-corr``::

    sudo .venv/bin/python bench/bench_live.py                 # 250, 500, 1000, 2000 calls, 30 s
    sudo .venv/bin/python bench/bench_live.py --quick         # 250 and 1000 calls, 20 s
    sudo .venv/bin/python bench/bench_live.py --calls 1000 --profile   # also py-spy the capture

A step that misses its conditions is a result (exit 0); set-up errors exit non-zero. Without root it
prints a ``skipped`` line and exits 0. The kernel's receive work for the veth pair (BPF filter, copying
into the capture's ring) runs in the sender's context, so the sender's core stands in for a NIC's
interrupt handling; ``cpu_busy_pct`` shows both cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from live_lab import CAP_DEV, PASSPHRASE, SEND_DEV, Lab, SetupError, make_keys, stop_process  # noqa: E402
from live_measure import (  # noqa: E402
    PACKET,
    busy_pct,
    code_digest,
    correlation,
    host_cpu,
    hot_spots,
    ns_from_iso,
    packet_match,
    pct,
    proc_cpu_s,
    proc_status,
    softnet_drops,
)
from live_sender import FrameSet, build, call_id, ulaw_to_linear  # noqa: E402

from callrec.recorder.live.control_socket import ControlError, request  # noqa: E402
from callrec.store.home import Home  # noqa: E402

TAIL_S = 3.0


def callrec(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "callrec.cli.main", "--home", str(home), *args]


# -- one step -----------------------------------------------------------------------------------------


class Step:
    def __init__(
        self, args: argparse.Namespace, lab: Lab, work: Path, keys: tuple[Path, Path], calls: int
    ) -> None:
        self.args, self.lab, self.work, self.keys, self.calls = args, lab, work, keys, calls
        self.home = work / f"home-{calls}"
        self.control = self.home / "run" / "control.sock"
        self.log_path = work / f"capture-{calls}.log"
        self.out: dict[str, Any] = {
            "bench": "live",
            "calls": calls,
            "seconds": args.seconds,
            "spread_s": args.spread,
        }

    def status(self, timeout_s: float = 10.0) -> dict[str, Any]:
        return request(self.control, {"command": "status"}, timeout_s=timeout_s)

    def start_capture(self) -> subprocess.Popen[Any]:
        shutil.copytree(self.keys[0], self.home / "keys")
        cmd = ["ip", "netns", "exec", self.lab.cap_ns, *callrec(self.home, "capture", "--interface", CAP_DEV)]
        if not self.args.journal:
            cmd.append("--no-journal")
        if self.args.buffer:
            cmd += ["--buffer", self.args.buffer]
        if self.args.savers:
            cmd += ["--savers", str(self.args.savers)]
        with open(self.log_path, "w") as log:
            capture = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if capture.poll() is not None:
                raise SetupError(f"capture exited {capture.returncode}: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(ControlError):
                if self.status(2.0).get("ok"):
                    return capture
            time.sleep(0.1)
        stop_process(capture)
        raise SetupError(
            f"capture's control socket did not answer in 60 s: {self.log_path.read_text()[-2000:]}"
        )

    def run(self) -> dict[str, Any]:
        t_build = time.monotonic()
        directory = build(self.calls, self.args.seconds, self.args.spread)
        frames = FrameSet(directory)
        self.out["frames"] = frames.frames
        self.out["code"] = code_digest()
        self.out["loadavg_1m_before"] = float(Path("/proc/loadavg").read_text().split()[0])
        self.out["build_s"] = round(time.monotonic() - t_build, 1)
        bye_t = frames.bye_time_s()
        invite_t = frames.invite_time_s()
        mid_t = (invite_t.max() + 1.0 + bye_t.min()) / 2  # every call answered and talking
        pre_t = bye_t.min() - 0.3
        capture = self.start_capture()
        sender: subprocess.Popen[str] | None = None
        profiler: subprocess.Popen[Any] | None = None
        try:
            time.sleep(1.0)
            # the ring written through once: its pages belong to the baseline, not to the calls
            warm = ["ip", "netns", "exec", self.lab.send_ns, sys.executable, str(HERE / "live_sender.py")]
            subprocess.run([*warm, "--send", SEND_DEV, "--warm", str(self.ring_mib() + 8)], check=True)
            time.sleep(1.0)
            rss0 = proc_status(capture.pid).get("VmRSS", 0)
            sent_path = self.work / f"sent-{self.calls}.json"
            cmd = ["ip", "netns", "exec", self.lab.send_ns, sys.executable, str(HERE / "live_sender.py")]
            cmd += ["--send", SEND_DEV, "--set", str(directory), "--out", str(sent_path)]
            sender = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
            assert sender.stdout is not None
            ready = json.loads(sender.stdout.readline() or "{}")
            if not ready.get("ready"):
                raise SetupError(f"the sender did not start (exit {sender.wait()})")
            t0 = ready["t0_wall_ns"] / 1e9
            while time.time() < t0:
                time.sleep(0.01)
            cpu0, host0, soft0, wall0 = proc_cpu_s(capture.pid), host_cpu(), softnet_drops(), time.time()
            if self.args.profile:
                profiler = self.start_profiler(capture.pid, float(bye_t.max()) + TAIL_S)
            samples: dict[str, Any] = {}
            rss_max = 0
            timeline: list[list[float]] = []  # [s, frames, kernel drops, in progress, recorded, cpu s]
            next_tick = 0.0
            while sender.poll() is None:
                now = time.time() - t0
                rss = proc_status(capture.pid).get("VmRSS", 0)
                rss_max = max(rss_max, rss)
                if "mid" not in samples and now >= mid_t:
                    with contextlib.suppress(ControlError):
                        samples["mid_in_progress"] = len(self.status().get("calls_in_progress", []))
                    samples["mid"] = proc_status(capture.pid).get("VmRSS", 0)
                if "pre" not in samples and now >= pre_t:
                    samples["pre"] = rss
                if self.args.timeline and now >= next_tick:
                    next_tick = now + 1.0
                    self.sample(timeline, now, capture.pid, cpu0)
                time.sleep(0.2)
            sent = json.loads(sent_path.read_text())
            bye_wall = np.array(sent.pop("bye_wall_ns"), dtype=np.int64)
            end = bye_wall.max() / 1e9 + TAIL_S
            while time.time() < end:
                rss_max = max(rss_max, proc_status(capture.pid).get("VmRSS", 0))
                if self.args.timeline and time.time() - t0 >= next_tick:
                    next_tick = time.time() - t0 + 1.0
                    self.sample(timeline, time.time() - t0, capture.pid, cpu0)
                time.sleep(0.2)
            if timeline:
                self.out["timeline"] = timeline
            try:
                final = self.status(30.0)
            except ControlError as exc:
                final = {"error": str(exc)}
            cpu1, host1, soft1, wall1 = proc_cpu_s(capture.pid), host_cpu(), softnet_drops(), time.time()
            hwm = proc_status(capture.pid).get("VmHWM", 0)
            os.kill(capture.pid, signal.SIGTERM)
            t_term = time.monotonic()
            exit_code = capture.wait(timeout=900)
            shutdown_s = time.monotonic() - t_term
            if profiler is not None:
                profiler.wait(timeout=120)
        finally:
            for process in (profiler, sender, capture):
                if process is not None:
                    stop_process(process)
        target_pps = self.calls * 100
        self.out.update(
            {
                "target_pps": target_pps,
                "sent": sent["sent"],
                "sent_pps": sent["sent_pps"],
                "sent_pps_peak_1s": sent["sent_pps_peak"],
                "send_s": sent["send_s"],
                "lateness_ms_p50": sent["lateness_ms_p50"],
                "lateness_ms_p99": sent["lateness_ms_p99"],
                "lateness_ms_max": sent["lateness_ms_max"],
                "behind_ms_max": sent["behind_ms_max"],
                "sender_retries": sent["retries"],
                "kernel_drops": final.get("kernel_drops"),
                "softnet_drops": soft1 - soft0,
                "frames_captured": final.get("frames"),
                "status_error": final.get("error") or final.get("last_error") or None,
                "in_progress_at_end": len(final.get("calls_in_progress", [])),
                "capture_cpu_s": round(cpu1 - cpu0, 2),
                "cores_used": round((cpu1 - cpu0) / (wall1 - wall0), 3),
                "cpu_busy_pct": busy_pct(host0, host1),
                "rss_baseline_mib": round(rss0 / 1024, 1),
                "rss_mid_mib": round(samples.get("mid", 0) / 1024, 1),
                "mid_in_progress": samples.get("mid_in_progress"),
                "rss_pre_bye_mib": round(samples.get("pre", 0) / 1024, 1),
                "rss_max_mib": round(rss_max / 1024, 1),
                "peak_rss_mib": round(hwm / 1024, 1),
                "rss_per_call_kib": round((samples.get("mid", 0) - rss0) / self.calls, 1),
                "rss_per_call_pre_bye_kib": round((samples.get("pre", 0) - rss0) / self.calls, 1),
                "shutdown_s": round(shutdown_s, 1),
                "capture_exit": exit_code,
            }
        )
        self.check_catalogue(frames, bye_wall)
        self.judge()
        return self.out

    def sample(self, timeline: list[list[float]], now: float, pid: int, cpu0: float) -> None:
        """One timeline row: [s since the first frame, frames, kernel drops, in progress, recorded, cpu s]."""
        with contextlib.suppress(ControlError):
            st = self.status()
            if "frames" not in st:  # the capture's answer to a failed request: {"error": ...}
                timeline.append([round(now, 1), -1, -1, -1, -1, round(proc_cpu_s(pid) - cpu0, 2)])
                return
            row = [st["frames"], st["kernel_drops"], len(st["calls_in_progress"]), st["recorded"]]
            timeline.append([round(now, 1), *row, round(proc_cpu_s(pid) - cpu0, 2)])

    def ring_mib(self) -> int:
        text = (self.args.buffer or "128M").upper()
        factor = {"K": 1 / 1024, "M": 1, "G": 1024}.get(text[-1:], 1 / 2**20)
        return int(float(text.rstrip("KMG")) * factor)

    def start_profiler(self, pid: int, duration_s: float) -> subprocess.Popen[Any] | None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            print("bench_live: py-spy not found, no profile", file=sys.stderr)
            return None
        self.profile_path = self.work / f"profile-{self.calls}.txt"
        cmd = [spy, "record", "--pid", str(pid), "--duration", str(int(duration_s) + 1), "--rate", "50"]
        cmd += ["--nonblocking", "--idle", "--subprocesses", "--format", "raw"]
        cmd += ["--output", str(self.profile_path)]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def check_catalogue(self, frames: FrameSet, bye_wall: np.ndarray) -> None:
        db = sqlite3.connect(f"file:{Home(self.home).catalogue_path}?mode=ro", uri=True)
        try:
            rows = db.execute(
                "SELECT id, call_id, state, end_reason, recording_path, recording_seconds, imported_at "
                "FROM calls"
            ).fetchall()
        finally:
            db.close()
        expected = {call_id(self.calls, c): c for c in range(self.calls)}
        by_call = {r[1]: r for r in rows if r[1] in expected}
        recorded = {k: r for k, r in by_call.items() if r[4]}
        complete = {k: r for k, r in recorded.items() if r[2] == "completed" and r[3] == "bye"}
        latency = [
            (ns_from_iso(r[6]) - int(bye_wall[expected[k]])) / 1e6
            for k, r in complete.items()
            if bye_wall[expected[k]]
        ]
        self.out.update(
            {
                "calls_in_catalogue": len(by_call),
                "recorded": len(recorded),
                "complete": len(complete),
                "missing": self.calls - len(recorded),
                "incomplete_reasons": sorted(
                    {f"{r[2]}/{r[3]}" for k, r in recorded.items() if k not in complete}
                ),
                "latency_ms_p50": pct(latency, 50),
                "latency_ms_p99": pct(latency, 99),
                "latency_ms_max": round(max(latency), 1) if latency else None,
            }
        )
        picks = sorted({int(c) for c in np.linspace(0, self.calls - 1, self.args.sample)})
        corr: list[float] = []
        low: list[list[Any]] = []
        matched: list[float] = []
        steps: list[int] = []
        lost: list[int] = []
        unexported = 0
        env = {**os.environ, "CALLREC_PASSPHRASE": PASSPHRASE, "CALLREC_KEY": str(self.keys[1])}
        for group in (picks[i : i + 2] for i in range(0, len(picks), 2)):  # two exports at a time
            jobs = []
            for c in group:
                row = recorded.get(call_id(self.calls, c))
                if row is None:
                    unexported += 1
                    continue
                wav = self.work / f"export-{self.calls}-{c}.wav"
                cmd = callrec(self.home, "calls", "export", str(row[0]), "--out", str(wav))
                jobs.append(
                    (
                        c,
                        wav,
                        subprocess.Popen(
                            cmd,
                            cwd=ROOT,
                            env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE,
                        ),
                    )
                )
            for c, wav, job in jobs:
                _, err = job.communicate(timeout=300)
                if job.returncode != 0 or not wav.exists():
                    print(f"bench_live: export of call {c} failed: {err.decode()[-500:]}", file=sys.stderr)
                    unexported += 1
                    continue
                with wave.open(str(wav), "rb") as w:
                    samples = np.frombuffer(w.readframes(w.getnframes()), "<i2").reshape(-1, w.getnchannels())
                wav.unlink()
                for column, backward in ((0, False), (1, True)):
                    sent = ulaw_to_linear(frames.payload(c, backward))
                    channel = samples[:, min(column, samples.shape[1] - 1)]
                    value = correlation(channel, sent)
                    share, moved = packet_match(channel, sent)
                    # a 2 ms drift step (samples inserted or removed) alters the one packet it falls in
                    missing = max(0, round((1 - share) * (len(sent) // PACKET)) - moved)
                    corr.append(value)
                    matched.append(share)
                    steps.append(moved)
                    lost.append(missing)
                    if value < self.args.min_corr or missing:
                        name = "callee->caller" if backward else "caller->callee"
                        low.append([c, name, round(value, 4), round(share, 5), moved, missing])
        self.out["corr_checked"] = len(corr) // 2
        self.out["corr_unchecked"] = unexported
        self.out["corr_min"] = round(min(corr), 4) if corr else None
        self.out["packets_matched_min"] = round(min(matched), 5) if matched else None
        self.out["offset_steps_max"] = max(steps) if steps else None
        self.out["packets_missing_max"] = max(lost) if lost else None  # not explained by a drift step
        self.out["corr_low"] = low[:6]  # [call, direction, correlation, matched, offset steps, missing]

    def judge(self) -> None:
        o, failures = self.out, []
        if o["kernel_drops"] != 0:
            failures.append(f"kernel dropped {o['kernel_drops']} frames")
        if o["softnet_drops"]:
            failures.append(f"{o['softnet_drops']} frames dropped from the CPU backlog")
        if o["complete"] != self.calls:
            failures.append(f"{self.calls - o['complete']} calls not recorded complete")
        if o["packets_missing_max"] is None or o["packets_missing_max"] > 0 or o["corr_unchecked"]:
            failures.append(
                f"sampled audio: up to {o['packets_missing_max']} packets missing from a channel "
                f"({o['corr_unchecked']} sampled calls not checked)"
            )
        if self.args.strict_corr and (o["corr_min"] is None or o["corr_min"] < self.args.min_corr):
            failures.append(f"whole-call correlation {o['corr_min']} < {self.args.min_corr}")
        if o["sent"] != o["frames"]:
            failures.append(f"sender sent {o['sent']} of {o['frames']} frames")
        o["pass"] = not failures
        o["failures"] = failures


# -- profile ------------------------------------------------------------------------------------------


# -- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", default="250,500,1000,2000", help="concurrent calls per step (comma-separated)"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="talk time per call")
    parser.add_argument(
        "--spread", type=float, default=4.0, help="calls start (and so end) within this many seconds"
    )
    parser.add_argument("--quick", action="store_true", help="250 and 1000 calls, 20 s")
    parser.add_argument("--sample", type=int, default=10, help="recordings correlated per step")
    parser.add_argument("--min-corr", type=float, default=0.95, help="whole-call correlation (--strict-corr)")
    parser.add_argument(
        "--strict-corr",
        action="store_true",
        help="also fail on whole-call correlation (the recorder's 2 ms drift steps decorrelate noise)",
    )
    parser.add_argument(
        "--journal", action=argparse.BooleanOptionalAction, default=True, help="capture's journal"
    )
    parser.add_argument("--buffer", help="capture --buffer (ring size; default the capture's own)")
    parser.add_argument("--savers", type=int, help="capture --savers (default the capture's own)")
    parser.add_argument("--profile", action="store_true", help="py-spy the capture (perturbs the figures)")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="status every second: [s, frames, drops, in progress, recorded, cpu]",
    )
    parser.add_argument("--keep", action="store_true", help="keep the homes and logs (printed)")
    args = parser.parse_args()
    if args.quick:
        args.calls, args.seconds = "250,1000", 20.0
    steps = [int(x) for x in args.calls.split(",") if x.strip()]
    if os.geteuid() != 0:
        print("bench_live: skipped, needs root (network namespaces, AF_PACKET sockets)", file=sys.stderr)
        print(json.dumps({"bench": "live", "skipped": "needs root"}))
        return
    if not shutil.which("ip"):
        sys.exit("bench_live: needs iproute2 (ip)")
    work = Path(tempfile.mkdtemp(prefix="crb-live-"))
    lab = Lab()
    passed: list[int] = []
    memory: dict[int, float] = {}  # calls -> RSS (KiB) just before the first BYE, all calls talking
    try:
        lab.open()
        keys = make_keys(work)
        for calls in steps:
            step = Step(args, lab, work, keys, calls)
            result = step.run()
            if args.profile and getattr(step, "profile_path", None) and step.profile_path.exists():
                result["profile"] = hot_spots(step.profile_path)
            print(json.dumps(result), flush=True)
            if result["pass"]:  # every call in progress before the first BYE
                memory[calls] = result["rss_pre_bye_mib"] * 1024
            if result["pass"]:
                passed.append(calls)
    except SetupError as exc:
        sys.exit(f"bench_live: set-up failed: {exc}")
    finally:
        lab.close()
        if args.keep:
            print(f"bench_live: kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    summary = {
        "bench": "live_summary",
        "seconds": args.seconds,
        "calls_tried": steps,
        "calls_passed": passed,
        "largest_passing": max(passed) if passed else None,
        "spread_s": args.spread,
        "journal": args.journal,
    }
    if len(memory) >= 2:  # what one more call costs, the fixed parts (ring, code, buffers) left out
        (n0, m0), (n1, m1) = sorted(memory.items())[-2:]
        summary["rss_per_call_marginal_kib"] = round((m1 - m0) / (n1 - n0), 1)
        summary["rss_marginal_between"] = [n0, n1]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
