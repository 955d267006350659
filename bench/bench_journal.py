"""Crash journal benchmark: append (gather), seal + write + fdatasync, and replay of 214-byte frames.

Prints one JSON line. Usage (from the repository root):

    .venv/bin/python bench/bench_journal.py [--seconds 10] [--rate 200000] [--dir /var/lib/callrec]

Synthetic capture: ``--seconds`` of capture time at ``--rate`` frames/s of 214 bytes (G.711 RTP over
Ethernet), in batches of 4,000 frames laid out as a TPACKET_V3 block is (a 48-byte header before each
frame, so the journal has to gather them). The journal is flushed once per second of capture, as the
daemon does, and rotates every 10 s of capture time. Figures are as fast as possible, one core:

* ``append_us_per_frame``: :meth:`Journal.append` (copying frames out of the batch buffers);
* ``flush_us_per_frame``: :meth:`Journal.flush` (serialize, AES-256-GCM, write, fdatasync), and
  ``flush_ms_max``, the longest flush: how long the capture loop stalls once a second;
* ``frames_per_s`` / ``mb_per_s``: both together (MB = 10^6 bytes of frames), and the share of one
  core the journal takes at ``--rate`` (``core_share_at_rate``);
* ``replay_frames_per_s``: :func:`replay` of the whole journal back into batches;
* ``disk_bytes_per_frame``: journal bytes on disk per frame (214 + 14 of columns + record overhead).

The journal directory defaults to a temporary directory (``--dir`` to measure a real disk: /tmp may be
tmpfs, where fdatasync costs nothing); it is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import numpy as np  # noqa: E402

from callrec.capture.model.packets import BUFFER_PADDING, PacketBatch  # noqa: E402
from callrec.recorder.journal.segments import Journal, replay  # noqa: E402

FRAME_BYTES = 214
HEADER_BYTES = 48  # sizeof(struct tpacket3_hdr)
BATCH_FRAMES = 4000
MB = 1_000_000
NS = 1_000_000_000


def make_batches(frames: int, rate: int) -> list[PacketBatch]:
    """``frames`` frames at ``rate`` per second in ring-block-like batches (random bytes each)."""
    out = []
    stride = HEADER_BYTES + FRAME_BYTES
    for first in range(0, frames, BATCH_FRAMES):
        n = min(BATCH_FRAMES, frames - first)
        buffer = os.urandom(n * stride) + bytes(BUFFER_PADDING)
        numbers = np.arange(first, first + n, dtype=np.int64)
        out.append(
            PacketBatch(
                buffer=buffer,
                offsets=np.arange(n, dtype=np.int64) * stride + HEADER_BYTES,
                caplens=np.full(n, FRAME_BYTES, dtype=np.int64),
                ts_ns=1_800_000_000 * NS + numbers * NS // rate,
                linktypes=np.ones(n, dtype=np.int64),
                first_number=first + 1,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="seconds of capture (default 10)")
    parser.add_argument("--rate", type=int, default=200_000, help="frames per second of capture")
    parser.add_argument("--dir", default=None, help="where to put the journal (default: a temp dir)")
    args = parser.parse_args()

    frames = args.seconds * args.rate
    batches = make_batches(frames, args.rate)
    work = Path(tempfile.mkdtemp(prefix="bench-journal-", dir=args.dir))
    try:
        key = os.urandom(32)
        journal = Journal(work / "journal", key, budget_bytes=1 << 40)
        append_s = flush_s = flush_max = 0.0
        next_flush = int(batches[0].ts_ns[0]) + NS
        for batch in batches:
            t0 = time.perf_counter()
            journal.append(batch)
            t1 = time.perf_counter()
            append_s += t1 - t0
            if int(batch.ts_ns[-1]) >= next_flush:
                journal.flush()
                flush_max = max(flush_max, time.perf_counter() - t1)
                flush_s += time.perf_counter() - t1
                next_flush += NS
        t0 = time.perf_counter()
        journal.close()
        flush_s += time.perf_counter() - t0
        stats = journal.stats()
        assert stats.frames_written == frames and stats.dropped_chunks == 0, stats

        t0 = time.perf_counter()
        replayed = sum(len(b) for b in replay(work / "journal", key))
        replay_s = time.perf_counter() - t0
        assert replayed == frames
    finally:
        shutil.rmtree(work, ignore_errors=True)

    total_s = append_s + flush_s
    print(
        json.dumps(
            {
                "bench": "journal",
                "frame_bytes": FRAME_BYTES,
                "frames": frames,
                "rate_fps": args.rate,
                "chunks": stats.chunks_written,
                "segments": stats.segments,
                "append_us_per_frame": round(append_s / frames * 1e6, 3),
                "flush_us_per_frame": round(flush_s / frames * 1e6, 3),
                "flush_ms_max": round(flush_max * 1e3, 1),
                "frames_per_s": round(frames / total_s),
                "mb_per_s": round(frames * FRAME_BYTES / MB / total_s, 1),
                "core_share_at_rate": round(total_s / args.seconds, 3),
                "replay_frames_per_s": round(frames / replay_s),
                "disk_bytes_per_frame": round(stats.bytes_used / frames, 2),
                "dir": str(args.dir or tempfile.gettempdir()),
            }
        )
    )


if __name__ == "__main__":
    main()
