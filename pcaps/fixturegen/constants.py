"""Numbers shared by the generator's modules."""

from __future__ import annotations

import datetime as _dt

RATE = 8000  # G.711 sample rate
FRAME_SAMPLES = 160  # samples per 20 ms packet
PTIME_NS = 20_000_000
MS = 1_000_000  # nanoseconds
S = 1_000_000_000
# 2026-11-02T09:00:00Z; each scenario starts 10 minutes after the previous one.
BASE_EPOCH_S = int(_dt.datetime(2026, 11, 2, 9, 0, 0, tzinfo=_dt.UTC).timestamp())
PLACEMENT_TOLERANCE_S = 0.002
DURATION_TOLERANCE_S = 0.025
ENDED_AT_TOLERANCE_S = 0.05

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113


def scenario_start_ns(index: int) -> int:
    """Start of scenario ``index``: the epoch plus ``index`` x 10 minutes."""
    return (BASE_EPOCH_S + index * 600) * S
