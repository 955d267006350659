"""The live capture: a packet source (mirror port or paced replay) in, recordings out, until stopped.

One loop, one process::

    batches (capture.sources.interfaces / capture.sources.replay) -> journal -> frames -> tracker ->
    CallSaver -> catalogue

* **Calls** are handed on by the tracker when they end (BYE answered: 0.25 s later), time out (no
  media, no final response, longer than ``max_call_s``; held calls never time out), or at shutdown.
  The tracker's clock is the capture's: the time of the last packet, moved on by the wall clock
  while the line is idle (:meth:`capture.tracking.tracker.CallTracker.tick`).
* **Saving** (render, seal, write, commit) happens in saver processes (:mod:`recorder.saving.pool`, two by
  default), so a wave of hang-ups never stalls reading; rows are committed within 0.1 s of a call being
  saved.
* **Shutdown** (SIGTERM/SIGINT): calls in progress are recorded as they are, marked "interrupted by
  shutdown", then the journal is removed.
* **Reload** (SIGHUP): the configuration is read again; if it has errors they are logged and the old
  one stays. New rules, modes and retention apply to calls that end after the reload; capture
  timeouts to calls that start after a restart.
* **Crash** (kill -9, power loss): every frame is written to a sealed journal
  (:mod:`recorder.journal.segments`)
  and flushed every 0.25 s, by a thread of its own (:mod:`recorder.journal.writer`). The next start
  replays what is left of it: calls already in the catalogue are skipped, calls that had ended are
  recorded, calls that were in progress are recorded up to the last flushed second and marked
  "recovered after a crash".
* **Storage unavailable** (disk full, read-only, catalogue locked): capture goes on; calls wait in
  the saver's memory (at most ``max_waiting_calls``; beyond, the oldest are dropped with a log line) and
  are retried every 5 s; nothing is half-written (files atomically, rows in one
  transaction). With ``free_space_floor`` set, expired recordings (never held ones) are purged first
  when free space runs below it.
* **Control and status**: :mod:`recorder.live.control_socket` (``callrec status``, ``callrec calls
  record|pause|
  resume``); systemd readiness, watchdog and status line, and Prometheus metrics
  (:mod:`recorder.live.notify`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.calls import CapturedCall
from callrec.capture.model.packets import PacketBatch
from callrec.capture.sources.base import PacketSource
from callrec.capture.tracking.tracker import CallTracker, TrackerConfig
from callrec.recorder.config import Config, ConfigError
from callrec.recorder.journal.key import load_or_create_key
from callrec.recorder.journal.segments import Journal, ReplayReport, replay, rotate_key
from callrec.recorder.journal.writer import JournalWriter
from callrec.recorder.live.control_socket import ControlServer
from callrec.recorder.live.notify import Notifier, prometheus_text, write_textfile
from callrec.recorder.live.state import LiveCounts, LiveOptions
from callrec.recorder.live.status import handle_request, metrics, status_line
from callrec.recorder.policy.modes import Signal
from callrec.recorder.saving.pool import InlineSaver, SaveJob, SaverOptions, SaverPool
from callrec.recorder.saving.saver import CallSaver
from callrec.recorder.saving.sealed_spill import SealedSpill
from callrec.store.catalogue.db import Catalogue
from callrec.store.crypto.keys import KeyDirectory
from callrec.store.crypto.vault import Vault
from callrec.store.home import Home

log = logging.getLogger(__name__)

NS = 1_000_000_000
STATUS_INTERVAL_S = 1.0
PRUNE_MARGIN_NS = 10 * NS
LIVE_TIMEOUT_CHECK_S = 0.1
INTERRUPTED = "interrupted by shutdown"
RECOVERED = "recovered after a crash"
JOURNAL_KEY = "journal.key"
# Once a second, the media of calls in progress goes to the sealed spill (recorder.saving.sealed_spill;
# CallTracker.
# spill_pending): memory per call stays at about a second of media; the savers read the spilled part back
# (capture.tracking.handoff.resolve_spilled), not the loop
SPILL_FILES_AHEAD = 4096  # empty spill files kept ready (two per call in progress; creating one costs 0.5 ms)
OPEN_FILES_WANTED = 65536
JOURNAL_FLUSH_S = 0.25  # frames copied out of the ring wait this long for the journal's thread


class CaptureService:
    def __init__(
        self,
        home: Home,
        source: PacketSource,
        load_config: Callable[[], Config],
        options: LiveOptions,
        *,
        notifier: Notifier | None = None,
    ) -> None:
        self.home = home
        self.source = source
        self.load_config = load_config
        self.options = options
        self.notifier = notifier or Notifier({})
        self.counts = LiveCounts()
        self.commands: dict[str, list[Signal]] = {}  # Call-ID -> asked through the control socket
        self.unsaved: set[tuple[str, int]] = set()  # (Call-ID, start) handed to the saver, not committed
        self.spilled_legs: dict[tuple[str, int], list[str]] = {}  # handed to the saver with spilled media
        self.saver_state: dict[str, Any] = {"waiting": 0, "pending": 0, "last_error": "", "lost": 0}
        self.last_error = ""
        self._stop_reason = ""
        self._reload = False
        self.clock_offset_ns = 0  # capture clock minus wall clock (0 live; a replay's own time)
        self.started_monotonic = time.monotonic()
        self._next = {"status": 0.0, "journal": 0.0}
        self._rate = (time.monotonic(), 0)
        self._reported = {"over_limit": 0, "drops": 0}  # what was logged already
        self.pps = 0.0

    # -- set-up ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store, read the configuration (:class:`ConfigError` if it is broken), recover a
        crashed run's journal, open the control socket, tell systemd we are ready."""
        self.home.open(create=True)
        _raise_open_files_limit()
        self.config = self.load_config()
        vault = Vault(KeyDirectory(self.home.keys), self.home.recording_store(self.config.storage))
        vault.check_ready()
        self.catalogue = Catalogue(self.home.catalogue_path)
        self.audit = self.home.audit_trail(self.catalogue.db, self.config.audit_anchor)
        self.journal: JournalWriter | None = None
        directory = self.options.journal_dir
        if directory is not None:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = load_or_create_key(directory / JOURNAL_KEY)
            if any(directory.glob("*.seg")):
                key = self._recover(
                    directory, key, CallSaver(self.catalogue, vault, self.config, self.counts)
                )
            self.journal = JournalWriter(Journal(directory, key))
        self.frames = FrameDecoder()
        self.tracker = CallTracker(replace(self._tracker_config(self.config), defer_spilled=True))
        self.spill = SealedSpill(self.home.spool / "calls")
        if removed := self.spill.clear():  # a crashed run's: the journal recovered its calls, its key is gone
            log.info(f"removed {removed} spill file(s) left by a capture that did not stop cleanly")
        self.spill.make_ahead(SPILL_FILES_AHEAD)
        options = SaverOptions(self.options.max_waiting_calls, self.options.free_space_floor, self.spill.key)
        self.saver: SaverPool | InlineSaver = (
            SaverPool(self.home.root, self.config, options, processes=self.options.savers)
            if self.options.saver == "process"
            else InlineSaver(self.home.root, self.config, options)
        )
        self.control: ControlServer | None = None
        if self.options.control_path is not None:
            self.control = ControlServer(self.options.control_path, lambda m, p: handle_request(self, m, p))
            self.control.open()
        self.audit.record(
            user=_os_user(), action="capture.start", detail={"source": self.options.source_name}
        )
        log.info(f"capture started on {self.options.source_name}; configuration: {self._config_files()}")
        gc.freeze()  # what start-up made lives as long as the process: full collections need not walk it
        self.notifier.ready(status_line(self))

    @staticmethod
    def _tracker_config(config: Config) -> TrackerConfig:
        return TrackerConfig(**{"timeout_check_s": LIVE_TIMEOUT_CHECK_S, **config.capture})

    def _config_files(self) -> str:
        return ", ".join(str(p) for p in self.config.files) or "built-in defaults"

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> None:
        """Capture until :meth:`stop` (or the source ends), then record what is in progress."""
        try:
            for batch in self.source.batches():
                self.step(batch)
                if self._reload:
                    self._do_reload()
                if self._stop_reason:
                    break
        finally:
            self.shutdown()

    def step(self, batch: PacketBatch) -> None:
        wall = time.time_ns()
        finished: list[CapturedCall] = []
        if len(batch):
            self.clock_offset_ns = int(batch.ts_ns[-1]) - wall
            if self.journal is not None:
                self.journal.append(batch)
            finished = self.tracker.feed(self.frames.decode(batch))
        finished += self.tracker.tick(wall + self.clock_offset_ns)
        for call in finished:
            self._save(call, None)
        self._periodic()
        if self.control is not None:
            self.control.serve()

    def stop(self, reason: str = "shutdown") -> None:
        """Ask the loop to end (signal-safe: only sets flags)."""
        self._stop_reason = reason
        self.source.stop()

    def request_reload(self) -> None:
        self._reload = True

    # -- saving ----------------------------------------------------------------------------------

    def _save(self, call: CapturedCall, end_reason: str | None) -> None:
        """Hand a finished call to the saver (what happens to it comes back in :meth:`_take`)."""
        commands = tuple(self.commands.pop(call.call_id, []))
        self.unsaved.add((call.call_id, call.started_ns))
        spilled = [leg.spilled.leg_key for leg in call.legs.values() if leg.spilled is not None]
        if spilled:  # the saver reads them; discarded when it says the call is saved
            self.spilled_legs[(call.call_id, call.started_ns)] = spilled
        job = SaveJob(call, self.options.source_name, commands, end_reason)
        self.saver.send("save", job)

    def _take(self, messages: Iterable[tuple[str, Any]]) -> dict[str, Any] | None:
        """Act on the saver's messages; its final state if it stopped."""
        final = None
        for kind, value in messages:
            if kind == "log":
                log.info(value)
            elif kind == "saved":
                for leg_key in self.spilled_legs.pop((value["call_id"], value["started_ns"]), ()):
                    self.spill.discard(leg_key)
                self.tracker.counters.update(value.get("counters") or {})
                outcome = value["outcome"]
                if outcome == "recorded":
                    self.counts.recorded += 1
                elif outcome == "not_recorded":
                    self.counts.not_recorded[value.get("reason") or "no media"] += 1
                elif outcome == "failed":
                    self.counts.failed += 1
                    self.counts.not_recorded["processing failed"] += 1
                    if value.get("crashed"):  # it killed two savers: not kept for a recovery to retry
                        self.unsaved.discard((value["call_id"], value["started_ns"]))
                elif outcome == "already":
                    self.counts.already_present += 1
                elif outcome == "lost":
                    self.counts.lost += 1
                    self.unsaved.discard((value["call_id"], value["started_ns"]))
                if outcome != "lost":
                    self.counts.calls_found += 1
            elif kind == "committed":
                for call_id, started_ns in value:
                    self.unsaved.discard((call_id, started_ns))
            elif kind in ("state", "stopped"):
                self.saver_state = value
                if kind == "stopped":
                    final = value
        return final

    # -- timers ----------------------------------------------------------------------------------

    def _periodic(self) -> None:
        now = time.monotonic()
        self._take(self.saver.poll())
        if self.journal is not None and now >= self._next["journal"]:
            self._next["journal"] = now + JOURNAL_FLUSH_S
            self.journal.flush()
        if now >= self._next["status"]:
            self._next["status"] = now + STATUS_INTERVAL_S
            self._every_second(now)
        self.notifier.watchdog()

    def _every_second(self, now: float) -> None:
        stats = self.source.stats()
        since, frames = self._rate
        if now > since:
            self.pps = (stats.frames - frames) / (now - since)
        self._rate = (now, stats.frames)
        over = self.tracker.counters["calls_over_limit"]
        if over > self._reported["over_limit"]:
            log.info(
                f"call limit reached: {self.tracker.calls_in_progress} calls in progress ([capture] "
                f"max_calls); {over - self._reported['over_limit']} new call(s) not followed"
            )
            self._reported["over_limit"] = over
        if stats.kernel_drops > self._reported["drops"]:
            log.info(
                f"the kernel dropped {stats.kernel_drops - self._reported['drops']} frame(s) (ring full; "
                f"{stats.kernel_drops} in all): a larger --buffer, or fewer frames through --filter"
            )
            self._reported["drops"] = stats.kernel_drops
        if self.journal is not None:  # prune first: a chunk over the budget is dropped, not made room for
            starts = [d.started_ns for d in self.tracker.in_progress()] + [start for _, start in self.unsaved]
            now_ns = time.time_ns() + self.clock_offset_ns
            self.journal.prune(min(starts, default=now_ns) - PRUNE_MARGIN_NS)
        # a call's media goes to a sealed file: memory per call stays bounded however long it lasts
        self.tracker.spill_pending(self.spill)
        self.notifier.status(status_line(self))
        self._write_metrics()

    def _write_metrics(self) -> None:
        if self.options.metrics_path is not None:
            try:
                write_textfile(self.options.metrics_path, prometheus_text(metrics(self)))
            except OSError as exc:
                self.last_error = f"metrics file: {exc}"

    # -- reload and shutdown ---------------------------------------------------------------------

    def _do_reload(self) -> None:
        self._reload = False
        self.notifier.reloading()
        try:
            config = self.load_config()
        except ConfigError as exc:
            for problem in exc.problems:
                log.info(f"reload refused, the configuration in use stays: {problem}")
            self.last_error = f"reload refused: {len(exc.problems)} configuration error(s)"
        else:
            self.config = config
            self.saver.send("config", config)
            log.info(f"configuration reloaded: {self._config_files()}")
        self.notifier.ready(status_line(self))

    def shutdown(self) -> None:
        """Record every call in progress (marked interrupted), commit, close. Idempotent."""
        if getattr(self, "_closed", False):
            return
        self._closed = True
        self.notifier.stopping()
        reason = self._stop_reason or "end of input"
        in_progress = self.tracker.flush()
        for call in in_progress:
            marked = INTERRUPTED if call.end_reason.startswith("end of capture") else None
            if marked:
                self.counts.interrupted += 1
            self._save(call, marked)
        final = self._take(self.saver.stop()) or {}
        self.spill.close()  # after the savers: they read the spilled media of the calls they saved
        clean = not final.get("waiting") and not final.get("pending") and not self.unsaved
        if self.journal is not None:
            self.journal.close()
            if clean:  # everything is in the catalogue: nothing to recover next time
                rotate_key(self.journal.directory, self.journal.directory / JOURNAL_KEY)
            else:
                log.info("calls still wait for storage: the journal is kept for the next start")
        self.audit.record(
            user=_os_user(),
            action="capture.stop",
            detail={
                "reason": reason,
                "interrupted": self.counts.interrupted,
                "recorded": self.counts.recorded,
            },
        )
        self.audit.checkpoint()
        self._write_metrics()
        if self.control is not None:
            self.control.close()
        self.source.close()
        self.catalogue.close()
        log.info(
            f"capture stopped ({reason}): {self.counts.recorded} recorded, "
            f"{sum(self.counts.not_recorded.values())} not recorded, {self.counts.interrupted} interrupted"
        )

    # -- recovery --------------------------------------------------------------------------------

    def _recover(self, directory: Path, key: bytes, saver: CallSaver) -> bytes:
        """Turn what a crashed run left in its journal into recordings (see the module docstring);
        then the journal is emptied and its key replaced. Returns the new key."""
        log.info(f"recovering the calls of a capture that did not stop cleanly (journal {directory})")
        report = ReplayReport()
        frames = FrameDecoder()
        tracker = CallTracker(self._tracker_config(self.config))
        saver.unreadable = frames.streams.unreadable
        before = (self.counts.recorded, self.counts.already_present)
        source = "journal of a capture that did not stop cleanly"
        for batch in replay(directory, key, report):
            for call in tracker.feed(frames.decode(batch)):
                saver.save(call, source)
        for call in tracker.flush():
            marked = RECOVERED if call.end_reason.startswith("end of capture") else None
            if marked:
                self.counts.recovered += 1
            saver.save(call, source, end_reason=marked)
        saver.flush_rows()
        log.info(
            f"recovery done: {self.counts.recorded - before[0]} recorded ({self.counts.recovered} cut by the "
            f"crash, marked recovered), {self.counts.already_present - before[1]} recorded before it; "
            f"journal: {report.frames} frames, {report.chunks_torn} torn and {report.chunks_rejected} "
            "rejected chunks"
        )
        return rotate_key(directory, directory / JOURNAL_KEY)


def _raise_open_files_limit(want: int = OPEN_FILES_WANTED) -> None:
    """Spill files stay open, two per call in progress: raise the soft limit (often 1,024) as far as the
    hard limit allows. Beyond it the spill opens a file per write, slower but correct."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _os_user() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
