"""The call catalogue: one SQLite file (via sqlite-utils) with calls, their legs and events.

Plain dicts in, dicts out; no capture types cross this boundary. Times are stored twice for
calls: ``started_ns`` (integer nanoseconds, for range queries and ordering) and ISO-8601 UTC text
with milliseconds (``2026-11-28T14:02:03.120Z``) for people.

The connection runs in WAL mode with ``synchronous=NORMAL``, foreign keys on and a busy timeout;
writes take the write lock up front (``BEGIN IMMEDIATE``). Use one :class:`Catalogue` per thread.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

from sqlite_utils import Database

from store.errors import InvalidArgument, NotFound, StoreError
from store.migrations import (
    CALL_COLUMNS,
    INSERT_CALL,
    INSERT_EVENT,
    INSERT_LEG,
    MIGRATIONS,
    NS_PER_SECOND,
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

__all__ = [
    "AddResult", "CallRecord", "Catalogue", "RecordTuple", "When", "format_ssrc", "fts_query", "iso_from_ns",
    "like_contains", "parse_until", "parse_when",
]  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CALL_ID, _STARTED_NS = CALL_COLUMNS.index("call_id"), CALL_COLUMNS.index("started_ns")
_SELECTIVE = 2000
"""An index filter (numbers, words) matching at most this many calls is applied as a list of ids
and the few rows sorted; a broader one is checked while walking the start-time index instead,
which stops at the end of the page (100k calls, a number matching all of them: 1 ms, not 50 ms)."""

_DATE_HELP = "use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]"
_WHEN = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?\s*(Z|[+-]\d{2}:?\d{2})?)?",
    re.IGNORECASE,
)

When = str | date | int
"""A search bound: ISO text, a ``date``/``datetime`` (naive = UTC) or integer nanoseconds."""


def _parse(text: str) -> tuple[int, bool]:
    """Nanoseconds of ``text`` and whether it was a date only. Naive times are UTC."""
    match = _WHEN.fullmatch(text.strip())
    if match is None:
        raise InvalidArgument(f"invalid date {text!r}: {_DATE_HELP}")
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups()[:6])
    fraction, offset = match.group(7), match.group(8)
    try:
        datetime(year, month, day, hour, minute, second)
    except ValueError:
        raise InvalidArgument(f"invalid date {text!r}: {_DATE_HELP}") from None
    offset_s = 0
    if offset and offset.upper() != "Z":
        digits = offset[1:].replace(":", "")
        off_h, off_m = int(digits[:2]), int(digits[2:])
        if off_h > 23 or off_m > 59:
            raise InvalidArgument(f"invalid date {text!r}: bad UTC offset {offset}")
        offset_s = (off_h * 3600 + off_m * 60) * (-1 if offset[0] == "-" else 1)
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - offset_s
    frac_ns = int(fraction.ljust(9, "0")) if fraction else 0
    return seconds * NS_PER_SECOND + frac_ns, match.group(4) is None


def parse_when(text: str) -> int:
    """Nanoseconds since the epoch of an ISO date or date-time (naive = UTC; ``Z`` or ``+01:00``
    accepted; up to nanosecond fractions). A date means its midnight. Raises
    :class:`InvalidArgument`: ``invalid date 'xx': use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]``."""
    return _parse(text)[0]


def parse_until(text: str) -> int:
    """Exclusive upper bound for ``until``: a date-only value includes that whole day (the bound
    is the next midnight); a date-time is the instant itself."""
    ns, date_only = _parse(text)
    return ns + 86_400 * NS_PER_SECOND if date_only else ns


def _bound(value: When, *, upper: bool) -> int:
    if isinstance(value, bool):
        raise InvalidArgument(f"invalid date {value!r}: {_DATE_HELP}")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        delta = moment - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000
    if isinstance(value, date):
        return _bound(value.isoformat(), upper=upper)
    if isinstance(value, str):
        return parse_until(value) if upper else parse_when(value)
    raise InvalidArgument(f"invalid date {value!r}: {_DATE_HELP}")


class AddResult(NamedTuple):
    """What adding a call did: its catalogue ``id`` and whether it was ``created`` now."""

    id: int
    created: bool

    @property
    def status(self) -> str:
        """``"added"`` or ``"already present"`` (same call_id and start time)."""
        return "added" if self.created else "already present"


RecordTuple = tuple[Mapping[str, Any], Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]]]
"""``(call, legs, events)``, accepted by :meth:`Catalogue.add_calls` like a :class:`CallRecord`."""


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call for :meth:`Catalogue.add_calls`: the call's fields, its legs and its events."""

    call: Mapping[str, Any]
    legs: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    events: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


