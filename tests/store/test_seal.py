"""store.crypto.seal: round trips, the exact error for each kind of tampering, keys and rotation.

Signing (``canonical_json``, ``sign_fields``, ``verify_fields``) is tested with the appliance's
signing key in test_store_keys.py."""

from __future__ import annotations

import array
import hashlib
import io
import os
import shutil
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.store.crypto.keys import KeyDirectory, RecordingPublicKey, fingerprint, load_private_keys
from callrec.store.crypto.seal import (
    DEFAULT_CHUNK_SIZE,
    Sealer,
    check_structure,
    inspect_sealed,
    open_sealed,
    open_sealed_bytes,
)
from callrec.store.errors import InvalidArgument, KeyMissing, StoreError, TamperedError

CS, FRAME, TAG = 64, 5, 16  # a small chunk size keeps many-chunk files small
HEADER, EMBEDDED_HEADER = 64, 64 + 80  # without / with the embedded wrapped key


def make_key() -> tuple[RecordingPublicKey, dict[str, X25519PrivateKey]]:
    private = X25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return RecordingPublicKey(fingerprint(raw), private.public_key(), 0), {fingerprint(raw): private}


KEY, RING = make_key()
OTHER_KEY, OTHER_RING = make_key()
RID = bytes.fromhex("00112233445566778899aabbccddeeff")
RID2 = bytes.fromhex("ffeeddccbbaa99887766554433221100")


def seal(
    data: bytes,
    chunk_size: int = CS,
    *,
    rid: bytes = RID,
    key: RecordingPublicKey = KEY,
    embed: bool = False,
    pieces: list[bytes] | None = None,
) -> tuple[bytes, Sealer]:
    sealer = Sealer(key, rid, chunk_size=chunk_size, embed_wrapped_key=embed)
    sealed = b"".join(sealer.seal(pieces if pieces is not None else [data]))
    return sealed, sealer


def unseal(
    sealed: bytes,
    wrapped: bytes | None,
    *,
    rid: bytes = RID,
    ring: Mapping[str, X25519PrivateKey] = RING,
    sha256: str | None = None,
) -> bytes:
    return open_sealed_bytes(
        sealed, private_keys=ring, wrapped_key=wrapped, recording_id=rid, expected_plaintext_sha256=sha256
    )


def split(sealed: bytes) -> tuple[bytes, list[bytes]]:
    """The header and the frames of a sealed file (trusting its framing)."""
    size = inspect_sealed(io.BytesIO(sealed)).header_bytes
    header, frames, at = sealed[:size], [], size
    while at < len(sealed):
        _kind, length = struct.unpack_from(">BI", sealed, at)
        frames.append(sealed[at : at + FRAME + length])
        at += FRAME + length
    return header, frames


