"""Retention: how long recordings are kept, and the purge that ends them (crypto-shredding).

Classes come from configuration as ``name -> duration`` (:func:`parse_classes`); a call is stamped
when recorded with its class and expiry (:func:`retention_fields`). :class:`Retention` purges the
expired calls (their recording, and the parties of calls never recorded: personal data too) in four
steps, each idempotent, so a crash anywhere leaves a state that the next
run completes (interrupted purges are completed first):

1. ``tombstone``: a ``'purging'`` tombstone is inserted, re-checking in the same transaction that
   the call is still expired and not held;
2. ``shred``: the wrapped data key (``recording_keys``) is deleted and the tombstone's ``purged_at``
   set: the point of no return, the audio is unrecoverable even from a copy of the file. A hold
   placed before it (or a later expiry) removes the tombstone instead; after it, holds are refused;
3. ``delete-file``: the sealed file is deleted (already missing is fine). An object store under
   Object Lock may refuse (:class:`ObjectLocked`: retention not passed, a legal hold left on): the
   call is reported as ``deferred``, stays shredded, and every later run retries from here;
4. ``redact``: recording columns cleared, personal data redacted, tombstone ``'purged'``, the
   caller's audit hook called, in one transaction.

No copy left in the catalogue file: the connection runs with ``PRAGMA secure_delete = ON`` while
it purges, so deleted key bytes and replaced personal data are overwritten with zeros. Not enough
alone: a b-tree rebalance moves cells and leaves their old bytes in a page's unused gap (measured).
So a run that purged anything then merges the text-search indexes (FTS5 ``optimize``: no deleted
token in an old segment) and rebuilds the file (``VACUUM``, ~1 s per 130 MB); every run ends with
``PRAGMA wal_checkpoint(TRUNCATE)``: clean pages into the database file, the WAL emptied. Copies
outside the catalogue (backups) are out of reach: deleting the key makes them useless.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from callrec.store.catalogue.migrations import iso_from_ns, write_transaction
from callrec.store.errors import InvalidArgument, ObjectLocked, StoreError
from callrec.store.objects.base import ObjectStore
from callrec.store.retention.policy import RetentionClass

log = logging.getLogger(__name__)

STEPS = ("tombstone", "shred", "delete-file", "redact")
"""The purge steps, in order, as named to the ``after_step`` hook."""
AUDIT_ACTION = "retention.purge"

AfterStep = Callable[[int, str], None]
"""Called with (call id, step name) after each step of a purge completes (tests simulate crashes)."""
Audit = Callable[[str, Sequence[int], Mapping[str, object]], None]
"""Called with (action, call ids, detail) once per purged call, inside the purge's last transaction."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A recording to purge. ``state``: ``expired`` (a new purge), ``purging`` (an interrupted
    purge whose key still exists) or ``shredded`` (interrupted after its key was destroyed)."""

    call: int
    call_id: str
    started_ns: int
    retention_class: str | None
    expires_ns: int | None
    expires_at: str | None
    recording_path: str | None
    recording_sha256: str | None
    state: str

    @property
    def resuming(self) -> bool:
        """Whether this completes an interrupted purge."""
        return self.state != "expired"


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What :meth:`Retention.apply` did. ``purged``: calls purged now (``resumed``: those of them
    completing an interrupted purge); ``would_purge``: what a dry run would purge; ``held``:
    expired recordings kept because of a hold; ``errors``: call id -> message, for calls that
    failed (they are retried on the next run); ``deferred``: call id -> message, for calls whose
    recording was crypto-shredded (unreadable) but whose object the store still refuses to delete
    (Object Lock retention or a legal hold): every later run retries the delete, then redacts;
    ``vacuumed``: the file was rebuilt (no stale page
    bytes left); ``checkpointed``: the WAL was emptied."""

    now_ns: int
    dry_run: bool
    purged: tuple[int, ...] = ()
    would_purge: tuple[int, ...] = ()
    held: tuple[int, ...] = ()
    resumed: tuple[int, ...] = ()
    errors: Mapping[int, str] = field(default_factory=dict)
    vacuumed: bool = False
    checkpointed: bool = True
    deferred: Mapping[int, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No call failed."""
        return not self.errors


@dataclass(frozen=True, slots=True)
class ClassSummary:
    """One retention class's figures. Recordings are counted once: ``kept`` (not expired yet, or
    no expiry), ``due`` (expired and not held: the next run purges them), ``held`` (expired but
    kept by a hold). ``purged``: tombstones so far. ``duration``: as configured (None: a class
    found in the catalogue that the configuration does not name)."""

    name: str
    duration: str | None
    kept: int = 0
    due: int = 0
    held: int = 0
    purged: int = 0
    next_expiry_ns: int | None = None

    @property
    def next_expiry_at(self) -> str | None:
        """``next_expiry_ns`` as ISO text."""
        return None if self.next_expiry_ns is None else iso_from_ns(self.next_expiry_ns)


@dataclass(frozen=True, slots=True)
class RetentionSummary:
    """:meth:`Retention.report`: per class (by name), plus recordings without a class
    (``unclassified``, counted here only), recordings that never expire (``no_expiry``: no
    ``expires_ns``), and the total of purged recordings."""

    now_ns: int
    classes: tuple[ClassSummary, ...]
    unclassified: int
    no_expiry: int
    purged_total: int

    @property
    def next_expiry_ns(self) -> int | None:
        """The earliest upcoming expiry over all classes."""
        return min((c.next_expiry_ns for c in self.classes if c.next_expiry_ns is not None), default=None)


_HELD = "EXISTS (SELECT 1 FROM holds h WHERE h.call = c.id AND h.released_at IS NULL)"
_CANDIDATE_COLUMNS = "c.id, c.call_id, c.started_ns"
_RESUMING = f"""
    SELECT {_CANDIDATE_COLUMNS}, t.retention_class, c.expires_ns, t.expires_at, t.recording_path,
        t.recording_sha256, CASE WHEN t.purged_at IS NULL THEN 'purging' ELSE 'shredded' END
    FROM tombstones t JOIN calls c ON c.id = t.call
    WHERE t.state = 'purging' ORDER BY t.started_at, c.id
