"""G.723.1 (5.3 / 6.3 kbit/s MP-MLQ / ACELP): 30 ms frames (240 samples at 8 kHz).

RTP quirks (RFC 3551 section 4.5.3): the two least significant bits of a frame's first octet
give its type and so its size: 00 = 6.3 kbit/s speech, 24 octets; 01 = 5.3 kbit/s speech, 20
octets; 10 = SID (comfort-noise update), 4 octets; 11 is reserved. Rates may change from frame
to frame and a payload may hold several frames, so each payload is walked frame by frame.
FFmpeg's ``g723_1`` decodes all three types (SID frames produce its comfort noise, as the
standard's decoder does) and consumes one frame per call, so the frames go in bulk. A reserved
type or a frame cut short makes the payload corrupt (silence, counted).
"""

from __future__ import annotations

import numpy as np

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.avcodec import AvDecoder, Units

FRAME_BYTES = (24, 20, 4, 0)  # by the two low bits of the first octet; 0: reserved
FRAME_SAMPLES = 240


class G7231Decoder(AvDecoder):
    encoding = "G723"
    codec = "g723_1"

    def __init__(self) -> None:
        super().__init__()
        self.clock_rate_hz = self.sample_rate_hz = 8000

    def units(self, packets: RtpPackets) -> Units:
        n = len(packets)
        bad = np.zeros(n, dtype=np.bool_)
        chunks: list[bytes] = []
        sizes: list[int] = []
        owner: list[int] = []
        for i in range(n):
            payload = packets.payload_bytes(i)
            frames: list[int] = []
            at = 0
            while at < len(payload):
                size = FRAME_BYTES[payload[at] & 0x03]
                if size == 0 or at + size > len(payload):
                    break
                frames.append(size)
                at += size
            if at != len(payload) or not frames:
                bad[i] = True
                continue
            chunks.append(payload)
            sizes += frames
            owner += [i] * len(frames)
        lengths = np.array(sizes, dtype=np.int64)
        return Units(
            data=b"".join(chunks),
            lengths=lengths,
            samples=np.full(lengths.shape[0], FRAME_SAMPLES, dtype=np.int64),
            packet=np.array(owner, dtype=np.int64),
            bad=bad,
        )


def make_g723(fmt: MediaFormat) -> G7231Decoder | None:
    return G7231Decoder() if fmt.channels == 1 else None
