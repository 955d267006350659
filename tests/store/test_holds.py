"""store.retention.holds: placing and releasing legal holds, the rules around purged calls, transactions."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.store.catalogue.db import Catalogue, iso_from_ns
from callrec.store.catalogue.migrations import write_transaction
from callrec.store.errors import AlreadyPurged, InvalidArgument, NotFound
from callrec.store.retention.holds import Hold, Holds

SEC = 1_000_000_000
T0 = 1_795_874_523_120_000_000  # 2026-11-28T14:02:03.120Z


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalogue]:
    with Catalogue(tmp_path / "catalogue.db", clock=lambda: T0) as catalogue:
        yield catalogue


def new_call(cat: Catalogue, name: str = "a") -> int:
    return cat.add_call({"call_id": f"{name}@pbx", "started_ns": T0, "recording_path": f"r/{name}.wav"}).id


def tombstone(cat: Catalogue, call: int, state: str, purged_at: str | None) -> None:
    with write_transaction(cat.db):
        cat.db.conn.execute(
            "INSERT INTO tombstones (call, state, started_at, purged_at, purged_by, reason) "
            "VALUES (?, ?, ?, ?, 'retention', 'retention expired')",
            (call, state, iso_from_ns(T0), purged_at),
        )


def test_add_and_read_back(cat: Catalogue) -> None:
    holds = Holds(cat.db)
    call, other = new_call(cat, "a"), new_call(cat, "b")
    assert not holds.is_held(call) and holds.active(call) == [] and holds.list() == []
    first = holds.add(call, reason=" case 2026-117 ", by="carol", now_ns=T0)
    second = holds.add(call, reason="complaint", by="dave", now_ns=T0 + SEC)
    assert holds.is_held(call) and not holds.is_held(other)
    assert holds.active(call) == [
        Hold(first, call, "case 2026-117", "carol", iso_from_ns(T0)),
        Hold(second, call, "complaint", "dave", iso_from_ns(T0 + SEC)),
    ]
    assert all(hold.active for hold in holds.list())
    assert [h.id for h in holds.list(call=other)] == []


def test_remove_releases_every_active_hold(cat: Catalogue) -> None:
    holds = Holds(cat.db)
    call, other = new_call(cat, "a"), new_call(cat, "b")
    holds.add(call, reason="one", by="carol", now_ns=T0)
    holds.add(call, reason="two", by="carol", now_ns=T0)
    kept = holds.add(other, reason="three", by="carol", now_ns=T0)
    assert holds.remove(call, by="erin", now_ns=T0 + SEC, reason="case closed") == 2
    assert not holds.is_held(call) and holds.is_held(other)
    released = holds.list(active_only=False, call=call)
    assert [(h.released_by, h.released_at, h.release_reason, h.active) for h in released] == [
        ("erin", iso_from_ns(T0 + SEC), "case closed", False)
    ] * 2
    assert [h.id for h in holds.list()] == [kept]
    assert len(holds.list(active_only=False)) == 3
    with pytest.raises(NotFound, match=f"^call {call} has no active hold$"):
        holds.remove(call, by="erin", now_ns=T0)
    holds.add(call, reason="again", by="carol", now_ns=T0 + 2 * SEC)  # a call can be held again
    assert holds.remove(call, by="erin", now_ns=T0 + 3 * SEC) == 1
    assert holds.list(active_only=False, call=call)[-1].release_reason is None


def test_refusals(cat: Catalogue) -> None:
    holds = Holds(cat.db)
    call = new_call(cat)
    with pytest.raises(NotFound, match="^no call with id 99$"):
        holds.add(99, reason="case", by="carol", now_ns=T0)
    with pytest.raises(NotFound, match="^no call with id 99$"):
        holds.remove(99, by="carol", now_ns=T0)
    with pytest.raises(NotFound):
        holds.is_held(99)
    with pytest.raises(NotFound):
        holds.active(99)
    for reason in ["", "   "]:
        with pytest.raises(InvalidArgument, match="a hold needs a reason"):
            holds.add(call, reason=reason, by="carol", now_ns=T0)
    with pytest.raises(InvalidArgument, match="who places or releases it"):
        holds.add(call, reason="case", by="", now_ns=T0)
    with pytest.raises(InvalidArgument, match="a call id is a whole number"):
        holds.add("1", reason="case", by="carol", now_ns=T0)  # type: ignore[arg-type]
    assert holds.list(active_only=False) == []


def test_a_purged_call_cannot_be_held(cat: Catalogue) -> None:
    holds = Holds(cat.db)
    purged, shredded, purging = new_call(cat, "a"), new_call(cat, "b"), new_call(cat, "c")
    tombstone(cat, purged, "purged", "2026-12-01T00:00:00.000Z")
    tombstone(cat, shredded, "purging", "2026-12-02T00:00:00.000Z")  # key destroyed, cleanup pending
    tombstone(cat, purging, "purging", None)  # purge begun, recording still recoverable
    with pytest.raises(AlreadyPurged) as info:
        holds.add(purged, reason="case", by="carol", now_ns=T0)
    assert str(info.value) == (
        f"call {purged} was purged by retention on 2026-12-01: its recording is gone and cannot be held"
    )
    with pytest.raises(AlreadyPurged, match="on 2026-12-02"):
        holds.add(shredded, reason="case", by="carol", now_ns=T0)
    assert holds.add(purging, reason="case", by="carol", now_ns=T0) > 0  # the next purge run backs off
    assert [h.call for h in holds.list()] == [purging]


def test_joins_the_callers_transaction(cat: Catalogue) -> None:
    holds = Holds(cat.db)
    call = new_call(cat)
    with pytest.raises(RuntimeError), write_transaction(cat.db):
        holds.add(call, reason="case", by="carol", now_ns=T0)
        cat.db.conn.execute("SELECT 1").fetchone()  # e.g. the audit entry would be written here
        raise RuntimeError("audit failed")
    assert holds.list(active_only=False) == []  # rolled back with the caller's transaction
    with write_transaction(cat.db):
        holds.add(call, reason="case", by="carol", now_ns=T0)
        assert cat.db.conn.in_transaction
    assert holds.is_held(call)


def test_own_transaction_is_committed(cat: Catalogue) -> None:
    holds = Holds(cat.db)
    call = new_call(cat)
    hold = holds.add(call, reason="case", by="carol", now_ns=T0)
    assert not cat.db.conn.in_transaction
    with sqlite3.connect(cat.path) as other:
        assert other.execute("SELECT id, released_at FROM holds").fetchall() == [(hold, None)]
    holds.remove(call, by="carol", now_ns=T0)
    with sqlite3.connect(cat.path) as other:
        assert other.execute("SELECT released_by FROM holds").fetchall() == [("carol",)]


OPS = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 2)), max_size=20)


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_holds_follow_a_simple_model(ops: list[tuple[str, int]]) -> None:
    """Whatever the sequence of adds and removes, a call is held exactly when it has more adds
    than the last remove cleared, and no hold row is ever lost."""
    with tempfile.TemporaryDirectory() as tmp, Catalogue(Path(tmp) / "c.db", clock=lambda: T0) as cat:
        holds = Holds(cat.db)
        calls = [new_call(cat, str(n)) for n in range(3)]
        active = [0, 0, 0]
        for step, (op, n) in enumerate(ops):
            if op == "add":
                holds.add(calls[n], reason=f"case {step}", by="carol", now_ns=T0 + step)
                active[n] += 1
            elif active[n]:
                assert holds.remove(calls[n], by="erin", now_ns=T0 + step) == active[n]
                active[n] = 0
            else:
                with pytest.raises(NotFound):
                    holds.remove(calls[n], by="erin", now_ns=T0 + step)
            assert [holds.is_held(c) for c in calls] == [a > 0 for a in active]
            assert [len(holds.active(c)) for c in calls] == active
        assert len(holds.list(active_only=False)) == sum(op == "add" for op, _ in ops)
        assert len(holds.list()) == sum(active)


def test_a_store_that_refuses_the_legal_hold_leaves_no_hold(
    cat: Catalogue, monkeypatch: pytest.MonkeyPatch
) -> None:
    from callrec.store.errors import StorageUnreachable
    from callrec.store.objects.s3 import S3RecordingStore
    from callrec.store.objects.settings import StorageSettings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "callrec")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "callrec-secret")
    call = new_call(cat)
    nowhere = S3RecordingStore(
        StorageSettings(
            url="s3://callrec-none/p", endpoint_url="http://127.0.0.1:9", object_lock="compliance"
        )
    )
    with pytest.raises(StorageUnreachable, match="bucket callrec-none at http://127.0.0.1:9 is unreachable"):
        Holds(cat.db, nowhere).add(call, reason="case 1", by="carol", now_ns=T0)
    assert Holds(cat.db).list(active_only=False) == [] and not cat.db.conn.in_transaction
    Holds(cat.db).add(call, reason="case 1", by="carol", now_ns=T0)
    with pytest.raises(StorageUnreachable):
        Holds(cat.db, nowhere).remove(call, by="carol", now_ns=T0 + SEC)
    assert Holds(cat.db).is_held(call)  # still held on both sides
