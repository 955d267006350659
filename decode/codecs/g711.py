"""G.711 µ-law (PCMU) and A-law (PCMA): one byte is one sample, decoded by table lookup.

Both laws are piecewise linear: a code byte holds a sign bit, a 3-bit segment (exponent)
and a 4-bit step (mantissa). The 256-entry tables are computed here at import from the
ITU-T G.711 definition, scaled to 16-bit PCM the way the ITU reference and Python's
``audioop`` do (µ-law peak 32124, A-law peak 32256), so decoding is bit exact with both.

Decoding a whole run is one ``np.take`` over a 65536-entry table of *pairs*: two code bytes read
as one uint16 index give two int16 samples read as one uint32. That halves the elements numpy
gathers, and indexing by uint8 (numpy widens every index to intp first) is what cost most: an
hour-long leg decodes in a third of the time of the 256-entry gather, with identical samples.

The timeline asks for :class:`G711Codes` instead of samples (:meth:`G711Decoder.decode_deferred`)
and decodes them only as it places them, a block at a time: the samples of a leg then never exist
whole next to the recording, whose fresh memory (a page fault per 4 KiB) cost more than decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.media import RtpPackets
from callrec.decode.codecs.base import I16, I64, U8, AudioDecoder, gather_payloads

U32 = npt.NDArray[np.uint32]
DECODE_BLOCK = 1 << 14  # samples per block when decoding into place: 32 KiB, stays in cache

# µ-law: codes are sent inverted; the magnitude of segment e, step m is
# ((2m + 33) << e) - 33 in 14-bit units, i.e. ((m << 3) + 0x84 << e) - 0x84 in 16-bit units
# (0x84 = 132 is the bias of 33 scaled by 4).
_ULAW_BIAS = 0x84
# A-law: even bits are inverted on the line (XOR 0x55); segment 0 is linear with step 16
# (plus half a step, 8), segment e >= 1 is ((m << 4) + 0x108) << (e - 1), and a set sign
# bit means positive.
_ALAW_EVEN_BITS = 0x55


def _ulaw_table() -> I16:
    code = np.arange(256, dtype=np.int32) ^ 0xFF
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> I16:
    code = np.arange(256, dtype=np.int32) ^ _ALAW_EVEN_BITS
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    linear = (mantissa << 4) + 8
    segmented = ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    magnitude = np.where(exponent == 0, linear, segmented)
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _pair_table(table: I16) -> U32:
    """Entry ``v``: the samples of the two bytes that uint16 ``v`` is made of, in memory order
    (built through views, so it is right on either byte order)."""
    pairs = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    out = np.ascontiguousarray(table[pairs]).view(np.uint32).reshape(-1)
    out.flags.writeable = False
    return out


ULAW_TABLE: I16 = _ulaw_table()
ALAW_TABLE: I16 = _alaw_table()
ULAW_TABLE.flags.writeable = False
ALAW_TABLE.flags.writeable = False
_ULAW_PAIRS = _pair_table(ULAW_TABLE)
_ALAW_PAIRS = _pair_table(ALAW_TABLE)


def decode_bytes(data: U8, table: I16, pairs: U32) -> I16:
    """``table[data]`` (one sample per code byte), two bytes per lookup through ``pairs``."""
    n = data.shape[0]
    even = n & ~1
    if even == 0:
        return table[data]
    out = np.take(pairs, np.ascontiguousarray(data[:even]).view(np.uint16), mode="clip").view(np.int16)
    return np.concatenate((out, table[data[even:]])) if even != n else out


@dataclass(frozen=True, slots=True)
class G711Codes:
    """The code bytes of decoded-to-be samples: sample ``i`` is ``table[codes[i]]``."""

    codes: U8
    table: I16
    pairs: U32

    def copy_into(self, out: I16, start: int) -> None:
        """``out[:] = samples[start : start + len(out)]`` (``out`` may be strided: a column)."""
        for at in range(0, out.shape[0], DECODE_BLOCK):
            end = min(at + DECODE_BLOCK, out.shape[0])
            out[at:end] = decode_bytes(self.codes[start + at : start + end], self.table, self.pairs)


class G711Decoder(AudioDecoder):
    """Stateless table decoder shared by both laws (8 kHz clock, 8 kHz audio)."""

    table: I16
    pairs: npt.NDArray[np.uint32]

    def __init__(self) -> None:
        self.clock_rate_hz = 8000
        self.sample_rate_hz = 8000

    def decode(self, packets: RtpPackets) -> tuple[I16, I64]:
        data, lengths = gather_payloads(packets)
        return decode_bytes(data, self.table, self.pairs), lengths.copy()

    def decode_deferred(self, packets: RtpPackets) -> tuple[G711Codes, I64]:
        """:meth:`decode` with the samples left as codes (the payloads, not copied if in order)."""
        data, lengths = gather_payloads(packets)
        return G711Codes(data, self.table, self.pairs), lengths.copy()


class MuLawDecoder(G711Decoder):
    encoding = "PCMU"
    table = ULAW_TABLE
    pairs = _ULAW_PAIRS


class ALawDecoder(G711Decoder):
    encoding = "PCMA"
    table = ALAW_TABLE
    pairs = _ALAW_PAIRS
