"""One set of appliance keys for the whole test run, copied into every home that imports.

Key files use the default scrypt cost (what users get), so they are made once per run and
copied: ``provision(home)`` gives a data directory the recording public key and signing key;
the compliance key file and passphrase are in the environment (see conftest.py).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from callrec.store.crypto.keys import KeyDirectory

PASSPHRASE = "test passphrase, not a secret"


@dataclass(frozen=True)
class KeySet:
    keys_dir: Path
    private_key: Path
    fingerprint: str


@functools.cache
def keyset() -> KeySet:
    root = Path(tempfile.mkdtemp(prefix="callrec-test-keys-"))
    atexit.register(shutil.rmtree, root, True)
    info = KeyDirectory(root / "keys").init(root / "compliance.key", PASSPHRASE.encode(), time.time_ns())
    return KeySet(root / "keys", root / "compliance.key", info.recording.fingerprint)


def provision(home: Path) -> Path:
    """Give ``home`` the test keys (idempotent); returns ``home``."""
    home = Path(home)
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not (home / "keys").exists():
        shutil.copytree(keyset().keys_dir, home / "keys")
    return home
