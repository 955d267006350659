"""Frames of N concurrent G.711 calls for the live bench, cached in bench/out/, and the real-time sender.

Used by bench/bench_live.py (see there). Two parts:

* :func:`build` / :func:`load`: a deterministic set of frames for ``calls`` concurrent calls of about
  ``seconds`` talk time each (SIP over UDP between two documentation addresses, PCMU RTP both ways every
  20 ms). Starts are spread over ``spread`` seconds and talk times vary by up to one second, so neither the
  INVITEs nor the BYEs come in one burst. Every RTP packet carries 160 fresh random bytes, so a recording
  correlates with what was sent only if each packet landed where it belongs. Kept in
  ``bench/out/live_<calls>x<seconds>s/``: ``rtp.npy`` (one 214-byte frame a row, grouped by flow: flow
  ``2 * call`` is caller -> callee, ``2 * call + 1`` the other way), ``sip.npy`` (the SIP frames end to
  end) and ``index.npz`` (the send schedule in time order and where each call's rows and BYE are).
* :func:`send` (``python bench/live_sender.py --send DEV --set DIR --out FILE``, run inside the sender's
  network namespace): replays the frames through an AF_PACKET socket bound to DEV at real time, paced by
  their schedule, with one ``sendmmsg(2)`` per 10 ms tick (ctypes; the ``mmsghdr``/``iovec`` arrays are
  built once with numpy and point into the frame arrays, so the Python loop does not touch single
  frames). Writes what it achieved to FILE as JSON: frames sent, send rate, lateness of each tick's first
  frame, and the wall-clock time (``time.time_ns``) right after each call's BYE left.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FORMAT = 1  # bump when the layout or the content of a cached set changes

MAC_CALLER = bytes.fromhex("020000000a01")
MAC_CALLEE = bytes.fromhex("020000000a02")
PBX_A = "198.51.100.10"  # caller side (TEST-NET-2)
PBX_B = "203.0.113.20"  # callee side (TEST-NET-3)
RTP_FRAME = 14 + 20 + 8 + 12 + 160
RTP_HEADER = 14 + 20 + 8 + 12
PAYLOAD = 160
MS = 1_000_000
TICK_S = 0.010
MAX_VLEN = 1024  # UIO_MAXIOV: the most sendmmsg takes at once


def caller_port(call: int) -> int:
    return 10000 + 2 * call


def callee_port(call: int) -> int:
    return 30000 + 2 * call


def call_id(calls: int, call: int) -> str:
    return f"crb{calls}-{call:05d}@{PBX_A}"


def _ip4(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """Ethernet/IPv4/UDP around ``payload`` (UDP checksum 0: allowed over IPv4)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, _ip4(src), _ip4(dst))
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    macs = MAC_CALLEE + MAC_CALLER if src == PBX_A else MAC_CALLER + MAC_CALLEE
    return macs + b"\x08\x00" + ip + udp


def _sdp(addr: str, port: int, session: int) -> bytes:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {addr}\r\ns=-\r\nc=IN IP4 {addr}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    ).encode()