def sealed_size(n: int, chunk_size: int, header: int = HEADER) -> int:
    return header + (n // chunk_size + 1) * (FRAME + TAG) + n


DATA = os.urandom(CS * 5 + 17)  # five whole chunks and a final one of 17 bytes
SEALED, SEALER = seal(DATA)


def tampered(sealed: bytes, wrapped: bytes | None = SEALER.wrapped_key, rid: bytes = RID) -> str:
    """The message of the TamperedError that opening ``sealed`` must raise."""
    with pytest.raises(TamperedError) as caught:
        unseal(sealed, wrapped, rid=rid)
    return str(caught.value)


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, CS - 1, CS, CS + 1, 2 * CS, 3 * CS + 5, 40 * CS])
def test_round_trip(size: int) -> None:
    data = os.urandom(size)
    sealed, sealer = seal(data, pieces=[data[at : at + 33] for at in range(0, size, 33)])
    assert len(sealed) == sealed_size(size, CS)
    assert unseal(sealed, sealer.wrapped_key, sha256=sealer.plaintext_sha256) == data
    assert sealer.plaintext_bytes == size
    assert sealer.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    structure = check_structure(io.BytesIO(sealed))
    assert (structure.chunks, structure.plaintext_bytes_max) == (size // CS + 1, size)
    assert structure.final_present and structure.sealed_bytes == len(sealed)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=1500),
    chunk_size=st.integers(1, 300),
    cuts=st.lists(st.integers(0, 1500), max_size=12),
    embed=st.booleans(),
)
def test_round_trip_any_size_and_input_chunking(
    data: bytes, chunk_size: int, cuts: list[int], embed: bool
) -> None:
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    sealed, sealer = seal(data, chunk_size, embed=embed, pieces=pieces)
    assert len(sealed) == sealed_size(len(data), chunk_size, EMBEDDED_HEADER if embed else HEADER)
    assert unseal(sealed, None if embed else sealer.wrapped_key) == data
    assert sealer.plaintext_sha256 == hashlib.sha256(data).hexdigest()


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=700), chunk_size=st.integers(1, 100), step=st.integers(1, 90))
def test_incremental_api(data: bytes, chunk_size: int, step: int) -> None:
    sealer = Sealer(KEY, RID, chunk_size=chunk_size)
    out = [sealer.header()]
    pending = 0
    for at in range(0, len(data), step):
        piece = data[at : at + step]
        framed = sealer.update(piece)
        pending += len(piece)
        whole, pending = divmod(pending, chunk_size)
        assert len(framed) == whole * (FRAME + chunk_size + TAG)  # only complete chunks come out
        out.append(framed)
    assert sealer.plaintext_sha256 is None
    out.append(sealer.finish())
    assert len(out[-1]) == FRAME + len(data) % chunk_size + TAG
    assert unseal(b"".join(out), sealer.wrapped_key) == data
    assert sealer.plaintext_sha256 == hashlib.sha256(data).hexdigest()


def test_default_chunk_size_with_several_chunks() -> None:
    data = os.urandom(DEFAULT_CHUNK_SIZE * 2 + 12345)
    sealed, sealer = seal(data, DEFAULT_CHUNK_SIZE, pieces=[data[:1000], data[1000:]])
    assert check_structure(io.BytesIO(sealed)).chunks == 3
    assert unseal(sealed, sealer.wrapped_key) == data


def test_any_buffer_is_sealed_as_its_bytes() -> None:
    samples = array.array("h", range(-500, 500))
    sealed, sealer = seal(b"", pieces=[memoryview(samples), bytearray(b"tail")])  # type: ignore[list-item]
    assert unseal(sealed, sealer.wrapped_key) == samples.tobytes() + b"tail"
    assert sealer.plaintext_bytes == 2004


def test_the_plaintext_never_appears_in_the_sealed_file() -> None:
    marker = b"CALLER SAYS: MY ACCOUNT NUMBER IS 1234-5678 "
    data = marker * 200
    for embed in (False, True):
        sealed, sealer = seal(data, 256, embed=embed)
        assert marker[:12] not in sealed
        assert data[:8] not in sealed and data[-8:] not in sealed
        assert unseal(sealed, None if embed else sealer.wrapped_key) == data


def test_each_recording_gets_its_own_data_key() -> None:
    first, a = seal(DATA)
    second, b = seal(DATA)
    assert a.wrapped_key != b.wrapped_key and len(a.wrapped_key) == 80
    assert first[HEADER:] != second[HEADER:]


def test_the_header_says_what_it_holds() -> None:
    header = inspect_sealed(io.BytesIO(SEALED))
    assert (header.version, header.recording_id, header.key_fingerprint) == (1, RID, KEY.fingerprint)
    assert (header.chunk_size, header.wrapped_key, header.header_bytes) == (CS, None, HEADER)
    assert SEALER.key_fingerprint == KEY.fingerprint
    embedded, sealer = seal(b"x", embed=True)
    assert inspect_sealed(io.BytesIO(embedded)).wrapped_key == sealer.wrapped_key


