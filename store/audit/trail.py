"""The audit trail: who did what to which calls, when, from where. Append-only, hash-chained, signed.

Each entry's ``hash`` is sha256 over the previous entry's hash and a canonical serialisation of the
entry (:func:`entry_hash`), so changing, removing or reordering an entry breaks the chain there.
Triggers refuse UPDATE and DELETE on ``audit``; whoever holds the file can drop them, and
:meth:`AuditTrail.verify` notices that too. A chain that is merely self-consistent could be
recomputed by anyone who can write the file, so every ``checkpoint_every`` entries the head of the
chain (seq, hash) is signed with the appliance's Ed25519 key into ``audit_checkpoints`` and
written to a head file outside the database and appended to an anchor store outside the data
directory (:mod:`store.audit.anchor`): cutting entries off the end, or rewriting the chain from
some entry on, is caught as well, even when the head file and the checkpoints went with them.
:meth:`AuditTrail.verify` only reads; :meth:`AuditTrail.checkpoint` refuses to sign a trail that no
longer holds the entry the anchor or the head file names, so no later command vouches for a gap.

Writes join a transaction already open on the connection (an action and its audit entry commit
together, or neither does; open it with ``BEGIN IMMEDIATE``) and otherwise take the write lock
with ``BEGIN IMMEDIATE`` themselves: reading the previous hash and appending is atomic across
connections and processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlite_utils import Database

from callrec.store.audit.anchor import Anchor, AnchorStore
from callrec.store.audit.chain import GENESIS_HASH, entry_hash, key_fingerprint, signed_message
from callrec.store.catalogue.migrations import iso_from_ns, write_transaction
from callrec.store.errors import AuditTampered, InvalidArgument, StoreError

log = logging.getLogger(__name__)
OUTCOMES = ("ok", "denied", "failed")
PROBLEM_KINDS = ("altered", "removed", "reordered", "checkpoint", "truncated", "triggers")

_TRIGGERS = {"audit_no_update": "UPDATE", "audit_no_delete": "DELETE"}
_TRIGGER_SQL = r"CREATE TRIGGER {name} BEFORE {statement} ON audit BEGIN SELECT RAISE\(ABORT, '[^']*'\); END"
_ACTION = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_COLUMNS = "seq, at, at_ns, user, action, outcome, call_ids, detail, client, prev_hash, hash"
_HEAD_KEYS = ("seq", "hash", "signature", "key_fingerprint")
# entries naming a call; a tampered, unparsable call_ids must not stop the trail being listed
_CALL_IN = "CASE WHEN json_valid(call_ids) THEN ? IN (SELECT value FROM json_each(call_ids)) END"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit entry as stored; ``call_ids`` and ``detail`` decoded from their JSON."""

    seq: int
    at: str
    at_ns: int
    user: str
    action: str
    outcome: str
    call_ids: tuple[int, ...]
    detail: dict[str, object]
    client: str
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """Something :meth:`AuditTrail.verify` found: the entry it concerns (``None`` for the trail as
    a whole), one of :data:`PROBLEM_KINDS`, and a one-line message."""

    seq: int | None
    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The result of :meth:`AuditTrail.verify`. ``unsigned_tail`` counts the entries after the last
    checkpoint (only the chain vouches for them); ``signatures_checked`` is False when there was no
    key to check the checkpoints' signatures with."""

    ok: bool
    entries: int
    checkpoints: int
    unsigned_tail: int
    problems: list[AuditProblem]
    signatures_checked: bool = True

    def raise_if_tampered(self) -> None:
        """Raise :class:`AuditTampered` naming the first problem, if there is any."""
        if self.problems:
            more = len(self.problems) - 1
            suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
            raise AuditTampered(f"audit trail fails verification: {self.problems[0].message}{suffix}")


