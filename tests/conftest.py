"""Every test runs with the test key file and passphrase in the environment, and without the
machine's /etc/callrec (an empty configuration directory instead)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.keyset import PASSPHRASE, keyset

pytest_plugins = ["tests.helpers.s3_server"]


@pytest.fixture(autouse=True)
def callrec_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    monkeypatch.setenv("CALLREC_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("CALLREC_KEY", str(keyset().private_key))
    monkeypatch.setenv("CALLREC_CONFIG_DIR", str(tmp_path_factory.mktemp("etc-callrec")))
    monkeypatch.delenv("CALLREC_HOME", raising=False)
    yield


@pytest.fixture
def sealed_home(tmp_path: Path) -> Path:
    """A data directory with the test keys, ready to import into."""
    from tests.helpers.keyset import provision

    return provision(tmp_path / "home")
