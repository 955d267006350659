"""Write small pcap files of whole SIP calls (INVITE with SDP, 200, ACK, PCMU both ways, BYE) with
chosen parties and INVITE headers (``X-Queue``): for tests of what is done with calls, not of
how packets are parsed."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.builders import rtp, sdp, sip

CALLER_IP = "198.51.100.10"
CALLEE_IP = "203.0.113.20"


@dataclass(frozen=True)
class CallSpec:
    caller: str
    callee: str
    headers: Sequence[str] = field(default_factory=tuple)
    seconds: float = 2.0
    start_s: float = 1_764_000_000.0  # 2025-11-24
    # in-dialog requests: (seconds after the first RTP packet, from the caller?, method, headers,
    # body, content type), e.g. (3.0, True, "INFO", (), b"Signal=5\r\n", "application/dtmf-relay")
    requests: Sequence[tuple[float, bool, str, Sequence[str], bytes, str]] = ()


def _ip(addr: str) -> bytes:
    return bytes(int(part) for part in addr.split("."))


def _frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, _ip(src), _ip(dst))
    total = sum(struct.unpack("!10H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    header = header[:10] + struct.pack("!H", ~total & 0xFFFF) + header[12:]
    ether = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return ether + header + udp


def write_calls(path: Path, calls: Sequence[CallSpec], seed: int = 1) -> Path:
    """A pcap with ``calls`` one after the other (each with its own Call-ID and ports)."""
    rng = random.Random(seed)
    records: list[tuple[float, bytes]] = []
    for n, spec in enumerate(calls):
        t = spec.start_s + n * (spec.seconds + 5)
        call_id = f"call{n}-{seed}@test"
        caller_uri, callee_uri = f"sip:{spec.caller}@example.com", f"sip:{spec.callee}@example.com"
        a_port, b_port = 40000 + 4 * n, 50000 + 4 * n

        def signal(at: float, msg: bytes, from_caller: bool) -> None:
            src, dst = (CALLER_IP, CALLEE_IP) if from_caller else (CALLEE_IP, CALLER_IP)
            records.append((at, _frame(src, 5060, dst, 5060, msg)))

        common = {"call_id": call_id, "caller": caller_uri, "callee": callee_uri}
        invite = sip(
            f"INVITE {callee_uri} SIP/2.0", body=sdp(CALLER_IP, a_port), extra_headers=spec.headers, **common
        )
        signal(t, invite, True)
        ok = sip("SIP/2.0 200 OK", to_tag="b1", body=sdp(CALLEE_IP, b_port), **common)
        signal(t + 0.5, ok, False)
        signal(t + 0.51, sip(f"ACK {callee_uri} SIP/2.0", cseq="1 ACK", to_tag="b1", **common), True)
        for k, (offset, from_caller, method, headers, body, content_type) in enumerate(spec.requests):
            tags = {"from_tag": "a1", "to_tag": "b1"} if from_caller else {"from_tag": "b1", "to_tag": "a1"}
            who = common if from_caller else {**common, "caller": callee_uri, "callee": caller_uri}
            message = sip(
                f"{method} {callee_uri if from_caller else caller_uri} SIP/2.0",
                cseq=f"{10 + k} {method}",
                body=body,
                content_type=content_type,
                extra_headers=headers,
                **tags,
                **who,
            )
            signal(t + 0.52 + offset, message, from_caller)
        packets = int(spec.seconds * 50)
        for i in range(packets):
            at = t + 0.52 + i * 0.02
            for from_caller, ssrc in ((True, 0x1000 + n), (False, 0x2000 + n)):
                payload = rng.randbytes(160)
                src, sport, dst, dport = (
                    (CALLER_IP, a_port, CALLEE_IP, b_port)
                    if from_caller
                    else (CALLEE_IP, b_port, CALLER_IP, a_port)
                )
                records.append((at, _frame(src, sport, dst, dport, rtp(i, i * 160, ssrc, payload=payload))))
        end = t + 0.52 + packets * 0.02
        signal(end, sip(f"BYE {callee_uri} SIP/2.0", cseq="2 BYE", to_tag="b1", **common), True)
        signal(end + 0.01, sip("SIP/2.0 200 OK", cseq="2 BYE", to_tag="b1", **common), False)
    records.sort(key=lambda r: r[0])
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for at, frame in records:
        seconds = int(at)
        out += struct.pack(
            "<IIII", seconds, int(round((at - seconds) * 1e6)) % 1_000_000, len(frame), len(frame)
        )
        out += frame
    path.write_bytes(bytes(out))
    return path
