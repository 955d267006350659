"""SIP over TCP: per-direction stream reassembly and message framing, bounded and capture-timed.

A passive recorder sees TCP segments, not a socket: they may be retransmitted, overlap, arrive out
of order, start mid-connection or be lost. :class:`SipStreams` keeps one byte stream per direction
of each connection (the caller's 4-tuple key) and returns complete SIP messages in stream order.

- Sequence numbers are 32-bit serial numbers (RFC 1982 via :func:`capture.model.serial.ts_diff`); each
  stream keeps an absolute byte position, so wrapping past 2^32 changes nothing.
- A SYN fixes the initial sequence number and the stream starts *synchronised* (at a message
  boundary). A stream first seen without SYN starts at that segment and *resynchronises*: it looks
  for a SIP start line (:func:`capture.sip.message.looks_like_sip`) at a line start, skipping what precedes.
- Bytes already received win: a segment entirely before the stream position or equal to held data
  is a retransmission; a partial one contributes only its new bytes (an overlap).
- Segments after a gap are held until the gap fills. When the held and buffered bytes exceed
  ``max_buffer``, or the gap is older than ``gap_timeout_ns``, the gap is given up: the partial
  message before it is dropped and the stream resynchronises after it.
- Messages are framed by Content-Length (:func:`capture.sip.message.message_length`; none means an empty
  body); CRLF keep-alives between messages are skipped. A message that does not start with a SIP
  start line loses synchronisation. A connection whose first bytes after the SYN are not SIP (HTTP,
  TLS), or one that skipped ``max_buffer`` bytes without ever yielding SIP, is marked not-SIP and
  its later bytes are dropped unread. A partial message over ``max_buffer`` is dropped (overflow).
- FIN ends the stream once every byte before it arrived; RST ends it at once. Streams idle longer
  than ``idle_timeout_ns`` are dropped, and at most ``max_streams`` are kept (least recently active
  evicted first). Time is the segments' ``ts_ns``; the clock is never read.

Counters (in the ``counters`` given), per segment: ``tcp_retransmission``, ``tcp_overlap``,
``tcp_out_of_order`` (held after a gap); per event: ``tcp_gap`` (a gap given up), ``tcp_resync``
(a stream starts looking for a start line: mid-stream start, gap, overflow, non-SIP data),
``tcp_overflow``, ``tcp_bytes_skipped`` (bytes dropped undelivered, keep-alives excluded); per
stream: ``tcp_not_sip``, ``tcp_incomplete`` (ended inside a message), ``tcp_idle_timeout``,
``tcp_evicted``.

Signalling seen but not readable is remembered per pair of hosts (:attr:`SipStreams.unreadable`,
at most ``max_streams`` pairs) and counted once per pair: ``sip_tls_connections`` (a TLS record on
the SIPS port 5061: encrypted signalling) and ``sip_websocket_connections`` (an HTTP upgrade to the
``sip`` WebSocket subprotocol, RFC 7118, whose frames are not parsed). The recorder names them in
the record of a call reconstructed from media alone between the same hosts.
"""

from __future__ import annotations

import bisect
import collections
import ipaddress
import re
from dataclasses import dataclass, field

from callrec.capture.model.errors import NeedMoreData, ParseError
from callrec.capture.model.serial import ts_diff
from callrec.capture.sip.message import MAX_START_LINE, looks_like_sip, message_length

SYN = 0x02
FIN = 0x01
RST = 0x04
SEQ_MASK = 0xFFFFFFFF

DEFAULT_MAX_BUFFER = 256 * 1024
DEFAULT_MAX_STREAMS = 10_000
DEFAULT_IDLE_TIMEOUT_NS = 300 * 1_000_000_000
DEFAULT_GAP_TIMEOUT_NS = 5 * 1_000_000_000

StreamKey = tuple[bytes, int, bytes, int]

SIPS_PORT = 5061
# RFC 7118: the handshake asks for the "sip" subprotocol; headers are case-insensitive.
_SIP_WEBSOCKET = re.compile(
    rb"^upgrade:[ \t]*websocket\b.*^sec-websocket-protocol:[^\r\n]*\bsip\b|"
    rb"^sec-websocket-protocol:[^\r\n]*\bsip\b.*^upgrade:[ \t]*websocket\b",
    re.I | re.M | re.S,
)