def test_a_stream_with_short_reads_opens() -> None:
    class Trickle(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.inner = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            chunk = self.inner.read(min(len(buffer), 7))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    stream: BinaryIO = Trickle(SEALED)  # type: ignore[assignment]
    plain = open_sealed(stream, private_keys=RING, wrapped_key=SEALER.wrapped_key, recording_id=RID)
    assert b"".join(plain) == DATA
    assert check_structure(Trickle(SEALED)).chunks == 6  # type: ignore[arg-type]


# --- tampering: each case has its own message -----------------------------------------------------


@pytest.mark.parametrize(
    ("index", "at"), [(0, FRAME), (3, FRAME + 10), (5, -1)], ids=["first", "middle", "final"]
)
def test_a_flipped_byte_in_a_chunk(index: int, at: int) -> None:
    header, frames = split(SEALED)
    frame = bytearray(frames[index])
    frame[at] ^= 0x80
    frames[index] = bytes(frame)
    message = tampered(header + b"".join(frames))
    assert message == f"chunk {index} failed authentication (altered, reordered or from another file)"


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (0, "not a sealed callrec recording"),
        (9, "sealed format version 0 is not known to this callrec"),
        (12, "belongs to recording 0011"),
        (30, "recording sealed with key"),
        (45, "recording file header was altered"),
        (HEADER - 1, "recording file header was altered"),
    ],
    ids=["magic", "version", "recording-id", "key-fingerprint", "chunk-size", "header-tag"],
)
def test_a_flipped_header_byte(offset: int, message: str) -> None:
    damaged = bytearray(SEALED)
    damaged[offset] ^= 0x01  # at offset 9: version 1 -> 0
    with pytest.raises(StoreError, match=message):  # TamperedError, or KeyMissing for the key id
        unseal(bytes(damaged), SEALER.wrapped_key)


def test_a_newer_format_version_is_not_called_tampering() -> None:
    newer = bytearray(SEALED)
    newer[9] = 2
    with pytest.raises(StoreError, match="version 2 is not known to this callrec") as caught:
        inspect_sealed(io.BytesIO(bytes(newer)))
    assert not isinstance(caught.value, TamperedError)


def test_a_flipped_byte_in_the_embedded_wrapped_key() -> None:
    sealed, _sealer = seal(DATA, embed=True)
    damaged = bytearray(sealed)
    damaged[60] ^= 0x01
    message = tampered(bytes(damaged), None)
    assert message == "wrapped key does not open (it belongs to another recording or key)"


BLOCK = FRAME + CS + TAG  # one whole chunk's frame


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (7, "ends inside its header"),
        (30, "ends inside its header"),
        (HEADER - 3, "ends inside its header"),
        (HEADER, "ends after its header without any chunk"),
        (HEADER + 2, "ends inside chunk 0"),
        (HEADER + 40, "ends inside chunk 0"),
        (HEADER + 2 * BLOCK, "ends after chunk 1 without its final chunk"),
        (HEADER + 2 * BLOCK + 9, "ends inside chunk 2"),
        (HEADER + 5 * BLOCK, "ends after chunk 4 without its final chunk"),
        (len(SEALED) - 1, "ends inside chunk 5"),
    ],
)
def test_truncated(cut: int, message: str) -> None:
    with pytest.raises(TamperedError) as caught:
        unseal(SEALED[:cut], SEALER.wrapped_key)
    assert str(caught.value) == f"recording file {message} (truncated)"
    if cut >= HEADER:  # the same verdict without any key
        with pytest.raises(TamperedError, match="truncated"):
            check_structure(io.BytesIO(SEALED[:cut]))
    with pytest.raises(TamperedError, match="^recording file is empty$"):
        unseal(b"", SEALER.wrapped_key)


def swap(frames: list[bytes]) -> None:
    frames[1], frames[2] = frames[2], frames[1]


def duplicate(frames: list[bytes]) -> None:
    frames.insert(2, frames[1])


def delete(frames: list[bytes]) -> None:
    del frames[2]


def foreign(frames: list[bytes]) -> None:  # same recording id, same key, another sealing
    frames[1] = split(seal(DATA)[0])[1][1]


def foreign_final(frames: list[bytes]) -> None:
    frames[-1] = split(seal(DATA)[0])[1][-1]


@pytest.mark.parametrize(
    ("change", "bad"), [(swap, 1), (duplicate, 2), (delete, 2), (foreign, 1), (foreign_final, 5)]
)
def test_chunks_rearranged_or_taken_from_another_file(
    change: Callable[[list[bytes]], None], bad: int
) -> None:
    header, frames = split(SEALED)
    change(frames)
    forged = header + b"".join(frames)
    message = tampered(forged)
    assert message == f"chunk {bad} failed authentication (altered, reordered or from another file)"
    check_structure(io.BytesIO(forged))  # well framed: only authentication can see it


