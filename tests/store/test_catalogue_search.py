"""Catalogue search: date bounds, numbers as literal substrings, full text on user input, query helpers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.store.access.principals import Principal
from callrec.store.catalogue import db as catalogue_db
from callrec.store.catalogue import query as catalogue_query
from callrec.store.catalogue.db import Catalogue, iso_from_ns, parse_when
from callrec.store.catalogue.query import CallFilter
from callrec.store.errors import InvalidArgument
from tests.store.test_catalogue import NOW_NS, SEC, call, clock


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalogue]:
    with Catalogue(tmp_path / "catalogue.db", clock=clock) as catalogue:
        yield catalogue


@pytest.fixture
def day(cat: Catalogue) -> Catalogue:
    """Calls around 2026-11-28 (UTC) at precise boundaries."""
    midnight = parse_when("2026-11-28")
    calls = [
        ("before", midnight - 1, "+352100", "200", "completed"),
        ("midnight", midnight, "+352101", "201", "completed"),
        ("noon", midnight + 12 * 3600 * SEC, "+352102", "202", "cancelled"),
        ("last", midnight + 86_400 * SEC - 1, "+352103", "203", "completed"),
        ("next", midnight + 86_400 * SEC, "+352104", "204", "rejected"),
    ]
    for name, ns, caller, callee, state in calls:
        cat.add_call(call(name, ns, caller=caller, callee=callee, state=state))
    return cat


def names(rows: list[dict[str, Any]]) -> list[str]:
    return [row["call_id"] for row in rows]


def test_since_is_inclusive_until_is_exclusive(day: Catalogue) -> None:
    noon = parse_when("2026-11-28T12:00")
    assert names(day.search(since="2026-11-28T12:00")) == ["noon", "last", "next"]
    assert names(day.search(since=noon + 1)) == ["last", "next"]
    assert names(day.search(until="2026-11-28T12:00:00.000Z")) == ["before", "midnight"]
    assert names(day.search(until=noon + 1)) == ["before", "midnight", "noon"]


def test_date_only_bounds_cover_whole_days(day: Catalogue) -> None:
    assert names(day.search(since="2026-11-28", until="2026-11-28")) == ["midnight", "noon", "last"]
    assert names(day.search(until="2026-11-27")) == ["before"]
    assert names(day.search(since=date(2026, 11, 29))) == ["next"]
    assert names(day.search(since=date(2026, 11, 28), until=date(2026, 11, 28))) == [
        "midnight",
        "noon",
        "last",
    ]


def test_datetime_bounds(day: Catalogue) -> None:
    assert names(day.search(since=datetime(2026, 11, 28, 12))) == ["noon", "last", "next"]  # naive = UTC
    cet = timezone(timedelta(hours=1))
    assert names(day.search(until=datetime(2026, 11, 28, 13, tzinfo=cet))) == ["before", "midnight"]
    assert names(day.search(since="2026-11-28T13:00+01:00", until="2026-11-28T13:00:00.000000001+01:00")) == [
        "noon"
    ]
    assert names(day.search(since=datetime(2026, 11, 28, 12, tzinfo=UTC))) == ["noon", "last", "next"]


def test_state_number_limit_offset_count(day: Catalogue) -> None:
    assert names(day.search(state="completed")) == ["before", "midnight", "last"]
    assert names(day.search(number="352103")) == ["last"]
    assert names(day.search(number="20")) == ["before", "midnight", "noon", "last", "next"]  # callee, short
    assert names(day.search(number="+3521", state="completed", since="2026-11-28")) == ["midnight", "last"]
    assert names(day.search(limit=2, offset=1)) == ["midnight", "noon"]
    assert names(day.search(limit=None, offset=4)) == ["next"]
    assert day.count() == 5 and day.count(state="completed", until="2026-11-28") == 3
    assert day.search(limit=0) == []
    with pytest.raises(InvalidArgument, match="limit must be a whole number"):
        day.search(limit=-1)
    with pytest.raises(InvalidArgument, match="offset must be"):
        day.search(offset=True)


def test_bad_dates_are_clear_errors(cat: Catalogue) -> None:
    message = r"^invalid date 'xx': use YYYY-MM-DD or YYYY-MM-DDTHH:MM\[:SS\]$"
    with pytest.raises(InvalidArgument, match=message):
        cat.search(since="xx")
    with pytest.raises(InvalidArgument, match="invalid date '2026-02-30'"):
        cat.count(until="2026-02-30")


def test_order_is_start_then_id(cat: Catalogue) -> None:
    cat.add_call(call("late", NOW_NS + 1))
    cat.add_call(call("b", NOW_NS))
    cat.add_call(call("a", NOW_NS))
    assert names(cat.search()) == ["b", "a", "late"]
    assert names(cat.search(number=None, text=None, limit=None)) == ["b", "a", "late"]


def test_number_matches_percent_underscore_and_backslash_literally(cat: Catalogue) -> None:
    for n, caller in enumerate(["10%5", "1005", "10_5", "1x5", "10\\5", "abc"]):
        cat.add_call(call(f"c{n}", NOW_NS + n, caller=caller, callee="999"))
    assert names(cat.search(number="0%5")) == ["c0"]
    assert names(cat.search(number="%")) == ["c0"]
    assert names(cat.search(number="0_5")) == ["c2"]
    assert names(cat.search(number="_")) == ["c2"]
    assert names(cat.search(number="10\\5")) == ["c4"]
    assert names(cat.search(number="ABC")) == ["c5"]  # ASCII case-insensitive, like LIKE
    assert names(cat.search(number="99")) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert cat.count(number="   ") == 6  # blank: no filter


NEEDLE = st.text(alphabet='0123456789+%_\\" aBéÉ*', min_size=0, max_size=5)


def ascii_lower(text: str) -> str:
    """Case folding as SQLite's LIKE does it: ASCII letters only."""
    return text.translate(str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))


