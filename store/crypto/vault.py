"""Recordings at rest, sealed: write, sign, verify and open, over the keys and the sealed format.

The appliance seals every recording to the current recording public key (it cannot open what
it wrote) and signs a canonical text of the call's metadata with its signing key; both the text
and the signature go in the catalogue row. The data key, wrapped to the recording key, goes in
the catalogue's ``recording_keys`` table, not in the file: deleting it crypto-shreds the
recording wherever copies of the file are.

Checks, in the order :meth:`Vault.verify` and :meth:`Vault.open` make them, each failing with
its own message: the signature holds and the row is what was signed (by the version of the signed
document, :mod:`store.crypto.document`: a changed catalogue row, legs or events, an id swapped
with another row's, another recording's data key), the file is the one of this recording (a
swapped file), its framing is complete (a truncated file), its bytes hash to the signed value (a
flipped byte, swapped chunks); opening also authenticates every chunk and the audio's hash.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from callrec.store.crypto.document import DIGESTS, VERSION, changed_fields, document, expected, version_of
from callrec.store.crypto.keys import KeyDirectory, RecordingPublicKey
from callrec.store.crypto.seal import (
    Sealer,
    check_structure,
    inspect_sealed,
    open_sealed,
    scratch_size,
    sign_fields,
    verify_fields,
)
from callrec.store.errors import KeyMissing, NotFound, TamperedError
from callrec.store.objects.base import Chunk, ObjectStore, StoredFile

SEALED_SUFFIX = ".sealed"
RECORDING_CHUNK = 1 << 20
"""Plain bytes per sealed chunk. 1 MiB (33 s of 8 kHz stereo): measured in an import of 100 60-s
calls, sealing took 1.3 ms a recording with 1 MiB chunks and 1.8 ms with 64 KiB ones (the Python
work per chunk); opening one chunk to serve a seek costs under a millisecond either way."""


@dataclass(frozen=True, slots=True)
class SealedRecording:
    """What sealing one recording produced: the stored file and the catalogue's fields."""

    stored: StoredFile
    recording_uuid: str
    key_fingerprint: str
    wrapped_key: bytes
    plaintext_sha256: str
    plaintext_bytes: int

    def row_fields(self) -> dict[str, Any]:
        """The ``calls`` columns this recording fills."""
        return {
            "recording_path": self.stored.relative_path,
            "recording_bytes": self.stored.bytes,
            "recording_sha256": self.stored.sha256,
            "recording_uuid": self.recording_uuid,
            "key_fingerprint": self.key_fingerprint,
            "plaintext_sha256": self.plaintext_sha256,
        }