def test_a_chunk_marked_final_early() -> None:
    header, frames = split(SEALED)
    # the first chunk's frame relabelled final, everything after it dropped
    forged = header + b"\x01" + frames[0][1:]
    assert "final chunk 0 has an impossible length" in tampered(forged)


def test_a_whole_file_swapped_between_two_recordings() -> None:
    other, other_sealer = seal(b"the other call", rid=RID2)
    # The catalogue row of RID2 now points at RID's file.
    message = tampered(SEALED, other_sealer.wrapped_key, rid=RID2)
    assert message == f"recording file belongs to recording {RID.hex()}, not {RID2.hex()} (file swapped)"
    with pytest.raises(TamperedError, match="file swapped"):  # said at once, before any chunk is asked for
        open_sealed(io.BytesIO(SEALED), private_keys=RING, wrapped_key=SEALER.wrapped_key, recording_id=RID2)
    # The wrapped keys swapped instead: RID's row holds RID2's wrapped key.
    message = tampered(SEALED, other_sealer.wrapped_key, rid=RID)
    assert message == "wrapped key does not open (it belongs to another recording or key)"
    # A forged header claiming RID, on RID2's chunks: the header no longer authenticates.
    forged = bytearray(other)
    forged[10:26] = RID
    assert "header was altered" in tampered(bytes(forged), SEALER.wrapped_key, rid=RID)


def test_data_after_the_final_chunk() -> None:
    for extra in (b"\x00", b"junk" * 100, split(SEALED)[1][-1]):
        assert tampered(SEALED + extra).startswith("data after the final chunk")
        with pytest.raises(TamperedError, match="data after the final chunk"):
            check_structure(io.BytesIO(SEALED + extra))


def test_plaintext_digest_is_checked_against_the_signed_value() -> None:
    assert unseal(SEALED, SEALER.wrapped_key, sha256=hashlib.sha256(DATA).hexdigest().upper()) == DATA
    with pytest.raises(TamperedError) as caught:
        unseal(SEALED, SEALER.wrapped_key, sha256=hashlib.sha256(b"other").hexdigest())
    assert str(caught.value) == "plaintext sha256 differs from the signed value"


def test_plaintext_before_the_damage_is_yielded_so_callers_must_buffer() -> None:
    header, frames = split(SEALED)
    got: list[bytes] = []
    plain = open_sealed(
        io.BytesIO(header + b"".join(frames[:-1])),
        private_keys=RING,
        wrapped_key=SEALER.wrapped_key,
        recording_id=RID,
    )
    with pytest.raises(TamperedError, match="without its final chunk"):
        got.extend(plain)
    assert b"".join(got) == DATA[: 5 * CS]  # what a careless caller would have published


# --- check_structure ------------------------------------------------------------------------------


def test_check_structure_reads_no_key_and_counts_chunks() -> None:
    structure = check_structure(io.BytesIO(SEALED))
    assert structure.header.recording_id == RID
    assert (structure.chunks, structure.plaintext_bytes_max, structure.sealed_bytes) == (
        6,
        len(DATA),
        len(SEALED),
    )


def test_check_structure_on_an_unseekable_stream() -> None:
    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    assert check_structure(Pipe(SEALED)).chunks == 6
    with pytest.raises(TamperedError, match="ends inside chunk 5"):
        check_structure(Pipe(SEALED[:-3]))


def test_check_structure_allows_an_unfinished_spool_when_asked() -> None:
    cut = SEALED[: HEADER + 3 * (FRAME + CS + TAG)]
    with pytest.raises(TamperedError, match="ends after chunk 2 without its final chunk"):
        check_structure(io.BytesIO(cut))
    structure = check_structure(io.BytesIO(cut), allow_unfinished=True)
    assert (structure.final_present, structure.chunks, structure.plaintext_bytes_max) == (False, 3, 3 * CS)
    with pytest.raises(TamperedError, match="ends inside chunk 3"):
        check_structure(io.BytesIO(cut + b"\x00\x00"), allow_unfinished=True)


