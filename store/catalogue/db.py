"""The call catalogue: one SQLite file (via sqlite-utils) with calls, their legs and events.

Plain dicts in, dicts out; no capture types cross this boundary. Times are stored twice for
calls: ``started_ns`` (integer nanoseconds, for range queries and ordering) and ISO-8601 UTC text
with milliseconds (``2026-11-28T14:02:03.120Z``) for people.

The connection runs in WAL mode with ``synchronous=NORMAL``, foreign keys on and a busy timeout;
writes take the write lock up front (``BEGIN IMMEDIATE``). Use one :class:`Catalogue` per thread.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlite_utils import Database

from callrec.store.catalogue.migrations import (
    CALL_COLUMNS,
    INSERT_CALL,
    INSERT_EVENT,
    INSERT_LEG,
    Migration,
    Row,
    apply_migrations,
    call_row,
    event_row,
    format_ssrc,
    iso_from_ns,
    leg_row,
    write_transaction,
)
from callrec.store.catalogue.query import (
    CallFilter,
    When,
    fts_query,
    like_contains,
    page,
    parse_until,
    parse_when,
    where,
)
from callrec.store.catalogue.schema import MIGRATIONS
from callrec.store.errors import InvalidArgument, NotFound, StoreError

__all__ = [
    "AddResult", "CallRecord", "Catalogue", "RecordTuple", "Signer", "When", "format_ssrc", "fts_query",
    "iso_from_ns", "like_contains", "parse_until", "parse_when",
]  # fmt: skip


_CALL_ID, _STARTED_NS = CALL_COLUMNS.index("call_id"), CALL_COLUMNS.index("started_ns")
_IDS = "(SELECT value FROM json_each(?))"

Signer = Callable[[Mapping[str, Any], "tuple[str, bytes] | None"], Mapping[str, str]]
"""Given a call as stored (its row with ``id``, ``legs`` and ``events``, as :meth:`Catalogue.get_call`
gives it) and its wrapped data key, the ``signed_metadata``, ``signature`` and ``signing_key`` to
store with it (:meth:`store.crypto.vault.Vault.sign`)."""


class AddResult(NamedTuple):
    """What adding a call did: its catalogue ``id`` and whether it was ``created`` now."""

    id: int
    created: bool

    @property
    def status(self) -> str:
        """``"added"`` or ``"already present"`` (same call_id and start time)."""
        return "added" if self.created else "already present"


RecordTuple = (
    tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]
    | tuple[
        Mapping[str, Any], Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]], tuple[str, bytes] | None
    ]
)
"""``(call, legs, events)``, accepted by :meth:`Catalogue.add_calls` like a :class:`CallRecord`."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call for :meth:`Catalogue.add_calls`: the call's fields, its legs and its events."""

    call: Mapping[str, Any]
    legs: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    events: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    wrapped_key: tuple[str, bytes] | None = None  # (recording key fingerprint, HPKE-wrapped data key)


