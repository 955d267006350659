"""Media a call negotiates besides its audio: video and other non-audio streams, and T.38 fax.

Their SDP sections (``m=video``, ``m=application``, ``m=text``, ``m=image ... udptl t38``) name
endpoints like audio does. The tracker binds those endpoints here, and traffic from or to them
is counted per kind and kept out of everything else: video RTP never lands in an audio leg, and
T.38's UDPTL (whose first byte is a sequence number, so it sometimes looks like RTP) is never
parsed as RTP, even when a gateway moves fax onto the port its audio used. The packets still
count as the call's activity (:meth:`SideMedia.last_ns`), so a 20-minute fax is not ended by
the media timeout just because no audio flows.

The last SDP naming an endpoint decides what it carries: an audio offer takes a key back
(:meth:`SideMedia.forget`), as when a call returns from T.38 to audio on the same port. Video
sent on the audio endpoint itself (BUNDLE) cannot be told apart by address; it is removed from
the audio legs by payload type when the call ends (:func:`drop_payload_types`).
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from callrec.capture.model.media import RtpPackets
from callrec.capture.model.packets import DatagramBatch, endpoint_key, endpoint_keys
from callrec.capture.streams.correlate import NO_LEG, BindingTable, Unclaimed
from callrec.capture.streams.rtp import PayloadKinds

if TYPE_CHECKING:
    from callrec.capture.sip.dialog import MediaOffer

from callrec.capture.sip.sdp import OTHER, T38, VIDEO

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

KINDS = (VIDEO, OTHER, T38)
COUNTERS = {VIDEO: "video_rtp", OTHER: "non_audio_media", T38: "t38_udptl"}
_SHIFT = 2  # table values are owner << 2 | kind index


class SideMedia:
    """Endpoints of non-audio media, per owning call (the tracker uses a leg id as the owner)."""

    def __init__(self, counters: collections.Counter[str]) -> None:
        self.counters = counters
        self._table = BindingTable()
        self._owned: dict[int, set[int]] = {}  # owner -> keys it bound
        self._last: dict[int, int] = {}  # owner -> capture time of its latest packet
        self._batch: DatagramBatch | None = None  # the batch being settled, its "other" rows...
        self._other = np.zeros(0, dtype=np.int64)
        self._done = 0  # ...and how many of them are counted

    def __bool__(self) -> bool:
        return bool(self._table.by_key)

    def bind(self, owner: int, kind: str, key: int) -> None:
        self._table.bind(key, owner << _SHIFT | KINDS.index(kind))
        self._owned.setdefault(owner, set()).add(key)

    def bind_offer(self, owner: int, offer: MediaOffer, unclaimed: Unclaimed) -> None:
        """An SDP names an endpoint (and its RTCP) of ``offer.kind``: bind them, and drop what the
        unclaimed buffer holds of them."""
        for endpoint in (offer.endpoint, offer.rtcp):
            if endpoint is None:
                continue
            try:
                key = endpoint_key(endpoint.address, endpoint.port)
            except ValueError:
                self.counters["sdp_bad_address"] += 1
                continue
            self.bind(owner, offer.kind, key)
            if unclaimed:
                dropped = unclaimed.discard(key)
                if dropped:
                    self.counters[COUNTERS[offer.kind]] += dropped

    def forget(self, key: int) -> None:
        """An audio offer names ``key``: it carries audio from now on."""
        value = self._table.by_key.get(key)
        if value is not None:
            self._table.unbind(key, value)

    def release(self, owner: int) -> None:
        """The owner's call ended: its keys are free (unless another call has bound them since)."""
        for key in self._owned.pop(owner, ()):
            value = self._table.by_key.get(key)
            if value is not None and value >> _SHIFT == owner:
                self._table.unbind(key, value)
        self._last.pop(owner, None)

    def last_ns(self, owner: int) -> int:
        return self._last.get(owner, 0)

    # -- packets --------------------------------------------------------------------------------

    def strip(
        self, batch: DatagramBatch, rows: I64, dst: U64, src: U64, is_rtcp: npt.NDArray[np.bool_]
    ) -> tuple[I64, U64, U64, npt.NDArray[np.bool_]]:
        """Count and remove the media rows sent from or to a bound endpoint; returns the rest."""
        hit = self._lookup(dst, src)
        side = hit != NO_LEG
        if not side.any():
            return rows, dst, src, is_rtcp
        self._count(hit[side], batch.ts_ns[rows[side]])
        keep = ~side
        return rows[keep], dst[keep], src[keep], is_rtcp[keep]

    def settle(self, batch: DatagramBatch, kinds: PayloadKinds, upto: int) -> None:
        """Count the batch's datagrams before row ``upto`` that are neither media nor SIP candidates:
        UDPTL (and the like) on a bound endpoint by kind, the rest as ``udp_not_sip_or_rtp``. The
        tracker settles up to each SIP message, so every row meets the bindings of its time."""
        if batch is not self._batch:
            self._batch, self._done = batch, 0
            other = np.ones(len(batch), dtype=np.bool_) if kinds.other else np.zeros(0, dtype=np.bool_)
            for rows in (kinds.media, kinds.text, kinds.zrtp) if kinds.other else ():
                other[rows] = False
            self._other = np.flatnonzero(other)
        end = int(np.searchsorted(self._other, upto))
        rows = self._other[self._done : end]
        self._done = max(self._done, end)
        if upto >= len(batch):
            self._batch = None  # do not keep the batch's buffer alive
        if rows.shape[0] == 0:
            return
        if not self:
            self.counters["udp_not_sip_or_rtp"] += int(rows.shape[0])
            return
        dst = endpoint_keys(batch.dst_addr[rows], batch.dst_port[rows])
        src = endpoint_keys(batch.src_addr[rows], batch.src_port[rows])
        hit = self._lookup(dst, src)
        side = hit != NO_LEG
        self._count(hit[side], batch.ts_ns[rows[side]])
        self.counters["udp_not_sip_or_rtp"] += int((~side).sum())

    def count_row(self, batch: DatagramBatch, row: int) -> bool:
        """Count one datagram that is not SIP if it is on a bound endpoint; returns whether it was."""
        if not self:
            return False
        sel = np.array([row], dtype=np.int64)
        hit = self._lookup(
            endpoint_keys(batch.dst_addr[sel], batch.dst_port[sel]),
            endpoint_keys(batch.src_addr[sel], batch.src_port[sel]),
        )
        if int(hit[0]) == NO_LEG:
            return False
        self._count(hit, batch.ts_ns[sel])
        return True

    def _lookup(self, dst: U64, src: U64) -> I64:
        hit = self._table.lookup(dst)
        miss = hit == NO_LEG
        if miss.any():
            hit[miss] = self._table.lookup(src[miss])
        return hit

    def _count(self, hit: I64, ts_ns: I64) -> None:
        kind = hit & ((1 << _SHIFT) - 1)
        for index, n in enumerate(np.bincount(kind, minlength=len(KINDS)).tolist()):
            if n:
                self.counters[COUNTERS[KINDS[index]]] += n
        owners = hit >> _SHIFT
        for owner in np.unique(owners).tolist():
            last = int(ts_ns[owners == owner].max())
            if last > self._last.get(owner, 0):
                self._last[owner] = last


def drop_payload_types(
    packets: RtpPackets, payload_types: frozenset[int], counters: collections.Counter[str]
) -> RtpPackets:
    """An audio leg without the packets of non-audio payload types (video bundled on the audio
    endpoint); they are counted as ``video_rtp``."""
    if not payload_types or not len(packets):
        return packets
    video = np.isin(packets.payload_type, np.fromiter(payload_types, dtype=np.int64))
    if not video.any():
        return packets
    counters["video_rtp"] += int(video.sum())
    return packets.take(np.flatnonzero(~video))