def _sip(first: str, calls: int, call: int, cseq: str, to_tag: bool, body: bytes = b"") -> bytes:
    lines = [
        first,
        f"Via: SIP/2.0/UDP {PBX_A}:5060;branch=z9hG4bKcrb{call:05d}{cseq.split()[0]}",
        f"From: <sip:+35220{call:05d}@{PBX_A}>;tag=a{call}",
        f"To: <sip:+35240{call:05d}@{PBX_B}>" + (f";tag=b{call}" if to_tag else ""),
        f"Call-ID: {call_id(calls, call)}",
        f"CSeq: {cseq}",
        "Max-Forwards: 70",
        f"Contact: <sip:{PBX_A}:5060>",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _call_sip(calls: int, call: int) -> list[tuple[int, bool, bytes]]:
    """The set-up: (ns from the call's start, sent by the caller?, SIP message); the BYE is added later."""
    uri = f"sip:+35240{call:05d}@{PBX_B}"
    offer = _sdp(PBX_A, caller_port(call), call)
    answer = _sdp(PBX_B, callee_port(call), call)
    return [
        (0, True, _sip(f"INVITE {uri} SIP/2.0", calls, call, "1 INVITE", False, offer)),
        (2 * MS, False, _sip("SIP/2.0 100 Trying", calls, call, "1 INVITE", False)),
        (30 * MS, False, _sip("SIP/2.0 180 Ringing", calls, call, "1 INVITE", True)),
        (500 * MS, False, _sip("SIP/2.0 200 OK", calls, call, "1 INVITE", True, answer)),
        (502 * MS, True, _sip(f"ACK {uri} SIP/2.0", calls, call, "1 ACK", True)),
    ]


def set_dir(calls: int, seconds: float, spread: float = 4.0) -> Path:
    return OUT / (f"live_{calls}x{seconds:g}s" + ("" if spread == 4.0 else f"_spread{spread:g}s"))


def build(calls: int, seconds: float, spread: float = 4.0, seed: int = 7) -> Path:
    """Make (or reuse) the cached frame set; returns its directory."""
    directory = set_dir(calls, seconds, spread)
    meta_path = directory / "meta.json"
    want = {"format": FORMAT, "calls": calls, "seconds": seconds, "spread": spread, "seed": seed}
    if meta_path.exists() and json.loads(meta_path.read_text()) == want:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.integers(0, int(spread * 1e9), calls)).astype(np.int64)
    rng.shuffle(starts)  # start order independent of the call number
    per_dir = (int(seconds * 50) + rng.integers(0, 50, calls)).astype(np.int64)  # packets per direction
    media0 = starts + 510 * MS
    flows = 2 * calls
    counts = np.repeat(per_dir, 2)  # rows per flow
    flow_start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    rows_total = int(counts.sum())
    flow = np.repeat(np.arange(flows), counts)
    i = np.arange(rows_total, dtype=np.int64) - flow_start[flow]  # packet number within the flow
    call = flow // 2
    backward = flow % 2 == 1
    # headers: one template per flow (Ethernet, IPv4 with checksum, UDP, RTP fixed parts)
    templates = np.empty((flows, RTP_HEADER), dtype=np.uint8)
    for c in range(calls):
        for d in range(2):
            src, dst = (PBX_A, PBX_B) if d == 0 else (PBX_B, PBX_A)
            sport, dport = (caller_port(c), callee_port(c)) if d == 0 else (callee_port(c), caller_port(c))
            rtp = struct.pack("!BBHII", 0x80, 0, 0, 0, 0x10000000 * (d + 1) + c)
            templates[2 * c + d] = np.frombuffer(
                udp_frame(src, dst, sport, dport, rtp + bytes(PAYLOAD))[:RTP_HEADER], np.uint8
            )
    rows = np.empty((rows_total, RTP_FRAME), dtype=np.uint8)
    rows[:, :RTP_HEADER] = templates[flow]
    seq0 = rng.integers(0, 1 << 16, flows)
    ts0 = rng.integers(0, 1 << 32, flows)
    seq = ((seq0[flow] + i) & 0xFFFF).astype(">u2")
    ts = ((ts0[flow] + 160 * i) & 0xFFFFFFFF).astype(">u4")
    rows[:, 44:46] = seq.view(np.uint8).reshape(-1, 2)
    rows[:, 46:50] = ts.view(np.uint8).reshape(-1, 4)
    rows[:, RTP_HEADER:] = rng.integers(0, 256, (rows_total, PAYLOAD), dtype=np.uint8)
    rtp_t = media0[call] + i * 20 * MS + np.where(backward, 7 * MS, 0) + rng.integers(0, 2 * MS, rows_total)
    del flow, i, call, backward
    # SIP: set-up from the start, BYE and its 200 after the last packet of either direction
    blobs: list[bytes] = []
    sip_t: list[int] = []
    bye_index = np.empty(calls, dtype=np.int64)  # SIP frame number of each call's BYE
    for c in range(calls):
        for offset, forward, msg in _call_sip(calls, c):
            src, dst = (PBX_A, PBX_B) if forward else (PBX_B, PBX_A)
            blobs.append(udp_frame(src, dst, 5060, 5060, msg))
            sip_t.append(int(starts[c]) + offset)
        bye = int(media0[c] + per_dir[c] * 20 * MS + 12 * MS)
        uri = f"sip:+35240{c:05d}@{PBX_B}"
        bye_index[c] = len(blobs)
        blobs.append(udp_frame(PBX_A, PBX_B, 5060, 5060, _sip(f"BYE {uri} SIP/2.0", calls, c, "2 BYE", True)))
        sip_t.append(bye)
        blobs.append(udp_frame(PBX_B, PBX_A, 5060, 5060, _sip("SIP/2.0 200 OK", calls, c, "2 BYE", True)))
        sip_t.append(bye + 3 * MS)
    sip_len = np.array([len(b) for b in blobs], dtype=np.int64)
    sip_off = np.concatenate([[0], np.cumsum(sip_len)[:-1]]).astype(np.int64)
    # the schedule: every frame in time order (kind 0: RTP row, 1: SIP frame)
    t = np.concatenate([rtp_t, np.array(sip_t, dtype=np.int64)])
    kind = np.concatenate([np.zeros(rows_total, np.uint8), np.ones(len(blobs), np.uint8)])
    index = np.concatenate([np.arange(rows_total, dtype=np.int64), np.arange(len(blobs), dtype=np.int64)])
    order = np.argsort(t, kind="stable")
    t, kind, index = t[order], kind[order], index[order]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    bye_pos = position[rows_total + bye_index]  # where each call's BYE is in the schedule
    t -= t[0]
    np.save(directory / "rtp.npy", rows)
    np.save(directory / "sip.npy", np.frombuffer(b"".join(blobs), dtype=np.uint8))
    np.savez(
        directory / "index.npz", t_ns=t, kind=kind, index=index, sip_off=sip_off, sip_len=sip_len,
        bye_pos=bye_pos, flow_start=flow_start, per_dir=per_dir, starts=starts,
    )  # fmt: skip
    meta_path.write_text(json.dumps(want))
    return directory


