"""Run every benchmark and write bench/results.md (one machine-readable line per benchmark).

make bench            # or: python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(args: list[str]) -> dict[str, object]:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_lines(args: list[str]) -> list[dict[str, object]]:
    out = subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {system}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the reader, the 100-call import and G.711")
    args = parser.parse_args()
    results = [
        run(["bench/bench_reader.py"]),
        run(["bench/bench_import.py", "--calls", "100", "--seconds", "60"]),
    ]
    results += run_lines(["bench/bench_render.py", "--codec", "all" if not args.quick else "g711"])
    if not args.quick:
        results.append(run(["bench/bench_import.py", "--calls", "1000", "--seconds", "60"]))
        results.append(run(["bench/bench_seal.py"]))
        results.append(run(["bench/bench_seal_import.py", "--calls", "100", "--seconds", "60"]))
        results.append(run(["bench/bench_catalogue.py", "--rows", "1000000"]))
        if os.geteuid() == 0:  # the live source needs network namespaces and a packet socket
            results.append(run(["bench/bench_live_source.py", "--rate", "200000", "--seconds", "5"]))
            results += run_lines(["bench/bench_live.py"])  # callrec capture with N concurrent calls
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmark results",
        "",
        f"Run {stamp} on {machine()} by `make bench` (`bench/run_all.py`). Import runs are pinned to",
        "one core with `taskset -c 0`; tshark runs on the same file in the same run.",
        "",
        "```",
        *(json.dumps(r) for r in results),
        "```",
    ]
    (HERE / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
