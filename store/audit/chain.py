"""The audit trail's hash chain: each entry's hash over its fields and the previous hash, from
:data:`GENESIS_HASH`; and the message an Ed25519 checkpoint signs over a sequence number and hash."""

from __future__ import annotations

import hashlib
import json

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS_HASH = "0" * 64
_SIGNED = b"callrec audit checkpoint v1\n"


def key_fingerprint(key: Ed25519PublicKey) -> str:
    """Name of a public key: the first 32 hex digits of sha256 of its raw bytes (as in store.crypto.keys)."""
    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:32]


def entry_hash(
    prev_hash: str, seq: object, at_ns: object, user: object, action: object, outcome: object,
    call_ids: object, detail: object, client: object,
) -> str:  # fmt: skip
    """sha256 (hex) of ``prev_hash``, a newline and the entry as a compact ASCII JSON array of
    (seq, at_ns, user, action, outcome, call_ids JSON text, detail JSON text, client)."""
    fields = [seq, at_ns, user, action, outcome, call_ids, detail, client]
    canonical = json.dumps(fields, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def signed_message(seq: int, digest: str) -> bytes:
    return _SIGNED + f"{seq}\n{digest}".encode()
