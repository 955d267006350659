"""Unsignalled calls: RTP whose SIP was not captured, recognised by its shape and paired up.

Signalling is often missing from a capture: it ran on another link, over TLS, or the capture
started in the middle of a call. RTP that no SIP dialog claims within the tracker's
:class:`~capture.streams.correlate.Unclaimed` window is handed here instead of being dropped.

* A *stream* is the packets of one (source endpoint, destination endpoint, SSRC).
* A *conversation* is every stream between two endpoints, either way round. It ends when all
  its streams have been idle for the tracker's media timeout (or at the end of the capture);
  its streams are then judged one by one, and the ones that look like RTP audio become the
  legs of one :class:`~capture.model.calls.CapturedCall` (state ``unsignalled``). The side that sent
  first is the caller; a conversation with streams one way only has one leg.
* A stream looks like RTP audio with enough packets over a long enough time, an audio payload
  type (RFC 3551: static 0-23, dynamic 96-127) for nearly all of them, sequence numbers and
  timestamps that mostly move forward, and not the shape of video (runs of large packets that
  share one timestamp). A stream whose SSRC a SIP call has just recorded is that call's media
  seen again behind a relay, not a call of its own.

Incoming packets are kept as columns in a pending list and filed per stream in bulk (every 200k
packets, half a media timeout, or when a conversation may have ended), so per-stream Python
work is paid rarely, not per packet or per batch.
Streams are capped; what does not fit, and what is rejected, is counted as ``rtp_unmatched``
packets, with the reason per stream (``unsignalled_rejected_<reason>``).
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    CallEvent,
    CallState,
    CapturedCall,
    CapturedLeg,
    Endpoint,
)
from callrec.capture.model.media import STATIC_PAYLOAD_TYPES, RtpPackets
from callrec.capture.model.packets import DatagramBatch, address_text
from callrec.capture.model.serial import unwrap_seq, unwrap_ts
from callrec.capture.streams.medialog import LegSpool

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

_IPV6_BIT = np.uint64(1 << 63)
_MOSTLY = 0.9  # share of packets (or steps) that must pass each shape check
_MAX_SEQ_STEP = 100  # a forward step of a sequence number beyond this counts against the stream
_MAX_REORDER = 20  # a step back of at most this many is reordering, not a broken stream
_VIDEO_SHARE = 0.3  # packets that continue a frame (same timestamp, next sequence number)...
_VIDEO_PAYLOAD = 200  # ...with payloads this large (median): video, not audio with RFC 4733 events
_SSRC_MEMORY = 100_000  # SSRCs of recently finished SIP calls remembered for the relay check
_RELAY_SLACK_NS = 1_000_000_000  # a relayed copy may outlast what the SIP call kept (after BYE)
_SWEEP_QUIET_NS = 10_000_000_000  # a stream of a few packets quiet this long is junk (under pressure)
_FILE_PACKETS = 200_000  # pending packets are filed beyond this (or when a conversation may end)
_BYTE_PER_TICK = np.array([0, 8, 9])  # PCMU, PCMA, G.722: 8 bits per RTP clock tick (RFC 3551)
_SRTP_TAGS = np.array([4, 10, 16])  # HMAC-SHA1-32, HMAC-SHA1-80 (RFC 3711), AES-GCM (RFC 7714)


def ipv6_names(batch: DatagramBatch, rows: I64, dst: U64, src: U64) -> dict[int, Endpoint]:
    """Endpoints of the IPv6 keys among the rows (IPv4 keys name themselves, see
    :func:`endpoint_of`): one ``address_text`` per distinct endpoint, none for IPv4."""
    names: dict[int, Endpoint] = {}
    for keys, addr, port in ((dst, batch.dst_addr, batch.dst_port), (src, batch.src_addr, batch.src_port)):
        v6 = np.flatnonzero((keys & _IPV6_BIT) != 0)
        if v6.shape[0] == 0:
            continue
        _, first = np.unique(keys[v6], return_index=True)
        for i in v6[first].tolist():
            r = int(rows[i])
            names[int(keys[i])] = Endpoint(address_text(addr[r].tobytes()), int(port[r]))
    return names


def endpoint_of(key: int, names: dict[int, Endpoint]) -> Endpoint:
    """The endpoint behind a key: exact for IPv4 (``address << 16 | port``), looked up for IPv6."""
    if key in names:
        return names[key]
    if key >> 63:
        return Endpoint("::", 0)  # an IPv6 key whose name was not kept (cannot happen via the tracker)
    return Endpoint(address_text(bytes(10) + b"\xff\xff" + (key >> 16).to_bytes(4, "big")), key & 0xFFFF)


_NEVER = 1 << 62
NS = 1_000_000_000


class Settings(Protocol):
    """What this module reads of :class:`capture.tracking.tracker.TrackerConfig`."""

    @property
    def unsignalled_min_packets(self) -> int: ...
    @property
    def unsignalled_min_s(self) -> float: ...
    @property
    def unsignalled_max_streams(self) -> int: ...
    @property
    def media_timeout_s(self) -> float: ...  # a conversation quiet this long has ended
    @property
    def max_call_s(self) -> float: ...


@dataclass(slots=True)
class _Stream:
    src: int
    dst: int
    ssrc: int
    spool: LegSpool = field(default_factory=LegSpool)
    first_ns: int = _NEVER
    last_ns: int = -_NEVER


@dataclass(slots=True)
class _Conversation:
    streams: list[_Stream] = field(default_factory=list)
    first_ns: int = _NEVER
    last_ns: int = -_NEVER


class UnsignalledCalls:
    """Collects unclaimed RTP per stream and turns finished conversations into calls."""

    def __init__(self, counters: collections.Counter[str], settings: Settings) -> None:
        self.counters = counters
        self.min_packets = settings.unsignalled_min_packets
        self.min_duration_ns = int(settings.unsignalled_min_s * NS)
        self.idle_ns = int(settings.media_timeout_s * NS)
        self.max_call_ns = int(settings.max_call_s * NS)
        self.max_streams = settings.unsignalled_max_streams
        self._pending: list[tuple[RtpPackets, U64, U64]] = []  # filed into streams in bulk, rarely
        self._pending_count = 0
        self._names: dict[int, Endpoint] = {}
        self._streams: dict[tuple[int, int, int], _Stream] = {}
        self._by_endpoint: dict[int, list[_Stream]] = {}  # endpoint -> streams from or to it
        self._conversations: dict[tuple[int, int], _Conversation] = {}
        self._signalled: dict[int, tuple[int, int]] = {}  # SSRC recorded by a SIP call -> its span
        self._refused: set[tuple[int, int, int]] = set()  # streams turned away at the cap (counted once)

    def __bool__(self) -> bool:
        return bool(self._pending or self._streams)

    # -- input ----------------------------------------------------------------------------------

    def add(self, packets: RtpPackets, dst: U64, src: U64, names: dict[int, Endpoint] | None) -> None:
        """Packets that expired from the unclaimed buffer with nobody claiming them."""
        if len(packets):
            self._pending.append((packets, dst, src))
            self._pending_count += len(packets)
            if names:
                self._names.update(names)

    def note_signalled(self, call: CapturedCall) -> None:
        """Remember the SSRCs a finished SIP call recorded, and when (the relay check)."""
        for leg in call.legs.values():
            ssrc, ts = leg.packets.ssrc, leg.packets.ts_ns
            for value in np.unique(ssrc).tolist():
                mine = ts[ssrc == value]
                self._signalled.pop(value, None)
                self._signalled[value] = (int(mine.min()), int(mine.max()))
        while len(self._signalled) > _SSRC_MEMORY:
            del self._signalled[next(iter(self._signalled))]

    def adopt(self, key: int, receiving_leg: int, sending_leg: int) -> list[tuple[int, RtpPackets]]:
        """An SDP has named ``key`` while its media was still flowing (the tracker found some in
        the unclaimed window): the older part of those streams is that call's too."""
        return [
            (receiving_leg if stream.dst == key else sending_leg, stream.spool.packets())
            for stream in self._take(key)
        ]

    def discard(self, key: int) -> int:
        """Drop the streams from or to ``key`` (an SDP says it is not audio); returns packets."""
        return sum(stream.spool.count for stream in self._take(key))

    def _take(self, key: int) -> list[_Stream]:
        """Remove and return the streams from or to ``key``."""
        k = np.uint64(key)
        if any(bool(((d == k) | (s == k)).any()) for _, d, s in self._pending):
            self._file()
        streams = list(self._by_endpoint.get(key, ()))
        for stream in streams:
            self._forget(stream)
        return streams

    # -- output ---------------------------------------------------------------------------------

    def finish_idle(self, now_ns: int) -> list[CapturedCall]:
        """Calls whose streams have all gone quiet (or that ran longer than the longest call)."""
        if self._pending and (
            self._pending_count > _FILE_PACKETS
            or now_ns - int(self._pending[0][0].ts_ns[0]) > self.idle_ns // 2
        ):
            self._file()  # so that no conversation can be idle for longer unseen
        due = self._due(now_ns)
        if due and self._pending and self._pending_touches(due):
            self._file()  # their latest packets may still be pending
            due = self._due(now_ns)
        finished = []
        for ckey, reason in due:
            call = self._finish(ckey, reason)
            if call is not None:
                finished.append(call)
        if len(self._streams) > self.max_streams // 2:
            self._sweep(now_ns)
        if len(self._streams) < self.max_streams:
            self._refused.clear()
        cutoff = now_ns - 2 * self.idle_ns
        while self._signalled and next(iter(self._signalled.values()))[1] < cutoff:
            del self._signalled[next(iter(self._signalled))]
        if not self._pending and len(self._names) > 2 * len(self._by_endpoint) + 100:  # streams gone
            self._names = {k: v for k, v in self._names.items() if k in self._by_endpoint}
        return finished

    def flush(self) -> list[CapturedCall]:
        """End of input: every conversation still open."""
        self._file()
        calls = [self._finish(ckey, "end of capture") for ckey in list(self._conversations)]
        return [c for c in calls if c is not None]

    # -- internals ------------------------------------------------------------------------------

    def _due(self, now_ns: int) -> list[tuple[tuple[int, int], str]]:
        due = []
        for ckey, conv in self._conversations.items():
            if now_ns - conv.last_ns > self.idle_ns:
                due.append((ckey, "rtp inactivity"))
            elif now_ns - conv.first_ns > self.max_call_ns:
                due.append((ckey, f"timeout: longer than {self.max_call_ns / 1e9:g} s"))
        return due

    def _pending_touches(self, due: list[tuple[tuple[int, int], str]]) -> bool:
        """Whether a pending packet may belong to one of these conversations (it is sent from one
        of their endpoints; an endpoint shared with another conversation only costs a filing)."""
        ends = np.array([key for (pair, _) in due for key in pair], dtype=np.uint64)
        return any(bool(np.isin(src, ends).any()) for _, _, src in self._pending)

    def _sweep(self, now_ns: int) -> None:
        """With the table half full, streams of a few packets quiet for a while are junk: drop them
        early, so that a flood of one-packet "streams" cannot crowd out real calls."""
        quiet_ns = min(self.idle_ns, _SWEEP_QUIET_NS)
        for stream in list(self._streams.values()):
            if stream.spool.count < self.min_packets and now_ns - stream.last_ns > quiet_ns:
                self._forget(stream)
                self.counters["unsignalled_rejected_too_few_packets"] += 1
                self.counters["rtp_unmatched"] += stream.spool.count

    def _file(self) -> None:
        """Sort the pending packets into their streams: one join and one sort for all of them."""
        if not self._pending:
            return
        joined = LegSpool()
        for packets, _, _ in self._pending:
            joined.append(packets)
        packets = joined.join()
        dst = np.concatenate([d for _, d, _ in self._pending])
        src = np.concatenate([s for _, _, s in self._pending])
        self._pending.clear()
        self._pending_count = 0
        ssrc = packets.ssrc
        order = np.lexsort((ssrc, dst, src))  # stable: arrival order within each stream
        s_src, s_dst, s_ssrc = src[order], dst[order], ssrc[order]
        cut = (s_src[1:] != s_src[:-1]) | (s_dst[1:] != s_dst[:-1]) | (s_ssrc[1:] != s_ssrc[:-1])
        starts = np.concatenate(([0], np.flatnonzero(cut) + 1))
        ends = np.append(starts[1:], order.shape[0])
        for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
            key = (int(s_src[lo]), int(s_dst[lo]), int(s_ssrc[lo]))
            stream = self._streams.get(key) or self._new_stream(key, hi - lo)
            if stream is None:
                continue
            chunk = packets.take(order[lo:hi])
            stream.spool.append(chunk)
            first, last = int(chunk.ts_ns[0]), int(chunk.ts_ns[-1])
            stream.first_ns, stream.last_ns = min(stream.first_ns, first), max(stream.last_ns, last)
            conv = self._conversations[_pair(key[0], key[1])]
            conv.first_ns, conv.last_ns = min(conv.first_ns, first), max(conv.last_ns, last)

    def _new_stream(self, key: tuple[int, int, int], packets: int) -> _Stream | None:
        if len(self._streams) >= self.max_streams:
            if key not in self._refused and len(self._refused) < self.max_streams:
                self._refused.add(key)
                self.counters["unsignalled_streams_dropped"] += 1
            self.counters["rtp_unmatched"] += packets
            return None
        stream = _Stream(*key)
        self._streams[key] = stream
        for endpoint in {stream.src, stream.dst}:
            self._by_endpoint.setdefault(endpoint, []).append(stream)
        self._conversations.setdefault(_pair(stream.src, stream.dst), _Conversation()).streams.append(stream)
        return stream

    def _forget(self, stream: _Stream) -> None:
        """Remove a stream from the tables (and its conversation when it was the last one)."""
        del self._streams[(stream.src, stream.dst, stream.ssrc)]
        for endpoint in {stream.src, stream.dst}:
            others = self._by_endpoint[endpoint]
            others.remove(stream)
            if not others:
                del self._by_endpoint[endpoint]
        ckey = _pair(stream.src, stream.dst)
        conv = self._conversations.get(ckey)
        if conv is not None:
            conv.streams.remove(stream)
            if not conv.streams:
                del self._conversations[ckey]

    def _finish(self, ckey: tuple[int, int], end_reason: str) -> CapturedCall | None:
        conv = self._conversations.pop(ckey)
        accepted: list[tuple[_Stream, RtpPackets]] = []
        for stream in list(conv.streams):
            self._forget(stream)
            packets = stream.spool.packets()
            reason = self._rejected(stream, packets)
            if reason is None:
                accepted.append((stream, packets))
            else:
                self.counters[f"unsignalled_rejected_{reason}"] += 1
                self.counters["rtp_unmatched"] += len(packets)
        if not accepted:
            return None
        return self._call(accepted, end_reason)

    def _rejected(self, stream: _Stream, p: RtpPackets) -> str | None:
        """Why a stream is not taken for RTP audio, or ``None`` (see the module docstring)."""
        n = len(p)
        span = self._signalled.get(stream.ssrc)
        if span is not None and stream.first_ns <= span[1] + _RELAY_SLACK_NS and stream.last_ns >= span[0]:
            return "relayed"  # the same SSRC at the same time: the SIP call's media, relayed
        if n < self.min_packets:
            return "too_few_packets"
        if int(p.ts_ns[-1]) - int(p.ts_ns[0]) < self.min_duration_ns:
            return "too_short"
        pt = p.payload_type
        if float(((pt <= 23) | (pt >= 96)).mean()) < _MOSTLY:
            return "payload_type"
        seq_step = np.diff(unwrap_seq(p.seq))
        forward = (seq_step >= -_MAX_REORDER) & (seq_step <= _MAX_SEQ_STEP)
        if float(forward.mean()) < _MOSTLY:
            return "sequence"
        ts_step = np.diff(unwrap_ts(p.rtp_ts))
        if float((ts_step >= 0).mean()) < _MOSTLY:
            return "timestamp"
        frame = np.flatnonzero((ts_step == 0) & (seq_step == 1)) + 1
        if frame.shape[0] > _VIDEO_SHARE * n and float(np.median(p.payload_lengths[frame])) >= _VIDEO_PAYLOAD:
            self.counters["video_rtp"] += n
            return "video"
        return None

    def _call(self, accepted: list[tuple[_Stream, RtpPackets]], end_reason: str) -> CapturedCall:
        accepted.sort(key=lambda sp: sp[0].first_ns)
        first = accepted[0][0]
        caller, callee = endpoint_of(first.src, self._names), endpoint_of(first.dst, self._names)
        legs: dict[str, CapturedLeg] = {}
        notes = []
        for direction, src, sender, receiver in (
            (CALLER_TO_CALLEE, first.src, caller, callee),
            (CALLEE_TO_CALLER, first.dst, callee, caller),
        ):
            mine = [p for s, p in accepted if s.src == src]
            if not mine:
                continue
            spool = LegSpool()
            for packets in mine:
                spool.append(packets)
            packets = spool.packets()
            encrypted = any(looks_encrypted(p) for p in mine)
            formats = dict(STATIC_PAYLOAD_TYPES)  # no SDP: dynamic payload types stay unknown
            legs[direction] = CapturedLeg(
                direction, formats, packets, (sender,), (receiver,), encrypted=encrypted
            )
            self.counters["rtp_packets"] += len(packets)
            notes.append(_describe(direction, len(mine), packets, encrypted))
        self.counters["unsignalled_streams"] += len(accepted)
        self.counters["unsignalled_calls"] += 1
        started = min(s.first_ns for s, _ in accepted)
        note = CallEvent(started, "note", "reconstructed without signalling", "", "; ".join(notes))
        return CapturedCall(
            call_id=f"unsignalled-{caller}-{callee}-{first.ssrc:08x}",
            state=CallState.UNSIGNALLED,
            started_ns=started,
            answered_ns=started,  # media flowed: as answered as a call gets
            ended_ns=max(s.last_ns for s, _ in accepted),
            end_reason=end_reason,
            caller=str(caller),
            callee=str(callee),
            caller_uri="",
            callee_uri="",
            request_uri="",
            legs=legs,
            events=(note,),
        )


