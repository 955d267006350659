"""Frames: scapy builds the headers, and every field it would choose itself is set here.

scapy is imported where it is used, so that the signal and G.711 modules (the tests' references)
import without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .capfile import Frame
from .constants import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_RAW

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD


def mac_for(ip: str) -> str:
    """A stable locally administered MAC per IP address."""
    h = 0
    for ch in ip.encode():
        h = (h * 131 + ch) & 0xFFFFFFFF
    return f"02:00:{(h >> 24) & 0xFF:02x}:{(h >> 16) & 0xFF:02x}:{(h >> 8) & 0xFF:02x}:{h & 0xFF:02x}"


@dataclass(frozen=True)
class Link:
    """How one capture encapsulates IP datagrams. kind: ether | vlan | qinq | sll | raw."""

    kind: str = "ether"
    vlan: int = 100
    outer_vlan: int = 200
    sll_local: str = ""  # Linux SLL: the capturing host's address (its packets are "outgoing")

    @property
    def linktype(self) -> int:
        return {"sll": LINKTYPE_LINUX_SLL, "raw": LINKTYPE_RAW}.get(self.kind, LINKTYPE_ETHERNET)

    def wrap(self, ip_pkt, src_ip: str, dst_ip: str) -> bytes:
        from scapy.layers.l2 import CookedLinux, Dot1AD, Dot1Q, Ether

        ethertype = ETHERTYPE_IPV6 if ":" in src_ip else ETHERTYPE_IPV4
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
        if ethertype == ETHERTYPE_IPV6:
            eth.type = ETHERTYPE_IPV6
        return bytes(eth / ip_pkt)


class Capture:
    """Collects frames of one fixture; IPv4 ids are a deterministic counter.

    ``iface_for`` maps a frame's kind ("sip" / "rtp" / "other") to a pcapng interface, whose
    encapsulation is ``links[iface]``; without it every frame goes through ``link``.
    """

    def __init__(
        self,
        link: Link | None = None,
        iface_for: Callable[[str], int] | None = None,
        links: dict[int, Link] | None = None,
    ):
        self.link = link or Link()
        self.frames: list[Frame] = []
        self._ipid = 0x1000
        self._order = 0
        self.iface_for = iface_for
        self.links: dict[int, Link] = links or {}

    def _next_order(self) -> int:
        self._order += 1
        return self._order

    def next_ipid(self) -> int:
        self._ipid = (self._ipid + 1) & 0xFFFF
        return self._ipid

    def ip_layer(self, src: str, dst: str, proto: int = 17):
        from scapy.layers.inet import IP
        from scapy.layers.inet6 import IPv6

        if ":" in src:
            return IPv6(src=src, dst=dst, nh=proto, hlim=64, fl=0, tc=0)
        return IP(src=src, dst=dst, id=self.next_ipid(), ttl=64, flags=0, tos=0, proto=proto)

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
        src: tuple[str, int],
        dst: tuple[str, int],
        payload: bytes,
        mtu: int,
        order: list[int],
    ) -> int:
        """One SIP datagram as IPv4 fragments of at most ``mtu`` bytes, emitted in ``order``
        (indices into the fragment list), 100 us apart. Returns the number of fragments."""
        from scapy.layers.inet import IP, UDP
        from scapy.packet import Raw

        # the checksum needs the pseudo header: build it inside a throw-away IP packet
        udp = UDP(sport=src[1], dport=dst[1]) / payload
        udp_bytes = bytes(IP(src=src[0], dst=dst[0], proto=17) / udp)[20:]
        step = (mtu - 20) // 8 * 8
        chunks = [udp_bytes[i : i + step] for i in range(0, len(udp_bytes), step)]
        ipid = self.next_ipid()
        for k, idx in enumerate(order):
            more = idx < len(chunks) - 1
            pkt = IP(
                src=src[0],
                dst=dst[0],
                id=ipid,
                ttl=64,
                tos=0,
                proto=17,
                flags="MF" if more else 0,
                frag=idx * step // 8,
            ) / Raw(load=chunks[idx])
            self.add_raw(ts_ns + k * 100_000, self.link_for("sip").wrap(pkt, src[0], dst[0]), "sip")
        assert sorted(order) == list(range(len(chunks))), (order, len(chunks))
        return len(chunks)

    def sorted_frames(self) -> list[Frame]:
        return sorted(self.frames)
