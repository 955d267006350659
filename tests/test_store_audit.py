"""store.audit: the hash-chained, signed audit trail and the tampering it detects.

Tampering is done the way an attacker with the catalogue file would: a plain sqlite3 connection,
the append-only triggers dropped first (and, unless the test is about them, put back after).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from store.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditProblem,
    AuditTrail,
    client_description,
    entry_hash,
    key_fingerprint,
)
from store.catalogue import Catalogue
from store.errors import AuditTampered, InvalidArgument, StoreError
from store.migrations import iso_from_ns, write_transaction

NOW_NS = 1_795_874_523_120_000_000  # 2026-11-28T14:02:03.120Z
MS = 1_000_000
TRIGGERS = ("audit_no_update", "audit_no_delete")
ACTIONS = ("calls.show", "calls.export", "calls.play", "hold.add", "audit.verify")


class Clock:
    """Fake time: NOW_NS, one millisecond later on every call."""

    def __init__(self) -> None:
        self.now = NOW_NS
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self.now += MS
            return self.now


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "catalogue.db"


@pytest.fixture
def cat(db_path: Path) -> Iterator[Catalogue]:
    with Catalogue(db_path, clock=lambda: NOW_NS) as catalogue:
        yield catalogue


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def head_path(tmp_path: Path) -> Path:
    return tmp_path / "audit-head.json"


@pytest.fixture
def trail(cat: Catalogue, key: Ed25519PrivateKey, head_path: Path) -> AuditTrail:
    return AuditTrail(
        cat.db, signing_key=key, verify_key=None, head_path=head_path, clock=Clock(), checkpoint_every=8
    )


def fill(trail: AuditTrail, count: int, user: str = "alice") -> list[int]:
    return [
        trail.record(
            user=user,
            action=ACTIONS[i % len(ACTIONS)],
            outcome="denied" if i % 7 == 6 else "ok",
            call_ids=[i + 1, (i * 3) % 11 + 1],
            detail={"n": i, "reason": f"case {i // 10}", "format": "wav"},
            client="ssh 203.0.113.7" if i % 2 else "local tty /dev/pts/3",
        )
        for i in range(count)
    ]


@contextlib.contextmanager
def attacker(db_path: Path, *, restore_triggers: bool = True) -> Iterator[sqlite3.Connection]:
    """A raw connection with the append-only triggers dropped; committed (and the triggers put
    back, unless told otherwise) at the end."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    saved = [row[0] for row in conn.execute("SELECT sql FROM sqlite_master WHERE name IN (?, ?)", TRIGGERS)]
    conn.execute("BEGIN IMMEDIATE")
    for name in TRIGGERS:
        conn.execute(f"DROP TRIGGER {name}")
    yield conn
    if restore_triggers:
        for sql in saved:
            conn.execute(sql)
    conn.execute("COMMIT")
    conn.close()


def rehash(conn: sqlite3.Connection, first: int, last: int | None = None, prev: str | None = None) -> None:
    """Recompute prev_hash and hash of entries first..last from their content, as an attacker
    who knows the algorithm would after editing them (last=None: to the end), chaining from
    ``prev`` (default: the entry before ``first``)."""
    if prev is None:
        row = conn.execute(
            "SELECT hash FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT 1", (first,)
        ).fetchone()
        prev = GENESIS_HASH if row is None else str(row[0])
    rows = conn.execute(
        "SELECT seq, at_ns, user, action, outcome, call_ids, detail, client FROM audit "
        "WHERE seq >= ? AND seq <= ? ORDER BY seq",
        (first, last if last is not None else 1 << 62),
    ).fetchall()
    for seq, *content in rows:
        digest = entry_hash(prev, seq, *content)
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest


def kinds(trail: AuditTrail) -> list[tuple[int | None, str]]:
    return [(problem.seq, problem.kind) for problem in trail.verify().problems]


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
    for conn in (cat.db.conn, sqlite3.connect(db_path)):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit SET user = 'mallory' WHERE seq = 2")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit WHERE seq = 3")
        conn.rollback()
    assert trail.verify().ok and len(trail.entries()) == 3


@pytest.mark.parametrize("dropped", [TRIGGERS, TRIGGERS[:1], TRIGGERS[1:]])
def test_dropped_triggers_are_reported(trail: AuditTrail, db_path: Path, dropped: tuple[str, ...]) -> None:
    fill(trail, 5)
    conn = sqlite3.connect(db_path)
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


# --- checkpoints and keys ---------------------------------------------------------------------------


