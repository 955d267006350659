"""Helpers of the audit-trail tests: a fake clock, filling a trail, and tampering as an attacker with
the catalogue file would (a plain sqlite3 connection, the append-only triggers dropped first)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from callrec.store.audit.chain import GENESIS_HASH, entry_hash
from callrec.store.audit.trail import AuditTrail

NOW_NS = 1_795_874_523_120_000_000  # 2026-11-28T14:02:03.120Z
MS = 1_000_000
TRIGGERS = ("audit_no_update", "audit_no_delete")
ACTIONS = ("calls.show", "calls.export", "calls.play", "hold.add", "audit.verify")


class Clock:
    """Fake time: NOW_NS, one millisecond later on every call."""

    def __init__(self) -> None:
        self.now = NOW_NS
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            self.now += MS
            return self.now


def fill(trail: AuditTrail, count: int, user: str = "alice") -> list[int]:
    return [
        trail.record(
            user=user,
            action=ACTIONS[i % len(ACTIONS)],
            outcome="denied" if i % 7 == 6 else "ok",
            call_ids=[i + 1, (i * 3) % 11 + 1],
            detail={"n": i, "reason": f"case {i // 10}", "format": "wav"},
            client="ssh 203.0.113.7" if i % 2 else "local tty /dev/pts/3",
        )
        for i in range(count)
    ]


@contextlib.contextmanager
def attacker(db_path: Path, *, restore_triggers: bool = True) -> Iterator[sqlite3.Connection]:
    """A raw connection with the append-only triggers dropped; committed (and the triggers put
    back, unless told otherwise) at the end."""
    with contextlib.closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        saved = [
            row[0] for row in conn.execute("SELECT sql FROM sqlite_master WHERE name IN (?, ?)", TRIGGERS)
        ]
        conn.execute("BEGIN IMMEDIATE")
        for name in TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        yield conn
        if restore_triggers:
            for sql in saved:
                conn.execute(sql)
        conn.execute("COMMIT")


def rehash(conn: sqlite3.Connection, first: int, last: int | None = None, prev: str | None = None) -> None:
    """Recompute prev_hash and hash of entries first..last from their content, as an attacker
    who knows the algorithm would after editing them (last=None: to the end), chaining from
    ``prev`` (default: the entry before ``first``)."""
    if prev is None:
        row = conn.execute(
            "SELECT hash FROM audit WHERE seq < ? ORDER BY seq DESC LIMIT 1", (first,)
        ).fetchone()
        prev = GENESIS_HASH if row is None else str(row[0])
    rows = conn.execute(
        "SELECT seq, at_ns, user, action, outcome, call_ids, detail, client FROM audit "
        "WHERE seq >= ? AND seq <= ? ORDER BY seq",
        (first, last if last is not None else 1 << 62),
    ).fetchall()
    for seq, *content in rows:
        digest = entry_hash(prev, seq, *content)
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, seq))
        prev = digest


def kinds(trail: AuditTrail) -> list[tuple[int | None, str]]:
    return [(problem.seq, problem.kind) for problem in trail.verify().problems]
