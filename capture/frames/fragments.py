"""IP fragment reassembly (IPv4 and IPv6), bounded in memory and driven by capture time.

SIP over UDP is often fragmented: an INVITE with a large SDP exceeds 1500 bytes. The rules here
follow what modern receivers do, since a passive recorder should see what the endpoint accepted:

- A datagram is keyed by (source, destination, protocol, identification) for IPv4 (RFC 791) and
  (source, destination, identification) for IPv6 (RFC 8200); the caller builds the key.
- Fragments may arrive in any order. An exact duplicate (same offset and length) is ignored.
  Any other overlap drops the whole datagram, as RFC 5722 requires for IPv6 and as Linux does for
  IPv4 since 4.19: keeping "first" or "last" bytes would let an attacker choose what is recorded.
- A fragment that is not the last must carry a multiple of 8 bytes; nothing may end past 65535
  bytes of payload, and once the last fragment fixed the size nothing may end beyond it.
- Memory is bounded: at most ``max_pending`` datagrams and ``max_bytes`` of fragment data are
  held, the oldest datagram is evicted first. A datagram not complete ``timeout_ns`` of capture
  time after its first fragment is dropped. The clock is never read: time is the fragment's ``ts_ns``.

Counters (in the ``counters`` given, shared with the frame decoder), per fragment:
``ip_fragment_pending`` (stored, waiting), ``fragment_duplicate``, ``fragment_overlap``,
``fragment_bad``; per datagram: ``reassembled``, ``fragment_timeout``, ``fragment_evicted``,
``fragment_incomplete`` (still pending at :meth:`Reassembler.clear`).
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Hashable
from dataclasses import dataclass, field

MAX_DATAGRAM = 65535
DEFAULT_MAX_PENDING = 4096
DEFAULT_MAX_BYTES = 16 << 20
DEFAULT_TIMEOUT_NS = 30 * 1_000_000_000


@dataclass(frozen=True, slots=True)
class Reassembled:
    """A complete datagram payload (what follows the IP header / fragment header)."""

    proto: int
    payload: bytes


@dataclass(slots=True)
class _Pending:
    first_ts: int
    proto: int = -1  # from the fragment at offset 0
    total: int = -1  # payload size, known once the last fragment arrived
    size: int = 0  # bytes held
    # Fragments sorted by offset; they never overlap, so ends are sorted too.
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    parts: list[bytes] = field(default_factory=list)


class Reassembler:
    """Collects fragments until a datagram is complete; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout_ns: int = DEFAULT_TIMEOUT_NS,
        counters: collections.Counter[str] | None = None,
    ) -> None:
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.timeout_ns = timeout_ns
        self.counters: collections.Counter[str] = collections.Counter() if counters is None else counters
        self._pending: collections.OrderedDict[Hashable, _Pending] = collections.OrderedDict()
        self._bytes = 0

    @property
    def pending(self) -> int:
        """Datagrams waiting for fragments."""
        return len(self._pending)

    @property
    def pending_bytes(self) -> int:
        """Fragment bytes held."""
        return self._bytes

    def add(
        self, key: Hashable, offset: int, more: bool, data: bytes | memoryview, proto: int, ts_ns: int
    ) -> Reassembled | None:
        """Add one fragment (``offset`` in bytes); returns the datagram it completes, if any."""
        self.expire(ts_ns)
        size = len(data)
        end = offset + size
        if (more and (size == 0 or size % 8)) or end > MAX_DATAGRAM or offset < 0:
            self.counters["fragment_bad"] += 1
            return None
        entry = self._pending.get(key)
        if entry is None:
            entry = _Pending(first_ts=ts_ns)
            self._pending[key] = entry
        at = self._place(key, entry, offset, end, more)
        if at < 0:
            return None
        entry.starts.insert(at, offset)
        entry.ends.insert(at, end)
        entry.parts.insert(at, bytes(data))
        entry.size += size
        self._bytes += size
        if offset == 0:
            entry.proto = proto
        if not more:
            entry.total = end
        if entry.size == entry.total:
            del self._pending[key]
            self._bytes -= entry.size
            self.counters["reassembled"] += 1
            return Reassembled(entry.proto, b"".join(entry.parts))
        self.counters["ip_fragment_pending"] += 1
        self._bound()
        return None

    def _place(self, key: Hashable, entry: _Pending, offset: int, end: int, more: bool) -> int:
        """Where the fragment goes in ``entry``, or -1 if it is a duplicate or conflicts (then
        the datagram is dropped)."""
        starts, ends = entry.starts, entry.ends
        if entry.total >= 0 and (end > entry.total or (not more and end != entry.total)):
            return self._drop(key, entry, "fragment_bad")
        if not more and ends and ends[-1] > end:
            return self._drop(key, entry, "fragment_bad")
        at = bisect.bisect_left(starts, offset)
        if at < len(starts) and starts[at] == offset and ends[at] == end:
            self.counters["fragment_duplicate"] += 1
            return -1
        if (at > 0 and ends[at - 1] > offset) or (at < len(starts) and starts[at] < end):
            return self._drop(key, entry, "fragment_overlap")
        return at

    def _drop(self, key: Hashable, entry: _Pending, reason: str) -> int:
        del self._pending[key]
        self._bytes -= entry.size
        self.counters[reason] += 1
        return -1

    def _bound(self) -> None:
        """Evict the oldest datagrams until both bounds hold."""
        while self._pending and (len(self._pending) > self.max_pending or self._bytes > self.max_bytes):
            _, entry = self._pending.popitem(last=False)
            self._bytes -= entry.size
            self.counters["fragment_evicted"] += 1

    def expire(self, now_ns: int) -> None:
        """Drop datagrams whose first fragment is more than ``timeout_ns`` older than ``now_ns``."""
        limit = now_ns - self.timeout_ns
        while self._pending:
            entry = next(iter(self._pending.values()))
            if entry.first_ts >= limit:
                break
            self._pending.popitem(last=False)
            self._bytes -= entry.size
            self.counters["fragment_timeout"] += 1

    def clear(self) -> None:
        """Forget every pending datagram (end of input), counting each as incomplete."""
        self.counters["fragment_incomplete"] += len(self._pending)
        self._pending.clear()
        self._bytes = 0
