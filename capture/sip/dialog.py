"""SIP dialogs: one call's signalling state machine (sngrep-style, small enough to read at once).

``INVITE -> setup``, ``1xx -> early``, ``2xx -> answered``, ``BYE -> completed``,
``CANCEL / 487 -> cancelled``, ``3xx -> redirected``, ``4xx/6xx -> rejected``, ``5xx -> failed``.

A :class:`CallDialog` consumes SIP messages of one Call-ID and reports, for each message with a
session description, which side now receives media where (:class:`MediaOffer`): the tracker turns
those into endpoint bindings. Which side sent a message follows from the From tag: the caller's
requests and the callee's responses carry the caller's tag in From; the callee's requests (a BYE
or re-INVITE from the callee) carry the callee's tag there.

In-dialog requests (re-INVITE, INFO, UPDATE, MESSAGE, NOTIFY) also carry what a recorder acts on,
kept as call events: a key press sent as SIP INFO (``application/dtmf-relay`` with ``Signal=5``,
or ``application/dtmf`` with the digit as body) is a ``dtmf`` event like an RFC 4733 one, and each
``X-`` header of such a request (``X-Record: start``, ``X-Consent: granted``) is a ``header`` event
(summary the lower-case name, detail the value).
"""

from __future__ import annotations

from dataclasses import dataclass

from callrec.capture.model.calls import CallEvent, CallState, Endpoint
from callrec.capture.model.errors import ParseError
from callrec.capture.model.media import MediaFormat
from callrec.capture.sip.addresses import uri_user
from callrec.capture.sip.message import SipMessage
from callrec.capture.sip.sdp import AUDIO, T38, SdpMedia, parse_sdp, side_kind

CALLER = "caller"
CALLEE = "callee"

# How long a call stays in the table after it reached a final state, to absorb retransmissions,
# the ACK, late media in flight and (after 401/407) the authenticated retry of the INVITE.
DEFAULT_LINGER_NS = 2_000_000_000
# A softphone may ask its user for the password before retrying: X-Lite (wireshark-wiki/aaa.pcap)
# retried 17-52 s after the 407, on the same Call-ID (one call, as tshark's inventory counts it).
AUTH_RETRY_LINGER_NS = 60_000_000_000
# Once the BYE is answered (2xx), nothing more is expected but media still in flight (the tracker keeps
# media up to its after_end_grace_s after the BYE): the call is handed on sooner, so a live recorder
# writes it well within a second of the hang-up. On a mirror port, media a phone sent before its BYE is
# seen before the answer to that BYE, which takes a round trip: 250 ms more leaves a wide margin.
BYE_ANSWERED_LINGER_NS = 250_000_000
IN_DIALOG_CONTROL = frozenset({"INVITE", "INFO", "UPDATE", "MESSAGE", "NOTIFY"})
DTMF_DIGITS = "0123456789*#ABCD"

_TERMINAL = {
    CallState.COMPLETED,
    CallState.CANCELLED,
    CallState.REJECTED,
    CallState.REDIRECTED,
    CallState.FAILED,
}


@dataclass(frozen=True, slots=True)
class MediaOffer:
    """``side`` receives audio at ``endpoint`` (RTCP at ``rtcp``) with these payload formats.
    ``kind`` other than ``audio`` (``video``, ``other``, ``t38``: see :mod:`capture.streams.sidemedia`)
    names an endpoint of media that is not recorded."""

    side: str
    endpoint: Endpoint
    rtcp: Endpoint | None
    formats: dict[int, MediaFormat]
    direction: str
    encrypted: bool
    kind: str = AUDIO

    def describe(self) -> str:
        if self.kind == T38:
            return f"T.38 fax (udptl) {self.endpoint}: not recorded"
        if self.kind != AUDIO:
            return f"{self.kind} {self.endpoint}: not recorded"
        encodings = ",".join(sorted({f.encoding for f in self.formats.values()}))
        return f"sdp {self.endpoint} {self.direction} {encodings}"