def host_text(address: bytes) -> str:
    """A 16-byte (IPv4-mapped for IPv4) address as text: ``198.51.100.7`` or ``2001:db8::1``."""
    ip = ipaddress.IPv6Address(address)
    return str(ip.ipv4_mapped or ip)


# A line that may start a SIP message: "SIP/2.0 ddd" or "TOKEN sip:/sips:/tel:" (verified with
# looks_like_sip once the line is complete). '^' under MULTILINE: the buffer start or after '\n'.
_START_CANDIDATE = re.compile(
    rb"^(?:SIP/2\.0 [0-9]{3}|[A-Za-z0-9.!%*_+`'~-]{1,32} (?:sips?|tel):)", re.M | re.I
)
_CRLF = b"\r\n"


@dataclass(slots=True)
class _Stream:
    next_seq: int  # 32-bit sequence number of the byte at ``pos``
    pos: int  # absolute stream offset of the next in-order byte (end of ``buf``)
    last_ts: int
    synced: bool  # ``buf`` starts at a message boundary
    fresh: bool = False  # started at a SYN and has not framed its first message yet
    isn: int = -1  # the SYN's sequence number, -1 without SYN
    buf: bytearray = field(default_factory=bytearray)
    # Out-of-order data beyond ``pos``: non-overlapping pieces sorted by absolute start.
    starts: list[int] = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)
    held: int = 0
    gap_since: int = 0  # ts of the first segment held behind the current gap
    fin_pos: int = -1
    sip_seen: bool = False  # a SIP start line was found
    skipped: int = 0
    not_sip: bool = False


