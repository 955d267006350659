"""DVI4 (IMA ADPCM, 4 bits a sample) at any clock: 8000 (PT 5), 16000 (PT 6), 11025 (PT 16), 22050 (PT 17).

RTP quirks (RFC 3551 section 4.5.1): every payload is one self-contained IMA block. It starts
with a 4-octet header: the predictor *before* the first sample (int16, network byte order),
the step-size index (0-88) and a reserved octet; unlike Microsoft's IMA WAV block the header
value is not itself a sample. Samples follow two to an octet, the first in the *most*
significant nibble (the reverse of IMA WAV), so a 20 ms packet at 8 kHz is 4 + 80 octets.
Checked on Wireshark's ``sip-rtp-dvi4.pcap`` against the G.711 recording of the same prompt.

Since each packet carries its own starting state, packets are independent: all packets of one
payload size are decoded side by side, one numpy step per sample position (160 steps for a
whole hour of 20 ms packets), and a lost packet never disturbs the next. A header with a step
index above 88, or a payload shorter than the header, makes the packet corrupt (silence of its
nominal length, counted). Pure numpy, no FFmpeg.
"""

from __future__ import annotations

import numpy as np

from callrec.capture.model.gather import row_view
from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.base import I16, I64, U8, AudioDecoder, nominal_counts

HEADER_BYTES = 4
INDEX_STEP = np.array([-1, -1, -1, -1, 2, 4, 6, 8] * 2, dtype=np.int64)
STEP_SIZE = np.array(
    [
        7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60,
        66, 73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371,
        408, 449, 494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878,
        2066, 2272, 2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845,
        8630, 9493, 10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623, 27086,
        29794, 32767,
    ],
    dtype=np.int64,
)  # fmt: skip
MAX_INDEX = STEP_SIZE.shape[0] - 1


def decode_blocks(blocks: U8) -> I16:
    """IMA-decode equally sized DVI4 payloads (rows), all rows at once; returns (rows, samples)."""
    rows = blocks.shape[0]
    predictor = (blocks[:, 0].astype(np.int64) << 8 | blocks[:, 1]).astype(np.int16).astype(np.int64)
    index = blocks[:, 2].astype(np.int64)
    body = blocks[:, HEADER_BYTES:]
    nibbles = np.empty((rows, body.shape[1] * 2), dtype=np.int64)
    nibbles[:, 0::2] = body >> 4  # first sample: most significant nibble
    nibbles[:, 1::2] = body & 0x0F
    out = np.empty(nibbles.shape, dtype=np.int16)
    for j in range(nibbles.shape[1]):
        code = nibbles[:, j]
        step = STEP_SIZE[index]
        diff = (step >> 3) + np.where(code & 4, step, 0) + np.where(code & 2, step >> 1, 0)
        diff += np.where(code & 1, step >> 2, 0)
        predictor = np.clip(np.where(code & 8, predictor - diff, predictor + diff), -32768, 32767)
        index = np.clip(index + INDEX_STEP[code], 0, MAX_INDEX)
        out[:, j] = predictor
    return out


class Dvi4Decoder(AudioDecoder):
    encoding = "DVI4"

    def __init__(self, clock_rate_hz: int) -> None:
        self.clock_rate_hz = self.sample_rate_hz = clock_rate_hz

    def decode(self, packets: RtpPackets) -> tuple[I16, I64]:
        lengths = packets.payload_lengths.astype(np.int64)
        counts = np.maximum(lengths - HEADER_BYTES, 0) * 2
        bad = lengths <= HEADER_BYTES
        index_at = np.where(bad, 0, packets.payload_offsets + 2)
        bad |= packets.payload[index_at] > MAX_INDEX
        if bad.any():
            self.bad_packets += int(bad.sum())
            counts = nominal_counts(packets, counts, bad, self)
        starts = np.cumsum(counts) - counts
        out = np.zeros(int(counts.sum()), dtype=np.int16)
        for size in np.unique(lengths[~bad]).tolist():
            rows = np.flatnonzero((lengths == size) & ~bad)
            blocks = row_view(packets.payload, size)[packets.payload_offsets[rows]]
            pcm = decode_blocks(blocks)
            at = (starts[rows][:, None] + np.arange(pcm.shape[1])).reshape(-1)
            out[at] = pcm.reshape(-1)
        return out, counts


def make_dvi4(fmt: MediaFormat) -> Dvi4Decoder | None:
    return Dvi4Decoder(fmt.clock_rate_hz) if fmt.channels == 1 else None