def other_side(side: str) -> str:
    return CALLEE if side == CALLER else CALLER


class CallDialog:
    """The signalling state of one call. Feed it every SIP message with its Call-ID."""

    def __init__(self, invite: SipMessage, ts_ns: int) -> None:
        self.call_id = invite.call_id
        self.caller_tag = invite.from_tag or ""
        self.invite_cseq = invite.cseq[0]
        self.state = CallState.SETUP
        self.started_ns = ts_ns
        self.answered_ns: int | None = None
        self.ended_ns: int | None = None
        self.end_reason = ""
        self.final_status: int | None = None
        self.finish_at_ns: int | None = None  # when the tracker may hand the call on
        self.last_sip_ns = ts_ns
        self.cancel_seen = False
        self.on_hold: dict[str, bool] = {}  # side -> its latest SDP puts the call on hold
        self.fax = False  # the latest SDP moved the call to T.38 (an image stream and no audio)
        self._audio_pts: set[int] = set()  # payload types of audio sections (any SDP)
        self._video_pts: set[int] = set()  # ...and of RTP sections that are not audio
        self.events: list[CallEvent] = []
        self._seen: set[tuple[object, ...]] = set()
        frm = invite.from_addr
        to = invite.to_addr
        pai = invite.p_asserted_identity
        self.caller_uri = frm.uri if frm else ""
        self.callee_uri = to.uri if to else ""
        self.caller_display = (pai.display if pai and pai.display else "") or (frm.display if frm else "")
        self.callee_display = to.display if to else ""
        self.caller = uri_user(pai.uri) if pai and uri_user(pai.uri) else uri_user(self.caller_uri)
        self.callee = uri_user(self.callee_uri) or uri_user(invite.request_uri or "")
        self.request_uri = invite.request_uri or ""
        self.headers = {
            name: value
            for name in ("user-agent", "p-asserted-identity", "diversion", "x-queue")
            if (value := invite.header(name)) is not None
        }

    # -- message handling ---------------------------------------------------------------------

    def sender_of(self, msg: SipMessage) -> str:
        from_caller = (msg.from_tag or "") == self.caller_tag
        return CALLER if from_caller == msg.is_request else CALLEE

    def is_new_attempt(self, msg: SipMessage) -> bool:
        """An out-of-dialog INVITE with a higher CSeq: the caller retrying (e.g. with credentials)."""
        return msg.method == "INVITE" and not msg.to_tag and msg.cseq[0] > self.invite_cseq

    def on_message(self, msg: SipMessage, ts_ns: int) -> list[MediaOffer]:
        """Update the state with one message; return the media offers its SDP bodies make."""
        sender = self.sender_of(msg)
        cseq_num, cseq_method = msg.cseq
        key = (msg.method, msg.status_code, cseq_num, cseq_method, msg.via_branch, sender)
        self.last_sip_ns = ts_ns
        if key in self._seen:
            self.events.append(CallEvent(ts_ns, "sip", msg.summary(), sender, "retransmission"))
            return []
        self._seen.add(key)
        was_fax = self.fax
        offers = self._offers(msg, sender)
        detail = "; ".join(o.describe() for o in offers)
        self.events.append(CallEvent(ts_ns, "sip", msg.summary(), sender, detail))
        if self.fax != was_fax:
            change = "switched to T.38 fax: audio ends" if self.fax else "back to audio after T.38 fax"
            self.events.append(CallEvent(ts_ns, "sip", "T.38", sender, change))
        if msg.is_request:
            self._on_request(msg, ts_ns)
        elif cseq_method == "INVITE" and cseq_num == self.invite_cseq:
            self._on_invite_response(msg, ts_ns)
        elif (
            cseq_method == "BYE" and self.state is CallState.COMPLETED and 200 <= (msg.status_code or 0) < 300
        ):
            self.finish_at_ns = min(self.finish_at_ns or ts_ns, ts_ns + BYE_ANSWERED_LINGER_NS)
        return offers

    def _on_request(self, msg: SipMessage, ts_ns: int) -> None:
        method = msg.method
        if method in IN_DIALOG_CONTROL and msg.to_tag:
            self.events += control_events(msg, ts_ns, self.sender_of(msg))
        if method == "INVITE" and self.is_new_attempt(msg):
            self.invite_cseq = msg.cseq[0]
            if self.state in _TERMINAL and self.answered_ns is None:
                self.state = CallState.SETUP
                self.finish_at_ns = None
                self.ended_ns = None
                self.end_reason = ""
                self.final_status = None
        elif method == "CANCEL" and self.answered_ns is None:
            self.cancel_seen = True
            self._end(CallState.CANCELLED, ts_ns, "cancel")
        elif method == "BYE":
            # A BYE needs a confirmed dialog: if its 2xx was not captured, the call was answered anyway.
            self._end(CallState.COMPLETED, ts_ns, "bye")

    def _on_invite_response(self, msg: SipMessage, ts_ns: int) -> None:
        status = msg.status_code or 0
        if self.state in (CallState.ANSWERED, CallState.COMPLETED) and status >= 300:
            return  # a late error from another fork after one answered
        if 100 < status < 200:
            if self.state == CallState.SETUP:
                self.state = CallState.EARLY
        elif 200 <= status < 300:
            if self.answered_ns is None:
                self.answered_ns = ts_ns
            if self.state in (CallState.SETUP, CallState.EARLY, CallState.CANCELLED):
                # a 200 that crossed a CANCEL wins: the call was answered (a BYE follows)
                self.state = CallState.ANSWERED
                self.finish_at_ns = None
                self.ended_ns = None
                self.end_reason = ""
            self.final_status = status
        elif status >= 300:
            self.final_status = status
            reason = f"{status} {msg.reason or ''}".strip()
            if status == 487 or self.cancel_seen:
                self._end(CallState.CANCELLED, ts_ns, f"cancel ({reason})")
            elif status < 400:
                self._end(CallState.REDIRECTED, ts_ns, f"redirected ({reason})")
            elif 500 <= status < 600:
                self._end(CallState.FAILED, ts_ns, f"failed ({reason})")
            else:
                linger = AUTH_RETRY_LINGER_NS if status in (401, 407) else DEFAULT_LINGER_NS
                self._end(CallState.REJECTED, ts_ns, f"rejected ({reason})", linger)

    def _end(self, state: CallState, ts_ns: int, reason: str, linger_ns: int = DEFAULT_LINGER_NS) -> None:
        if self.state in _TERMINAL and self.state == state:
            return
        self.state = state
        self.ended_ns = ts_ns
        self.end_reason = reason
        self.finish_at_ns = ts_ns + linger_ns

    def expire(self, ts_ns: int, reason: str, *, failed: bool = True) -> None:
        """End a call without a final word from SIP: a timeout (an unanswered call then failed),
        or the end of the input (``failed=False``: the state stays what was last seen)."""
        if failed and self.state in (CallState.SETUP, CallState.EARLY):
            self.state = CallState.FAILED
        self.ended_ns = ts_ns
        self.end_reason = reason
        self.finish_at_ns = ts_ns

    @property
    def terminal(self) -> bool:
        return self.state in _TERMINAL

    @property
    def non_audio_payload_types(self) -> frozenset[int]:
        """Payload types only non-audio RTP sections use (video bundled with the audio)."""
        return frozenset(self._video_pts - self._audio_pts)

    @property
    def held(self) -> bool:
        """Whether either side's latest SDP holds the call (sendonly, recvonly, inactive, 0.0.0.0):
        no media is expected, so silence on the wire must not end the call."""
        return any(self.on_hold.values())

    # -- SDP ------------------------------------------------------------------------------------

    def _offers(self, msg: SipMessage, sender: str) -> list[MediaOffer]:
        offers: list[MediaOffer] = []
        for body in msg.sdp_bodies():
            try:
                sdp = parse_sdp(body)
            except ParseError:
                self.events.append(CallEvent(0, "sip", "SDP", sender, "unparseable SDP body"))
                continue
            self._note_sections(sdp.media)
            audio = sdp.audio()
            for media in audio:
                address = media.connection_address
                held = media.direction != "sendrecv" or address in ("0.0.0.0", "::")
                self.on_hold[sender] = held  # RFC 3264 hold (and RFC 2543's 0.0.0.0)
                if not address or media.port == 0 or address in ("0.0.0.0", "::"):
                    continue
                offers.append(
                    MediaOffer(
                        sender,
                        Endpoint(address, media.port),
                        _rtcp(media, address),
                        media.formats_by_pt(),
                        media.direction,
                        media.is_encrypted,
                    )
                )
            offers += self._side_offers(sdp.media, audio, sender)
        return offers

    def _note_sections(self, sections: tuple[SdpMedia, ...]) -> None:
        for media in sections:
            pts = set(media.formats_by_pt())
            if media.media.lower() == "audio":
                self._audio_pts |= pts
            elif "RTP" in media.protocol.upper():
                self._video_pts |= pts

    def _side_offers(
        self, sections: tuple[SdpMedia, ...], audio: list[SdpMedia], sender: str
    ) -> list[MediaOffer]:
        """Offers for the enabled sections that are not audio; one on an audio endpoint (BUNDLE) is
        left to the audio (its packets are told apart by payload type). Updates :attr:`fax`."""
        audio_at: set[tuple[str | None, int]] = set()  # audio endpoints (RTP, RTCP) stay audio
        for m in audio:
            audio_at.add((m.connection_address, m.port))
            if (rtcp := _rtcp(m, m.connection_address or "")) is not None:
                audio_at.add((rtcp.address, rtcp.port))
        offers = []
        for media in sections:
            kind = side_kind(media)
            address = media.connection_address
            if (
                kind is None
                or not address
                or address in ("0.0.0.0", "::")
                or (address, media.port) in audio_at
            ):
                continue
            rtcp = _rtcp(media, address) if kind != T38 else None
            if rtcp is not None and (rtcp.address, rtcp.port) in audio_at:
                rtcp = None
            offers.append(
                MediaOffer(sender, Endpoint(address, media.port), rtcp, {}, media.direction, False, kind)
            )
        if audio:
            self.fax = False
        elif any(o.kind == T38 for o in offers):
            self.fax = True
        return offers


