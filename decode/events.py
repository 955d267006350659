"""RFC 4733 telephone-events (DTMF) of a call's legs, as call events, on the audio's clock.

RFC 4733 (which obsoletes RFC 2833) sends a key press as RTP packets of the ``telephone-event``
payload format, in the audio's stream and with the audio's clock (any rate: the format's
``clock_rate_hz`` from SDP is used). Each packet carries one 4-byte event block (section 2.3)::

     0                   1                   2                   3
    |     event     |E|R| volume    |          duration             |

* ``event``: 0-9 the digits, 10 ``*``, 11 ``#``, 12-15 ``A``-``D`` (section 3.2); any other code
  is named ``event N`` (flash, modem and fax tones, ...).
* The RTP timestamp is the *start* of the event, the same in every packet of one event; a new
  event (even the same digit pressed again) gets a new timestamp (section 2.5.1.1). That is what
  identifies an event here: SSRC, timestamp and code.
* ``duration`` grows in the updates (in RTP clock ticks since the start); ``E`` marks the end,
  and the end packet is sent three times (section 2.5.1.4). Updates and copies are folded into
  one event with the longest duration seen, so a lost end packet still yields the digit, with the
  last duration that arrived.
* An event longer than 0xFFFF ticks is sent as segments, each with a new timestamp advanced by
  0xFFFF (section 2.5.1.3): consecutive segments of one code are joined.
* ``volume`` is the tone's power in dBm0 with the sign dropped (0 to -63 dBm0).

An event's start on the capture clock comes from the same anchor as the leg's audio
(:class:`Anchor`, one per stretch of :mod:`decode.timeline`), so a digit sits exactly where its
tone would have been heard; where no audio anchor fits (a leg of only events, another clock, an
SSRC without audio, a timestamp that disagrees with the arrival), the arrival time of the event's
first packet is used. Events are never decoded as audio and never move the timeline: the timeline
filters them before placing anything.

DTMF sent in SIP INFO (``application/dtmf-relay``, ``Signal=5``) is signalling and would come
from ``capture.sip.dialog``; it is not handled here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from callrec.capture.model.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CapturedCall, CapturedLeg
from callrec.capture.model.serial import ts_diff
from callrec.decode.codecs import format_for

NS = 1_000_000_000
TELEPHONE_EVENT = "TELEPHONE-EVENT"
EVENT_BLOCK_BYTES = 4
MAX_SEGMENT_TICKS = 0xFFFF  # RFC 4733 2.5.1.3: longer events are split into segments
DTMF_NAMES = "0123456789*#ABCD"  # RFC 4733 section 3.2, events 0-15
# An anchored start is accepted if the event's first packet arrived no more than this much before
# it (packets cannot arrive before they are sent) and no more than LATE after it.
EARLY_TOLERANCE_NS = 20_000_000
LATE_TOLERANCE_NS = 1_000_000_000
SENDERS = {CALLER_TO_CALLEE: "caller", CALLEE_TO_CALLER: "callee"}


@dataclass(frozen=True, slots=True)
class Anchor:
    """Where one stretch of a leg's audio sits on the capture clock (set by :mod:`decode.timeline`).

    RTP timestamp ``rtp_ts`` was heard at ``capture_ns``; a timestamp ``t`` ticks later at
    ``capture_ns + t * 1e9 / clock_rate_hz * (1 + drift)``. The stretch's packets span
    ``span_ticks`` from ``rtp_ts``. Only ``rtp_ts`` modulo 2^32 matters (raw or extended), as
    timestamps are compared in 32-bit serial arithmetic.
    """

    ssrc: int
    clock_rate_hz: int
    rtp_ts: int
    span_ticks: int
    capture_ns: int
    drift: float = 0.0

    def ticks_to(self, rtp_ts: int) -> int:
        """Signed ticks from this anchor's timestamp to ``rtp_ts`` (32-bit serial arithmetic)."""
        return ts_diff(rtp_ts, self.rtp_ts)

    def distance(self, rtp_ts: int) -> int:
        """Ticks between ``rtp_ts`` and the stretch (0 inside it)."""
        ticks = self.ticks_to(rtp_ts)
        return max(-ticks, ticks - self.span_ticks, 0)

    def capture_time(self, rtp_ts: int) -> int:
        media_ns = self.ticks_to(rtp_ts) * NS / self.clock_rate_hz
        return self.capture_ns + round(media_ns * (1.0 + self.drift))


def anchored_time(
    anchors: Iterable[Anchor], ssrc: int, clock_rate_hz: int, rtp_ts: int, arrival_ns: int
) -> int | None:
    """Capture time of ``rtp_ts`` through the nearest stretch of the same SSRC and clock, or
    ``None`` if there is none or it disagrees with the packet's ``arrival_ns`` (the sender's
    timestamps then do not continue the audio's: a restart, another clock, a wild value)."""
    fitting = [a for a in anchors if a.ssrc == ssrc and a.clock_rate_hz == clock_rate_hz]
    if not fitting:
        return None
    at = min(fitting, key=lambda a: a.distance(rtp_ts)).capture_time(rtp_ts)
    if not -EARLY_TOLERANCE_NS <= arrival_ns - at <= LATE_TOLERANCE_NS:
        return None
    return at