class SipStreams:
    """SIP messages out of TCP segments, per direction; see the module docstring for the rules."""

    def __init__(
        self,
        counters: collections.Counter[str],
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_streams: int = DEFAULT_MAX_STREAMS,
        idle_timeout_ns: int = DEFAULT_IDLE_TIMEOUT_NS,
        gap_timeout_ns: int = DEFAULT_GAP_TIMEOUT_NS,
    ) -> None:
        self.counters = counters
        self.max_buffer = max_buffer
        self.max_streams = max_streams
        self.idle_timeout_ns = idle_timeout_ns
        self.gap_timeout_ns = gap_timeout_ns
        self._streams: collections.OrderedDict[StreamKey, _Stream] = collections.OrderedDict()
        self.unreadable: dict[frozenset[str], str] = {}  # host pair -> "SIP over TLS (port 5061)"

    def __len__(self) -> int:
        """Streams currently tracked."""
        return len(self._streams)

    def feed(
        self, key: StreamKey, seq: int, flags: int, payload: bytes, ts_ns: int
    ) -> list[tuple[int, bytes]]:
        """One TCP segment of the direction ``key`` (src addr, src port, dst addr, dst port).

        Returns the SIP messages it completes, in stream order, as (``ts_ns``, message bytes
        without leading CRLFs)."""
        self.expire(ts_ns)
        seq &= SEQ_MASK
        st = self._streams.get(key)
        if flags & SYN:
            if st is not None and st.isn == seq:
                self.counters["tcp_retransmission"] += 1
            else:
                if st is not None:
                    self._end(key, st)
                st = _Stream(next_seq=(seq + 1) & SEQ_MASK, pos=0, last_ts=ts_ns, synced=True, fresh=True)
                st.isn = seq
                self._add(key, st)
            seq = (seq + 1) & SEQ_MASK  # the SYN takes one sequence number; data follows it
        elif st is None:
            if not payload:
                return []  # a bare ACK/FIN/RST of a stream we do not know
            st = _Stream(next_seq=seq, pos=0, last_ts=ts_ns, synced=False)
            self.counters["tcp_resync"] += 1
            self._add(key, st)
        self._streams.move_to_end(key)
        st.last_ts = ts_ns
        out: list[tuple[int, bytes]] = []
        start = st.pos + ts_diff(seq, st.next_seq)
        if payload and start == 0:
            self._note_unreadable(key, payload)
        if payload:
            self._place(st, start, payload, ts_ns)
        if flags & FIN:
            st.fin_pos = start + len(payload)
        if st.starts and (
            st.held + len(st.buf) > self.max_buffer or ts_ns - st.gap_since > self.gap_timeout_ns
        ):
            self._give_up_gap(st)
        self._drain(st, ts_ns, out)
        if flags & RST or (st.fin_pos >= 0 and st.pos >= st.fin_pos):
            self._end(key, st)
        return out

    def expire(self, now_ns: int) -> None:
        """Drop streams with no segment for more than ``idle_timeout_ns`` before ``now_ns``."""
        limit = now_ns - self.idle_timeout_ns
        while self._streams:
            key, st = next(iter(self._streams.items()))
            if st.last_ts >= limit:
                break
            self.counters["tcp_idle_timeout"] += 1
            self._end(key, st)

    def close(self) -> None:
        """End of input: forget every stream, counting partial messages and non-SIP streams."""
        for key, st in list(self._streams.items()):
            self._end(key, st)

    # -- internals ---------------------------------------------------------------------------------

    def _add(self, key: StreamKey, st: _Stream) -> None:
        self._streams[key] = st
        while len(self._streams) > self.max_streams:
            old_key, old = next(iter(self._streams.items()))
            self.counters["tcp_evicted"] += 1
            self._end(old_key, old)

    def _end(self, key: StreamKey, st: _Stream) -> None:
        """Forget a stream, counting what it leaves undelivered."""
        del self._streams[key]
        rest = len(st.buf.lstrip(_CRLF)) if st.synced else len(st.buf)
        if st.synced and rest and not st.not_sip:
            self.counters["tcp_incomplete"] += 1
        self._skip(st, rest + st.held)
        if st.skipped and not st.sip_seen and not st.not_sip:
            self.counters["tcp_not_sip"] += 1

    def _skip(self, st: _Stream, n: int) -> None:
        if n:
            st.skipped += n
            self.counters["tcp_bytes_skipped"] += n

    def _place(self, st: _Stream, start: int, data: bytes, ts_ns: int) -> None:
        """Add a segment's bytes at absolute ``start``: bytes already received win."""
        end = start + len(data)
        if end <= st.pos:
            self.counters["tcp_retransmission"] += 1
            return
        if start < st.pos:
            self.counters["tcp_overlap"] += 1
            data = data[st.pos - start :]
            start = st.pos
        if start == st.pos and not st.starts:
            self._append(st, data)
            return
        # Keep only the bytes not held yet.
        new: list[tuple[int, bytes]] = []
        cursor = start
        at = max(bisect.bisect_right(st.starts, start) - 1, 0)
        while at < len(st.starts) and st.starts[at] < end:
            p_start, p_end = st.starts[at], st.starts[at] + len(st.parts[at])
            if p_end > cursor:
                if p_start > cursor:
                    new.append((cursor, data[cursor - start : p_start - start]))
                cursor = max(cursor, p_end)
            at += 1
        if cursor < end:
            new.append((cursor, data[cursor - start :]))
        if not new:
            self.counters["tcp_retransmission"] += 1
            return
        if len(new) > 1 or new[0][0] != start or len(new[0][1]) != len(data):
            self.counters["tcp_overlap"] += 1
        if start > st.pos:
            self.counters["tcp_out_of_order"] += 1
        if not st.starts:
            st.gap_since = ts_ns
        for p_start, part in new:
            at = bisect.bisect_left(st.starts, p_start)
            st.starts.insert(at, p_start)
            st.parts.insert(at, part)
            st.held += len(part)
        self._take_held(st)

    def _append(self, st: _Stream, data: bytes) -> None:
        st.pos += len(data)
        st.next_seq = (st.next_seq + len(data)) & SEQ_MASK
        if st.not_sip:
            self._skip(st, len(data))
        else:
            st.buf += data

    def _take_held(self, st: _Stream) -> None:
        """Move held pieces that are now in order into the buffer."""
        while st.starts and st.starts[0] <= st.pos:
            p_start, part = st.starts.pop(0), st.parts.pop(0)
            st.held -= len(part)
            if p_start + len(part) > st.pos:
                self._append(st, part[st.pos - p_start :])

    def _give_up_gap(self, st: _Stream) -> None:
        """The bytes before the first held piece will not come: resynchronise after them."""
        self.counters["tcp_gap"] += 1
        self._lose_sync(st, len(st.buf))
        jump = st.starts[0] - st.pos
        st.pos += jump
        st.next_seq = (st.next_seq + jump) & SEQ_MASK
        self._take_held(st)
        if st.starts:
            st.gap_since = st.last_ts

    def _lose_sync(self, st: _Stream, drop: int) -> None:
        """Drop ``drop`` bytes from the buffer and look for the next start line from there."""
        self._skip(st, drop)
        del st.buf[:drop]
        if st.synced:
            self.counters["tcp_resync"] += 1
        st.synced = False
        st.fresh = False

    def _drain(self, st: _Stream, ts_ns: int, out: list[tuple[int, bytes]]) -> None:
        """Frame and return every complete message in the buffer."""
        buf = st.buf
        while buf and not st.not_sip:
            if not st.synced and not self._resync(st):
                return
            crlf = len(buf) - len(buf.lstrip(_CRLF))
            if crlf:
                del buf[:crlf]
                continue
            eol = buf.find(b"\n", 0, MAX_START_LINE + 2)
            if eol < 0:
                if len(buf) <= MAX_START_LINE:
                    return  # the start line is incomplete
            elif looks_like_sip(bytes(buf[: eol + 1])):
                st.sip_seen = True
                try:
                    n = message_length(bytes(buf))
                except NeedMoreData:
                    if len(buf) > self.max_buffer:
                        self.counters["tcp_overflow"] += 1
                        self._lose_sync(st, len(buf))
                    return
                except ParseError:
                    self._lose_sync(st, eol + 1)
                    continue
                out.append((ts_ns, bytes(buf[:n])))
                del buf[:n]
                st.fresh = False
                continue
            # Not a SIP start line where a message should begin.
            if st.fresh:
                self._mark_not_sip(st)
                return
            self._lose_sync(st, eol + 1 if eol >= 0 else len(buf))

    def _resync(self, st: _Stream) -> bool:
        """Skip to the next line that starts a SIP message; False if more data is needed."""
        buf = st.buf
        begin = 0
        while True:
            match = _START_CANDIDATE.search(buf, begin)
            if match is None:
                break
            eol = buf.find(b"\n", match.start())
            if eol < 0:
                self._skip(st, match.start())  # a candidate line, still incomplete: keep it
                del buf[: match.start()]
                return False
            if looks_like_sip(bytes(buf[match.start() : eol + 1])):
                self._skip(st, match.start())
                del buf[: match.start()]
                st.synced = st.sip_seen = True
                return True
            begin = eol + 1
        # No candidate: keep only a last partial line that may still become one.
        keep = len(buf) - (buf.rfind(b"\n") + 1)
        if keep > MAX_START_LINE:
            keep = 0  # (the next bytes are then taken as a line start: looks_like_sip still decides)
        self._skip(st, len(buf) - keep)
        del buf[: len(buf) - keep]
        if not st.sip_seen and st.skipped > self.max_buffer:
            self._mark_not_sip(st)
        return False

    def _note_unreadable(self, key: StreamKey, payload: bytes) -> None:
        """Remember a connection's host pair if its first bytes are SIP we cannot read."""
        src, sport, dst, dport = key
        if (
            len(payload) >= 3
            and 0x14 <= payload[0] <= 0x17
            and payload[1] == 3
            and SIPS_PORT in (sport, dport)
        ):
            what, counter = f"SIP over TLS (port {SIPS_PORT})", "sip_tls_connections"
        elif payload.startswith(b"GET ") and _SIP_WEBSOCKET.search(payload[:4096]):
            what, counter = "SIP over WebSocket", "sip_websocket_connections"
        else:
            return
        pair = frozenset((host_text(src), host_text(dst)))
        if pair not in self.unreadable and len(self.unreadable) < self.max_streams:
            self.unreadable[pair] = what
            self.counters[counter] += 1

    def _mark_not_sip(self, st: _Stream) -> None:
        """Stop reading a stream that is not SIP (its later bytes are dropped unread)."""
        self.counters["tcp_not_sip"] += 1
        st.not_sip = True
        self._skip(st, len(st.buf) + st.held)
        st.buf.clear()
        st.starts.clear()
        st.parts.clear()
        st.held = 0