def like_contains(text: str) -> str:
    """A ``LIKE ... ESCAPE '\\'`` pattern matching ``text`` anywhere, ``%`` and ``_`` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def fts_query(text: str) -> str:
    """An FTS5 query from user input that can never be a syntax error: every word becomes a
    quoted prefix phrase (``"word"*``), words are ANDed, operators are just words.
    Returns ``""`` when the input has no searchable word."""
    terms = [
        '"' + word.replace('"', '""') + '"*' for word in text.split() if any(ch.isalnum() for ch in word)
    ]
    return " ".join(terms)


def _plain_filters(
    since: When | None, until: When | None, number: str | None, state: str | None
) -> tuple[list[str], list[Any], str]:
    """Conditions without an index lookup, and the stripped number (``""`` if none)."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append("c.started_ns >= ?")
        params.append(_bound(since, upper=False))
    if until is not None:
        clauses.append("c.started_ns < ?")
        params.append(_bound(until, upper=True))
    if state:
        clauses.append("c.state = ?")
        params.append(state)
    needle = (number or "").strip()
    if needle:  # the exact semantics; the trigram index only narrows the candidates
        clauses.append("(c.caller LIKE ? ESCAPE '\\' OR c.callee LIKE ? ESCAPE '\\')")
        params += [like_contains(needle)] * 2
    return clauses, params, needle


def _page(value: int | None, name: str) -> int:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a whole number >= 0, not {value!r}")
    return value


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

    def add_calls(self, batch: Iterable[CallRecord | RecordTuple]) -> list[AddResult]:
        """Add many calls in one transaction (much faster than one by one); all or nothing.
        Every record is validated before anything is written."""
        imported_at = iso_from_ns(self._clock())
        rows: list[tuple[Row, list[Row], list[Row]]] = []
        for item in batch:
            record = item if isinstance(item, CallRecord) else CallRecord(*item)
            rows.append(
                (
                    call_row(record.call, imported_at),
                    [leg_row(leg) for leg in record.legs],
                    [event_row(event) for event in record.events],
                )
            )
        results: list[AddResult] = []
        leg_rows: list[Row] = []
        event_rows: list[Row] = []
        conn = self.db.conn
        with write_transaction(self.db):
            for call, legs, events in rows:
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
            conn.executemany(INSERT_LEG, leg_rows)
            conn.executemany(INSERT_EVENT, event_rows)
        return results

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
    ) -> list[dict[str, Any]]:
        """Calls matching every given filter, ordered by ``started_ns`` then ``id``.

        ``since`` is inclusive and ``until`` exclusive, except that a date-only ``until``
        (``2026-11-28``) includes that whole day. ``number`` matches caller or callee as a
        substring (``%`` and ``_`` literally). ``text`` matches words of names and URIs (each
        word as a prefix, all words required; quotes and operators are plain text).
        ``limit=None`` means no limit."""
        limit_n, offset_n = _page(limit, "limit"), _page(offset, "offset")
        where = self._where(since, until, number, state, text)
        if where is None:
            return []
        sql = f"SELECT c.* FROM calls AS c WHERE {where[0]} ORDER BY c.started_ns, c.id LIMIT ? OFFSET ?"
        return list(self.db.query(sql, [*where[1], limit_n, offset_n]))

    def count(
        self,
        since: When | None = None,
        until: When | None = None,
        number: str | None = None,
        state: str | None = None,
        text: str | None = None,
    ) -> int:
        """How many calls :meth:`search` would find without a limit."""
        where = self._where(since, until, number, state, text)
        if where is None:
            return 0
        row = self.db.conn.execute(f"SELECT count(*) FROM calls AS c WHERE {where[0]}", where[1]).fetchone()
        return int(row[0])

    def _where(
        self, since: When | None, until: When | None, number: str | None, state: str | None, text: str | None
    ) -> tuple[str, list[Any]] | None:
        """SQL condition and parameters for the filters, or ``None`` if nothing can match.

        Number (3+ characters) and word filters first ask their FTS5 index for at most
        ``_SELECTIVE + 1`` ids: few ids become an id list; many leave the number to LIKE and the
        words to a membership test made while walking the start-time index (``+c.id``)."""
        clauses, params, needle = _plain_filters(since, until, number, state)
        ids: set[int] | None = None
        if len(needle) >= 3:
            ids = self._probe("calls_numbers", '"' + needle.replace('"', '""') + '"')
        if text is not None and text.strip():
            query = fts_query(text)
            if not query:
                return None
            found = self._probe("calls_fts", query)
            if found is None:
                clauses.append("+c.id IN (SELECT rowid FROM calls_fts WHERE calls_fts MATCH ?)")
                params.append(query)
            else:
                ids = found if ids is None else ids & found
        if ids is not None:
            if not ids:
                return None
            clauses.append("c.id IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(sorted(ids)))
        return " AND ".join(clauses) or "1", params

    def _probe(self, table: str, query: str) -> set[int] | None:
        """Ids matching ``query`` in an FTS5 table, or ``None`` if more than ``_SELECTIVE``."""
        rows = self.db.conn.execute(
            f"SELECT rowid FROM {table} WHERE {table} MATCH ? LIMIT ?", (query, _SELECTIVE + 1)
        ).fetchall()
        return None if len(rows) > _SELECTIVE else {row[0] for row in rows}


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
