"""store.audit.trail: a clean chain verifies, and every kind of tampering with its entries, its
checkpoints or its head file is found and named.

Tampering is done the way an attacker with the catalogue file would: a plain sqlite3 connection,
the append-only triggers dropped first (and, unless the test is about them, put back after).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.store.audit.chain import GENESIS_HASH, key_fingerprint
from callrec.store.audit.trail import AuditEntry, AuditProblem, AuditTrail
from callrec.store.catalogue.db import Catalogue
from callrec.store.catalogue.migrations import iso_from_ns
from callrec.store.errors import AuditTampered
from tests.helpers.audit import NOW_NS, TRIGGERS, Clock, attacker, fill, kinds, rehash

# --- a clean trail ------------------------------------------------------------------------------


def test_a_long_chain_verifies(trail: AuditTrail) -> None:
    seqs = fill(trail, 300)
    assert seqs == list(range(1, 301))
    report = trail.verify()
    assert report.ok and report.problems == []
    assert (report.entries, report.checkpoints, report.unsigned_tail) == (300, 37, 4)
    assert report.signatures_checked
    entries = trail.entries()
    assert entries[0].prev_hash == GENESIS_HASH
    assert all(later.prev_hash == earlier.hash for earlier, later in zip(entries, entries[1:], strict=False))


def test_an_empty_trail_verifies(trail: AuditTrail) -> None:
    report = trail.verify()
    assert report.ok and (report.entries, report.checkpoints, report.unsigned_tail) == (0, 0, 0)
    assert trail.head() == (0, GENESIS_HASH)


def test_entry_hash_is_sha256_of_prev_hash_and_canonical_json(trail: AuditTrail) -> None:
    seq = trail.record(
        user="alice", action="calls.export", call_ids=[42, 7, 42], detail={"b": 1, "a": "é"}, client="local"
    )
    (entry,) = trail.entries()
    assert seq == 1 and entry.call_ids == (7, 42) and entry.detail == {"a": "é", "b": 1}
    stored = trail._db.conn.execute("SELECT call_ids, detail FROM audit").fetchone()
    assert stored == ("[7,42]", '{"a":"\\u00e9","b":1}')
    canonical = json.dumps(
        [1, entry.at_ns, "alice", "calls.export", "ok", *stored, "local"], separators=(",", ":")
    )
    assert entry.hash == hashlib.sha256(f"{GENESIS_HASH}\n{canonical}".encode()).hexdigest()
    assert entry.at == iso_from_ns(entry.at_ns) == "2026-11-28T14:02:03.121Z"


def test_entries_round_trip_every_field(trail: AuditTrail) -> None:
    trail.record(
        user="bob",
        action="hold.add",
        outcome="failed",
        call_ids=(3,),
        detail={"reason": "case 17", "ids": [1, 2], "nested": {"ok": True, "x": None}},
        client="ssh 2001:db8::1",
    )
    (entry,) = trail.entries()
    assert isinstance(entry, AuditEntry)
    assert (entry.seq, entry.user, entry.action, entry.outcome, entry.call_ids, entry.client) == (
        1,
        "bob",
        "hold.add",
        "failed",
        (3,),
        "ssh 2001:db8::1",
    )
    assert entry.detail == {"reason": "case 17", "ids": [1, 2], "nested": {"ok": True, "x": None}}


# --- append-only triggers -------------------------------------------------------------------------


def test_triggers_block_update_and_delete(trail: AuditTrail, cat: Catalogue, db_path: Path) -> None:
    fill(trail, 3)
    with contextlib.closing(sqlite3.connect(db_path)) as raw:
        for conn in (cat.db.conn, raw):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute("UPDATE audit SET user = 'mallory' WHERE seq = 2")
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute("DELETE FROM audit WHERE seq = 3")
            conn.rollback()
    assert trail.verify().ok and len(trail.entries()) == 3


@pytest.mark.parametrize("dropped", [TRIGGERS, TRIGGERS[:1], TRIGGERS[1:]])
def test_dropped_triggers_are_reported(trail: AuditTrail, db_path: Path, dropped: tuple[str, ...]) -> None:
    fill(trail, 5)
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        for name in dropped:
            conn.execute(f"DROP TRIGGER {name}")
        conn.commit()
    problems = trail.verify().problems
    assert [(p.seq, p.kind) for p in problems] == [(None, "triggers")] * len(dropped)
    assert all(
        f"append-only trigger {name} was dropped" in p.message
        for p, name in zip(problems, dropped, strict=True)
    )


def test_a_trigger_replaced_by_a_harmless_one_is_reported(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 2)
    with attacker(db_path, restore_triggers=False) as conn:
        conn.execute("CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT 1; END")
        conn.execute(
            "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit WHEN 0 BEGIN "
            "SELECT RAISE(ABORT, 'audit entries are append-only'); END"
        )
    messages = [p.message for p in trail.verify().problems]
    assert messages == [
        "append-only trigger audit_no_update was altered: audit entries can be updated",
        "append-only trigger audit_no_delete was altered: audit entries can be deleted",
    ]


# --- tampering with entries -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("user", "mallory"),
        ("action", "calls.list"),
        ("outcome", "failed"),
        ("call_ids", "[1]"),
        ("detail", '{"reason":"nothing to see"}'),
        ("client", "local"),
        ("at_ns", NOW_NS),
        ("at", "2026-01-01T00:00:00.000Z"),
    ],
)
def test_an_altered_entry_is_named(trail: AuditTrail, db_path: Path, column: str, value: object) -> None:
    fill(trail, 40)
    with attacker(db_path) as conn:
        conn.execute(f"UPDATE audit SET {column} = ? WHERE seq = 40", (value,))
        conn.execute(f"UPDATE audit SET {column} = ? WHERE seq = 17", (value,))
    report = trail.verify()
    assert kinds(trail) == [(17, "altered"), (40, "altered")]
    assert report.problems[0].message.startswith("entry 17 was altered: its ")
    assert not report.ok


def test_a_rehashed_edit_breaks_the_link_to_the_next_entry(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 40)
    with attacker(db_path) as conn:
        conn.execute("UPDATE audit SET outcome = 'failed' WHERE seq = 20")
        rehash(conn, 20, 20)
    problems = trail.verify().problems
    assert problems == [
        AuditProblem(21, "reordered", "entry 21 does not follow entry 20: an entry was replaced or reordered")
    ]


def test_a_rewritten_chain_fails_the_signed_checkpoints(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 40)
    with attacker(db_path) as conn:
        conn.execute("UPDATE audit SET user = 'mallory' WHERE seq = 20")
        rehash(conn, 20)  # every hash after it made consistent again
    assert kinds(trail) == [(24, "checkpoint"), (32, "checkpoint"), (40, "checkpoint"), (40, "truncated")]
    assert trail.verify().problems[0].message == (
        "checkpoint 24 does not match entry 24: the trail was rewritten up to it"
    )


def test_a_removed_middle_entry_is_named(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 40)
    with attacker(db_path) as conn:
        conn.execute("DELETE FROM audit WHERE seq = 17")
    assert trail.verify().problems == [
        AuditProblem(17, "removed", "entry 17 was removed: the trail jumps from entry 16 to 18")
    ]


def test_removed_entries_in_a_row_are_named_together(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 40)
    with attacker(db_path) as conn:
        conn.execute("DELETE FROM audit WHERE seq BETWEEN 15 AND 18")  # 16 was checkpointed
    assert trail.verify().problems == [
        AuditProblem(15, "removed", "entries 15-18 were removed: the trail jumps from entry 14 to 19")
    ]


def test_a_removed_first_entry_is_named(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 10)
    with attacker(db_path) as conn:
        conn.execute("DELETE FROM audit WHERE seq = 1")
    assert trail.verify().problems == [
        AuditProblem(1, "removed", "entry 1 was removed: the trail starts at entry 2")
    ]


def test_a_first_entry_not_chained_from_genesis_is_named(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 10)
    with attacker(db_path) as conn:  # an older trail's tail, renumbered from 1
        rehash(conn, 1, prev="ab" * 32)
        conn.execute("DELETE FROM audit_checkpoints")
    assert kinds(trail) == [(1, "removed"), (8, "truncated")]  # and the head file names the old entry 8


def test_two_swapped_entries_are_named(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 40)
    columns = "at, at_ns, user, action, outcome, call_ids, detail, client, prev_hash, hash"
    with attacker(db_path) as conn:
        a, b = (
            conn.execute(f"SELECT {columns} FROM audit WHERE seq = ?", (seq,)).fetchone() for seq in (20, 21)
        )
        assignments = ", ".join(f"{name} = ?" for name in columns.split(", "))
        conn.execute(f"UPDATE audit SET {assignments} WHERE seq = 20", b)
        conn.execute(f"UPDATE audit SET {assignments} WHERE seq = 21", a)
    found = kinds(trail)
    assert {(20, "altered"), (21, "altered"), (20, "reordered"), (21, "reordered")} <= set(found)
    assert {seq for seq, _ in found} <= {20, 21, 22}


def test_two_swapped_payloads_are_named(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 40)
    columns = "user, action, outcome, call_ids, detail, client"
    with attacker(db_path) as conn:
        a, b = (
            conn.execute(f"SELECT {columns} FROM audit WHERE seq = ?", (seq,)).fetchone() for seq in (5, 6)
        )
        assignments = ", ".join(f"{name} = ?" for name in columns.split(", "))
        conn.execute(f"UPDATE audit SET {assignments} WHERE seq = 5", b)
        conn.execute(f"UPDATE audit SET {assignments} WHERE seq = 6", a)
    assert kinds(trail) == [(5, "altered"), (6, "altered")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seq=st.integers(1, 30),
    column=st.sampled_from(["user", "action", "outcome", "call_ids", "detail", "client", "at_ns"]),
    value=st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=8), st.integers(-5, 5)),
)
def test_any_single_edit_is_named_as_altered(
    trail: AuditTrail, db_path: Path, seq: int, column: str, value: object
) -> None:
    if not trail.entries():
        fill(trail, 30)
    with attacker(db_path) as conn:
        before = conn.execute(f"SELECT {column} FROM audit WHERE seq = ?", (seq,)).fetchone()[0]
        conn.execute(f"UPDATE audit SET {column} = ? WHERE seq = ?", (value, seq))
    try:
        changed = before != value and str(before) != str(value)
        assert kinds(trail) == ([(seq, "altered")] if changed else [])
    finally:
        with attacker(db_path) as conn:
            conn.execute(f"UPDATE audit SET {column} = ? WHERE seq = ?", (before, seq))
    assert trail.verify().ok


# --- cutting the end, forging checkpoints -------------------------------------------------------------


def test_entries_removed_from_the_end_are_caught_by_the_head_file(
    trail: AuditTrail, db_path: Path, head_path: Path
) -> None:
    fill(trail, 40)
    with attacker(db_path) as conn:
        conn.execute("DELETE FROM audit WHERE seq > 36")
        conn.execute("DELETE FROM audit_checkpoints WHERE seq > 36")
    report = trail.verify()
    assert report.problems == [
        AuditProblem(
            37,
            "truncated",
            f"entries 37-40 were removed from the end: the audit head file {head_path} names entry 40, "
            "the trail ends at entry 36",
        )
    ]
    assert (report.entries, report.checkpoints, report.unsigned_tail) == (36, 4, 4)


def test_entries_removed_from_the_end_are_caught_by_the_last_checkpoint(
    cat: Catalogue, key: Ed25519PrivateKey, db_path: Path
) -> None:
    trail = AuditTrail(
        cat.db, signing_key=key, verify_key=None, head_path=None, clock=Clock(), checkpoint_every=8
    )
    fill(trail, 40)
    with attacker(db_path) as conn:
        conn.execute("DELETE FROM audit WHERE seq = 40")
    assert trail.verify().problems == [
        AuditProblem(
            40,
            "truncated",
            "entry 40 was removed from the end: the last checkpoint names entry 40, "
            "the trail ends at entry 39",
        )
    ]


def test_a_cut_and_regrown_tail_is_caught_by_the_head_file(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 40)
    with attacker(db_path) as conn:
        conn.execute("DELETE FROM audit WHERE seq > 36")
        conn.execute("DELETE FROM audit_checkpoints WHERE seq > 36")
        conn.execute(
            "INSERT INTO audit SELECT seq + 4, at, at_ns, user, action, outcome, call_ids, detail, "
            "client, prev_hash, hash FROM audit WHERE seq BETWEEN 33 AND 36"
        )
        rehash(conn, 37)
    assert kinds(trail) == [(40, "truncated")]
    assert "entry 40, named by the audit head file, was replaced" in trail.verify().problems[0].message


def test_a_forged_checkpoint_is_named(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 40)
    forger = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    with attacker(db_path) as conn:
        digest = conn.execute("SELECT hash FROM audit WHERE seq = 24").fetchone()[0]
        signature = forger.sign(b"callrec audit checkpoint v1\n24\n" + digest.encode()).hex()
        conn.execute("UPDATE audit_checkpoints SET signature = ? WHERE seq = 24", (signature,))
        conn.execute("UPDATE audit_checkpoints SET hash = ? WHERE seq = 16", ("ab" * 32,))
    assert trail.verify().problems == [
        AuditProblem(16, "checkpoint", "checkpoint 16 has an invalid signature: it was forged or altered"),
        AuditProblem(
            16, "checkpoint", "checkpoint 16 does not match entry 16: the trail was rewritten up to it"
        ),
        AuditProblem(24, "checkpoint", "checkpoint 24 has an invalid signature: it was forged or altered"),
    ]


def test_a_chain_re_signed_with_another_key_is_named(
    trail: AuditTrail, cat: Catalogue, db_path: Path, key: Ed25519PrivateKey
) -> None:
    fill(trail, 16)
    with attacker(db_path) as conn:
        conn.execute("UPDATE audit SET user = 'mallory' WHERE seq = 3")
        rehash(conn, 3)
        conn.execute("DELETE FROM audit_checkpoints")
    forger = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    AuditTrail(cat.db, signing_key=forger, verify_key=None, head_path=None).checkpoint()
    theirs, ours = key_fingerprint(forger.public_key()), key_fingerprint(key.public_key())
    assert trail.verify().problems == [
        AuditProblem(
            16, "checkpoint", f"checkpoint 16 was signed by key {theirs}, not by the audit key {ours}"
        ),
        AuditProblem(
            16, "truncated", "entry 16, named by the audit head file, was replaced: the trail was cut"
        ),
    ]


def test_a_forged_head_file_is_named(trail: AuditTrail, head_path: Path) -> None:
    fill(trail, 16)
    head = json.loads(head_path.read_text())
    head_path.write_text(json.dumps(dict(head, seq=20)))
    problems = trail.verify().problems
    assert [(p.seq, p.kind) for p in problems] == [(17, "truncated"), (20, "checkpoint")]
    assert (
        problems[1].message
        == f"audit head file {head_path} has an invalid signature: it was forged or altered"
    )


@pytest.mark.parametrize("content", [None, "not json", "[]", '{"seq": "8"}'])
def test_a_missing_or_broken_head_file_is_reported(
    trail: AuditTrail, head_path: Path, content: str | None
) -> None:
    fill(trail, 8)
    if content is None:
        head_path.unlink()
    else:
        head_path.write_text(content)
    (problem,) = trail.verify().problems
    assert (problem.seq, problem.kind) == (None, "checkpoint")
    assert str(head_path) in problem.message


def test_raise_if_tampered_names_the_first_problem(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 10)
    trail.verify().raise_if_tampered()
    with attacker(db_path) as conn:
        conn.execute("DELETE FROM audit WHERE seq IN (3, 6)")
    with pytest.raises(
        AuditTampered,
        match=r"^audit trail fails verification: entry 3 was removed: .* "
        r"\(and 1 more problem\)$",
    ):
        trail.verify().raise_if_tampered()
