"""G.711 µ-law (PCMU) and A-law (PCMA): one byte is one sample, decoded by table lookup.

Both laws are piecewise linear: a code byte holds a sign bit, a 3-bit segment (exponent)
and a 4-bit step (mantissa). The 256-entry tables are computed here at import from the
ITU-T G.711 definition, scaled to 16-bit PCM the way the ITU reference and Python's
``audioop`` do (µ-law peak 32124, A-law peak 32256), so decoding is bit exact with both.
Decoding a whole segment is then one numpy gather of the payload bytes into the table,
hundreds of millions of samples per second.
"""

from __future__ import annotations

import numpy as np

from capture.media import RtpPackets
from decode.codecs.base import I16, I64, AudioDecoder, gather_payloads

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


ULAW_TABLE: I16 = _ulaw_table()
ALAW_TABLE: I16 = _alaw_table()
ULAW_TABLE.flags.writeable = False
ALAW_TABLE.flags.writeable = False


class G711Decoder(AudioDecoder):
    """Stateless table decoder shared by both laws (8 kHz clock, 8 kHz audio)."""

    table: I16

    def __init__(self) -> None:
        self.clock_rate_hz = 8000
        self.sample_rate_hz = 8000

    def decode(self, packets: RtpPackets) -> tuple[I16, I64]:
        data, lengths = gather_payloads(packets)
        return self.table[data], lengths.copy()


class MuLawDecoder(G711Decoder):
    encoding = "PCMU"
    table = ULAW_TABLE


class ALawDecoder(G711Decoder):
    encoding = "PCMA"
    table = ALAW_TABLE
