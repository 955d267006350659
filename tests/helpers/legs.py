"""Synthetic RTP legs for the timeline and render tests: G.711 tones as packets with loss, jitter,
reordering and drift, and the timeline's output to compare with."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import CALLER_TO_CALLEE, CapturedLeg
from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.capture.streams.medialog import LegSpool
from callrec.decode.codecs.g711 import ULAW_TABLE
from callrec.decode.timeline import analyse_leg

MS = 1_000_000


S = 1_000_000_000


T0 = 1_700_000_000 * S  # capture time of the first audio in most tests


SPP = 160  # samples (and bytes) per 20 ms G.711 packet


FORMATS = {
    0: MediaFormat(0, "PCMU", 8000),
    8: MediaFormat(8, "PCMA", 8000),
    13: MediaFormat(13, "CN", 8000),
    101: MediaFormat(101, "telephone-event", 8000),
}


def ulaw_encode(x: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """G.711 µ-law encoder (the test's own, from the standard): 14-bit magnitude plus a bias
    of 33, segment from the highest set bit, 4 step bits, every bit inverted on the line."""
    v = np.asarray(x, dtype=np.int32) >> 2
    negative = v < 0
    magnitude = np.minimum(np.where(negative, -v, v), 8158) + 33  # 8191: the top code
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 5, 0, 7)
    mantissa = (magnitude >> (exponent + 1)) & 0x0F
    return (~((negative.astype(np.int32) << 7) | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def tone(
    n_samples: int, freq_hz: float = 440.0, amplitude: float = 8000.0, rate: int = 8000
) -> npt.NDArray[np.int16]:
    t = np.arange(n_samples) / rate
    return np.rint(amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)


def stream(
    n: int,
    *,
    start_ns: int = T0,
    seq0: int = 1000,
    ts0: int = 50_000,
    ssrc: int = 0x1111_1111,
    pt: int = 0,
    delay_ns: int = 0,
    jitter_ns: npt.ArrayLike | None = None,
    payload: npt.NDArray[np.uint8] | None = None,
    drift_ppm: float = 0.0,
    ts_ticks: npt.ArrayLike | None = None,
    marker_first: bool = False,
    seed: int = 1,
) -> RtpPackets:
    """``n`` packets of 20 ms in generation order. Packet ``i``'s audio was spoken at
    ``true_ns(...)[i]`` and arrives ``delay_ns + jitter_ns[i]`` later. ``drift_ppm > 0``: the
    sender's clock runs fast, so its 20 ms of RTP time take less than 20 ms of capture time."""
    i = np.arange(n, dtype=np.int64)
    ticks = i * SPP if ts_ticks is None else np.asarray(ts_ticks, dtype=np.int64)
    true = true_ns(n, start_ns, drift_ppm)
    jitter = np.zeros(n, dtype=np.int64) if jitter_ns is None else np.asarray(jitter_ns, dtype=np.int64)
    if payload is None:
        payload = np.random.default_rng(seed).integers(0, 256, (n, SPP), dtype=np.uint8)
    payload = np.ascontiguousarray(payload, dtype=np.uint8).reshape(n, -1)
    size = payload.shape[1]
    marker = np.zeros(n, dtype=np.bool_)
    marker[0] = marker_first
    return RtpPackets(
        ts_ns=true + delay_ns + jitter,
        seq=(seq0 + i) & 0xFFFF,
        rtp_ts=(ts0 + ticks) & 0xFFFFFFFF,
        ssrc=np.full(n, ssrc, dtype=np.int64),
        payload_type=np.full(n, pt, dtype=np.int64),
        marker=marker,
        payload=payload.reshape(-1),
        payload_offsets=i * size,
        payload_lengths=np.full(n, size, dtype=np.int64),
    )


def true_ns(n: int, start_ns: int = T0, drift_ppm: float = 0.0) -> npt.NDArray[np.int64]:
    i = np.arange(n, dtype=np.int64)
    return start_ns + np.rint(i * 20 * MS / (1 + drift_ppm * 1e-6)).astype(np.int64)


def join(*parts: RtpPackets) -> RtpPackets:
    spool = LegSpool()
    for part in parts:
        spool.append(part)
    return spool.packets()


def by_arrival(packets: RtpPackets) -> RtpPackets:
    return packets.select(np.argsort(packets.ts_ns, kind="stable"))


def make_leg(
    packets: RtpPackets, direction: str = CALLER_TO_CALLEE, formats: dict[int, MediaFormat] | None = None
) -> CapturedLeg:
    return CapturedLeg(direction, FORMATS if formats is None else formats, packets)


def decoded(packets: RtpPackets, table: npt.NDArray[np.int16] = ULAW_TABLE) -> npt.NDArray[np.int16]:
    """Each packet's payload decoded, back to back, in the order given."""
    return np.concatenate(
        [table[np.frombuffer(packets.payload_bytes(i), dtype=np.uint8)] for i in range(len(packets))]
    )


def render_leg(
    packets: RtpPackets,
    formats: dict[int, MediaFormat] | None = None,
    start_ns: int | None = None,
    n: int | None = None,
) -> tuple[npt.NDArray[np.int16], object]:
    timeline = analyse_leg(make_leg(packets, formats=formats))
    first = timeline.stats.first_media_ns
    start = first if start_ns is None else start_ns
    assert start is not None
    size = timeline.end_index(start, 8000) if n is None else n
    return timeline.place(start, 8000, size).samples, timeline