@settings(max_examples=150, deadline=None)
@given(needle=NEEDLE)
def test_number_search_is_exactly_a_substring_match(needle: str) -> None:
    callers = ["+352621000111", "10%5", "10_5", 'a"b', "aBc", "1 2 3", "\\\\", "*", "Éé", "é1É", None]
    with Catalogue(":memory:") as cat:
        for n, caller in enumerate(callers):
            cat.add_call(call(f"c{n}", NOW_NS + n, caller=caller, callee=f"{n}00"))
        probe = ascii_lower(needle.strip())
        expected = [
            f"c{n}"
            for n, caller in enumerate(callers)
            if not probe or any(probe in ascii_lower(v) for v in (caller, f"{n}00") if v is not None)
        ]
        for threshold in (2000, 0):  # ids from the trigram index, or LIKE alone over the date index
            with mock.patch.object(catalogue_query, "SELECTIVE", threshold):
                assert names(cat.search(number=needle, limit=None)) == expected
                assert cat.count(number=needle) == len(expected)
                assert names(cat.search(number=needle, limit=2, offset=1)) == expected[1:3]


@pytest.fixture
def people(cat: Catalogue) -> Catalogue:
    rows = [
        ("alice", "Alice Martin", "sip:200@pbx.example.lu"),
        ("chloe", "Chloé Muller", "sip:201@pbx.example.lu"),
        ("and", "Anders AND Orla", "sip:and@pbx.example.lu"),
        ("quote", 'Bob "the builder"', "sip:202@other.example"),
    ]
    for n, (name, display, uri) in enumerate(rows):
        cat.add_call(
            call(name, NOW_NS + n, caller_display=display, request_uri=uri, caller=f"+3526210{n}", callee="2")
        )
    return cat


def test_text_search_words_prefixes_and_diacritics(people: Catalogue) -> None:
    assert names(people.search(text="alice")) == ["alice"]
    assert names(people.search(text="ALI mart")) == ["alice"]  # every word, as a prefix
    assert names(people.search(text="alice muller")) == []
    assert names(people.search(text="chloe")) == ["chloe"]  # diacritics folded
    assert names(people.search(text="example.lu")) == ["alice", "chloe", "and"]
    assert names(people.search(text="pbx.example.lu 201")) == ["chloe"]
    assert people.count(text="example") == 4


@pytest.mark.parametrize(
    "text",
    ['"', '"unbalanced', "AND", "OR", "NOT", "a OR", "NEAR(a b)", "caller_display:alice", "^alice", "-", "*",
     "(", ")", "alice*", "+", "'", "\\", "\x00", "a AND NOT b", '""', "{caller}: x"],
)  # fmt: skip
def test_text_search_never_raises_on_user_input(people: Catalogue, text: str) -> None:
    assert isinstance(people.search(text=text), list)
    assert people.count(text=text) == len(people.search(text=text, limit=None))


@pytest.mark.parametrize("threshold", [2000, 1, 0])
def test_search_paths_agree(people: Catalogue, threshold: int) -> None:
    """Broad index matches walk the date index instead of listing ids: same answers."""
    with mock.patch.object(catalogue_query, "SELECTIVE", threshold):
        assert names(people.search(text="example.lu")) == ["alice", "chloe", "and"]
        assert names(people.search(text="example", limit=2, offset=1)) == ["chloe", "and"]
        assert names(people.search(text="example", number="2", since=NOW_NS + 1)) == ["chloe", "and", "quote"]
        assert names(people.search(text="example", number="62102")) == ["and"]
        assert names(people.search(text="builder", number="+35262")) == ["quote"]
        assert people.count(text="example", number="6210") == 4
        assert people.count(text="sip", until=NOW_NS + 2) == 2
        assert people.search(text="nobody") == [] and people.count(text="nobody") == 0