class AuditTrail:
    """The ``audit`` table of a catalogue database.

    ``signing_key`` signs checkpoints (none: no checkpoints are made); ``verify_key`` checks them
    (default: the signing key's public half); ``head_path`` is where the signed head is written
    and read back by :meth:`verify`. ``clock`` gives nanoseconds for each entry;
    ``checkpoint_every`` entries a checkpoint is made after the entry commits (0: only on
    :meth:`checkpoint`). ``anchor``: where every checkpoint is also appended, outside the catalogue
    (:mod:`store.audit.anchor`), and what :meth:`verify` holds the trail to."""

    def __init__(
        self,
        db: Database,
        *,
        signing_key: Ed25519PrivateKey | None,
        verify_key: Ed25519PublicKey | None,
        head_path: Path | None,
        anchor: AnchorStore | None = None,
        clock: Callable[[], int] = time.time_ns,
        checkpoint_every: int = 64,
    ) -> None:
        _whole("checkpoint_every", checkpoint_every)
        if signing_key is not None:
            own = signing_key.public_key()
            if verify_key is not None and key_fingerprint(verify_key) != key_fingerprint(own):
                raise InvalidArgument("the audit verify key is not the public half of the audit signing key")
            verify_key = own
        self._db = db
        self._signing_key = signing_key
        self._verify_key = verify_key
        self._head_path = None if head_path is None else Path(head_path)
        self._anchor = anchor
        self._clock = clock
        self._every = checkpoint_every

    def record(
        self,
        *,
        user: str,
        action: str,
        outcome: str = "ok",
        call_ids: Iterable[int] = (),
        detail: Mapping[str, object] | None = None,
        client: str = "",
    ) -> int:
        """Append one entry; return its seq. In an open transaction it commits or rolls back with
        it, else it commits now and a due checkpoint follows (if that fails, the entry stays)."""
        values = _entry_values(user, action, outcome, call_ids, detail, client)
        if self._db.conn.in_transaction:
            return self._append(values)
        with write_transaction(self._db):
            seq = self._append(values)
            due = self._signing_key is not None and self._every and seq - self._checkpointed() >= self._every
        if due:
            self.checkpoint()
        return seq

    def _append(self, values: tuple[str, str, str, str, str, str]) -> int:
        conn = self._db.conn
        seq, prev = self.head()
        seq += 1
        at_ns = int(self._clock())
        user, action, outcome, ids, detail, client = values
        digest = entry_hash(prev, seq, at_ns, user, action, outcome, ids, detail, client)
        conn.execute(
            f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, iso_from_ns(at_ns), at_ns, user, action, outcome, ids, detail, client, prev, digest),
        )
        return seq

    def head(self) -> tuple[int, str]:
        """The last entry's seq and hash; ``(0, GENESIS_HASH)`` for an empty trail."""
        row = self._db.conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))

    def _checkpointed(self) -> int:
        row = self._db.conn.execute("SELECT max(seq) FROM audit_checkpoints").fetchone()
        return int(row[0] or 0)

    def checkpoint(self) -> str:
        """Sign the head of the chain into ``audit_checkpoints``, write the head file (atomically,
        mode 0600) and append it to the anchor store. Nothing happens without a signing key or
        without new entries since the last one. Returns ``""``, or what went wrong: it refused to sign
        because the trail no longer holds the entry that the anchor or the head file names (cut, or
        cut and regrown) and signing its new head would vouch for the gap (verify with
        :meth:`verify`), or the anchor could not be written (the checkpoint is kept)."""
        if self._signing_key is None:
            return ""
        if self._db.conn.in_transaction:
            raise StoreError("cannot checkpoint the audit trail inside an open transaction: commit it first")
        key = self._signing_key
        with write_transaction(self._db):
            seq, digest = self.head()
            if seq <= self._checkpointed():
                return ""
            gap = self._gap(seq)
            if gap:
                log.warning("audit trail not signed: %s", gap)
                return gap
            signature = key.sign(signed_message(seq, digest)).hex()
            fingerprint = key_fingerprint(key.public_key())
            at = iso_from_ns(int(self._clock()))
            self._db.conn.execute(
                "INSERT INTO audit_checkpoints (seq, hash, at, key_fingerprint, signature) "
                "VALUES (?, ?, ?, ?, ?)",
                (seq, digest, at, fingerprint, signature),
            )
            if self._head_path is not None:  # under the write lock: head files are written in seq order
                head = {"seq": seq, "hash": digest, "signature": signature, "key_fingerprint": fingerprint}
                _write_head(self._head_path, head)
            unanchored = ""
            if self._anchor is not None:  # likewise anchors; one that cannot be written is not fatal
                try:
                    self._anchor.append(Anchor(seq, digest, signature, fingerprint, at))
                except StoreError as exc:
                    unanchored = f"checkpoint {seq} signed but not anchored: {exc}"
        where = f" anchored in {self._anchor.location}" if self._anchor is not None and not unanchored else ""
        log.info("audit checkpoint: entry %d hash %s signed by %s%s", seq, digest, fingerprint, where)
        if unanchored:
            log.warning("%s", unanchored)
        return unanchored

    def _gap(self, seq: int) -> str:
        """Why the trail (ending at ``seq``) does not extend what was last signed outside the
        catalogue (the last anchor, the head file), or ``""``."""
        named: list[tuple[int, str, str]] = []
        if self._anchor is not None:
            latest = self._anchor.latest()
            if latest is not None:
                named.append((latest.seq, latest.hash, f"the anchor {self._anchor.location}"))
        if self._head_path is not None:
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                head = json.loads(self._head_path.read_bytes())
                named.append((int(head["seq"]), str(head["hash"]), f"the audit head file {self._head_path}"))
        for signed_seq, signed_hash, source in named:
            if signed_seq > seq:
                return f"{source} names entry {signed_seq} but the trail ends at entry {seq}: it was cut"
            found = self._db.conn.execute("SELECT hash FROM audit WHERE seq = ?", (signed_seq,)).fetchone()
            if found is None or found[0] != signed_hash:
                return f"entry {signed_seq} is not the one {source} names: the trail was cut and regrown"
        return ""

    def entries(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        user: str | None = None,
        action: str | None = None,
        call: int | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Entries matching every given filter, by seq: ``since_ns`` inclusive, ``until_ns``
        exclusive, ``user`` and ``action`` exact, ``call`` among the entry's call ids. ``limit``
        keeps the newest ``limit`` of them."""
        clauses: list[str] = []
        params: list[object] = []
        filters = (
            ("since_ns", since_ns, "at_ns >= ?"), ("until_ns", until_ns, "at_ns < ?"),
            ("call", call, _CALL_IN), ("user", user, "user = ?"), ("action", action, "action = ?"),
        )  # fmt: skip
        for name, value, clause in filters:
            if value is not None:
                if name not in ("user", "action"):
                    _whole(name, value, minimum=None)
                clauses.append(clause)
                params.append(value)
        sql = f"SELECT {_COLUMNS} FROM audit WHERE {' AND '.join(clauses) or '1'}"
        if limit is not None:
            _whole("limit", limit)
            sql, params = f"SELECT * FROM ({sql} ORDER BY seq DESC LIMIT ?)", [*params, limit]
        sql += " ORDER BY seq"
        return [_entry(row) for row in self._db.conn.execute(sql, params)]

    def verify(self) -> AuditReport:
        """Check the whole trail: the triggers, every entry's hash and link, every checkpoint's
        signature and hash, the head file and every anchor. Problems are listed by seq. Read-only
        (it never signs). Safe while others append: a failed check is repeated under the write lock,
        where no checkpoint is half written."""
        report = self._verify("BEGIN")
        if not report.ok and not self._db.conn.in_transaction:
            with contextlib.suppress(sqlite3.OperationalError):  # read-only or busy: the first answer
                report = self._verify("BEGIN IMMEDIATE")
        return report

    def _verify(self, begin: str) -> AuditReport:
        """:meth:`verify` in one transaction (a deferred one's snapshot starts after reading the head)."""
        conn = self._db.conn
        own = not conn.in_transaction
        if own:
            conn.execute(begin)
        try:
            problems: list[AuditProblem] = []
            head = self._read_head(problems)
            anchors = self._read_anchors(problems)
            problems += _trigger_problems(conn)
            return self._check(problems, head, anchors)
        finally:
            if own and conn.in_transaction:
                conn.execute("ROLLBACK")

    def _check(
        self, problems: list[AuditProblem], head: tuple[int, str] | None, anchors: list[Anchor]
    ) -> AuditReport:
        conn = self._db.conn
        anchored = {anchor.seq for anchor in anchors}
        seen: dict[int, str] = {}
        checkpoints = {
            int(row[0]): (str(row[1]), str(row[2]), str(row[3]))
            for row in conn.execute("SELECT seq, hash, key_fingerprint, signature FROM audit_checkpoints")
        }
        for seq, (digest, fingerprint, signature) in sorted(checkpoints.items()):
            why = self._bad_signature(seq, digest, fingerprint, signature)
            if why:
                problems.append(AuditProblem(seq, "checkpoint", f"checkpoint {seq} {why}"))
        count, last = 0, 0
        prev_hash = GENESIS_HASH
        for row in conn.execute(f"SELECT {_COLUMNS} FROM audit ORDER BY seq"):
            seq, at, at_ns, user, action, outcome, ids, detail, client, prev, digest = row
            count += 1
            if seq != last + 1:
                problems.append(_removed(last, seq))
            elif prev != prev_hash:
                if last == 0:
                    message = f"entry {seq} does not chain from the start: entries before it were removed"
                    problems.append(AuditProblem(seq, "removed", message))
                else:
                    message = f"entry {seq} does not follow entry {last}: an entry was replaced or reordered"
                    problems.append(AuditProblem(seq, "reordered", message))
            altered = entry_hash(prev, seq, at_ns, user, action, outcome, ids, detail, client) != digest
            if altered or not _time_matches(at, at_ns):
                why = "its hash does not match its content" if altered else "its at does not match its at_ns"
                problems.append(AuditProblem(seq, "altered", f"entry {seq} was altered: {why}"))
            signed = checkpoints.get(seq)
            if signed is not None and signed[0] != digest:
                message = f"checkpoint {seq} does not match entry {seq}: the trail was rewritten up to it"
                problems.append(AuditProblem(seq, "checkpoint", message))
            if seq in anchored:
                seen[seq] = str(digest)
            last, prev_hash = seq, str(digest)
        claims = [(max(checkpoints), "the last checkpoint")] if checkpoints else []
        problems += self._anchor_problems(anchors, seen, last)
        if anchors:
            claims.append((max(anchored), f"the anchor {self._location()}"))
        if count == 0 and conn.execute("SELECT 1 FROM calls WHERE signature IS NOT NULL LIMIT 1").fetchone():
            message = "the trail is empty although the catalogue holds signed calls: its entries were removed"
            problems.append(AuditProblem(None, "truncated", message))
        if head is not None:
            claims.append((head[0], f"the audit head file {self._head_path}"))
            found = conn.execute("SELECT hash FROM audit WHERE seq = ?", (head[0],)).fetchone()
            if found is not None and found[0] != head[1]:
                message = f"entry {head[0]}, named by the audit head file, was replaced: the trail was cut"
                problems.append(AuditProblem(head[0], "truncated", message))
        claimed, source = max(claims, default=(0, ""))
        if claimed > last:
            gone = f"entry {claimed} was" if claimed == last + 1 else f"entries {last + 1}-{claimed} were"
            ends = f"the trail ends at entry {last}" if last else "the trail is empty"
            message = f"{gone} removed from the end: {source} names entry {claimed}, {ends}"
            problems.append(AuditProblem(last + 1, "truncated", message))
        problems.sort(key=lambda problem: -1 if problem.seq is None else problem.seq)
        return AuditReport(
            ok=not problems,
            entries=count,
            checkpoints=len(checkpoints),
            unsigned_tail=max(0, last - max(checkpoints, default=0)),
            problems=problems,
            signatures_checked=self._verify_key is not None,
        )

    def _location(self) -> str:
        return self._anchor.location if self._anchor is not None else ""

    def _read_anchors(self, problems: list[AuditProblem]) -> list[Anchor]:
        if self._anchor is None:
            return []
        read = self._anchor.read()
        problems += [AuditProblem(None, "checkpoint", f"audit anchor: {why}") for why in read.unreadable]
        return read.anchors

    def _anchor_problems(
        self, anchors: list[Anchor], seen: Mapping[int, str], last: int
    ) -> list[AuditProblem]:
        """Each anchor's signature must hold and, where the trail reaches it, its entry must be the
        anchored one (a trail shorter than the last anchor is reported with the other claims)."""
        problems = []
        where = self._location()
        for anchor in anchors:
            why = self._bad_signature(anchor.seq, anchor.hash, anchor.key_fingerprint, anchor.signature)
            if why:
                message = f"the anchor of entry {anchor.seq} in {where} {why}"
                problems.append(AuditProblem(anchor.seq, "checkpoint", message))
            elif anchor.seq <= last and seen.get(anchor.seq) != anchor.hash:
                message = (
                    f"entry {anchor.seq} is not the one anchored in {where}: "
                    "the trail was cut and regrown, or rewritten"
                )
                problems.append(AuditProblem(anchor.seq, "truncated", message))
        return problems

    def _bad_signature(self, seq: int, digest: str, fingerprint: str, signature: str) -> str:
        """Why the signature over (seq, digest) does not hold, or ``""``."""
        key = self._verify_key
        if key is None:
            return ""
        expected = key_fingerprint(key)
        if fingerprint != expected:
            return f"was signed by key {fingerprint}, not by the audit key {expected}"
        try:
            key.verify(bytes.fromhex(signature), signed_message(seq, digest))
        except (InvalidSignature, ValueError):
            return "has an invalid signature: it was forged or altered"
        return ""

    def _read_head(self, problems: list[AuditProblem]) -> tuple[int, str] | None:
        """The head file's (seq, hash), checked; problems with it are appended to ``problems``."""
        path = self._head_path
        if path is None:
            return None
        try:
            head = json.loads(path.read_bytes())
        except FileNotFoundError:
            if self._db.conn.execute("SELECT 1 FROM audit_checkpoints LIMIT 1").fetchone():
                message = f"audit head file {path} is missing although the trail has checkpoints"
                problems.append(AuditProblem(None, "checkpoint", message))
            return None
        except (OSError, ValueError) as exc:
            problems.append(AuditProblem(None, "checkpoint", f"cannot read audit head file {path}: {exc}"))
            return None
        seq = head.get("seq") if isinstance(head, dict) else None
        if type(seq) is not int or not all(isinstance(head.get(key), str) for key in _HEAD_KEYS[1:]):
            problems.append(AuditProblem(None, "checkpoint", f"audit head file {path} is malformed"))
            return None
        digest = head["hash"]
        why = self._bad_signature(seq, digest, str(head["key_fingerprint"]), str(head["signature"]))
        if why:
            problems.append(AuditProblem(seq, "checkpoint", f"audit head file {path} {why}"))
        return seq, digest


def _whole(name: str, value: object, minimum: int | None = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise InvalidArgument(f"{name} must be a whole number{bound}, not {value!r}")


def _removed(last: int, seq: int) -> AuditProblem:
    first, final = last + 1, seq - 1
    what = f"entry {first} was removed" if first == final else f"entries {first}-{final} were removed"
    where = f"the trail starts at entry {seq}" if last == 0 else f"the trail jumps from entry {last} to {seq}"
    return AuditProblem(first, "removed", f"{what}: {where}")


def _time_matches(at: object, at_ns: object) -> bool:
    try:
        return isinstance(at_ns, int) and at == iso_from_ns(at_ns)
    except (OverflowError, OSError, ValueError):
        return False


def _trigger_problems(conn: sqlite3.Connection) -> list[AuditProblem]:
    """The append-only triggers must exist and still abort the statement they guard."""
    rows = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'")
    present = {str(name): " ".join(str(sql).split()) for name, sql in rows}
    problems = []
    for name, statement in _TRIGGERS.items():
        sql = present.get(name, "")
        if not re.fullmatch(_TRIGGER_SQL.format(name=name, statement=statement), sql, re.IGNORECASE):
            state = "was altered" if sql else "was dropped"
            message = f"append-only trigger {name} {state}: audit entries can be {statement.lower()}d"
            problems.append(AuditProblem(None, "triggers", message))
    return problems


def _entry_values(
    user: str, action: str, outcome: str, call_ids: Iterable[int], detail: Mapping[str, object] | None,
    client: str,
) -> tuple[str, str, str, str, str, str]:  # fmt: skip
    """Checked, stored forms of an entry's fields: texts cleaned, ids and detail as JSON."""
    if not isinstance(user, str) or not user.strip():
        raise InvalidArgument(f"an audit entry needs a user name, not {user!r}")
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise InvalidArgument(f"invalid audit action {action!r}: use a dotted lower-case name (calls.show)")
    if outcome not in OUTCOMES:
        raise InvalidArgument(f"invalid audit outcome {outcome!r}: use one of {', '.join(OUTCOMES)}")
    if not isinstance(client, str):
        raise InvalidArgument(f"audit client must be text, not {type(client).__name__}")
    ids = list(call_ids)
    if not all(type(item) is int and item >= 0 for item in ids):
        raise InvalidArgument(f"audit call ids must be whole numbers >= 0, not {ids!r}")
    if detail is not None and not isinstance(detail, Mapping):
        raise InvalidArgument(f"audit detail must be a mapping, not {type(detail).__name__}")
    try:  # ASCII: any text survives storage (even lone surrogates from undecodable bytes)
        detail_json = json.dumps(dict(detail or {}), sort_keys=True, ensure_ascii=True, allow_nan=False,
                                 separators=(",", ":"))  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"audit detail must be JSON data (text, numbers, lists, maps): {exc}") from None
    ids_json = json.dumps(sorted(set(ids)), separators=(",", ":"))
    return clean_text(user.strip()), action, outcome, ids_json, detail_json, clean_text(client)


def clean_text(text: str) -> str:
    """One line of storable text: control characters and lone surrogates become escapes."""
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    """An entry from its row; call_ids and detail a tampered row makes unparsable are kept apart."""
    seq, at, at_ns, user, action, outcome, ids, detail, client, prev, digest = row
    listed, parsed = _json(ids, []), _json(detail, {"unparsed": detail})
    call_ids = tuple(item for item in listed if type(item) is int) if isinstance(listed, list) else ()
    details = parsed if isinstance(parsed, dict) else {"detail": parsed}
    return AuditEntry(seq, at, at_ns, user, action, outcome, call_ids, details, client, prev, digest)


def _json(text: Any, fallback: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return fallback


def _write_head(path: Path, head: Mapping[str, object]) -> None:
    """Write ``head`` as JSON to ``path`` atomically: 0600 temp file, fsync, rename, fsync the directory."""
    data = (json.dumps(head, indent=2, sort_keys=True) + "\n").encode()
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StoreError(f"cannot write audit head file {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise StoreError(f"cannot write audit head file {path}: {exc.strerror or exc}") from exc
