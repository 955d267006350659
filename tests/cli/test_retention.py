"""Retention classes from the configuration, legal holds and the purge, through the command line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from callrec.cli.main import cli
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import provision

YEAR_S = 365 * 86_400


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def configure(home: Path, text: str) -> None:
    (home / "callrec.toml").write_text(text)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return provision(tmp_path / "home")


def old_and_recent(tmp_path: Path) -> Path:
    """Three calls two years ago (expired under 30 days) and one recent enough for 5 years."""
    import time

    long_ago = time.time() - 2 * YEAR_S
    calls = [CallSpec(f"+3522000{n}", f"20{n}", start_s=long_ago + n * 60) for n in range(3)]
    calls.append(CallSpec("+35229999", "299", start_s=time.time() - 86_400))
    return write_calls(tmp_path / "calls.pcap", calls)


def test_expired_recordings_are_crypto_shredded_unless_held(home: Path, tmp_path: Path) -> None:
    configure(home, '[retention]\ndefault = "30d"\nmifid = "5y"\n')
    calls = json.loads(ok(run(home, "import", "--json", str(old_and_recent(tmp_path)))).stdout)
    assert {c["retention_class"] for c in calls} == {"default"}
    held, expired_a, expired_b, recent = (c["id"] for c in calls)
    ok(run(home, "hold", "add", str(held), "--reason", "complaint 2026-117"))
    dry = json.loads(ok(run(home, "retention", "apply", "--dry-run", "--json")).stdout)
    assert dry["would_purge"] == [expired_a, expired_b] and dry["purged"] == [] and dry["held"] == [held]
    assert all(Path(c["recording"]["path"]).exists() for c in calls)

    done = json.loads(ok(run(home, "retention", "apply", "--json")).stdout)
    assert done["purged"] == [expired_a, expired_b]
    for call in calls:
        assert Path(call["recording"]["path"]).exists() == (call["id"] in (held, recent))
    with sqlite3.connect(home / "catalogue.db") as db:
        keys = {row[0] for row in db.execute("SELECT call FROM recording_keys")}
        tombs = db.execute(
            "SELECT call, state, purged_by, retention_class FROM tombstones ORDER BY call"
        ).fetchall()
    assert keys == {held, recent}
    assert [(t[0], t[1], t[3]) for t in tombs] == [
        (expired_a, "purged", "default"),
        (expired_b, "purged", "default"),
    ]
    shown = json.loads(ok(run(home, "calls", "show", str(expired_a), "--json")).stdout)
    assert shown["recording"] is None and shown["caller"] is None and "purged" in shown["not_recorded"]
    refused = run(home, "calls", "export", str(expired_a), "--out", str(tmp_path / "x.wav"))
    assert refused.exit_code == 1 and "no recording" in refused.output

    again = json.loads(ok(run(home, "retention", "apply", "--json")).stdout)
    assert again["purged"] == [] and again["held"] == [held]
    ok(run(home, "hold", "remove", str(held), "--reason", "closed"))
    last = json.loads(ok(run(home, "retention", "apply", "--json")).stdout)
    assert last["purged"] == [held]
    assert Path(calls[3]["recording"]["path"]).exists()  # one day old, 30 days to go
    purges = json.loads(ok(run(home, "audit", "list", "--action", "retention.purge", "--json")).stdout)
    assert sorted(i for e in purges for i in e["call_ids"]) == sorted([expired_a, expired_b, held])
    ok(run(home, "audit", "verify"))
    verified = ok(run(home, "calls", "verify")).output
    assert "1 intact, 0 failed, 3 purged by retention" in verified


def test_the_configured_class_is_stamped_and_reported(home: Path, tmp_path: Path) -> None:
    configure(home, '[retention]\nmifid = "5y"\n\n[recording]\nretention = "mifid"\n')
    calls = json.loads(ok(run(home, "import", "--json", str(old_and_recent(tmp_path)))).stdout)
    assert {c["retention_class"] for c in calls} == {"mifid"}
    assert json.loads(ok(run(home, "retention", "apply", "--json")).stdout)["purged"] == []
    report = json.loads(ok(run(home, "retention", "report", "--json")).stdout)
    mifid = [c for c in report["classes"] if c["class"] == "mifid"][0]
    assert mifid["kept"] == 4 and mifid["due"] == 0 and mifid["next_expiry"] is not None


def test_a_bad_retention_configuration_says_where(home: Path, tmp_path: Path) -> None:
    configure(home, '[retention]\nmifid = "5 years"\n')
    result = run(home, "import", str(old_and_recent(tmp_path)))
    assert result.exit_code == 1 and "mifid" in result.output and "5 years" in result.output
    configure(home, '[recording]\nretention = "gold"\n')
    result = run(home, "import", str(old_and_recent(tmp_path)))
    assert result.exit_code == 1 and "callrec.toml" in result.output and "gold" in result.output


def test_holds_need_a_reason_and_an_existing_call(home: Path, tmp_path: Path) -> None:
    ok(run(home, "import", str(old_and_recent(tmp_path))))
    assert run(home, "hold", "add", "999", "--reason", "x").exit_code == 1
    assert run(home, "hold", "add", "1").exit_code == 2
    ok(run(home, "hold", "add", "1", "--reason", "case A"))
    listed = json.loads(ok(run(home, "hold", "list", "--json")).stdout)
    assert [(h["call"], h["reason"]) for h in listed] == [(1, "case A")]
    assert run(home, "hold", "remove", "2").exit_code == 1
