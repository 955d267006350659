#!/usr/bin/env python3
"""Synthetic SIP/RTP captures with ground truth, for Callrec's tests.

    python pcaps/make_fixtures.py [--out DIR] [--only NAME ...] [--list]

Writes, for every scenario in SCENARIOS, ``NAME.pcap`` (or ``NAME.pcapng``) and
``NAME.expected.json`` into ``pcaps/fixtures/`` (or DIR). The output is reproducible byte for
byte: fixed timestamps (no clock), fixed seeds, own PRNG (xorshift32), signals computed with
integer arithmetic or ``math.sin`` on exactly reduced arguments, own G.711 encoders, own
pcap/pcapng writers. scapy only builds the frames (Ethernet, 802.1Q, 802.1ad, Linux SLL,
IPv4, IPv6, UDP); every field that scapy would otherwise choose is set here.

Media: every leg sends 20 ms packets (160 samples, 8 kHz G.711) of a known signal, numbered by
RTP time: sample ``n`` of a leg is the ``n``-th sample after the RTP timestamp of the leg's
first packet (``ext_ts - ext_ts_first``). Arrival times are the nominal packet times plus a
small non-negative jitter (0 for the leg's first packet and every 5th packet), so a recorder
that places audio by RTP timestamp puts sample ``n`` exactly at ``origin_s + n / 8000``.

Signals (``signal`` in expected.json; :func:`signal_samples` regenerates them):
  {"kind": "tone", "hz": H, "amplitude": A}
      x[n] = round(A * sin(2*pi * ((H*n) mod 8000) / 8000))      (H an integer)
  {"kind": "noise", "seed": S, "amplitude": A}
      lowpass noise: u[n] = (xorshift32 state >> 21) - 1024 (state seeded with S, stepped once
      per sample), y[n] = sum_k c[k] * u[n-k] with c = 1 2 3 4 3 2 1 (u[<0] = 0),
      x[n] = (y[n] * A) // 16384  (so |x| <= A; nulls at 2000 Hz and its multiples)
The G.711 payload is x encoded with the classic Sun g711.c rules (:func:`lin2ulaw`,
:func:`lin2alaw`); the exact decoded reference is ``decode(encode(x))``.

Schema of NAME.expected.json (times in seconds; "recording" times are relative to the start of
the recording, i.e. the first media packet of the call in either direction)::

  {
    "description": str,
    "capture": "NAME.pcap",                # the capture file next to this one
    "sample_rate": 8000,                   # of the signals below (G.711)
    "placement_tolerance_s": 0.002,        # how far a recorder may shift a leg
    "calls": [{
      "call_id": str,                      # match key
      "state": "completed" | "cancelled" | "rejected" | ...,
      "caller": str, "callee": str,        # user part of From / To
      "started_at": ISO-8601 UTC,          # first INVITE on the wire
      "answered_at": ISO-8601 UTC | null,  # 200 OK to the INVITE
      "ended_at": ISO-8601 UTC,            # BYE / CANCEL / final error response
      "ended_at_tolerance_s": 0.05,        # BYE vs its 200 OK, CANCEL vs 487
      "recorded": bool,                    # a recording exists (there was media)
      "duration_s": float | null,          # recording length: first media packet to end of last
      "duration_tolerance_s": float,
      "legs": {
        "caller->callee": LEG, "callee->caller": LEG
      }
    }]
  }
  LEG = {
    "packets": int,         # RTP packets of the leg on the wire, duplicates included,
                            # malformed / truncated RTP excluded
    "duplicates": int,      # of which duplicates (same seq again)
    "lost": int,            # sequence numbers never seen (between first and last)
    "ssrc": int | null,
    "codec": "PCMU" | "PCMA" | null,
    "payload_type": int | null,
    "signal": {...} | null, # see above; null: the leg sent nothing
    "origin_s": float | null,   # recording time of the leg's sample n = 0
    "active": [[s, e], ...],    # where this leg's packets are (merged 20 ms slots)
    "silent": [[s, e], ...]     # the 20 ms slots of lost packets (merged); a leg that sends
                                # nothing has [[0, duration_s]]. Everything outside "active"
                                # must be digital silence (exact zeros) in the export.
  }
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

RATE = 8000
FRAME_SAMPLES = 160
PTIME_NS = 20_000_000
SAMPLE_NS = 125_000
# 2026-11-02T09:00:00Z; each scenario starts 10 minutes after the previous one.
BASE_EPOCH_S = int(_dt.datetime(2026, 11, 2, 9, 0, 0, tzinfo=_dt.UTC).timestamp())
PLACEMENT_TOLERANCE_S = 0.002
DURATION_TOLERANCE_S = 0.025
ENDED_AT_TOLERANCE_S = 0.05

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113

# ----------------------------------------------------------------------------------------------
# signals and G.711


def _xorshift32(state: int) -> int:
    state ^= (state << 13) & 0xFFFFFFFF
    state ^= state >> 17
    state ^= (state << 5) & 0xFFFFFFFF
    return state


NOISE_TAPS = (1, 2, 3, 4, 3, 2, 1)


def signal_samples(spec: dict, count: int) -> list[int]:
    """Samples 0 .. count-1 of a leg's signal (see the module docstring)."""
    kind = spec["kind"]
    amp = int(spec["amplitude"])
    if kind == "tone":
        hz = int(spec["hz"])
        return [round(amp * math.sin(2.0 * math.pi * ((hz * n) % RATE) / RATE)) for n in range(count)]
    if kind == "noise":
        state = int(spec["seed"]) & 0xFFFFFFFF or 1
        hist = [0] * len(NOISE_TAPS)
        out = []
        for _ in range(count):
            state = _xorshift32(state)
            hist = [(state >> 21) - 1024] + hist[:-1]
            y = sum(c * u for c, u in zip(NOISE_TAPS, hist, strict=True))
            out.append((y * amp) // 16384)
        return out
    raise ValueError(f"unknown signal kind {kind!r}")


_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for i, end in enumerate(ends):
        if value <= end:
            return i
    return len(ends)


def lin2ulaw(sample: int) -> int:
    """16-bit linear PCM -> G.711 mu-law byte (Sun g711.c linear2ulaw)."""
    pcm = max(-32768, min(32767, sample)) >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + (0x84 >> 2)
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask


def lin2alaw(sample: int) -> int:
    """16-bit linear PCM -> G.711 A-law byte (Sun g711.c linear2alaw)."""
    pcm = max(-32768, min(32767, sample)) >> 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm >> 1) & 0xF if seg < 2 else (pcm >> seg) & 0xF
    return aval ^ mask


def ulaw2lin(byte: int) -> int:
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def alaw2lin(byte: int) -> int:
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


CODECS = {  # name -> (static payload type, encoder, decoder)
    "PCMU": (0, lin2ulaw, ulaw2lin),
    "PCMA": (8, lin2alaw, alaw2lin),
}


