"""Roles, scopes, search filters and the audit trail through the command line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from callrec.cli.context import os_user
from callrec.cli.main import cli
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import provision

ME = os_user()


def run(home: Path, *args: str, as_user: str | None = None) -> Result:
    prefix = ["--home", str(home)] + (["--as", as_user] if as_user else [])
    return CliRunner().invoke(cli, [*prefix, *args])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = provision(tmp_path / "home")
    capture = write_calls(
        tmp_path / "queues.pcap",
        [
            CallSpec("+35220001", "201", ["X-Queue: sales"]),
            CallSpec("+35220002", "301", ["X-Queue: support"], seconds=4),
            CallSpec("+35220003", "202"),
        ],
    )
    ok(run(home, "import", str(capture)))
    ok(run(home, "users", "add", ME, "--role", "admin"))
    ok(run(home, "users", "add", "alice", "--role", "supervisor", "--queue", "sales"))
    ok(run(home, "users", "add", "bob", "--role", "supervisor", "--extension", "20?"))
    ok(run(home, "users", "add", "carol", "--role", "compliance"))
    ok(run(home, "users", "add", "ada", "--role", "auditor"))
    return home


def listed(home: Path, *args: str, as_user: str | None = None) -> list[dict]:
    return json.loads(ok(run(home, "calls", *args, "--json", as_user=as_user)).stdout)


def ids_by_queue(home: Path) -> dict[str | None, int]:
    return {c["queue"]: c["id"] for c in listed(home, "list")}


def test_a_supervisor_sees_only_their_queue(home: Path, tmp_path: Path) -> None:
    queues = ids_by_queue(home)
    sales, support = queues["sales"], queues["support"]
    assert [c["id"] for c in listed(home, "list", as_user="alice")] == [sales]
    assert listed(home, "search", "+35220002", as_user="alice") == []
    assert listed(home, "search", "support", as_user="alice") == []
    assert listed(home, "list", "--queue", "support", as_user="alice") == []
    for command in (
        ["calls", "show", str(support)],
        ["calls", "export", str(support), "--out", str(tmp_path / "x.wav")],
        ["calls", "play", str(support), "--player", "cat"],
    ):
        denied = run(home, *command, as_user="alice")
        assert denied.exit_code == 1 and f"call {support} is outside the scope of alice" in denied.output
    not_theirs = run(home, "calls", "verify", str(support), as_user="alice")  # compliance's job
    assert not_theirs.exit_code == 1 and "alice (supervisor) may not verify" in not_theirs.output
    assert not (tmp_path / "x.wav").exists()
    ok(run(home, "calls", "show", str(sales), as_user="alice"))
    ok(run(home, "calls", "export", str(sales), "--out", str(tmp_path / "sales.wav"), as_user="alice"))
    denials = json.loads(ok(run(home, "audit", "list", "--user", "alice", "--json")).stdout)
    denied = [(e["action"], e["call_ids"]) for e in denials if e["outcome"] == "denied"]
    assert denied == [
        ("calls.show", [support]),
        ("calls.export", [support]),
        ("calls.play", [support]),
        ("calls.verify", [support]),
    ]
    exported = [e for e in denials if e["action"] == "calls.export" and e["outcome"] == "ok"]
    assert exported[0]["call_ids"] == [sales]


def test_an_extension_scope_matches_caller_or_callee(home: Path) -> None:
    seen = sorted(c["callee"] for c in listed(home, "list", as_user="bob"))
    assert seen == ["201", "202"]


def test_roles_limit_what_each_user_may_do(home: Path) -> None:
    auditor = run(home, "calls", "list", as_user="ada")
    assert auditor.exit_code == 1 and "ada (auditor) may not" in auditor.output
    ok(run(home, "audit", "list", as_user="ada"))
    ok(run(home, "audit", "verify", as_user="ada"))
    assert run(home, "users", "list", as_user="carol").exit_code == 1
    assert len(listed(home, "list", as_user="carol")) == 3
    supervisor_hold = run(home, "hold", "add", "1", "--reason", "x", as_user="alice")
    assert supervisor_hold.exit_code == 1 and "may not" in supervisor_hold.output
    unknown = run(home, "calls", "list", as_user="mallory")
    assert unknown.exit_code == 1


def test_only_admins_may_act_as_someone_else(home: Path) -> None:
    ok(run(home, "users", "add", "boss", "--role", "admin"))
    ok(run(home, "users", "grant", ME, "--role", "compliance"))
    refused = run(home, "calls", "list", as_user="alice")
    assert refused.exit_code == 1 and "admin" in refused.output
    ok(run(home, "calls", "list"))  # as themselves, a compliance officer


def test_every_call_access_is_in_the_audit_trail_and_it_verifies(home: Path) -> None:
    sales = ids_by_queue(home)["sales"]
    ok(run(home, "calls", "show", str(sales)))
    ok(run(home, "calls", "search", "sales"))
    entries = json.loads(ok(run(home, "audit", "list", "--json")).stdout)
    actions = [e["action"] for e in entries]
    assert actions[0] == "import" and "users.add" in actions
    show = [e for e in entries if e["action"] == "calls.show"][-1]
    assert show["call_ids"] == [sales] and show["user"] == ME and show["client"]
    search = [e for e in entries if e["action"] == "calls.search"][-1]
    assert search["call_ids"] == [sales] and search["detail"]["query"]["text"] == "sales"
    report = json.loads(ok(run(home, "audit", "verify", "--json")).stdout)
    assert report["ok"] and report["problems"] == [] and report["checkpoints"] >= 1


def test_audit_verify_catches_edits_made_directly_in_sqlite(home: Path) -> None:
    ok(run(home, "calls", "list"))
    entries = json.loads(ok(run(home, "audit", "list", "--json")).stdout)
    victim = entries[3]["seq"]
    with sqlite3.connect(home / "catalogue.db") as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit SET user = 'nobody' WHERE seq = ?", (victim,))
    result = run(home, "audit", "verify")
    assert result.exit_code == 1 and f"entry {victim}" in result.output and "altered" in result.output


def test_search_and_list_filters(home: Path) -> None:
    assert [c["queue"] for c in listed(home, "search", "sales")] == ["sales"]
    assert [c["queue"] for c in listed(home, "list", "--queue", "support")] == ["support"]
    assert [c["callee"] for c in listed(home, "list", "--min-duration", "4")] == ["301"]
    assert len(listed(home, "list", "--recorded")) == 3 and listed(home, "list", "--not-recorded") == []
    assert len(listed(home, "list", "--direction", "unknown")) == 3
    assert listed(home, "list", "--direction", "inbound") == []
    csv = ok(run(home, "calls", "search", "+35220001", "--csv")).stdout.splitlines()
    assert "queue" in csv[0].split(",") and len(csv) == 2
    bad = run(home, "calls", "list", "--direction", "sideways")
    assert bad.exit_code == 2 and "sideways" in bad.output


def test_notes_are_kept_searchable_and_audited(home: Path) -> None:
    sales = ids_by_queue(home)["sales"]
    ok(run(home, "calls", "note", str(sales), "customer disputes the rate", as_user="carol"))
    [found] = listed(home, "search", "disputes")
    assert found["id"] == sales and found["notes"].endswith("carol: customer disputes the rate")
    denied = run(home, "calls", "note", str(sales), "x", as_user="ada")
    assert denied.exit_code == 1 and "may not annotate" in denied.output
    entries = json.loads(ok(run(home, "audit", "list", "--action", "calls.note", "--json")).stdout)
    assert [(e["user"], e["outcome"]) for e in entries] == [("carol", "ok"), ("ada", "denied")]
