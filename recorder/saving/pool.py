"""Saving the live capture's finished calls in a process of its own.

Saving one call (render, seal, write, commit: about 10 ms for a 30 s G.711 call) inside the capture loop
stalls reading the ring; a wave of hang-ups then overflows it (bench/bench_live.py measured drops from 500
concurrent calls up). So the loop only reads, decodes and tracks, and hands each finished call to a saver
process through a queue; the saver renders, seals and commits (with the retry for storage that is full or
unavailable), and reports back what happened: log lines, each call's outcome, and its state.

:class:`SavingEngine` is the saving itself, with no process around it (it also runs inline, with
``--saver inline``); :class:`SaverProcess` runs it in a child process (``spawn``: the child inherits no
ring socket or other descriptor of the capture). Messages to the engine: ``("save", SaveJob)``,
``("config", Config)``, ``("stop", None)``. Messages back: ``("log", text)``, ``("saved", outcome dict)``,
``("committed", [(call_id, started_ns), ...])``, ``("state", dict)``, ``("stopped", dict)``.

One saver renders and seals about 150 thirty-second G.711 calls a second; when a thousand calls end within
a few seconds that is seconds of backlog, so :class:`SaverPool` runs several (``--savers``), each with its
own catalogue connection (SQLite serialises their commits), and hands each call to the one with the
fewest calls outstanding.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import multiprocessing
import os
import queue
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callrec.capture.model.calls import CapturedCall
from callrec.capture.tracking.handoff import resolve_spilled
from callrec.recorder.config import Config
from callrec.recorder.policy.modes import Signal
from callrec.recorder.saving.saver import CallSaver, SaveTotals, StorageUnavailable
from callrec.recorder.saving.sealed_spill import SpillFiles
from callrec.store.catalogue.db import Catalogue
from callrec.store.crypto.keys import KeyDirectory
from callrec.store.crypto.vault import Vault
from callrec.store.errors import StoreError
from callrec.store.home import Home
from callrec.store.retention.purge import Retention

COMMIT_INTERVAL_S = 0.1
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
SAVER_NICENESS = 10  # a saver that falls behind delays recordings; a capture that does loses packets
RETRY_INTERVAL_S = 5.0
Message = tuple[str, Any]
Emit = Callable[[Message], None]


@dataclass(frozen=True, slots=True)
class SaveJob:
    call: CapturedCall
    source: str
    commands: tuple[Signal, ...] = ()
    end_reason: str | None = None


@dataclass(frozen=True, slots=True)
class SaverOptions:
    """How savers keep calls while storage is unavailable (at most ``max_waiting``), the free-space floor
    below which expired recordings are purged (0: never), and the capture's spill key (None: no spill)."""

    max_waiting: int = 1000
    free_space_floor: int = 0
    spill_key: bytes | None = None

    def engine_kwargs(self) -> dict[str, Any]:
        return {
            "max_waiting": self.max_waiting,
            "free_space_floor": self.free_space_floor,
            "spill_key": self.spill_key,
        }


