"""The audit trail's "who" comes from the kernel, not from what the user sets (issue 18, item 5):
SSH_CONNECTION and SUDO_USER are kept only as a claim beside the real uid, and a refused --as is
logged under the real user, with the name asked for in the detail. Real processes, real environment."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from callrec.cli.context import os_user
from callrec.store.audit.client import user_name
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import provision

ME = os_user()
SPOOFED = {"SSH_CONNECTION": "198.51.100.77 51234 192.0.2.1 22", "SUDO_USER": "carol"}


def callrec(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in ("SSH_CONNECTION", "SSH_CLIENT", "SUDO_USER")
    }
    return subprocess.run(
        [sys.executable, "-m", "callrec.cli.main", "--home", str(home), *args],
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def entries(home: Path, action: str) -> list[dict]:
    """The trail's entries of ``action``, read from the file (a supervisor may not list them)."""
    with contextlib.closing(sqlite3.connect(home / "catalogue.db")) as conn:
        rows = conn.execute("SELECT user, outcome, detail, client FROM audit WHERE action = ?", (action,))
        return [
            {"user": user, "outcome": outcome, "detail": json.loads(detail), "client": client}
            for user, outcome, detail, client in rows
        ]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = provision(tmp_path / "home")
    imported = callrec(
        home, "import", str(write_calls(tmp_path / "one.pcap", [CallSpec("+35220001", "201")]))
    )
    assert imported.returncode == 0, imported.stderr
    return home


def test_a_spoofed_ssh_peer_and_sudo_user_are_only_claims(home: Path) -> None:
    assert callrec(home, "calls", "list", env=SPOOFED).returncode == 0
    [entry] = entries(home, "calls.list")
    uid = os.getuid()
    assert entry["client"].startswith(f"uid {uid} ({user_name(uid)})")
    assert entry["client"].endswith("; claimed: ssh 198.51.100.77 via sudo from carol")
    [plain] = entries(home, "import")
    assert "claimed" not in plain["client"] and plain["client"].startswith(f"uid {uid} ")


def test_a_refused_as_is_logged_under_the_real_user(home: Path) -> None:
    steps = (
        ("users", "add", ME, "--role", "admin"),
        ("users", "add", "boss", "--role", "admin"),
        ("users", "grant", ME, "--role", "supervisor", "--queue", "sales"),
    )
    for args in steps:
        done = callrec(home, *args)
        assert done.returncode == 0, done.stderr
    refused = callrec(home, "--as", "boss", "calls", "list")
    assert refused.returncode == 1 and "may not act as another user" in refused.stderr
    [denied] = [e for e in entries(home, "login") if e["outcome"] == "denied"]
    assert denied["user"] == ME and denied["detail"]["requested_as"] == "boss"
    assert all(e["user"] != "boss" for e in entries(home, "login"))
