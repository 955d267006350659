"""Calls seen through a mirroring tunnel (issue 3): every frame of a standard call wrapped in
GRE/ERSPAN type II or III or VXLAN on its way from a switch's mirror session to the collector, or
every UDP datagram sent as HEP v3 by a capture agent (see capture/tunnels.py for what is decoded)."""

from __future__ import annotations

import struct

from .calls import CallSpec, standard_call
from .constants import S, scenario_start_ns
from .fixture import Fixture
from .frames import Capture, mac_for
from .signals import noise

SWITCH, COLLECTOR = "203.0.113.250", "203.0.113.251"  # the mirror session's two ends
AGENT = "203.0.113.240"  # the HEP capture agent (the collector as above)
ERSPAN_SESSION = 0x2A
VXLAN_VNI = 0x1234AB
HEP_PORT = 9060
HEP_CAPTURE_ID = 2001


class MirrorCapture(Capture):
    """Every frame (Ethernet, as the call's hosts sent it) inside GRE/ERSPAN II (``erspan2``),
    GRE/ERSPAN III (``erspan3``) or VXLAN (``vxlan``) from SWITCH to COLLECTOR."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.gre_seq = 0

    def _outer(self, ts_ns: int, inner: bytes) -> bytes:
        from scapy.layers.inet import IP, UDP
        from scapy.layers.l2 import Ether
        from scapy.packet import Raw

        if self.kind == "vxlan":
            # the source port from a hash of the inner frame's addresses, as switches do
            h = sum(inner[:12]) * 2654435761 & 0xFFFF
            header = struct.pack("!B3xI", 0x08, VXLAN_VNI << 8)
            proto = UDP(sport=49152 | (h & 0x3FFF), dport=4789, chksum=0) / Raw(load=header + inner)
        else:
            self.gre_seq += 1
            index = self.gre_seq & 0xFFFFF  # ERSPAN II index: the port / direction, here a counter
            if self.kind == "erspan2":
                # GRE with S, protocol 0x88BE; ERSPAN II: version 1, VLAN 0, COS 0, En 3 (frames
                # kept as sent), T 0, session; reserved, index
                gre = struct.pack("!HHI", 0x1000, 0x88BE, self.gre_seq)
                erspan = struct.pack("!HHI", 1 << 12, (3 << 11) | ERSPAN_SESSION, index)
            else:
                # GRE with S, protocol 0x22EB; ERSPAN III: version 2, VLAN 0, COS 0, BSO 0, T 0,
                # session; timestamp (100 us units, low 32 bits); SGT 0; P 0, frame type 0
                # (Ethernet), hw id 1, D 0, granularity 1 (100 us), O 0
                gre = struct.pack("!HHI", 0x1000, 0x22EB, self.gre_seq)
                stamp = (ts_ns // 100_000) & 0xFFFFFFFF
                erspan = struct.pack("!HHIHH", 2 << 12, ERSPAN_SESSION, stamp, 0, (1 << 4) | (1 << 1))
            proto = Raw(load=gre + erspan + inner)
        ip = IP(src=SWITCH, dst=COLLECTOR, id=self.next_ipid(), ttl=64, flags=0, tos=0, proto=47)
        if self.kind == "vxlan":
            ip.proto = 17
        return bytes(Ether(src=mac_for(SWITCH), dst=mac_for(COLLECTOR)) / ip / proto)

    def add_raw(self, ts_ns: int, data: bytes, kind: str = "other", orig_len: int | None = None) -> None:
        super().add_raw(ts_ns, self._outer(ts_ns, data), kind, orig_len)


def _chunk(ctype: int, value: bytes) -> bytes:
    return struct.pack("!HHH", 0, ctype, 6 + len(value)) + value


class HepCapture(Capture):
    """Every UDP datagram of the call sent by a HEP v3 agent to the collector's port 9060: family,
    protocol, addresses, ports, time (the datagram's), protocol type (1 SIP, 4 RTP), capture id,
    payload. The agent sends each datagram 1 ms after it saw it."""

    def udp(
        self, ts_ns: int, src: str, sport: int, dst: str, dport: int, payload: bytes, kind: str = "other"
    ) -> None:
        import ipaddress

        from scapy.layers.inet import UDP
        from scapy.packet import Raw

        sec, ns = divmod(ts_ns, S)
        chunks = b"".join(
            [
                _chunk(1, b"\x02"),
                _chunk(2, b"\x11"),
                _chunk(3, ipaddress.IPv4Address(src).packed),
                _chunk(4, ipaddress.IPv4Address(dst).packed),
                _chunk(7, struct.pack("!H", sport)),
                _chunk(8, struct.pack("!H", dport)),
                _chunk(9, struct.pack("!I", sec)),
                _chunk(10, struct.pack("!I", ns // 1000)),
                _chunk(11, b"\x01" if kind == "sip" else b"\x04"),
                _chunk(12, struct.pack("!I", HEP_CAPTURE_ID)),
                _chunk(15, payload),
            ]
        )
        hep = b"HEP3" + struct.pack("!H", 6 + len(chunks)) + chunks
        pkt = self.ip_layer(AGENT, COLLECTOR) / UDP(sport=47060, dport=HEP_PORT) / Raw(load=hep)
        self.add_raw(ts_ns + 1_000_000, self.link.wrap(pkt, AGENT, COLLECTOR), kind)


def _mirrored(i: int, cap: Capture, spec: CallSpec, name: str, description: str) -> Fixture:
    return Fixture(name, description, cap, [standard_call(cap, scenario_start_ns(i), spec)])


def fx_erspan2(i: int) -> Fixture:
    return _mirrored(
        i,
        MirrorCapture("erspan2"),
        CallSpec(28, rtcp=True, callee_leg=dict(signal=noise(28002, 10000))),
        "erspan_ii",
        f"A whole PCMU call (with RTCP) as a switch mirrors it: every Ethernet frame inside "
        f"IPv4/GRE (S, protocol 0x88BE)/ERSPAN type II (session {ERSPAN_SESSION}) from {SWITCH} to "
        f"{COLLECTOR}.",
    )


def fx_erspan3(i: int) -> Fixture:
    return _mirrored(
        i,
        MirrorCapture("erspan3"),
        CallSpec(29, "PCMA", callee_leg=dict(signal=noise(29002, 10000))),
        "erspan_iii",
        f"A whole PCMA call inside IPv4/GRE (S, protocol 0x22EB)/ERSPAN type III (session "
        f"{ERSPAN_SESSION}, 100 us timestamps, frame type 0: Ethernet) from {SWITCH} to {COLLECTOR}.",
    )


def fx_vxlan(i: int) -> Fixture:
    return _mirrored(
        i,
        MirrorCapture("vxlan"),
        CallSpec(30, callee_leg=dict(signal=noise(30002, 10000))),
        "vxlan",
        f"A whole PCMU call, every Ethernet frame inside IPv4/UDP port 4789/VXLAN (VNI {VXLAN_VNI:#x}) "
        f"from {SWITCH} to {COLLECTOR}.",
    )


def fx_hep3(i: int) -> Fixture:
    return _mirrored(
        i,
        HepCapture(),
        CallSpec(31, callee_leg=dict(signal=noise(31002, 10000))),
        "hep3",
        f"A whole PCMU call as a HEP v3 agent ({AGENT}) sends it to a collector ({COLLECTOR}:"
        f"{HEP_PORT}): every SIP and RTP datagram in its own HEP3 packet (IPv4 addresses, ports, "
        "capture time, protocol type 1 SIP / 4 RTP, capture id, payload), 1 ms after it was seen.",
    )
