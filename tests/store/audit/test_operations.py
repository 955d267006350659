"""store.audit.trail: checkpoints and keys, transactions and concurrent writers, listing, odd text,
and where a command comes from."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from callrec.store.audit.chain import key_fingerprint
from callrec.store.audit.client import client_description, login_uid_of_process, user_name
from callrec.store.audit.trail import AuditTrail
from callrec.store.catalogue.db import Catalogue
from callrec.store.catalogue.migrations import write_transaction
from callrec.store.errors import InvalidArgument, StoreError
from tests.helpers.audit import NOW_NS, Clock, attacker, fill, kinds

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
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with Catalogue(db_path) as own:
                trail = AuditTrail(own.db, signing_key=key, verify_key=None, head_path=head_path,
                                   clock=Clock(), checkpoint_every=2)  # fmt: skip
                for _ in range(300):
                    trail.record(user="recorder", action="calls.show")
                    time.sleep(0.001)  # a recorder's pace, not a tight loop
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    reader = AuditTrail(cat.db, signing_key=None, verify_key=key.public_key(), head_path=head_path)
    reports = []
    while thread.is_alive():
        reports.append(reader.verify())
    thread.join()
    reports.append(reader.verify())
    assert errors == []
    assert [report.problems for report in reports if not report.ok] == []
    assert len({report.entries for report in reports if 0 < report.entries < 300}) >= 2
    assert reports[-1].entries == 300
    assert not cat.db.conn.in_transaction


def test_a_checkpoint_in_flight_is_not_mistaken_for_truncation(
    db_path: Path, key: Ed25519PrivateKey, head_path: Path, trail: AuditTrail
) -> None:
    fill(trail, 8)
    result: list[Any] = []

    def verify() -> None:  # its own connection, as another process would have
        with Catalogue(db_path) as own:
            reader = AuditTrail(own.db, signing_key=None, verify_key=key.public_key(), head_path=head_path)
            result.append(reader.verify())

    fingerprint = key_fingerprint(key.public_key())
    with Catalogue(db_path) as other, write_transaction(other.db):
        # a checkpoint caught between writing the head file and COMMIT
        writer = AuditTrail(other.db, signing_key=key, verify_key=None, head_path=head_path)
        seq = writer.record(user="recorder", action="calls.show")
        digest = writer.head()[1]
        signature = key.sign(b"callrec audit checkpoint v1\n9\n" + digest.encode()).hex()
        other.db.conn.execute(
            "INSERT INTO audit_checkpoints VALUES (?, ?, 'now', ?, ?)", (seq, digest, fingerprint, signature)
        )
        head = {"seq": seq, "hash": digest, "signature": signature, "key_fingerprint": fingerprint}
        head_path.write_text(json.dumps(head))
        assert [p.kind for p in trail._verify("BEGIN").problems] == ["truncated"]  # the race, seen once
        waiting = threading.Thread(target=verify)
        waiting.start()
        waiting.join(0.3)
        assert waiting.is_alive()  # the second look waits for the write lock
    waiting.join()
    assert result[0].ok and result[0].entries == 9


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


ROOT = "uid 0 (root)"


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({"SSH_CONNECTION": "203.0.113.7 51234 192.0.2.1 22"}, "/dev/pts/3",
         f"{ROOT}, local tty /dev/pts/3; claimed: ssh 203.0.113.7"),
        ({"SSH_CLIENT": "203.0.113.8 51234 22"}, "", f"{ROOT}; claimed: ssh 203.0.113.8"),
        ({"SSH_CONNECTION": "2001:db8::7 51234 2001:db8::1 22"}, "", f"{ROOT}; claimed: ssh 2001:db8::7"),
        ({"SSH_CONNECTION": "evil;rm 1 2 3", "SSH_CLIENT": "198.51.100.2 1 22"}, "",
         f"{ROOT}; claimed: ssh 198.51.100.2"),
        ({"SSH_CONNECTION": "not-an-address 1 2 3"}, "/dev/pts/3", f"{ROOT}, local tty /dev/pts/3"),
        ({}, "/dev/pts/3", f"{ROOT}, local tty /dev/pts/3"),
        ({}, "pts/3", ROOT),
        ({}, "", ROOT),
        ({"SUDO_USER": "alice"}, "/dev/tty1", f"{ROOT}, local tty /dev/tty1; claimed: via sudo from alice"),
        ({"SUDO_USER": "alice; rm"}, "", ROOT),
        ({"SSH_CONNECTION": "198.51.100.77 1 2 3", "SUDO_USER": "carol"}, "",
         f"{ROOT}; claimed: ssh 198.51.100.77 via sudo from carol"),
    ],
)  # fmt: skip
def test_client_description(env: dict[str, str], tty: str | None, expected: str) -> None:
    assert client_description(env, tty, ids=(0, None)) == expected


def test_the_environment_is_only_ever_a_claim_beside_the_real_ids() -> None:
    """A user who sets SSH_CONNECTION and SUDO_USER is still recorded as who the kernel says they are."""
    spoofed = {"SSH_CONNECTION": "198.51.100.77 1 2 3", "SUDO_USER": "carol"}
    said = client_description(spoofed, "", ids=(0, 0))
    assert said == "uid 0 (root); claimed: ssh 198.51.100.77 via sudo from carol"
    assert client_description({}, "", ids=(0, 4_000_000)) == "uid 0 (root), login uid 4000000 (unknown)"


def test_the_login_uid_is_read_from_the_kernel(tmp_path: Path) -> None:
    assert login_uid_of_process(tmp_path / "absent") is None
    (tmp_path / "unset").write_text("4294967295")
    assert login_uid_of_process(tmp_path / "unset") is None
    (tmp_path / "set").write_text("1000\n")
    assert login_uid_of_process(tmp_path / "set") == 1000


def test_client_description_reads_the_env_given_and_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_CONNECTION", "203.0.113.7 1 2 3")
    monkeypatch.delenv("SUDO_USER", raising=False)
    me = f"uid {os.getuid()} ({user_name(os.getuid())})"
    assert client_description({}, "", ids=(os.getuid(), None)) == me
    assert client_description(os.environ, "", ids=(os.getuid(), None)) == f"{me}; claimed: ssh 203.0.113.7"
    assert client_description({}, "").startswith(me)
    monkeypatch.setattr(os, "ttyname", lambda fd: f"/dev/pts/{fd + 3}")
    assert client_description({}, ids=(os.getuid(), None)) == f"{me}, local tty /dev/pts/3"

    def no_tty(fd: int) -> str:
        raise OSError(25, "Inappropriate ioctl for device")

    monkeypatch.setattr(os, "ttyname", no_tty)
    assert client_description({}, ids=(os.getuid(), None)) == me