"""
_DUE = f"""c.expires_ns <= ? AND NOT {_HELD}
    AND NOT EXISTS (SELECT 1 FROM tombstones t WHERE t.call = c.id)"""
_EXPIRED = f"""SELECT {_CANDIDATE_COLUMNS}, c.retention_class, c.expires_ns, c.expires_at, c.recording_path,
    c.recording_sha256, 'expired' FROM calls c WHERE {_DUE} ORDER BY c.expires_ns, c.id"""
_RECHECK = f"""SELECT c.retention_class, coalesce(c.expires_at, ''), c.expires_ns, c.recording_path,
    c.recording_sha256 FROM calls c WHERE c.id = ? AND {_DUE}"""
_STILL_DUE = f"SELECT 1 FROM calls c WHERE c.id = ? AND c.expires_ns <= ? AND NOT {_HELD}"
_HELD_EXPIRED = f"""SELECT c.id FROM calls c LEFT JOIN tombstones t ON t.call = c.id
    WHERE c.expires_ns <= ? AND {_HELD}
        AND (t.call IS NULL OR (t.state = 'purging' AND t.purged_at IS NULL)) ORDER BY c.expires_ns, c.id"""
_INSERT_TOMBSTONE = """INSERT INTO tombstones (call, state, started_at, purged_by, reason, retention_class,
    expires_at, recording_path, recording_sha256) VALUES (?, 'purging', ?, ?, ?, ?, ?, ?, ?)"""
_REDACT_CALL = """
    UPDATE calls SET recording_path = NULL, recording_bytes = NULL, recording_sha256 = NULL,
        recording_uuid = NULL, plaintext_sha256 = NULL, not_recorded = ?,
        caller = NULL, callee = NULL, caller_uri = NULL, callee_uri = NULL, request_uri = NULL,
        caller_display = NULL, callee_display = NULL, notes = NULL, rule_reason = NULL,
        signed_metadata = NULL,
        signature = NULL
    WHERE id = ?
"""
# DTMF digits typed during a call (PINs, card numbers) are personal data too
_REDACT_EVENTS = "UPDATE events SET detail = '', summary = iif(kind = 'dtmf', '', summary) WHERE call = ?"
_REPORT = f"""
    SELECT retention_class, status, count(*), min(CASE WHEN status = 'kept' THEN expires_ns END)
    FROM (
        SELECT c.retention_class, c.expires_ns, CASE
            WHEN t.state = 'purging' AND t.purged_at IS NOT NULL THEN 'due'
            WHEN c.expires_ns IS NULL OR c.expires_ns > :now THEN 'kept'
            WHEN {_HELD} THEN 'held'
            ELSE 'due' END AS status
        FROM calls c LEFT JOIN tombstones t ON t.call = c.id
        WHERE c.recording_path IS NOT NULL
    )
    GROUP BY retention_class, status
