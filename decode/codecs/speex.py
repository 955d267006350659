"""Speex (RFC 5574): narrowband 8 kHz, wideband 16 kHz, ultra-wideband 32 kHz.

RTP quirks (RFC 5574): the RTP clock is the sampling rate of the mode (``speex/8000``,
``speex/16000``, ``speex/32000``), which is how the mode is known: there is no in-band header,
so FFmpeg's ``speex`` decoder is opened at that rate. A payload holds one or more frames of
20 ms packed bit to bit (not octet-aligned) and padded at the end, and the count is not
signalled: the decoder reads frames until the bits run out (checked here: two frames joined
bit-wise decode to the same samples as the two packets did). So each payload is one unit whose
sample count only the decoder knows; a payload it rejects becomes silence of its nominal length
and is counted. The ``vbr`` and ``mode`` fmtp parameters only matter to the encoder.
"""

from __future__ import annotations

import numpy as np

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.avcodec import UNKNOWN, AvDecoder, Units, payload_bytes

RATES = (8000, 16000, 32000)


class SpeexDecoder(AvDecoder):
    encoding = "speex"
    codec = "speex"
    bulk = False

    def __init__(self, clock_rate_hz: int) -> None:
        super().__init__()
        self.clock_rate_hz = self.sample_rate_hz = clock_rate_hz

    def units(self, packets: RtpPackets) -> Units:
        n = len(packets)
        return Units(
            data=payload_bytes(packets),
            lengths=packets.payload_lengths.astype(np.int64),
            samples=np.full(n, UNKNOWN, dtype=np.int64),
            packet=np.arange(n, dtype=np.int64),
            bad=np.zeros(n, dtype=np.bool_),
        )


def make_speex(fmt: MediaFormat) -> SpeexDecoder | None:
    return SpeexDecoder(fmt.clock_rate_hz) if fmt.channels == 1 and fmt.clock_rate_hz in RATES else None