class FrameSet:
    """A cached frame set, loaded (``mmap``: the sender reads it all once; the bench only a few rows)."""

    def __init__(self, directory: Path, mmap: bool = True) -> None:
        self.directory = directory
        self.meta = json.loads((directory / "meta.json").read_text())
        self.calls = int(self.meta["calls"])
        self.rtp = np.load(directory / "rtp.npy", mmap_mode="r" if mmap else None)
        self.sip = np.load(directory / "sip.npy")
        with np.load(directory / "index.npz") as z:
            self.arrays = {k: z[k] for k in z.files}

    @property
    def frames(self) -> int:
        return len(self.arrays["t_ns"])

    def bye_time_s(self) -> np.ndarray:
        """Each call's BYE in the schedule (s from the first frame)."""
        return self.arrays["t_ns"][self.arrays["bye_pos"]] / 1e9

    def invite_time_s(self) -> np.ndarray:
        return (self.arrays["starts"] - self.arrays["starts"].min()) / 1e9

    def payload(self, call: int, backward: bool) -> np.ndarray:
        """The μ-law bytes one direction of a call sent, in order."""
        f = 2 * call + int(backward)
        start, n = int(self.arrays["flow_start"][f]), int(self.arrays["per_dir"][call])
        return np.asarray(self.rtp[start : start + n, RTP_HEADER:]).reshape(-1)


def ulaw_to_linear(data: np.ndarray) -> np.ndarray:
    """G.711 μ-law bytes -> 16-bit linear samples (ITU-T G.711)."""
    u = (~data.astype(np.int32)) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


# -- the sender -----------------------------------------------------------------------------------------


def _messages(frames: FrameSet) -> tuple[np.ndarray, np.ndarray]:
    """``struct mmsghdr`` for every frame in schedule order (x86-64/aarch64 layout), and their iovecs."""
    a = frames.arrays
    n = frames.frames
    rtp_base = frames.rtp.ctypes.data
    sip_base = frames.sip.ctypes.data
    iov = np.zeros((n, 2), dtype=np.uint64)  # struct iovec {void *base; size_t len}
    rtp = a["kind"] == 0
    iov[rtp, 0] = rtp_base + a["index"][rtp].astype(np.uint64) * RTP_FRAME
    iov[rtp, 1] = RTP_FRAME
    sip_i = a["index"][~rtp]
    iov[~rtp, 0] = sip_base + a["sip_off"][sip_i].astype(np.uint64)
    iov[~rtp, 1] = a["sip_len"][sip_i].astype(np.uint64)
    # struct mmsghdr: msghdr (name, namelen+pad, iov, iovlen, control, controllen, flags+pad) + msg_len+pad
    msgs = np.zeros((n, 8), dtype=np.uint64)
    msgs[:, 2] = iov.ctypes.data + np.arange(n, dtype=np.uint64) * 16
    msgs[:, 3] = 1
    return msgs, iov


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else 0.0