def event_name(code: int) -> str:
    """``0``-``9``, ``*``, ``#``, ``A``-``D`` for RFC 4733 events 0-15, else ``event N``."""
    return DTMF_NAMES[code] if 0 <= code < len(DTMF_NAMES) else f"event {code}"


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    """One key press (or other RFC 4733 event) of one leg."""

    digit: str  # "0"-"9", "*", "#", "A"-"D" or "event N"
    start_ns: int  # capture time of the event's start (see the module docstring)
    duration_ms: float
    direction: str  # the leg: CALLER_TO_CALLEE or CALLEE_TO_CALLER
    volume_dbm0: int  # 0 to -63
    ssrc: int = 0
    rtp_ts: int = 0
    ended: bool = True  # an end packet (E bit) was seen
    anchored: bool = False  # start from the audio's anchor, not from the first packet's arrival

    @property
    def sender(self) -> str:
        """``caller`` or ``callee``: who pressed the key (the leg's sender)."""
        return SENDERS.get(self.direction, "")

    @property
    def detail(self) -> str:
        """E.g. ``duration 160 ms, volume -10 dBm0`` (``, end not seen`` if it was lost)."""
        text = f"duration {self.duration_ms:.0f} ms, volume {self.volume_dbm0} dBm0"
        return text if self.ended else text + ", end not seen"


@dataclass(slots=True)
class _Event:
    """Packets of one event folded together while reading the leg."""

    code: int
    ssrc: int
    rtp_ts: int
    clock_rate_hz: int
    first_arrival_ns: int
    duration_ticks: int = 0
    volume: int = 0
    ended: bool = False


def telephone_event_types(leg: CapturedLeg) -> dict[int, int]:
    """Payload types of the leg that are ``telephone-event``, with their RTP clock."""
    out: dict[int, int] = {}
    for pt in np.unique(leg.packets.payload_type).tolist():
        fmt = format_for(int(pt), leg.formats)
        if fmt is not None and fmt.encoding.upper() == TELEPHONE_EVENT and fmt.clock_rate_hz > 0:
            out[int(pt)] = fmt.clock_rate_hz
    return out


def dtmf_events(
    leg: CapturedLeg | None, anchors: Sequence[Anchor] = (), direction: str = ""
) -> tuple[DtmfEvent, ...]:
    """The leg's RFC 4733 events in time order (see the module docstring).

    ``anchors`` are the leg's audio anchors (:attr:`decode.timeline.LegTimeline.anchors`); without
    them every event starts at the arrival of its first packet.
    """
    if leg is None or len(leg.packets) == 0:
        return ()
    clocks = telephone_event_types(leg)
    if not clocks:
        return ()
    packets = leg.packets
    rows = np.flatnonzero(
        np.isin(packets.payload_type, list(clocks)) & (packets.payload_lengths >= EVENT_BLOCK_BYTES)
    )
    if rows.shape[0] == 0:
        return ()
    # The 4-byte blocks of all event packets at once (a handful of packets per key press).
    at = packets.payload_offsets[rows][:, None] + np.arange(EVENT_BLOCK_BYTES)
    blocks = packets.payload[at].astype(np.int64)
    found: dict[tuple[int, int, int], _Event] = {}
    columns = zip(
        rows.tolist(),
        blocks[:, 0].tolist(),
        blocks[:, 1].tolist(),
        ((blocks[:, 2] << 8) | blocks[:, 3]).tolist(),
        strict=True,
    )
    for row, code, flags, duration in columns:  # arrival order
        ssrc, rtp_ts = int(packets.ssrc[row]), int(packets.rtp_ts[row])
        event = found.get((ssrc, rtp_ts, code))
        if event is None:
            clock = clocks[int(packets.payload_type[row])]
            event = found[(ssrc, rtp_ts, code)] = _Event(code, ssrc, rtp_ts, clock, int(packets.ts_ns[row]))
        if duration >= event.duration_ticks:
            event.duration_ticks, event.volume = duration, flags & 0x3F
        event.ended |= bool(flags & 0x80)
    merged = _join_segments(sorted(found.values(), key=lambda e: e.first_arrival_ns))
    direction = direction or leg.direction
    out = []
    for event in merged:
        start = anchored_time(anchors, event.ssrc, event.clock_rate_hz, event.rtp_ts, event.first_arrival_ns)
        out.append(
            DtmfEvent(
                digit=event_name(event.code),
                start_ns=event.first_arrival_ns if start is None else start,
                duration_ms=event.duration_ticks * 1000 / event.clock_rate_hz,
                direction=direction,
                volume_dbm0=-event.volume,
                ssrc=event.ssrc,
                rtp_ts=event.rtp_ts,
                ended=event.ended,
                anchored=start is not None,
            )
        )
    return tuple(sorted(out, key=lambda e: e.start_ns))


def _join_segments(events: list[_Event]) -> list[_Event]:
    """Join the segments of long events (RFC 4733 2.5.1.3): a segment that reached the maximum
    duration and a later one of the same SSRC and code that starts where it ends."""
    out: list[_Event] = []
    open_at: dict[tuple[int, int, int], _Event] = {}  # (ssrc, code, next segment's rtp_ts)
    for event in events:
        head = open_at.pop((event.ssrc, event.code, event.rtp_ts), None)
        if head is not None:
            head.duration_ticks += event.duration_ticks
            head.volume, head.ended = event.volume, event.ended
            tail_ticks = event.duration_ticks
        else:
            head, tail_ticks = event, event.duration_ticks
            out.append(head)
        if tail_ticks >= MAX_SEGMENT_TICKS:
            next_ts = (event.rtp_ts + MAX_SEGMENT_TICKS) & 0xFFFF_FFFF
            open_at[(event.ssrc, event.code, next_ts)] = head
    return out


def call_dtmf_events(
    call: CapturedCall, anchors: Mapping[str, Sequence[Anchor]] | None = None
) -> tuple[DtmfEvent, ...]:
    """Both legs' events in time order; ``anchors`` by leg direction (missing: arrival times)."""
    found: list[DtmfEvent] = []
    for direction, leg in call.legs.items():
        found.extend(dtmf_events(leg, (anchors or {}).get(direction, ()), direction))
    return tuple(sorted(found, key=lambda e: e.start_ns))
