"""A data directory for the portal's tests: five calls in two queues, one user of every role with a
portal password, the test keys unlocked, and a Flask test client that logs in."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.testing import CliRunner, Result

from callrec.cli.commands.portal import portal
from callrec.cli.context import os_user
from callrec.cli.main import CallrecGroup, cli
from callrec.portal.app import create_app
from callrec.portal.settings import PortalConfig
from callrec.store.access.passwords import hash_password
from callrec.store.access.principals import Users
from callrec.store.catalogue.db import Catalogue
from callrec.store.crypto.keys import load_private_keys
from callrec.store.home import Home
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import PASSPHRASE, keyset, provision

ME = os_user()
PASSWORDS = {
    ME: "admin password 1",
    "alice": "alice password 1",
    "bob": "bob password 12",
    "carol": "carol password 1",
    "ada": "ada password 123",
}
ROLES = {ME: "admin", "alice": "supervisor", "bob": "supervisor", "carol": "compliance", "ada": "auditor"}
CALLS = [
    CallSpec("+35220001", "201", ["X-Queue: sales"], seconds=3),
    CallSpec("+35220002", "301", ["X-Queue: support"], seconds=4),
    CallSpec("+35220003", "202"),
    CallSpec("+35220004", "205", ["X-Queue: sales"], seconds=6),
    CallSpec("+35220005", "302", ["X-Queue: support"]),
]


def group() -> click.Group:
    """``callrec`` with the ``portal`` command (as cli/main.py registers it), without changing ``cli``."""
    return CallrecGroup(
        name="callrec",
        callback=cli.callback,
        params=cli.params,
        commands={**cli.commands, "portal": portal},
        context_settings=cli.context_settings,  # click caches help options per command: keep "-h"
    )


def run(home: Path, *args: str, as_user: str | None = None, env: dict[str, str] | None = None) -> Result:
    prefix = ["--home", str(home)] + (["--as", as_user] if as_user else [])
    return CliRunner().invoke(group(), [*prefix, *args], env=env)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def build_home(root: Path) -> Path:
    """The data directory: calls imported, users added, cheap password hashes (log2 N = 10)."""
    home = provision(root / "home")
    ok(run(home, "import", str(write_calls(root / "queues.pcap", CALLS))))
    ok(run(home, "users", "add", ME, "--role", "admin"))
    ok(run(home, "users", "add", "alice", "--role", "supervisor", "--queue", "sales"))
    ok(run(home, "users", "add", "bob", "--role", "supervisor", "--extension", "20?"))
    ok(run(home, "users", "add", "carol", "--role", "compliance"))
    ok(run(home, "users", "add", "ada", "--role", "auditor"))
    with Catalogue(Home(home).catalogue_path) as catalogue:
        users = Users(catalogue.db)
        for name, password in PASSWORDS.items():
            users.set_password_hash(name, hash_password(password, log2_n=10))
    return home


def call_ids(home: Path) -> dict[str, int]:
    """Catalogue ids by caller number."""
    with Catalogue(Home(home).catalogue_path) as catalogue:
        return {str(r["caller"]): int(r["id"]) for r in catalogue.search(limit=None)}


@functools.cache
def unlocked_keys() -> dict[str, Any]:
    return load_private_keys([keyset().private_key], PASSPHRASE.encode())


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Portal:
    """A portal app over ``home`` with a fake clock."""

    home: Path
    clock: FakeClock
    config: PortalConfig

    @classmethod
    def make(cls, home: Path, **settings: Any) -> Portal:
        clock = FakeClock()
        settings.setdefault("private_keys", unlocked_keys())
        return cls(home, clock, PortalConfig(home=home, clock=clock, **settings))

    def app(self) -> Any:
        app = create_app(self.config)
        app.testing = True
        return app


_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _TOKEN.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def login(client: Any, user: str, password: str | None = None, **extra: str) -> Any:
    """Log ``client`` in as ``user`` through the login form; returns the POST's response."""
    page = client.get("/login")
    token = csrf_of(page.get_data(as_text=True))
    form = {
        "csrf_token": token,
        "username": user,
        "password": PASSWORDS[user] if password is None else password,
    }
    return client.post("/login", data={**form, **extra})


def audit_entries(home: Path, **filters: Any) -> list[Any]:
    from callrec.store.audit.trail import AuditTrail

    with Catalogue(Home(home).catalogue_path) as catalogue:
        trail = AuditTrail(catalogue.db, signing_key=None, verify_key=None, head_path=None)
        return trail.entries(**filters)
