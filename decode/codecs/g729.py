"""G.729 / G.729A / G.729B (CS-ACELP, 8 kbit/s), and G.729D (6.4 kbit/s): 10 ms frames at 8 kHz.

RTP quirks (RFC 3551 section 4.5.6): a payload is zero or more 10-octet frames (80 samples
each), optionally followed by one 2-octet Annex B SID frame (comfort-noise parameters, sent
when the speaker is silent and the encoder runs VAD/DTX); a SID frame is only ever last.
G.729A is bit-compatible with G.729 and shares the name (``annexb=no`` in fmtp only says that
no SID frames come). G729D (section 4.5.7) uses 8-octet frames. FFmpeg's ``g729`` decodes the
speech frames (in bulk, one frame per call) but not SID frames: each SID frame is rendered as
10 ms of silence, the way the timeline renders RFC 3389 comfort noise, and the timestamps stay
consistent. A payload of any other length is corrupt (silence of its nominal length, counted).
"""

from __future__ import annotations

import numpy as np

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.avcodec import AvDecoder, Units, payload_bytes

SID_BYTES = 2
FRAME_SAMPLES = 80


class G729Decoder(AvDecoder):
    codec = "g729"

    def __init__(self, encoding: str = "G729", frame_bytes: int = 10) -> None:
        super().__init__()
        self.encoding = encoding
        self.frame_bytes = frame_bytes
        self.clock_rate_hz = self.sample_rate_hz = 8000
        self.options = {"block_align": str(frame_bytes)}

    def units(self, packets: RtpPackets) -> Units:
        lengths = packets.payload_lengths.astype(np.int64)
        frames = lengths // self.frame_bytes
        rest = lengths % self.frame_bytes
        sid = rest == SID_BYTES
        bad = ((rest != 0) & ~sid) | (lengths == 0)
        frames[bad] = 0
        sid &= ~bad
        per_packet = frames + sid
        total = int(per_packet.sum())
        silent = np.zeros(total, dtype=np.bool_)
        silent[(np.cumsum(per_packet) - 1)[sid]] = True
        if bad.any() or sid.any():
            speech = (frames * self.frame_bytes).tolist()
            data = b"".join(packets.payload_bytes(i)[: speech[i]] for i in range(len(packets)) if speech[i])
        else:
            data = payload_bytes(packets)
        return Units(
            data=data,
            lengths=np.where(silent, 0, self.frame_bytes).astype(np.int64),
            samples=np.full(total, FRAME_SAMPLES, dtype=np.int64),
            packet=np.repeat(np.arange(len(packets), dtype=np.int64), per_packet),
            bad=bad,
            silent=silent,
        )


def make_g729(fmt: MediaFormat) -> G729Decoder | None:
    if fmt.channels != 1:
        return None
    if fmt.encoding.upper() == "G729D":
        return G729Decoder("G729D", 8)
    return G729Decoder(fmt.encoding.upper())