def _rtcp(media: SdpMedia, address: str) -> Endpoint | None:
    if media.rtcp_mux:
        return None  # RTCP shares the RTP port; packets are told apart by type (RFC 5761)
    if media.rtcp_port:
        return Endpoint(media.rtcp_address or address, media.rtcp_port)
    return Endpoint(address, media.port + 1)


def control_events(msg: SipMessage, ts_ns: int, sender: str) -> list[CallEvent]:
    """What an in-dialog request tells a recorder: its ``X-`` headers, and a SIP INFO key press."""
    events = [
        CallEvent(ts_ns, "header", name, sender, value.strip())
        for name, value in msg.headers
        if name.startswith("x-")
    ]
    if msg.method == "INFO":
        digit = info_digit(msg.header("content-type") or "", msg.body)
        if digit:
            events.append(CallEvent(ts_ns, "dtmf", digit, sender, "SIP INFO"))
    return events


def info_digit(content_type: str, body: bytes) -> str:
    """The key of a SIP INFO body: ``application/dtmf-relay`` (``Signal=5``; ``Signal=10`` is ``*``
    and ``11`` is ``#`` in some phones) or ``application/dtmf`` (the key alone); "" when none."""
    kind = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("ascii", "replace")
    value = ""
    if kind == "application/dtmf-relay":
        for line in text.splitlines():
            name, _, rest = line.partition("=")
            if name.strip().lower() == "signal":
                value = rest.strip()
                break
    elif kind == "application/dtmf":
        value = text.strip()
    value = value.upper()
    if value.isdigit() and 10 <= int(value) <= 15:
        return DTMF_DIGITS[int(value)]
    return value if len(value) == 1 and value in DTMF_DIGITS else ""
