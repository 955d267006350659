"""The S3 object store (store.objects.s3) on a local Ceph RGW: upload, download MB/s, range-read latency.

Uses the gateway named by $S3_ENDPOINT (with the AWS_* credentials), else starts one with
../shared/services/s3-up.sh into a temp directory and stops it at the end. Prints one JSON line.

    .venv/bin/python bench/bench_s3.py --mib 64 --part-mib 8 --reads 200
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from callrec.store.objects.s3 import S3RecordingStore
from callrec.store.objects.settings import StorageSettings

SERVICES = Path(__file__).resolve().parents[1].parent / "shared" / "services"


def start_gateway(directory: str) -> None:
    done = subprocess.run(
        ["bash", str(SERVICES / "s3-up.sh"), directory],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            os.environ.update(word.split("=", 1) for word in words[1:] if "=" in word)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="size of the recording uploaded (MiB)")
    parser.add_argument("--part-mib", type=int, default=8, help="multipart part size (MiB)")
    parser.add_argument("--reads", type=int, default=200, help="random 4 KiB range reads timed")
    args = parser.parse_args()
    started_here = None
    if "S3_ENDPOINT" not in os.environ:
        started_here = tempfile.mkdtemp(prefix="bench-s3-")
        start_gateway(started_here)
    try:
        print(json.dumps(run(args.mib, args.part_mib, args.reads)))
    finally:
        if started_here is not None:
            subprocess.run(["bash", str(SERVICES / "s3-down.sh"), started_here], timeout=120, check=False)


def run(mib: int, part_mib: int, reads: int) -> dict[str, object]:
    import boto3

    endpoint = os.environ["S3_ENDPOINT"]
    bucket = f"bench-{secrets.token_hex(4)}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    settings = StorageSettings(
        url=f"s3://{bucket}/bench", endpoint_url=endpoint, object_lock="compliance", part_size=part_mib << 20
    )
    store = S3RecordingStore(settings)
    block = os.urandom(1 << 20)

    def chunks() -> Iterator[bytes]:
        for _ in range(mib):
            yield block

    name = "recordings/bench.wav.sealed"
    t0 = time.perf_counter()
    store.write(name, chunks(), retain_until_ns=time.time_ns() + 3600 * 1_000_000_000)
    upload_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    with store.open(name) as handle:
        while handle.read(1 << 20):
            pass
    ranged_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    store.checksum(name)
    streamed_s = time.perf_counter() - t0
    rng = random.Random(17)
    latencies = []
    with store.open(name) as handle:
        for _ in range(reads):
            handle.seek(rng.randrange(0, (mib << 20) - 4096))
            t0 = time.perf_counter()
            handle.read(4096)
            latencies.append((time.perf_counter() - t0) * 1000)
    latencies.sort()
    return {
        "bench": "s3",
        "mib": mib,
        "part_mib": part_mib,
        "upload_mb_s": round(mib / upload_s, 1),
        "download_range_1mib_mb_s": round(mib / ranged_s, 1),
        "download_stream_mb_s": round(mib / streamed_s, 1),
        "range_reads": reads,
        "range_read_ms_p50": round(statistics.median(latencies), 2),
        "range_read_ms_p99": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
    }


if __name__ == "__main__":
    main()
