"""Tampering with the catalogue as an attacker with the SQLite file would (issue 18, items 2 and 3):
every field a user sees, the events, the legs, the row's id, its data key and its very existence
must fail `calls verify` (by call id, one line each, exit 1), and a purge must be the audited one.
Rows signed by older releases (signed document v1) still verify."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from callrec.cli.main import cli
from callrec.store.crypto.document import v1_fields
from callrec.store.crypto.keys import KeyDirectory
from callrec.store.crypto.seal import sign_fields
from tests.helpers.keyset import provision

ROOT = Path(__file__).resolve().parents[2]
PAUSED = ROOT / "pcaps" / "lab" / "modes" / "md_pause_pcmu_13s.pcap"  # key presses, a BYE
PLAIN = ROOT / "pcaps" / "lab" / "lab_pcmu_12s.pcap"


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = provision(tmp_path / "home")
    result = run(home, "import", str(PAUSED), str(PLAIN))
    assert result.exit_code == 0, result.output
    return home


@contextlib.contextmanager
def attacker(home: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to the catalogue, no foreign keys, committed at the end."""
    with contextlib.closing(sqlite3.connect(home / "catalogue.db", isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")


def failed_lines(result: Result) -> list[str]:
    assert result.exit_code == 1, result.output
    return [line for line in result.output.splitlines() if not line.startswith("Verified")]


def test_new_rows_sign_document_version_2_with_their_id(home: Path) -> None:
    with contextlib.closing(sqlite3.connect(home / "catalogue.db")) as conn:
        rows = conn.execute("SELECT id, signed_metadata FROM calls ORDER BY id").fetchall()
    for call, text in rows:
        signed = json.loads(text)
        assert signed["v"] == 2 and signed["id"] == call
        shown = {"answered_at", "ended_at", "expires_at", "caller_uri", "codecs", "events_sha256", "id"}
        assert shown <= set(signed)
    assert run(home, "calls", "verify").exit_code == 0


@pytest.mark.parametrize(
    ("sql", "named"),
    [
        ("UPDATE calls SET started_at = '2020-01-01T00:00:00.000Z' WHERE id = 1", "started_at"),
        ("UPDATE calls SET answered_at = '2020-01-01T00:00:01.000Z' WHERE id = 1", "answered_at"),
        ("UPDATE calls SET ended_at = '2020-01-01T00:09:00.000Z' WHERE id = 1", "ended_at"),
        ("UPDATE calls SET expires_at = '2099-01-01T00:00:00.000Z' WHERE id = 1", "expires_at"),
        ("UPDATE calls SET caller_uri = 'sip:mallory@evil', callee_uri = 'sip:x@y' WHERE id = 1",
         "callee_uri, caller_uri"),
        ("UPDATE calls SET caller_display = 'Mallory' WHERE id = 1", "caller_display"),
        ("UPDATE calls SET codecs = 'G722' WHERE id = 1", "codecs"),
        ("UPDATE calls SET end_reason = 'callee hung up' WHERE id = 1", "end_reason"),
        ("UPDATE calls SET final_status = 486 WHERE id = 1", "final_status"),
        ("UPDATE events SET summary = '9' WHERE call = 1 AND kind = 'dtmf' AND summary = '3'", "events"),
        ("DELETE FROM events WHERE call = 1 AND summary = 'BYE'", "events"),
        ("UPDATE events SET ts_ns = ts_ns + 1000000000 WHERE call = 1 AND summary = 'INVITE'", "events"),
        ("UPDATE legs SET lost = 0, mos = 4.4 WHERE call = 1", "legs"),
        ("UPDATE legs SET jitter_max_ms = 1.5 WHERE call = 1 AND direction = 'caller->callee'", "legs"),
    ],
)  # fmt: skip
def test_an_edit_of_anything_shown_fails_verify(home: Path, tmp_path: Path, sql: str, named: str) -> None:
    with attacker(home) as conn:
        assert conn.execute(sql).rowcount >= 1
    expected = f"call 1: catalogue row changed after signing ({named})"
    assert failed_lines(run(home, "calls", "verify")) == [expected]
    refused = run(home, "calls", "export", "1", "--out", str(tmp_path / "x.wav"))
    assert refused.exit_code == 1 and "changed after signing" in refused.output
    assert run(home, "calls", "verify", "2").exit_code == 0


def swap_calls(conn: sqlite3.Connection, a: int, b: int) -> None:
    """Swap two calls' ids, with their legs, events and keys, as one would to pass one for the other."""
    for table, column in (("calls", "id"), ("legs", "call"), ("events", "call"), ("recording_keys", "call")):
        conn.execute(f"UPDATE {table} SET {column} = -1 WHERE {column} = ?", (a,))
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = ?", (a, b))
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} = -1", (b,))


def test_swapped_row_ids_fail_verify_and_export(home: Path, tmp_path: Path) -> None:
    with attacker(home) as conn:
        swap_calls(conn, 1, 2)
    assert failed_lines(run(home, "calls", "verify")) == [
        "call 1: the row was signed as call 2 (ids swapped or renumbered)",
        "call 2: the row was signed as call 1 (ids swapped or renumbered)",
    ]
    refused = run(home, "calls", "export", "1", "--out", str(tmp_path / "x.wav"))
    assert refused.exit_code == 1 and "signed as call 2" in refused.output
    assert not (tmp_path / "x.wav").exists()


def test_a_data_key_swapped_for_another_calls_fails_verify(home: Path) -> None:
    with attacker(home) as conn:
        conn.execute("UPDATE recording_keys SET call = -1 WHERE call = 1")
        conn.execute("UPDATE recording_keys SET call = 1 WHERE call = 2")
        conn.execute("UPDATE recording_keys SET call = 2 WHERE call = -1")
    lines = failed_lines(run(home, "calls", "verify"))
    assert lines == [
        f"call {n}: the wrapped data key is not the one signed with it (keys swapped?)" for n in (1, 2)
    ]


@pytest.mark.parametrize("victim", [1, 2])
def test_a_deleted_row_is_missing_by_the_audit_trail(home: Path, victim: int) -> None:
    with attacker(home) as conn:
        conn.execute("DELETE FROM calls WHERE id = ?", (victim,))
    entry = json.loads(run(home, "audit", "list", "--action", "import", "--json").stdout)[0]["seq"]
    expected = f"call {victim} is missing from the catalogue: audit entry {entry} (import) added it"
    assert failed_lines(run(home, "calls", "verify")) == [expected]
    one = run(home, "calls", "verify", str(victim))
    assert failed_lines(one) == [expected]
    listed = json.loads(run(home, "calls", "verify", "--json").stdout)
    assert [r["id"] for r in listed if not r["ok"]] == [victim]
    audited = run(home, "audit", "verify")
    assert audited.exit_code == 1 and expected in audited.output.splitlines()


def test_an_unknown_id_is_still_not_found(home: Path) -> None:
    result = run(home, "calls", "verify", "3")
    assert result.exit_code == 1 and "no call with id 3" in result.output


def test_a_forged_purge_of_a_held_unexpired_call_fails_verify(home: Path) -> None:
    assert run(home, "hold", "add", "1", "--reason", "complaint 2026-117").exit_code == 0
    with attacker(home) as conn:
        expires_at, path, sha256 = conn.execute(
            "SELECT expires_at, recording_path, recording_sha256 FROM calls WHERE id = 1"
        ).fetchone()
        conn.execute(
            "INSERT INTO tombstones (call, state, started_at, purged_at, purged_by, reason, retention_class, "
            "expires_at, recording_path, recording_sha256) VALUES (1, 'purged', '2026-11-29T00:00:00.000Z', "
            "'2026-11-29T00:00:00.000Z', 'root', 'retention expired', 'default', ?, ?, ?)",
            (expires_at, path, sha256),
        )
        conn.execute("DELETE FROM recording_keys WHERE call = 1")
        conn.execute(
            "UPDATE calls SET recording_path = NULL, signed_metadata = NULL, signature = NULL, caller = NULL "
            "WHERE id = 1"
        )
    assert failed_lines(run(home, "calls", "verify")) == [
        "call 1: its purge tombstone has no audited purge (forged?)"
    ]


def sign_as_version_1(home: Path, call: int) -> None:
    """Re-sign a row the way releases before signed document v2 did (its v1 fields only)."""
    keys = KeyDirectory(home / "keys")
    with attacker(home) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute("SELECT * FROM calls WHERE id = ?", (call,)).fetchone())
        text, signature = sign_fields(keys.signing_key(), v1_fields(row))
        update = "UPDATE calls SET signed_metadata = ?, signature = ? WHERE id = ?"
        conn.execute(update, (text, signature, call))


def test_rows_signed_with_version_1_still_verify_by_their_fields(home: Path) -> None:
    sign_as_version_1(home, 2)
    assert "2 intact, 0 failed" in run(home, "calls", "verify").output
    with attacker(home) as conn:  # v1 did not cover the answer time: an old row cannot tell
        conn.execute("UPDATE calls SET answered_at = '2020-01-01T00:00:01.000Z' WHERE id = 2")
    assert run(home, "calls", "verify").exit_code == 0
    with attacker(home) as conn:
        conn.execute("UPDATE calls SET caller = '+352999' WHERE id = 2")
    changed = "call 2: catalogue row changed after signing (caller)"
    assert failed_lines(run(home, "calls", "verify")) == [changed]
