"""Render benchmark: decode + timeline + stereo of a one-hour G.711 call, in x realtime.

Builds the call's two legs directly (180,000 packets each, 20 ms, with jitter and a little loss),
renders it three times and prints one JSON line with the best time.

    python bench/bench_render.py [--minutes 60]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from capture.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CallState, CapturedCall, CapturedLeg
from capture.media import STATIC_PAYLOAD_TYPES, RtpPackets
from decode.render import render_call


def leg(direction: str, packets: int, pt: int, seed: int) -> CapturedLeg:
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(rng.random(packets) > 0.002)  # 0.2 % loss
    n = keep.shape[0]
    rtp = RtpPackets(
        ts_ns=keep * 20_000_000 + rng.integers(0, 3_000_000, n),
        seq=(keep + 1000) & 0xFFFF,
        rtp_ts=(keep * 160 + 12345) & 0xFFFFFFFF,
        ssrc=np.full(n, 0x1000 + seed, dtype=np.int64),
        payload_type=np.full(n, pt, dtype=np.int64),
        marker=np.zeros(n, dtype=np.bool_),
        payload=rng.integers(0, 256, n * 160, dtype=np.uint8),
        payload_offsets=np.arange(n, dtype=np.int64) * 160,
        payload_lengths=np.full(n, 160, dtype=np.int64),
    )
    return CapturedLeg(direction, dict(STATIC_PAYLOAD_TYPES), rtp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    args = parser.parse_args()
    packets = int(args.minutes * 60 * 50)
    call = CapturedCall(
        call_id="bench",
        state=CallState.COMPLETED,
        started_ns=0,
        answered_ns=0,
        ended_ns=packets * 20_000_000,
        end_reason="bye",
        caller="a",
        callee="b",
        caller_uri="",
        callee_uri="",
        request_uri="",
        legs={
            CALLER_TO_CALLEE: leg(CALLER_TO_CALLEE, packets, 0, 1),
            CALLEE_TO_CALLER: leg(CALLEE_TO_CALLER, packets, 8, 2),
        },
    )
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        rendered = render_call(call)
        best = min(best, time.perf_counter() - t0)
    audio_s = rendered.samples.shape[0] / rendered.sample_rate_hz
    print(
        json.dumps(
            {
                "bench": "render",
                "codec": "G.711 (PCMU + PCMA)",
                "audio_s": round(audio_s, 1),
                "render_s": round(best, 3),
                "x_realtime": round(audio_s / best),
            }
        )
    )


if __name__ == "__main__":
    main()
