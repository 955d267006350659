"""What sealing costs in an import: the same import, in one process, with the real sealer and with a
pass-through in its place (same files written, same catalogue rows), alternated.

    .venv/bin/python bench/bench_seal_import.py [--calls 100] [--seconds 60] [--runs 6]

Prints one JSON line: medians of both and sealing's share of the sealed import's wall time. It pins
itself to core 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from make_synthetic import write  # noqa: E402

import callrec.store.crypto.vault as vault  # noqa: E402
from callrec.recorder.pipeline import import_captures  # noqa: E402
from callrec.store.crypto.keys import KeyDirectory, RecordingPublicKey  # noqa: E402
from callrec.store.crypto.seal import Sealer  # noqa: E402
from callrec.store.home import Home  # noqa: E402


class PassThrough:
    """The Sealer's interface, writing the plain bytes: the baseline without encryption."""

    def __init__(self, key: RecordingPublicKey, recording_id: bytes, chunk_size: int = 0) -> None:
        self.key_fingerprint = key.fingerprint
        self.wrapped_key = bytes(80)
        self.plaintext_sha256 = "0" * 64
        self.plaintext_bytes = 0

    def seal(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        yield from chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--chunk-kib", type=int, help="sealed chunk size (default: the vault's)")
    args = parser.parse_args()
    if args.chunk_kib:
        vault.RECORDING_CHUNK = args.chunk_kib * 1024
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core, as the import benchmark
    capture = HERE / "out" / f"synthetic_{args.calls}x{args.seconds:g}s.pcap"
    if not capture.exists():
        capture.parent.mkdir(exist_ok=True)
        write(capture, args.calls, args.seconds, spread=2.0)
    with tempfile.TemporaryDirectory() as keys_root:
        KeyDirectory(Path(keys_root) / "keys").init(Path(keys_root) / "k.key", b"bench", time.time_ns())
        times: dict[str, list[float]] = {"plain": [], "sealed": []}
        for _ in range(args.runs):
            for mode in ("plain", "sealed"):
                vault.Sealer = PassThrough if mode == "plain" else Sealer  # type: ignore[misc, assignment]
                home = Path(tempfile.mkdtemp())
                shutil.copytree(Path(keys_root) / "keys", home / "keys")
                t0 = time.perf_counter()
                import_captures([capture], Home(home))
                times[mode].append(time.perf_counter() - t0)
                shutil.rmtree(home)
    plain, sealed = statistics.median(times["plain"]), statistics.median(times["sealed"])
    print(
        json.dumps(
            {
                "bench": "seal_import",
                "calls": args.calls,
                "seconds": args.seconds,
                "runs": args.runs,
                "chunk_kib": vault.RECORDING_CHUNK // 1024,
                "plain_s": round(plain, 3),
                "sealed_s": round(sealed, 3),
                "sealing_ms_per_recording": round((sealed - plain) / args.calls * 1000, 2),
                "sealing_share_pct": round((sealed - plain) / sealed * 100, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