def send(dev: str, directory: Path, out: Path, lead_s: float = 0.5) -> None:
    frames = FrameSet(directory, mmap=False)
    msgs, iov = _messages(frames)
    t_s = frames.arrays["t_ns"] / 1e9
    bye_pos = frames.arrays["bye_pos"]
    bye_order = np.argsort(bye_pos)
    bye_sorted = bye_pos[bye_order]
    bye_wall = np.zeros(frames.calls, dtype=np.int64)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((dev, 0))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    libc = ctypes.CDLL(None, use_errno=True)
    sendmmsg = libc.sendmmsg
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    fd = sock.fileno()
    base = msgs.ctypes.data
    total = frames.frames
    lateness: list[float] = []
    per_second: dict[int, int] = {}  # frames sent in each second of the replay
    behind = 0.0  # the most the sender fell behind its schedule (a tick's last frame)
    retries = 0
    t0 = time.perf_counter() + lead_s
    wall0 = time.time_ns() + int(lead_s * 1e9)
    print(json.dumps({"ready": True, "frames": total, "t0_wall_ns": wall0}), flush=True)
    pos = 0
    first_send = last_send = 0.0
    while pos < total:
        now = time.perf_counter() - t0
        end = int(np.searchsorted(t_s, now, side="right"))
        if end > pos:
            start = pos
            while pos < end:
                count = min(end - pos, MAX_VLEN)
                done = sendmmsg(fd, base + pos * 64, count, 0)
                if done < 0:
                    err = ctypes.get_errno()
                    if err in (errno.ENOBUFS, errno.EAGAIN, errno.EINTR):
                        retries += 1
                        time.sleep(0.0002)
                        continue
                    raise OSError(err, os.strerror(err))
                pos += done
            sent_at = time.perf_counter() - t0
            wall = time.time_ns()
            if not first_send:
                first_send = sent_at
            last_send = sent_at
            lateness.append((sent_at - t_s[start]) * 1000)
            second = int(sent_at)
            per_second[second] = per_second.get(second, 0) + end - start
            behind = max(behind, sent_at - t_s[end - 1])
            lo, hi = np.searchsorted(bye_sorted, [start, end])
            if hi > lo:
                bye_wall[bye_order[lo:hi]] = wall
        wait = (np.floor(now / TICK_S) + 1) * TICK_S - (time.perf_counter() - t0)
        if wait > 0:
            time.sleep(wait)
    span = last_send - first_send
    result = {
        "sent": int(pos),
        "send_s": round(span, 3),
        "sent_pps": round(pos / span) if span > 0 else 0,
        "sent_pps_peak": max(per_second.values(), default=0),
        "scheduled_s": round(float(t_s[-1]), 3),
        "ticks": len(lateness),
        "lateness_ms_p50": _pct(lateness, 50),
        "lateness_ms_p99": _pct(lateness, 99),
        "lateness_ms_max": round(max(lateness), 3) if lateness else 0.0,
        "behind_ms_max": round(behind * 1000, 3),
        "retries": retries,
        "t0_wall_ns": wall0,
        "bye_wall_ns": bye_wall.tolist(),
    }
    out.write_text(json.dumps(result))
    del iov


def warm(device: str, mib: int) -> None:
    """Send ``mib`` MiB of plain UDP (to the discard port, neither SIP nor RTP) so that the capture's ring
    has been written through once: its pages are then in the capture's baseline memory, not counted as
    the calls'."""
    frame = udp_frame(PBX_A, PBX_B, 40000, 9, b"\x00" * 1400)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        sock.bind((device, 0))
        for n in range(mib * 2**20 // len(frame) + 1):
            sock.send(frame)
            if n % 200 == 199:
                time.sleep(0.01)  # about 25 MB/s, like 1,000 calls: the capture keeps up
    finally:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--send", metavar="DEV", help="replay through this interface (sender namespace)")
    parser.add_argument("--set", type=Path, help="the cached frame set (a bench/out/live_* directory)")
    parser.add_argument("--out", type=Path, help="write the sender's result here (JSON)")
    parser.add_argument("--build", type=int, metavar="CALLS", help="only make the frame set")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warm", type=int, metavar="MIB", help="only send MIB MiB of junk UDP (see warm)")
    args = parser.parse_args()
    if args.warm and args.send:
        warm(args.send, args.warm)
        return
    if args.build:
        print(build(args.build, args.seconds))
        return
    if not (args.send and args.set and args.out):
        sys.exit("live_sender: give --send DEV --set DIR --out FILE, or --build CALLS")
    send(args.send, args.set, args.out)


if __name__ == "__main__":
    main()