def test_checkpoints_come_every_n_entries_and_on_demand(
    trail: AuditTrail, cat: Catalogue, head_path: Path
) -> None:
    def checkpoints() -> list[int]:
        return [row[0] for row in cat.db.conn.execute("SELECT seq FROM audit_checkpoints ORDER BY seq")]

    fill(trail, 7)
    assert checkpoints() == [] and not head_path.exists()
    fill(trail, 1)
    assert checkpoints() == [8]
    fill(trail, 9)
    assert checkpoints() == [8, 16] and trail.verify().unsigned_tail == 1
    trail.checkpoint()
    trail.checkpoint()  # nothing new: no-op
    assert checkpoints() == [8, 16, 17] and trail.verify().unsigned_tail == 0
    head = json.loads(head_path.read_text())
    assert set(head) == {"seq", "hash", "signature", "key_fingerprint"}
    assert (head["seq"], head["hash"]) == trail.head() == (17, trail.entries()[-1].hash)
    assert stat.S_IMODE(head_path.stat().st_mode) == 0o600
    assert [p.name for p in head_path.parent.iterdir() if p.name.startswith(".audit-head")] == []


def test_key_fingerprint_is_sha256_of_the_raw_public_key(
    key: Ed25519PrivateKey, head_path: Path, trail: AuditTrail
) -> None:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert key_fingerprint(key.public_key()) == hashlib.sha256(raw).hexdigest()[:32]
    fill(trail, 8)
    assert json.loads(head_path.read_text())["key_fingerprint"] == hashlib.sha256(raw).hexdigest()[:32]


def test_without_a_signing_key_nothing_is_signed(cat: Catalogue, head_path: Path) -> None:
    trail = AuditTrail(cat.db, signing_key=None, verify_key=None, head_path=head_path, checkpoint_every=2)
    fill(trail, 5)
    trail.checkpoint()
    report = trail.verify()
    assert report.ok and (report.checkpoints, report.unsigned_tail) == (0, 5)
    assert not report.signatures_checked and not head_path.exists()


def test_verifying_with_the_public_key_only(
    trail: AuditTrail, cat: Catalogue, key: Ed25519PrivateKey, head_path: Path
) -> None:
    fill(trail, 20)
    reader = AuditTrail(cat.db, signing_key=None, verify_key=key.public_key(), head_path=head_path)
    assert reader.verify().ok
    stranger = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32).public_key()
    wrong = AuditTrail(cat.db, signing_key=None, verify_key=stranger, head_path=head_path).verify()
    assert [(p.seq, p.kind) for p in wrong.problems] == [
        (8, "checkpoint"),
        (16, "checkpoint"),
        (16, "checkpoint"),
    ]
    unchecked = AuditTrail(cat.db, signing_key=None, verify_key=None, head_path=None).verify()
    assert unchecked.ok and not unchecked.signatures_checked


def test_mismatched_keys_and_bad_cadence_are_refused(cat: Catalogue, key: Ed25519PrivateKey) -> None:
    stranger = Ed25519PrivateKey.from_private_bytes(b"\x09" * 32).public_key()
    with pytest.raises(InvalidArgument, match="verify key is not the public half"):
        AuditTrail(cat.db, signing_key=key, verify_key=stranger, head_path=None)
    with pytest.raises(InvalidArgument, match="checkpoint_every must be a whole number >= 0"):
        AuditTrail(cat.db, signing_key=key, verify_key=None, head_path=None, checkpoint_every=-1)


