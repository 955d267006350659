"""Legal holds: while a call has an active hold, retention never purges its recording.

A call may have several holds (one per case); releasing a call's holds releases all of its active
ones. Holds are never deleted: a released hold keeps who placed and released it, when and why.

A call whose recording retention has already destroyed (its key shredded, :mod:`store.retention.purge`)
cannot be held (:class:`AlreadyPurged`). A call whose purge has begun but not yet reached that
point can: the next retention run sees the hold and keeps the recording.

Every write joins the caller's open transaction if there is one (so the CLI can write the audit
entry in the same transaction), else runs in its own ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import builtins
import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from sqlite_utils import Database

from callrec.store.catalogue.migrations import iso_from_ns, write_transaction
from callrec.store.errors import AlreadyPurged, InvalidArgument, NotFound
from callrec.store.objects.base import ObjectStore

__all__ = ["Hold", "Holds"]

_COLUMNS = "id, call, reason, placed_by, placed_at, released_by, released_at, release_reason"


@dataclass(frozen=True, slots=True)
class Hold:
    """One row of ``holds``; ``released_at`` is None while the hold is active."""

    id: int
    call: int
    reason: str
    placed_by: str
    placed_at: str
    released_by: str | None = None
    released_at: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        """Whether the hold still keeps the call's recording from being purged."""
        return self.released_at is None


class Holds:
    """Legal holds in the catalogue ``db`` and, given the recording store ``objects``, on the
    recordings themselves: placing a hold sets the object's legal hold (Object Lock), releasing the
    last one clears it, each inside the catalogue's transaction, so that a store that refuses leaves
    both sides as they were (the error propagates)."""

    def __init__(self, db: Database, objects: ObjectStore | None = None) -> None:
        self.db = db
        self.objects = objects

    def _set_object_hold(self, conn: sqlite3.Connection, call: int, on: bool) -> None:
        if self.objects is None:
            return
        row = conn.execute("SELECT recording_path FROM calls WHERE id = ?", (call,)).fetchone()
        if row is not None and row[0]:
            self.objects.set_legal_hold(str(row[0]), on)

    def add(self, call: int, *, reason: str, by: str, now_ns: int) -> int:
        """Place a hold on ``call`` and return its id. Raises :class:`NotFound` for an unknown
        call, :class:`InvalidArgument` for an empty reason or user, and :class:`AlreadyPurged`
        if retention has already destroyed the call's recording."""
        reason, by = _required(reason, "a hold needs a reason, e.g. the case or ticket number"), _by(by)
        with _transaction(self.db) as conn:
            _require_call(conn, call)
            tomb = conn.execute("SELECT state, purged_at FROM tombstones WHERE call = ?", (call,)).fetchone()
            if tomb is not None and (tomb[0] == "purged" or tomb[1] is not None):
                day = (tomb[1] or "")[:10] or "an earlier run"
                raise AlreadyPurged(
                    f"call {call} was purged by retention on {day}: its recording is gone and cannot be held"
                )
            row = conn.execute(
                "INSERT INTO holds (call, reason, placed_by, placed_at) VALUES (?, ?, ?, ?) RETURNING id",
                (call, reason, by, iso_from_ns(now_ns)),
            ).fetchone()
            self._set_object_hold(conn, call, True)
            return int(row[0])

    def remove(self, call: int, *, by: str, now_ns: int, reason: str = "") -> int:
        """Release every active hold of ``call`` and return how many. Raises :class:`NotFound`
        for an unknown call or one without an active hold."""
        by = _by(by)
        with _transaction(self.db) as conn:
            _require_call(conn, call)
            cursor = conn.execute(
                "UPDATE holds SET released_by = ?, released_at = ?, release_reason = ? "
                "WHERE call = ? AND released_at IS NULL",
                (by, iso_from_ns(now_ns), reason.strip() or None, call),
            )
            if cursor.rowcount == 0:
                raise NotFound(f"call {call} has no active hold")
            self._set_object_hold(conn, call, False)
            return int(cursor.rowcount)

    def active(self, call: int) -> builtins.list[Hold]:
        """The active holds of ``call``, oldest first (:class:`NotFound` for an unknown call)."""
        _require_call(self.db.conn, call)
        return self._select("WHERE call = ? AND released_at IS NULL", (call,))

    def is_held(self, call: int) -> bool:
        """Whether ``call`` has an active hold (:class:`NotFound` for an unknown call)."""
        _require_call(self.db.conn, call)
        row = self.db.conn.execute(
            "SELECT 1 FROM holds WHERE call = ? AND released_at IS NULL LIMIT 1", (call,)
        ).fetchone()
        return row is not None

    def list(self, active_only: bool = True, *, call: int | None = None) -> builtins.list[Hold]:
        """Holds by id (active ones only unless ``active_only=False``), of one call if given."""
        clauses = ["released_at IS NULL"] if active_only else []
        params: tuple[int, ...] = ()
        if call is not None:
            clauses.append("call = ?")
            params = (call,)
        return self._select(f"WHERE {' AND '.join(clauses)}" if clauses else "", params)

    def _select(self, where: str, params: tuple[int, ...]) -> builtins.list[Hold]:
        rows = self.db.conn.execute(f"SELECT {_COLUMNS} FROM holds {where} ORDER BY id", params)
        return [Hold(*row) for row in rows]


@contextlib.contextmanager
def _transaction(db: Database) -> Iterator[sqlite3.Connection]:
    """The caller's open transaction, else a new ``BEGIN IMMEDIATE`` one."""
    if db.conn.in_transaction:
        yield db.conn
    else:
        with write_transaction(db):
            yield db.conn


def _require_call(conn: sqlite3.Connection, call: int) -> None:
    if isinstance(call, bool) or not isinstance(call, int):
        raise InvalidArgument(f"a call id is a whole number, not {call!r}")
    if conn.execute("SELECT 1 FROM calls WHERE id = ?", (call,)).fetchone() is None:
        raise NotFound(f"no call with id {call}")


def _required(text: str, message: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument(message)
    return text.strip()


def _by(by: str) -> str:
    return _required(by, "a hold needs the name of who places or releases it ('by')")
