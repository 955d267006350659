"""Spilling the media of calls in progress out of memory: the capture side's interface, no crypto.

A live capture keeps every call's RTP until the call ends. To bound the memory per call, the older
part of each leg's packets is handed to a :class:`SpillSink`
(``recorder.saving.sealed_spill.SealedSpill`` writes
sealed chunks to disk) and only a :class:`SpillRef` per chunk stays in memory; when the call ends the
chunks are read back in order (:meth:`capture.model.media.LegSpool.packets`) and the sink is told to
:meth:`~SpillSink.discard` them. The spill is an optimisation: a sink that cannot write raises
:class:`OSError` and the chunk simply stays in memory.

A chunk crosses the boundary as bytes (:func:`encode_chunk` / :func:`decode_chunk`): a fixed header,
then the columns, each integer column stored in the narrowest of uint8/16/32, int8/16/32 or int64 that
holds its values (RTP fields are 8 to 32 bits wide: a G.711 packet's columns take 20 bytes, not 57).
The round trip is exact: every column comes back as the int64 / bool / uint8 array it was.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from callrec.capture.model.media import RtpPackets
from callrec.capture.model.spilled import SpillError, SpillRef
from callrec.capture.streams.medialog import LegBlock

MAGIC, VERSION, VERSION_ROWS = b"CRSC", 1, 2
_HEAD = struct.Struct("<4sBxxxQQ8s")  # magic, version, packets, payload bytes, one dtype code per int column
HEAD_BYTES = _HEAD.size
_HEAD_ROWS = struct.Struct("<4sBxxxQQ")  # magic, version 2, packets, payload bytes
# version 2: one fixed row per packet (payloads follow, in order), so that a whole media log in leg order
# is encoded at once and each leg's record is a slice of it
# (capture.tracking.tracker.CallTracker.spill_pending)
_ROW = np.dtype(
    [
        ("ts_ns", "<i8"),
        ("rtp_ts", "<u4"),
        ("ssrc", "<u4"),
        ("length", "<u4"),
        ("seq", "<u2"),
        ("payload_type", "u1"),
        ("marker", "u1"),
    ]
)
_DTYPES: tuple[np.dtype[np.integer], ...] = (
    np.dtype("<u1"),
    np.dtype("<i1"),
    np.dtype("<u2"),
    np.dtype("<i2"),
    np.dtype("<u4"),
    np.dtype("<i4"),
    np.dtype("<i8"),
)
_LIMITS = tuple((int(np.iinfo(d).min), int(np.iinfo(d).max)) for d in _DTYPES)
_INT_COLUMNS = ("ts_ns", "seq", "rtp_ts", "ssrc", "payload_type", "payload_offsets", "payload_lengths")


def _narrowest(columns: npt.NDArray[np.int64]) -> list[int]:
    """The narrowest dtype code of each row of ``columns`` (one min and one max over them all)."""
    if columns.shape[1] == 0:
        return [0] * columns.shape[0]
    codes = []
    for lo, hi in zip(columns.min(axis=1).tolist(), columns.max(axis=1).tolist(), strict=True):
        codes.append(next(code for code, (low, high) in enumerate(_LIMITS) if low <= lo and hi <= high))
    return codes


def encode_chunk(chunk: RtpPackets) -> bytearray:
    """One chunk of RTP columns as bytes (see the module docstring); :func:`decode_chunk` reverses it."""
    n = len(chunk)
    columns = [np.asarray(getattr(chunk, name), dtype=np.int64) for name in _INT_COLUMNS]
    if any(c.shape != (n,) for c in columns) or chunk.marker.shape != (n,):
        raise ValueError("chunk columns of different lengths")
    codes = _narrowest(np.stack(columns))
    payload_bytes = int(chunk.payload.shape[0])
    widths = sum(_DTYPES[code].itemsize for code in codes)
    out = bytearray(HEAD_BYTES + n * (widths + 1) + payload_bytes)  # one buffer, filled in place
    _HEAD.pack_into(out, 0, MAGIC, VERSION, n, payload_bytes, bytes(codes + [0]))
    pos = HEAD_BYTES
    for column, code in zip(columns, codes, strict=True):
        np.frombuffer(out, dtype=_DTYPES[code], count=n, offset=pos)[:] = column
        pos += n * _DTYPES[code].itemsize
    np.frombuffer(out, dtype=np.bool_, count=n, offset=pos)[:] = chunk.marker
    np.frombuffer(out, dtype=np.uint8, count=payload_bytes, offset=pos + n)[:] = chunk.payload
    return out


def decode_chunk(data: bytes | bytearray | memoryview) -> RtpPackets:
    """The chunk :func:`encode_chunk` wrote; :class:`SpillError` for anything else."""
    view = memoryview(data)
    if len(view) < HEAD_BYTES:
        raise SpillError(f"spilled chunk of {len(view)} bytes: shorter than its header")
    if view[:4] == MAGIC and view[4] == VERSION_ROWS:
        return _decode_rows(view)
    magic, version, n, payload_bytes, codes = _HEAD.unpack_from(view)
    if magic != MAGIC or version != VERSION:
        raise SpillError(f"not a spilled chunk (magic {magic!r}, version {version})")
    if any(code >= len(_DTYPES) for code in codes[: len(_INT_COLUMNS)]):
        raise SpillError("spilled chunk with an unknown column type")
    widths = [_DTYPES[code].itemsize for code in codes[: len(_INT_COLUMNS)]]
    expected = HEAD_BYTES + n * (sum(widths) + 1) + payload_bytes
    if len(view) != expected:
        raise SpillError(f"spilled chunk of {len(view)} bytes, its header announces {expected}")
    pos = HEAD_BYTES
    columns = []
    for code, width in zip(codes, widths, strict=False):
        raw = np.frombuffer(view, dtype=_DTYPES[code], count=n, offset=pos)
        columns.append(raw.astype(np.int64))  # a copy: the chunk does not pin ``data``
        pos += n * width
    marker = np.frombuffer(view, dtype=np.uint8, count=n, offset=pos).astype(np.bool_)
    pos += n
    payload = np.frombuffer(view, dtype=np.uint8, count=payload_bytes, offset=pos).copy()
    ts_ns, seq, rtp_ts, ssrc, payload_type, offsets, lengths = columns
    if n and (
        int(offsets.min()) < 0 or int(lengths.min()) < 0 or int((offsets + lengths).max()) > payload_bytes
    ):
        raise SpillError("spilled chunk with a payload range outside its payload")
    return RtpPackets(ts_ns, seq, rtp_ts, ssrc, payload_type, marker, payload, offsets, lengths)


def block_records(block: LegBlock) -> Callable[[int], bytes] | None:
    """The version 2 record of each leg of ``block`` (``records(i)`` for leg ``i``), the rows of all
    legs encoded in one pass; None if a value does not fit its field (not RTP read off the wire)."""
    c = block.columns
    n = int(c.shape[1])
    fits = (
        (c[1] >= 0).all() and (c[1] <= 0xFFFF).all()  # seq
        and (c[2] >= 0).all() and (c[2] <= 0xFFFFFFFF).all()  # rtp_ts
        and (c[3] >= 0).all() and (c[3] <= 0xFFFFFFFF).all()  # ssrc
        and (c[4] >= 0).all() and (c[4] <= 0xFF).all()  # payload type
        and (c[6] >= 0).all() and (c[6] <= 0xFFFFFFFF).all()  # length
    )  # fmt: skip
    if n and not fits:
        return None
    rows = np.empty(n, dtype=_ROW)
    for name, row in (
        ("ts_ns", 0),
        ("seq", 1),
        ("rtp_ts", 2),
        ("ssrc", 3),
        ("payload_type", 4),
        ("length", 6),
    ):
        rows[name] = c[row]
    rows["marker"] = c[5] != 0
    raw, payload = rows.view(np.uint8), block.payload

    def record(i: int) -> bytes:
        s, e = int(block.starts[i]), int(block.ends[i])
        first, last = block.payload_span(i)
        head = _HEAD_ROWS.pack(MAGIC, VERSION_ROWS, e - s, last - first)
        return b"".join((head, raw[s * _ROW.itemsize : e * _ROW.itemsize].data, payload[first:last].data))

    return record


def _decode_rows(view: memoryview) -> RtpPackets:
    if len(view) < _HEAD_ROWS.size:
        raise SpillError(f"spilled chunk of {len(view)} bytes: shorter than its header")
    _, _, n, payload_bytes = _HEAD_ROWS.unpack_from(view)
    expected = _HEAD_ROWS.size + n * _ROW.itemsize + payload_bytes
    if len(view) != expected:
        raise SpillError(f"spilled chunk of {len(view)} bytes, its header announces {expected}")
    rows = np.frombuffer(view, dtype=_ROW, count=n, offset=_HEAD_ROWS.size)
    lengths = rows["length"].astype(np.int64)
    offsets = np.cumsum(lengths) - lengths
    payload = np.frombuffer(
        view, dtype=np.uint8, count=payload_bytes, offset=_HEAD_ROWS.size + n * _ROW.itemsize
    )
    if n and int(lengths.sum()) != payload_bytes:
        raise SpillError("spilled chunk whose payload lengths do not add up to its payload")
    return RtpPackets(
        rows["ts_ns"].astype(np.int64),
        rows["seq"].astype(np.int64),
        rows["rtp_ts"].astype(np.int64),
        rows["ssrc"].astype(np.int64),
        rows["payload_type"].astype(np.int64),
        rows["marker"] != 0,
        payload.copy(),  # the chunk does not pin ``data``
        offsets,
        lengths,
    )


class MemorySink:
    """A :class:`SpillSink` that keeps encoded chunks in a dict: for tests and for measuring the
    serialisation alone. ``fail`` makes ``write`` raise (a full disk)."""

    def __init__(self) -> None:
        self.chunks: dict[str, list[bytearray]] = {}
        self.fail: OSError | None = None
        self.discarded: list[str] = []

    def write(self, leg_key: str, chunk: RtpPackets) -> SpillRef:
        return self.write_record(leg_key, encode_chunk(chunk), len(chunk), int(chunk.payload.shape[0]))

    def write_record(
        self, leg_key: str, data: bytes | bytearray, packets: int, payload_bytes: int
    ) -> SpillRef:
        if self.fail is not None:
            raise self.fail
        stored = self.chunks.setdefault(leg_key, [])
        stored.append(bytearray(data))
        return SpillRef(leg_key, len(stored) - 1, 0, len(data), packets, payload_bytes)

    def read(self, ref: SpillRef) -> RtpPackets:
        try:
            data = self.chunks[ref.leg_key][ref.index]
        except (KeyError, IndexError):
            raise SpillError(f"memory sink: no chunk {ref.index} of {ref.leg_key}") from None
        return decode_chunk(data)

    def discard(self, leg_key: str) -> None:
        self.chunks.pop(leg_key, None)
        self.discarded.append(leg_key)

    def location(self, leg_key: str) -> str:
        return f"memory:{leg_key}"

    def read_at(self, location: str, ref: SpillRef) -> RtpPackets:
        if location != self.location(ref.leg_key):
            raise SpillError(f"memory sink: chunk {ref.index} of {ref.leg_key} is not in {location}")
        return self.read(ref)

    def read_all(self, location: str, refs: Iterable[SpillRef]) -> list[RtpPackets]:
        return [self.read_at(location, ref) for ref in refs]

    @property
    def stored_bytes(self) -> int:
        return sum(len(d) for chunks in self.chunks.values() for d in chunks)
