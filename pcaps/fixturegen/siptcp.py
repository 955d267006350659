"""SIP over TCP (issue 3): one connection carries a whole dialog, cut into segments the hard way:
two messages in one segment, one message in three segments sent out of order, a retransmitted
segment, CRLF keep-alives (RFC 5626 ping / pong), a server sequence number that wraps past 2^32."""

from __future__ import annotations

import dataclasses

from .calls import CALLEE, CALLER, media_endpoints, parties, standard_leg
from .constants import MS, S, scenario_start_ns
from .expected import expected_call
from .fixture import Fixture
from .frames import Capture
from .rtp import emit_leg
from .signals import noise
from .sip import Dialog, make_sdp

US = 1000
CLIENT_PORT = 49170


class TcpDialog(Dialog):
    """A Dialog whose Via says TCP."""

    def _headers(self, uac, uas, branch, cseq, to_tagged):
        via, *rest = super()._headers(uac, uas, branch, cseq, to_tagged)
        return [via.replace("SIP/2.0/UDP", "SIP/2.0/TCP"), *rest]


class _Sent:
    """Stands in for the capture while the dialog writes its messages: keeps them in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, bool, bytes]] = []  # (time, from the client, bytes)
        self.client = ""

    def udp(self, ts_ns: int, src: str, sport: int, dst: str, dport: int, payload: bytes, kind: str) -> None:
        self.messages.append((ts_ns, src == self.client, payload))


class TcpConnection:
    """One TCP connection between client and server on ``cap``; both sides' next sequence numbers."""

    def __init__(
        self, cap: Capture, client: tuple[str, int], server: tuple[str, int], isn_c: int, isn_s: int
    ):
        self.cap = cap
        self.ends = {True: client, False: server}
        self.next = {True: isn_c, False: isn_s}

    def segment(self, ts: int, from_client: bool, seq: int, flags: str, data: bytes = b"") -> None:
        from scapy.layers.inet import TCP
        from scapy.packet import Raw

        (src, sport), (dst, dport) = self.ends[from_client], self.ends[not from_client]
        ack = self.next[not from_client] if "A" in flags else 0
        tcp = TCP(
            sport=sport,
            dport=dport,
            seq=seq & 0xFFFFFFFF,
            ack=ack & 0xFFFFFFFF,
            flags=flags,
            window=64240,
            urgptr=0,
            options=[],
        )
        pkt = self.cap.ip_layer(src, dst, proto=6) / tcp
        if data:
            pkt = pkt / Raw(load=data)
        self.cap.add_raw(ts, self.cap.link_for("sip").wrap(pkt, src, dst), "sip")

    def handshake(self, ts: int) -> None:
        self.segment(ts, True, self.next[True], "S")
        self.next[True] += 1
        self.segment(ts + 300 * US, False, self.next[False], "SA")
        self.next[False] += 1
        self.segment(ts + 600 * US, True, self.next[True], "A")

    def send(
        self,
        ts: int,
        from_client: bool,
        data: bytes,
        cuts: tuple[int, ...] = (),
        order: tuple[int, ...] | None = None,
        again: int | None = None,
    ) -> None:
        """``data`` as segments cut at ``cuts``, sent in ``order`` 100 us apart (``again``: that
        segment once more 5 ms later, a retransmission); the peer's ACK 400 us after the last."""
        bounds = [0, *cuts, len(data)]
        parts = [(bounds[k], data[bounds[k] : bounds[k + 1]]) for k in range(len(bounds) - 1)]
        base = self.next[from_client]
        self.next[from_client] += len(data)
        for k, idx in enumerate(order or range(len(parts))):
            off, chunk = parts[idx]
            self.segment(ts + k * 100 * US, from_client, base + off, "PA", chunk)
        self.segment(ts + len(parts) * 100 * US + 300 * US, not from_client, self.next[not from_client], "A")
        if again is not None:
            off, chunk = parts[again]
            self.segment(ts + 5 * MS, from_client, base + off, "PA", chunk)

    def close(self, ts: int) -> None:
        self.segment(ts, True, self.next[True], "FA")
        self.next[True] += 1
        self.segment(ts + 300 * US, False, self.next[False], "FA")
        self.next[False] += 1
        self.segment(ts + 600 * US, True, self.next[True], "A")