def test_an_unwritable_head_file_is_a_store_error(
    cat: Catalogue, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    trail = AuditTrail(cat.db, signing_key=key, verify_key=None, head_path=tmp_path / "missing" / "head.json")
    trail.record(user="alice", action="calls.show")
    with pytest.raises(StoreError, match="cannot write audit head file .*missing/head.json"):
        trail.checkpoint()
    assert not cat.db.conn.in_transaction
    assert cat.db.conn.execute("SELECT count(*) FROM audit_checkpoints").fetchone()[0] == 0


# --- transactions and concurrency --------------------------------------------------------------------


def test_a_record_joins_the_open_transaction(trail: AuditTrail, cat: Catalogue) -> None:
    cat.add_call({"call_id": "a@pbx", "started_ns": NOW_NS})
    hold = "INSERT INTO holds (call, reason, placed_by, placed_at) VALUES (1, 'case 9', 'alice', 'now')"
    with pytest.raises(RuntimeError), write_transaction(cat.db):
        cat.db.conn.execute(hold)
        trail.record(user="alice", action="hold.add", call_ids=[1])
        raise RuntimeError("the hold failed later")
    assert trail.entries() == [] and cat.db.conn.execute("SELECT count(*) FROM holds").fetchone()[0] == 0
    with write_transaction(cat.db):
        cat.db.conn.execute(hold)
        assert trail.record(user="alice", action="hold.add", call_ids=[1]) == 1
    assert [e.call_ids for e in trail.entries()] == [(1,)]
    assert cat.db.conn.execute("SELECT count(*) FROM holds").fetchone()[0] == 1
    assert trail.verify().ok


def test_checkpoints_wait_for_the_outer_transaction(
    cat: Catalogue, key: Ed25519PrivateKey, head_path: Path
) -> None:
    trail = AuditTrail(cat.db, signing_key=key, verify_key=None, head_path=head_path, checkpoint_every=1)
    with write_transaction(cat.db):
        trail.record(user="alice", action="calls.show")
        with pytest.raises(StoreError, match="inside an open transaction: commit it first"):
            trail.checkpoint()
    assert not head_path.exists()
    trail.record(user="alice", action="calls.show")  # its own transaction: the checkpoint catches up
    assert json.loads(head_path.read_text())["seq"] == 2
    assert trail.verify().ok


def test_concurrent_appends_keep_the_chain(
    db_path: Path, key: Ed25519PrivateKey, head_path: Path, cat: Catalogue
) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(3)
    clock = Clock()

    def writer(name: str) -> None:
        try:
            with Catalogue(db_path) as own:
                trail = AuditTrail(
                    own.db,
                    signing_key=key,
                    verify_key=None,
                    head_path=head_path,
                    clock=clock,
                    checkpoint_every=5,
                )
                start.wait()
                for i in range(60):
                    trail.record(user=name, action="calls.show", call_ids=[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in ("alice", "bob", "carol")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    trail = AuditTrail(cat.db, signing_key=None, verify_key=key.public_key(), head_path=head_path)
    report = trail.verify()
    assert report.ok, report.problems
    assert report.entries == 180 and [e.seq for e in trail.entries()] == list(range(1, 181))
    assert {name: len(trail.entries(user=name)) for name in ("alice", "bob", "carol")} == dict.fromkeys(
        ("alice", "bob", "carol"), 60
    )
    # a checkpoint follows its entry's commit, so the last few entries may be newer than the head
    signed = json.loads(head_path.read_text())["seq"]
    assert 175 < signed <= 180 and report.unsigned_tail == 180 - signed


def test_verify_is_consistent_while_others_append(
    db_path: Path, key: Ed25519PrivateKey, head_path: Path, cat: Catalogue
) -> None:
    started, stop = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with Catalogue(db_path) as own:
                trail = AuditTrail(own.db, signing_key=key, verify_key=None, head_path=head_path,
                                   clock=Clock(), checkpoint_every=2)  # fmt: skip
                while not stop.is_set():
                    trail.record(user="recorder", action="calls.show")
                    started.set()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    reader = AuditTrail(cat.db, signing_key=None, verify_key=key.public_key(), head_path=head_path)
    try:
        assert started.wait(10)
        reports = [reader.verify() for _ in range(40)]
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert [report.problems for report in reports if not report.ok] == []
    assert reports[-1].entries > reports[0].entries > 0 and not cat.db.conn.in_transaction


# --- listing ---------------------------------------------------------------------------------------


def test_entries_filters(trail: AuditTrail) -> None:
    fill(trail, 30, user="alice")
    fill(trail, 10, user="bob")
    every = trail.entries()
    assert [e.seq for e in every] == list(range(1, 41))
    at = {e.seq: e.at_ns for e in every}
    assert [e.seq for e in trail.entries(since_ns=at[5], until_ns=at[9])] == [5, 6, 7, 8]
    assert {e.user for e in trail.entries(user="bob")} == {"bob"} and len(trail.entries(user="bob")) == 10
    assert [e.seq for e in trail.entries(action="hold.add")] == [4, 9, 14, 19, 24, 29, 34, 39]
    assert [e.seq for e in trail.entries(call=3)] == [3, 9, 20, 33, 39]
    assert [e.seq for e in trail.entries(limit=3)] == [38, 39, 40]
    assert [e.seq for e in trail.entries(user="alice", action="calls.show", limit=2)] == [21, 26]
    assert [e.seq for e in trail.entries(user="bob", call=3, since_ns=at[34])] == [39]
    assert trail.entries(limit=0) == [] and trail.entries(user="nobody") == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"since_ns": "yesterday"}, "since_ns must be a whole number"),
        ({"until_ns": 1.5}, "until_ns must be a whole number"),
        ({"call": True}, "call must be a whole number"),
        ({"limit": -1}, "limit must be a whole number >= 0"),
    ],
)
def test_entries_refuses_bad_filters(trail: AuditTrail, arguments: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        trail.entries(**arguments)  # type: ignore[arg-type]


def test_a_tampered_entry_can_still_be_listed(trail: AuditTrail, db_path: Path) -> None:
    fill(trail, 3)
    with attacker(db_path) as conn:
        conn.execute("UPDATE audit SET call_ids = 'not json', detail = '[1' WHERE seq = 2")
    assert trail.entries()[1].call_ids == () and trail.entries()[1].detail == {"unparsed": "[1"}
    assert [e.seq for e in trail.entries(call=3)] == [3]
    assert kinds(trail) == [(2, "altered")]


# --- recording: validation and odd text ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"user": ""}, "needs a user name"),
        ({"action": "Calls Show"}, "invalid audit action 'Calls Show'"),
        ({"outcome": "maybe"}, "invalid audit outcome 'maybe': use one of ok, denied, failed"),
        ({"call_ids": [1, "2"]}, "call ids must be whole numbers"),
        ({"call_ids": [True]}, "call ids must be whole numbers"),
        ({"call_ids": [-1]}, "call ids must be whole numbers >= 0"),
        ({"detail": {"when": object()}}, "audit detail must be JSON data"),
        ({"detail": {"x": float("nan")}}, "audit detail must be JSON data"),
        ({"detail": ["a"]}, "audit detail must be a mapping"),
        ({"client": None}, "audit client must be text"),
    ],
)
def test_record_refuses_bad_values(trail: AuditTrail, arguments: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"user": "alice", "action": "calls.show", **arguments}
    with pytest.raises(InvalidArgument, match=message):
        trail.record(**values)  # type: ignore[arg-type]
    assert trail.entries() == []


