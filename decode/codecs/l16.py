"""Linear PCM: L16 (16-bit signed, big-endian) and L8 (8-bit, offset 128), any rate and channels.

RTP quirks (RFC 3551 sections 4.5.10-4.5.11): samples are in network byte order (most
significant octet first), the RTP clock is the sampling rate, and with several channels the
samples of one sampling instant are interleaved (left, right, ...), so one tick is one frame of
``channels`` samples. Static payload types 10 (L16/44100/2) and 11 (L16/44100/1) exist;
anything else comes from SDP (``L16/16000/2``). The decoded audio is mono (the channels
averaged), like every decoder's here: each leg is one channel of the recording. A trailing
partial frame is dropped. Pure numpy, no FFmpeg: a byte swap and, for several channels, a mean.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.base import I16, I64, AudioDecoder, gather_payloads


class LinearDecoder(AudioDecoder):
    def __init__(self, encoding: str, clock_rate_hz: int, channels: int) -> None:
        self.encoding = encoding
        self.clock_rate_hz = self.sample_rate_hz = clock_rate_hz
        self.channels = channels
        self.width = 2 if encoding == "L16" else 1

    def decode(self, packets: RtpPackets) -> tuple[I16, I64]:
        frame = self.width * self.channels
        lengths = packets.payload_lengths.astype(np.int64)
        if bool((lengths % frame != 0).any()):  # a truncated payload: keep its whole frames
            packets = replace(packets, payload_lengths=lengths - lengths % frame)
        data, used = gather_payloads(packets)
        if self.width == 2:
            samples = data.view(">i2").astype(np.int16)
        else:
            samples = ((data.astype(np.int16) - 128) << 8).astype(np.int16)
        if self.channels > 1:
            wide = samples.reshape(-1, self.channels).astype(np.int32).sum(axis=1)
            samples = np.rint(wide / self.channels).astype(np.int16)
        return samples, used // frame


def make_linear(fmt: MediaFormat) -> LinearDecoder | None:
    if fmt.channels < 1 or fmt.clock_rate_hz <= 0:
        return None
    return LinearDecoder(fmt.encoding.upper(), fmt.clock_rate_hz, fmt.channels)