def decoded_reference(spec: dict, codec: str, count: int) -> list[int]:
    """What a correct G.711 decoder outputs for samples 0 .. count-1 of the leg."""
    _, enc, dec = CODECS[codec]
    return [dec(enc(x)) for x in signal_samples(spec, count)]


# ----------------------------------------------------------------------------------------------
# capture file writers


@dataclass(order=True)
class Frame:
    ts_ns: int
    order: int
    data: bytes = field(compare=False)
    iface: int = field(default=0, compare=False)
    orig_len: int | None = field(default=None, compare=False)


def write_pcap(path: Path, frames: list[Frame], linktype: int) -> None:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)]
    for f in frames:
        sec, nsec = divmod(f.ts_ns, 1_000_000_000)
        if nsec % 1000:
            raise ValueError("classic pcap holds microseconds only")
        orig = len(f.data) if f.orig_len is None else f.orig_len
        out.append(struct.pack("<IIII", sec, nsec // 1000, len(f.data), orig))
        out.append(f.data)
    path.write_bytes(b"".join(out))


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = len(body) + 12
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def write_pcapng(path: Path, frames: list[Frame], interfaces: list[tuple[int, int, str]]) -> None:
    """interfaces: (linktype, tsresol as a power of ten, name), indexed by Frame.iface."""
    shb_opts = _pcapng_option(4, b"callrec pcaps/make_fixtures.py") + _pcapng_option(0, b"")
    blocks = [_pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + shb_opts)]
    for linktype, tsresol, name in interfaces:
        opts = _pcapng_option(2, name.encode()) + _pcapng_option(9, bytes([tsresol])) + _pcapng_option(0, b"")
        blocks.append(_pcapng_block(1, struct.pack("<HHI", linktype, 0, 262144) + opts))
    for f in frames:
        tsresol = interfaces[f.iface][1]
        units, rem = divmod(f.ts_ns * 10**tsresol, 1_000_000_000)
        if rem:
            raise ValueError(f"timestamp {f.ts_ns} does not fit interface {f.iface}'s resolution")
        orig = len(f.data) if f.orig_len is None else f.orig_len
        body = struct.pack("<IIIII", f.iface, units >> 32, units & 0xFFFFFFFF, len(f.data), orig) + f.data
        blocks.append(_pcapng_block(6, body))
    path.write_bytes(b"".join(blocks))


# ----------------------------------------------------------------------------------------------
# frames (scapy builds the headers; every variable field is set explicitly)


def mac_for(ip: str) -> str:
    """A stable locally administered MAC per IP address."""
    h = 0
    for ch in ip.encode():
        h = (h * 131 + ch) & 0xFFFFFFFF
    return f"02:00:{(h >> 24) & 0xFF:02x}:{(h >> 16) & 0xFF:02x}:{(h >> 8) & 0xFF:02x}:{h & 0xFF:02x}"


class Link:
    """How one capture encapsulates IP datagrams. kind: ether | vlan | qinq | sll | raw."""

    def __init__(self, kind: str = "ether", vlan: int = 100, outer_vlan: int = 200, sll_local: str = ""):
        self.kind = kind
        self.vlan = vlan
        self.outer_vlan = outer_vlan
        self.sll_local = sll_local  # Linux SLL: the capturing host's address (its packets are "outgoing")

    @property
    def linktype(self) -> int:
        return {"sll": LINKTYPE_LINUX_SLL, "raw": LINKTYPE_RAW}.get(self.kind, LINKTYPE_ETHERNET)

    def wrap(self, ip_pkt, src_ip: str, dst_ip: str) -> bytes:
        from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether

        ethertype = 0x86DD if ":" in src_ip else 0x0800
        if self.kind == "raw":
            return bytes(ip_pkt)
        if self.kind == "sll":
            outgoing = src_ip == self.sll_local
            src_mac = bytes.fromhex(mac_for(src_ip).replace(":", "")) + b"\0\0"
            hdr = CookedLinux(
                pkttype=4 if outgoing else 0, lladdrtype=1, lladdrlen=6, src=src_mac, proto=ethertype
            )
            return bytes(hdr / ip_pkt)
        eth = Ether(src=mac_for(src_ip), dst=mac_for(dst_ip))
        if self.kind == "vlan":
            return bytes(eth / Dot1Q(prio=0, vlan=self.vlan) / ip_pkt)
        if self.kind == "qinq":
            return bytes(eth / Dot1AD(prio=0, vlan=self.outer_vlan) / Dot1Q(prio=0, vlan=self.vlan) / ip_pkt)
        if ethertype == 0x86DD:
            eth.type = 0x86DD
        return bytes(eth / ip_pkt)


class Capture:
    """Collects frames of one fixture; IPv4 ids are a deterministic counter."""

    def __init__(self, link: Link, iface_for: Callable[[str], int] | None = None):
        self.link = link
        self.frames: list[Frame] = []
        self._ipid = 0x1000
        self._order = 0
        self.iface_for = iface_for  # kind ("sip" / "rtp" / "other") -> pcapng interface
        self.links: dict[int, Link] = {}

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def ip_layer(self, src: str, dst: str, proto: int = 17):
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6

        if ":" in src:
            return IPv6(src=src, dst=dst, nh=proto, hlim=64, fl=0, tc=0)
        self._ipid = (self._ipid + 1) & 0xFFFF
        return IP(src=src, dst=dst, id=self._ipid, ttl=64, flags=0, tos=0, proto=proto)

    def add_raw(self, ts_ns: int, data: bytes, kind: str = "other", orig_len: int | None = None) -> None:
        iface = self.iface_for(kind) if self.iface_for else 0
        self.frames.append(Frame(ts_ns, self._next_order(), data, iface, orig_len))

    def link_for(self, kind: str) -> Link:
        if self.iface_for:
            return self.links[self.iface_for(kind)]
        return self.link

    def udp(
        self, ts_ns: int, src: str, sport: int, dst: str, dport: int, payload: bytes, kind: str = "other"
    ) -> None:
        from scapy.layers.inet import UDP
        from scapy.packet import Raw

        pkt = self.ip_layer(src, dst) / UDP(sport=sport, dport=dport) / Raw(load=payload)
        self.add_raw(ts_ns, self.link_for(kind).wrap(pkt, src, dst), kind)

    def udp_fragmented(
        self,
        ts_ns: int,
        src: str,
        sport: int,
        dst: str,
        dport: int,
        payload: bytes,
        mtu: int,
        order: list[int],
    ) -> int:
        """One UDP datagram as IPv4 fragments of at most ``mtu`` bytes, emitted in ``order``
        (indices into the fragment list), 100 us apart. Returns the number of fragments."""
        from scapy.layers.inet import IP, UDP

        # the checksum needs the pseudo header: build it inside a throw-away IP packet
        udp_bytes = bytes(IP(src=src, dst=dst, proto=17) / UDP(sport=sport, dport=dport) / payload)[20:]
        step = (mtu - 20) // 8 * 8
        chunks = [udp_bytes[i : i + step] for i in range(0, len(udp_bytes), step)]
        self._ipid = (self._ipid + 1) & 0xFFFF
        ipid = self._ipid
        from scapy.packet import Raw

        for k, idx in enumerate(order):
            more = idx < len(chunks) - 1
            pkt = IP(
                src=src,
                dst=dst,
                id=ipid,
                ttl=64,
                tos=0,
                proto=17,
                flags="MF" if more else 0,
                frag=idx * step // 8,
            ) / Raw(load=chunks[idx])
            self.add_raw(ts_ns + k * 100_000, self.link.wrap(pkt, src, dst), "sip")
        assert sorted(order) == list(range(len(chunks))), (order, len(chunks))
        return len(chunks)

    def sorted_frames(self) -> list[Frame]:
        return sorted(self.frames)


# ----------------------------------------------------------------------------------------------
# SIP


@dataclass
class Party:
    user: str
    display: str
    ip: str  # where its SIP and RTP packets come from on the wire
    sip_port: int = 5060
    rtp_port: int = 4000
    sdp_ip: str | None = None  # what it writes in SDP/Via/Contact (differs behind NAT)
    sdp_port: int | None = None
    wire_sip_port: int | None = None  # source port of its SIP on the wire (NAT)
    wire_rtp_port: int | None = None  # source port of its RTP on the wire (NAT)
    tag: str = ""

    @property
    def adv_ip(self) -> str:
        return self.sdp_ip or self.ip

    @property
    def host(self) -> str:
        return f"[{self.adv_ip}]" if ":" in self.adv_ip else self.adv_ip

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{self.host}"

    @property
    def src_sip_port(self) -> int:
        return self.wire_sip_port or self.sip_port

    @property
    def src_rtp_port(self) -> int:
        return self.wire_rtp_port or self.rtp_port

    @property
    def media_port(self) -> int:  # advertised
        return self.sdp_port or self.rtp_port


def make_sdp(
    p: Party, codec: str, session: int, direction: str = "sendrecv", extra: Iterable[str] = ()
) -> bytes:
    fam = "IP6" if ":" in p.adv_ip else "IP4"
    pt = CODECS[codec][0]
    lines = [
        "v=0",
        f"o={p.user} {session} {session} IN {fam} {p.adv_ip}",
        "s=callrec fixture",
        f"c=IN {fam} {p.adv_ip}",
        "t=0 0",
        f"m=audio {p.media_port} RTP/AVP {pt} 101",
        f"a=rtpmap:{pt} {codec}/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        *extra,
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


class Dialog:
    def __init__(self, cap: Capture, call_id: str, caller: Party, callee: Party, branch_seed: int):
        self.cap = cap
        self.call_id = call_id
        self.a = caller
        self.b = callee
        self.seed = branch_seed
        self.invite_branch = f"z9hG4bK{branch_seed:08x}a"
        self.times: dict[str, int] = {}
        self.extra_invite_headers: list[str] = []

    def _via(self, p: Party, branch: str) -> str:
        return f"Via: SIP/2.0/UDP {p.host}:{p.sip_port};branch={branch};rport"

    def _from_a(self) -> str:
        return f'From: "{self.a.display}" <{self.a.uri}>;tag={self.a.tag}'

    def _to_b(self, tagged: bool) -> str:
        tag = f";tag={self.b.tag}" if tagged else ""
        return f'To: "{self.b.display}" <sip:{self.b.user}@{self.b.host}>{tag}'

    @staticmethod
    def _message(start: str, headers: list[str], body: bytes = b"") -> bytes:
        hdrs = list(headers)
        if body:
            hdrs.append("Content-Type: application/sdp")
        hdrs.append(f"Content-Length: {len(body)}")
        return ("\r\n".join([start, *hdrs]) + "\r\n\r\n").encode() + body

    def _send_a_to_b(self, ts: int, msg: bytes) -> None:
        self.cap.udp(ts, self.a.ip, self.a.src_sip_port, self.b.ip, self.b.sip_port, msg, "sip")

    def _send_b_to_a(self, ts: int, msg: bytes) -> None:
        self.cap.udp(ts, self.b.ip, self.b.sip_port, self.a.ip, self.a.src_sip_port, msg, "sip")

    def invite_bytes(self, sdp: bytes) -> bytes:
        return self._message(
            f"INVITE sip:{self.b.user}@{self.b.host} SIP/2.0",
            [
                self._via(self.a, self.invite_branch),
                "Max-Forwards: 70",
                self._from_a(),
                self._to_b(False),
                f"Call-ID: {self.call_id}",
                "CSeq: 1 INVITE",
                f"Contact: <sip:{self.a.user}@{self.a.host}:{self.a.sip_port}>",
                *self.extra_invite_headers,
                "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE",
                "User-Agent: callrec-fixture/1.0",
            ],
            sdp,
        )

    def invite(self, ts: int, sdp: bytes) -> None:
        self.times["invite"] = ts
        self._send_a_to_b(ts, self.invite_bytes(sdp))

    def response(
        self,
        ts: int,
        code: int,
        reason: str,
        method: str = "INVITE",
        cseq: int = 1,
        sdp: bytes = b"",
        branch: str | None = None,
    ) -> None:
        headers = [
            self._via(self.a, branch or self.invite_branch),
            self._from_a(),
            self._to_b(code != 100),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
        ]
        if method == "INVITE" and code in (180, 183, 200):
            headers.append(f"Contact: <sip:{self.b.user}@{self.b.host}:{self.b.sip_port}>")
        headers.append("Server: callrec-fixture/1.0")
        if method == "INVITE" and code >= 200:
            self.times.setdefault("final", ts)
            if code == 200:
                self.times["answer"] = ts
        self._send_b_to_a(ts, self._message(f"SIP/2.0 {code} {reason}", headers, sdp))

    def ack(self, ts: int, for_2xx: bool = True) -> None:
        branch = f"z9hG4bK{self.seed:08x}c" if for_2xx else self.invite_branch
        ruri = (
            f"sip:{self.b.user}@{self.b.host}:{self.b.sip_port}"
            if for_2xx
            else f"sip:{self.b.user}@{self.b.host}"
        )
        msg = self._message(
            f"ACK {ruri} SIP/2.0",
            [
                self._via(self.a, branch),
                "Max-Forwards: 70",
                self._from_a(),
                self._to_b(True),
                f"Call-ID: {self.call_id}",
                "CSeq: 1 ACK",
            ],
        )
        self._send_a_to_b(ts, msg)

    def cancel(self, ts: int) -> None:
        self.times["end"] = ts
        msg = self._message(
            f"CANCEL sip:{self.b.user}@{self.b.host} SIP/2.0",
            [
                self._via(self.a, self.invite_branch),
                "Max-Forwards: 70",
                self._from_a(),
                self._to_b(False),
                f"Call-ID: {self.call_id}",
                "CSeq: 1 CANCEL",
            ],
        )
        self._send_a_to_b(ts, msg)

    def bye(self, ts: int, by_caller: bool = True) -> None:
        """BYE and, 3 ms later, its 200 OK."""
        self.times["end"] = ts
        if by_caller:
            branch = f"z9hG4bK{self.seed:08x}d"
            headers = [
                self._via(self.a, branch),
                "Max-Forwards: 70",
                self._from_a(),
                self._to_b(True),
                f"Call-ID: {self.call_id}",
                "CSeq: 2 BYE",
            ]
            self._send_a_to_b(
                ts, self._message(f"BYE sip:{self.b.user}@{self.b.host}:{self.b.sip_port} SIP/2.0", headers)
            )
            ok = [
                self._via(self.a, branch),
                self._from_a(),
                self._to_b(True),
                f"Call-ID: {self.call_id}",
                "CSeq: 2 BYE",
            ]
            self._send_b_to_a(ts + 3_000_000, self._message("SIP/2.0 200 OK", ok))
        else:
            branch = f"z9hG4bK{self.seed:08x}e"
            via = f"Via: SIP/2.0/UDP {self.b.host}:{self.b.sip_port};branch={branch};rport"
            frm = f'From: "{self.b.display}" <sip:{self.b.user}@{self.b.host}>;tag={self.b.tag}'
            to = f'To: "{self.a.display}" <{self.a.uri}>;tag={self.a.tag}'
            headers = [via, "Max-Forwards: 70", frm, to, f"Call-ID: {self.call_id}", "CSeq: 1 BYE"]
            self._send_b_to_a(
                ts, self._message(f"BYE sip:{self.a.user}@{self.a.host}:{self.a.sip_port} SIP/2.0", headers)
            )
            ok = [via, frm, to, f"Call-ID: {self.call_id}", "CSeq: 1 BYE"]
            self._send_a_to_b(ts + 3_000_000, self._message("SIP/2.0 200 OK", ok))


# ----------------------------------------------------------------------------------------------
# RTP legs


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


def _jitter_ns(spec: LegSpec, i: int) -> int:
    if i % 5 == 0:
        return 0
    h = _xorshift32((spec.jitter_seed * 0x9E3779B1 + i * 0x85EBCA77) & 0xFFFFFFFF or 1)
    return (h % 600_000) // spec.jitter_unit_ns * spec.jitter_unit_ns


def rtp_packet(spec: LegSpec, i: int, payload: bytes) -> bytes:
    pt = CODECS[spec.codec][0]
    marker = 0x80 if i == 0 else 0
    seq = (spec.seq0 + i) & 0xFFFF
    ts = (spec.ts0 + i * FRAME_SAMPLES) & 0xFFFFFFFF
    return struct.pack("!BBHII", 0x80, marker | pt, seq, ts, spec.ssrc) + payload


def emit_leg(cap: Capture, spec: LegSpec, src: tuple[str, int], dst: tuple[str, int]) -> None:
    enc = CODECS[spec.codec][1]
    samples = signal_samples(spec.signal, spec.count * FRAME_SAMPLES)
    for i in range(spec.count):
        if i in spec.lost:
            continue
        payload = bytes(enc(x) for x in samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES])
        pkt = rtp_packet(spec, i, payload)
        t = spec.start_ns + i * PTIME_NS + _jitter_ns(spec, i) + spec.delay.get(i, 0)
        cap.udp(t, src[0], src[1], dst[0], dst[1], pkt, "rtp")
        if i in spec.dup:
            cap.udp(t + spec.dup[i], src[0], src[1], dst[0], dst[1], pkt, "rtp")


def rtcp_sr(ssrc: int, ntp_s: int, rtp_ts: int, packets: int, octets: int, cname: str) -> bytes:
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, ntp_s, 0, rtp_ts, packets, octets)
    item = bytes([1, len(cname)]) + cname.encode()
    chunk = struct.pack("!I", ssrc) + item + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes


