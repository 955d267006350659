"""Appliance keys (``<home>/keys/``) and the compliance key file that opens recordings.

The security model keeps them apart on purpose:
* The **key directory** on the appliance holds every recording *public* key ever used, which one
  is current, and the Ed25519 signing key pair, whose private key is unencrypted (0600) because
  the appliance signs unattended; it proves origin and opens nothing. A stolen appliance can seal
  and sign, never open a recording.
* The **compliance key file** holds the recording *private* keys (X25519) under a passphrase.
  ``init`` writes it (``rotate`` extends it) outside the key directory; it should leave the box.

Key file format (version 1), a UTF-8 JSON document::

    {"format": "callrec-private-keys", "version": 1,
     "kdf": {"name": "scrypt", "salt": <b64, 16 bytes>, "n": 32768, "r": 8, "p": 1},
     "aead": "AES-256-GCM", "check": <b64, 16 bytes>, "nonce": <b64, 12 bytes>,
     "keys": [{"fingerprint": <32 hex>, "created_ns": <int>}, ...],
     "ciphertext": <b64>}

scrypt derives 48 bytes: an AES-256-GCM key, then 16 bytes stored as ``check``. The ciphertext
is the raw 32-byte private keys in the order of ``keys``; its associated data is the canonical
JSON of every other field, so cost, salt and key list cannot change unnoticed. ``check`` tells a
wrong passphrase (``WrongPassphrase``) from an altered file (``TamperedError``) and gives an
attacker nothing the GCM tag does not: each guess still costs one scrypt.

Why scrypt, not Argon2id: both are memory-hard, but cryptography's Argon2id needs OpenSSL 3.2+,
and recordings outlive appliances: a key file must open on whatever workstation compliance has in
ten years; scrypt is in every build. Cost is in the file; ``kdf.name`` leaves room for Argon2id.

Files are written atomically (temp file, fsync, rename, fsync of the directory), mode 0600; the
key directory is 0700.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from callrec.store.errors import (
    AlreadyExists,
    InvalidArgument,
    KeyMissing,
    NotFound,
    StoreError,
    TamperedError,
    WrongPassphrase,
)
from callrec.store.files import fsync_dir, os_errors, write_atomic

FILE_MODE = 0o600
DIR_MODE = 0o700
FINGERPRINT_HEX = 32
"""Fingerprints are the first 128 bits of sha256, in hex: enough to name a key, short to print."""
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
"""Default scrypt cost: 32 MiB and about 0.1 s per attempt on the appliance's core."""

PASSPHRASE_ENV = "CALLREC_PASSPHRASE"
RECORDING_KEYS_NAME = "recording-keys.json"
SIGNING_KEY_NAME = "signing-key.pem"

_KEY_FILE_FORMAT = "callrec-private-keys"
_LISTING_FORMAT = "callrec-recording-keys"
_VERSION = 1
_MAX_KEY_FILE_BYTES = 1 << 20
_MAX_SCRYPT_MEMORY = 1 << 31  # refuse files that would make us allocate more than 2 GiB


@dataclass(frozen=True, slots=True)
class RecordingPublicKey:
    """One recording public key of the appliance; ``current`` marks the one new recordings use."""

    fingerprint: str
    public_key: X25519PublicKey
    created_ns: int
    current: bool = True


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What ``init``/``rotate`` made: the new current key, the signing key's fingerprint, the key file."""

    recording: RecordingPublicKey
    signing_fingerprint: str
    private_key_path: Path


def fingerprint(raw_public: bytes) -> str:
    """Name of a raw 32-byte X25519 or Ed25519 public key: sha256, first 32 hex digits."""
    return hashlib.sha256(raw_public).hexdigest()[:FINGERPRINT_HEX]


def _raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


