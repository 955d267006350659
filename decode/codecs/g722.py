"""G.722 (ITU-T G.722, 64 kbit/s sub-band ADPCM): 16 kHz audio on an 8 kHz RTP clock.

RTP quirk (RFC 3551 section 4.5.2): the format samples at 16 kHz but its RTP clock runs at
8000 Hz, an error in RFC 1890 kept for compatibility, so a 20 ms packet advances the timestamp
by 160 while carrying 160 bytes = 320 samples (one byte codes two 16 kHz samples, bits 6+2 for
the two sub-bands). Any payload length is valid. The decoder is stateful (two ADPCM
predictors), so a segment is decoded as one stream: FFmpeg's ``g722`` takes the joined payloads
in chunks (:class:`~decode.codecs.avcodec.AvDecoder` bulk mode), which gives the same samples
as packet-by-packet decoding at twice the speed.

Some endpoints announce ``G722/16000`` (and step the timestamp by 320 per 20 ms): registered as
well, with a 16 kHz clock.
"""

from __future__ import annotations

import numpy as np

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.avcodec import AvDecoder, Units, payload_bytes

SAMPLES_PER_BYTE = 2


class G722Decoder(AvDecoder):
    encoding = "G722"
    codec = "g722"

    def __init__(self, clock_rate_hz: int = 8000) -> None:
        super().__init__()
        self.clock_rate_hz = clock_rate_hz
        self.sample_rate_hz = 16000

    def units(self, packets: RtpPackets) -> Units:
        lengths = packets.payload_lengths.astype(np.int64)
        return Units(
            data=payload_bytes(packets),
            lengths=lengths,
            samples=lengths * SAMPLES_PER_BYTE,
            packet=np.arange(len(packets), dtype=np.int64),
            bad=np.zeros(len(packets), dtype=np.bool_),
        )


def make_g722(fmt: MediaFormat) -> G722Decoder | None:
    return G722Decoder(fmt.clock_rate_hz) if fmt.channels == 1 else None
