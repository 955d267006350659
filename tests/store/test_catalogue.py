"""store.catalogue.db and store.catalogue.migrations: pragmas, migrations, adds, search filters, errors."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from callrec.store.catalogue import migrations as schema
from callrec.store.catalogue.db import AddResult, CallRecord, Catalogue, RecordTuple, iso_from_ns, parse_when
from callrec.store.catalogue.migrations import Migration, apply_migrations, sql_migration
from callrec.store.catalogue.schema import LATEST_VERSION, MIGRATIONS
from callrec.store.errors import InvalidArgument, NotFound, SchemaError, StoreError

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
    good = Migration(LATEST_VERSION + 1, "add extra", sql_migration("CREATE TABLE extra_audit (x)"))
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