class KeyDirectory:
    """The appliance's keys under ``path`` (``<home>/keys/``); see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self._listing_path = self.path / RECORDING_KEYS_NAME
        self._signing_path = self.path / SIGNING_KEY_NAME

    def __repr__(self) -> str:
        return f"KeyDirectory({str(self.path)!r})"

    def exists(self) -> bool:
        """Whether keys have been made here (a recording key list or a signing key)."""
        return self._listing_path.exists() or self._signing_path.exists()

    def init(
        self, private_key_path: Path, passphrase: bytes, now_ns: int, *, scrypt_n: int = SCRYPT_N
    ) -> KeyInfo:
        """Make the first recording key pair and the signing key pair.

        The recording private key goes only to ``private_key_path`` (a new file, encrypted under
        ``passphrase``), written before anything in the key directory: a crash in between leaves
        a key file that is not used yet, never a public key whose private half was lost.
        Raises :class:`AlreadyExists` if keys exist here or the key file exists."""
        _require_passphrase(passphrase)
        if self.exists():
            raise AlreadyExists(f"keys already exist in {self.path}: use `callrec keys rotate` for a new key")
        private_key_path = self._outside(private_key_path)
        if private_key_path.exists():
            raise AlreadyExists(f"key file {private_key_path} already exists: choose another path")
        with os_errors("cannot create key directory", self.path):
            self.path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            os.chmod(self.path, DIR_MODE)
        fsync_dir(self.path.parent)
        recording = X25519PrivateKey.generate()
        signing = Ed25519PrivateKey.generate()
        entry = _new_entry(recording, now_ns)
        _write_key_file(private_key_path, [entry], passphrase, scrypt_n, replace=False)
        pem = signing.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_atomic(self._signing_path, _bytes_writer(pem), replace=False)
        public = RecordingPublicKey(entry[0], recording.public_key(), now_ns, True)
        self._write_listing([public], replace=False)
        return KeyInfo(public, fingerprint(_raw_public(signing.public_key())), private_key_path)

    def rotate(
        self, private_key_path: Path, passphrase: bytes, now_ns: int, *, scrypt_n: int = SCRYPT_N
    ) -> KeyInfo:
        """Make a new current recording key pair; earlier public keys stay listed.

        If ``private_key_path`` exists it must open with ``passphrase``; the new private key is
        added to it (rewritten atomically, the old keys kept). Otherwise a new key file is made."""
        _require_passphrase(passphrase)
        keys = self.recording_keys()
        private_key_path = self._outside(private_key_path)
        recording = X25519PrivateKey.generate()
        entry = _new_entry(recording, now_ns)
        if private_key_path.exists():
            entries = _read_key_file(private_key_path, passphrase)
            _write_key_file(private_key_path, [*entries, entry], passphrase, scrypt_n, replace=True)
        else:
            _write_key_file(private_key_path, [entry], passphrase, scrypt_n, replace=False)
        public = RecordingPublicKey(entry[0], recording.public_key(), now_ns, True)
        older = [RecordingPublicKey(k.fingerprint, k.public_key, k.created_ns, False) for k in keys]
        self._write_listing([*older, public], replace=True)
        return KeyInfo(public, self.signing_fingerprint(), private_key_path)

    def current_recording_key(self) -> RecordingPublicKey:
        """The key new recordings are sealed to."""
        return next(k for k in self.recording_keys() if k.current)

    def recording_keys(self) -> list[RecordingPublicKey]:
        """Every recording public key ever used here, oldest first, ``current`` set on one."""
        path = self._listing_path
        data = _read_key(path, f"no recording key in {self.path}: run `callrec keys init`")
        try:
            document = json.loads(data)
            if document.get("format") != _LISTING_FORMAT or document.get("version") != _VERSION:
                raise StoreError(f"{path} is not a callrec recording key list of version {_VERSION}")
            current, keys = document["current"], []
            for item in document["keys"]:
                raw, fp, created = _b64(item["public_key"], 32), item["fingerprint"], item["created_ns"]
                if fingerprint(raw) != fp or not isinstance(created, int):
                    raise ValueError
                keys.append(
                    RecordingPublicKey(fp, X25519PublicKey.from_public_bytes(raw), created, fp == current)
                )
        except (KeyError, TypeError, ValueError, AttributeError):
            raise StoreError(f"{path} is damaged: not a list of keys matching their fingerprints") from None
        if sum(k.current for k in keys) != 1:
            raise StoreError(f"{path} is damaged: its current key {current!r} is not listed")
        return keys

    def signing_key(self) -> Ed25519PrivateKey:
        """The appliance's Ed25519 key that signs recording metadata."""
        path = self._signing_path
        pem = _read_key(path, f"no signing key in {self.path}: run `callrec keys init`")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise StoreError(f"{path} is damaged: not an unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise StoreError(f"{path} is not an Ed25519 key")
        return key

    def verify_key(self) -> Ed25519PublicKey:
        """The public half of :meth:`signing_key`, which checks signatures."""
        return self.signing_key().public_key()

    def signing_fingerprint(self) -> str:
        """Fingerprint of :meth:`verify_key`."""
        return fingerprint(_raw_public(self.verify_key()))

    def _outside(self, private_key_path: Path) -> Path:
        """The key file's absolute path; refused if it lies in the key directory (or is it)."""
        path = Path(private_key_path).expanduser().absolute()
        real = Path(os.path.realpath(path.parent)) / path.name
        if real.is_relative_to(os.path.realpath(self.path)):
            raise InvalidArgument(
                f"the private key file {path} may not be inside the key directory {self.path}: "
                "the appliance must not hold it"
            )
        return path

    def _write_listing(self, keys: list[RecordingPublicKey], *, replace: bool) -> None:
        listed = [
            dict(
                fingerprint=k.fingerprint,
                public_key=_b64text(_raw_public(k.public_key)),
                created_ns=k.created_ns,
            )
            for k in keys
        ]
        current = next(k.fingerprint for k in keys if k.current)
        document = {"format": _LISTING_FORMAT, "version": _VERSION, "current": current, "keys": listed}
        write_atomic(self._listing_path, _bytes_writer(_json_file(document)), replace=replace)


# --- the compliance key file -------------------------------------------------------------------

_Entry = tuple[str, int, X25519PrivateKey]  # fingerprint, created_ns, key


def _new_entry(key: X25519PrivateKey, now_ns: int) -> _Entry:
    return fingerprint(_raw_public(key.public_key())), int(now_ns), key


def load_private_keys(paths: Iterable[Path], passphrase: bytes) -> dict[str, X25519PrivateKey]:
    """Every recording private key in the given key files, by fingerprint.

    Raises :class:`KeyMissing` for a missing file, :class:`StoreError` for a file that is not a
    callrec key file, :class:`WrongPassphrase` when a file does not open with ``passphrase``
    and :class:`TamperedError` when it opens but its contents were altered."""
    _require_passphrase(passphrase)
    keys: dict[str, X25519PrivateKey] = {}
    for path in paths:
        for fp, _created, key in _read_key_file(Path(path), passphrase):
            keys[fp] = key
    return keys


def _read_key_file(path: Path, passphrase: bytes) -> list[_Entry]:
    document = _parse_key_file(path)
    listed = _listed(document)
    derived = _scrypt(document["kdf"], passphrase)
    if not secrets.compare_digest(derived[32:], _b64(document["check"], 16)):
        raise WrongPassphrase(f"wrong passphrase for key file {path}")
    try:
        nonce = _b64(document["nonce"], 12)
        raw = AESGCM(derived[:32]).decrypt(nonce, _b64(document["ciphertext"], None), _aad(document))
        if len(raw) != 32 * len(listed):
            raise InvalidTag
    except (InvalidTag, ValueError):
        raise TamperedError(
            f"key file {path} was altered: the passphrase is right but its contents do not authenticate"
        ) from None
    entries = []
    for i, (fp, created) in enumerate(listed):
        key = X25519PrivateKey.from_private_bytes(raw[32 * i : 32 * i + 32])
        if fingerprint(_raw_public(key.public_key())) != fp:
            raise TamperedError(f"key file {path} lists fingerprint {fp} for another key")
        entries.append((fp, created, key))
    return entries


def _parse_key_file(path: Path) -> dict[str, Any]:
    """The key file's JSON, its fields checked for type and size (not yet authenticated)."""
    data = _read_key(path, f"no key file {path}")
    try:
        document = json.loads(data) if len(data) <= _MAX_KEY_FILE_BYTES else None
    except ValueError:
        document = None
    if not isinstance(document, dict) or document.get("format") != _KEY_FILE_FORMAT:
        raise StoreError(f"{path} is not a callrec key file")
    if document.get("version") != _VERSION:
        raise StoreError(f"key file {path} has version {document.get('version')!r}; this callrec reads 1")
    try:
        kdf = document["kdf"]
        n, r, p = kdf["n"], kdf["r"], kdf["p"]
        if kdf["name"] != "scrypt" or document["aead"] != "AES-256-GCM":
            raise ValueError("unknown algorithm")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
            raise ValueError("scrypt cost is not an integer")
        if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or 128 * r * n > _MAX_SCRYPT_MEMORY:
            raise ValueError("scrypt cost out of range")
        _b64(kdf["salt"], None)
        for name, size in (("check", 16), ("nonce", 12), ("ciphertext", None)):
            _b64(document[name], size)
        _listed(document)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"key file {path} is damaged: {exc}") from None
    return document