def _tcp_call(i: int, n: int, port: int, name: str, label: str) -> Fixture:
    cap = Capture()
    t0 = scenario_start_ns(i)
    a, b = parties(n)
    a = dataclasses.replace(a, wire_sip_port=CLIENT_PORT)
    b = dataclasses.replace(b, sip_port=port)
    sent = _Sent()
    sent.client = a.ip
    d = TcpDialog(sent, f"fx{n:02d}-{label}-{t0 // S:x}@{a.ip}", a, b, branch_seed=0x5EED0000 + n)  # type: ignore[arg-type]
    d.invite(t0, make_sdp(a, "PCMU", 1000 + n))
    d.response(t0 + 4 * MS, 100, "Trying")
    d.response(t0 + 60 * MS, 180, "Ringing")
    t200 = t0 + 500 * MS
    d.response(t200, 200, "OK", sdp=make_sdp(b, "PCMU", 2000 + n))
    d.ack(t200 + 8 * MS)
    caller = standard_leg(CALLER, "PCMU", n, t200, 150)
    callee = standard_leg(CALLEE, "PCMU", n, t200, 150, signal=noise(1000 * n + 2, 10000))
    legs = [caller, callee]
    d.bye(max(leg.end_ns for leg in legs) + 40 * MS)
    d.cap = cap
    msgs = sent.messages
    assert len(msgs) == 7, len(msgs)  # INVITE 100 180 200 ACK BYE 200
    (t_inv, _, invite), (_, _, trying), (t_180, _, ringing), (_, _, ok), (t_ack, _, ack) = msgs[:5]
    (t_bye, _, bye), (t_bye_ok, _, bye_200) = msgs[5:]
    # the server's initial sequence number is 0x300 before the wrap: its stream wraps inside the 200 OK
    conn = TcpConnection(cap, (a.ip, CLIENT_PORT), (b.ip, port), 0x1F2E3D4C + n, 0xFFFFFFFF - 0x300)
    conn.handshake(t_inv - 2 * MS)
    # the INVITE in three segments sent 1st, 3rd, 2nd; the 3rd retransmitted 5 ms later
    conn.send(t_inv, True, invite, cuts=(300, 600), order=(0, 2, 1), again=2)
    # 100 Trying and 180 Ringing in one segment (sent when the 180 is due)
    conn.send(t_180, False, trying + ringing)
    conn.send(t0 + 300 * MS, True, b"\r\n\r\n")  # keep-alive ping ...
    conn.send(t0 + 301 * MS, False, b"\r\n")  # ... and pong
    # the 200 OK split inside its headers and inside its SDP; the ACK on its own
    conn.send(t200, False, ok, cuts=(90, len(ok) - 40))
    conn.send(t_ack, True, ack)
    conn.send(t200 + 1 * S + 500 * MS, True, b"\r\n\r\n")
    conn.send(t200 + 1 * S + 500 * MS + 1 * MS, False, b"\r\n")
    # the BYE and its 200 OK: the 200 retransmitted as a whole (same bytes, same sequence number)
    conn.send(t_bye, True, bye)
    conn.send(t_bye_ok, False, bye_200, again=0)
    conn.close(t_bye_ok + 20 * MS)
    ends = media_endpoints(a, b)
    emit_leg(cap, caller, *ends[CALLER])
    emit_leg(cap, callee, *ends[CALLEE])
    where = "the standard port 5060" if port == 5060 else f"the non-standard port {port}"
    return Fixture(
        name,
        f"PCMU call signalled over one TCP connection to {where} (from {CLIENT_PORT}; Via SIP/2.0/TCP): "
        "SYN handshake, the INVITE in three segments sent 1st, 3rd, 2nd with the 3rd retransmitted, "
        "100 Trying and 180 Ringing in one segment, CRLF keep-alive ping/pong twice, the 200 OK in "
        "three segments (cut in its headers and in its SDP), the server's sequence numbers wrapping "
        "past 2^32 inside the 200 OK, the BYE's 200 OK retransmitted, FIN. Media over UDP as usual.",
        cap,
        [expected_call(d, "completed", legs)],
    )


def fx_sip_tcp(i: int) -> Fixture:
    return _tcp_call(i, 26, 5060, "sip_tcp", "tcp")


def fx_sip_tcp_port(i: int) -> Fixture:
    return _tcp_call(i, 27, 15070, "sip_tcp_port", "tcp15070")
