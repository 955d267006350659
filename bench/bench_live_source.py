"""Live source (AF_PACKET TPACKET_V3 ring) under load: reader CPU per packet and kernel drops.

Needs root and ``ip netns``. Builds two namespaces of its own joined by a veth pair, starts a sender
process in one (``ip netns exec``) that writes G.711-sized RTP frames (214 bytes, 64 flows) at
``--rate`` packets/s for ``--seconds`` with an AF_PACKET socket, and reads them in the other with
:class:`capture.sources.interfaces.LiveSource` (the default filter), optionally decoding every batch
(``--decode``: ``FrameDecoder``). Reader CPU is this process's user + system time over the run; the
kernel's receive work runs in the sender's context on a veth pair and is not counted. Prints one
JSON line::

    sudo .venv/bin/python bench/bench_live_source.py --rate 200000 --seconds 5
    {"bench": "live_source", "rate_pps": 200000, "sent": ..., "received": ..., "kernel_drops": 0,
     "reader_cpu_us_per_packet": ..., "buffer_mib": 32, "block_kib": 1024, ...}

The sender is the limit on small machines: ``sent_pps`` says what it achieved.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from callrec.capture.frames.decoder import FrameDecoder  # noqa: E402
from callrec.capture.sources.interfaces import LiveConfig, LiveSource  # noqa: E402

FRAME_BYTES = 214
FLOWS = 64
BURST = 64
CLONE_NEWNET = 0x40000000


def frames() -> list[bytes]:
    """One Ethernet/IPv4/UDP/RTP frame per flow (PCMU, 160-byte payload), 198.51.100.0/24."""
    out = []
    payload = bytes([0x80, 0x00]) + bytes(FRAME_BYTES - 14 - 20 - 8 - 2)
    for flow in range(FLOWS):
        udp = struct.pack("!HHHH", 40000 + 2 * flow, 20000 + 2 * flow, 8 + len(payload), 0) + payload
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0xB8, 20 + len(udp), 0, 0x4000, 64, 17, 0, bytes([198, 51, 100, 1]),
            bytes([198, 51, 100, 2]),
        )  # fmt: skip
        out.append(bytes.fromhex("020000000002 020000000001 0800") + ip + udp)
    return out


def send(dev: str, rate: int, seconds: float) -> None:
    """The sender (run in the other namespace): ``rate`` frames/s in bursts; prints what it sent."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((dev, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    burst = [f for _ in range(BURST // FLOWS or 1) for f in frames()][:BURST]
    period = len(burst) / rate
    start = time.perf_counter()
    end = start + seconds
    sent = 0
    due = start
    out = sock.send
    while due < end:
        for f in burst:
            out(f)
        sent += len(burst)
        due += period
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    took = time.perf_counter() - start
    print(json.dumps({"sent": sent, "send_s": round(took, 3)}), flush=True)


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        yield
    finally:
        libc.setns(home, CLONE_NEWNET)
        os.close(home)
        os.close(target)


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(args: argparse.Namespace, tx: str, rx: str) -> dict[str, object]:
    config = LiveConfig(buffer_bytes=args.buffer_mib << 20, block_bytes=args.block_kib << 10)
    with netns(rx):
        source = LiveSource("r0", config)
    decoder = FrameDecoder() if args.decode else None
    cmd = ["ip", "netns", "exec", tx, sys.executable, __file__, "--send", "s0"]
    cmd += ["--rate", str(args.rate), "--seconds", str(args.seconds)]
    received = 0
    datagrams = 0
    with source:
        cpu0 = cpu_s()
        sender = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + args.seconds + 10
            quiet = 0
            while time.monotonic() < deadline:
                got = source.poll(0.1)
                for batch in got:
                    received += len(batch)
                    if decoder is not None:
                        datagrams += len(decoder.decode(batch))
                quiet = 0 if got or sender.poll() is None else quiet + 1
                if quiet >= 3:  # the sender ended and nothing came for 0.3 s
                    break
            cpu = cpu_s() - cpu0
            out, _ = sender.communicate(timeout=30)
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.wait()
        stats = source.stats()
    sent = json.loads(out.strip().splitlines()[-1])
    return {
        "bench": "live_source",
        "rate_pps": args.rate,
        "seconds": args.seconds,
        "frame_bytes": FRAME_BYTES,
        "sent": sent["sent"],
        "sent_pps": round(sent["sent"] / sent["send_s"]),
        "received": received,
        "kernel_packets": stats.kernel_packets,
        "kernel_drops": stats.kernel_drops,
        "decode": bool(args.decode),
        "datagrams": datagrams,
        "reader_cpu_s": round(cpu, 3),
        "reader_cpu_us_per_packet": round(cpu / max(received, 1) * 1e6, 3),
        "buffer_mib": args.buffer_mib,
        "block_kib": args.block_kib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=200_000, help="packets per second to send")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--buffer-mib", type=int, default=32, help="ring size")
    parser.add_argument("--block-kib", type=int, default=1024, help="ring block size")
    parser.add_argument("--decode", action="store_true", help="also run FrameDecoder on every batch")
    parser.add_argument("--send", metavar="DEV", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send:
        send(args.send, args.rate, args.seconds)
        return
    if os.geteuid() != 0:
        sys.exit("bench_live_source: needs root (AF_PACKET sockets, network namespaces)")
    tag = f"crlb{os.getpid()}"
    tx, rx = f"{tag}s", f"{tag}r"
    try:
        for ns in (tx, rx):
            ip("netns", "add", ns)
            with netns(ns):
                for key in ("all", "default"):
                    Path(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6").write_text("1")
        ip("link", "add", "s0", "netns", tx, "type", "veth", "peer", "name", "r0", "netns", rx)
        for ns, dev, host in ((tx, "s0", 1), (rx, "r0", 2)):
            ip("-n", ns, "link", "set", dev, "arp", "off", "up")
            ip("-n", ns, "addr", "add", f"198.51.100.{host}/24", "dev", dev)
        print(json.dumps(measure(args, tx, rx)))
    finally:
        for ns in (tx, rx):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)


if __name__ == "__main__":
    main()