def test_odd_text_is_stored_safely_and_verifies(trail: AuditTrail) -> None:
    trail.record(
        user="root as alice",
        action="calls.export",
        client="ssh \udcff\n1.2.3.4",
        detail={"name": "M\udcfcller\x00", "line": "a\nb"},
    )
    (entry,) = trail.entries()
    assert entry.client == "ssh \\udcff\\x0a1.2.3.4"
    assert entry.detail == {"name": "M\udcfcller\x00", "line": "a\nb"}
    assert trail.verify().ok


# --- where a command comes from ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({"SSH_CONNECTION": "203.0.113.7 51234 192.0.2.1 22"}, "/dev/pts/3", "ssh 203.0.113.7"),
        ({"SSH_CLIENT": "203.0.113.8 51234 22"}, None, "ssh 203.0.113.8"),
        ({"SSH_CONNECTION": "2001:db8::7 51234 2001:db8::1 22"}, None, "ssh 2001:db8::7"),
        ({"SSH_CONNECTION": "evil;rm 1 2 3", "SSH_CLIENT": "198.51.100.2 1 22"}, None, "ssh 198.51.100.2"),
        ({"SSH_CONNECTION": "not-an-address 1 2 3"}, "/dev/pts/3", "local tty /dev/pts/3"),
        ({}, "/dev/pts/3", "local tty /dev/pts/3"),
        ({}, "pts/3", "local"),
        ({}, "", "local"),
        ({"SUDO_USER": "alice"}, "/dev/tty1", "local tty /dev/tty1 via sudo from alice"),
        ({"SUDO_USER": "alice; rm"}, "", "local"),
    ],
)
def test_client_description(env: dict[str, str], tty: str | None, expected: str) -> None:
    assert client_description(env, tty) == expected


def test_client_description_reads_the_env_given_and_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_CONNECTION", "203.0.113.7 1 2 3")
    monkeypatch.delenv("SUDO_USER", raising=False)
    assert client_description({}, "") == "local"
    assert client_description(os.environ) == "ssh 203.0.113.7"
    monkeypatch.setattr(os, "ttyname", lambda fd: f"/dev/pts/{fd + 3}")
    assert client_description({}) == "local tty /dev/pts/3"

    def no_tty(fd: int) -> str:
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(os, "ttyname", no_tty)
    assert client_description({}) == "local"
