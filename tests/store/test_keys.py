"""store.crypto.keys: the appliance's key directory, the compliance key file and passphrases."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from callrec.store.crypto.keys import (
    PASSPHRASE_ENV,
    SCRYPT_N,
    KeyDirectory,
    KeyInfo,
    fingerprint,
    load_private_keys,
    read_passphrase,
)
from callrec.store.crypto.seal import canonical_json, sign_fields, verify_fields
from callrec.store.errors import (
    AlreadyExists,
    InvalidArgument,
    KeyMissing,
    NotFound,
    StoreError,
    TamperedError,
    WrongPassphrase,
)

FAST_N = 2**10  # 1 MiB of scrypt per attempt: the default cost is tested once, below
PASS = b"correct horse battery staple"
NOW = 1_795_000_000_000_000_000


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def raw_public(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def encodings(secret: bytes) -> list[bytes]:
    """The ways a 32-byte secret could show up in a file."""
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]


@pytest.fixture
def keydir(tmp_path: Path) -> KeyDirectory:
    return KeyDirectory(tmp_path / "home" / "keys")


@pytest.fixture
def initialised(tmp_path: Path, keydir: KeyDirectory) -> tuple[KeyDirectory, KeyInfo, Path]:
    key_file = tmp_path / "compliance" / "callrec.key"
    key_file.parent.mkdir()
    info = keydir.init(key_file, PASS, NOW, scrypt_n=FAST_N)
    return keydir, info, key_file


def no_temp_files(*directories: Path) -> bool:
    return not [p for d in directories for p in d.iterdir() if p.name.endswith(".tmp")]


# --- fingerprints ---------------------------------------------------------------------------------


def test_fingerprint_is_the_first_128_bits_of_sha256() -> None:
    raw = bytes(range(32))
    assert fingerprint(raw) == hashlib.sha256(raw).hexdigest()[:32]
    assert len(fingerprint(raw)) == 32


def test_fingerprints_are_stable_for_both_key_types() -> None:
    # Pinned values: a fingerprint printed today must name the same key in every later version.
    x25519 = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    ed25519 = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    assert fingerprint(raw_public(x25519)) == "eedd883da0a9451593dc0a38e583fb77"
    assert fingerprint(raw_public(ed25519)) == "56475aa75463474c0285df5dbf2bcab7"


# --- init -----------------------------------------------------------------------------------------


def test_init_makes_both_key_pairs(initialised: tuple[KeyDirectory, KeyInfo, Path]) -> None:
    keydir, info, key_file = initialised
    assert keydir.exists()
    current = keydir.current_recording_key()
    assert current == info.recording
    assert current.current and current.created_ns == NOW
    assert current.fingerprint == fingerprint(
        current.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    assert keydir.recording_keys() == [current]
    assert info.private_key_path == key_file
    assert info.signing_fingerprint == keydir.signing_fingerprint()
    assert keydir.signing_fingerprint() == fingerprint(raw_public(keydir.signing_key()))
    signature = keydir.signing_key().sign(b"metadata")
    keydir.verify_key().verify(signature, b"metadata")
    private = load_private_keys([key_file], PASS)
    assert list(private) == [current.fingerprint]
    assert fingerprint(raw_public(private[current.fingerprint])) == current.fingerprint


def test_modes_are_0700_for_the_directory_and_0600_for_files(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    keydir, _info, key_file = initialised
    assert mode(keydir.path) == 0o700
    files = list(keydir.path.iterdir())
    assert len(files) == 2
    assert all(mode(f) == 0o600 for f in files)
    assert mode(key_file) == 0o600
    assert no_temp_files(keydir.path, key_file.parent)


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        keydir = KeyDirectory(tmp_path / "keys")
        keydir.init(tmp_path / "k.key", PASS, NOW, scrypt_n=FAST_N)
    finally:
        os.umask(old)
    assert mode(keydir.path) == 0o700
    assert {mode(f) for f in keydir.path.iterdir()} == {0o600}
    assert mode(tmp_path / "k.key") == 0o600


def test_the_key_directory_holds_no_recording_private_key(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    keydir, info, key_file = initialised
    secret = raw_private(load_private_keys([key_file], PASS)[info.recording.fingerprint])
    for path in keydir.path.iterdir():
        data = path.read_bytes()
        assert not any(form in data for form in encodings(secret)), path
    # ... and the key file holds it only encrypted.
    data = key_file.read_bytes()
    assert not any(form in data for form in encodings(secret))


def test_the_signing_key_is_an_unencrypted_pem_so_the_appliance_can_sign_unattended(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    keydir, _info, _key_file = initialised
    pem = (keydir.path / "signing-key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)


def test_init_twice_is_refused(initialised: tuple[KeyDirectory, KeyInfo, Path], tmp_path: Path) -> None:
    keydir, info, _key_file = initialised
    with pytest.raises(AlreadyExists, match="keys already exist in .*callrec keys rotate"):
        keydir.init(tmp_path / "other.key", PASS, NOW, scrypt_n=FAST_N)
    assert keydir.current_recording_key() == info.recording
    assert not (tmp_path / "other.key").exists()


def test_init_never_overwrites_an_existing_key_file(
    initialised: tuple[KeyDirectory, KeyInfo, Path], tmp_path: Path
) -> None:
    _keydir, _info, key_file = initialised
    before = key_file.read_bytes()
    other = KeyDirectory(tmp_path / "second-home" / "keys")
    with pytest.raises(AlreadyExists, match=f"key file {key_file} already exists"):
        other.init(key_file, PASS, NOW, scrypt_n=FAST_N)
    assert key_file.read_bytes() == before
    assert not other.exists()


@pytest.mark.parametrize("through_symlink", [False, True])
def test_init_refuses_a_key_file_inside_the_key_directory(
    keydir: KeyDirectory, tmp_path: Path, through_symlink: bool
) -> None:
    keydir.path.mkdir(parents=True)
    target = keydir.path / "callrec.key"
    if through_symlink:
        (tmp_path / "innocent").symlink_to(keydir.path)
        target = tmp_path / "innocent" / "callrec.key"
    with pytest.raises(InvalidArgument, match="may not be inside the key directory"):
        keydir.init(target, PASS, NOW, scrypt_n=FAST_N)
    assert list(keydir.path.iterdir()) == []
    assert not keydir.exists()


def test_init_refuses_an_empty_passphrase(keydir: KeyDirectory, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="empty passphrase"):
        keydir.init(tmp_path / "k.key", b"", NOW, scrypt_n=FAST_N)
    assert not keydir.exists()


def test_init_with_the_default_scrypt_cost(keydir: KeyDirectory, tmp_path: Path) -> None:
    info = keydir.init(tmp_path / "k.key", PASS, NOW)
    kdf = json.loads((tmp_path / "k.key").read_text())["kdf"]
    assert (kdf["name"], kdf["n"], kdf["r"], kdf["p"]) == ("scrypt", SCRYPT_N, 8, 1)
    assert SCRYPT_N == 2**15
    assert list(load_private_keys([tmp_path / "k.key"], PASS)) == [info.recording.fingerprint]


# --- missing keys -----------------------------------------------------------------------------------


def test_an_empty_directory_has_no_keys(keydir: KeyDirectory) -> None:
    assert not keydir.exists()
    message = f"no recording key in {keydir.path}: run `callrec keys init`"
    with pytest.raises(KeyMissing) as caught:
        keydir.current_recording_key()
    assert str(caught.value) == message
    with pytest.raises(KeyMissing, match="no signing key"):
        keydir.signing_key()
    with pytest.raises(KeyMissing, match="callrec keys init"):
        keydir.rotate(keydir.path.parent / "k.key", PASS, NOW, scrypt_n=FAST_N)


def test_a_damaged_key_list_is_reported(initialised: tuple[KeyDirectory, KeyInfo, Path]) -> None:
    keydir, _info, _key_file = initialised
    listing = keydir.path / "recording-keys.json"
    document = json.loads(listing.read_text())
    document["keys"][0]["public_key"] = base64.b64encode(bytes(32)).decode()
    listing.write_text(json.dumps(document))
    with pytest.raises(StoreError, match="is damaged"):
        keydir.current_recording_key()
    listing.write_text("{not json")
    with pytest.raises(StoreError, match="is damaged"):
        keydir.recording_keys()


# --- the key file ---------------------------------------------------------------------------------


def test_wrong_passphrase(initialised: tuple[KeyDirectory, KeyInfo, Path]) -> None:
    _keydir, _info, key_file = initialised
    with pytest.raises(WrongPassphrase) as caught:
        load_private_keys([key_file], b"correct horse battery stapler")
    assert str(caught.value) == f"wrong passphrase for key file {key_file}"


def test_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(KeyMissing, match=f"no key file {tmp_path / 'absent.key'}"):
        load_private_keys([tmp_path / "absent.key"], PASS)


@pytest.mark.parametrize(
    "content",
    [b"", b"RIFF\x00\x00WAVE", b"[1, 2]", b'{"format": "something-else", "version": 1}', b"\xff" * 3000],
    ids=["empty", "wav", "json-list", "other-json", "binary"],
)
def test_a_file_that_is_not_a_key_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not.key"
    path.write_bytes(content)
    with pytest.raises(StoreError, match=f"{path} is not a callrec key file") as caught:
        load_private_keys([path], PASS)
    assert not isinstance(caught.value, WrongPassphrase)


def test_a_newer_key_file_version_is_refused_clearly(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    _keydir, _info, key_file = initialised
    document = json.loads(key_file.read_text())
    document["version"] = 2
    key_file.write_text(json.dumps(document))
    with pytest.raises(StoreError, match="has version 2; this callrec reads 1"):
        load_private_keys([key_file], PASS)


def test_an_absurd_scrypt_cost_is_refused_before_allocating(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    _keydir, _info, key_file = initialised
    document = json.loads(key_file.read_text())
    document["kdf"]["n"] = 2**30
    key_file.write_text(json.dumps(document))
    with pytest.raises(StoreError, match="is damaged: scrypt cost out of range"):
        load_private_keys([key_file], PASS)


@pytest.mark.parametrize("field", ["created_ns", "fingerprint", "ciphertext"])
def test_an_altered_key_file_is_told_apart_from_a_wrong_passphrase(
    initialised: tuple[KeyDirectory, KeyInfo, Path], field: str
) -> None:
    _keydir, _info, key_file = initialised
    document = json.loads(key_file.read_text())
    if field == "ciphertext":
        raw = bytearray(base64.b64decode(document["ciphertext"]))
        raw[3] ^= 1
        document["ciphertext"] = base64.b64encode(raw).decode()
    elif field == "created_ns":
        document["keys"][0]["created_ns"] += 1
    else:
        document["keys"][0]["fingerprint"] = "0" * 32
    key_file.write_text(json.dumps(document))
    with pytest.raises(TamperedError, match=f"key file {key_file} was altered"):
        load_private_keys([key_file], PASS)


def test_load_refuses_an_empty_passphrase(initialised: tuple[KeyDirectory, KeyInfo, Path]) -> None:
    _keydir, _info, key_file = initialised
    with pytest.raises(InvalidArgument, match="empty passphrase"):
        load_private_keys([key_file], b"")


# --- rotation -------------------------------------------------------------------------------------


def test_rotate_adds_to_the_same_key_file(initialised: tuple[KeyDirectory, KeyInfo, Path]) -> None:
    keydir, first, key_file = initialised
    second = keydir.rotate(key_file, PASS, NOW + 1, scrypt_n=FAST_N)
    keys = keydir.recording_keys()
    assert [k.fingerprint for k in keys] == [first.recording.fingerprint, second.recording.fingerprint]
    assert [k.current for k in keys] == [False, True]
    assert [k.created_ns for k in keys] == [NOW, NOW + 1]
    assert keydir.current_recording_key() == second.recording
    assert second.signing_fingerprint == first.signing_fingerprint  # signing key is not rotated
    assert set(load_private_keys([key_file], PASS)) == {k.fingerprint for k in keys}
    assert mode(key_file) == 0o600
    assert no_temp_files(keydir.path, key_file.parent)


def test_rotate_to_a_new_key_file(initialised: tuple[KeyDirectory, KeyInfo, Path], tmp_path: Path) -> None:
    keydir, first, key_file = initialised
    new_file = tmp_path / "compliance" / "2027.key"
    second = keydir.rotate(new_file, b"another passphrase", NOW + 1, scrypt_n=FAST_N)
    assert list(load_private_keys([new_file], b"another passphrase")) == [second.recording.fingerprint]
    assert list(load_private_keys([key_file], PASS)) == [first.recording.fingerprint]
    assert len(keydir.recording_keys()) == 2


def test_rotate_with_the_wrong_passphrase_changes_nothing(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    keydir, first, key_file = initialised
    listing = (keydir.path / "recording-keys.json").read_bytes()
    key_bytes = key_file.read_bytes()
    with pytest.raises(WrongPassphrase):
        keydir.rotate(key_file, b"not it", NOW + 1, scrypt_n=FAST_N)
    assert (keydir.path / "recording-keys.json").read_bytes() == listing
    assert key_file.read_bytes() == key_bytes
    assert keydir.current_recording_key() == first.recording


def test_rotate_refuses_a_key_file_inside_the_key_directory(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    keydir, _first, _key_file = initialised
    with pytest.raises(InvalidArgument, match="may not be inside the key directory"):
        keydir.rotate(keydir.path / "new.key", PASS, NOW + 1, scrypt_n=FAST_N)
    assert len(keydir.recording_keys()) == 1


def test_the_key_directory_holds_no_private_key_after_rotations(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    keydir, _first, key_file = initialised
    for step in range(3):
        keydir.rotate(key_file, PASS, NOW + step + 1, scrypt_n=FAST_N)
    secrets = [raw_private(k) for k in load_private_keys([key_file], PASS).values()]
    assert len(secrets) == 4
    blob = b"".join(p.read_bytes() for p in keydir.path.iterdir())
    assert not any(form in blob for secret in secrets for form in encodings(secret))


def test_keyring_from_several_files_merges_by_fingerprint(
    initialised: tuple[KeyDirectory, KeyInfo, Path], tmp_path: Path
) -> None:
    keydir, first, key_file = initialised
    new_file = tmp_path / "new.key"
    second = keydir.rotate(new_file, PASS, NOW + 1, scrypt_n=FAST_N)
    ring = load_private_keys([key_file, new_file], PASS)
    assert set(ring) == {first.recording.fingerprint, second.recording.fingerprint}


# --- passphrases ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"secret\n", b"secret"),
        (b"secret", b"secret"),
        (b"secret\r\n", b"secret"),
        (b"  spaced secret \nsecond line\n", b"  spaced secret "),
        ("mot de passe é\n".encode(), "mot de passe é".encode()),
    ],
)
def test_read_passphrase_from_a_file(tmp_path: Path, content: bytes, expected: bytes) -> None:
    path = tmp_path / "pass"
    path.write_bytes(content)
    assert read_passphrase(path, {PASSPHRASE_ENV: "ignored"}) == expected


def test_read_passphrase_from_the_environment() -> None:
    assert read_passphrase(None, {PASSPHRASE_ENV: "from env"}) == b"from env"
    assert read_passphrase(None, {}) is None


@pytest.mark.parametrize("content", [b"", b"\n", b"\nsecret\n"])
def test_an_empty_passphrase_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "pass"
    path.write_bytes(content)
    with pytest.raises(InvalidArgument, match="empty first line"):
        read_passphrase(path, {})


def test_an_empty_environment_passphrase_is_refused() -> None:
    with pytest.raises(InvalidArgument, match=f"{PASSPHRASE_ENV} is set but empty"):
        read_passphrase(None, {PASSPHRASE_ENV: ""})


def test_a_missing_passphrase_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no passphrase file"):
        read_passphrase(tmp_path / "absent", {PASSPHRASE_ENV: "x"})


# --- signing recording metadata with the appliance key ----------------------------------------------

FIELDS: dict[str, object] = {
    "recording_id": "00112233445566778899aabbccddeeff",
    "plaintext_sha256": hashlib.sha256(b"audio").hexdigest(),
    "bytes": 1_920_044,
    "duration_s": 60.0,
    "caller_display": "Chloé Muller",
    "consent": None,
}


def test_canonical_json_is_sorted_compact_and_utf8() -> None:
    assert canonical_json({"b": 1, "a": "é", "c": None, "d": 0.5}) == '{"a":"é","b":1,"c":null,"d":0.5}'
    assert canonical_json(dict(reversed(list(FIELDS.items())))) == canonical_json(FIELDS)


@pytest.mark.parametrize("value", [True, [1], {"a": 1}, b"x", float("nan"), float("inf")])
def test_canonical_json_refuses_ambiguous_values(value: object) -> None:
    with pytest.raises(InvalidArgument, match="signed field 'x'"):
        canonical_json({"x": value})


def test_fields_signed_by_the_appliance_verify_with_its_verify_key(
    initialised: tuple[KeyDirectory, KeyInfo, Path],
) -> None:
    keydir, _info, _key_file = initialised
    text, signature = sign_fields(keydir.signing_key(), FIELDS)
    assert text == canonical_json(FIELDS)
    verify_fields(keydir.verify_key(), text, signature)
    altered = text.replace("1920044", "1920045")
    with pytest.raises(TamperedError, match="^signature does not match the signed fields"):
        verify_fields(keydir.verify_key(), altered, signature)
    with pytest.raises(TamperedError, match="^signature does not match .*another appliance key"):
        verify_fields(Ed25519PrivateKey.generate().public_key(), text, signature)
    with pytest.raises(TamperedError, match="^signature does not match: it is not base64"):
        verify_fields(keydir.verify_key(), text, "not base64!")