# ----------------------------------------------------------------------------------------------
# expected.json


def _iso(ts_ns: int) -> str:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    t = _dt.datetime.fromtimestamp(sec, tz=_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{t}.{ns // 1000:06d}Z"


def _spans(indices: list[int], offset_s: float) -> list[list[float]]:
    spans: list[list[float]] = []
    for i in sorted(indices):
        s = round(offset_s + i * 0.02, 6)
        e = round(offset_s + (i + 1) * 0.02, 6)
        if spans and abs(spans[-1][1] - s) < 1e-9:
            spans[-1][1] = e
        else:
            spans.append([s, e])
    return spans


def expected_call(
    dialog: Dialog,
    state: str,
    legs: list[LegSpec],
    malformed_rtp: int = 0,
) -> dict:
    by_dir = {leg.direction: leg for leg in legs}
    rec_start = min((leg.start_ns for leg in legs), default=None)
    rec_end = max((leg.start_ns + leg.count * PTIME_NS for leg in legs), default=None)
    recorded = rec_start is not None
    duration = round((rec_end - rec_start) / 1e9, 6) if recorded else None
    out_legs = {}
    for direction in ("caller->callee", "callee->caller"):
        leg = by_dir.get(direction)
        if leg is None:
            out_legs[direction] = {
                "packets": 0,
                "duplicates": 0,
                "lost": 0,
                "ssrc": None,
                "codec": None,
                "payload_type": None,
                "signal": None,
                "origin_s": None,
                "active": [],
                "silent": [[0.0, duration]] if recorded else [],
            }
            continue
        assert 0 not in leg.lost and leg.count - 1 not in leg.lost
        origin = round((leg.start_ns - rec_start) / 1e9, 6)
        received = [i for i in range(leg.count) if i not in leg.lost]
        out_legs[direction] = {
            "packets": len(received) + len(leg.dup),
            "duplicates": len(leg.dup),
            "lost": len(leg.lost),
            "ssrc": leg.ssrc,
            "codec": leg.codec,
            "payload_type": CODECS[leg.codec][0],
            "signal": leg.signal,
            "origin_s": origin,
            "active": _spans(received, origin),
            "silent": _spans(sorted(leg.lost), origin),
        }
    t = dialog.times
    return {
        "call_id": dialog.call_id,
        "state": state,
        "caller": dialog.a.user,
        "callee": dialog.b.user,
        "started_at": _iso(t["invite"]),
        "answered_at": _iso(t["answer"]) if "answer" in t else None,
        "ended_at": _iso(t.get("end", t.get("final", 0))),
        "ended_at_tolerance_s": ENDED_AT_TOLERANCE_S,
        "recorded": recorded,
        "duration_s": duration,
        "duration_tolerance_s": DURATION_TOLERANCE_S,
        "legs": out_legs,
    }


# ----------------------------------------------------------------------------------------------
# scenarios

MS = 1_000_000
S = 1_000_000_000

TONE_CALLER = {"kind": "tone", "hz": 440, "amplitude": 8000}
TONE_CALLEE = {"kind": "tone", "hz": 1000, "amplitude": 6000}


@dataclass
class Fixture:
    name: str
    description: str
    capture: Capture
    calls: list[dict]
    ext: str = "pcap"
    interfaces: list[tuple[int, int, str]] | None = None


def _t0(index: int) -> int:
    return (BASE_EPOCH_S + index * 600) * S


def _parties(n: int, ipv6: bool = False) -> tuple[Party, Party]:
    """Caller / callee of call n (distinct numbers and addresses per call)."""
    if ipv6:
        a_ip, b_ip = f"2001:db8:10::{n}a", f"2001:db8:20::{n}b"
    else:
        a_ip, b_ip = f"198.51.100.{10 + 2 * n}", f"198.51.100.{110 + 2 * n}"
    caller = Party(
        user=f"+3522000{n:02d}01", display=f"Caller {n}", ip=a_ip, rtp_port=40000 + 2 * n, tag=f"a{n:02d}f1x"
    )
    callee = Party(
        user=f"+3522000{n:02d}02", display=f"Callee {n}", ip=b_ip, rtp_port=50000 + 2 * n, tag=f"b{n:02d}f2y"
    )
    return caller, callee


def standard_call(
    cap: Capture,
    t0: int,
    n: int,
    codec: str = "PCMU",
    caller: Party | None = None,
    callee: Party | None = None,
    seconds: float = 3.0,
    caller_leg: dict | None = None,
    callee_leg: dict | None = None,
    callee_sends: bool = True,
    rtcp: bool = False,
    by_caller: bool = True,
    invite_hook: Callable[[Dialog, int, bytes], None] | None = None,
) -> dict:
    """INVITE / 100 / 180 / 200 / ACK, media both ways, BYE / 200. Returns expected.json's call."""
    pa, pb = _parties(n)
    a = caller or pa
    b = callee or pb
    call_id = f"fx{n:02d}-{t0 // S:x}@{a.adv_ip if ':' not in a.adv_ip else 'v6'}"
    d = Dialog(cap, call_id, a, b, branch_seed=0x5EED0000 + n)
    offer = make_sdp(a, codec, 1000 + n)
    answer = make_sdp(b, codec, 2000 + n)
    if invite_hook:
        invite_hook(d, t0, offer)
    else:
        d.invite(t0, offer)
    d.response(t0 + 4 * MS, 100, "Trying")
    d.response(t0 + 60 * MS, 180, "Ringing")
    t200 = t0 + 500 * MS
    d.response(t200, 200, "OK", sdp=answer)
    d.ack(t200 + 8 * MS)
    count = round(seconds * 50)
    legs = []
    ca = dict(
        direction="caller->callee",
        codec=codec,
        ssrc=0x1A2B0000 + n,
        seq0=1000 + 17 * n,
        ts0=160_000 + 7 * n,
        start_ns=t200 + 31 * MS + 625_000,
        count=count,
        signal=TONE_CALLER,
        jitter_seed=2 * n + 1,
    )
    ca.update(caller_leg or {})
    cb = dict(
        direction="callee->caller",
        codec=codec,
        ssrc=0x5C6D0000 + n,
        seq0=30000 + 5 * n,
        ts0=9_000_000 + 3 * n,
        start_ns=t200 + 12 * MS + 500_000,
        count=count,
        signal=TONE_CALLEE,
        jitter_seed=2 * n + 2,
    )
    cb.update(callee_leg or {})
    leg_a = LegSpec(**ca)
    legs.append(leg_a)
    emit_leg(cap, leg_a, (a.ip, a.src_rtp_port), (b.ip, b.media_port))
    if callee_sends:
        leg_b = LegSpec(**cb)
        legs.append(leg_b)
        # symmetric RTP: the callee sends to where the caller's RTP comes from
        emit_leg(cap, leg_b, (b.ip, b.media_port), (a.ip, a.src_rtp_port))
    if rtcp:
        t = t200 + 1 * S + 7 * MS
        cap.udp(
            t,
            a.ip,
            a.src_rtp_port + 1,
            b.ip,
            b.media_port + 1,
            rtcp_sr(leg_a.ssrc, 0xEE000000 + n, leg_a.ts0 + 8000, 48, 48 * 160, f"{a.user}@fixture"),
            "rtp",
        )
        if callee_sends:
            cap.udp(
                t + 13 * MS,
                b.ip,
                b.media_port + 1,
                a.ip,
                a.src_rtp_port + 1,
                rtcp_sr(legs[1].ssrc, 0xEE100000 + n, legs[1].ts0 + 8000, 49, 49 * 160, f"{b.user}@fixture"),
                "rtp",
            )
    end = max(leg.start_ns + leg.count * PTIME_NS for leg in legs)
    d.bye(end + 40 * MS, by_caller=by_caller)
    return expected_call(d, "completed", legs)


def fx_basic_pcmu(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    call = standard_call(cap, _t0(i), 1, "PCMU", rtcp=True)
    return Fixture(
        "basic_pcmu",
        "Basic PCMU call over Ethernet/IPv4: INVITE, 100, 180, 200, ACK, 3 s of "
        "media both ways (caller 440 Hz, callee 1000 Hz), one RTCP SR+SDES per side, BYE, 200.",
        cap,
        [call],
    )


def fx_basic_pcma(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    call = standard_call(cap, _t0(i), 2, "PCMA", rtcp=True)
    return Fixture("basic_pcma", "Basic PCMA (G.711 A-law) call, otherwise like basic_pcmu.", cap, [call])


def fx_seq_ts_wrap(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    call = standard_call(
        cap,
        _t0(i),
        3,
        "PCMU",
        seconds=4.0,
        # caller: seq wraps after packet 19 (65535 -> 0), that packet (seq 65535) is lost;
        # the RTP timestamp wraps between packets 49 and 50 (exactly on a packet boundary)
        caller_leg=dict(
            seq0=65535 - 19,
            ts0=2**32 - 50 * FRAME_SAMPLES,
            lost=frozenset({19}),
            signal={"kind": "noise", "seed": 3001, "amplitude": 12000},
        ),
        # callee: seq wraps after packet 99, and packets 99 (seq 65535) and 100 (seq 0) arrive
        # swapped; the timestamp wraps inside packet 40's span (ts of 41 = 80)
        callee_leg=dict(
            seq0=65535 - 99,
            ts0=2**32 - 41 * FRAME_SAMPLES + 80,
            delay={99: 21 * MS},
            signal={"kind": "noise", "seed": 3002, "amplitude": 10000},
        ),
    )
    return Fixture(
        "seq_ts_wrap",
        "Sequence numbers wrap at 65535 and RTP timestamps wrap at 2^32 in both legs "
        "of one PCMU call; caller loses the packet with seq 65535, callee's seq 65535/0 arrive swapped; "
        "noise signals so that any misplaced packet shows.",
        cap,
        [call],
    )


def fx_loss_dup_reorder(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    call = standard_call(
        cap,
        _t0(i),
        4,
        "PCMU",
        seconds=4.0,
        caller_leg=dict(
            lost=frozenset({40, 41, 42, 97}),
            dup={60: 3 * MS, 61: 27 * MS},  # 61's copy arrives after 62
            delay={75: 30 * MS, 120: 65 * MS},  # 75 after 76; 120 after 123
            signal={"kind": "noise", "seed": 4001, "amplitude": 12000},
        ),
        callee_leg=dict(lost=frozenset({10}), dup={11: 1 * MS}, delay={130: 21 * MS}),
    )
    return Fixture(
        "loss_dup_reorder",
        "PCMU call with known loss (caller seqs idx 40-42 and 97, callee idx 10), "
        "duplicates (caller idx 60, 61 late; callee idx 11) and reordering (caller idx 75, 120; "
        "callee idx 130). Lost slots must be silence of exactly 20 ms each.",
        cap,
        [call],
    )


def fx_one_way(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    call = standard_call(cap, _t0(i), 5, "PCMU", callee_sends=False)
    return Fixture(
        "one_way_media",
        "Call answered normally (sendrecv) but the callee never sends RTP: "
        "the right channel must be all zeros for the whole recording.",
        cap,
        [call],
    )


def fx_early_media(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    t0 = _t0(i)
    a, b = _parties(6)
    d = Dialog(cap, f"fx06-early-{t0 // S:x}@{a.ip}", a, b, branch_seed=0x5EED0006)
    d.invite(t0, make_sdp(a, "PCMU", 1006))
    d.response(t0 + 4 * MS, 100, "Trying")
    answer = make_sdp(b, "PCMU", 2006)
    d.response(t0 + 80 * MS, 183, "Session Progress", sdp=answer)
    t200 = t0 + 2 * S + 100 * MS
    d.response(t200, 200, "OK", sdp=answer)
    d.ack(t200 + 9 * MS)
    # callee media starts right after the 183 (ringback / announcement) and continues through the
    # 200 with the same SSRC; the caller starts after the ACK. Both end together.
    leg_b = LegSpec(
        "callee->caller", "PCMU", 0x5C6D0006, 20000, 777_000, t0 + 100 * MS, 250, TONE_CALLEE, jitter_seed=13
    )
    leg_a = LegSpec(
        "caller->callee",
        "PCMU",
        0x1A2B0006,
        500,
        55_555,
        t200 + 31 * MS + 625_000,
        150,
        TONE_CALLER,
        jitter_seed=14,
    )
    # the caller's last packet ends 31.625 ms after the callee's
    emit_leg(cap, leg_b, (b.ip, b.rtp_port), (a.ip, a.rtp_port))
    emit_leg(cap, leg_a, (a.ip, a.rtp_port), (b.ip, b.rtp_port))
    end = max(leg.start_ns + leg.count * PTIME_NS for leg in (leg_a, leg_b))
    d.bye(end + 50 * MS, by_caller=False)
    call = expected_call(d, "completed", [leg_a, leg_b])
    return Fixture(
        "early_media",
        "Early media: 183 Session Progress with SDP, callee RTP 2 s before the "
        "200 OK (same SSRC before and after), caller RTP after the ACK; the callee hangs up. "
        "The recording starts at the callee's first early-media packet.",
        cap,
        [call],
    )


def fx_cancelled(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    t0 = _t0(i)
    a, b = _parties(7)
    d = Dialog(cap, f"fx07-cancel-{t0 // S:x}@{a.ip}", a, b, branch_seed=0x5EED0007)
    d.invite(t0, make_sdp(a, "PCMU", 1007))
    d.response(t0 + 4 * MS, 100, "Trying")
    d.response(t0 + 50 * MS, 180, "Ringing")
    d.cancel(t0 + 3 * S)
    d.response(t0 + 3 * S + 4 * MS, 200, "OK", method="CANCEL")
    d.response(t0 + 3 * S + 5 * MS, 487, "Request Terminated")
    d.ack(t0 + 3 * S + 8 * MS, for_2xx=False)
    call = expected_call(d, "cancelled", [])
    return Fixture(
        "cancelled",
        "INVITE, 100, 180, CANCEL after 3 s of ringing, 200 (CANCEL), 487, ACK: no media, nothing to record.",
        cap,
        [call],
    )


def fx_busy(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    t0 = _t0(i)
    a, b = _parties(8)
    d = Dialog(cap, f"fx08-busy-{t0 // S:x}@{a.ip}", a, b, branch_seed=0x5EED0008)
    d.invite(t0, make_sdp(a, "PCMA", 1008))
    d.response(t0 + 4 * MS, 100, "Trying")
    d.response(t0 + 800 * MS, 486, "Busy Here")
    d.ack(t0 + 806 * MS, for_2xx=False)
    d.times["end"] = d.times["final"]
    call = expected_call(d, "rejected", [])
    return Fixture("busy_486", "INVITE, 100, 486 Busy Here, ACK: rejected, no media.", cap, [call])


def fx_vlan(i: int) -> Fixture:
    cap = Capture(Link("vlan", vlan=100))
    call = standard_call(cap, _t0(i), 9, "PCMU")
    return Fixture("vlan_8021q", "Basic PCMU call, every frame tagged 802.1Q VLAN 100.", cap, [call])


def fx_qinq(i: int) -> Fixture:
    cap = Capture(Link("qinq", vlan=300, outer_vlan=200))
    call = standard_call(cap, _t0(i), 10, "PCMA")
    return Fixture(
        "qinq",
        "Basic PCMA call, every frame double-tagged: 802.1ad S-tag 200 (0x88a8) outside, "
        "802.1Q C-tag 300 (0x8100) inside.",
        cap,
        [call],
    )


def fx_ipv6(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    a, b = _parties(11, ipv6=True)
    call = standard_call(cap, _t0(i), 11, "PCMU", caller=a, callee=b)
    return Fixture("ipv6_call", "Basic PCMU call entirely over IPv6 (SIP, SDP c=IN IP6, RTP).", cap, [call])


def fx_fragmented_invite(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    n = 12

    def big_invite(d: Dialog, t0: int, sdp: bytes) -> None:
        d.extra_invite_headers = [
            f'P-Asserted-Identity: "{d.a.display}" <sip:{d.a.user}@{d.a.host};user=phone>',
            "Supported: replaces, timer, 100rel, path, gruu",
            "Session-Expires: 1800;refresher=uac",
            *[
                f"Record-Route: <sip:proxy{k}.example.net;lr;ftag={d.a.tag};did={k:03d}.a1b2c3d4e5f6>"
                for k in range(8)
            ],
            *[f"X-Fixture-Padding-{k:02d}: {'abcdefghij' * 10}" for k in range(12)],
        ]
        candidates = [
            f"a=candidate:{k} 1 UDP {2130706431 - k} 198.51.100.{20 + k} {41000 + k} typ host"
            for k in range(16)
        ]
        big_sdp = make_sdp(d.a, "PCMU", 1012, extra=candidates)
        msg = d.invite_bytes(big_sdp)
        d.times["invite"] = t0
        nfrag = cap.udp_fragmented(
            t0, d.a.ip, d.a.sip_port, d.b.ip, d.b.sip_port, msg, mtu=1500, order=[2, 0, 1]
        )
        assert nfrag == 3 and len(msg) > 3000, (nfrag, len(msg))

    call = standard_call(cap, _t0(i), n, "PCMU", invite_hook=big_invite)
    return Fixture(
        "fragmented_invite",
        "PCMU call whose INVITE (big headers, ICE candidates in SDP, > 3000 bytes) "
        "is sent as three IPv4 fragments in the order 3rd, 1st, 2nd.",
        cap,
        [call],
    )


def fx_pcapng_two_ifaces(i: int) -> Fixture:
    # interface 0: Ethernet, microseconds (SIP); interface 1: raw IP, nanoseconds (RTP, RTCP)
    cap = Capture(Link("ether"), iface_for=lambda kind: 1 if kind == "rtp" else 0)
    cap.links = {0: Link("ether"), 1: Link("raw")}
    call = standard_call(
        cap,
        _t0(i),
        13,
        "PCMU",
        rtcp=True,
        caller_leg=dict(jitter_unit_ns=1),
        callee_leg=dict(jitter_unit_ns=1, signal={"kind": "noise", "seed": 13002, "amplitude": 10000}),
    )
    return Fixture(
        "pcapng_two_ifaces",
        "pcapng with two interfaces: SIP on interface 0 (Ethernet, if_tsresol "
        "10^-6), RTP and RTCP on interface 1 (raw IP, if_tsresol 10^-9, jitter with ns detail).",
        cap,
        [call],
        ext="pcapng",
        interfaces=[(LINKTYPE_ETHERNET, 6, "eth0"), (LINKTYPE_RAW, 9, "rtp0")],
    )


def fx_linux_sll(i: int) -> Fixture:
    a, b = _parties(14)
    cap = Capture(Link("sll", sll_local=b.ip))
    call = standard_call(cap, _t0(i), 14, "PCMA", caller=a, callee=b)
    return Fixture(
        "linux_sll",
        "PCMA call captured on the callee's host with 'any' (Linux cooked capture v1, "
        "linktype 113): the callee's packets are 'outgoing' (pkttype 4), the caller's 'to us' (0).",
        cap,
        [call],
    )


def fx_two_calls(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    t0 = _t0(i)
    c1 = standard_call(cap, t0, 15, "PCMU", seconds=3.0)
    a2, b2 = _parties(16)
    c2 = standard_call(
        cap,
        t0 + 1 * S + 250 * MS,
        16,
        "PCMA",
        caller=a2,
        callee=b2,
        seconds=3.0,
        caller_leg=dict(signal={"kind": "tone", "hz": 660, "amplitude": 7000}),
        callee_leg=dict(signal={"kind": "noise", "seed": 16002, "amplitude": 11000}),
    )
    return Fixture(
        "two_calls",
        "Two overlapping calls sharing nothing (addresses, ports, SSRCs, codecs "
        "PCMU / PCMA, signals): call 2 starts 1.25 s after call 1.",
        cap,
        [c1, c2],
    )


def fx_nat(i: int) -> Fixture:
    cap = Capture(Link("ether"))
    a, b = _parties(17)
    # the caller sits behind a NAT: SIP/SDP say 10.0.0.17:5060 / 10.0.0.17:4000, the wire shows
    # 203.0.113.5:41234 (SIP) and 203.0.113.5:61002 (RTP); the callee answers symmetric RTP to
    # 203.0.113.5:61002 from its own SDP port (50034).
    a = Party(
        user=a.user,
        display=a.display,
        ip="203.0.113.5",
        sip_port=5060,
        rtp_port=61002,
        sdp_ip="10.0.0.17",
        sdp_port=4000,
        wire_sip_port=41234,
        wire_rtp_port=61002,
        tag=a.tag,
    )
    call = standard_call(cap, _t0(i), 17, "PCMU", caller=a, callee=b)
    return Fixture(
        "nat_symmetric_rtp",
        "Caller behind NAT: SDP offers 10.0.0.17:4000 but its RTP arrives from "
        "203.0.113.5:61002 (and SIP from 203.0.113.5:41234); the callee sends symmetric RTP back to "
        "203.0.113.5:61002. Legs must be bound through the callee's SDP endpoint.",
        cap,
        [call],
    )


def fx_malformed_mix(i: int) -> Fixture:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP, Ether
    from scapy.packet import Raw

    cap = Capture(Link("ether"))
    t0 = _t0(i)
    a, b = _parties(18)
    call = standard_call(cap, t0, 18, "PCMU", caller=a, callee=b, rtcp=True)
    state = 0xC0FFEE

    def junk(n: int) -> bytes:
        nonlocal state
        out = bytearray()
        for _ in range(n):
            state = _xorshift32(state)
            out.append(state & 0xFF)
        return bytes(out)

    j1, j2 = "192.0.2.7", "192.0.2.8"
    ts = t0 - 200 * MS
    # garbage UDP between unrelated hosts, some to the SIP and to the call's RTP ports
    for k in range(12):
        cap.udp(ts + k * 37 * MS, j1, 30000 + k, j2, 40000 + 3 * k, junk(20 + 17 * k))
    cap.udp(t0 + 300 * MS, j1, 5060, b.ip, 5060, junk(64))  # binary junk to port 5060
    cap.udp(t0 + 301 * MS, j1, 5060, b.ip, 5060, b"\r\n\r\n")  # keep-alive
    # broken SIP: truncated headers / no Call-ID; status line without reason and headers;
    # request line with a bad version; non-UTF-8 bytes
    cap.udp(
        t0 + 310 * MS,
        j1,
        5060,
        b.ip,
        5060,
        b"INVITE sip:+3522000999@198.51.100.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKjunk\r\nFrom: <sip",
    )
    cap.udp(t0 + 320 * MS, j1, 5060, b.ip, 5060, b"SIP/2.0 200\r\n\r\n")
    cap.udp(
        t0 + 330 * MS,
        j1,
        5060,
        b.ip,
        5060,
        b"INVITE sip:x@y SIP/9.9\r\nCall-ID: \xff\xfe\xfd\r\nCSeq: one INVITE\r\nContent-Length: -5\r\n\r\n",
    )
    cap.udp(
        t0 + 340 * MS,
        j1,
        5060,
        b.ip,
        5060,
        b"OPTIONS sip:\xff\xfe@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKopt\r\n"
        b"Call-ID: junk-options@192.0.2.7\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    )
    # truncated RTP on the call's own 5-tuple (must be ignored, not counted, not crash)
    tm = t0 + 500 * MS + 1 * S + 3 * MS
    rtp_dst = (b.ip, b.rtp_port)
    cap.udp(
        tm, a.ip, a.rtp_port, *rtp_dst, struct.pack("!BBH", 0x80, 0, 1111) + b"\x00\x01\x02\x03"
    )  # 8 bytes
    cap.udp(
        tm + 5 * MS,
        a.ip,
        a.rtp_port,
        *rtp_dst,  # CC=15 but no CSRC list
        struct.pack("!BBHII", 0x8F, 0, 1112, 1234, 0x1A2B0000 + 18) + b"\x00" * 8,
    )
    cap.udp(
        tm + 9 * MS,
        a.ip,
        a.rtp_port,
        *rtp_dst,  # extension length runs past the end
        struct.pack("!BBHIIHH", 0x90, 0, 1113, 1234, 0x1A2B0000 + 18, 0xBEDE, 200) + b"\x00" * 4,
    )
    cap.udp(
        tm + 13 * MS,
        a.ip,
        a.rtp_port,
        *rtp_dst,  # padding length larger than the packet
        struct.pack("!BBHII", 0xA0, 0, 1114, 1234, 0x1A2B0000 + 18) + b"\x00" * 3 + b"\xf0",
    )
    cap.udp(tm + 17 * MS, a.ip, a.rtp_port, *rtp_dst, b"")  # empty UDP datagram
    # RTP version 1 and RTP-looking junk to unrelated ports
    for k in range(5):
        cap.udp(
            t0 + 700 * MS + k * 20 * MS,
            j1,
            16384,
            j2,
            16386,
            struct.pack("!BBHII", 0x40, 0, k, k * 160, 0xDEAD) + junk(160),
        )
    # a frame truncated by the snap length; an IPv4 header with IHL 3; an IPv4 total length
    # past the frame; a UDP length past the datagram; a runt Ethernet frame; ARP; unknown ethertype
    full = bytes(
        Ether(src=mac_for(j1), dst=mac_for(j2))
        / IP(src=j1, dst=j2, id=7, ttl=64, flags=0)
        / UDP(sport=1000, dport=5060)
        / Raw(load=b"INVITE sip:a@b SIP/2.0\r\n" + b"X" * 300)
    )
    cap.add_raw(t0 + 900 * MS, full[:60], orig_len=len(full))
    bad_ihl = bytearray(
        bytes(
            Ether(src=mac_for(j1), dst=mac_for(j2))
            / IP(src=j1, dst=j2, id=8, ttl=64, flags=0)
            / UDP(sport=1, dport=5060)
            / Raw(load=b"x" * 20)
        )
    )
    bad_ihl[14] = 0x43
    cap.add_raw(t0 + 910 * MS, bytes(bad_ihl))
    long_tl = bytearray(
        bytes(
            Ether(src=mac_for(j1), dst=mac_for(j2))
            / IP(src=j1, dst=j2, id=9, ttl=64, flags=0)
            / UDP(sport=2, dport=5060)
            / Raw(load=b"y" * 20)
        )
    )
    long_tl[16:18] = struct.pack("!H", 1400)
    cap.add_raw(t0 + 920 * MS, bytes(long_tl))
    long_udp = bytearray(
        bytes(
            Ether(src=mac_for(j1), dst=mac_for(j2))
            / IP(src=j1, dst=j2, id=10, ttl=64, flags=0)
            / UDP(sport=3, dport=b.rtp_port)
            / Raw(load=b"z" * 20)
        )
    )
    long_udp[38:40] = struct.pack("!H", 900)
    cap.add_raw(t0 + 930 * MS, bytes(long_udp))
    cap.add_raw(t0 + 940 * MS, bytes.fromhex("0200000000010200000000020800ab"))
    cap.add_raw(
        t0 + 950 * MS,
        bytes(
            Ether(src=mac_for(j1), dst="ff:ff:ff:ff:ff:ff")
            / ARP(op=1, hwsrc=mac_for(j1), psrc=j1, pdst=j2, hwdst="00:00:00:00:00:00")
        ),
    )
    cap.add_raw(
        t0 + 960 * MS, bytes(Ether(src=mac_for(j1), dst=mac_for(j2), type=0x88B5) / Raw(load=junk(46)))
    )
    return Fixture(
        "malformed_mix",
        "A good PCMU call (with RTCP) surrounded by garbage: random UDP, binary junk "
        "and broken SIP on port 5060, truncated / inconsistent RTP on the call's own 5-tuple (8-byte "
        "header, CC=15 without CSRCs, extension and padding past the end, empty datagram), RTP "
        "version 1, a snaplen-truncated frame, bad IPv4 IHL / total length, bad UDP length, a runt "
        "frame, ARP, an unknown ethertype. Only the good call may come out, intact.",
        cap,
        [call],
    )


SCENARIOS: list[Callable[[int], Fixture]] = [
    fx_basic_pcmu,
    fx_basic_pcma,
    fx_seq_ts_wrap,
    fx_loss_dup_reorder,
    fx_one_way,
    fx_early_media,
    fx_cancelled,
    fx_busy,
    fx_vlan,
    fx_qinq,
    fx_ipv6,
    fx_fragmented_invite,
    fx_pcapng_two_ifaces,
    fx_linux_sll,
    fx_two_calls,
    fx_nat,
    fx_malformed_mix,
]


def build(index: int) -> Fixture:
    return SCENARIOS[index](index)


def write_fixture(fx: Fixture, out_dir: Path) -> list[Path]:
    capture_name = f"{fx.name}.{fx.ext}"
    frames = fx.capture.sorted_frames()
    cap_path = out_dir / capture_name
    if fx.ext == "pcapng":
        assert fx.interfaces is not None
        write_pcapng(cap_path, frames, fx.interfaces)
    else:
        write_pcap(cap_path, frames, fx.capture.link.linktype)
    expected = {
        "description": fx.description,
        "capture": capture_name,
        "sample_rate": RATE,
        "placement_tolerance_s": PLACEMENT_TOLERANCE_S,
        "calls": fx.calls,
    }
    exp_path = out_dir / f"{fx.name}.expected.json"
    exp_path.write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
    return [cap_path, exp_path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "fixtures")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to (re)generate")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    names = [f.__name__.removeprefix("fx_") for f in SCENARIOS]
    if args.list:
        for idx in range(len(SCENARIOS)):
            fx = build(idx)
            print(f"{fx.name:22s} {fx.description}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for idx in range(len(SCENARIOS)):
        fx = build(idx)
        if args.only and fx.name not in args.only and names[idx] not in args.only:
            continue
        for path in write_fixture(fx, args.out):
            size = path.stat().st_size
            total += size
            print(f"{size:9d}  {path}")
    print(f"{total:9d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
