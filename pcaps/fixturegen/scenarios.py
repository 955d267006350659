"""The scenarios, in order: scenario i starts at the epoch + i x 10 minutes, so append new ones.

Most are standard calls that differ only in parameters (``Spec``, a row of ``SCENARIOS``); the
others are functions (``Custom``, see ``dialogs``). ``key`` is the short name ``--only`` also
accepts (the scenario functions' names before the table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .calls import CallSpec, parties, standard_call
from .constants import FRAME_SAMPLES, MS, S, scenario_start_ns
from .dialogs import fx_busy, fx_cancelled, fx_early_media
from .fixture import Custom, Fixture, Scenario
from .forks import fx_callid_reuse, fx_forked
from .frames import Capture, Link
from .midcall import fx_hold, fx_long_hold, fx_no_bye, fx_reinvite_port, fx_rtcp_mux, fx_ssrc_change
from .mirror import fx_erspan2, fx_erspan3, fx_hep3, fx_vxlan
from .signals import noise
from .siptcp import fx_sip_tcp, fx_sip_tcp_port
from .special import add_garbage, behind_nat, big_invite

Interface = tuple[Link, int, str]  # pcapng: encapsulation, tsresol (a power of ten), name


@dataclass(frozen=True)
class Spec:
    """A capture of standard calls (``calls``), optionally with extra frames (``extras``)."""

    key: str
    name: str
    description: str
    calls: tuple[CallSpec, ...]
    link: Link = Link()
    interfaces: tuple[Interface, ...] = ()  # pcapng with these interfaces, frames by ``iface_for``
    iface_for: Callable[[str], int] | None = None
    extras: Callable[[Capture, int], None] | None = None

    def build(self, index: int) -> Fixture:
        t0 = scenario_start_ns(index)
        links = {k: link for k, (link, _, _) in enumerate(self.interfaces)}
        cap = Capture(self.link, self.iface_for, links)
        calls = [standard_call(cap, t0, call) for call in self.calls]
        if self.extras:
            self.extras(cap, t0)
        if not self.interfaces:
            return Fixture(self.name, self.description, cap, calls)
        ifaces = [(link.linktype, tsresol, name) for link, tsresol, name in self.interfaces]
        return Fixture(self.name, self.description, cap, calls, "pcapng", ifaces)


def _rtp_on_iface_1(kind: str) -> int:
    return 1 if kind == "rtp" else 0


SCENARIOS: list[Scenario] = [
    Spec(
        "basic_pcmu",
        "basic_pcmu",
        "Basic PCMU call over Ethernet/IPv4: INVITE, 100, 180, 200, ACK, 3 s of "
        "media both ways (caller 440 Hz, callee 1000 Hz), one RTCP SR+SDES per side, BYE, 200.",
        (CallSpec(1, "PCMU", rtcp=True),),
    ),
    Spec(
        "basic_pcma",
        "basic_pcma",
        "Basic PCMA (G.711 A-law) call, otherwise like basic_pcmu.",
        (CallSpec(2, "PCMA", rtcp=True),),
    ),
    Spec(
        "seq_ts_wrap",
        "seq_ts_wrap",
        "Sequence numbers wrap at 65535 and RTP timestamps wrap at 2^32 in both legs "
        "of one PCMU call; caller loses the packet with seq 65535, callee's seq 65535/0 arrive swapped; "
        "noise signals so that any misplaced packet shows.",
        (
            CallSpec(
                3,
                seconds=4.0,
                # caller: seq wraps after packet 19 (65535 -> 0), that packet (seq 65535) is lost;
                # the RTP timestamp wraps between packets 49 and 50 (exactly on a packet boundary)
                caller_leg=dict(
                    seq0=65535 - 19,
                    ts0=2**32 - 50 * FRAME_SAMPLES,
                    lost=frozenset({19}),
                    signal=noise(3001, 12000),
                ),
                # callee: seq wraps after packet 99, and packets 99 (seq 65535) and 100 (seq 0)
                # arrive swapped; the timestamp wraps inside packet 40's span (ts of 41 = 80)
                callee_leg=dict(
                    seq0=65535 - 99,
                    ts0=2**32 - 41 * FRAME_SAMPLES + 80,
                    delay={99: 21 * MS},
                    signal=noise(3002, 10000),
                ),
            ),
        ),
    ),
    Spec(
        "loss_dup_reorder",
        "loss_dup_reorder",
        "PCMU call with known loss (caller seqs idx 40-42 and 97, callee idx 10), "
        "duplicates (caller idx 60, 61 late; callee idx 11) and reordering (caller idx 75, 120; "
        "callee idx 130). Lost slots must be silence of exactly 20 ms each.",
        (
            CallSpec(
                4,
                seconds=4.0,
                caller_leg=dict(
                    lost=frozenset({40, 41, 42, 97}),
                    dup={60: 3 * MS, 61: 27 * MS},  # 61's copy arrives after 62
                    delay={75: 30 * MS, 120: 65 * MS},  # 75 after 76; 120 after 123
                    signal=noise(4001, 12000),
                ),
                callee_leg=dict(lost=frozenset({10}), dup={11: 1 * MS}, delay={130: 21 * MS}),
            ),
        ),
    ),
    Spec(
        "one_way",
        "one_way_media",
        "Call answered normally (sendrecv) but the callee never sends RTP: "
        "the right channel must be all zeros for the whole recording.",
        (CallSpec(5, callee_sends=False),),
    ),
    Custom("early_media", fx_early_media),
    Custom("cancelled", fx_cancelled),
    Custom("busy", fx_busy),
    Spec(
        "vlan",
        "vlan_8021q",
        "Basic PCMU call, every frame tagged 802.1Q VLAN 100.",
        (CallSpec(9),),
        link=Link("vlan", vlan=100),
    ),
    Spec(
        "qinq",
        "qinq",
        "Basic PCMA call, every frame double-tagged: 802.1ad S-tag 200 (0x88a8) outside, "
        "802.1Q C-tag 300 (0x8100) inside.",
        (CallSpec(10, "PCMA"),),
        link=Link("qinq", vlan=300, outer_vlan=200),
    ),
    Spec(
        "ipv6",
        "ipv6_call",
        "Basic PCMU call entirely over IPv6 (SIP, SDP c=IN IP6, RTP).",
        (CallSpec(11, ipv6=True),),
    ),
    Spec(
        "fragmented_invite",
        "fragmented_invite",
        "PCMU call whose INVITE (big headers, ICE candidates in SDP, > 3000 bytes) "
        "is sent as three IPv4 fragments in the order 3rd, 1st, 2nd.",
        (CallSpec(12, invite_hook=big_invite),),
    ),
    Spec(
        "pcapng_two_ifaces",
        "pcapng_two_ifaces",
        "pcapng with two interfaces: SIP on interface 0 (Ethernet, if_tsresol "
        "10^-6), RTP and RTCP on interface 1 (raw IP, if_tsresol 10^-9, jitter with ns detail).",
        (
            CallSpec(
                13,
                rtcp=True,
                caller_leg=dict(jitter_unit_ns=1),
                callee_leg=dict(jitter_unit_ns=1, signal=noise(13002, 10000)),
            ),
        ),
        interfaces=((Link("ether"), 6, "eth0"), (Link("raw"), 9, "rtp0")),
        iface_for=_rtp_on_iface_1,
    ),
    Spec(
        "linux_sll",
        "linux_sll",
        "PCMA call captured on the callee's host with 'any' (Linux cooked capture v1, "
        "linktype 113): the callee's packets are 'outgoing' (pkttype 4), the caller's 'to us' (0).",
        (CallSpec(14, "PCMA"),),
        link=Link("sll", sll_local=parties(14)[1].ip),
    ),
    Spec(
        "two_calls",
        "two_calls",
        "Two overlapping calls sharing nothing (addresses, ports, SSRCs, codecs "
        "PCMU / PCMA, signals): call 2 starts 1.25 s after call 1.",
        (
            CallSpec(15, "PCMU"),
            CallSpec(
                16,
                "PCMA",
                at_ns=1 * S + 250 * MS,
                caller_leg=dict(signal={"kind": "tone", "hz": 660, "amplitude": 7000}),
                callee_leg=dict(signal=noise(16002, 11000)),
            ),
        ),
    ),
    Spec(
        "nat",
        "nat_symmetric_rtp",
        "Caller behind NAT: SDP offers 10.0.0.17:4000 but its RTP arrives from "
        "203.0.113.5:61002 (and SIP from 203.0.113.5:41234); the callee sends symmetric RTP back to "
        "203.0.113.5:61002. Legs must be bound through the callee's SDP endpoint.",
        # the callee answers symmetric RTP to 203.0.113.5:61002 from its own SDP port (50034)
        (CallSpec(17, caller=behind_nat(parties(17)[0])),),
    ),
    Spec(
        "malformed_mix",
        "malformed_mix",
        "A good PCMU call (with RTCP) surrounded by garbage: random UDP, binary junk "
        "and broken SIP on port 5060, truncated / inconsistent RTP on the call's own 5-tuple (8-byte "
        "header, CC=15 without CSRCs, extension and padding past the end, empty datagram), RTP "
        "version 1, a snaplen-truncated frame, bad IPv4 IHL / total length, bad UDP length, a runt "
        "frame, ARP, an unknown ethertype. Only the good call may come out, intact.",
        (CallSpec(18, rtcp=True),),
        extras=add_garbage,
    ),
    # issue 3, "Capture every call a real network carries"
    Custom("reinvite_port", fx_reinvite_port),
    Custom("hold", fx_hold),
    Custom("ssrc_change", fx_ssrc_change),
    Custom("forked", fx_forked),
    Custom("callid_reuse", fx_callid_reuse),
    Custom("rtcp_mux", fx_rtcp_mux),
    Custom("no_bye", fx_no_bye),
    Custom("sip_tcp", fx_sip_tcp),
    Custom("sip_tcp_port", fx_sip_tcp_port),
    Custom("erspan_ii", fx_erspan2),
    Custom("erspan_iii", fx_erspan3),
    Custom("vxlan", fx_vxlan),
    Custom("hep3", fx_hep3),
    Custom("long_hold", fx_long_hold),
]


def build(index: int) -> Fixture:
    return SCENARIOS[index].build(index)
