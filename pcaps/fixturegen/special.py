"""Parts of scenarios that are more than a standard call's parameters: the fragmented INVITE,
the NAT'ed caller, and the garbage around the good call of ``malformed_mix``."""

from __future__ import annotations

import dataclasses
import struct

from .calls import parties
from .constants import MS, S
from .frames import Capture, mac_for
from .signals import prng_bytes
from .sip import Dialog, Party, make_sdp

JUNK_SRC, JUNK_DST = "192.0.2.7", "192.0.2.8"


def big_invite(d: Dialog, t0: int, sdp: bytes) -> None:
    """Invite hook: an INVITE of > 3000 bytes (headers, ICE candidates) as 3 IPv4 fragments
    sent 3rd, 1st, 2nd (the standard offer ``sdp`` is replaced)."""
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
        f"a=candidate:{k} 1 UDP {2130706431 - k} 198.51.100.{20 + k} {41000 + k} typ host" for k in range(16)
    ]
    msg = d.invite_bytes(make_sdp(d.a, "PCMU", 1012, extra=candidates))
    d.times["invite"] = t0
    nfrag = d.cap.udp_fragmented(
        t0, (d.a.ip, d.a.sip_port), (d.b.ip, d.b.sip_port), msg, mtu=1500, order=[2, 0, 1]
    )
    assert nfrag == 3 and len(msg) > 3000, (nfrag, len(msg))


def behind_nat(p: Party) -> Party:
    """``p`` behind a NAT: SIP/SDP say 10.0.0.17:5060 / 10.0.0.17:4000, the wire shows
    203.0.113.5:41234 (SIP) and 203.0.113.5:61002 (RTP)."""
    return dataclasses.replace(
        p,
        ip="203.0.113.5",
        sip_port=5060,
        rtp_port=61002,
        sdp_ip="10.0.0.17",
        sdp_port=4000,
        wire_sip_port=41234,
        wire_rtp_port=61002,
    )


class _Junk:
    """Deterministic junk bytes (one xorshift32 stream)."""

    def __init__(self, seed: int):
        self.state = seed

    def __call__(self, count: int) -> bytes:
        self.state, out = prng_bytes(self.state, count)
        return out


# (ms after the call's INVITE, payload) from JUNK_SRC:5060 to the callee's port 5060, after 64
# bytes of binary junk: a keep-alive; broken SIP: truncated headers / no Call-ID; a status line
# without reason and headers; a request line with a bad version; non-UTF-8 bytes
_BROKEN_SIP = [
    (301, b"\r\n\r\n"),
    (
        310,
        b"INVITE sip:+3522000999@198.51.100.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKjunk\r\nFrom: <sip",
    ),
    (320, b"SIP/2.0 200\r\n\r\n"),
    (
        330,
        b"INVITE sip:x@y SIP/9.9\r\nCall-ID: \xff\xfe\xfd\r\nCSeq: one INVITE\r\nContent-Length: -5\r\n\r\n",
    ),
    (
        340,
        b"OPTIONS sip:\xff\xfe@198.51.100.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKopt\r\n"
        b"Call-ID: junk-options@192.0.2.7\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
    ),
]


def _broken_rtp(ssrc: int) -> list[tuple[int, bytes]]:
    """(ms, payload): truncated / inconsistent RTP for the call's own 5-tuple."""
    return [
        (0, struct.pack("!BBH", 0x80, 0, 1111) + b"\x00\x01\x02\x03"),  # 8 bytes
        (5, struct.pack("!BBHII", 0x8F, 0, 1112, 1234, ssrc) + b"\x00" * 8),  # CC=15 but no CSRC list
        # extension length runs past the end
        (9, struct.pack("!BBHIIHH", 0x90, 0, 1113, 1234, ssrc, 0xBEDE, 200) + b"\x00" * 4),
        # padding length larger than the packet
        (13, struct.pack("!BBHII", 0xA0, 0, 1114, 1234, ssrc) + b"\x00" * 3 + b"\xf0"),
        (17, b""),  # empty UDP datagram
    ]