class Vault:
    """Sealing (appliance side: public key and signing key only) and opening (private keys)."""

    def __init__(self, keys: KeyDirectory, recordings: ObjectStore) -> None:
        self.keys = keys
        self.recordings = recordings
        # read once per Vault (an import, a daemon's configuration): parsing the key files for
        # every recording cost a third of the sealing time; a rotation takes effect on the next Vault
        self._recording_key: RecordingPublicKey | None = None
        self._signing: tuple[Ed25519PrivateKey, str] | None = None
        # the buffers sealing reuses (2 MiB each, kept): fresh ones for every recording cost a page
        # fault per 4 KiB, measured 0.3 ms of the 3.7 ms that sealing a minute of call took
        self._scratch: list[bytearray] = []

    def _current_key(self) -> RecordingPublicKey:
        if self._recording_key is None:
            self._recording_key = self.keys.current_recording_key()
        return self._recording_key

    def _signing_key(self) -> tuple[Ed25519PrivateKey, str]:
        if self._signing is None:
            self._signing = (self.keys.signing_key(), self.keys.signing_fingerprint())
        return self._signing

    def check_ready(self) -> None:
        """Raise :class:`KeyMissing` unless a recording key and the signing key exist, and the
        recording store's start-up check error (no bucket, no Object Lock, unreachable) if it fails."""
        self._current_key()
        self._signing_key()
        self.recordings.check()

    # -- appliance side ---------------------------------------------------------------------------

    def seal(
        self,
        relative_name: str,
        plain_chunks: Iterable[Chunk],
        *,
        sync: bool = True,
        replace: bool = False,
        retain_until_ns: int | None = None,
    ) -> SealedRecording:
        """Seal ``plain_chunks`` into ``relative_name`` (atomic; plain bytes never reach the disk).
        ``replace``: a file of that name is an orphan (written before a crash, never catalogued).
        ``retain_until_ns``: the call's retention expiry (the store's Object Lock, where it has one)."""
        recording_id = secrets.token_bytes(16)
        sealer = Sealer(self._current_key(), recording_id, chunk_size=RECORDING_CHUNK)
        try:  # one scratch buffer per sealing at a time; list.pop and append are atomic
            scratch = self._scratch.pop()
        except IndexError:
            scratch = bytearray(scratch_size(RECORDING_CHUNK))
        try:  # the store writes each piece out before asking for the next, as a scratch buffer needs
            pieces = sealer.seal(plain_chunks, scratch)
            stored = self.recordings.write(
                relative_name, pieces, sync=sync, replace=replace, retain_until_ns=retain_until_ns
            )
        finally:
            self._scratch.append(scratch)
        return SealedRecording(
            stored=stored,
            recording_uuid=recording_id.hex(),
            key_fingerprint=sealer.key_fingerprint,
            wrapped_key=sealer.wrapped_key,
            plaintext_sha256=str(sealer.plaintext_sha256),
            plaintext_bytes=sealer.plaintext_bytes,
        )

    def sign(self, stored: Mapping[str, Any], wrapped: tuple[str, bytes] | None) -> dict[str, str]:
        """``signed_metadata``, ``signature`` and ``signing_key`` of a stored call (its row with ``id``,
        ``legs`` and ``events``, as :meth:`store.catalogue.db.Catalogue.get_call` gives it, and its
        wrapped data key): the current version of :mod:`store.crypto.document`."""
        key, fingerprint = self._signing_key()
        text, signature = sign_fields(key, document(stored, wrapped))
        return {"signed_metadata": text, "signature": signature, "signing_key": fingerprint}

    # -- checks without the private key -----------------------------------------------------------

    def verify(self, row: Mapping[str, Any], wrapped: tuple[str, bytes] | None) -> None:
        """Check one call's row, signature and sealed file without decrypting anything.

        Raises :class:`TamperedError` (with what is wrong) or :class:`NotFound`."""
        self.verify_row(row, wrapped)
        path = _recording_path(row)
        if wrapped is None:
            raise TamperedError(f"call {row.get('id')}: the wrapped data key is missing (purged or deleted)")
        if wrapped[0] != row.get("key_fingerprint"):
            raise TamperedError(
                f"call {row.get('id')}: the wrapped data key belongs to another recording key"
            )
        with self.recordings.open(path) as stream:
            header = inspect_sealed(stream)
            self._check_header(row, header.recording_id, header.key_fingerprint)
            stream.seek(0)
            check_structure(stream)
        size, digest = self.recordings.checksum(path)
        if digest != row.get("recording_sha256") or size != row.get("recording_bytes"):
            raise TamperedError(
                f"call {row.get('id')}: recording file {path} differs from its signed hash "
                "(altered bytes or reordered chunks)"
            )

    def verify_row(self, row: Mapping[str, Any], wrapped: tuple[str, bytes] | None) -> None:
        """The row (with its ``legs`` and ``events``) and its wrapped data key are what was signed,
        by the rules of the signed document's version, and the signature is the appliance's."""
        call = row.get("id")
        text, signature = row.get("signed_metadata"), row.get("signature")
        if not text or not signature:
            raise TamperedError(f"call {call} has no signature (recorded before sealing?)")
        if row.get("signing_key") != self.keys.signing_fingerprint():
            raise TamperedError(f"call {call} was signed by an unknown key {row.get('signing_key')}")
        verify_fields(self.keys.verify_key(), str(text), str(signature))
        signed = json.loads(str(text))
        version = version_of(signed)
        if version not in (1, VERSION):
            raise TamperedError(f"call {call}: signed document version {signed.get('v')!r} is unknown")
        if version > 1 and signed.get("id") != call:
            raise TamperedError(
                f"call {call}: the row was signed as call {signed.get('id')} (ids swapped or renumbered)"
            )
        changed = changed_fields(signed, expected(signed, row, wrapped))
        if "wrapped_key_sha256" in changed:  # a missing key is for the callers to name (purged?)
            if wrapped is not None:
                raise TamperedError(
                    f"call {call}: the wrapped data key is not the one signed with it (keys swapped?)"
                )
            changed.remove("wrapped_key_sha256")
        if changed:
            names = [DIGESTS.get(name, name) for name in changed]
            raise TamperedError(f"call {call}: catalogue row changed after signing ({', '.join(names)})")

    def _check_header(self, row: Mapping[str, Any], recording_id: bytes, key_fingerprint: str) -> None:
        if recording_id.hex() != row.get("recording_uuid"):
            raise TamperedError(
                f"call {row.get('id')}: recording file belongs to recording {recording_id.hex()}, "
                f"not {row.get('recording_uuid')} (file swapped)"
            )
        if key_fingerprint != row.get("key_fingerprint"):
            raise TamperedError(f"call {row.get('id')}: recording file is sealed to another key")

    # -- opening (needs the private key) -----------------------------------------------------------

    def open(
        self,
        row: Mapping[str, Any],
        wrapped: tuple[str, bytes] | None,
        private_keys: Mapping[str, X25519PrivateKey],
    ) -> Iterator[bytes]:
        """The recording's plain bytes, chunk by chunk, after the row and signature checks.

        Every chunk is authenticated as it is read and the end is checked last: consumers must
        write to a temp file (or memory) and publish only when the iterator completes."""
        self.verify_row(row, wrapped)
        path = _recording_path(row)
        if wrapped is None:
            raise KeyMissing(
                f"call {row.get('id')}: the recording's data key is gone (purged): it cannot be opened"
            )
        if wrapped[0] not in private_keys:
            raise KeyMissing(
                f"call {row.get('id')} is sealed with key {wrapped[0]}; none of the key files given holds it "
                "(rotated? give the older key file too)"
            )
        with self.recordings.open(path) as stream:
            header = inspect_sealed(stream)
            self._check_header(row, header.recording_id, header.key_fingerprint)
            stream.seek(0)
            yield from open_sealed(
                stream,
                private_keys=private_keys,
                wrapped_key=wrapped[1],
                recording_id=bytes.fromhex(str(row["recording_uuid"])),
                expected_plaintext_sha256=row.get("plaintext_sha256"),
            )

    def open_bytes(
        self,
        row: Mapping[str, Any],
        wrapped: tuple[str, bytes] | None,
        private_keys: Mapping[str, X25519PrivateKey],
    ) -> bytes:
        """The whole recording in memory (fully verified before it is returned)."""
        return b"".join(self.open(row, wrapped, private_keys))


def _recording_path(row: Mapping[str, Any]) -> str:
    path = row.get("recording_path")
    if not path:
        raise NotFound(f"call {row.get('id')} has no recording")
    return str(path)
