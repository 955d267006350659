"""The live capture's journal, sealed, written and synced by a thread of its own.

Writing the journal in the capture loop stalled it: each flush seals a second of frames (20 MB at 100,000
frames/s) and waits for ``fdatasync``, which on ext4 also waits for whatever the savers wrote meanwhile
(hundreds of MB while a wave of hang-ups is being recorded), and the loop waited meanwhile.
So the loop only copies frames out of the ring (:meth:`Journal.append`) and, every quarter of a second,
hands the chunk to this thread (:meth:`Journal.take`); the thread does the rest (:meth:`Journal.write`)
and the pruning. Chunks that queued up while it waited for the disk are written one after the other and
synced once. AES-GCM and the system calls release the GIL, so the loop keeps reading meanwhile.

If the disk cannot keep up and :data:`MAX_QUEUED_CHUNKS` chunks wait already, a new chunk is dropped
(counted and logged like any journal failure): the journal is for recovery after a crash, and never
worth dropping frames from the ring. Only the thread touches the segments after start; the loop only
reads the counters (:meth:`stats`).
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

from callrec.capture.model.packets import PacketBatch
from callrec.recorder.journal.segments import Journal, JournalStats, PlainChunk

MAX_QUEUED_CHUNKS = 16  # four seconds of frames at the capture's flush interval
log = logging.getLogger(__name__)

_Task = tuple[str, PlainChunk | int | None]


class JournalWriter:
    """:class:`~recorder.journal.segments.Journal`'s methods for the capture loop, the writing done in a
    thread."""

    def __init__(self, journal: Journal, *, max_queued: int = MAX_QUEUED_CHUNKS) -> None:
        self.journal = journal
        journal.flush_when_full = False  # a chunk is written by the thread only
        self.max_queued = max_queued
        self._tasks: queue.Queue[_Task] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="callrec-journal", daemon=True)
        self._thread.start()

    @property
    def directory(self) -> Path:
        return self.journal.directory

    def append(self, batch: PacketBatch) -> None:
        """Copy the batch's frames out of the ring (the caller may reuse its buffer at once)."""
        self.journal.append(batch)
        if self.journal.pending_bytes >= self.journal.max_chunk_bytes:
            self.flush()

    def flush(self) -> None:
        """Hand what was appended since the last flush to the thread (or drop it if the thread is behind)."""
        chunk = self.journal.take()
        if chunk is None:
            return
        if self._tasks.qsize() >= self.max_queued:
            self.journal.drop(chunk.frames, f"the disk is too slow: {self.max_queued} chunks wait already")
            return
        self._tasks.put(("write", chunk))

    def prune(self, keep_from_ns: int) -> None:
        """Have the thread delete the segments older than ``keep_from_ns`` (see :meth:`Journal.prune`)."""
        self._tasks.put(("prune", keep_from_ns))

    def stats(self) -> JournalStats:
        return self.journal.stats()

    def wait(self) -> None:
        """Until everything handed to the thread so far is written (tests, shutdown)."""
        self._tasks.join()

    def close(self) -> None:
        """Flush, wait for the thread to write everything, close the segment."""
        self.flush()
        self._tasks.put(("close", None))
        self._thread.join()

    def _run(self) -> None:
        while True:
            tasks = [self._tasks.get()]
            while True:  # whatever queued up behind it: written one after the other, synced once
                try:
                    tasks.append(self._tasks.get_nowait())
                except queue.Empty:
                    break
            try:
                for n, (kind, value) in enumerate(tasks):
                    if self._do(kind, value, last=n + 1 == len(tasks) or tasks[n + 1][0] != "write"):
                        return
            finally:
                for _ in tasks:
                    self._tasks.task_done()

    def _do(self, kind: str, value: PlainChunk | int | None, *, last: bool) -> bool:
        """One task (a write synced only if ``last`` of a run of writes); whether the thread ends."""
        try:
            if kind == "write" and isinstance(value, PlainChunk):
                self.journal.write(value, sync=last)
            elif kind == "prune" and isinstance(value, int):
                self.journal.prune(value)
            elif kind == "close":
                self.journal.close()
                return True
        except Exception:  # the journal reports its own failures; anything else must not end the thread
            log.exception("journal writer: %s failed", kind)
        return False
