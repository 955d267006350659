"""store.retention.purge: the crypto-shredding purge (crash-safe, hold-aware, idempotent), redaction and
the report."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from callrec.store.catalogue.db import iso_from_ns
from callrec.store.catalogue.migrations import write_transaction
from callrec.store.errors import AlreadyPurged, InvalidArgument, StoreError
from callrec.store.objects.local import RecordingStore
from callrec.store.retention.policy import expiry_ns
from callrec.store.retention.purge import AUDIT_ACTION, STEPS, Retention
from tests.helpers.retention_env import (  # noqa: F401
    CLASSES,
    DAY,
    SEC,
    T0,
    Crash,
    Env,
    add,
    crash_at,
    dump,
    key_exists,
    make_env,
    tombstone,
)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    environment = make_env(tmp_path)
    yield environment
    environment.cat.close()


NOW = T0 + 10 * DAY


def test_apply_purges_exactly_the_expired_unheld_recordings(env: Env) -> None:
    expired = add(env, "1", T0)  # 1 day: expired at NOW
    recent = add(env, "2", T0 + 9 * DAY + SEC)  # expires after NOW
    monthly = add(env, "3", T0, "month")
    unclassified = add(env, "4", T0 - 400 * DAY, None)
    held = add(env, "5", T0 - DAY)
    no_recording = add(env, "6", T0, recording=False)
    env.holds.add(held, reason="case 1", by="carol", now_ns=T0)
    # a call without a recording expires too: its parties are personal data
    assert [c.call for c in env.retention.candidates(NOW)] == [expired, no_recording]
    report = env.retention.apply(NOW, by="retention")
    assert report.purged == (expired, no_recording) and report.held == (held,) and report.ok
    assert not report.dry_run
    assert report.resumed == () and report.would_purge == () and report.checkpointed and report.vacuumed
    for call in (recent, monthly, unclassified, held):
        row = env.cat.get_call(call)
        assert row["recording_path"] and env.store.exists(row["recording_path"]) and key_exists(env, call)
        assert tombstone(env, call) is None and row["caller"]
    assert tombstone(env, no_recording)["state"] == "purged"
    assert env.cat.get_call(no_recording)["caller"] is None
    assert not env.store.exists("recordings/1.wav") and not key_exists(env, expired)


def test_purge_redacts_and_leaves_a_tombstone(env: Env) -> None:
    call = add(env, "1", T0)
    before = env.cat.get_call(call)
    audits: list[tuple[str, list[int], dict[str, object]]] = []
    env.retention.apply(
        NOW,
        by="retention",
        reason="retention expired",
        audit=lambda a, c, d: audits.append((a, list(c), dict(d))),
    )
    row = env.cat.get_call(call)
    for column in [
        "recording_path",
        "recording_bytes",
        "recording_sha256",
        "recording_uuid",
        "plaintext_sha256",
    ]:
        assert row[column] is None, column
    for column in ["caller", "callee", "caller_uri", "callee_uri", "request_uri", "caller_display",
                   "callee_display", "notes", "signed_metadata", "signature"]:  # fmt: skip
        assert row[column] is None, column
    expires_day = before["expires_at"][:10]
    assert row["not_recorded"] == f"purged: retention class short expired {expires_day}"
    assert row["call_id"] == before["call_id"] and row["started_ns"] == before["started_ns"]
    assert row["queue"] == "support" and row["duration_s"] == before["duration_s"]
    assert [(leg["src"], leg["dst"], leg["codec"]) for leg in row["legs"]] == [(None, None, "PCMA")]
    assert [(e["kind"], e["summary"], e["detail"]) for e in row["events"]] == [
        ("sip", "INVITE", ""),
        ("dtmf", "", ""),
    ]
    assert tombstone(env, call) == {
        "call": call,
        "state": "purged",
        "started_at": iso_from_ns(NOW),
        "purged_at": iso_from_ns(NOW),
        "purged_by": "retention",
        "reason": "retention expired",
        "retention_class": "short",
        "expires_at": before["expires_at"],
        "recording_path": "recordings/1.wav",
        "recording_sha256": before["recording_sha256"],
    }
    assert audits == [
        (
            AUDIT_ACTION,
            [call],
            {
                "retention_class": "short",
                "expires_at": before["expires_at"],
                "reason": "retention expired",
                "recording_path": "recordings/1.wav",
                "recording_sha256": before["recording_sha256"],
                "purged_at": iso_from_ns(NOW),
            },
        )
    ]
    assert env.cat.search(number="35291") == [] and env.cat.search(text="Person") == []


def test_second_run_changes_nothing(env: Env) -> None:
    for n in range(4):
        add(env, str(n), T0 - n * DAY)
    held = add(env, "h", T0 - 5 * DAY)
    env.holds.add(held, reason="case", by="carol", now_ns=T0)
    first = env.retention.apply(NOW, by="retention")
    assert len(first.purged) == 4
    before = dump(env)
    again = env.retention.apply(NOW, by="retention", audit=lambda *a: pytest.fail("audited twice"))
    assert again.purged == () and again.held == (held,) and again.ok and not again.vacuumed
    assert dump(env) == before


def test_dry_run_changes_nothing(env: Env) -> None:
    expired = add(env, "1", T0)
    held = add(env, "2", T0)
    add(env, "3", NOW)
    env.holds.add(held, reason="case", by="carol", now_ns=T0)
    before = dump(env)
    report = env.retention.apply(NOW, by="retention", dry_run=True, audit=lambda *a: pytest.fail("audited"))
    assert (
        report.dry_run and report.would_purge == (expired,) and report.purged == () and report.held == (held,)
    )
    assert dump(env) == before


def test_one_failing_call_does_not_stop_the_others(env: Env) -> None:
    first, broken, last = add(env, "1", T0 - 2 * DAY), add(env, "2", T0 - DAY), add(env, "3", T0)
    path = env.store.path_of("recordings/2.wav")
    path.unlink()
    path.mkdir()  # unlink(2) fails on a directory, whoever we are (root ignores permissions)
    report = env.retention.apply(NOW, by="retention")
    assert report.purged == (first, last)
    assert list(report.errors) == [broken] and report.errors[broken].startswith("cannot delete ")
    assert "\n" not in report.errors[broken] and not report.ok
    state = tombstone(env, broken)
    assert state is not None and state["state"] == "purging" and state["purged_at"] == iso_from_ns(NOW)
    assert not key_exists(env, broken)  # shredded: the recording is gone whatever happens to the file
    with pytest.raises(AlreadyPurged, match=f"call {broken} was purged by retention on"):
        env.holds.add(broken, reason="too late", by="carol", now_ns=NOW)
    path.rmdir()
    later = env.retention.apply(NOW + DAY, by="retention")
    assert later.purged == (broken,) and later.resumed == (broken,) and later.ok
    assert tombstone(env, broken)["state"] == "purged"  # type: ignore[index]


class FlakyStore(RecordingStore):
    """Deleting one name fails with a permission error."""

    def __init__(self, root: Path, refuse: str) -> None:
        super().__init__(root)
        self.refuse = refuse

    def delete(self, relative_path: Any, *, missing_ok: bool = False) -> bool:
        if str(relative_path) == self.refuse:
            raise StoreError(f"cannot delete {self.path_of(relative_path)}: Permission denied")
        return super().delete(relative_path, missing_ok=missing_ok)


def test_permission_error_is_reported(env: Env) -> None:
    good, bad = add(env, "1", T0), add(env, "2", T0)
    retention = Retention(env.cat.db, FlakyStore(env.store.root, "recordings/2.wav"))
    report = retention.apply(NOW, by="retention")
    assert report.purged == (good,) and report.errors[bad].endswith("Permission denied")


def test_a_missing_file_is_no_error(env: Env) -> None:
    call = add(env, "1", T0)
    env.store.delete("recordings/1.wav")
    assert env.retention.apply(NOW, by="retention").purged == (call,)


def test_failing_audit_rolls_back_the_last_step_only(env: Env) -> None:
    call = add(env, "1", T0)

    def broken(action: str, calls: Sequence[int], detail: Mapping[str, object]) -> None:
        raise StoreError("audit trail is read-only")

    report = env.retention.apply(NOW, by="retention", audit=broken)
    assert report.purged == () and report.errors == {call: "audit trail is read-only"}
    assert tombstone(env, call)["state"] == "purging"  # type: ignore[index]
    assert env.cat.get_call(call)["caller"] is not None  # step 4 rolled back
    seen: list[Sequence[int]] = []
    assert env.retention.apply(NOW, by="retention", audit=lambda a, c, d: seen.append(c)).purged == (call,)
    assert seen == [[call]]


def test_apply_refuses_bad_use(env: Env) -> None:
    with pytest.raises(InvalidArgument, match="who purges"):
        env.retention.apply(NOW, by=" ")
    env.conn.execute("BEGIN")
    with pytest.raises(StoreError, match="outside a catalogue transaction"):
        env.retention.apply(NOW, by="retention")
    env.conn.execute("ROLLBACK")


@pytest.mark.parametrize("step", STEPS)
def test_crash_after_each_step_is_completed_by_the_next_run(tmp_path: Path, step: str) -> None:
    runs = []
    for name, crash in (("clean", False), ("crashed", True)):
        env = make_env(tmp_path / name)
        calls = [add(env, str(n), T0 - n * DAY) for n in range(3)]
        if crash:
            env.conn.execute("PRAGMA secure_delete = OFF")  # some builds default to ON
            with pytest.raises(Crash):
                env.retention.apply(NOW, by="retention", after_step=crash_at(calls[1], step))
            assert env.cat.db.conn.execute("PRAGMA secure_delete").fetchone()[0] == 0  # restored
            report = env.retention.apply(NOW, by="retention")  # calls[2] expired first, was purged
            resumed = (calls[1],) if step != "redact" else ()
            assert report.purged == (*resumed, calls[0]) and report.resumed == resumed
        else:
            env.retention.apply(NOW, by="retention")
        runs.append(dump(env))
        env.cat.close()
    assert runs[0] == runs[1]


def test_hold_placed_after_a_crash_before_shredding_keeps_the_recording(env: Env) -> None:
    call = add(env, "1", T0)
    with pytest.raises(Crash):
        env.retention.apply(NOW, by="retention", after_step=crash_at(call, "tombstone"))
    assert [c.state for c in env.retention.candidates(NOW)] == ["purging"]
    env.holds.add(call, reason="court order", by="carol", now_ns=NOW)
    dry = env.retention.apply(NOW, by="retention", dry_run=True)
    assert dry.would_purge == () and dry.held == (call,)
    report = env.retention.apply(NOW, by="retention")
    assert report.purged == () and report.held == (call,)
    assert tombstone(env, call) is None and key_exists(env, call) and env.store.exists("recordings/1.wav")
    env.holds.remove(call, by="carol", now_ns=NOW)
    assert env.retention.apply(NOW, by="retention").purged == (call,)


def test_a_purge_interrupted_after_shredding_is_completed_even_if_held_since(env: Env) -> None:
    call = add(env, "1", T0)
    with pytest.raises(Crash):
        env.retention.apply(NOW, by="retention", after_step=crash_at(call, "shred"))
    assert [c.state for c in env.retention.candidates(NOW)] == ["shredded"]
    with pytest.raises(AlreadyPurged):
        env.holds.add(call, reason="too late", by="carol", now_ns=NOW)
    assert env.retention.apply(NOW + DAY, by="retention").purged == (call,)
    assert tombstone(env, call)["purged_at"] == iso_from_ns(NOW)  # type: ignore[index]


def test_an_expiry_moved_later_during_an_interrupted_purge_keeps_the_recording(env: Env) -> None:
    call = add(env, "1", T0)
    with pytest.raises(Crash):
        env.retention.apply(NOW, by="retention", after_step=crash_at(call, "tombstone"))
    with write_transaction(env.cat.db):
        env.conn.execute("UPDATE calls SET expires_ns = ? WHERE id = ?", (NOW + DAY, call))
    assert env.retention.apply(NOW, by="retention", dry_run=True).would_purge == ()
    assert env.retention.apply(NOW, by="retention").purged == ()
    assert tombstone(env, call) is None and key_exists(env, call)


def test_secure_delete_is_on_while_purging(env: Env) -> None:
    add(env, "1", T0)
    env.conn.execute("PRAGMA secure_delete = OFF")  # some builds default to ON
    seen: list[int] = []
    env.retention.apply(
        NOW,
        by="retention",
        after_step=lambda c, s: seen.append(env.conn.execute("PRAGMA secure_delete").fetchone()[0]),
    )
    assert seen == [1, 1, 1, 1]
    assert env.conn.execute("PRAGMA secure_delete").fetchone()[0] == 0


def test_no_byte_of_a_purged_key_or_name_is_left_in_the_catalogue_file(env: Env) -> None:
    """Enough rows that SQLite rebalances its b-trees while deleting (which leaves moved cells'
    old bytes in a page: secure_delete alone is not enough, the purge rebuilds the file)."""

    def call(n: int) -> dict[str, Any]:
        fate = "GONE" if n % 10 else "KEPT"
        expires = NOW if n % 10 else NOW + DAY
        return {"call_id": f"{n}@pbx", "started_ns": T0 + n, "caller_display": f"{fate}NAME{n:05d}",
                "recording_path": f"r/{n}.wav", "expires_ns": expires}  # fmt: skip

    rows = [(call(n), (), ()) for n in range(1500)]
    ids = [r.id for r in env.cat.add_calls(rows)]
    with write_transaction(env.cat.db):
        env.conn.executemany(
            "INSERT INTO recording_keys VALUES (?, 'fp', ?)",
            [(i, b"GONEKEY" if n % 10 else b"KEPTKEY") for n, i in enumerate(ids)],
        )
    report = env.retention.apply(NOW, by="retention")
    assert len(report.purged) == 1350 and report.vacuumed and report.checkpointed
    data = Path(env.cat.path).read_bytes()
    assert data.count(b"GONEKEY") == 0 and data.count(b"GONENAME") == 0
    assert data.count(b"KEPTKEY") == 150 and data.count(b"KEPTNAME") == 150
    wal = Path(env.cat.path + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_reader_keeping_the_wal_busy_is_reported_not_fatal(env: Env) -> None:
    call = add(env, "1", T0)
    env.conn.execute("PRAGMA busy_timeout = 100")  # the checkpoint waits this long for the reader
    with contextlib.closing(sqlite3.connect(env.cat.path, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM calls").fetchone()
        report = env.retention.apply(NOW, by="retention")
        reader.execute("COMMIT")
    assert report.purged == (call,) and report.ok and not report.checkpointed
    assert env.retention.apply(NOW, by="retention").checkpointed


def test_report(env: Env) -> None:
    due = add(env, "1", T0)
    kept = add(env, "2", T0 + 9 * DAY + SEC)
    add(env, "3", T0 + 9 * DAY, "month")
    held = add(env, "4", T0 - DAY)
    add(env, "5", T0 - 2 * DAY, "year")
    add(env, "6", T0, None)  # unclassified
    add(env, "7", T0, expires_ns=None, expires_at=None)  # a class, no expiry
    unrecorded = add(env, "8", T0, recording=False)
    with write_transaction(env.cat.db):
        env.conn.execute("UPDATE calls SET retention_class = 'legacy' WHERE id = ?", (kept,))
    env.holds.add(held, reason="case", by="carol", now_ns=T0)
    summary = env.retention.report(NOW, CLASSES)
    by_name = {c.name: c for c in summary.classes}
    assert [c.name for c in summary.classes] == ["default", "legacy", "month", "short", "year"]
    assert (by_name["short"].kept, by_name["short"].due, by_name["short"].held) == (1, 1, 1)
    assert by_name["short"].duration == "1d" and by_name["legacy"].duration is None
    assert by_name["legacy"].kept == 1 and by_name["default"].kept == 0
    assert by_name["month"].next_expiry_ns == expiry_ns(T0 + 9 * DAY, CLASSES["month"])
    assert by_name["year"].next_expiry_at == iso_from_ns(expiry_ns(T0 - 2 * DAY, CLASSES["year"]))
    assert by_name["year"].kept == 1 and by_name["short"].next_expiry_ns is None
    assert summary.unclassified == 1 and summary.no_expiry == 2 and summary.purged_total == 0
    assert summary.next_expiry_ns == expiry_ns(T0 + 9 * DAY + SEC, CLASSES["short"])
    assert env.retention.apply(NOW, by="retention").purged == (due, unrecorded)  # metadata expires too
    after = {c.name: c for c in env.retention.report(NOW).classes}
    assert (after["short"].purged, after["short"].due, after["short"].held) == (2, 0, 1)
    assert after["year"].kept == 1 and env.retention.report(NOW).purged_total == 2
