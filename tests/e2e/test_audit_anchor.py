"""The audit trail held to anchors outside the catalogue (issue 18, item 4): cutting the end of the
trail (triggers dropped, entries and checkpoints deleted, even the head file) is caught by the
anchor however many commands follow, `audit verify` never signs, and no command signs over a gap."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from callrec.cli.main import cli
from callrec.store.audit.anchor import FileAnchorStore
from tests.helpers.audit import attacker
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import provision


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = provision(tmp_path / "home")
    capture = write_calls(tmp_path / "two.pcap", [CallSpec("+35220001", "201"), CallSpec("+35220002", "202")])
    assert run(home, "import", str(capture)).exit_code == 0
    for _ in range(4):
        assert run(home, "calls", "list").exit_code == 0
    return home


def anchors(home: Path) -> FileAnchorStore:
    return FileAnchorStore(home.parent / "home.audit-anchors")


def cut(home: Path, keep: int, *, head: bool = False) -> None:
    """Drop the triggers and delete the entries after ``keep`` and their checkpoints, as an attacker
    would; ``head``: the head file too."""
    with attacker(home / "catalogue.db") as conn:  # the triggers put back after
        conn.execute("DELETE FROM audit WHERE seq > ?", (keep,))
        conn.execute("DELETE FROM audit_checkpoints WHERE seq > ?", (keep,))
    if head:
        (home / "audit.head").unlink()


def problems(home: Path) -> list[dict]:
    result = run(home, "audit", "verify", "--json")
    assert result.exit_code == 1, result.output
    return json.loads(result.stdout)["problems"]


def test_every_checkpoint_is_anchored_beside_the_data_directory(home: Path) -> None:
    read = anchors(home).read()
    assert [a.seq for a in read.anchors] == [1, 2, 3, 4, 5] and not read.unreadable
    assert run(home, "audit", "verify").exit_code == 0


def test_a_cut_tail_is_caught_after_more_commands(home: Path) -> None:
    cut(home, 2)
    for _ in range(3):  # entries 3-5 again, but other ones: the anchor knows
        assert run(home, "calls", "list").exit_code == 0
    found = problems(home)
    assert {p["kind"] for p in found} == {"truncated"} and found[0]["seq"] == 3
    assert "is not the one anchored in" in found[0]["message"]
    text = run(home, "audit", "verify").output
    assert "entry 3: entry 3 is not the one anchored in" in text


def test_no_command_signs_over_the_gap(home: Path) -> None:
    cut(home, 2)
    head = (home / "audit.head").read_bytes()
    before = anchors(home).read().anchors
    result = run(home, "calls", "list")
    assert result.exit_code == 0 and "audit trail not signed" in result.stderr
    assert (home / "audit.head").read_bytes() == head and anchors(home).read().anchors == before
    with contextlib.closing(sqlite3.connect(home / "catalogue.db")) as conn:
        assert conn.execute("SELECT max(seq) FROM audit_checkpoints").fetchone()[0] == 2


def test_an_emptied_trail_is_caught_by_the_anchor(home: Path) -> None:
    cut(home, 0, head=True)
    messages = [p["message"] for p in problems(home) if p["kind"] == "truncated"]
    assert any("entries 1-5 were removed from the end: the anchor" in m for m in messages), messages


def test_a_cut_tail_and_its_head_file_are_caught_by_the_anchor(home: Path) -> None:
    cut(home, 3, head=True)
    [found] = [p for p in problems(home) if p["kind"] == "truncated"]
    assert found["kind"] == "truncated" and found["seq"] == 4
    assert "entries 4-5 were removed from the end: the anchor" in found["message"]


def test_an_emptied_trail_without_its_head_file_is_not_intact(home: Path) -> None:
    cut(home, 0, head=True)
    anchors(home).path.unlink()  # even with the anchor gone: signed calls and no entries
    [found] = problems(home)
    assert "the trail is empty although the catalogue holds signed calls" in found["message"]


def test_verify_is_read_only(home: Path) -> None:
    cut(home, 2)
    with contextlib.closing(sqlite3.connect(home / "catalogue.db")) as conn:
        before = conn.execute("SELECT * FROM audit_checkpoints").fetchall()
    head, anchored = (home / "audit.head").read_bytes(), anchors(home).read()
    for _ in range(2):
        problems(home)
    with contextlib.closing(sqlite3.connect(home / "catalogue.db")) as conn:
        assert conn.execute("SELECT * FROM audit_checkpoints").fetchall() == before
    assert (home / "audit.head").read_bytes() == head and anchors(home).read() == anchored
    assert run(home, "audit", "verify").exit_code == 1  # still, however often it is asked


def test_verify_does_not_sign_its_own_entry(home: Path) -> None:
    assert run(home, "audit", "verify").exit_code == 0
    report = json.loads(run(home, "audit", "verify", "--json").stdout)
    assert report["ok"] and report["unsigned_tail"] == 1  # the first verify's entry, signed later
    assert run(home, "calls", "list").exit_code == 0  # signs both verifies' entries and its own
    assert json.loads(run(home, "audit", "verify", "--json").stdout)["unsigned_tail"] == 0


def test_the_anchor_file_is_configured_in_the_system_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "etc"
    system.mkdir()
    other = tmp_path / "other-mount" / "anchors.jsonl"
    other.parent.mkdir()
    (system / "callrec.toml").write_text(f'[audit]\nanchor = "{other}"\n')
    monkeypatch.setenv("CALLREC_CONFIG_DIR", str(system))
    home = provision(tmp_path / "home")
    assert (
        run(home, "import", str(write_calls(tmp_path / "a.pcap", [CallSpec("+3521", "201")]))).exit_code == 0
    )
    assert [a.seq for a in FileAnchorStore(other).read().anchors] == [1]
    assert not (tmp_path / "home.audit-anchors").exists()
    (home / "callrec.toml").write_text(f'[audit]\nanchor = "{tmp_path / "elsewhere"}"\n')
    refused = run(home, "config", "check")
    assert refused.exit_code == 1 and "audit.anchor: may only be set in the system" in refused.output
