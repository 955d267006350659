"""Which call leg each media packet belongs to.

The tracker tells the :class:`Correlator` what the SDP bodies of each call say (``claim``) and
asks it, for a whole segment of packets at once, which leg each one belongs to (``resolve``).
Lookups are vectorized: every binding table keeps a sorted array mirror for ``searchsorted``.

Evidence, strongest first (what session border controllers call latching):

1. the source is a side's SDP endpoint: phones send from where they receive (RFC 4961);
2. the source is a learned peer: where that side's media was seen going, or coming from;
3. the destination is a side's SDP endpoint (media from behind NAT, or from a relay);
4. the destination is a learned peer.

Peers are learned from packets placed by 1 or 3 whose other endpoint is in no SDP. An endpoint
named by two calls still in progress (a B2BUA's two dialogs with direct media) is shared: its
packets go to both (a fan-out group). Media nobody has claimed yet is kept for a short while
(:class:`Unclaimed`), so packets that reach the mirror just before the SDP naming their endpoint
are not lost; what nobody claims goes on to :mod:`capture.streams.unsignalled`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import Endpoint
from callrec.capture.model.media import RtpPackets
from callrec.capture.model.packets import DatagramBatch
from callrec.capture.streams.rtp import parse_rtp_columns
from callrec.capture.streams.unsignalled import UnsignalledCalls, ipv6_names

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
NO_LEG = -1
GROUP_BASE = 1 << 40  # fan-out group ids live above every leg id


class BindingTable:
    """Endpoint key -> leg (or group) id, with a sorted-array mirror for vectorized lookup.

    The mirror is rebuilt only every :data:`OVERLAY_LIMIT` changes; changes since (a few hundred at
    most) sit in a small sorted overlay that takes precedence. Rebuilding on every change took a quarter
    of the capture loop's time while two thousand calls were being set up: every SDP binds, and the next
    packets look up."""

    def __init__(self) -> None:
        self.by_key: dict[int, int] = {}
        self._keys = np.zeros(0, dtype=np.uint64)
        self._legs = np.zeros(0, dtype=np.int64)
        self._overlay: dict[int, int] = {}  # changed since the mirror was built (NO_LEG: unbound)
        self._over_keys: U64 | None = None  # the overlay sorted, None when it changed
        self._over_legs = np.zeros(0, dtype=np.int64)

    def bind(self, key: int, leg_id: int) -> None:
        if self.by_key.get(key) != leg_id:
            self.by_key[key] = leg_id
            self._overlay[key] = leg_id
            self._over_keys = None

    def unbind(self, key: int, leg_id: int) -> None:
        if self.by_key.get(key) == leg_id:
            del self.by_key[key]
            self._overlay[key] = NO_LEG
            self._over_keys = None

    def lookup(self, keys: U64) -> I64:
        """The id bound to each key, :data:`NO_LEG` where none is."""
        if len(self._overlay) > OVERLAY_LIMIT:
            self._keys, self._legs = _sorted_pairs(self.by_key)
            self._overlay.clear()
            self._over_keys = None
        found = _find(self._keys, self._legs, keys)
        if self._overlay:
            if self._over_keys is None:
                self._over_keys, self._over_legs = _sorted_pairs(self._overlay)
            pos = np.searchsorted(self._over_keys, keys)
            pos[pos == self._over_keys.shape[0]] = 0
            hit = self._over_keys[pos] == keys
            found[hit] = self._over_legs[pos[hit]]
        return found


OVERLAY_LIMIT = 256


def _sorted_pairs(table: dict[int, int]) -> tuple[U64, I64]:
    n = len(table)
    k = np.fromiter(table.keys(), dtype=np.uint64, count=n)
    v = np.fromiter(table.values(), dtype=np.int64, count=n)
    order = np.argsort(k)
    return k[order], v[order]


def _find(sorted_keys: U64, legs: I64, keys: U64) -> I64:
    if sorted_keys.shape[0] == 0:
        return np.full(keys.shape[0], NO_LEG, dtype=np.int64)
    pos = np.searchsorted(sorted_keys, keys)
    pos[pos == sorted_keys.shape[0]] = 0
    return np.where(sorted_keys[pos] == keys, legs[pos], NO_LEG)


class Correlator:
    """SDP bindings, learned peers and shared endpoints of every call in progress."""

    def __init__(self, counters: collections.Counter[str], is_live: Callable[[int], bool]) -> None:
        self.counters = counters
        self._is_live = is_live  # whether a leg's call is still in progress
        self._by_src = BindingTable()  # SDP endpoint -> the leg whose packets are sent from there
        self._by_dst = BindingTable()  # SDP endpoint -> the leg whose packets are sent there
        self._learned_src = BindingTable()  # peers seen on the wire, in no SDP
        self._learned_dst = BindingTable()
        self._reverse: dict[int, int] = {}  # leg id -> the other leg of its call
        self._held: dict[int, list[tuple[BindingTable, int]]] = {}  # leg id -> its bindings
        self._groups: dict[int, list[int]] = {}
        self._next_group = GROUP_BASE

    def add_call(self, caller_leg: int, callee_leg: int) -> None:
        self._reverse[caller_leg] = callee_leg
        self._reverse[callee_leg] = caller_leg

    def claim(self, key: int, receiving_leg: int, sending_leg: int) -> None:
        """An SDP says a side receives at ``key``: packets sent there belong to ``receiving_leg``
        (the other side's media), packets sent from there to ``sending_leg`` (its own)."""
        self._bind_shared(self._by_dst, key, receiving_leg)
        self._bind_shared(self._by_src, key, sending_leg)

    def release(self, leg_id: int) -> None:
        """Forget everything ``leg_id`` holds (its call ended); other owners keep shared keys."""
        for table, key in self._held.pop(leg_id, []):
            current = table.by_key.get(key)
            if current == leg_id:
                table.unbind(key, leg_id)
            elif current in self._groups:
                rest = [m for m in self._groups[current] if m != leg_id]
                if len(rest) == 1:
                    table.bind(key, rest[0])
                    del self._groups[current]
                else:
                    self._groups[current] = rest
        self._reverse.pop(leg_id, None)

    def _hold(self, table: BindingTable, key: int, leg_id: int) -> None:
        held = self._held.setdefault(leg_id, [])
        if (table, key) not in held:
            held.append((table, key))

    def _bind_shared(self, table: BindingTable, key: int, leg_id: int) -> None:
        """Bind, or share with the live legs that hold ``key`` already (an ended call gives way)."""
        self._hold(table, key, leg_id)
        current = table.by_key.get(key)
        if current is None or current == leg_id:
            table.bind(key, leg_id)
            return
        members = [m for m in self._groups.get(current, [current]) if m != leg_id and self._is_live(m)]
        if not members:
            table.bind(key, leg_id)
            return
        if current in self._groups and leg_id in self._groups[current]:
            return
        group = self._next_group
        self._next_group += 1
        self._groups[group] = [*members, leg_id]
        table.bind(key, group)
        self.counters["rtp_endpoint_shared"] += 1

    # -- packets --------------------------------------------------------------------------------

    def resolve(self, dst_keys: U64, src_keys: U64) -> I64:
        """Leg (or group) id of each packet by the evidence order above; :data:`NO_LEG` for none.
        A packet placed by 3 or 4 is looked at again when its segment taught a new peer."""
        leg = self._by_src.lookup(src_keys)
        by_src = leg != NO_LEG
        if not by_src.all():
            rest = np.flatnonzero(~by_src)
            leg[rest] = self._learned_src.lookup(src_keys[rest])
            rest = rest[leg[rest] == NO_LEG]
            if rest.shape[0]:
                leg[rest] = self._by_dst.lookup(dst_keys[rest])
                by_dst = rest[leg[rest] != NO_LEG]
                rest = rest[leg[rest] == NO_LEG]
                if rest.shape[0]:
                    leg[rest] = self._learned_dst.lookup(dst_keys[rest])
                if by_dst.shape[0]:
                    self._learn(self._learned_dst, src_keys[by_dst], leg[by_dst])
        sdp_src = np.flatnonzero(by_src)
        learned = False
        if sdp_src.shape[0]:
            unknown_dst = sdp_src[self._by_dst.lookup(dst_keys[sdp_src]) == NO_LEG]
            if unknown_dst.shape[0]:
                learned = self._learn(self._learned_src, dst_keys[unknown_dst], leg[unknown_dst])
        if learned:
            again = np.flatnonzero(~by_src)
            relearned = self._learned_src.lookup(src_keys[again])
            hit = relearned != NO_LEG
            leg[again[hit]] = relearned[hit]
        return leg

    def _learn(self, table: BindingTable, peer_keys: U64, legs: I64) -> bool:
        """Bind each new peer endpoint to the reverse of the leg its packet was placed on."""
        keys, first = np.unique(peer_keys, return_index=True)
        new = False
        for key, i in zip(keys.tolist(), first.tolist(), strict=True):
            if key in table.by_key or key in self._by_src.by_key or key in self._by_dst.by_key:
                continue
            reverse = self._reverse.get(int(legs[i]))
            if reverse is None:  # a fan-out group: no single peer to learn
                continue
            table.bind(key, reverse)
            self._hold(table, key, reverse)
            self.counters["rtp_peers_learned"] += 1
            new = True
        return new

    def fan_out(self, leg: I64) -> tuple[I64, I64]:
        """Expand fan-out groups: returns ``(index, legs)`` where ``index`` selects rows of the
        segment (rows of a group repeated once per member) and ``legs`` their real leg ids."""
        index = np.arange(leg.shape[0])
        if not self._groups or not bool((leg >= GROUP_BASE).any()):
            return index, leg
        legs = leg.copy()
        extra_rows, extra_legs = [], []
        for group, members in self._groups.items():
            hit = np.flatnonzero(leg == group)
            if hit.shape[0] == 0:
                continue
            legs[hit] = members[0]
            for member in members[1:]:
                extra_rows.append(hit)
                extra_legs.append(np.full(hit.shape[0], member, dtype=np.int64))
        return np.concatenate([index, *extra_rows]), np.concatenate([legs, *extra_legs])


@dataclass(slots=True)
class _Chunk:
    dst: U64
    src: U64
    packets: RtpPackets
    taken: npt.NDArray[np.bool_]
    names: dict[int, Endpoint] | None


class Unclaimed:
    """RTP nobody has claimed, kept ``window_ns`` of capture time (at most ``limit`` packets).

    What expires unclaimed is counted as ``rtp_unmatched``, or, with a ``sink`` (unsignalled
    calls), handed to it to be judged as RTP of a call whose signalling was not captured."""

    def __init__(
        self,
        counters: collections.Counter[str],
        window_ns: int,
        limit: int,
        sink: UnsignalledCalls | None = None,
    ) -> None:
        self.counters = counters
        self.window_ns = window_ns
        self.limit = limit
        self.sink = sink
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self._count = 0

    def __bool__(self) -> bool:
        return bool(self._chunks) or bool(self.sink)

    def keep_rows(
        self,
        batch: DatagramBatch,
        miss: npt.NDArray[np.bool_],
        rows: I64,
        dst: U64,
        src: U64,
        is_rtcp: npt.NDArray[np.bool_],
        now_ns: int,
    ) -> None:
        """Parse and keep the media rows of ``batch`` that no call claimed (``miss`` selects them
        from ``rows``; RTCP is only counted)."""
        rows, dst, src, is_rtcp = rows[miss], dst[miss], src[miss], is_rtcp[miss]
        rtcp = int(is_rtcp.sum())
        if rtcp:
            self.counters["rtcp_unmatched"] += rtcp
            keep = ~is_rtcp
            rows, dst, src = rows[keep], dst[keep], src[keep]
        self.expire(int(batch.ts_ns[rows[-1]]) if rows.shape[0] else now_ns)
        if rows.shape[0] == 0:
            return
        packets, valid = parse_rtp_columns(
            batch.buffer, batch.payload_offsets[rows], batch.payload_lengths[rows], batch.ts_ns[rows]
        )
        if not valid.all():
            self.counters["rtp_malformed"] += int((~valid).sum())
            rows, dst, src = rows[valid], dst[valid], src[valid]
        names = ipv6_names(batch, rows, dst, src) if self.sink is not None else None
        self.keep(packets, dst, src, names)

    def keep(self, packets: RtpPackets, dst: U64, src: U64, names: dict[int, Endpoint] | None = None) -> None:
        if len(packets):
            self._chunks.append(_Chunk(dst, src, packets, np.zeros(len(packets), dtype=np.bool_), names))
            self._count += len(packets)

    def expire(self, now_ns: int, everything: bool = False) -> None:
        """Drop what is older than the window (or over the limit): count it as unmatched, or hand
        it to the sink."""
        while self._chunks and (
            everything
            or self._count > self.limit
            or int(self._chunks[0].packets.ts_ns[-1]) < now_ns - self.window_ns
        ):
            old = self._chunks.popleft()
            self._count -= len(old.packets)
            rest = np.flatnonzero(~old.taken)
            if self.sink is None:
                self.counters["rtp_unmatched"] += int(rest.shape[0])
            elif rest.shape[0]:
                self.sink.add(old.packets.select(rest), old.dst[rest], old.src[rest], old.names)

    def adopt(self, key: int, receiving_leg: int, sending_leg: int) -> list[tuple[int, RtpPackets]]:
        """Packets sent to ``key`` (for ``receiving_leg``) or from it (``sending_leg``), as claimed
        by an SDP that has just named ``key``; they are taken out of the buffer. When some were
        still here the media is flowing, and its older part, with the sink, is the call's too."""
        out = self._take(key, receiving_leg, sending_leg)
        if out and self.sink:
            out = self.sink.adopt(key, receiving_leg, sending_leg) + out
        self.counters["rtp_adopted_before_sdp"] += sum(len(packets) for _, packets in out)
        return out

    def discard(self, key: int) -> int:
        """Drop the packets from or to ``key`` (an SDP has named it for media that is not audio);
        returns how many."""
        dropped = sum(len(packets) for _, packets in self._take(key, NO_LEG, NO_LEG))
        return dropped + (self.sink.discard(key) if self.sink else 0)

    def _take(self, key: int, receiving_leg: int, sending_leg: int) -> list[tuple[int, RtpPackets]]:
        k = np.uint64(key)
        out = []
        for chunk in self._chunks:
            to_key = (chunk.dst == k) & ~chunk.taken
            from_key = (chunk.src == k) & ~chunk.taken & ~to_key
            for mask, leg_id in ((to_key, receiving_leg), (from_key, sending_leg)):
                rows = np.flatnonzero(mask)
                if rows.shape[0]:
                    chunk.taken[rows] = True
                    out.append((leg_id, chunk.packets.take(rows)))
        return out
