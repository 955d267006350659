"""Sealing with a reused scratch buffer writes the very bytes the allocating path writes.

The data key is pinned (it is the only randomness in a file without an embedded wrapped key), so
two sealings of the same plaintext must be byte-identical whatever the path, the piece sizes and
the chunk size; the WAV writer's zero-copy views must join to the bytes of the old copies.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.decode.formats.wav import wav_chunks, wav_header
from callrec.store.crypto import seal as seal_module
from callrec.store.crypto.seal import Sealer, open_sealed_bytes, scratch_size
from callrec.store.errors import InvalidArgument
from tests.store.test_seal import KEY, RID, RING

DATA_KEY = bytes(range(32))


@pytest.fixture(autouse=True)
def pinned_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seal_module.AESGCM, "generate_key", staticmethod(lambda bit_length: DATA_KEY))


def cut(data: bytes, sizes: list[int]) -> list[memoryview]:
    pieces, at = [], 0
    for size in sizes:
        pieces.append(memoryview(data)[at : at + size])
        at += size
    pieces.append(memoryview(data)[at:])
    return pieces


@settings(max_examples=80, deadline=None)
@given(
    data=st.binary(max_size=5000),
    sizes=st.lists(st.integers(0, 700), max_size=12),
    chunk=st.sampled_from([1, 16, 64, 1000, 4096]),
)
def test_scratch_path_writes_the_same_file(data: bytes, sizes: list[int], chunk: int) -> None:
    plain_sealer = Sealer(KEY, RID, chunk_size=chunk)
    allocating = b"".join(plain_sealer.seal(cut(data, sizes)))
    scratch_sealer = Sealer(KEY, RID, chunk_size=chunk)
    scratch = bytearray(scratch_size(chunk) + 3)
    reused = b"".join(bytes(piece) for piece in scratch_sealer.seal(cut(data, sizes), scratch))
    assert reused == allocating
    assert (
        scratch_sealer.plaintext_sha256 == plain_sealer.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    )
    assert scratch_sealer.plaintext_bytes == len(data)
    incremental = Sealer(KEY, RID, chunk_size=chunk)
    pieces = (
        [incremental.header()] + [incremental.update(p) for p in cut(data, sizes)] + [incremental.finish()]
    )
    assert b"".join(pieces) == allocating
    opened = open_sealed_bytes(
        reused, private_keys=RING, wrapped_key=scratch_sealer.wrapped_key, recording_id=RID
    )
    assert opened == data


def test_a_small_scratch_buffer_is_refused() -> None:
    sealer = Sealer(KEY, RID, chunk_size=64)
    with pytest.raises(InvalidArgument):
        list(sealer.seal([b"x"], bytearray(scratch_size(64) - 1)))


def test_data_key_is_pinned_only_here() -> None:
    assert AESGCM.generate_key(256) == DATA_KEY  # the fixture works (and is undone after the test)


@pytest.mark.parametrize("channels", [1, 2])
def test_wav_views_join_to_the_copies(channels: int) -> None:
    samples = np.random.default_rng(1).integers(-32768, 32768, (1001, channels)).astype(np.int16)
    chunks = list(wav_chunks(samples, 8000, chunk_frames=300))
    assert [len(c) for c in chunks] == [44] + [300 * 2 * channels] * 3 + [101 * 2 * channels]
    assert b"".join(chunks) == wav_header(1001, channels, 8000) + samples.astype("<i2").tobytes()
    strided = np.random.default_rng(2).integers(-100, 100, (500, 4)).astype(np.int16)[:, ::2]
    assert b"".join(wav_chunks(strided, 8000, 64)) == wav_header(500, 2, 8000) + strided.tobytes()
