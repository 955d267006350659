"""What a call's signature covers: the signed document, by version.

The document is signed as canonical JSON (:func:`store.crypto.seal.canonical_json`) and stored as
that text in the row's ``signed_metadata``; its ``v`` field says which version it is, and a row is
verified by the rules of its own version, so catalogues signed by older releases still verify.

- **v1** (no ``v`` field; rows signed before version 2 existed): :data:`V1_FIELDS` of the ``calls``
  row. Times other than the start, URIs, display names, codecs, the end reason, the events and the
  legs were not covered, nor was the row's id.
- **v2**: ``v`` = 2, the row's ``id``, every column of the ``calls`` row that is shown or exported
  (:data:`V2_COLUMNS`: all but the notes, annotations audited on their own, and the signature
  columns), and sha256 digests of the call's legs and of its events (every column but their own id
  and the call's, in the order they were stored) and of its wrapped data key (with the fingerprint of
  the key it is wrapped to). Signed after the row is stored, from what the database holds, so the
  id is known and every value is as it reads back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from callrec.store.catalogue.migrations import CALL_COLUMNS, EVENT_COLUMNS, LEG_COLUMNS

VERSION = 2
"""The version new rows are signed with."""
V1_FIELDS = (
    "call_id", "started_ns", "caller", "callee", "duration_s", "state", "recording_path",
    "recording_bytes", "recording_sha256", "recording_uuid", "plaintext_sha256", "key_fingerprint",
    "sample_rate", "channels", "recording_seconds", "retention_class", "expires_ns", "direction", "queue",
    "rule", "recording_format", "consent", "consent_at", "recorded_spans", "paused_spans",
)  # fmt: skip
UNSIGNED_COLUMNS = frozenset({"notes", "signed_metadata", "signature", "signing_key"})
V2_COLUMNS = tuple(name for name in CALL_COLUMNS if name not in UNSIGNED_COLUMNS)
DIGESTS = {"legs_sha256": "legs", "events_sha256": "events", "wrapped_key_sha256": "wrapped data key"}
"""The v2 digest fields and what each covers, as named in messages."""


def version_of(signed: Mapping[str, Any]) -> int:
    """The version of a parsed signed document (1 when it has no ``v``)."""
    version = signed.get("v", 1)
    return version if type(version) is int else -1


def v1_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """What a version-1 signature covers of ``row``."""
    return {name: row.get(name) for name in V1_FIELDS}


def document(stored: Mapping[str, Any], wrapped: tuple[str, bytes] | None) -> dict[str, Any]:
    """The version-2 document of a stored call: ``stored`` is the ``calls`` row with its ``id`` and
    its ``legs`` and ``events`` rows (dicts with their ``id``), ``wrapped`` its wrapped data key."""
    out: dict[str, Any] = {"v": VERSION, "id": stored.get("id")}
    out.update((name, stored.get(name)) for name in V2_COLUMNS)
    out["legs_sha256"] = rows_digest(stored.get("legs") or (), LEG_COLUMNS)
    out["events_sha256"] = rows_digest(stored.get("events") or (), EVENT_COLUMNS)
    out["wrapped_key_sha256"] = wrapped_digest(wrapped)
    return out


def expected(
    signed: Mapping[str, Any], row: Mapping[str, Any], wrapped: tuple[str, bytes] | None
) -> dict[str, Any]:
    """What ``signed`` (a parsed document) should say of ``row`` now, by the rules of its version."""
    return v1_fields(row) if version_of(signed) == 1 else document(row, wrapped)


def changed_fields(signed: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The fields in which the signed document and the current one differ, sorted."""
    return sorted(name for name in set(signed) | set(now) if signed.get(name) != now.get(name))


def rows_digest(rows: Iterable[Mapping[str, Any]], columns: tuple[str, ...]) -> str:
    """sha256 (hex) of the rows' ``columns`` as a compact ASCII JSON array of arrays, rows in id order."""
    ordered = sorted(rows, key=lambda row: _id_key(row.get("id")))
    values = [[row.get(name) for name in columns] for row in ordered]
    text = json.dumps(values, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def wrapped_digest(wrapped: tuple[str, bytes] | None) -> str | None:
    """sha256 (hex) of the key fingerprint, a newline and the wrapped key; ``None`` without a key."""
    if wrapped is None:
        return None
    return hashlib.sha256(wrapped[0].encode() + b"\n" + bytes(wrapped[1])).hexdigest()


def _id_key(value: object) -> tuple[int, int]:
    return (0, value) if type(value) is int else (1, 0)
