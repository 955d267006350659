"""store.catalogue and store.migrations: pragmas, migrations, adds, search filters, errors."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import store.catalogue
from store import migrations as schema
from store.catalogue import AddResult, CallRecord, Catalogue, RecordTuple, iso_from_ns, parse_when
from store.errors import InvalidArgument, NotFound, SchemaError, StoreError
from store.migrations import LATEST_VERSION, MIGRATIONS, Migration, apply_migrations, sql_migration

NOW_NS = 1_795_874_523_120_000_000  # 2026-11-28T14:02:03.120Z
SEC = 1_000_000_000


def clock() -> int:
    return NOW_NS


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "catalogue.db"


@pytest.fixture
def cat(path: Path) -> Iterator[Catalogue]:
    with Catalogue(path, clock=clock) as catalogue:
        yield catalogue


def call(call_id: str = "a@pbx", when: Any = NOW_NS, **fields: Any) -> dict[str, Any]:
    started = parse_when(when) if isinstance(when, str) else when
    return {"call_id": call_id, "started_ns": started, **fields}


def leg(direction: str = "caller->callee", **fields: Any) -> dict[str, Any]:
    return {"direction": direction, "codec": "PCMA", "packets": 100, **fields}


def event(ts_ns: int, summary: str, **fields: Any) -> dict[str, Any]:
    return {"ts_ns": ts_ns, "kind": "sip", "summary": summary, **fields}


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def test_pragmas(cat: Catalogue) -> None:
    conn = cat.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000


def test_new_catalogue_file_is_private(path: Path) -> None:
    old = os.umask(0o022)
    try:
        Catalogue(path).close()
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_migrations_are_recorded_and_idempotent(path: Path) -> None:
    with Catalogue(path, clock=clock) as first:
        first.add_call(call())
        rows = first.db.conn.execute("SELECT id, name, applied_at FROM schema_migrations").fetchall()
    assert rows == [(m.id, m.name, "2026-11-28T14:02:03.120Z") for m in MIGRATIONS]
    with Catalogue(path, clock=lambda: NOW_NS + 3600 * SEC) as second:
        again = second.db.conn.execute("SELECT id, name, applied_at FROM schema_migrations").fetchall()
        assert again == rows and second.schema_version == LATEST_VERSION and second.count() == 1


def test_later_migrations_apply_in_order_each_in_a_transaction(path: Path) -> None:
    Catalogue(path).close()
    broken = Migration(
        LATEST_VERSION + 1, "half done", sql_migration("CREATE TABLE extra (x)", "SELECT no_such_function()")
    )
    with pytest.raises(StoreError):
        Catalogue(path, migrations=(*MIGRATIONS, broken))
    with Catalogue(path) as cat:
        assert not cat.db["extra"].exists()  # rolled back with its migration
        assert cat.schema_version == LATEST_VERSION
    good = Migration(LATEST_VERSION + 1, "add audit", sql_migration("CREATE TABLE audit (x)"))
    with Catalogue(path, migrations=(*MIGRATIONS, good)) as cat:
        assert cat.schema_version == LATEST_VERSION + 1
        assert apply_migrations(cat.db, (*MIGRATIONS, good), lambda: "now") == []


def test_v2_adds_a_mos_column_to_the_legs_of_an_existing_catalogue(path: Path) -> None:
    with Catalogue(path, migrations=MIGRATIONS[:1]) as old:  # a catalogue written before v2
        conn = old.db.conn
        first = conn.execute(
            "INSERT INTO calls (call_id, started_at, started_ns, imported_at) VALUES ('a@pbx', 'x', 1, 'x')"
        ).lastrowid
        conn.execute("INSERT INTO legs (call, direction) VALUES (?, 'caller->callee')", (first,))
        conn.commit()
        assert first is not None
    with Catalogue(path) as cat:
        assert cat.schema_version >= 2
        assert cat.get_call(first)["legs"][0]["mos"] is None
        second = cat.add_call(call("b@pbx"), [leg(mos=4.39)]).id
        assert cat.get_call(second)["legs"][0]["mos"] == 4.39


def test_write_path_columns_match_the_schema(cat: Catalogue) -> None:
    def columns(table: str) -> list[str]:
        return [row[1] for row in cat.db.conn.execute(f"PRAGMA table_info({table})")]

    assert columns("calls") == ["id", *schema.CALL_COLUMNS]
    assert columns("legs") == ["id", "call", *schema.LEG_COLUMNS]
    assert columns("events") == ["id", "call", *schema.EVENT_COLUMNS]
    indexes = {row[1] for row in cat.db.conn.execute("PRAGMA index_list(calls)")}
    wanted = "calls_call_id_started calls_started calls_caller calls_callee calls_state"
    assert set(wanted.split()) <= indexes


def test_a_newer_catalogue_is_refused(path: Path) -> None:
    with Catalogue(path) as cat:
        cat.db.conn.execute("INSERT INTO schema_migrations VALUES (9, 'future', 'x')")
        cat.db.conn.commit()
    with pytest.raises(SchemaError, match="schema version 9 is newer than this callrec knows"):
        Catalogue(path)


def test_migration_ids_must_be_consecutive(path: Path) -> None:
    with pytest.raises(SchemaError, match="1..n"):
        Catalogue(path, migrations=(Migration(2, "x", sql_migration()),))


def test_missing_catalogue_without_create(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="run `callrec import` first"):
        Catalogue(tmp_path / "catalogue.db", create=False)
    assert not (tmp_path / "catalogue.db").exists()
    with pytest.raises(NotFound, match="does not exist"):
        Catalogue(tmp_path / "no" / "catalogue.db")


def test_not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot use catalogue"):
        Catalogue(path)


def test_add_call_defaults_and_conversions(cat: Catalogue) -> None:
    result = cat.add_call(
        call(caller="+352621000111", codecs=["PCMA", "telephone-event"]),
        [leg(ssrc=0x1A2B3C4D), leg("callee->caller", ssrc=[1, "0xdeadbeef"])],
        [event(NOW_NS + 5 * SEC, "BYE"), event(NOW_NS, "INVITE", sender="caller")],
    )
    assert result == AddResult(1, True) and result.status == "added"
    row = cat.get_call(result.id)
    assert row["started_at"] == "2026-11-28T14:02:03.120Z"
    assert row["direction"] == "unknown"
    assert row["imported_at"] == iso_from_ns(NOW_NS)
    assert row["codecs"] == "PCMA,telephone-event"
    assert [lg["ssrc"] for lg in row["legs"]] == ["0x1a2b3c4d", "0x00000001,0xdeadbeef"]
    assert [lg["direction"] for lg in row["legs"]] == ["caller->callee", "callee->caller"]
    assert [ev["summary"] for ev in row["events"]] == ["INVITE", "BYE"]  # ordered by time
    assert row["events"][0]["at"] == "2026-11-28T14:02:03.120Z"
    assert row["events"][0]["sender"] == "caller" and row["events"][1]["detail"] == ""


def test_numpy_scalars_are_stored_as_numbers(cat: Catalogue) -> None:
    np = pytest.importorskip("numpy")
    row = call(when=np.int64(NOW_NS), final_status=np.int64(200), duration_s=np.float32(1.5))
    legs = [leg(packets=np.int32(3), ssrc=np.uint32(0x1234))]
    stored = cat.get_call(cat.add_call(row, legs, [event(np.int64(NOW_NS), "INVITE")]).id)
    assert (stored["started_ns"], stored["final_status"], stored["duration_s"]) == (NOW_NS, 200, 1.5)
    assert type(stored["final_status"]) is int and stored["started_at"] == iso_from_ns(NOW_NS)
    assert (stored["legs"][0]["packets"], stored["legs"][0]["ssrc"]) == (3, "0x00001234")


def test_reimport_is_already_present(cat: Catalogue) -> None:
    first = cat.add_call(call(), [leg()], [event(NOW_NS, "INVITE")])
    again = cat.add_call(call(caller="changed"), [leg(), leg("callee->caller")], [event(NOW_NS, "INVITE")])
    assert again == AddResult(first.id, False) and again.status == "already present"
    row = cat.get_call(first.id)
    assert len(row["legs"]) == 1 and len(row["events"]) == 1 and row["caller"] is None
    other = cat.add_call(call(when=parse_when("2026-11-28T14:02:03.120Z") + 1))  # same Call-ID, later start
    assert other.created and cat.count() == 2


def test_add_call_is_one_transaction(cat: Catalogue) -> None:
    cat.db.conn.execute("CREATE TRIGGER boom BEFORE INSERT ON events BEGIN SELECT RAISE(ABORT, 'boom'); END")
    with pytest.raises(sqlite3.IntegrityError, match="boom"):
        cat.add_call(call(), [leg()], [event(NOW_NS, "INVITE")])
    assert cat.count() == 0
    assert cat.db.conn.execute("SELECT count(*) FROM legs").fetchone()[0] == 0
    assert not cat.db.conn.in_transaction


def test_add_calls_batch(cat: Catalogue) -> None:
    batch: list[CallRecord | RecordTuple] = [
        CallRecord(call("c1", "2026-11-28T10:00"), [leg()], [event(1, "INVITE")]),
        (call("c2", "2026-11-28T11:00"), [], []),
        CallRecord(call("c1", "2026-11-28T10:00")),  # duplicate inside the batch
    ]
    assert cat.add_calls(batch) == [AddResult(1, True), AddResult(2, True), AddResult(1, False)]
    assert cat.add_calls([]) == []


def test_add_calls_validates_everything_before_writing(cat: Catalogue) -> None:
    with pytest.raises(InvalidArgument, match="leg direction"):
        cat.add_calls([CallRecord(call("ok")), CallRecord(call("bad"), [leg("sideways")])])
    assert cat.count() == 0


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"started_ns": 1}, "needs a non-empty 'call_id'"),
        ({"call_id": "", "started_ns": 1}, "needs a non-empty 'call_id'"),
        ({"call_id": "x"}, "needs an integer 'started_ns'"),
        ({"call_id": "x", "started_ns": "2026-11-28"}, "needs an integer 'started_ns'"),
        ({"call_id": "x", "started_ns": 1, "colour": "red", "mood": 1}, "unknown call field.*: colour, mood"),
        ({"call_id": "x", "started_ns": 1, "caller": ["a"]}, "'caller' must be text or a number, not list"),
    ],
)
def test_call_validation(cat: Catalogue, record: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        cat.add_call(record)


def test_leg_and_event_validation(cat: Catalogue) -> None:
    with pytest.raises(InvalidArgument, match="unknown leg field"):
        cat.add_call(call(), [leg(colour="red")])
    with pytest.raises(InvalidArgument, match="an event needs an integer 'ts_ns'"):
        cat.add_call(call(), [], [{"kind": "sip"}])
    with pytest.raises(InvalidArgument, match="'detail' must be text or a number, not dict"):
        cat.add_call(call(), [], [event(1, "INVITE", detail={"a": 1})])


def test_get_call_not_found(cat: Catalogue) -> None:
    with pytest.raises(NotFound, match="^no call with id 42$"):
        cat.get_call(42)


def test_set_recording_and_error(cat: Catalogue) -> None:
    call_pk = cat.add_call(call()).id
    cat.set_recording(
        call_pk,
        path="recordings/2026/11/28/1.wav",
        size=44,
        sha256="ab" * 32,
        sample_rate=8000,
        channels=2,
        seconds=0.5,
    )
    cat.set_error(call_pk, "no media")
    row = cat.get_call(call_pk)
    recording = [
        row[k] for k in ("recording_path", "recording_bytes", "recording_sha256", "recording_seconds")
    ]
    assert recording == ["recordings/2026/11/28/1.wav", 44, "ab" * 32, 0.5]
    assert (row["sample_rate"], row["channels"], row["error"]) == (8000, 2, "no media")
    with pytest.raises(NotFound, match="no call with id 99"):
        cat.set_recording(99, path="x", size=1, sha256="y")
    with pytest.raises(NotFound):
        cat.set_error(99, None)


def test_search_indexes_follow_updates_and_deletes(cat: Catalogue) -> None:
    call_pk = cat.add_call(
        call(caller="+352111222", caller_display="Alice"), [leg()], [event(1, "INVITE")]
    ).id
    cat.set_recording(call_pk, path="p", size=1, sha256="s")
    cat.db.conn.execute(
        "UPDATE calls SET caller = '+352999888', caller_display = 'Bob' WHERE id = ?", (call_pk,)
    )
    assert ids(cat.search(number="999888")) == [call_pk] and cat.search(number="111222") == []
    assert ids(cat.search(text="bob")) == [call_pk] and cat.search(text="alice") == []
    with cat.db.conn:
        cat.db.conn.execute("DELETE FROM calls WHERE id = ?", (call_pk,))
    assert cat.search(number="999888") == [] and cat.search(text="bob") == []
    assert cat.db.conn.execute("SELECT count(*) FROM legs").fetchone()[0] == 0  # cascaded
    for table in ("calls_fts", "calls_numbers"):
        cat.db.conn.execute(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')")


def test_busy_catalogue_is_a_clear_error(path: Path) -> None:
    with Catalogue(path) as holder, Catalogue(path, busy_timeout_ms=50) as waiter:
        holder.db.conn.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="catalogue is busy"):
            waiter.add_call(call())
        assert waiter.count() == 0  # WAL: readers are not blocked by a writer
        holder.db.conn.execute("ROLLBACK")
        assert waiter.add_call(call()).created


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
            with mock.patch.object(store.catalogue, "_SELECTIVE", threshold):
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
    with mock.patch.object(store.catalogue, "_SELECTIVE", threshold):
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
    assert store.catalogue.like_contains("1%_\\") == "%1\\%\\_\\\\%"
    assert store.catalogue.fts_query('ali "x" AND ***') == '"ali"* """x"""* "AND"*'
    assert store.catalogue.fts_query("   ") == ""


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
    assert store.catalogue.parse_until("2026-11-28") == parse_when("2026-11-29")
    assert store.catalogue.parse_until("2026-11-28T10:00") == parse_when("2026-11-28T10:00")


@pytest.mark.parametrize(
    "text", ["xx", "", "2026-02-30", "2026-11-28T25:00", "28/11/2026", "2026-11-28T14", "2026-11-28Z",
             "2026-11-28T14:02:03.1234567890", "2026-11-28T14:02+25:00", "20261128"],
)  # fmt: skip
def test_parse_when_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"invalid date .*"):
        parse_when(text)
