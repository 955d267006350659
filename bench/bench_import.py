"""End-to-end import benchmark: `callrec import` vs `tshark -q -z rtp,streams` on the same capture.

Generates (once, cached in bench/out/) a synthetic capture of N concurrent G.711 calls, imports it
into a fresh home with the installed `callrec` (one process, pinned to one core when taskset is
available), and runs tshark's RTP stream analysis on the same file. Prints one JSON line.

    python bench/bench_import.py --calls 100 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_synthetic import write  # noqa: E402


def _pinned(cmd: list[str]) -> list[str]:
    return ["taskset", "-c", "0", *cmd] if shutil.which("taskset") else cmd


def _run(cmd: list[str]) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user+sys) and peak RSS (MiB) of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-tshark", action="store_true")
    args = parser.parse_args()
    out = HERE / "out"
    capture = out / f"synthetic_{args.calls}x{args.seconds:g}s.pcap"
    if not capture.exists():
        write(capture, args.calls, args.seconds, spread=2.0)
    # packets in the file: 16-byte record header + frame each
    packets = (
        int(
            subprocess.run(["capinfos", "-Mc", str(capture)], capture_output=True, text=True).stdout.split()[
                -1
            ]
        )
        if shutil.which("capinfos")
        else None
    )
    callrec = shutil.which("callrec") or str(Path(sys.executable).parent / "callrec")
    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as safe:
        env = {**os.environ, "CALLREC_PASSPHRASE": "bench passphrase"}
        keys = [callrec, "--home", home, "keys", "init", "--private-key", str(Path(safe) / "bench.key")]
        subprocess.run(keys, check=True, stdout=subprocess.DEVNULL, env=env)
        wall, cpu, rss = _run(_pinned([callrec, "--home", home, "import", str(capture)]))
        wavs = sum(1 for _ in Path(home).rglob("*.wav.sealed"))
    if packets is None:
        packets = args.calls * (int(args.seconds * 50) * 2 + 7)
    result = {
        "bench": "import",
        "calls": args.calls,
        "seconds": args.seconds,
        "packets": packets,
        "file_mib": round(capture.stat().st_size / 2**20, 1),
        "callrec_wall_s": round(wall, 2),
        "callrec_cpu_s": round(cpu, 2),
        "callrec_pps": round(packets / wall),
        "callrec_peak_rss_mib": round(rss, 1),
        "recordings": wavs,
    }
    if not args.no_tshark and shutil.which("tshark"):
        twall, tcpu, _ = _run(_pinned(["tshark", "-q", "-r", str(capture), "-z", "rtp,streams"]))
        result.update(
            tshark_wall_s=round(twall, 2), tshark_pps=round(packets / twall), ratio=round(twall / wall, 1)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