def test_text_operators_and_quotes_are_plain_words(people: Catalogue) -> None:
    assert names(people.search(text="AND")) == ["and"]  # the word "and", not an operator
    assert names(people.search(text='"the builder"')) == ["quote"]
    assert names(people.search(text='bob "the')) == ["quote"]
    assert names(people.search(text="alice OR bob")) == []  # OR is a word nobody has
    assert people.search(text="*** ---") == [] and people.count(text="!!") == 0  # nothing searchable


def test_query_helpers() -> None:
    assert catalogue_db.like_contains("1%_\\") == "%1\\%\\_\\\\%"
    assert catalogue_db.fts_query('ali "x" AND ***') == '"ali"* """x"""* "AND"*'
    assert catalogue_db.fts_query("   ") == ""


def test_iso_from_ns() -> None:
    assert iso_from_ns(NOW_NS) == iso_from_ns(NOW_NS + 999_999) == "2026-11-28T14:02:03.120Z"  # truncated
    assert (iso_from_ns(0), iso_from_ns(-1)) == ("1970-01-01T00:00:00.000Z", "1969-12-31T23:59:59.999Z")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2026-11-28", "00:00:00.000"), ("2026-11-28T14:02", "14:02:00.000"),
     ("2026-11-28 14:02:03", "14:02:03.000"), ("2026-11-28T14:02:03.12Z", "14:02:03.120"),
     ("2026-11-28t14:02:03,5z", "14:02:03.500"), ("2026-11-28T15:02:03.120+01:00", "14:02:03.120"),
     ("2026-11-28T09:02:03.120-0500", "14:02:03.120"), ("  2026-11-28T14:02  ", "14:02:00.000")],
)  # fmt: skip
def test_parse_when(text: str, expected: str) -> None:
    assert iso_from_ns(parse_when(text)) == f"2026-11-28T{expected}Z"


def test_parse_when_keeps_nanoseconds_and_round_trips() -> None:
    assert parse_when("2026-11-28T14:02:03.123456789Z") % SEC == 123_456_789
    assert parse_when(iso_from_ns(NOW_NS)) == NOW_NS
    assert catalogue_db.parse_until("2026-11-28") == parse_when("2026-11-29")
    assert catalogue_db.parse_until("2026-11-28T10:00") == parse_when("2026-11-28T10:00")


@pytest.mark.parametrize(
    "text", ["xx", "", "2026-02-30", "2026-11-28T25:00", "28/11/2026", "2026-11-28T14", "2026-11-28Z",
             "2026-11-28T14:02:03.1234567890", "2026-11-28T14:02+25:00", "20261128"],
)  # fmt: skip
def test_parse_when_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"invalid date .*"):
        parse_when(text)


QUEUE = st.sampled_from(["sales", "support", None])
NUMBER = st.sampled_from(["201", "202", "301", "+35262100", "2011"])


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(st.tuples(QUEUE, NUMBER, NUMBER), min_size=1, max_size=12),
    queues=st.lists(st.sampled_from(["sales", "support", "billing"]), max_size=2, unique=True),
    extensions=st.lists(st.sampled_from(["20?", "2*", "+352*", "9"]), max_size=2, unique=True),
    number=st.sampled_from(["", "20", "2011", "+352"]),
)
def test_a_scoped_search_is_the_filter_then_the_scope(
    rows: list[tuple[str | None, str, str]], queues: list[str], extensions: list[str], number: str
) -> None:
    """Whichever path the scope takes (an id list, or a check while walking the start-time
    index), a supervisor's search is the unscoped search cut to what ``can_see`` allows."""
    who = Principal(name="sam", role="supervisor", queues=tuple(queues), extensions=tuple(extensions))
    with Catalogue(":memory:") as cat:
        for n, (queue, caller, callee) in enumerate(rows):
            cat.add_call(call(f"c{n}", NOW_NS + n, caller=caller, callee=callee, queue=queue))
        everything = cat.search(number=number or None, limit=None)
        expected = [r["call_id"] for r in everything if who.can_see(r)]
        for threshold in (2000, 1, 0):
            with mock.patch.object(catalogue_query, "SELECTIVE", threshold):
                spec = CallFilter(number=number or None, scope=who.scope_condition("c"))
                assert names(cat.search(spec=spec, limit=None)) == expected
                assert cat.count(spec=spec) == len(expected)
