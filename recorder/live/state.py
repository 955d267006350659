"""What a running capture is, as its status, metrics and control requests see it: its options
(:class:`LiveOptions`), its totals (:class:`LiveCounts`) and the parts of the service they read
(:class:`RunningCapture`, which :class:`~callrec.recorder.live.service.CaptureService` is)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from callrec.capture.sources.base import PacketSource
from callrec.capture.tracking.tracker import CallTracker
from callrec.recorder.config import Config
from callrec.recorder.journal.writer import JournalWriter
from callrec.recorder.policy.modes import Signal
from callrec.recorder.saving.saver import SaveTotals
from callrec.recorder.saving.sealed_spill import SealedSpill
from callrec.store.audit.trail import AuditTrail
from callrec.store.catalogue.db import Catalogue
from callrec.store.home import Home


@dataclass(slots=True)
class LiveCounts(SaveTotals):
    """Totals since the capture started (what ``callrec status`` and the metrics show)."""

    interrupted: int = 0
    recovered: int = 0
    lost: int = 0  # calls dropped while storage was unavailable and the waiting list was full


@dataclass(frozen=True, slots=True)
class LiveOptions:
    source_name: str = "live"
    control_path: Path | None = None
    metrics_path: Path | None = None
    journal_dir: Path | None = None  # None: no journal (no recovery after a crash)
    max_waiting_calls: int = 1000
    free_space_floor: int = 0  # bytes; 0: no purge for space
    saver: str = "process"  # or "inline": save in the capture loop itself
    savers: int = 2  # saver processes (with saver = "process")


class RunningCapture(Protocol):
    """The state of a started capture service that :mod:`callrec.recorder.live.status` reads."""

    home: Home
    source: PacketSource
    options: LiveOptions
    config: Config
    catalogue: Catalogue
    audit: AuditTrail
    journal: JournalWriter | None
    tracker: CallTracker
    spill: SealedSpill
    counts: LiveCounts
    commands: dict[str, list[Signal]]
    unsaved: set[tuple[str, int]]
    saver_state: dict[str, Any]
    last_error: str
    clock_offset_ns: int
    started_monotonic: float
    pps: float