class SavingEngine:
    """Saves jobs into one home (:class:`recorder.saving.saver.CallSaver`), keeps them waiting while storage
    is unavailable (at most ``max_waiting``; beyond, the oldest are dropped and reported), and commits
    at least every :data:`COMMIT_INTERVAL_S`."""

    def __init__(
        self,
        home_root: Path,
        config: Config,
        emit: Emit,
        *,
        max_waiting: int,
        free_space_floor: int,
        spill_key: bytes | None = None,
    ):
        self.home = Home(home_root)
        self.spill = SpillFiles(spill_key) if spill_key is not None else None
        vault = Vault(KeyDirectory(self.home.keys), self.home.recording_store(config.storage))
        self.catalogue = Catalogue(self.home.catalogue_path)
        self.counts = SaveTotals()
        self.saver = CallSaver(self.catalogue, vault, config, self.counts)
        self.audit = self.home.audit_trail(self.catalogue.db, config.audit_anchor)
        self.emit = emit
        self.max_waiting = max_waiting
        self.free_space_floor = free_space_floor
        self.waiting: collections.deque[SaveJob] = collections.deque()
        self.uncommitted: list[tuple[str, int]] = []
        self.last_error = ""
        self.lost = 0
        self._next_commit = 0.0
        self._next_retry = 0.0

    def handle(self, kind: str, value: Any) -> None:
        if kind == "save":
            self._save(value)
        elif kind == "config":
            self.saver.config = value

    def _save(self, job: SaveJob) -> bool:
        call = job.call
        counters: collections.Counter[str] = collections.Counter()
        if self.spill is not None:  # the chunks stay in their files until the capture hears "saved"
            call = resolve_spilled(call, self.spill, counters)
        try:
            saved = self.saver.save(call, job.source, commands=job.commands, end_reason=job.end_reason)
        except StorageUnavailable as exc:
            self.waiting.append(job)
            self._failed(exc)
            while len(self.waiting) > self.max_waiting:
                lost = self.waiting.popleft()
                self.lost += 1
                waiting = len(self.waiting)
                self.emit(
                    ("log", f"call {lost.call.call_id} lost: storage unavailable and {waiting} calls waiting")
                )
                self.emit(
                    (
                        "saved",
                        {"call_id": lost.call.call_id, "started_ns": lost.call.started_ns, "outcome": "lost"},
                    )
                )
            return False
        row = saved or {}
        if saved is None:
            outcome = "already"
        elif row.get("recording_path"):
            outcome = "recorded"
            reason = job.end_reason or call.end_reason
            self.emit(
                (
                    "log",
                    f"recorded {call.call_id} {call.caller} -> {call.callee} "
                    f"({row.get('recording_seconds')} s, rule {row.get('rule')}, {reason})",
                )
            )
        else:
            outcome = "failed" if row.get("error") else "not_recorded"
            self.emit(
                (
                    "log",
                    f"not recorded {call.call_id} {call.caller} -> {call.callee}: {row.get('not_recorded')}",
                )
            )
        self.emit(
            (
                "saved",
                {
                    "call_id": call.call_id,
                    "started_ns": call.started_ns,
                    "outcome": outcome,
                    "reason": row.get("not_recorded"),
                    "counters": dict(counters),
                },
            )
        )
        self.uncommitted.append((call.call_id, call.started_ns))
        return True

    def _failed(self, exc: Exception) -> None:
        text = f"storage unavailable: {exc}"
        if text != self.last_error:
            self.emit(("log", f"{text}; calls wait in memory ({len(self.waiting)} now) and are retried"))
        self.last_error = text

    def commit(self) -> bool:
        try:
            self.saver.flush_rows()
        except StorageUnavailable as exc:
            self._failed(exc)
            return False
        if self.uncommitted:
            self.emit(("committed", self.uncommitted))
            self.uncommitted = []
        return True

    def tick(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now >= self._next_commit:
            self._next_commit = now + COMMIT_INTERVAL_S
            if self.saver.pending:
                self.commit()
        if force or now >= self._next_retry:
            self._next_retry = now + RETRY_INTERVAL_S
            self._retry()
        self.emit(("state", self.state()))

    def _retry(self) -> None:
        if not self.waiting and not self.saver.pending:
            return
        if self.free_space_floor:
            self._make_space()
        if not self.commit():
            return
        while self.waiting:
            if not self._save(self.waiting.popleft()):
                return
        if self.commit() and self.last_error.startswith("storage unavailable"):
            self.emit(("log", "storage available again: waiting calls recorded"))
            self.last_error = ""

    def _make_space(self) -> None:
        """Purge expired recordings (never held ones) when free space is below the floor."""
        free = shutil.disk_usage(self.home.root).free
        if free >= self.free_space_floor:
            return

        def audit(action: str, call_ids: Iterable[int], detail: Mapping[str, object]) -> None:
            self.audit.record(user="callrec-capture", action=action, call_ids=call_ids, detail=detail)

        try:
            report = Retention(self.catalogue.db, self.saver.recordings).apply(
                time.time_ns(), by="callrec-capture", reason="free space below the floor", audit=audit
            )
        except (OSError, sqlite3.Error, StoreError) as exc:
            self.emit(
                (
                    "log",
                    f"free space {free} bytes is below the floor; purging expired recordings failed: {exc}",
                )
            )
            return
        self.emit(
            (
                "log",
                f"free space {free} bytes is below the floor: {len(report.purged)} expired recordings purged",
            )
        )

    def state(self) -> dict[str, Any]:
        return {
            "waiting": len(self.waiting),
            "pending": self.saver.pending,
            "last_error": self.last_error,
            "lost": self.lost,
        }

    def finish(self) -> dict[str, Any]:
        """At shutdown: one more try for what waits, a last commit; the final state."""
        self.tick(force=True)
        self.commit()
        state = self.state()
        self.catalogue.close()
        return state


def _run(home_root: str, config: Config, options: dict[str, Any], jobs: Any, results: Any) -> None:
    """The saver process: engine messages from ``jobs`` until ``stop``, or until the capture is gone
    (killed: its journal recovers the calls at the next start; what was saved here is committed)."""
    with contextlib.suppress(OSError):  # when both compete for a core, the capture loop must win it
        os.nice(SAVER_NICENESS)
    _keep_freed_memory()
    engine = SavingEngine(Path(home_root), config, results.put, **options)
    parent = multiprocessing.parent_process()
    while True:
        try:
            kind, value = jobs.get(timeout=COMMIT_INTERVAL_S)
        except queue.Empty:
            engine.tick()
            if parent is not None and not parent.is_alive():
                engine.finish()
                return
            continue
        if kind == "stop":
            break
        engine.handle(kind, value)
        engine.tick()
    results.put(("stopped", engine.finish()))


def _keep_freed_memory() -> None:
    """Have glibc keep the memory a saved call freed for the next one instead of returning it to the
    system: every call allocates tens of MB (samples, WAV, sealed pieces), and touching fresh pages cost
    1-4 us per 4 KiB page here, a third of rendering. Both thresholds must be set: a fixed mmap threshold
    stops glibc from raising it, and the trim threshold stops it from giving back the heap's top."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    mallopt(M_MMAP_THRESHOLD, 64 << 20)
    mallopt(M_TRIM_THRESHOLD, 256 << 20)


class SaverProcess:
    """The engine in a child process; :meth:`poll` returns its messages (never blocks)."""

    def __init__(self, home_root: Path, config: Config, options: SaverOptions) -> None:
        context = multiprocessing.get_context("spawn")
        self.jobs = context.Queue()
        self.results = context.Queue()
        self.process = context.Process(
            target=_run,
            args=(str(home_root), config, options.engine_kwargs(), self.jobs, self.results),
            name="callrec-saver",
        )
        self.process.start()

    def send(self, kind: str, value: Any) -> None:
        self.jobs.put((kind, value))

    def poll(self) -> list[Message]:
        out: list[Message] = []
        while True:
            try:
                out.append(self.results.get_nowait())
            except queue.Empty:
                return out

    def stop(self, timeout_s: float = 600.0, *, asked: bool = False) -> list[Message]:
        """Ask the saver to finish (unless ``asked`` already); every message until it stopped (its final
        state is the last)."""
        if not asked:
            self.send("stop", None)
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                message = self.results.get(timeout=0.5)
            except queue.Empty:
                if not self.process.is_alive():
                    break
                continue
            out.append(message)
            if message[0] == "stopped":
                break
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
        self.forget_jobs()
        return out

    def forget_jobs(self) -> None:
        """Once the process is gone, drop what was still queued for it: otherwise the queue's feeder
        thread, blocked writing to a pipe nobody reads, keeps this process from exiting."""
        self.jobs.close()
        self.jobs.cancel_join_thread()


def merged_state(states: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """One state for several savers: counts added up, the first error that is set."""
    states = list(states)
    errors = [str(s.get("last_error") or "") for s in states]
    return {
        "waiting": sum(int(s.get("waiting", 0)) for s in states),
        "pending": sum(int(s.get("pending", 0)) for s in states),
        "last_error": next((e for e in errors if e), ""),
        "lost": sum(int(s.get("lost", 0)) for s in states),
    }


class SaverPool:
    """Several :class:`SaverProcess` es behind the same three calls. A call goes to the saver with the
    fewest calls outstanding (handed over, outcome not reported yet), so one saver stuck on a slow
    disk or waiting for storage does not hold up the others' calls; configuration goes to all.

    A saver that dies (killed, or crashed in a native decoder) is replaced, and the calls it had not
    reported are handed to the new one; a call that was with a saver that died twice is reported
    ``failed`` instead of being handed on a third time (it is likely what kills them)."""

    def __init__(self, home_root: Path, config: Config, options: SaverOptions, processes: int = 2) -> None:
        if processes < 1:
            raise ValueError("a saver pool needs at least one process")
        self.home_root, self.config, self.options = home_root, config, options
        self.savers = [SaverProcess(home_root, config, options) for _ in range(processes)]
        self.handed: list[dict[tuple[str, int], SaveJob]] = [{} for _ in range(processes)]
        self.crashes: dict[tuple[str, int], int] = {}  # calls that were with a saver that died
        self.states: list[Mapping[str, Any]] = [{} for _ in range(processes)]
        self.replaced = 0

    @property
    def outstanding(self) -> list[int]:
        return [len(jobs) for jobs in self.handed]

    def send(self, kind: str, value: Any) -> None:
        if kind != "save":
            if kind == "config":
                self.config = value
            for saver in self.savers:
                saver.send(kind, value)
            return
        index = min(range(len(self.savers)), key=lambda i: len(self.handed[i]))
        self.handed[index][(value.call.call_id, value.call.started_ns)] = value
        self.savers[index].send(kind, value)

    def poll(self) -> list[Message]:
        out: list[Message] = []
        changed = False
        for index, saver in enumerate(self.savers):
            for message in saver.poll():
                changed |= self._note(index, message)
                if message[0] != "state":
                    out.append(message)
            if not saver.process.is_alive():
                out += self._replace(index)
                changed = True
        if changed:
            out.append(("state", merged_state(self.states)))
        return out

    def _replace(self, index: int) -> list[Message]:
        """A new saver in place of a dead one; its calls handed on again (or failed, the second time)."""
        dead = self.savers[index]
        dead.forget_jobs()
        jobs, self.handed[index] = self.handed[index], {}
        self.savers[index] = SaverProcess(self.home_root, self.config, self.options)
        self.states[index] = {}
        self.replaced += 1
        out: list[Message] = [
            (
                "log",
                f"saver process {dead.process.pid} ended (exit code {dead.process.exitcode}); a new one "
                f"saves the {len(jobs)} call(s) it had",
            )
        ]
        for key, job in jobs.items():
            self.crashes[key] = self.crashes.get(key, 0) + 1
            if self.crashes[key] >= 2:
                out.append(("log", f"call {key[0]} not recorded: the saver died twice while it had it"))
                outcome = {"call_id": key[0], "started_ns": key[1], "outcome": "failed", "crashed": True}
                out.append(("saved", outcome))
                continue
            self.send("save", job)
        return out

    def _note(self, index: int, message: Message) -> bool:
        """Book-keeping for one saver's message; whether its state changed."""
        kind, value = message
        if kind == "saved":  # each call handed over is reported once: saved, not recorded, failed or lost
            key = (value["call_id"], value["started_ns"])
            self.handed[index].pop(key, None)
            self.crashes.pop(key, None)
        if kind in ("state", "stopped"):
            self.states[index] = value
            return True
        return False

    def stop(self, timeout_s: float = 600.0) -> list[Message]:
        """Stop every saver (they finish in parallel); their messages, then one merged final state."""
        for saver in self.savers:
            saver.send("stop", None)
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        for index, saver in enumerate(self.savers):
            for message in saver.stop(max(1.0, deadline - time.monotonic()), asked=True):
                self._note(index, message)
                if message[0] not in ("state", "stopped"):
                    out.append(message)
        out.append(("stopped", merged_state(self.states)))
        return out


class InlineSaver:
    """The engine in the capture's own process (``--saver inline``): simpler, slower under load."""

    def __init__(self, home_root: Path, config: Config, options: SaverOptions) -> None:
        self._messages: list[Message] = []
        self.engine = SavingEngine(home_root, config, self._messages.append, **options.engine_kwargs())

    def send(self, kind: str, value: Any) -> None:
        self.engine.handle(kind, value)

    def poll(self) -> list[Message]:
        self.engine.tick()
        out, self._messages[:] = list(self._messages), []
        return out

    def stop(self, timeout_s: float = 600.0) -> list[Message]:
        final = self.engine.finish()
        out = list(self._messages) + [("stopped", final)]
        self._messages.clear()
        return out
