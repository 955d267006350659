"""Sealed recordings: chunked AES-256-GCM under a per-recording data key wrapped with HPKE.

Every recording gets a fresh random 256-bit data key. The audio is encrypted with it in chunks,
and the data key is wrapped to the current recording public key with HPKE (RFC 9180, base mode,
DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM; ``info`` binds the format version and the
recording id). By default the wrapped key is *not* in the file: the caller keeps it in the
catalogue, so purging the row destroys the only way to the data key (crypto-shredding), even for
copies of the file in backups. ``embed_wrapped_key=True`` puts it in the header instead, for
self-contained spool files.

File layout (version 1; integers big-endian)::

    offset  size  field
         0     8  magic b"\\x89CRSEAL\\n" (high bit and newline catch 7-bit and text-mode copies)
         8     2  format version = 1
        10    16  recording id (random, chosen by the caller, also in the catalogue)
        26    16  key fingerprint (the 128-bit fingerprint of the recording public key, raw)
        42     4  chunk size C: plaintext bytes in every chunk but the final one
        46     2  embedded wrapped key length W (0: kept by the catalogue)
        48     W  embedded wrapped key (HPKE enc || ciphertext, 80 bytes)
      48+W    16  header tag: GCM tag of an empty message, nonce FFFFFFFF||0^8, AAD = bytes 0..48+W
    then frames, each: 1 byte kind (0 chunk, 1 final chunk), 4 bytes length L, L bytes of
    AES-256-GCM ciphertext and tag. A chunk carries exactly C plaintext bytes (L = C + 16); the
    final chunk carries 0 to C - 1 (it may be empty) and is the last thing in the file.

Chunk ``i`` (counted from 0) is encrypted with nonce ``00000000 || u64(i)`` and associated data
``sha256(header bytes 0..48+W) || u64(i) || u8(final)``. The header hash binds every chunk to this
recording id, key and chunk size; the index rules out reordering, duplication and deletion; the
final flag rules out truncation at a chunk boundary. The final flag is also in the clear framing,
so :func:`check_structure` can check a file's shape without any key. Nonces derived from the
index are safe because a data key encrypts exactly one stream, once: a :class:`Sealer` draws its
key at construction and never restarts its index (a recorder that crashes starts a new Sealer, so
a new key). A random nonce per chunk would cost 12 bytes per chunk and buy nothing here. The header
tag authenticates the header before any chunk is read, so a changed header gets its own message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callrec.store.crypto.keys import RecordingPublicKey, fingerprint
from callrec.store.errors import InvalidArgument, KeyMissing, StoreError, TamperedError
from callrec.store.files import read_exact, skip_bytes

Chunk = bytes | bytearray | memoryview

MAGIC = b"\x89CRSEAL\n"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 1 << 26
RECORDING_ID_BYTES = 16
TAG_BYTES = 16

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

_FIXED = struct.Struct(">8sH16s16sIH")  # magic, version, recording id, fingerprint, chunk size, W
_FRAME = struct.Struct(">BI")  # kind, ciphertext length
_NONCE = struct.Struct(">IQ")
_AAD_TAIL = struct.Struct(">QB")
_HEADER_NONCE = _NONCE.pack(0xFFFFFFFF, 0)
_CHUNK, _FINAL = 0, 1


@dataclass(frozen=True, slots=True)
class SealedHeader:
    """A sealed file's header as read, not yet authenticated (that needs the data key)."""

    version: int
    recording_id: bytes
    key_fingerprint: str
    chunk_size: int
    wrapped_key: bytes | None
    header_bytes: int
    """Length of the header including its tag: where the first frame starts."""


@dataclass(frozen=True, slots=True)
class SealedStructure:
    """A sealed file's shape: ``chunks`` frames counting the final one, ``plaintext_bytes_max``
    (exact if the file is authentic, which is not checked), ``sealed_bytes`` read in all."""

    header: SealedHeader
    chunks: int
    plaintext_bytes_max: int
    final_present: bool
    sealed_bytes: int


def _info(recording_id: bytes) -> bytes:
    """HPKE ``info``: the wrapped key opens only for this format version and recording id."""
    return b"callrec-seal\x00" + VERSION.to_bytes(2, "big") + recording_id


