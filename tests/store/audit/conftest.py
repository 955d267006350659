"""Fixtures of the audit-trail tests: a catalogue, a signing key, a head file and a trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from callrec.store.audit.trail import (
    AuditTrail,
)
from callrec.store.catalogue.db import Catalogue
from tests.helpers.audit import NOW_NS, Clock


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "catalogue.db"


@pytest.fixture
def cat(db_path: Path) -> Iterator[Catalogue]:
    with Catalogue(db_path, clock=lambda: NOW_NS) as catalogue:
        yield catalogue


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


@pytest.fixture
def head_path(tmp_path: Path) -> Path:
    return tmp_path / "audit-head.json"


@pytest.fixture
def trail(cat: Catalogue, key: Ed25519PrivateKey, head_path: Path) -> AuditTrail:
    return AuditTrail(
        cat.db, signing_key=key, verify_key=None, head_path=head_path, clock=Clock(), checkpoint_every=8
    )
