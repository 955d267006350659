"""RTP legs (20 ms G.711 packets with known loss, duplicates, reordering and wraps) and RTCP."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .constants import FRAME_SAMPLES, PTIME_NS
from .frames import Capture
from .g711 import CODECS, payload_type
from .signals import signal_samples, xorshift32

Endpoint = tuple[str, int]


@dataclass
class LegSpec:
    direction: str  # "caller->callee" | "callee->caller"
    codec: str
    ssrc: int
    seq0: int
    ts0: int
    start_ns: int  # nominal (and actual) arrival of packet 0
    count: int  # packets sent (before loss)
    signal: dict
    lost: frozenset[int] = frozenset()  # packet indices never on the wire
    dup: dict[int, int] = field(default_factory=dict)  # index -> extra delay of the copy (ns)
    delay: dict[int, int] = field(default_factory=dict)  # index -> extra delay (reordering, ns)
    jitter_seed: int = 1
    jitter_unit_ns: int = 1000  # resolution of the jitter (1000 for classic pcap)
    sample0: int = 0  # signal sample of packet 0 (a later segment of a leg continues its signal)

    @property
    def end_ns(self) -> int:
        """Nominal end of the leg's last packet."""
        return self.start_ns + self.count * PTIME_NS


def _jitter_ns(spec: LegSpec, i: int) -> int:
    if i % 5 == 0:
        return 0
    h = xorshift32((spec.jitter_seed * 0x9E3779B1 + i * 0x85EBCA77) & 0xFFFFFFFF or 1)
    return (h % 600_000) // spec.jitter_unit_ns * spec.jitter_unit_ns


def rtp_packet(spec: LegSpec, i: int, payload: bytes) -> bytes:
    marker = 0x80 if i == 0 else 0
    seq = (spec.seq0 + i) & 0xFFFF
    ts = (spec.ts0 + i * FRAME_SAMPLES) & 0xFFFFFFFF
    return struct.pack("!BBHII", 0x80, marker | payload_type(spec.codec), seq, ts, spec.ssrc) + payload


def emit_leg(cap: Capture, spec: LegSpec, src: Endpoint, dst: Endpoint) -> None:
    enc = CODECS[spec.codec][1]
    samples = signal_samples(spec.signal, spec.sample0 + spec.count * FRAME_SAMPLES)[spec.sample0 :]
    for i in range(spec.count):
        if i in spec.lost:
            continue
        payload = bytes(enc(x) for x in samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        pkt = rtp_packet(spec, i, payload)
        t = spec.start_ns + i * PTIME_NS + _jitter_ns(spec, i) + spec.delay.get(i, 0)
        copies = [t, t + spec.dup[i]] if i in spec.dup else [t]
        for ts in copies:
            cap.udp(ts, *src, *dst, pkt, "rtp")


def rtcp_sr(ssrc: int, ntp_s: int, rtp_ts: int, packets: int, octets: int, cname: str) -> bytes:
    """An RTCP compound packet: sender report (no report blocks) + SDES with the CNAME."""
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, ntp_s, 0, rtp_ts, packets, octets)
    item = bytes([1, len(cname)]) + cname.encode()
    chunk = struct.pack("!I", ssrc) + item + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes
