"""Opus (RFC 6716 codec, RFC 7587 RTP payload): 48 kHz clock, mono output, in-band FEC and PLC.

RTP quirks (RFC 7587): the RTP clock is always 48000 and the rtpmap always says ``opus/48000/2``
whatever is sent; ``stereo=1`` / ``sprop-stereo=1`` in fmtp only say that stereo *may* come. A
payload is one Opus packet: a TOC octet (configuration = mode and frame duration, stereo flag,
frame-count code) and one to 48 frames, 2.5 to 120 ms in all; its duration follows from the TOC
alone (:func:`packet_samples`), and is what the timestamps advance by. DTX sends nothing in
silence (a timestamp jump without a sequence gap), which is left silent.

Channel decision: decoded to **mono at 48 kHz**. A leg is one channel of the recording, so a
stereo stream is downmixed, and libopus does that itself when its decoder state is opened with one
channel (it decodes the coded mid/side and mixes; no separate numpy pass).

Decoding goes through libopus by ctypes (:mod:`decode.codecs.libopus`), one state per segment,
because only libopus can repair a loss. The timeline hands packets in ``ext_seq`` order, so a loss
shows as a sequence gap with RTP time missing between the end of one packet and the timestamp of
the next. For each loss of up to :data:`MAX_CONCEAL_MS`, before decoding the packet after the gap
the decoder calls ``opus_decode(next packet, frame_size = missing samples, decode_fec = 1)``:
libopus conceals (PLC) all but the last frame duration of the gap and rebuilds that last frame
from the LBRR (low bit-rate redundancy) copy the encoder put into the next packet when it had
in-band FEC on (SILK and hybrid modes; otherwise it conceals that part too). That keeps the
decoder state continuous across the loss, as the codec expects. The audio is *not* put into the
PCM of :meth:`decode` (each received packet gives exactly its own duration): it is returned by
:meth:`concealment` for the timeline to place in the gap. Longer gaps (hold, a dead link) are left
silent and the state is not told. If libopus cannot be loaded, PyAV is used
(:class:`AvOpusDecoder`): same samples per packet, no FEC, no PLC.

A packet with an impossible TOC, or one libopus rejects, becomes silence of its nominal length and
is counted; the state carries on with the next packet.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.capture.model.serial import unwrap_seq, unwrap_ts
from callrec.decode.codecs.avcodec import AvDecoder, Units, payload_bytes
from callrec.decode.codecs.base import (
    I16,
    I64,
    U8,
    AudioDecoder,
    Concealment,
    gather_payloads,
    nominal_counts,
)
from callrec.decode.codecs.libopus import MAX_FRAME_SAMPLES, DecoderState, LibOpus, load

RATE_HZ = 48000
MAX_CONCEAL_MS = 120
PLC_QUANTUM = 120  # libopus conceals in multiples of 2.5 ms
# Frame duration in 48 kHz samples by TOC configuration (RFC 6716 section 3.1, table 2).
_FRAME = np.array([480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4, dtype=np.int64)


def packet_samples(data: U8, offsets: I64, lengths: I64) -> I64:
    """Samples (at 48 kHz) of each Opus packet from its TOC; -1 where the TOC is impossible."""
    at = np.minimum(offsets, max(data.shape[0] - 1, 0))
    toc = data[at].astype(np.int64) if data.shape[0] else np.zeros(offsets.shape[0], dtype=np.int64)
    code = toc & 0x03
    frames = np.where(code == 0, 1, 2)
    has_count = (code == 3) & (lengths >= 2)
    count_at = np.where(has_count, np.minimum(offsets + 1, max(data.shape[0] - 1, 0)), 0)
    count = data[count_at].astype(np.int64) & 0x3F if data.shape[0] else np.zeros_like(toc)
    frames = np.where(code == 3, np.where(has_count, count, 0), frames)
    samples = frames * _FRAME[toc >> 3]
    ok = (lengths >= 1) & (frames >= 1) & (samples <= MAX_FRAME_SAMPLES)
    return np.where(ok, samples, -1)


class OpusDecoder(AudioDecoder):
    """libopus decoder with FEC repair and loss concealment (see the module docstring)."""

    encoding = "opus"

    def __init__(self, lib: LibOpus, use_fec: bool = True) -> None:
        self.use_fec = use_fec  # False: conceal every loss by PLC alone (for comparison)
        self.clock_rate_hz = self.sample_rate_hz = RATE_HZ
        self.state = DecoderState(lib, channels=1)
        self._decode = lib.opus_decode
        self._has_lbrr = lib.has_lbrr
        self._last: tuple[int, int, int] | None = None  # ext_seq, ext_ts, samples of the last packet
        self._concealment: Concealment | None = None
        self.repaired_gaps = 0  # gaps whose last frame came from in-band FEC
        self.concealed_gaps = 0  # gaps filled by PLC alone

    def concealment(self) -> Concealment | None:
        return self._concealment

    def decode(self, packets: RtpPackets) -> tuple[I16, I64]:
        n = len(packets)
        if n == 0:
            self._concealment = Concealment.empty()
            return np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.int64)
        data, lengths = gather_payloads(packets)
        data = np.ascontiguousarray(data)
        offsets = np.cumsum(lengths) - lengths
        expected = packet_samples(data, offsets, lengths)
        missing = self._missing(packets, expected)
        bad = expected < 0
        counts = nominal_counts(packets, np.maximum(expected, 0), bad, self)
        starts = np.cumsum(counts) - counts
        out = np.zeros(int(counts.sum()), dtype=np.int16)
        gaps = np.flatnonzero(missing > 0)
        hidden = np.zeros(int(missing[gaps].sum()), dtype=np.int16)
        hidden_starts = np.cumsum(missing[gaps]) - missing[gaps]
        repaired = np.zeros(gaps.shape[0], dtype=np.bool_)
        decode, handle = self._decode, self.state.handle
        base, out_base, hidden_base = data.ctypes.data, out.ctypes.data, hidden.ctypes.data
        gap_of = dict(zip(gaps.tolist(), range(gaps.shape[0]), strict=True))
        for i, (at, size, want, dst) in enumerate(
            zip(offsets.tolist(), lengths.tolist(), expected.tolist(), starts.tolist(), strict=True)
        ):
            k = gap_of.get(i)
            if k is not None:  # PLC up to the last frame of the gap, FEC from this packet for that one
                lost, where = int(missing[i]), hidden_base + 2 * int(hidden_starts[k])
                if not self.use_fec:
                    decode(handle, None, 0, where, lost, 0)
                elif decode(handle, base + at, size, where, lost, 1) == lost and self._has_lbrr is not None:
                    repaired[k] = self._has_lbrr(base + at, size) == 1
            if want < 0 or decode(handle, base + at, size, out_base + 2 * dst, want, 0) != want:
                bad[i] = True
                out[dst : dst + int(counts[i])] = 0
        self.bad_packets += int(bad.sum())
        self.repaired_gaps += int(repaired.sum())
        self.concealed_gaps += int(gaps.shape[0] - repaired.sum())
        self._concealment = Concealment(gaps, hidden, hidden_starts, missing[gaps], repaired)
        return out, counts

    def _missing(self, packets: RtpPackets, expected: I64) -> I64:
        """Samples lost just before each packet that libopus should conceal (0: none)."""
        last = self._last
        ext_seq = unwrap_seq(packets.seq, None if last is None else last[0])
        ext_ts = unwrap_ts(packets.rtp_ts, None if last is None else last[1])
        prev_seq = np.concatenate(([ext_seq[0] - 1 if last is None else last[0]], ext_seq[:-1]))
        prev_ts = np.concatenate(([ext_ts[0] if last is None else last[1]], ext_ts[:-1]))
        prev_len = np.concatenate(([0 if last is None else last[2]], np.maximum(expected[:-1], 0)))
        missing = ext_ts - (prev_ts + prev_len)
        lost = (ext_seq - prev_seq > 1) & (missing > 0) & (missing <= MAX_CONCEAL_MS * RATE_HZ // 1000)
        lost &= (missing % PLC_QUANTUM == 0) & (expected > 0)
        self._last = (int(ext_seq[-1]), int(ext_ts[-1]), max(int(expected[-1]), 0))
        return np.where(lost, missing, 0)


@cache
def ffmpeg_opus_decoder() -> str:
    """FFmpeg's libopus wrapper if this build has it (same output as :class:`OpusDecoder` on a
    lossless stream, bit for bit), else its native decoder (0.6 ms later, correlation 0.9999)."""
    import av  # only when FFmpeg's Opus is wanted (see decode.codecs.avcodec on start-up cost)

    try:
        av.codec.Codec("libopus", "r")
    except av.codec.codec.UnknownCodecError:
        return "opus"
    return "libopus"


class AvOpusDecoder(AvDecoder):
    """Opus through PyAV, for when libopus cannot be loaded by ctypes: no FEC, no PLC."""

    encoding = "opus"
    bulk = False

    def __init__(self, codec: str | None = None) -> None:
        super().__init__()
        self.codec = codec or ffmpeg_opus_decoder()
        self.clock_rate_hz = self.sample_rate_hz = RATE_HZ

    def units(self, packets: RtpPackets) -> Units:
        data, lengths = gather_payloads(packets)
        expected = packet_samples(data, np.cumsum(lengths) - lengths, lengths)
        keep = np.flatnonzero(expected > 0)
        return Units(
            data=payload_bytes(packets.select(keep)),
            lengths=lengths[keep].astype(np.int64),
            samples=expected[keep],
            packet=keep.astype(np.int64),
            bad=expected <= 0,
        )


def make_opus(fmt: MediaFormat) -> AudioDecoder | None:
    """libopus when it loads (FEC and PLC), else PyAV; ``None`` for more than two channels."""
    if fmt.channels > 2:
        return None
    lib = load()
    return OpusDecoder(lib) if lib is not None else AvOpusDecoder()