def _ether_udp(ipid: int, sport: int, dport: int, load: bytes) -> bytearray:
    """An Ethernet/IPv4/UDP frame from JUNK_SRC to JUNK_DST (scapy's defaults otherwise)."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    frame = (
        Ether(src=mac_for(JUNK_SRC), dst=mac_for(JUNK_DST))
        / IP(src=JUNK_SRC, dst=JUNK_DST, id=ipid, ttl=64, flags=0)
        / UDP(sport=sport, dport=dport)
        / Raw(load=load)
    )
    return bytearray(bytes(frame))


def _bad_frames(cap: Capture, t0: int, rtp_port: int, junk: _Junk) -> None:
    """A frame truncated by the snap length; an IPv4 header with IHL 3; an IPv4 total length
    past the frame; a UDP length past the datagram; a runt Ethernet frame; ARP; unknown ethertype."""
    from scapy.layers.l2 import ARP, Ether
    from scapy.packet import Raw

    full = _ether_udp(7, 1000, 5060, b"INVITE sip:a@b SIP/2.0\r\n" + b"X" * 300)
    cap.add_raw(t0 + 900 * MS, bytes(full[:60]), orig_len=len(full))
    # (ms, IPv4 id, source port, destination port, load, offset in the frame, bytes written there)
    patched = [
        (910, 8, 1, 5060, b"x" * 20, 14, b"\x43"),
        (920, 9, 2, 5060, b"y" * 20, 16, struct.pack("!H", 1400)),
        (930, 10, 3, rtp_port, b"z" * 20, 38, struct.pack("!H", 900)),
    ]
    for ms, ipid, sport, dport, load, offset, patch in patched:
        frame = _ether_udp(ipid, sport, dport, load)
        frame[offset : offset + len(patch)] = patch
        cap.add_raw(t0 + ms * MS, bytes(frame))
    cap.add_raw(t0 + 940 * MS, bytes.fromhex("0200000000010200000000020800ab"))
    arp = ARP(op=1, hwsrc=mac_for(JUNK_SRC), psrc=JUNK_SRC, pdst=JUNK_DST, hwdst="00:00:00:00:00:00")
    cap.add_raw(t0 + 950 * MS, bytes(Ether(src=mac_for(JUNK_SRC), dst="ff:ff:ff:ff:ff:ff") / arp))
    unknown = Ether(src=mac_for(JUNK_SRC), dst=mac_for(JUNK_DST), type=0x88B5) / Raw(load=junk(46))
    cap.add_raw(t0 + 960 * MS, bytes(unknown))


def add_garbage(cap: Capture, t0: int) -> None:
    """Extras of malformed_mix, around call 18 (INVITE at t0)."""
    a, b = parties(18)
    junk = _Junk(0xC0FFEE)
    # garbage UDP between unrelated hosts, some to the SIP and to the call's RTP ports
    for k in range(12):
        cap.udp(t0 - 200 * MS + k * 37 * MS, JUNK_SRC, 30000 + k, JUNK_DST, 40000 + 3 * k, junk(20 + 17 * k))
    for ms, payload in [(300, junk(64)), *_BROKEN_SIP]:
        cap.udp(t0 + ms * MS, JUNK_SRC, 5060, b.ip, 5060, payload)
    # broken RTP on the call's own 5-tuple (must be ignored, not counted, not crash)
    t_rtp = t0 + 500 * MS + 1 * S + 3 * MS
    for ms, payload in _broken_rtp(0x1A2B0000 + 18):
        cap.udp(t_rtp + ms * MS, a.ip, a.rtp_port, b.ip, b.rtp_port, payload)
    # RTP version 1 and RTP-looking junk to unrelated ports
    for k in range(5):
        rtp_v1 = struct.pack("!BBHII", 0x40, 0, k, k * 160, 0xDEAD) + junk(160)
        cap.udp(t0 + 700 * MS + k * 20 * MS, JUNK_SRC, 16384, JUNK_DST, 16386, rtp_v1)
    _bad_frames(cap, t0, b.rtp_port, junk)