class Catalogue:
    """The catalogue database at ``path`` (``":memory:"`` for tests), migrated on open.

    ``create=False`` refuses to make a new file. ``clock`` (nanoseconds) stamps ``imported_at``
    and ``applied_at``; pass a fake one in tests. Usable as a context manager."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        busy_timeout_ms: int = 5000,
        clock: Callable[[], int] = time.time_ns,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = str(path)
        self._clock = clock
        memory = self.path == ":memory:"
        if not memory:
            _create_file(Path(self.path), create)
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open catalogue {self.path}: {exc}") from exc
        self.db = Database(conn, execute_plugins=False)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not memory:
                self.db.enable_wal()
                if self.db.journal_mode != "wal":
                    raise StoreError(f"cannot use WAL mode on catalogue {self.path}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(
                "PRAGMA secure_delete = ON"
            )  # deleted wrapped keys are overwritten, not left in free pages
            apply_migrations(self.db, migrations, lambda: iso_from_ns(self._clock()))
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot use catalogue {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise

    def __enter__(self) -> Catalogue:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self.db.close()

    @property
    def schema_version(self) -> int:
        """Id of the newest applied migration."""
        row = self.db.conn.execute("SELECT max(id) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    def add_call(
        self,
        call: Mapping[str, Any],
        legs: Sequence[Mapping[str, Any]] = (),
        events: Sequence[Mapping[str, Any]] = (),
    ) -> AddResult:
        """Add one call with its legs and events in one transaction.

        ``call`` needs ``call_id`` and ``started_ns``; ``started_at`` defaults from
        ``started_ns``, ``direction`` to ``'unknown'``, ``imported_at`` to now; ``codecs`` may be a
        list. A call already present (same ``call_id`` and ``started_ns``) is left as it is and
        its id returned with ``created=False``. Unknown fields raise :class:`InvalidArgument`."""
        return self.add_calls([CallRecord(call, legs, events)])[0]

    def add_calls(
        self, batch: Iterable[CallRecord | RecordTuple], *, sign: Signer | None = None
    ) -> list[AddResult]:
        """Add many calls in one transaction (much faster than one by one); all or nothing.
        Every record is validated before anything is written. ``sign`` (see :data:`Signer`) fills the
        signature columns of each new call from what was stored, in the same transaction."""
        imported_at = iso_from_ns(self._clock())
        rows: list[tuple[Row, list[Row], list[Row], tuple[str, bytes] | None]] = []
        for item in batch:
            record = item if isinstance(item, CallRecord) else CallRecord(*item)
            rows.append(
                (
                    call_row(record.call, imported_at),
                    [leg_row(leg) for leg in record.legs],
                    [event_row(event) for event in record.events],
                    record.wrapped_key,
                )
            )
        results: list[AddResult] = []
        leg_rows: list[Row] = []
        event_rows: list[Row] = []
        key_rows: list[tuple[int, str, bytes]] = []
        conn = self.db.conn
        with write_transaction(self.db):
            for call, legs, events, wrapped in rows:
                inserted = conn.execute(INSERT_CALL, call).fetchall()
                if not inserted:
                    key = (call[_CALL_ID], call[_STARTED_NS])
                    existing = conn.execute("SELECT id FROM calls WHERE call_id = ? AND started_ns = ?", key)
                    results.append(AddResult(int(existing.fetchone()[0]), False))
                    continue
                call_pk = int(inserted[0][0])
                results.append(AddResult(call_pk, True))
                leg_rows.extend((call_pk, *leg) for leg in legs)
                event_rows.extend((call_pk, *event) for event in events)
                if wrapped is not None:
                    key_rows.append((call_pk, wrapped[0], bytes(wrapped[1])))
            conn.executemany(INSERT_LEG, leg_rows)
            conn.executemany(
                "INSERT INTO recording_keys (call, key_fingerprint, wrapped_key) VALUES (?, ?, ?)", key_rows
            )
            conn.executemany(INSERT_EVENT, event_rows)
            if sign is not None:
                created = [result.id for result in results if result.created]
                for stored, wrapped in self._stored_calls(created):
                    columns = sign(stored, wrapped)
                    conn.execute(
                        "UPDATE calls SET signed_metadata = ?, signature = ?, signing_key = ? WHERE id = ?",
                        (
                            columns["signed_metadata"],
                            columns["signature"],
                            columns["signing_key"],
                            stored["id"],
                        ),
                    )
        return results

    def _stored_calls(self, ids: Sequence[int]) -> list[tuple[dict[str, Any], tuple[str, bytes] | None]]:
        """The calls ``ids`` as :meth:`get_call` gives them (legs and events by id), with their
        wrapped keys: three queries for the lot."""
        if not ids:
            return []
        chosen = json.dumps(list(ids))
        rows = {
            int(row["id"]): dict(row, legs=[], events=[])
            for row in self.db.query(f"SELECT * FROM calls WHERE id IN {_IDS}", [chosen])
        }
        for table in ("legs", "events"):
            for item in self.db.query(f"SELECT * FROM {table} WHERE call IN {_IDS} ORDER BY id", [chosen]):
                rows[int(item["call"])][table].append(item)
        keys = {
            int(call): (str(fingerprint), bytes(wrapped))
            for call, fingerprint, wrapped in self.db.conn.execute(
                f"SELECT call, key_fingerprint, wrapped_key FROM recording_keys WHERE call IN {_IDS}",
                [chosen],
            )
        }
        return [(rows[call], keys.get(call)) for call in ids if call in rows]

    def set_recording(
        self,
        call: int,
        *,
        path: str,
        size: int,
        sha256: str,
        sample_rate: int | None = None,
        channels: int | None = None,
        seconds: float | None = None,
    ) -> None:
        """Record where a call's recording is (``path`` relative to the home) and what it is."""
        self._update(
            call,
            recording_path=path,
            recording_bytes=size,
            recording_sha256=sha256,
            sample_rate=sample_rate,
            channels=channels,
            recording_seconds=seconds,
        )

    def add_note(self, call: int, text: str, *, by: str, now_ns: int) -> str:
        """Append a line ``<time> <by>: <text>`` to the call's notes (searchable); returns the notes."""
        line = " ".join(text.split())
        if not line:
            raise InvalidArgument("a note needs some text")
        with write_transaction(self.db):
            row = self.db.conn.execute("SELECT notes FROM calls WHERE id = ?", (call,)).fetchone()
            if row is None:
                raise NotFound(f"no call with id {call}")
            notes = (row[0] + "\n" if row[0] else "") + f"{iso_from_ns(now_ns)} {by}: {line}"
            self.db.conn.execute("UPDATE calls SET notes = ? WHERE id = ?", (notes, call))
        return notes

    def set_error(self, call: int, error: str | None) -> None:
        """Record why processing a call failed (``None`` clears it)."""
        self._update(call, error=error)

    def _update(self, call: int, **values: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in values)
        with write_transaction(self.db):
            cursor = self.db.conn.execute(
                f"UPDATE calls SET {assignments} WHERE id = ?", (*values.values(), call)
            )
            if cursor.rowcount == 0:
                raise NotFound(f"no call with id {call}")

    def find_call(self, call_id: str, started_ns: int) -> int | None:
        """The id of the call with this SIP Call-ID and start time, if the catalogue has it."""
        row = self.db.conn.execute(
            "SELECT id FROM calls WHERE call_id = ? AND started_ns = ?", (call_id, started_ns)
        ).fetchone()
        return None if row is None else int(row[0])

    def wrapped_key(self, call: int) -> tuple[str, bytes] | None:
        """The recording's wrapped data key and the fingerprint of the key it is wrapped to;
        ``None`` when it was never sealed or has been crypto-shredded by a purge."""
        row = self.db.conn.execute(
            "SELECT key_fingerprint, wrapped_key FROM recording_keys WHERE call = ?", (call,)
        ).fetchone()
        return None if row is None else (str(row[0]), bytes(row[1]))

    def tombstone(self, call: int) -> dict[str, Any] | None:
        """The purge record of ``call`` (state, when, by whom, why, which class), if it was purged."""
        rows = list(self.db.query("SELECT * FROM tombstones WHERE call = ?", [call]))
        return rows[0] if rows else None

    def get_call(self, call: int) -> dict[str, Any]:
        """The call's row as a dict, plus ``legs`` (by id) and ``events`` (by time) lists."""
        rows = list(self.db.query("SELECT * FROM calls WHERE id = ?", [call]))
        if not rows:
            raise NotFound(f"no call with id {call}")
        row = rows[0]
        row["legs"] = list(self.db.query("SELECT * FROM legs WHERE call = ? ORDER BY id", [call]))
        row["events"] = list(self.db.query("SELECT * FROM events WHERE call = ? ORDER BY ts_ns, id", [call]))
        return row

    def search(
        self,
        since: When | None = None,
        until: When | None = None,
        number: str | None = None,
        state: str | None = None,
        limit: int | None = 100,
        offset: int = 0,
        text: str | None = None,
        *,
        spec: CallFilter | None = None,
    ) -> list[dict[str, Any]]:
        """Calls matching every given filter (or ``spec``, see :class:`store.catalogue.query.CallFilter`),
        ordered by ``started_ns`` then ``id``. ``limit=None`` means no limit."""
        limit_n, offset_n = page(limit, "limit"), page(offset, "offset")
        spec = spec or CallFilter(since=since, until=until, number=number, state=state, text=text)
        condition = where(self.db.conn, spec)
        if condition is None:
            return []
        sql = f"SELECT c.* FROM calls AS c WHERE {condition[0]} ORDER BY c.started_ns, c.id LIMIT ? OFFSET ?"
        return list(self.db.query(sql, [*condition[1], limit_n, offset_n]))

    def count(
        self,
        since: When | None = None,
        until: When | None = None,
        number: str | None = None,
        state: str | None = None,
        text: str | None = None,
        *,
        spec: CallFilter | None = None,
    ) -> int:
        """How many calls :meth:`search` would find without a limit."""
        spec = spec or CallFilter(since=since, until=until, number=number, state=state, text=text)
        condition = where(self.db.conn, spec)
        if condition is None:
            return 0
        sql = f"SELECT count(*) FROM calls AS c WHERE {condition[0]}"
        return int(self.db.conn.execute(sql, condition[1]).fetchone()[0])


def _create_file(path: Path, create: bool) -> None:
    """Make sure the catalogue file exists (new files with mode 0600) or refuse."""
    if path.is_file():
        return
    if path.exists():
        raise StoreError(f"catalogue {path} is not a file")
    if not create:
        raise NotFound(f"no catalogue in {path.parent}: run `callrec import` first")
    if not path.parent.is_dir():
        raise NotFound(f"cannot create catalogue {path}: directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create catalogue {path}: {exc.strerror or exc}") from exc
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
