"""What the audit trail says happened to calls, checked against the catalogue.

A row's signature vouches for the row, not for its being there: a deleted row leaves nothing to
check. The trail does remember: every import's entry lists the ids of the calls it added, and every
purge's entry the call it purged. So a call an entry added must still be in the catalogue (a purge
keeps the redacted row), must have been added once (an id added twice was reused after its row
was deleted), and a purge tombstone must have its audited purge, agree with it, and not be on a
call purged before its expiry or under an active hold (which the purge refuses).

The trail itself is checked by :meth:`store.audit.trail.AuditTrail.verify`; this module trusts its
entries and reads only the ``ok`` ones.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass, field

from callrec.store.retention.purge import AUDIT_ACTION as PURGE_ACTION

ADDING_ACTIONS = ("import",)
"""Audit actions whose entry lists the ids of the calls it added to the catalogue (created, not
already present). A writer that adds calls records one of these with their ids."""


@dataclass(frozen=True, slots=True)
class CallProblem:
    """A call the trail and the catalogue disagree about, and a one-line message naming it."""

    call: int
    message: str


@dataclass(frozen=True, slots=True)
class CallHistory:
    """The ``ok`` entries about calls: call id -> the (seq, action) of the entries that added it, and
    call id -> (seq, detail) of the entries that purged it."""

    added: dict[int, list[tuple[int, str]]] = field(default_factory=dict)
    purged: dict[int, list[tuple[int, dict[str, object]]]] = field(default_factory=dict)


def call_history(conn: sqlite3.Connection) -> CallHistory:
    """Read the entries of :data:`ADDING_ACTIONS` and of the purge from the trail (one query)."""
    history = CallHistory()
    actions = (*ADDING_ACTIONS, PURGE_ACTION)
    sql = (
        f"SELECT seq, action, call_ids, detail FROM audit WHERE outcome = 'ok' "
        f"AND action IN ({', '.join('?' * len(actions))}) ORDER BY seq"
    )
    for seq, action, ids_text, detail_text in conn.execute(sql, actions):
        ids, detail = _json(ids_text, []), _json(detail_text, {})
        for call in ids if isinstance(ids, list) else ():
            if type(call) is not int:
                continue
            if action == PURGE_ACTION:
                history.purged.setdefault(call, []).append(
                    (int(seq), detail if isinstance(detail, dict) else {})
                )
            else:
                history.added.setdefault(call, []).append((int(seq), str(action)))
    return history


def call_problems(
    conn: sqlite3.Connection, history: CallHistory, *, calls: Collection[int] | None = None
) -> list[CallProblem]:
    """Where the catalogue disagrees with ``history``, by call id: for every call of ``calls``
    (``None``: every call the trail or the catalogue knows). One problem per call at most."""
    present = {int(row[0]) for row in conn.execute("SELECT id FROM calls")}
    problems: dict[int, str] = {}
    for call, entries in sorted(history.added.items()):
        if calls is not None and call not in calls:
            continue
        first_seq, action = entries[0]
        if call not in present:
            problems[call] = (
                f"call {call} is missing from the catalogue: audit entry {first_seq} ({action}) added it"
            )
        elif len(entries) > 1:
            seqs = " and ".join(str(seq) for seq, _ in entries[:2])
            problems[call] = (
                f"call {call} was added by audit entries {seqs}: its row was deleted and its id reused"
            )
    tombstones = conn.execute(
        "SELECT call, state, purged_at, expires_at, recording_sha256 FROM tombstones "
        "WHERE purged_at IS NOT NULL"
    ).fetchall()
    held = {int(row[0]) for row in conn.execute("SELECT call FROM holds WHERE released_at IS NULL")}
    for call, state, purged_at, expires_at, sha256 in tombstones:
        call = int(call)
        if (calls is not None and call not in calls) or call in problems or state != "purged":
            continue
        why = _purge_problem(history.purged.get(call, []), str(purged_at), expires_at, sha256, call in held)
        if why:
            problems[call] = f"call {call}: {why}"
    return [CallProblem(call, message) for call, message in sorted(problems.items())]


def _purge_problem(
    entries: list[tuple[int, dict[str, object]]],
    purged_at: str,
    expires_at: object,
    sha256: object,
    held: bool,
) -> str:
    """Why a ``'purged'`` tombstone is not a purge the trail recorded, or ``""``."""
    if not entries:
        return "its purge tombstone has no audited purge (forged?)"
    seq, detail = entries[-1]
    if detail.get("expires_at") != expires_at or detail.get("recording_sha256") != sha256:
        return f"its purge tombstone differs from the purge audit entry {seq} recorded"
    if isinstance(expires_at, str) and expires_at > purged_at:
        return f"it was purged at {purged_at}, before it expired at {expires_at}"
    if held:
        return "it is purged although a hold on it is active (a purge refuses held calls)"
    return ""


def _json(text: object, fallback: object) -> object:
    try:
        return json.loads(str(text))
    except ValueError:
        return fallback
