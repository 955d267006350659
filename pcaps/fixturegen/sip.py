"""SIP parties, SDP bodies and the messages of one dialog (the caller is always the UAC of the INVITE)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .frames import Capture
from .g711 import payload_type


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
    def contact(self) -> str:
        return f"{self.uri}:{self.sip_port}"

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
    p: Party,
    codec: str,
    session: int,
    direction: str = "sendrecv",
    extra: Iterable[str] = (),
    version: int | None = None,
) -> bytes:
    """An SDP offer / answer; ``version`` (o= session version) defaults to ``session``."""
    fam = "IP6" if ":" in p.adv_ip else "IP4"
    pt = payload_type(codec)
    lines = [
        "v=0",
        f"o={p.user} {session} {session if version is None else version} IN {fam} {p.adv_ip}",
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


def _message(start: str, headers: list[str], body: bytes = b"") -> bytes:
    hdrs = list(headers)
    if body:
        hdrs.append("Content-Type: application/sdp")
    hdrs.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([start, *hdrs]) + "\r\n\r\n").encode() + body


def _name_addr(header: str, p: Party, tagged: bool) -> str:
    tag = f";tag={p.tag}" if tagged else ""
    return f'{header}: "{p.display}" <{p.uri}>{tag}'


class Dialog:
    """One call's SIP messages on the wire; ``times`` keeps invite / answer / final / end (ns)."""

    def __init__(self, cap: Capture, call_id: str, caller: Party, callee: Party, branch_seed: int):
        self.cap = cap
        self.call_id = call_id
        self.a = caller
        self.b = callee
        self.seed = branch_seed
        self.invite_branch = self._branch("a")
        self.times: dict[str, int] = {}
        self.extra_invite_headers: list[str] = []

    def _branch(self, suffix: str) -> str:
        return f"z9hG4bK{self.seed:08x}{suffix}"

    def _headers(self, uac: Party, uas: Party, branch: str, cseq: str, to_tagged: bool) -> list[str]:
        """Via, From, To, Call-ID, CSeq of a transaction ``uac`` started (as its responses carry them)."""
        return [
            f"Via: SIP/2.0/UDP {uac.host}:{uac.sip_port};branch={branch};rport",
            _name_addr("From", uac, True),
            _name_addr("To", uas, to_tagged),
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq}",
        ]

    def _request_headers(self, branch: str, cseq: str, to_tagged: bool, by_caller: bool = True) -> list[str]:
        uac, uas = (self.a, self.b) if by_caller else (self.b, self.a)
        via, *rest = self._headers(uac, uas, branch, cseq, to_tagged)
        return [via, "Max-Forwards: 70", *rest]

    def _send(self, ts: int, msg: bytes, by_caller: bool = True) -> None:
        a, b = self.a, self.b
        if by_caller:
            self.cap.udp(ts, a.ip, a.src_sip_port, b.ip, b.sip_port, msg, "sip")
        else:
            self.cap.udp(ts, b.ip, b.sip_port, a.ip, a.src_sip_port, msg, "sip")

    def invite_bytes(self, sdp: bytes) -> bytes:
        headers = [
            *self._request_headers(self.invite_branch, "1 INVITE", to_tagged=False),
            f"Contact: <{self.a.contact}>",
            *self.extra_invite_headers,
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE",
            "User-Agent: callrec-fixture/1.0",
        ]
        return _message(f"INVITE {self.b.uri} SIP/2.0", headers, sdp)

    def invite(self, ts: int, sdp: bytes) -> None:
        self.times["invite"] = ts
        self._send(ts, self.invite_bytes(sdp))

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
        headers = self._headers(self.a, self.b, branch or self.invite_branch, f"{cseq} {method}", code != 100)
        if method == "INVITE" and code in (180, 183, 200):
            headers.append(f"Contact: <{self.b.contact}>")
        headers.append("Server: callrec-fixture/1.0")
        if method == "INVITE" and code >= 200:
            self.times.setdefault("final", ts)
            if code == 200:
                self.times["answer"] = ts
        self._send(ts, _message(f"SIP/2.0 {code} {reason}", headers, sdp), by_caller=False)

    def ack(self, ts: int, for_2xx: bool = True) -> None:
        branch = self._branch("c") if for_2xx else self.invite_branch
        ruri = self.b.contact if for_2xx else self.b.uri
        headers = self._request_headers(branch, "1 ACK", to_tagged=True)
        self._send(ts, _message(f"ACK {ruri} SIP/2.0", headers))

    def cancel(self, ts: int) -> None:
        self.times["end"] = ts
        headers = self._request_headers(self.invite_branch, "1 CANCEL", to_tagged=False)
        self._send(ts, _message(f"CANCEL {self.b.uri} SIP/2.0", headers))

    def bye(self, ts: int, by_caller: bool = True) -> None:
        """BYE and, 3 ms later, its 200 OK."""
        self.times["end"] = ts
        uac, uas = (self.a, self.b) if by_caller else (self.b, self.a)
        branch, cseq = (self._branch("d"), "2 BYE") if by_caller else (self._branch("e"), "1 BYE")
        headers = self._request_headers(branch, cseq, to_tagged=True, by_caller=by_caller)
        self._send(ts, _message(f"BYE {uas.contact} SIP/2.0", headers), by_caller)
        ok = self._headers(uac, uas, branch, cseq, True)
        self._send(ts + 3_000_000, _message("SIP/2.0 200 OK", ok), not by_caller)
