"""What bench_live.py measures, apart from running the step: a process's memory and CPU (/proc), the
host's per-core busy share and softnet drops, percentiles, and how a recording compares with the audio
that was sent (whole-call correlation, packet-by-packet bit-exact match)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PACKET = 160  # samples in a 20 ms G.711 packet


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process in KiB (empty once it is gone)."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_cpu() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each core."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            out.append((sum(v[:8]) - idle, sum(v[:8])))
    return out


def busy_pct(before: list[tuple[int, int]], after: list[tuple[int, int]]) -> list[float]:
    return [
        round(100 * (b1 - b0) / max(t1 - t0, 1), 1) for (b0, t0), (b1, t1) in zip(before, after, strict=True)
    ]


def softnet_drops() -> int:
    """Frames the kernel dropped from full per-CPU backlogs (/proc/net/softnet_stat, column 2)."""
    lines = Path("/proc/net/softnet_stat").read_text().split("\n")
    return sum(int(line.split()[1], 16) for line in lines if line.strip())


def code_digest() -> str:
    """A short digest of the product's sources: which code a step measured (the tree changes)."""
    h = hashlib.sha256()
    for package in ("capture", "recorder", "store", "decode", "cli"):
        for path in sorted((ROOT / package).rglob("*.py")):
            h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:12]


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def ns_from_iso(text: str) -> int:
    when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def correlation(recorded: np.ndarray, sent: np.ndarray, max_lag: int = 16000) -> float:
    """Normalised correlation of ``sent`` and ``recorded`` at the best lag within +-max_lag samples."""
    x = recorded.astype(np.float64)
    y = sent.astype(np.float64)
    if len(x) < 100 or len(y) < 100:
        return 0.0
    size = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    r = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(y, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([r[: max_lag + 1], r[size - max_lag :]])
    lag = int(lags[int(np.argmax(values))])
    start, stop = max(0, -lag), min(len(y), len(x) - lag)
    if stop - start < 100:
        return 0.0
    a, b = x[start + lag : stop + lag], y[start:stop]
    den = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b)) / den if den > 0 else 0.0


def packet_match(recorded: np.ndarray, sent: np.ndarray, max_shift: int = 800) -> tuple[float, int]:
    """Share of the sent 20 ms packets found bit-exact in ``recorded``, in order, and how often the
    offset between them changed (the recorder's drift steps, 2 ms each, or re-anchoring after a gap).

    Follows the offset packet by packet: a packet not at the current offset is looked for within
    +-``max_shift`` samples of it."""
    x = recorded.astype(np.int16)
    n = len(sent) // PACKET
    packets = sent[: n * PACKET].astype(np.int16).reshape(n, PACKET)
    windows = np.lib.stride_tricks.sliding_window_view(x, PACKET) if len(x) >= PACKET else None
    if windows is None:
        return 0.0, 0
    offset, matched, steps = None, 0, 0
    for k in range(n):
        at = k * PACKET + (offset or 0)
        if (
            offset is not None
            and 0 <= at <= len(x) - PACKET
            and np.array_equal(x[at : at + PACKET], packets[k])
        ):
            matched += 1
            continue
        lo = max(0, at - (max_shift if offset is not None else len(x)))
        hi = min(len(windows), at + max_shift + 1)
        if lo >= hi:
            continue
        hits = np.flatnonzero((windows[lo:hi] == packets[k]).all(axis=1))
        if hits.size:
            found = lo + int(hits[np.argmin(np.abs(lo + hits - at))]) - k * PACKET
            steps += offset is not None and found != offset
            offset = found
            matched += 1
    return matched / max(n, 1), steps


# waits py-spy records with --idle: not where the CPU goes
IDLE = ("Condition.wait", "select (selectors", "_recv (multiprocessing", "_send (multiprocessing", "poll (")


def hot_spots(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive shares per function from py-spy's raw (collapsed) output, per process (the
    capture, its savers), waits left out."""
    processes: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if any(wait in frames[-1] for wait in IDLE):
            continue
        heads = [n for n, f in enumerate(frames) if f.startswith("process ")]
        name = ("saver" if "spawn_main" in frames[heads[-1]] else "capture") if heads else "capture"
        frames = frames[heads[-1] + 1 :] if heads else frames
        entry = processes.setdefault(name, {"samples": 0, "own": {}, "inclusive": {}})
        count = int(count_text)
        entry["samples"] += count
        entry["own"][frames[-1]] = entry["own"].get(frames[-1], 0) + count
        for frame in set(frames):
            entry["inclusive"][frame] = entry["inclusive"].get(frame, 0) + count
    out: dict[str, Any] = {}
    for name, entry in processes.items():
        total = max(entry["samples"], 1)
        own = sorted(entry["own"].items(), key=lambda kv: -kv[1])[:top]
        inclusive = sorted(entry["inclusive"].items(), key=lambda kv: -kv[1])[: top * 2]
        out[name] = {
            "samples": entry["samples"],
            "self_pct": [[f, round(100 * n / total, 1)] for f, n in own],
            "inclusive_pct": [[f, round(100 * n / total, 1)] for f, n in inclusive],
        }
    return out
