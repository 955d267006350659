"""Write a synthetic capture of N concurrent G.711 calls (SIP over UDP + RTP both ways).

Deterministic for given arguments. Each call: INVITE (SDP offer), 100, 180, 200 (SDP answer), ACK,
RTP both ways every 20 ms for the call's length, BYE, 200. Starts are spread over the first
``--spread`` seconds so calls overlap fully. Written with ``struct`` directly (scapy would take
minutes for a million packets).

    python bench/make_synthetic.py --calls 100 --seconds 60 --out bench/out/synthetic_100.pcap
"""

from __future__ import annotations

import argparse
import heapq
import random
import struct
from collections.abc import Iterator
from pathlib import Path

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
PBX_A = "198.51.100.1"
PBX_B = "203.0.113.1"


def ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(src: str, dst: str, sport: int, dport: int, payload: bytes, ip_id: int) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ip_id & 0xFFFF, 0, 64, 17, 0, ip4(src), ip4(dst)
    )
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return MAC_B + MAC_A + b"\x08\x00" + hdr + udp


def sdp(addr: str, port: int, session: int) -> bytes:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    ).encode()


def sip(start: str, call: int, cseq: str, to_tag: bool, body: bytes = b"") -> bytes:
    head = (
        f"{start}\r\nVia: SIP/2.0/UDP {PBX_A}:5060;branch=z9hG4bK{call:08d}{cseq.split()[0]}\r\n"
        f"From: <sip:+3522{call:06d}@{PBX_A}>;tag=a{call}\r\n"
        f"To: <sip:+3524{call:06d}@{PBX_B}>{f';tag=b{call}' if to_tag else ''}\r\n"
        f"Call-ID: bench-{call}@{PBX_A}\r\nCSeq: {cseq}\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:{PBX_A}:5060>\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def call_packets(call: int, start_ns: int, seconds: float, rng: random.Random) -> Iterator[tuple[int, bytes]]:
    a_port = 20000 + 4 * call
    b_port = 40000 + 4 * call
    caller = (PBX_A, 5060)
    callee = (PBX_B, 5060)
    uri = f"sip:+3524{call:06d}@{PBX_B}"
    ms = 1_000_000
    yield (
        start_ns,
        frame(
            *caller[:1],
            callee[0],
            5060,
            5060,
            sip(f"INVITE {uri} SIP/2.0", call, "1 INVITE", False, sdp(PBX_A, a_port, call)),
            call,
        ),
    )
    yield (
        start_ns + 2 * ms,
        frame(callee[0], caller[0], 5060, 5060, sip("SIP/2.0 100 Trying", call, "1 INVITE", False), call),
    )
    yield (
        start_ns + 30 * ms,
        frame(callee[0], caller[0], 5060, 5060, sip("SIP/2.0 180 Ringing", call, "1 INVITE", True), call),
    )
    answer = start_ns + 500 * ms
    yield (
        answer,
        frame(
            callee[0],
            caller[0],
            5060,
            5060,
            sip("SIP/2.0 200 OK", call, "1 INVITE", True, sdp(PBX_B, b_port, call)),
            call,
        ),
    )
    yield (
        answer + 2 * ms,
        frame(caller[0], callee[0], 5060, 5060, sip(f"ACK {uri} SIP/2.0", call, "1 ACK", True), call),
    )
    n = int(seconds * 50)
    ssrc_a = 0x10000000 + call
    ssrc_b = 0x20000000 + call
    seq_a = rng.randrange(65536)
    seq_b = rng.randrange(65536)
    ts_a = rng.randrange(1 << 32)
    ts_b = rng.randrange(1 << 32)
    payload_a = bytes(rng.randrange(256) for _ in range(160))
    payload_b = bytes(rng.randrange(256) for _ in range(160))
    media0 = answer + 10 * ms
    for i in range(n):
        t = media0 + i * 20 * ms
        jitter_a = rng.randrange(0, 2 * ms)
        jitter_b = rng.randrange(0, 2 * ms)
        rtp_a = (
            struct.pack("!BBHII", 0x80, 0, (seq_a + i) & 0xFFFF, (ts_a + 160 * i) & 0xFFFFFFFF, ssrc_a)
            + payload_a
        )
        rtp_b = (
            struct.pack("!BBHII", 0x80, 0, (seq_b + i) & 0xFFFF, (ts_b + 160 * i) & 0xFFFFFFFF, ssrc_b)
            + payload_b
        )
        yield t + jitter_a, frame(PBX_A, PBX_B, a_port, b_port, rtp_a, i)
        yield t + 7 * ms + jitter_b, frame(PBX_B, PBX_A, b_port, a_port, rtp_b, i)
    bye = media0 + n * 20 * ms + 5 * ms
    yield bye, frame(caller[0], callee[0], 5060, 5060, sip(f"BYE {uri} SIP/2.0", call, "2 BYE", True), call)
    yield (
        bye + 3 * ms,
        frame(callee[0], caller[0], 5060, 5060, sip("SIP/2.0 200 OK", call, "2 BYE", True), call),
    )


def write(path: Path, calls: int, seconds: float, spread: float, seed: int = 1) -> int:
    rng = random.Random(seed)
    base_ns = 1_795_000_000 * 1_000_000_000  # 2026-11-18, fixed
    streams = [
        call_packets(c, base_ns + int(rng.random() * spread * 1e9), seconds, random.Random(seed * 100003 + c))
        for c in range(calls)
    ]
    count = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))  # nanosecond pcap, Ethernet
        buf = bytearray()
        for ts, data in heapq.merge(*streams, key=lambda p: p[0]):
            buf += struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, len(data), len(data))
            buf += data
            count += 1
            if len(buf) > 8 << 20:
                f.write(buf)
                buf.clear()
        f.write(buf)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--spread", type=float, default=2.0, help="start calls within this many seconds")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    n = write(args.out, args.calls, args.seconds, args.spread)
    print(f"{args.out}: {n} packets, {args.calls} calls x {args.seconds:g} s")


if __name__ == "__main__":
    main()
