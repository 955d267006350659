"""A live capture's spill rounds: the media of calls in progress moved out of memory to a spill sink.

:func:`spill_resident` spills, leg by leg, the chunks a split filed in memory (the media log is split
when it grows past ``pending_packets``, or when many calls end at once). :func:`spill_log` spills the
whole media log at once: the log is put in leg order (:meth:`capture.model.media.MediaLog.drain`), the
records of all legs are encoded in one pass (:func:`capture.streams.spill.block_records`) and each leg's
is one
slice of it, sealed and written. Per leg that leaves a seal and a write: a thousand calls cost about 70
ms of CPU a round,
where a piece, a join and an encoding per leg cost 160-180 ms.

Only calls in progress are spilled, so a spilled chunk is never later than its call's end
(:mod:`capture.tracking.handoff`); the media of calls that ended stays in memory until they are handed on.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from callrec.capture.model.spilled import SpillSink
from callrec.capture.streams.medialog import MediaLog
from callrec.capture.streams.spill import block_records
from callrec.capture.tracking.handoff import TrackedCall, TrackedLeg, leg_key


def spill_resident(calls: Iterable[TrackedCall], sink: SpillSink, counters: collections.Counter[str]) -> int:
    """Move every chunk in memory of each in-progress leg to ``sink`` (before :func:`spill_log`, which
    needs nothing left in memory); the packets moved. A sink that cannot write leaves the media in
    memory (counted: ``spill_write_errors``) and ends the round."""
    moved = 0
    legs = (leg for call in calls if not call.dialog.terminal for leg in call.legs.values())
    for leg in legs:
        if not leg.spool.chunks:
            continue
        try:
            moved += leg.spool.spill(sink, leg_key(leg.leg_id), keep_recent_ns=-1)
        except OSError:
            counters["spill_write_errors"] += 1
            break
    counters["spilled_packets"] += moved
    return moved


def spill_log(
    log: MediaLog,
    legs: dict[int, tuple[TrackedCall, TrackedLeg]],
    sink: SpillSink,
    counters: collections.Counter[str],
) -> int:
    """Empty the media log: the packets of legs of calls in progress (with nothing left in memory) go
    to ``sink``, one record per leg; other legs' are filed in memory; rows of legs that ended are
    dropped. After a write fails (counted: ``spill_write_errors``) the rest is filed in memory."""
    block = log.drain()
    if block is None:
        return 0
    records = block_records(block)
    failing = records is None
    moved = 0
    for i, leg_id in enumerate(block.leg_ids):
        owner = legs.get(leg_id)
        if owner is None:
            continue
        call, leg = owner
        if failing or records is None or call.dialog.terminal or leg.spool.chunks:
            leg.spool.append(block.piece(i))
            continue
        s, e = int(block.starts[i]), int(block.ends[i])
        first, last = block.payload_span(i)
        key = leg_key(leg_id)
        try:
            ref = sink.write_record(key, records(i), e - s, last - first)
        except OSError:
            counters["spill_write_errors"] += 1
            failing = True
            leg.spool.append(block.piece(i))
            continue
        leg.spool.add_spilled(sink, key, ref, int(block.columns[0, s]), int(block.columns[0, e - 1]))
        moved += e - s
    counters["spilled_packets"] += moved
    return moved
