"""The audit trail's anchors outside the catalogue: the append-only file store, checkpoints that
refuse to sign over a cut trail, verification against every anchor, the default location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from callrec.store.audit.anchor import Anchor, FileAnchorStore
from callrec.store.audit.trail import AuditTrail
from callrec.store.catalogue.db import Catalogue
from callrec.store.home import default_anchor_path
from tests.helpers.audit import Clock, attacker, fill, kinds, rehash


def anchor(seq: int) -> Anchor:
    return Anchor(seq, f"{seq:064x}", "ab" * 64, "cd" * 16, "2026-11-28T14:02:03.120Z")


@pytest.fixture
def anchored(cat: Catalogue, key: Ed25519PrivateKey, head_path: Path, tmp_path: Path) -> AuditTrail:
    (tmp_path / "elsewhere").mkdir()
    return AuditTrail(
        cat.db,
        signing_key=key,
        verify_key=None,
        head_path=head_path,
        anchor=FileAnchorStore(tmp_path / "elsewhere" / "anchors.jsonl"),
        clock=Clock(),
        checkpoint_every=8,
    )


def test_the_file_store_appends_and_reads_back(tmp_path: Path) -> None:
    store = FileAnchorStore(tmp_path / "anchors.jsonl")
    assert store.latest() is None and store.read().anchors == []
    for seq in (8, 16, 24):
        store.append(anchor(seq))
    assert store.read().anchors == [anchor(8), anchor(16), anchor(24)] and store.latest() == anchor(24)
    assert os.stat(store.path).st_mode & 0o777 == 0o600


def test_a_torn_last_line_is_ignored_and_a_bad_middle_line_reported(tmp_path: Path) -> None:
    store = FileAnchorStore(tmp_path / "anchors.jsonl")
    store.append(anchor(8))
    with store.path.open("ab") as out:
        out.write(b'{"seq": 9, "hash"')  # a crash in the middle of an append
    assert store.read().anchors == [anchor(8)] and not store.read().unreadable
    assert store.latest() == anchor(8)
    with store.path.open("ab") as out:
        out.write(b"\n")
    store.append(anchor(16))
    read = store.read()
    assert read.anchors == [anchor(8), anchor(16)] and read.unreadable == [
        f"line 2 of {store.path} is not an anchor"
    ]


def test_every_checkpoint_is_anchored_and_verified(anchored: AuditTrail, tmp_path: Path) -> None:
    fill(anchored, 20)
    anchored.checkpoint()
    store = FileAnchorStore(tmp_path / "elsewhere" / "anchors.jsonl")
    assert [a.seq for a in store.read().anchors] == [8, 16, 20]
    assert anchored.verify().ok


def test_a_rewritten_chain_fails_its_anchors(anchored: AuditTrail, db_path: Path, head_path: Path) -> None:
    fill(anchored, 20)
    anchored.checkpoint()
    with attacker(db_path) as conn:  # rewrite from entry 10 on, re-chained; checkpoints and head gone
        conn.execute("UPDATE audit SET user = 'mallory' WHERE seq >= 10")
        rehash(conn, 10)
        conn.execute("DELETE FROM audit_checkpoints")
    head_path.unlink()
    assert kinds(anchored) == [(16, "truncated"), (20, "truncated")]


def test_a_checkpoint_refuses_to_sign_over_a_cut(
    anchored: AuditTrail, db_path: Path, head_path: Path
) -> None:
    fill(anchored, 16)
    with attacker(db_path) as conn:
        conn.execute("DELETE FROM audit WHERE seq > 12")
        conn.execute("DELETE FROM audit_checkpoints WHERE seq > 12")
    head_path.unlink()
    fill(anchored, 2)  # entries 13 and 14 again
    refused = anchored.checkpoint()
    assert refused.startswith("the anchor ") and "names entry 16 but the trail ends at entry 14" in refused
    fill(anchored, 4)  # 15-18: entry 16 is another one now
    assert "entry 16 is not the one the anchor" in anchored.checkpoint()
    assert not head_path.exists()
    assert (16, "truncated") in kinds(anchored)


def test_an_unwritable_anchor_keeps_the_checkpoint(
    cat: Catalogue, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    trail = AuditTrail(
        cat.db,
        signing_key=key,
        verify_key=None,
        head_path=None,
        anchor=FileAnchorStore(tmp_path / "missing-dir" / "anchors.jsonl"),
        checkpoint_every=0,
    )
    fill(trail, 3)
    said = trail.checkpoint()
    assert said.startswith("checkpoint 3 signed but not anchored: cannot anchor the audit trail in")
    assert trail.verify().checkpoints == 1


def test_the_default_anchor_location(tmp_path: Path) -> None:
    home = tmp_path / "data" / "callrec"
    assert default_anchor_path(home, tmp_path / "no-such-dir") == tmp_path / "data" / "callrec.audit-anchors"
    system = tmp_path / "log"
    system.mkdir()
    inside = default_anchor_path(home, system)
    assert inside.parent == system and inside.name.startswith("audit-anchors-") and inside.suffix == ".jsonl"
    assert default_anchor_path(tmp_path / "other", system) != inside