def _listed(document: Mapping[str, Any]) -> list[tuple[str, int]]:
    out = []
    for item in document["keys"]:
        fp, created = item["fingerprint"], item["created_ns"]
        if not (isinstance(fp, str) and len(fp) == FINGERPRINT_HEX and isinstance(created, int)):
            raise ValueError("bad key entry")
        out.append((fp, created))
    if not out:
        raise ValueError("it lists no key")
    return out


def _write_key_file(
    path: Path, entries: list[_Entry], passphrase: bytes, scrypt_n: int, *, replace: bool
) -> None:
    kdf = dict(name="scrypt", salt=_b64text(secrets.token_bytes(16)), n=scrypt_n, r=SCRYPT_R, p=SCRYPT_P)
    derived = _scrypt(kdf, passphrase)
    document: dict[str, Any] = {
        "format": _KEY_FILE_FORMAT,
        "version": _VERSION,
        "kdf": kdf,
        "aead": "AES-256-GCM",
        "check": _b64text(derived[32:]),
        "nonce": _b64text(secrets.token_bytes(12)),
        "keys": [{"fingerprint": fp, "created_ns": created} for fp, created, _key in entries],
    }
    plain = b"".join(_raw_private(key) for _fp, _created, key in entries)
    ciphertext = AESGCM(derived[:32]).encrypt(base64.b64decode(document["nonce"]), plain, _aad(document))
    document["ciphertext"] = _b64text(ciphertext)
    write_atomic(path, _bytes_writer(_json_file(document)), replace=replace)


