"""GSM 06.10 full rate (RFC 3551 section 4.5.8): 33-octet frames of 20 ms (160 samples at 8 kHz).

Each frame starts with the 0xD signature nibble followed by 260 bits of parameters; a payload
carries one or more whole frames (anything else is rejected as corrupt and rendered as
silence of its nominal length). FFmpeg's ``gsm`` decoder consumes one frame per call, so a
segment's frames are decoded in bulk.
"""

from __future__ import annotations

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.avcodec import AvDecoder, Units, fixed_frames

FRAME_BYTES = 33
FRAME_SAMPLES = 160


class GsmDecoder(AvDecoder):
    encoding = "GSM"
    codec = "gsm"

    def __init__(self) -> None:
        super().__init__()
        self.clock_rate_hz = self.sample_rate_hz = 8000

    def units(self, packets: RtpPackets) -> Units:
        return fixed_frames(packets, FRAME_BYTES, FRAME_SAMPLES)


def make_gsm(fmt: MediaFormat) -> GsmDecoder | None:
    return GsmDecoder() if fmt.channels == 1 else None