"""


class _HookFailed(Exception):
    """Wraps an exception from ``after_step`` (``args[0]``): it ends the run, as a crash would."""


class Retention:
    """Finds and purges expired recordings in the catalogue ``db`` and the files of ``recordings``
    (whose root the calls' ``recording_path`` is relative to). See the module docstring."""

    def __init__(self, db: Database, recordings: ObjectStore) -> None:
        self.db = db
        self.recordings = recordings

    def candidates(self, now_ns: int) -> list[Candidate]:
        """Interrupted purges first, then the recordings expired at ``now_ns`` with no active
        hold and no tombstone, by expiry."""
        conn = self.db.conn
        rows = conn.execute(_RESUMING).fetchall() + conn.execute(_EXPIRED, (now_ns,)).fetchall()
        return [Candidate(*row) for row in rows]

    def held_expired(self, now_ns: int) -> list[int]:
        """Ids of the calls whose recording expired at ``now_ns`` but is kept by an active hold."""
        return [int(row[0]) for row in self.db.conn.execute(_HELD_EXPIRED, (now_ns,))]

    def apply(
        self,
        now_ns: int,
        *,
        by: str,
        dry_run: bool = False,
        reason: str = "retention expired",
        audit: Audit | None = None,
        after_step: AfterStep | None = None,
        vacuum: bool = True,
    ) -> PurgeReport:
        """Purge every candidate (see the module docstring for the steps); ``by`` is who purges.

        Idempotent: a second run finds nothing to do. A call that fails (its file cannot be
        deleted, say) is reported in ``errors`` and the others go on; it is retried next run.
        ``dry_run`` writes nothing and reports ``would_purge``. ``audit`` is called once per purged
        call with ``("retention.purge", [call id], detail)`` inside the transaction that completes
        the purge: write on the same connection without BEGIN; if it raises, that step is rolled
        back and the call reported as failed. An exception from ``after_step`` propagates at once,
        like a crash (later calls are left for the next run). ``vacuum=False`` skips rebuilding
        the file after purging (faster, but old bytes may remain; see the module docstring)."""
        if not isinstance(by, str) or not by.strip():
            raise InvalidArgument("retention apply needs the name of who purges ('by')")
        conn = self.db.conn
        if conn.in_transaction:
            raise StoreError("retention apply must run outside a catalogue transaction: commit first")
        candidates = self.candidates(now_ns)
        if dry_run:
            held = tuple(self.held_expired(now_ns))
            due = [c.call for c in candidates if c.state != "purging" or _due(c, now_ns, held)]
            return PurgeReport(now_ns, True, would_purge=tuple(due), held=held)
        purged, resumed, errors, deferred = list[int](), list[int](), dict[int, str](), dict[int, str]()
        previous = int(conn.execute("PRAGMA secure_delete").fetchone()[0])
        conn.execute("PRAGMA secure_delete = ON")
        try:
            for candidate in candidates:
                try:
                    done = self._purge(candidate, now_ns, by.strip(), reason, audit, after_step)
                except _HookFailed as failed:
                    raise failed.args[0] from None
                except ObjectLocked as exc:  # shredded already; the store keeps the object a while longer
                    deferred[candidate.call] = _message(exc)
                    log.info(
                        "call %d: %s (retried on the next run)", candidate.call, deferred[candidate.call]
                    )
                    continue
                except Exception as exc:  # one broken call never stops the run
                    errors[candidate.call] = _message(exc)
                    log.warning("call %d not purged: %s", candidate.call, errors[candidate.call])
                    continue
                if done:
                    purged.append(candidate.call)
                    if candidate.resuming:
                        resumed.append(candidate.call)
            vacuumed = self._compact(vacuum) if purged else False
        finally:
            conn.execute(f"PRAGMA secure_delete = {previous}")
        held, wal = tuple(self.held_expired(now_ns)), self._checkpoint()
        return PurgeReport(
            now_ns, False, tuple(purged), (), held, tuple(resumed), errors, vacuumed, wal, deferred
        )

    def _purge(
        self, c: Candidate, now_ns: int, by: str, reason: str, audit: Audit | None, hook: AfterStep | None
    ) -> bool:
        """Run the steps still to do for one call; False if it turned out not to be due."""
        call, conn, now = c.call, self.db.conn, iso_from_ns(now_ns)
        if not c.resuming:
            with write_transaction(self.db):
                row = conn.execute(_RECHECK, (call, now_ns)).fetchone()
                if row is None:
                    return False  # held, purged or changed since the candidates were listed
                cls, expires_at, expires, path, sha256 = row
                expires_at = expires_at or iso_from_ns(expires)
                conn.execute(_INSERT_TOMBSTONE, (call, now, by, reason, cls, expires_at, path, sha256))
            _after(hook, call, "tombstone")
        with write_transaction(self.db):
            row = conn.execute(
                "SELECT state, purged_at, recording_path FROM tombstones WHERE call = ?", (call,)
            ).fetchone()
            if row is None or row[0] != "purging":
                return False  # completed or undone by another run
            _, shredded_at, path = row
            if shredded_at is None:
                if conn.execute(_STILL_DUE, (call, now_ns)).fetchone() is None:
                    conn.execute("DELETE FROM tombstones WHERE call = ?", (call,))
                    return False  # held (or its expiry moved) before the point of no return: keep it
                conn.execute("DELETE FROM recording_keys WHERE call = ?", (call,))
                conn.execute("UPDATE tombstones SET purged_at = ? WHERE call = ?", (now, call))
        if shredded_at is None:
            _after(hook, call, "shred")
        if path is not None:
            self.recordings.delete(path, missing_ok=True)
        _after(hook, call, "delete-file")
        with write_transaction(self.db):
            if not self._finish(call, now, audit):
                return False
        _after(hook, call, "redact")
        return True

    def _finish(self, call: int, now: str, audit: Audit | None) -> bool:
        """Step 4, inside its transaction: clear, redact, mark purged, audit."""
        conn = self.db.conn
        columns = "state, retention_class, expires_at, reason, recording_path, recording_sha256, purged_at"
        row = conn.execute(f"SELECT {columns} FROM tombstones WHERE call = ?", (call,)).fetchone()
        if row is None or row[0] != "purging":
            return False
        _, cls, expires_at, reason, path, sha256, purged_at = row
        day = (expires_at or "")[:10] or "unknown date"
        note = f"purged: retention class {cls} expired {day}" if cls else f"purged: retention expired {day}"
        conn.execute(_REDACT_CALL, (note, call))
        conn.execute("UPDATE legs SET src = NULL, dst = NULL WHERE call = ?", (call,))
        conn.execute(_REDACT_EVENTS, (call,))
        conn.execute(
            "UPDATE tombstones SET state = 'purged', purged_at = coalesce(purged_at, ?) WHERE call = ?",
            (now, call),
        )
        if audit is not None:
            detail = dict(retention_class=cls, expires_at=expires_at, reason=reason, recording_path=path)
            audit(AUDIT_ACTION, [call], dict(detail, recording_sha256=sha256, purged_at=purged_at or now))
        return True

    def _compact(self, vacuum: bool) -> bool:
        """Merge the text-search indexes, then rebuild the file if asked; False if not rebuilt."""
        try:
            with write_transaction(self.db):
                self.db.conn.execute("INSERT INTO calls_fts (calls_fts) VALUES ('optimize')")
                self.db.conn.execute("INSERT INTO calls_numbers (calls_numbers) VALUES ('optimize')")
            return vacuum and self.db.conn.execute("VACUUM") is not None
        except (StoreError, sqlite3.OperationalError):  # busy: the next run that purges tries again
            return False

    def _checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate it; False if readers kept it busy."""
        try:
            row = self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            return False
        return row is not None and row[0] == 0

    def report(self, now_ns: int, classes: Mapping[str, RetentionClass] | None = None) -> RetentionSummary:
        """Figures per class at ``now_ns``: kept, due, held, purged so far, next expiry. Every
        configured class in ``classes`` appears, with zeros if it has no recording."""
        conn = self.db.conn
        figures: dict[str, dict[str, Any]] = {
            n: {"duration": str(c.duration)} for n, c in (classes or {}).items()
        }
        unclassified = 0
        for name, status, count, next_ns in conn.execute(_REPORT, {"now": now_ns}):
            if name is None:
                unclassified += count
                continue
            entry = figures.setdefault(name, {"duration": None})
            entry[status] = entry.get(status, 0) + count
            if next_ns is not None:
                entry["next_expiry_ns"] = next_ns
        purged_total = 0
        for name, count in conn.execute(
            "SELECT retention_class, count(*) FROM tombstones WHERE state = 'purged' GROUP BY retention_class"
        ):
            purged_total += count
            if name is not None:
                figures.setdefault(name, {"duration": None})["purged"] = count
        no_expiry = conn.execute(
            "SELECT count(*) FROM calls WHERE recording_path IS NOT NULL AND expires_ns IS NULL"
        ).fetchone()[0]
        summaries = tuple(ClassSummary(name, **figures[name]) for name in sorted(figures))
        return RetentionSummary(now_ns, summaries, unclassified, int(no_expiry), purged_total)


def _due(c: Candidate, now_ns: int, held: Sequence[int]) -> bool:
    return c.expires_ns is not None and c.expires_ns <= now_ns and c.call not in held


def _after(hook: AfterStep | None, call: int, step: str) -> None:
    if hook is not None:
        try:
            hook(call, step)
        except BaseException as exc:
            raise _HookFailed(exc) from exc


def _message(exc: Exception) -> str:
    """One line for the report: a store error's own message, else the exception type too."""
    text = (str(exc).splitlines() or [""])[0]
    return (
        text if isinstance(exc, StoreError) and text else f"{type(exc).__name__}: {text}".removesuffix(": ")
    )