def _scrypt(kdf: Mapping[str, Any], passphrase: bytes) -> bytes:
    salt = _b64(kdf["salt"], None)
    return Scrypt(salt=salt, length=48, n=kdf["n"], r=kdf["r"], p=kdf["p"]).derive(passphrase)


def _aad(document: Mapping[str, Any]) -> bytes:
    """Associated data: every field but the ciphertext, as canonical JSON."""
    header = {k: v for k, v in document.items() if k != "ciphertext"}
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _b64(text: object, size: int | None) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("bad base64") from None
    if size is not None and len(raw) != size:
        raise ValueError(f"expected {size} bytes, found {len(raw)}")
    return raw


def _b64text(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _json_file(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


# --- passphrases --------------------------------------------------------------------------------


def read_passphrase(passphrase_file: Path | None, env: Mapping[str, str]) -> bytes | None:
    """The passphrase from ``passphrase_file`` (its first line, without the line end) or else
    from ``$CALLREC_PASSPHRASE``; ``None`` when neither is given, so the CLI can prompt.

    An empty passphrase is refused: it would encrypt the private keys under a guessable key."""
    if passphrase_file is not None:
        path = Path(passphrase_file)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no passphrase file {path}") from None
        except OSError as exc:
            raise StoreError(f"cannot read passphrase file {path}: {exc.strerror or exc}") from None
        line = data.split(b"\n", 1)[0].removesuffix(b"\r")
        if not line:
            raise InvalidArgument(f"passphrase file {path} has an empty first line: put the passphrase there")
        return line
    value = env.get(PASSPHRASE_ENV)
    if value is None:
        return None
    if not value:
        raise InvalidArgument(
            f"{PASSPHRASE_ENV} is set but empty: set the passphrase or unset it to be asked"
        )
    return value.encode()


def _require_passphrase(passphrase: bytes) -> None:
    if not isinstance(passphrase, bytes | bytearray):
        raise TypeError("the passphrase must be bytes")
    if not passphrase:
        raise InvalidArgument("empty passphrase: the private keys need a passphrase to protect them")


# --- files --------------------------------------------------------------------------------------


def _read_key(path: Path, missing: str) -> bytes:
    """A key-related file's bytes (at most 1 MiB + 1); :class:`KeyMissing` with ``missing``."""
    try:
        with path.open("rb") as handle:
            return handle.read(_MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeyMissing(missing) from None
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None


def _bytes_writer(data: bytes) -> Callable[[BinaryIO], object]:
    return lambda handle: handle.write(data)
