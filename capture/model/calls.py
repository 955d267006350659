"""What the capture side hands on when a call ends: :class:`CapturedCall` and its legs."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.capture.model.spilled import SpilledMedia

CALLER_TO_CALLEE = "caller->callee"
CALLEE_TO_CALLER = "callee->caller"
LEG_DIRECTIONS = (CALLER_TO_CALLEE, CALLEE_TO_CALLER)


class CallState(enum.StrEnum):
    SETUP = "setup"  # INVITE seen, no provisional response yet
    EARLY = "early"  # 1xx seen (ringing, session progress)
    ANSWERED = "answered"  # 2xx seen, no BYE (yet)
    COMPLETED = "completed"  # answered and ended by BYE
    CANCELLED = "cancelled"  # CANCEL before answer
    REJECTED = "rejected"  # 4xx / 6xx final response (busy, declined, not found, ...)
    REDIRECTED = "redirected"  # 3xx final response
    FAILED = "failed"  # 5xx final response, or no final response before the timeout
    UNSIGNALLED = "unsignalled"  # RTP with no SIP captured, paired into a call by heuristics


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One thing that happened in a call, for the catalogue's event table."""

    ts_ns: int
    kind: str  # "sip", "media", "note", later "dtmf", "hold", "pause", ...
    summary: str  # e.g. "INVITE", "180 Ringing", "BYE"
    sender: str = ""  # "caller", "callee" or "" when unknown
    detail: str = ""  # e.g. "retransmission", "sdp: 198.51.100.10:4000 sendrecv PCMU"


@dataclass(frozen=True, slots=True)
class Endpoint:
    address: str
    port: int

    def __str__(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class CapturedLeg:
    """One direction of a call's media. ``formats`` maps payload type to format (from SDP,
    static table as fallback). ``packets`` are in arrival order."""

    direction: str  # CALLER_TO_CALLEE or CALLEE_TO_CALLER
    formats: dict[int, MediaFormat]
    packets: RtpPackets
    sources: tuple[Endpoint, ...] = ()  # where packets came from, as seen
    destinations: tuple[Endpoint, ...] = ()  # where packets went (the receiver's SDP endpoint)
    rtcp_packets: int = 0
    encrypted: bool = False  # the receiver's SDP negotiated SRTP/ZRTP/DTLS-SRTP: payloads are ciphertext
    # packets older than ``packets``, still in a spill sink (a live capture's saver reads them back:
    # capture.tracking.handoff.resolve_spilled); None: ``packets`` are all of them
    spilled: SpilledMedia | None = None


@dataclass(frozen=True, slots=True)
class CapturedCall:
    call_id: str
    state: CallState
    started_ns: int  # first INVITE seen
    answered_ns: int | None
    ended_ns: int  # BYE / CANCEL / final response / last activity
    end_reason: str  # "bye", "cancel", "rejected 486 Busy Here", "timeout", "end of capture", ...
    caller: str  # number/user of the caller (P-Asserted-Identity, else From)
    callee: str  # number/user of the callee (To)
    caller_uri: str
    callee_uri: str
    request_uri: str
    caller_display: str = ""
    callee_display: str = ""
    final_status: int | None = None
    legs: dict[str, CapturedLeg] = field(default_factory=dict)
    events: tuple[CallEvent, ...] = ()
    sip_headers: dict[str, str] = field(default_factory=dict)  # selected headers of the INVITE