def _check_id(recording_id: bytes) -> bytes:
    if not isinstance(recording_id, bytes | bytearray) or len(recording_id) != RECORDING_ID_BYTES:
        raise InvalidArgument(f"a recording id is {RECORDING_ID_BYTES} bytes")
    return bytes(recording_id)


class Sealer:
    """Encrypts one recording as it is produced; see the module docstring for the format.

    Use :meth:`seal` over an iterable of byte pieces of any sizes, or the incremental trio for a
    spool: write :meth:`header` once, then whatever :meth:`update` returns, then :meth:`finish`.
    ``wrapped_key`` must be stored (the catalogue) unless it is embedded; without it the recording
    can never be opened. After :meth:`finish` (or :meth:`seal` running out) ``plaintext_sha256``
    is the hex digest of everything sealed and ``plaintext_bytes`` its length."""

    def __init__(
        self,
        public_key: RecordingPublicKey,
        recording_id: bytes,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        embed_wrapped_key: bool = False,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise InvalidArgument(f"chunk size {chunk_size} is not between 1 and {MAX_CHUNK_SIZE}")
        self.recording_id = _check_id(recording_id)
        raw_public = public_key.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_fingerprint = fingerprint(raw_public)  # from the key itself, not a label next to it
        self.chunk_size = chunk_size
        data_key = AESGCM.generate_key(256)
        self.wrapped_key: bytes = SUITE.encrypt(
            data_key, public_key.public_key, info=_info(self.recording_id)
        )
        self._aead: AESGCM | None = AESGCM(data_key)
        embedded = self.wrapped_key if embed_wrapped_key else b""
        fixed = _FIXED.pack(
            MAGIC, VERSION, self.recording_id, bytes.fromhex(self.key_fingerprint), chunk_size, len(embedded)
        )
        authenticated = fixed + embedded
        self._header = authenticated + self._aead.encrypt(_HEADER_NONCE, b"", authenticated)
        self._header_hash = hashlib.sha256(authenticated).digest()
        self._pending: bytearray | memoryview = bytearray()  # the chunk being gathered: _filled bytes
        self._filled = 0
        self._out: memoryview | None = None  # where frames are built (seal with a scratch buffer)
        self._index = 0
        self._digest = hashlib.sha256()
        self.plaintext_bytes = 0
        self.plaintext_sha256: str | None = None

    def header(self) -> bytes:
        """The file's first bytes (the same on every call)."""
        return self._header

    def update(self, data: Chunk) -> bytes:
        """Take more plaintext; return the frames of the chunks it completes (maybe none)."""
        return b"".join(self._absorb(data))

    def finish(self) -> bytes:
        """Seal what is left as the final chunk and return its frame; the Sealer is then done."""
        return b"".join(self._final())

    def seal(self, plain_chunks: Iterable[Chunk], scratch: bytearray | None = None) -> Iterator[Chunk]:
        """Yield the sealed file in pieces (header, then frame heads and ciphertexts) for
        ``plain_chunks`` re-cut to the chunk size; concatenated they are the file. With ``scratch``
        (:func:`scratch_size` bytes, not shared) chunks are gathered and frames built there, not in
        fresh memory (its page faults took longer than encrypting into it): each piece is then
        valid only until the next is asked for."""
        if scratch is not None:
            if len(scratch) < scratch_size(self.chunk_size):
                raise InvalidArgument(f"a scratch buffer needs {scratch_size(self.chunk_size)} bytes")
            view = memoryview(scratch)
            self._pending, self._out = view[: self.chunk_size], view[self.chunk_size :]
        yield self._header
        for data in plain_chunks:
            yield from self._absorb(data)
        yield from self._final()

    def _absorb(self, data: Chunk) -> Iterator[Chunk]:
        """Pieces of the frames ``data`` completes. Whole chunks are encrypted straight from the
        caller's buffer; only a tail shorter than a chunk is copied, into ``_pending``."""
        if self._aead is None:
            raise ValueError("this Sealer is finished")
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._digest.update(view)
        self.plaintext_bytes += view.nbytes
        size = self.chunk_size
        if self._filled:
            view = self._keep(view, size - self._filled)
            if self._filled < size:
                return
            yield from self._frame_pending(_CHUNK)
        while len(view) >= size:
            yield from self._frame(view[:size], _CHUNK)
            view = view[size:]
        self._keep(view, len(view))

    def _keep(self, view: memoryview, most: int) -> memoryview:
        """Copy up to ``most`` bytes of ``view`` to the pending chunk (a bytearray grows to a chunk
        once, then is overwritten); return the rest of ``view``."""
        take = min(most, len(view))
        self._pending[self._filled : self._filled + take] = view[:take]
        self._filled += take
        return view[take:]

    def _frame_pending(self, kind: int) -> Iterator[Chunk]:
        yield from self._frame(memoryview(self._pending)[: self._filled], kind)  # the view dies with it
        self._filled = 0

    def _final(self) -> Iterator[Chunk]:
        if self._aead is None:
            raise ValueError("this Sealer is finished")
        yield from self._frame_pending(_FINAL)
        self._pending, self._out = bytearray(), None
        self._aead = None  # one stream per data key: nothing more can be sealed with it
        self.plaintext_sha256 = self._digest.hexdigest()

    def _frame(self, plain: Chunk, kind: int) -> Iterator[Chunk]:
        assert self._aead is not None
        aad = self._header_hash + _AAD_TAIL.pack(self._index, kind)
        nonce = _NONCE.pack(0, self._index)
        self._index += 1
        if self._out is None:
            ciphertext = self._aead.encrypt(nonce, plain, aad)
            yield _FRAME.pack(kind, len(ciphertext))
            yield ciphertext
            return
        end = _FRAME.size + len(plain) + TAG_BYTES
        self._aead.encrypt_into(nonce, plain, aad, self._out[_FRAME.size : end])
        _FRAME.pack_into(self._out, 0, kind, end - _FRAME.size)
        yield self._out[:end]


def scratch_size(chunk_size: int) -> int:
    """Bytes of a :meth:`Sealer.seal` scratch buffer: a chunk of plaintext and a frame."""
    return 2 * chunk_size + _FRAME.size + TAG_BYTES


# --- reading ------------------------------------------------------------------------------------


def inspect_sealed(stream: BinaryIO) -> SealedHeader:
    """Read and parse the header at the stream's position (no key needed, nothing authenticated).

    Raises :class:`TamperedError` if the bytes are not a sealed recording's header, and
    :class:`StoreError` for a format version this code does not know."""
    return _read_header(stream)[0]


def _read_header(stream: BinaryIO) -> tuple[SealedHeader, bytes, bytes]:
    """The parsed header, the authenticated header bytes and the header tag."""
    fixed = read_exact(stream, _FIXED.size)
    if not fixed:
        raise TamperedError("recording file is empty")
    if fixed[: len(MAGIC)] != MAGIC[: len(fixed)]:
        raise TamperedError("not a sealed callrec recording (its first bytes are not the seal magic)")
    if len(fixed) < _FIXED.size:
        raise TamperedError("recording file ends inside its header (truncated)")
    _magic, version, recording_id, fp, chunk_size, wrapped_len = _FIXED.unpack(fixed)
    if version != VERSION:
        raise StoreError(  # not TamperedError: a newer callrec may have written it
            f"sealed format version {version} is not known to this callrec (it reads {VERSION})"
        )
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise TamperedError(f"recording file header gives an impossible chunk size {chunk_size}")
    rest = read_exact(stream, wrapped_len + TAG_BYTES)
    if len(rest) < wrapped_len + TAG_BYTES:
        raise TamperedError("recording file ends inside its header (truncated)")
    wrapped = rest[:wrapped_len] or None
    header = SealedHeader(version, recording_id, fp.hex(), chunk_size, wrapped, len(fixed) + len(rest))
    return header, fixed + rest[:wrapped_len], rest[wrapped_len:]


def open_sealed(
    stream: BinaryIO,
    *,
    private_keys: Mapping[str, X25519PrivateKey],
    wrapped_key: bytes | None,
    recording_id: bytes,
    expected_plaintext_sha256: str | None = None,
) -> Iterator[bytes]:
    """Decrypt a sealed recording read from ``stream``, yielding the plaintext chunk by chunk.

    The header, the recording id, the key and the wrapped key are checked before this returns;
    each chunk is authenticated before it is yielded; the end (final chunk, nothing after it,
    ``expected_plaintext_sha256`` when given) is checked only after the last chunk. **So a
    consumer must not publish what it got until the iterator is exhausted without error**:
    write to a temp file and rename it afterwards, or use :func:`open_sealed_bytes`.

    ``wrapped_key`` is the one kept by the catalogue; ``None`` uses the key embedded in the file.
    Raises :class:`TamperedError` with a message naming what is wrong (swapped file, altered or
    reordered chunk, truncation, trailing data, a wrapped key of another recording, a digest that
    differs) and :class:`KeyMissing` when no given key file holds the recording's key."""
    recording_id = _check_id(recording_id)
    header, authenticated, tag = _read_header(stream)
    if header.recording_id != recording_id:
        raise TamperedError(
            f"recording file belongs to recording {header.recording_id.hex()}, "
            f"not {recording_id.hex()} (file swapped)"
        )
    wrapped = wrapped_key if wrapped_key is not None else header.wrapped_key
    if wrapped is None:
        raise KeyMissing(
            f"recording {recording_id.hex()} has no wrapped key in its file and none was given "
            "(a purged recording cannot be opened)"
        )
    private_key = private_keys.get(header.key_fingerprint)
    if private_key is None:
        raise KeyMissing(
            f"recording sealed with key {header.key_fingerprint}; none of the key files given holds it "
            "(rotated? give the older key file)"
        )
    try:
        data_key = SUITE.decrypt(bytes(wrapped), private_key, info=_info(recording_id))
        if len(data_key) != 32:
            raise InvalidTag
        aead = AESGCM(data_key)
    except (InvalidTag, ValueError):
        raise TamperedError("wrapped key does not open (it belongs to another recording or key)") from None
    try:
        aead.decrypt(_HEADER_NONCE, tag, authenticated)
    except InvalidTag:
        raise TamperedError(
            "recording file header was altered (or the wrapped key is from another sealing of this recording)"
        ) from None
    header_hash = hashlib.sha256(authenticated).digest()
    return _plaintext(stream, aead, header, header_hash, expected_plaintext_sha256)


def _plaintext(
    stream: BinaryIO, aead: AESGCM, header: SealedHeader, header_hash: bytes, expected: str | None
) -> Iterator[bytes]:
    digest = hashlib.sha256()
    index = 0
    while True:
        frame = _next_frame(stream, index, header.chunk_size)
        if frame is None:
            raise _truncated_after(index)
        kind, length = frame
        body = read_exact(stream, length)
        if len(body) < length:
            raise TamperedError(f"recording file ends inside chunk {index} (truncated)")
        aad = header_hash + _AAD_TAIL.pack(index, kind)
        try:
            plain = aead.decrypt(_NONCE.pack(0, index), body, aad)
        except InvalidTag:
            raise TamperedError(
                f"chunk {index} failed authentication (altered, reordered or from another file)"
            ) from None
        digest.update(plain)
        if plain:
            yield plain
        if kind == _FINAL:
            break
        index += 1
    if stream.read(1):
        raise TamperedError(f"data after the final chunk (chunk {index})")
    if expected is not None and digest.hexdigest() != expected.strip().lower():
        raise TamperedError("plaintext sha256 differs from the signed value")


def _truncated_after(index: int) -> TamperedError:
    """The error for a file that ends cleanly where frame ``index`` should start."""
    if index == 0:
        return TamperedError("recording file ends after its header without any chunk (truncated)")
    return TamperedError(f"recording file ends after chunk {index - 1} without its final chunk (truncated)")


def _next_frame(stream: BinaryIO, index: int, chunk_size: int) -> tuple[int, int] | None:
    """Read and check frame ``index``'s kind and length; ``None`` if the stream ends before it."""
    head = read_exact(stream, _FRAME.size)
    if not head:
        return None
    if len(head) < _FRAME.size:
        raise TamperedError(f"recording file ends inside chunk {index} (truncated)")
    kind, length = _FRAME.unpack(head)
    if kind == _CHUNK:
        if length != chunk_size + TAG_BYTES:
            raise TamperedError(
                f"chunk {index} has length {length}, not {chunk_size + TAG_BYTES} (bad framing)"
            )
    elif kind == _FINAL:
        if not TAG_BYTES <= length < chunk_size + TAG_BYTES:
            raise TamperedError(f"final chunk {index} has an impossible length {length} (bad framing)")
    else:
        raise TamperedError(f"chunk {index} has an unknown kind {kind} (bad framing)")
    return kind, length


def open_sealed_bytes(
    sealed: bytes | bytearray | memoryview | BinaryIO,
    *,
    private_keys: Mapping[str, X25519PrivateKey],
    wrapped_key: bytes | None,
    recording_id: bytes,
    expected_plaintext_sha256: str | None = None,
) -> bytes:
    """:func:`open_sealed` for a small recording held in memory: returns the whole plaintext
    only once everything, the end included, has been verified."""
    stream = io.BytesIO(sealed) if isinstance(sealed, bytes | bytearray | memoryview) else sealed
    return b"".join(
        open_sealed(
            stream,
            private_keys=private_keys,
            wrapped_key=wrapped_key,
            recording_id=recording_id,
            expected_plaintext_sha256=expected_plaintext_sha256,
        )
    )


def check_structure(stream: BinaryIO, *, allow_unfinished: bool = False) -> SealedStructure:
    """Walk a sealed file's framing without decrypting it (no key needed).

    Raises :class:`TamperedError` on a bad header, bad framing, truncation, a missing final chunk
    or data after it. With ``allow_unfinished`` a file that ends cleanly after a whole chunk (a
    spool whose recorder stopped) is reported with ``final_present=False`` instead."""
    header = _read_header(stream)[0]
    size = header.header_bytes
    chunks = plain = 0
    while True:
        frame = _next_frame(stream, chunks, header.chunk_size)
        if frame is None:
            if allow_unfinished and chunks:
                return SealedStructure(header, chunks, plain, False, size)
            raise _truncated_after(chunks)
        kind, length = frame
        if skip_bytes(stream, length) < length:
            raise TamperedError(f"recording file ends inside chunk {chunks} (truncated)")
        chunks += 1
        plain += length - TAG_BYTES
        size += _FRAME.size + length
        if kind == _FINAL:
            break
    if stream.read(1):
        raise TamperedError(f"data after the final chunk (chunk {chunks - 1})")
    return SealedStructure(header, chunks, plain, True, size)


# --- signatures ---------------------------------------------------------------------------------


def canonical_json(fields: Mapping[str, object]) -> str:
    """The one text a set of fields is signed as: sorted keys, no whitespace, UTF-8 as is.

    Values are limited to str, int, finite float and None, whose JSON text is unambiguous (no
    bools, which would compare equal to 0/1 in Python, and no nesting)."""
    for key, value in fields.items():
        if not isinstance(key, str):
            raise InvalidArgument(f"signed field names are text, not {key!r}")
        if isinstance(value, bool) or not isinstance(value, str | int | float | None):
            raise InvalidArgument(
                f"signed field {key!r} has a {type(value).__name__}: use str, int, float or None"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgument(f"signed field {key!r} is {value}: only finite numbers can be signed")
    return json.dumps(dict(fields), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sign_fields(signing_key: Ed25519PrivateKey, fields: Mapping[str, object]) -> tuple[str, str]:
    """Sign ``fields``: returns their canonical text and the base64 Ed25519 signature of it.
    Store the text itself, not the fields: the text is what the signature is about."""
    text = canonical_json(fields)
    return text, base64.b64encode(signing_key.sign(text.encode())).decode()


def verify_fields(verify_key: Ed25519PublicKey, canonical_text: str, signature_b64: str) -> None:
    """Raise :class:`TamperedError` unless ``signature_b64`` signs ``canonical_text``."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        raise TamperedError("signature does not match: it is not base64") from None
    try:
        verify_key.verify(signature, canonical_text.encode())
    except InvalidSignature:
        raise TamperedError(
            "signature does not match the signed fields (altered, or signed by another appliance key)"
        ) from None
