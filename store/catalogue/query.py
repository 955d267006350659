"""Which calls a search means: dates, numbers, words, direction, queue, duration, recorded,
and the caller's scope, turned into one SQL condition over ``calls AS c``.

Numbers (3+ characters) and words first ask their FTS5 index for at most ``SELECTIVE + 1`` ids:
few ids become an id list; many leave the number to ``LIKE`` and the words to a membership test
made while walking the start-time index (``+c.id``).
"""

from __future__ import annotations

import calendar
import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from callrec.store.catalogue.migrations import NS_PER_SECOND
from callrec.store.errors import InvalidArgument

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SELECTIVE = 2000
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


def page(value: int | None, name: str) -> int:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgument(f"{name} must be a whole number >= 0, not {value!r}")
    return value


DIRECTIONS = ("inbound", "outbound", "internal", "external", "unknown")


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Every filter of ``calls list`` / ``calls search``; ``None`` means "any".

    ``since`` is inclusive and ``until`` exclusive, except that a date-only ``until``
    (``2026-11-28``) includes that whole day. ``number`` matches caller or callee as a substring
    (``%`` and ``_`` literally). ``text`` matches words of names, URIs, queue and notes (each word
    as a prefix, all required; quotes and operators are plain text). ``recorded`` keeps calls with
    (True) or without (False) a recording. ``scope`` is an access-control condition over ``c``
    (from :meth:`store.access.principals.Principal.scope_condition`)."""

    since: When | None = None
    until: When | None = None
    number: str | None = None
    state: str | None = None
    text: str | None = None
    direction: str | None = None
    queue: str | None = None
    min_duration_s: float | None = None
    recorded: bool | None = None
    scope: tuple[str, list[Any]] | None = None


def where(conn: sqlite3.Connection, spec: CallFilter) -> tuple[str, list[Any]] | None:
    """SQL condition over ``calls AS c`` and its parameters, or ``None`` if nothing can match."""
    clauses, params = _plain(spec)
    needle = (spec.number or "").strip()
    if needle:  # the exact semantics; the trigram index only narrows the candidates
        clauses.append("(c.caller LIKE ? ESCAPE '\\' OR c.callee LIKE ? ESCAPE '\\')")
        params += [like_contains(needle)] * 2
    ids: set[int] | None = None
    if spec.scope is not None:  # a narrow scope as an id list; a broad one checked while walking
        ids = _probe_sql(conn, f"SELECT c.id FROM calls AS c WHERE {spec.scope[0]}", spec.scope[1])
        if ids is None:
            clauses.append(f"+({spec.scope[0]})")  # "+": no index, so the start-time walk is kept
            params += list(spec.scope[1])
    if len(needle) >= 3:
        found = _probe(conn, "calls_numbers", '"' + needle.replace('"', '""') + '"')
        if found is not None:  # else the LIKE above decides, row by row
            ids = found if ids is None else ids & found
    if spec.text is not None and spec.text.strip():
        query = fts_query(spec.text)
        if not query:
            return None
        found = _probe(conn, "calls_fts", query)
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


def _plain(spec: CallFilter) -> tuple[list[str], list[Any]]:
    """Conditions that need no index lookup."""
    clauses: list[str] = []
    params: list[Any] = []
    if spec.since is not None:
        clauses.append("c.started_ns >= ?")
        params.append(_bound(spec.since, upper=False))
    if spec.until is not None:
        clauses.append("c.started_ns < ?")
        params.append(_bound(spec.until, upper=True))
    for column, value in (("state", spec.state), ("direction", spec.direction), ("queue", spec.queue)):
        if value:
            clauses.append(f"c.{column} = ?")
            params.append(value)
    if spec.direction and spec.direction not in DIRECTIONS:
        raise InvalidArgument(f"invalid direction {spec.direction!r}: one of {', '.join(DIRECTIONS)}")
    if spec.min_duration_s is not None:
        if spec.min_duration_s < 0:
            raise InvalidArgument(f"minimum duration must be >= 0 seconds, not {spec.min_duration_s}")
        clauses.append("c.duration_s >= ?")
        params.append(float(spec.min_duration_s))
    if spec.recorded is not None:
        clauses.append("c.recording_path IS NOT NULL" if spec.recorded else "c.recording_path IS NULL")
    return clauses, params


def _probe(conn: sqlite3.Connection, table: str, query: str) -> set[int] | None:
    """Ids matching ``query`` in an FTS5 table, or ``None`` if more than ``SELECTIVE``."""
    return _probe_sql(conn, f"SELECT rowid FROM {table} WHERE {table} MATCH ?", [query])


def _probe_sql(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> set[int] | None:
    """The ids ``sql`` selects, or ``None`` if more than ``SELECTIVE`` (it stops reading there)."""
    rows = conn.execute(f"{sql} LIMIT ?", (*params, SELECTIVE + 1)).fetchall()
    return None if len(rows) > SELECTIVE else {row[0] for row in rows}