def test_check_structure_rejects_bad_framing() -> None:
    header, frames = split(SEALED)
    frames[2] = b"\x07" + frames[2][1:]
    with pytest.raises(TamperedError, match="chunk 2 has an unknown kind 7"):
        check_structure(io.BytesIO(header + b"".join(frames)))
    frames[2] = b"\x00" + struct.pack(">I", CS + TAG + 1) + frames[2][5:]
    with pytest.raises(TamperedError, match="chunk 2 has length 81, not 80"):
        check_structure(io.BytesIO(header + b"".join(frames)))


# --- keys -----------------------------------------------------------------------------------------


def test_a_recording_whose_key_is_not_in_the_keyring() -> None:
    with pytest.raises(KeyMissing) as caught:
        unseal(SEALED, SEALER.wrapped_key, ring=OTHER_RING)
    assert str(caught.value) == (
        f"recording sealed with key {KEY.fingerprint}; none of the key files given holds it "
        "(rotated? give the older key file)"
    )
    with pytest.raises(KeyMissing, match="no wrapped key in its file and none was given"):
        unseal(SEALED, None)


def test_the_given_wrapped_key_wins_over_an_embedded_one() -> None:
    sealed, sealer = seal(DATA, embed=True)
    assert unseal(sealed, sealer.wrapped_key) == DATA
    # SEALER's wrapped key is for the same recording and key, but another sealing of it.
    with pytest.raises(TamperedError, match="header was altered .or the wrapped key is from another sealing"):
        unseal(sealed, SEALER.wrapped_key)
    with pytest.raises(TamperedError, match="wrapped key does not open"):
        unseal(sealed, seal(DATA, rid=RID2)[1].wrapped_key)


def test_rotation_old_recordings_open_with_the_old_key_new_with_the_new(tmp_path: Path) -> None:
    keydir = KeyDirectory(tmp_path / "keys")
    key_file = tmp_path / "compliance.key"
    keydir.init(key_file, b"pw", 1, scrypt_n=2**10)
    old, old_sealer = seal(b"before rotation", key=keydir.current_recording_key())
    shutil.copy(key_file, tmp_path / "before-rotation.key")
    keydir.rotate(key_file, b"pw", 2, scrypt_n=2**10)
    new, new_sealer = seal(b"after rotation", key=keydir.current_recording_key(), rid=RID2)
    assert old_sealer.key_fingerprint != new_sealer.key_fingerprint

    both = load_private_keys([key_file], b"pw")
    assert unseal(old, old_sealer.wrapped_key, ring=both) == b"before rotation"
    assert unseal(new, new_sealer.wrapped_key, ring=both, rid=RID2) == b"after rotation"

    only_old = load_private_keys([tmp_path / "before-rotation.key"], b"pw")
    assert unseal(old, old_sealer.wrapped_key, ring=only_old) == b"before rotation"
    with pytest.raises(KeyMissing, match=f"sealed with key {new_sealer.key_fingerprint}.*older key file"):
        unseal(new, new_sealer.wrapped_key, ring=only_old, rid=RID2)

    keydir.rotate(tmp_path / "third.key", b"pw2", 3, scrypt_n=2**10)
    third, third_sealer = seal(b"third", key=keydir.current_recording_key())
    ring = {**load_private_keys([key_file], b"pw"), **load_private_keys([tmp_path / "third.key"], b"pw2")}
    for sealed, sealer, rid, plain in [
        (old, old_sealer, RID, b"before rotation"),
        (new, new_sealer, RID2, b"after rotation"),
        (third, third_sealer, RID, b"third"),
    ]:
        assert unseal(sealed, sealer.wrapped_key, ring=ring, rid=rid) == plain


# --- argument checks ------------------------------------------------------------------------------


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgument, match="16 bytes"):
        Sealer(KEY, b"short")
    with pytest.raises(InvalidArgument, match="chunk size 0"):
        Sealer(KEY, RID, chunk_size=0)
    with pytest.raises(InvalidArgument, match="16 bytes"):
        unseal(SEALED, SEALER.wrapped_key, rid=b"x" * 15)


def test_a_sealer_is_used_once() -> None:
    sealer = Sealer(KEY, RID, chunk_size=CS)
    sealer.finish()
    with pytest.raises(ValueError, match="finished"):
        sealer.update(b"more")
    with pytest.raises(ValueError, match="finished"):
        sealer.finish()
