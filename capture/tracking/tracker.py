"""Correlation: SIP dialogs plus RTP streams in, finished calls out.

Per batch of UDP datagrams, in capture order:

1. classify every payload at once (numpy over the first two bytes): SIP candidate, RTP, RTCP, other;
2. walk the SIP candidates in order; the RTP/RTCP rows between two SIP messages form a segment that
   is routed in bulk by the :class:`~capture.streams.correlate.Correlator` (SDP bindings, latching);
3. routed RTP rows are parsed once per segment into a pending log (with a leg-id column), split into
   per-leg spools only every few hundred thousand packets or when a call ends (per-leg cost is rare).

A call ends on BYE/CANCEL/final failure (plus a short linger), on a timeout in capture time, or at
the end of the input; it is then handed on as a :class:`CapturedCall` (:mod:`capture.tracking.handoff`) and
forgotten. RTP no dialog claims goes on to :mod:`capture.streams.unsignalled`; video and T.38 fax are
kept apart by :mod:`capture.streams.sidemedia`. A live capture bounds the memory of the calls in
progress with :meth:`CallTracker.spill_pending` (once a second, all pending media to a
:class:`~capture.model.spilled.SpillSink`: sealed files on disk; :mod:`capture.tracking.spill_rounds`).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    CallEvent,
    CallState,
    CapturedCall,
    Endpoint,
)
from callrec.capture.model.errors import ParseError
from callrec.capture.model.media import RtpPackets
from callrec.capture.model.packets import DatagramBatch, address_text, endpoint_key, endpoint_keys
from callrec.capture.model.spilled import SpillSink
from callrec.capture.sip.dialog import CALLER, CallDialog, MediaOffer
from callrec.capture.sip.message import SipMessage, looks_like_sip, parse_datagram
from callrec.capture.sip.sdp import AUDIO
from callrec.capture.streams.correlate import NO_LEG, Correlator, Unclaimed
from callrec.capture.streams.medialog import MediaLog
from callrec.capture.streams.rtp import classify_payloads, parse_rtp_columns
from callrec.capture.streams.sidemedia import SideMedia
from callrec.capture.streams.unsignalled import UnsignalledCalls
from callrec.capture.tracking.handoff import TrackedCall, TrackedLeg, hand_on
from callrec.capture.tracking.spill_rounds import spill_log, spill_resident

log = logging.getLogger(__name__)

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class TrackerConfig:
    setup_timeout_s: float = 180.0  # no SIP while ringing -> failed
    media_timeout_s: float = 300.0  # answered, not on hold, no RTP and no SIP -> ended by timeout
    max_call_s: float = 12 * 3600.0  # any call, held or not, ends after this long without a BYE
    max_calls: int = 100_000  # calls in progress; new INVITEs beyond are counted and ignored
    pending_packets: int = 400_000  # split the pending media log into per-leg spools beyond this
    timeout_check_s: float = 1.0
    # RTP not signalled yet is kept this long (and this many packets): media before its SDP is kept
    orphan_window_s: float = 2.0
    orphan_packets: int = 100_000
    # Media later than this after a BYE / CANCEL / final failure is not the call's any more
    after_end_grace_s: float = 0.5
    # RTP unclaimed after orphan_window_s becomes "unsignalled" calls (off: rtp_unmatched, dropped)
    unsignalled: bool = True
    unsignalled_min_packets: int = 25
    unsignalled_min_s: float = 0.3
    unsignalled_max_streams: int = 10_000
    sip_ports: frozenset[int] = frozenset()  # SIP only to/from these ports (empty: any port, by content)
    # spilled media handed on unread, for a saver to read (capture.tracking.handoff): a live capture's setting
    defer_spilled: bool = False


class CallTracker:
    """Feed :class:`DatagramBatch` es in capture order; collect finished :class:`CapturedCall` s."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.counters: collections.Counter[str] = collections.Counter()
        self._calls: dict[str, TrackedCall] = {}
        self._legs: dict[int, tuple[TrackedCall, TrackedLeg]] = {}
        self._next_leg_id = 0
        self._correlator = Correlator(self.counters, self._live)
        cfg = self.config
        self._unsignalled = UnsignalledCalls(self.counters, cfg)
        sink = self._unsignalled if cfg.unsignalled else None
        self._unclaimed = Unclaimed(self.counters, int(cfg.orphan_window_s * NS), cfg.orphan_packets, sink)
        self._side = SideMedia(self.counters)  # video and T.38 endpoints
        self._pending = MediaLog()
        self._leg_last_ns = np.zeros(1024, dtype=np.int64)  # last media time per leg id
        self._leg_last_src = np.zeros(1024, dtype=np.uint64)  # last source endpoint key per leg id
        self._next_check_ns: int | None = None
        self._now_ns = 0

    # -- public ---------------------------------------------------------------------------------

    @property
    def calls_in_progress(self) -> int:
        return len(self._calls)

    def in_progress(self) -> list[CallDialog]:
        """The dialogs of the calls in progress (a live capture's status and controls read them)."""
        return [call.dialog for call in self._calls.values()]

    def memory_bytes(self) -> int:
        """Payload bytes held in memory for the calls in progress: their legs' unspilled media and the
        pending media log (not yet filed per leg)."""
        held = sum(leg.spool.resident_bytes for call in self._calls.values() for leg in call.legs.values())
        return held + self._pending.payload_bytes

    def spill_pending(self, sink: SpillSink) -> int:
        """Live capture, once a second: everything in memory for calls in progress goes to ``sink``
        (:func:`capture.tracking.spill_rounds.spill_log`: no leg keeps media in memory between rounds, and no
        piece is made per leg). Returns the packets moved."""
        moved = spill_resident(self._calls.values(), sink, self.counters)
        return moved + spill_log(self._pending, self._legs, sink, self.counters)

    def feed(self, batch: DatagramBatch) -> list[CapturedCall]:
        n = len(batch)
        finished: list[CapturedCall] = []
        if n == 0:
            return finished
        kinds = classify_payloads(batch.buffer, batch.payload_offsets, batch.payload_lengths)
        media_rows, text_rows = kinds.media, kinds.text
        if media_rows.shape[0]:
            media_dst = endpoint_keys(batch.dst_addr[media_rows], batch.dst_port[media_rows])
            media_src = endpoint_keys(batch.src_addr[media_rows], batch.src_port[media_rows])
            media_is_rtcp = kinds.rtcp
        else:
            media_dst = media_src = np.zeros(0, dtype=np.uint64)
            media_is_rtcp = np.zeros(0, dtype=np.bool_)
        media_ts = batch.ts_ns[media_rows]
        cuts = np.searchsorted(media_rows, text_rows)
        start = 0
        for row, cut in zip(text_rows.tolist(), cuts.tolist(), strict=True):
            finished += self._route_range(
                batch, media_rows, media_ts, media_dst, media_src, media_is_rtcp, start, cut
            )
            start = cut
            now = int(batch.ts_ns[row])
            if self._next_check_ns is None or now >= self._next_check_ns:
                finished.extend(self._check_timeouts(now))
            self._side.settle(batch, kinds, row)  # non-media datagrams so far: UDPTL or junk
            finished.extend(self._on_text(batch, row))
        finished += self._route_range(
            batch, media_rows, media_ts, media_dst, media_src, media_is_rtcp, start, media_rows.shape[0]
        )
        self._side.settle(batch, kinds, n)
        if kinds.zrtp.shape[0]:  # after the batch's SIP, so that its calls' endpoints are bound
            self._note_zrtp(batch, kinds.zrtp)
        now = int(batch.ts_ns[-1])
        self._now_ns = max(self._now_ns, now)
        if self._next_check_ns is None or now >= self._next_check_ns:
            finished.extend(self._check_timeouts(now))
        if self._pending.count > self.config.pending_packets:
            self._split_pending()
        return finished

    def _note_zrtp(self, batch: DatagramBatch, rows: npt.NDArray[np.int64]) -> None:
        """ZRTP (RFC 6189) keys the media in-band; the RTP after it is SRTP: mark the call encrypted."""
        self.counters["zrtp_packets"] += int(rows.shape[0])
        dst = endpoint_keys(batch.dst_addr[rows], batch.dst_port[rows])
        src = endpoint_keys(batch.src_addr[rows], batch.src_port[rows])
        _, legs = self._correlator.fan_out(self._correlator.resolve(dst, src))
        for leg_id in np.unique(legs[legs >= 0]).tolist():
            owner = self._legs.get(int(leg_id))
            for leg in owner[0].legs.values() if owner is not None else ():
                leg.zrtp = True

    def _route_range(
        self,
        batch: DatagramBatch,
        rows: npt.NDArray[np.int64],
        ts: npt.NDArray[np.int64],
        dst: npt.NDArray[np.uint64],
        src: npt.NDArray[np.uint64],
        is_rtcp: npt.NDArray[np.bool_],
        lo: int,
        hi: int,
    ) -> list[CapturedCall]:
        """Route media rows ``lo:hi``, cut where a timeout check is due (an ended call stops claiming)."""
        finished: list[CapturedCall] = []
        while lo < hi:
            cut = hi
            if self._next_check_ns is not None:
                cut = lo + int(np.searchsorted(ts[lo:hi], self._next_check_ns))
            if cut > lo:
                self._route(batch, rows[lo:cut], dst[lo:cut], src[lo:cut], is_rtcp[lo:cut])
            if cut >= hi:
                break
            finished.extend(self._check_timeouts(int(ts[cut])))
            lo = cut
        return finished

    def tick(self, now_ns: int) -> list[CapturedCall]:
        """Live capture: the clock moved to ``now_ns`` without packets; hand on calls now due."""
        self._now_ns = max(self._now_ns, now_ns)
        return self._check_timeouts(self._now_ns) if self._now_ns >= (self._next_check_ns or 0) else []

    def flush(self) -> list[CapturedCall]:
        """End of input: hand on every call still in progress."""
        self._unclaimed.expire(self._now_ns, everything=True)
        self._split_pending()
        finished = []
        for call in list(self._calls.values()):
            d = call.dialog
            if not d.terminal:
                last = max(d.last_sip_ns, self._last_media_ns(call))
                if d.state in (CallState.SETUP, CallState.EARLY):
                    d.expire(last, "end of capture before a final response", failed=False)
                else:
                    d.expire(last, "end of capture before BYE", failed=False)
            finished.append(self._finish(call))
        return finished + self._unsignalled.flush()  # after the SIP calls: relay copies are known

    # -- SIP ------------------------------------------------------------------------------------

    def _on_text(self, batch: DatagramBatch, row: int) -> list[CapturedCall]:
        data = batch.payload(row)
        if not data.strip(b"\r\n"):
            self.counters["sip_keepalive"] += 1
            return []
        ports = self.config.sip_ports
        if not looks_like_sip(data) or (
            ports and not {int(batch.src_port[row]), int(batch.dst_port[row])} & ports
        ):  # not SIP (UDPTL of a T.38 call, or junk), or SIP on a port not listed
            if not self._side.count_row(batch, row):
                self.counters["udp_not_sip_or_rtp"] += 1
            return []
        try:
            msg = parse_datagram(data)
        except ParseError as exc:
            self.counters[exc.reason if exc.reason.startswith("sip_") else f"sip_{exc.reason}"] += 1
            log.debug("SIP datagram %d skipped: %s", int(batch.numbers[row]), exc)
            return []
        self.counters["sip_messages"] += 1
        ts_ns = int(batch.ts_ns[row])
        finished: list[CapturedCall] = []
        call = self._calls.get(msg.call_id)
        if (
            call is not None
            and call.dialog.terminal
            and call.dialog.answered_ns is not None
            and msg.method == "INVITE"
            and not msg.to_tag
            and msg.cseq[0] != call.dialog.invite_cseq
        ):
            # A fresh INVITE on the Call-ID of a call that already ended: a new call.
            # (Unanswered calls keep theirs: an INVITE retried with credentials after 401/407.)
            finished.append(self._finish(call))
            call = None
        if call is None:
            if msg.method != "INVITE" or msg.to_tag:
                unknown = "sip_outside_known_call" if msg.method != "INVITE" else "sip_reinvite_unknown_call"
                self.counters[unknown] += 1
                return finished
            if len(self._calls) >= self.config.max_calls:
                self.counters["calls_over_limit"] += 1
                return finished
            call = self._new_call(msg, ts_ns)
        offers = call.dialog.on_message(msg, ts_ns)
        for offer in offers:
            self._bind(call, offer)
        return finished

    def _new_call(self, invite: SipMessage, ts_ns: int) -> TrackedCall:
        dialog = CallDialog(invite, ts_ns)
        legs = {d: TrackedLeg(self._alloc_leg_id(), d) for d in (CALLER_TO_CALLEE, CALLEE_TO_CALLER)}
        call = TrackedCall(dialog, legs, {})
        for leg in legs.values():
            self._legs[leg.leg_id] = (call, leg)
        self._correlator.add_call(legs[CALLER_TO_CALLEE].leg_id, legs[CALLEE_TO_CALLER].leg_id)
        self._calls[dialog.call_id] = call
        self.counters["calls_seen"] += 1
        return call

    def _alloc_leg_id(self) -> int:
        leg_id = self._next_leg_id
        self._next_leg_id += 1
        if leg_id >= self._leg_last_ns.shape[0]:
            size = self._leg_last_ns.shape[0]
            self._leg_last_ns = np.concatenate((self._leg_last_ns, np.zeros(size, dtype=np.int64)))
            self._leg_last_src = np.concatenate((self._leg_last_src, np.zeros(size, dtype=np.uint64)))
        return leg_id

    def _bind(self, call: TrackedCall, offer: MediaOffer) -> None:
        """``offer.side`` receives at ``offer.endpoint``: the other side's leg (symmetric RTP: its own)."""
        if offer.kind != AUDIO:  # video, T.38: counted, never in the legs
            self._side.bind_offer(call.legs[CALLER_TO_CALLEE].leg_id, offer, self._unclaimed)
            return
        receiving = CALLER_TO_CALLEE if offer.side != CALLER else CALLEE_TO_CALLER
        sending = CALLEE_TO_CALLER if receiving == CALLER_TO_CALLEE else CALLER_TO_CALLEE
        if offer.encrypted:
            call.dialog.events.append(
                CallEvent(
                    call.dialog.last_sip_ns,
                    "media",
                    "encrypted media offered",
                    offer.side,
                    f"{offer.endpoint}: cannot record",
                )
            )
        call.formats[offer.side] = {**call.formats.get(offer.side, {}), **offer.formats}
        call.encrypted[offer.side] = offer.encrypted
        try:
            rtp_key = endpoint_key(offer.endpoint.address, offer.endpoint.port)
            rtcp_key = endpoint_key(offer.rtcp.address, offer.rtcp.port) if offer.rtcp else None
        except ValueError:
            self.counters["sdp_bad_address"] += 1
            return
        recv_leg = call.legs[receiving]
        send_leg = call.legs[sending]
        recv_leg.destinations[rtp_key] = offer.endpoint
        for key in (rtp_key, rtcp_key):
            if key is None:
                continue
            self._side.forget(key)
            self._correlator.claim(key, recv_leg.leg_id, send_leg.leg_id)
            if self._unclaimed:
                for leg_id, packets in self._unclaimed.adopt(key, recv_leg.leg_id, send_leg.leg_id):
                    self._append(np.full(len(packets), leg_id, dtype=np.int64), packets)

    def _live(self, leg_id: int) -> bool:
        owner = self._legs.get(leg_id)
        return owner is not None and not owner[0].dialog.terminal

    # -- media ----------------------------------------------------------------------------------

    def _route(
        self,
        batch: DatagramBatch,
        rows: npt.NDArray[np.int64],
        dst_keys: npt.NDArray[np.uint64],
        src_keys: npt.NDArray[np.uint64],
        is_rtcp: npt.NDArray[np.bool_],
    ) -> None:
        if self._side:
            rows, dst_keys, src_keys, is_rtcp = self._side.strip(batch, rows, dst_keys, src_keys, is_rtcp)
        leg = self._correlator.resolve(dst_keys, src_keys)
        miss = leg == NO_LEG
        if miss.any():
            self._unclaimed.keep_rows(batch, miss, rows, dst_keys, src_keys, is_rtcp, self._now_ns)
            keep = ~miss
            rows, leg, is_rtcp, src_keys = rows[keep], leg[keep], is_rtcp[keep], src_keys[keep]
        index, leg = self._correlator.fan_out(leg)
        if index.shape[0] != rows.shape[0]:
            rows, is_rtcp, src_keys = rows[index], is_rtcp[index], src_keys[index]
        if rows.shape[0] == 0:
            return
        ts = batch.ts_ns[rows]
        if is_rtcp.any():
            counts = np.bincount(leg[is_rtcp])
            for leg_id in np.flatnonzero(counts).tolist():
                self._legs[leg_id][1].rtcp_packets += int(counts[leg_id])
            self.counters["rtcp_packets"] += int(is_rtcp.sum())
            keep = ~is_rtcp
            rows, leg, ts, src_keys = rows[keep], leg[keep], ts[keep], src_keys[keep]
            if rows.shape[0] == 0:
                return
        packets, valid = parse_rtp_columns(
            batch.buffer, batch.payload_offsets[rows], batch.payload_lengths[rows], ts
        )
        if not valid.all():
            self.counters["rtp_malformed"] += int((~valid).sum())
            leg, rows, src_keys = leg[valid], rows[valid], src_keys[valid]
        self._note_sources(batch, rows, leg, src_keys)
        self._append(leg, packets)

    def _append(self, leg: npt.NDArray[np.int64], packets: RtpPackets) -> None:
        """Add routed packets to the pending media log."""
        self.counters["rtp_packets"] += len(packets)
        np.maximum.at(self._leg_last_ns, leg, packets.ts_ns)
        self._pending.append(leg, packets)

    def _note_sources(
        self,
        batch: DatagramBatch,
        rows: npt.NDArray[np.int64],
        leg: npt.NDArray[np.int64],
        src_keys: npt.NDArray[np.uint64],
    ) -> None:
        """Remember each leg's source endpoints (only packets from a changed source one by one)."""
        changed = np.flatnonzero(self._leg_last_src[leg] != src_keys)
        for i in changed.tolist():
            leg_id = int(leg[i])
            key = int(src_keys[i])
            if int(self._leg_last_src[leg_id]) == key:
                continue  # a second packet from the same new source in this segment
            self._leg_last_src[leg_id] = key
            sources = self._legs[leg_id][1].sources
            if key not in sources and len(sources) < 16:
                r = int(rows[i])
                sources[key] = Endpoint(address_text(batch.src_addr[r].tobytes()), int(batch.src_port[r]))

    def _split_pending(self) -> None:
        """File the pending media log into the legs' spools (rows of ended legs are dropped)."""
        for leg_id, packets in self._pending.split():
            owner = self._legs.get(leg_id)
            if owner is not None:
                owner[1].spool.append(packets)

    def _last_media_ns(self, call: TrackedCall) -> int:
        side = self._side.last_ns(call.legs[CALLER_TO_CALLEE].leg_id)  # video, T.38
        return max(side, *(int(self._leg_last_ns[leg.leg_id]) for leg in call.legs.values()))

    # -- lifecycle ------------------------------------------------------------------------------

    def _check_timeouts(self, now_ns: int) -> list[CapturedCall]:
        self._next_check_ns = now_ns + int(self.config.timeout_check_s * NS)
        due = [
            c
            for c in self._calls.values()
            if c.dialog.terminal and c.dialog.finish_at_ns is not None and now_ns >= c.dialog.finish_at_ns
        ]
        # the ending legs' pending packets: a few calls take theirs out of the log in one pass (splitting all
        # of it, ten times a second in a live capture, cost more than the rest of the loop in a hang-up
        # wave); when many end at once (an import's last second) one split serves them all
        taken: dict[int, RtpPackets] = {}
        if due and len(due) * 8 >= len(self._calls):
            self._split_pending()
        elif due:
            taken = self._pending.take_legs(leg.leg_id for c in due for leg in c.legs.values())
        finished = []
        setup_ns = int(self.config.setup_timeout_s * NS)
        media_ns = int(self.config.media_timeout_s * NS)
        for call in list(self._calls.values()):
            d = call.dialog
            if d.terminal:
                if d.finish_at_ns is not None and now_ns >= d.finish_at_ns:
                    finished.append(self._finish(call, taken))
                continue
            if d.state in (CallState.SETUP, CallState.EARLY):
                last = max(d.last_sip_ns, self._last_media_ns(call))
                if now_ns - last > setup_ns:
                    d.expire(last, f"timeout: no final response within {self.config.setup_timeout_s:g} s")
                    finished.append(self._finish(call))
            elif now_ns - d.started_ns > int(self.config.max_call_s * NS):
                d.expire(now_ns, f"timeout: longer than {self.config.max_call_s:g} s without BYE")
                finished.append(self._finish(call))
            elif not d.held:  # a hold of any length never ends a call
                last = max(d.last_sip_ns, self._last_media_ns(call))
                if now_ns - last > media_ns:
                    d.expire(last, f"timeout: no media or signalling for {self.config.media_timeout_s:g} s")
                    finished.append(self._finish(call))
        self._unclaimed.expire(now_ns)  # on to the unsignalled calls, even when no new media comes
        return finished + self._unsignalled.finish_idle(now_ns)

    def _finish(self, call: TrackedCall, taken: dict[int, RtpPackets] | None = None) -> CapturedCall:
        """Hand the call on; ``taken``: its legs' pending packets, already taken out of the log."""
        d = call.dialog
        self._calls.pop(d.call_id, None)
        for leg in call.legs.values():
            self._correlator.release(leg.leg_id)
            if taken is not None:
                if (pending := taken.get(leg.leg_id)) is not None:
                    leg.spool.append(pending)
            else:
                for chunk in self._pending.take(leg.leg_id):
                    leg.spool.append(chunk)
            del self._legs[leg.leg_id]
        self._side.release(call.legs[CALLER_TO_CALLEE].leg_id)
        ended = d.ended_ns if d.ended_ns is not None else max(d.last_sip_ns, self._last_media_ns(call))
        self.counters["calls_finished"] += 1
        grace_ns = int(self.config.after_end_grace_s * NS)
        captured = hand_on(call, ended, grace_ns, self.counters, defer_spilled=self.config.defer_spilled)
        if self._unclaimed.sink is not None:
            self._unclaimed.sink.note_signalled(captured)  # its SSRCs seen behind a relay are not calls
        return captured