def _describe(direction: str, streams: int, packets: RtpPackets, encrypted: bool) -> str:
    pts = np.unique(packets.payload_type).tolist()
    unknown = [pt for pt in pts if pt not in STATIC_PAYLOAD_TYPES]
    text = f"{direction}: {streams} stream(s), {len(packets)} packets, payload types {_listed(pts)}"
    if unknown:
        text += f" ({_listed(unknown)} dynamic, no SDP: not decodable)"
    if encrypted:
        text += " (payloads carry an SRTP authentication tag: encrypted, cannot record)"
    return text


def _listed(values: list[int]) -> str:
    return ",".join(map(str, values))


def looks_encrypted(p: RtpPackets) -> bool:
    """Whether a stream looks like SRTP, which appends an authentication tag to each payload: a
    G.711 or G.722 payload is then 4, 10 or 16 bytes longer than its timestamp step, where plain
    RTP carries exactly one byte per tick. (Other codecs cannot be told apart without SDP.)"""
    if len(p) < 2:
        return False
    pt = p.payload_type
    ts_step = np.diff(unwrap_ts(p.rtp_ts))
    seq_step = np.diff(unwrap_seq(p.seq))
    rows = np.flatnonzero(
        (seq_step == 1) & (ts_step > 0) & (pt[1:] == pt[:-1]) & np.isin(pt[:-1], _BYTE_PER_TICK)
    )
    if rows.shape[0] < 10:
        return False
    extra = p.payload_lengths[rows] - ts_step[rows]
    return float(np.isin(extra, _SRTP_TAGS).mean()) >= _MOSTLY


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a <= b else (b, a)
