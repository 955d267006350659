"""What the spill tests share: packets and calls compared column by column, chunks of synthetic RTP, and
a byte flipped in a file (tampering)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from callrec.capture.model.calls import CapturedCall
from callrec.capture.model.media import RtpPackets

MS = 1_000_000
S = 1_000_000_000
COLUMNS = (
    "ts_ns",
    "seq",
    "rtp_ts",
    "ssrc",
    "payload_type",
    "marker",
    "payload",
    "payload_offsets",
    "payload_lengths",
)


def assert_same_packets(a: RtpPackets, b: RtpPackets) -> None:
    for name in COLUMNS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name


def assert_same_calls(a: list[CapturedCall], b: list[CapturedCall]) -> None:
    assert [c.call_id for c in a] == [c.call_id for c in b]
    for x, y in zip(a, b, strict=True):
        assert (x.state, x.started_ns, x.answered_ns, x.ended_ns, x.end_reason) == (
            y.state,
            y.started_ns,
            y.answered_ns,
            y.ended_ns,
            y.end_reason,
        )
        assert x.events == y.events
        assert x.legs.keys() == y.legs.keys()
        for direction in x.legs:
            lx, ly = x.legs[direction], y.legs[direction]
            assert (lx.formats, lx.sources, lx.destinations, lx.rtcp_packets, lx.encrypted) == (
                ly.formats,
                ly.sources,
                ly.destinations,
                ly.rtcp_packets,
                ly.encrypted,
            )
            assert_same_packets(lx.packets, ly.packets)


def chunk(t0_ns: int, n: int, size: int = 160, seq0: int = 0, seed: int = 0) -> RtpPackets:
    rng = np.random.default_rng(seed)
    idx = np.arange(n, dtype=np.int64)
    lengths = np.full(n, size, dtype=np.int64)
    return RtpPackets(
        t0_ns + idx * 20 * MS,
        (seq0 + idx) % 65536,
        (seq0 + idx) * 160,
        np.full(n, 0xDEADBEEF, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        idx % 7 == 0,
        rng.integers(0, 256, n * size, dtype=np.uint8),
        idx * size,
        lengths,
    )


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))
