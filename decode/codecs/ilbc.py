"""iLBC (RFC 3951 codec, RFC 3952 RTP payload): 20 ms frames of 38 octets or 30 ms of 50 octets.

RTP quirks (RFC 3952): the frame mode is negotiated with fmtp ``mode=20`` or ``mode=30``
(30 when absent, and when the two sides disagree the larger one wins); a payload carries one or
more frames of that mode. Which SDP's fmtp a leg ends up with is not certain (offer and answer
may disagree), so the payload sizes decide: mostly multiples of 38 and not of 50 is 20 ms, mostly
multiples of 50 and not of 38 is 30 ms; only when the sizes cannot tell does fmtp, else 30. The
clock is 8 kHz and so is the audio (160 or 240 samples a frame). FFmpeg's ``ilbc`` decodes
exactly one frame per packet whatever follows it, so frames are handed over one by one; a
payload that is not a whole number of frames is corrupt (silence, counted). FFmpeg's decoder
turns the first frame of a new context into a full-scale burst (seen on every start point of
Wireshark's ``sip-rtp-ilbc.pcap``), so that frame is decoded twice and the first output dropped
(:attr:`AvDecoder.prime`): the second matches the G.711 recording of the same prompt (rms 261
against 254).
"""

from __future__ import annotations

import re

import numpy as np

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.avcodec import AvDecoder, Units, fixed_frames

MODES = {20: (38, 160, 15200), 30: (50, 240, 13330)}  # frame octets, samples, bit rate
_MODE = re.compile(r"(?:^|;)\s*mode\s*=\s*(\d+)", re.IGNORECASE)


def fmtp_mode(fmtp: str) -> int | None:
    found = _MODE.search(fmtp)
    return int(found.group(1)) if found and int(found.group(1)) in MODES else None


class IlbcDecoder(AvDecoder):
    encoding = "iLBC"
    codec = "ilbc"
    bulk = False
    prime = True

    def __init__(self, fmtp_mode: int | None = None) -> None:
        super().__init__()
        self.fmtp_mode = fmtp_mode
        self.mode: int | None = None
        self.clock_rate_hz = self.sample_rate_hz = 8000

    def units(self, packets: RtpPackets) -> Units:
        lengths = packets.payload_lengths.astype(np.int64)
        if self.mode is None:  # decided once per decoder, from the first payloads seen
            twenty = float(((lengths % 38 == 0) & (lengths % 50 != 0)).mean()) if lengths.shape[0] else 0.0
            thirty = float(((lengths % 50 == 0) & (lengths % 38 != 0)).mean()) if lengths.shape[0] else 0.0
            sizes = 20 if twenty > 0.5 else 30 if thirty > 0.5 else None
            self.mode = sizes or self.fmtp_mode or 30
        frame_bytes, frame_samples, self.bit_rate = MODES[self.mode]
        return fixed_frames(packets, frame_bytes, frame_samples)


def make_ilbc(fmt: MediaFormat) -> IlbcDecoder | None:
    return IlbcDecoder(fmtp_mode(fmt.fmtp)) if fmt.channels == 1 else None
