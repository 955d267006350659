"""A real S3-compatible object store for the suite: one Ceph RADOS Gateway per test session.

``s3_server`` (session scope) runs ``../shared/services/s3-up.sh`` into a temp directory the first
time a test asks for it, on free loopback ports (other sessions on the machine may run theirs), and
``s3-down.sh`` when the session ends. It never skips: CI has ``../shared`` beside the checkout and
runs as root, so a server that does not start is a failure that says why.

``s3_bucket`` (per test) is a fresh bucket with Object Lock (and so versioning) enabled, and puts
the server's credentials into the environment (the standard AWS chain that callrec reads).
"""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SERVICES = Path(__file__).resolve().parents[2].parent / "shared" / "services"
"""``../shared/services`` beside the repository root (tests/helpers -> tests -> root -> ..)."""
UP_TIMEOUT_S = 600  # the first start may install the Debian packages (about 15 s, more on a slow mirror)


@dataclass(frozen=True)
class S3Server:
    """A running gateway: its endpoint, credentials and the directory it lives in."""

    directory: Path
    endpoint: str
    access_key: str
    secret_key: str
    region: str

    def environment(self) -> dict[str, str]:
        """The AWS variables a process needs to reach the server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def create_bucket(self, object_lock: bool = True) -> str:
        """A new bucket with a unique name (Object Lock and versioning on unless told not to)."""
        name = f"callrec-test-{secrets.token_hex(6)}"
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        return name

    def outage(self, what: str) -> None:
        """``stop`` or ``start`` the gateway, keeping its data (``outage.sh s3 DIR stop|start``)."""
        done = subprocess.run(
            ["bash", str(SERVICES / "outage.sh"), "s3", str(self.directory), what],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"outage.sh s3 {what} failed ({done.returncode}): {done.stderr.strip()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _exports(text: str) -> dict[str, str]:
    """The ``export A=1 B=2`` line s3-up.sh prints, as a mapping."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if words[:1] == ["export"]:
            found.update(word.split("=", 1) for word in words[1:] if "=" in word)  # type: ignore[misc]
    return found


def start_server(directory: Path) -> S3Server:
    """Run s3-up.sh into ``directory`` on free ports; fail the session with its output if it cannot."""
    up = SERVICES / "s3-up.sh"
    if not up.is_file():
        pytest.fail(f"no {up}: the suite needs ../shared/services beside the checkout for the S3 tests")
    env = dict(os.environ, MONPORT=str(_free_port()), RGWPORT=str(_free_port()))
    try:
        done = subprocess.run(
            ["bash", str(up), str(directory)],
            env=env,
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["bash", str(SERVICES / "s3-down.sh"), str(directory)], check=False, timeout=60)
        pytest.fail(f"s3-up.sh did not finish in {UP_TIMEOUT_S} s (logs in {directory}/log)")
    found = _exports(done.stdout)
    if done.returncode != 0 or "S3_ENDPOINT" not in found:
        pytest.fail(
            f"s3-up.sh failed ({done.returncode}); the S3 tests need a real gateway: "
            f"{done.stderr.strip()[-2000:]}"
        )
    return S3Server(
        directory=directory,
        endpoint=found["S3_ENDPOINT"],
        access_key=found["AWS_ACCESS_KEY_ID"],
        secret_key=found["AWS_SECRET_ACCESS_KEY"],
        region=found.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real gateway for the whole session (started on first use, stopped at the end)."""
    directory = tmp_path_factory.mktemp("s3-server")
    server = start_server(directory)
    try:
        yield server
    finally:
        subprocess.run(
            ["bash", str(SERVICES / "s3-down.sh"), str(directory)],
            capture_output=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket with Object Lock; the server's credentials in this test's environment."""
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server.create_bucket()
