"""Sealing benchmark: chunked AES-256-GCM throughput, HPKE key wraps, and small recordings.

Prints one JSON line. Usage (from the repository root):

    .venv/bin/python bench/bench_seal.py [--recordings 1000] [--repeat 3]

* ``seal_mb_s_<size>_<chunk>`` / ``open_mb_s_<size>_<chunk>``: a 10 MB and a 100 MB stream (random
  bytes, fed in 1 MiB pieces as a WAV writer would) sealed and opened in memory, at 64 KiB and
  1 MiB chunks; MB is 10^6 bytes, best of ``--repeat`` runs.
* ``hpke_wraps_per_s`` / ``hpke_unwraps_per_s``: data keys wrapped to / opened with an X25519 key.
* ``recordings``: ``--recordings`` files of 1.92 MB (60 s of 8 kHz 16-bit stereo) written one by
  one as the recorder does, unsealed (plain writes) and sealed (a new Sealer, so a new data key and
  HPKE wrap, per file) at the default 1 MiB and at 64 KiB chunks. Without ``--fsync`` the writes
  end in the page cache, so the overhead is the pure CPU cost of sealing against a memcpy; with
  it, against a durable write. Each file is deleted after it is written to bound the disk used.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

from callrec.store.crypto.keys import RecordingPublicKey, fingerprint  # noqa: E402
from callrec.store.crypto.seal import DEFAULT_CHUNK_SIZE, SUITE, Sealer, open_sealed  # noqa: E402

MB = 1_000_000
PIECE = 1 << 20
RECORDING_BYTES = 60 * 8000 * 2 * 2  # 60 s, 8 kHz, 16-bit, stereo = 1.92 MB


def best(action: Callable[[], object], repeat: int) -> float:
    """Shortest wall time of ``action`` in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        action()
        times.append(time.perf_counter() - t0)
    return min(times)


def pieces(data: memoryview, size: int = PIECE) -> Iterator[memoryview]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def seal_dropping(key: RecordingPublicKey, rid: bytes, data: memoryview, chunk: int) -> None:
    """Seal ``data``, dropping the sealed pieces as they come, as when they go to a file: keeping
    100 MB of fresh output alive would measure page faults, not sealing."""
    deque(Sealer(key, rid, chunk_size=chunk).seal(pieces(data)), maxlen=0)


def open_dropping(sealed: bytes, ring: dict[str, X25519PrivateKey], wrapped: bytes, rid: bytes) -> None:
    stream = io.BytesIO(sealed)  # reads copy, as reads from a file would
    deque(open_sealed(stream, private_keys=ring, wrapped_key=wrapped, recording_id=rid), maxlen=0)


def write_recordings(
    target: Path,
    recording: memoryview,
    count: int,
    sealing: tuple[RecordingPublicKey, int] | None,
    fsync: bool,
) -> float:
    """Seconds to write ``count`` recordings one by one (each deleted afterwards), plain when
    ``sealing`` is None, else through a new Sealer (key, chunk size) per recording."""
    t0 = time.perf_counter()
    for _ in range(count):
        with open(target, "wb") as handle:
            if sealing is None:
                for piece in pieces(recording):
                    handle.write(piece)
            else:
                for part in Sealer(sealing[0], os.urandom(16), chunk_size=sealing[1]).seal(pieces(recording)):
                    handle.write(part)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.unlink(target)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fsync", action="store_true", help="fsync every small recording (plain and sealed)")
    args = parser.parse_args()

    private = X25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key = RecordingPublicKey(fingerprint(raw), private.public_key(), 0)
    ring = {key.fingerprint: private}
    rid = os.urandom(16)
    big = memoryview(os.urandom(100 * MB))
    figures: dict[str, object] = {}

    for size_mb in (10, 100):
        data = big[: size_mb * MB]
        for chunk, label in ((64 << 10, "64k"), (1 << 20, "1m")):
            seconds = best(partial(seal_dropping, key, rid, data, chunk), args.repeat)
            figures[f"seal_mb_s_{size_mb}mb_{label}"] = round(size_mb / seconds)
            sealer = Sealer(key, rid, chunk_size=chunk)
            sealed = b"".join(sealer.seal(pieces(data)))
            seconds = best(partial(open_dropping, sealed, ring, sealer.wrapped_key, rid), args.repeat)
            figures[f"open_mb_s_{size_mb}mb_{label}"] = round(size_mb / seconds)
            del sealed

    data_key = os.urandom(32)
    n = 3000
    t0 = time.perf_counter()
    wraps = [SUITE.encrypt(data_key, key.public_key, info=b"bench" + bytes(16)) for _ in range(n)]
    figures["hpke_wraps_per_s"] = round(n / (time.perf_counter() - t0))
    t0 = time.perf_counter()
    for w in wraps:
        SUITE.decrypt(w, private, info=b"bench" + bytes(16))
    figures["hpke_unwraps_per_s"] = round(n / (time.perf_counter() - t0))

    recording = big[:RECORDING_BYTES]
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "recording.bin"
        plain_s = write_recordings(target, recording, args.recordings, None, args.fsync)
        sealed_s = write_recordings(target, recording, args.recordings, (key, DEFAULT_CHUNK_SIZE), args.fsync)
        small_s = write_recordings(target, recording, args.recordings, (key, 64 << 10), args.fsync)
    per_ms = 1000 / args.recordings
    figures.update(
        {
            "recordings": args.recordings,
            "recording_mb": RECORDING_BYTES / MB,
            "fsync": args.fsync,
            "plain_write_s": round(plain_s, 3),
            "sealed_write_s": round(sealed_s, 3),
            "plain_ms_per_recording": round(plain_s * per_ms, 3),
            "sealed_ms_per_recording": round(sealed_s * per_ms, 3),
            "seal_overhead_pct": round(100 * (sealed_s - plain_s) / plain_s, 1),
            "sealed_64k_ms_per_recording": round(small_s * per_ms, 3),
            "seal_64k_overhead_pct": round(100 * (small_s - plain_s) / plain_s, 1),
        }
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
