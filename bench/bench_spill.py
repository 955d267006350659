"""Spill benchmark: sealed spill throughput, and the memory per call in progress with and without spill.

Prints one JSON line. Usage (from the repository root):

    .venv/bin/python bench/bench_spill.py [--minutes 5] [--calls 10] [--dir /var/lib/callrec]

* ``write_mb_per_s`` / ``read_mb_per_s``: :class:`recorder.saving.sealed_spill.SealedSpill` writing
  (serialise,
  AES-256-GCM, pwrite) and reading back (pread, verify, deserialise) chunks of 30 s of one G.711 leg
  (1,500 packets, 240 kB of payload); MB = 10^6 payload bytes. ``disk_bytes_per_payload_byte``: file
  bytes per payload byte (columns, record head, nonce, tag).
* A synthetic capture (``bench/make_synthetic.py``: ``--calls`` concurrent G.711 calls of
  ``--minutes``) is fed to the tracker in the file's batches, once without spill and once spilling as
  the live loop does: :meth:`CallTracker.spill_pending` once per second of capture time; batches of
  about half a second of capture.
  ``ram_per_call_*``: the peak of :meth:`CallTracker.memory_bytes` (payload held for calls in progress)
  divided by the number of calls, and at the end (just before the BYEs); ``tracker_s_*``: the feed time
  of each run (the cost of spilling, including the per-second split of the pending log).

The spill directory defaults to a temporary directory (``--dir`` for a real disk); deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402
from make_synthetic import write as write_synthetic  # noqa: E402

from callrec.capture.frames.decoder import FrameDecoder  # noqa: E402
from callrec.capture.model.media import RtpPackets  # noqa: E402
from callrec.capture.sources.capture_file import read_batches  # noqa: E402
from callrec.capture.tracking.tracker import CallTracker  # noqa: E402
from callrec.recorder.saving.sealed_spill import SealedSpill  # noqa: E402

MB = 1_000_000
NS = 1_000_000_000


def g711_chunk(t0_ns: int, n: int, rng: np.random.Generator) -> RtpPackets:
    idx = np.arange(n, dtype=np.int64)
    return RtpPackets(
        t0_ns + idx * 20_000_000,
        idx % 65536,
        idx * 160,
        np.full(n, 0x12345678, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.bool_),
        rng.integers(0, 256, n * 160, dtype=np.uint8),
        idx * 160,
        np.full(n, 160, dtype=np.int64),
    )


def throughput(directory: Path, total_mb: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    chunks = [g711_chunk(1_800_000_000 * NS + k * 30 * NS, 1500, rng) for k in range(8)]
    per_chunk = int(chunks[0].payload.shape[0])
    count = max(1, total_mb * MB // per_chunk)
    sink = SealedSpill(directory / "throughput")
    start = time.perf_counter()
    refs = [sink.write(f"leg-{k % 64}", chunks[k % len(chunks)]) for k in range(count)]
    wrote = time.perf_counter() - start
    disk = sink.stats().bytes_on_disk
    start = time.perf_counter()
    for ref in refs:
        sink.read(ref)
    read = time.perf_counter() - start
    sink.clear()
    payload = count * per_chunk
    return {
        "write_mb_per_s": round(payload / wrote / MB, 1),
        "read_mb_per_s": round(payload / read / MB, 1),
        "disk_bytes_per_payload_byte": round(disk / payload, 3),
    }


def run_tracker(pcap: Path, calls: int, spill_dir: Path | None) -> dict[str, float]:
    frames, tracker = FrameDecoder(), CallTracker()
    sink = SealedSpill(spill_dir) if spill_dir is not None else None
    peak = last = 0
    next_spill: int | None = None
    start = time.perf_counter()
    finished = 0
    batch_bytes = max(64 * 1024, calls * 11_000)  # about half a second of capture, as a live loop sees it
    for batch in read_batches(pcap, batch_bytes=batch_bytes):
        if not len(batch):
            continue
        finished += len(tracker.feed(frames.decode(batch)))
        now = int(batch.ts_ns[-1])
        if sink is not None and (next_spill is None or now >= next_spill):
            tracker.spill_pending(sink)
            next_spill = now + NS
        if tracker.calls_in_progress == calls:
            last = tracker.memory_bytes()
            peak = max(peak, last)
    finished += len(tracker.flush())
    elapsed = time.perf_counter() - start
    label = "with_spill" if sink is not None else "without_spill"
    out = {
        f"ram_per_call_peak_bytes_{label}": peak // calls,
        f"ram_per_call_end_bytes_{label}": last // calls,
        f"tracker_s_{label}": round(elapsed, 2),
    }
    if sink is not None:
        out["spilled_packets"] = tracker.counters["spilled_packets"]
        out["spill_chunks_written"] = sink.stats().chunks_written
    out[f"calls_{label}"] = finished
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each call (default 5)")
    parser.add_argument("--calls", type=int, default=10, help="concurrent calls (default 10)")
    parser.add_argument("--throughput-mb", type=int, default=200, help="payload MB for the throughput run")
    parser.add_argument("--dir", default=None, help="where to put the spill (default: a temp dir)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-spill-", dir=args.dir))
    try:
        result: dict[str, object] = {"minutes": args.minutes, "calls": args.calls}
        result.update(throughput(work, args.throughput_mb))
        pcap = work / "synthetic.pcap"
        write_synthetic(pcap, args.calls, args.minutes * 60, spread=2.0)
        result.update(run_tracker(pcap, args.calls, None))
        result.update(run_tracker(pcap, args.calls, work / "calls"))
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
