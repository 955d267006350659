"""Capture-file reader and frame decoder throughput.

Writes a pcap of 500k 214-byte Ethernet/IPv4/UDP frames (RTP-sized: 172-byte payload) to a temp
directory, then times ``read_batches`` alone and ``read_batches`` + ``FrameDecoder.decode``
(best of ``--repeat`` runs) and prints one JSON line::

    .venv/bin/python bench/bench_reader.py
    {"frames": 500000, "frame_bytes": 214, "reader_pps": ..., "frames_pps": ...}
"""

from __future__ import annotations

import argparse
import json
import struct
import tempfile
import time
from pathlib import Path

import numpy as np

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.sources.capture_file import read_batches

FRAME_BYTES = 214
PAYLOAD_BYTES = FRAME_BYTES - 14 - 20 - 8


def write_pcap(path: Path, count: int) -> None:
    """``count`` records: one template frame, with timestamps, IP ids and source ports varied."""
    eth = bytes.fromhex("001122334455 66778899aabb 0800")
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0xB8,
        20 + 8 + PAYLOAD_BYTES,
        0,
        0x4000,
        64,
        17,
        0,
        bytes([10, 0, 0, 1]),
        bytes([10, 0, 0, 2]),
    )
    udp = struct.pack("!HHHH", 40000, 20000, 8 + PAYLOAD_BYTES, 0)
    rtp = bytes([0x80, 0x08]) + bytes(PAYLOAD_BYTES - 2)
    record = np.frombuffer(
        struct.pack("<IIII", 0, 0, FRAME_BYTES, FRAME_BYTES) + eth + ip + udp + rtp, dtype=np.uint8
    )
    rows = np.tile(record, (count, 1))
    i = np.arange(count, dtype=np.int64)
    ts_us = 1_700_000_000 * 1_000_000 + i * 20_000 // 8  # 8 streams of 50 packets/s
    rows[:, 0:4] = (ts_us // 1_000_000).astype("<u4").view(np.uint8).reshape(-1, 4)
    rows[:, 4:8] = (ts_us % 1_000_000).astype("<u4").view(np.uint8).reshape(-1, 4)
    rows[:, 16 + 18 : 16 + 20] = (i & 0xFFFF).astype(">u2").view(np.uint8).reshape(-1, 2)
    rows[:, 16 + 34 : 16 + 36] = (40000 + 2 * (i % 8)).astype(">u2").view(np.uint8).reshape(-1, 2)
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    path.write_bytes(header + rows.tobytes())


def time_reader(path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    frames = 0
    for batch in read_batches(path):
        frames += len(batch)
    return frames, time.perf_counter() - start


def time_decode(path: Path) -> tuple[int, float]:
    decoder = FrameDecoder()
    start = time.perf_counter()
    datagrams = 0
    for batch in read_batches(path):
        datagrams += len(decoder.decode(batch))
    return datagrams, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.pcap"
        write_pcap(path, args.frames)
        read_best = min(time_reader(path)[1] for _ in range(args.repeat))
        runs = [time_decode(path) for _ in range(args.repeat)]
        assert all(n == args.frames for n, _ in runs), "every frame must decode to a datagram"
        decode_best = min(t for _, t in runs)
    print(
        json.dumps(
            {
                "frames": args.frames,
                "frame_bytes": FRAME_BYTES,
                "reader_pps": round(args.frames / read_best),
                "frames_pps": round(args.frames / decode_best),
            }
        )
    )


if __name__ == "__main__":
    main()
