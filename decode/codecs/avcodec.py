"""FFmpeg decoders through PyAV, fed raw RTP payloads, with the bookkeeping every codec shares.

A codec module says how its payloads split into *units* (what one ``av.Packet`` may hold: a
frame, or any run of frames for decoders that consume a packet frame by frame) and how many
samples each unit gives; :class:`AvDecoder` does the rest:

* **bulk**: where FFmpeg's decoder consumes a packet one frame at a time (G.722, G.726, GSM,
  G.729, G.723.1, AMR in storage format), a whole segment's units are joined into packets of
  about 64 KiB, so the Python cost is per chunk, not per RTP packet (G.722: 2,800x realtime
  instead of 1,400x). The decoded samples must add up to what the units promise; if the
  decoder raises or the sum differs, that chunk is decoded again unit by unit.
* **unit by unit**: one ``av.Packet`` per unit (iLBC and Speex decode one packet whole).

A payload the codec module rejects (wrong length, unknown frame type) or a unit FFmpeg
rejects becomes silence of the packet's nominal length (:func:`~decode.codecs.base.nominal_counts`)
and is counted in :attr:`~decode.codecs.base.AudioDecoder.bad_packets`: one corrupt packet
never fails the call, and the samples per packet keep matching the RTP timestamps.

Decoded audio is converted to mono int16 whatever FFmpeg hands out (s16, s16p, flt, fltp; several
channels are averaged).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from callrec.capture.model.media import RtpPackets
from callrec.decode.codecs.base import BOOL, I16, I64, AudioDecoder, gather_payloads, nominal_counts

if TYPE_CHECKING:
    import av
    import av.error
else:

    class _LazyAv:
        """PyAV, imported at first use: it costs ~40 ms at start-up that G.711 work never needs."""

        def __getattr__(self, name: str) -> Any:
            import av as module
            import av.error  # noqa: F401  (the submodule used in except clauses)

            globals()["av"] = module
            return getattr(module, name)

    av = _LazyAv()

CHUNK_BYTES = 1 << 16
UNKNOWN = -1  # a unit whose sample count only the decoder knows (Speex: frames per packet vary)


@dataclass(frozen=True, slots=True)
class Units:
    """How a run of packets splits into decoder units.

    ``data`` holds the units back to back (``lengths`` bytes each, ``samples`` decoded samples
    each, ``UNKNOWN`` if only the decoder can tell), ``packet`` the index of the packet each
    unit comes from (non-decreasing), ``bad`` the packets rejected before decoding (no units).
    ``silent`` gives, per unit, samples to output as zeros instead of decoding it (comfort-noise
    frames FFmpeg cannot decode, such as G.729 Annex B SID); those units have length 0.
    """

    data: bytes
    lengths: I64
    samples: I64
    packet: I64
    bad: BOOL
    silent: BOOL | None = None


def to_mono(frames: list[av.AudioFrame]) -> I16:
    """Decoded frames as one mono int16 array (channels averaged, floats scaled and clipped)."""
    if not frames:
        return np.zeros(0, dtype=np.int16)
    parts = []
    for frame in frames:
        x = frame.to_ndarray()
        channels = frame.layout.nb_channels
        if not frame.format.is_planar and channels > 1:
            x = x.reshape(-1, channels).T
        parts.append(x)
    joined = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    if joined.dtype.kind == "f":
        mono_f = joined.mean(axis=0) if joined.shape[0] > 1 else joined[0]
        return np.clip(np.rint(mono_f * 32768.0), -32768, 32767).astype(np.int16)
    if joined.shape[0] > 1:
        return np.rint(joined.astype(np.float64).mean(axis=0)).astype(np.int16)
    return joined[0].astype(np.int16, copy=False)


class AvDecoder(AudioDecoder):
    """Decodes with FFmpeg's ``codec``; subclasses implement :meth:`units`.

    One codec context per decoder (so per segment): its state carries from one ``decode`` call
    to the next, as the predictors of a stateful codec need.
    """

    codec: str
    bulk: bool = True
    context_channels: int = 1
    bit_rate: int = 0
    options: dict[str, str] | None = None
    # Decode the first unit a new context sees twice and drop the first output: FFmpeg's iLBC
    # decoder turns the first frame of a fresh context into a full-scale burst, whatever it is.
    prime: bool = False

    def __init__(self) -> None:
        self._context: av.AudioCodecContext | None = None
        self._fresh = False

    def units(self, packets: RtpPackets) -> Units:
        """How ``packets`` (in ``ext_seq`` order) split into decoder units; see :class:`Units`."""
        raise NotImplementedError

    def new_context(self) -> av.AudioCodecContext:
        ctx = av.CodecContext.create(self.codec, "r")
        if not isinstance(ctx, av.AudioCodecContext):
            raise TypeError(f"{self.codec} is not an audio decoder")
        ctx.sample_rate = self.sample_rate_hz
        ctx.layout = "stereo" if self.context_channels == 2 else "mono"
        if self.bit_rate:
            ctx.bit_rate = self.bit_rate
        if self.options:
            ctx.options = dict(self.options)
        return ctx

    @property
    def context(self) -> av.AudioCodecContext:
        if self._context is None:
            self._context = self.new_context()
            self._fresh = True
        return self._context

    def _decode_one(self, data: bytes) -> I16:
        ctx = self.context
        if self.prime and self._fresh:
            self._fresh = False
            with contextlib.suppress(av.error.FFmpegError):
                ctx.decode(av.Packet(data))
        return to_mono(ctx.decode(av.Packet(data)))

    def decode(self, packets: RtpPackets) -> tuple[I16, I64]:
        n = len(packets)
        if n == 0:
            return np.zeros(0, dtype=np.int16), np.zeros(0, dtype=np.int64)
        u = self.units(packets)
        pcm, unit_counts, unit_ok = self._decode_units(u)
        bad = u.bad.copy()
        bad[u.packet[~unit_ok]] = True
        counts = np.bincount(u.packet, weights=unit_counts, minlength=n).astype(np.int64)
        if not bad.any():
            return pcm, counts
        self.bad_packets += int(bad.sum())
        counts = nominal_counts(packets, counts, bad, self)
        good_pcm = pcm[np.repeat(~bad[u.packet], unit_counts)]  # units of good packets, in order
        out = np.zeros(int(counts.sum()), dtype=np.int16)
        out[np.repeat(~bad, counts)] = good_pcm
        return out, counts

    def _decode_units(self, u: Units) -> tuple[I16, I64, BOOL]:
        """PCM of every unit in order, samples per unit, and which units decoded cleanly."""
        m = u.lengths.shape[0]
        ok = np.ones(m, dtype=np.bool_)
        counts = u.samples.copy()
        ends = np.cumsum(u.lengths)
        starts = ends - u.lengths
        silent = u.silent if u.silent is not None else np.zeros(m, dtype=np.bool_)
        if m == 0:
            return np.zeros(0, dtype=np.int16), counts, ok
        if not self.bulk or bool((u.samples == UNKNOWN).any()):
            return self._one_by_one(u, starts, ends, silent, counts, ok, range(m)), counts, ok
        # Chunks of about CHUNK_BYTES; a silent unit is a chunk of its own.
        new_chunk = np.ones(m, dtype=np.bool_)
        new_chunk[1:] = (ends[1:] // CHUNK_BYTES != ends[:-1] // CHUNK_BYTES) | silent[1:] | silent[:-1]
        firsts = np.flatnonzero(new_chunk)
        pieces: list[I16] = []
        for first, last in zip(firsts.tolist(), np.append(firsts[1:], m).tolist(), strict=True):
            if silent[first]:
                pieces.append(np.zeros(int(u.samples[first]), dtype=np.int16))
                continue
            data = u.data[int(starts[first]) : int(ends[last - 1])]
            piece = self._bulk(data, int(u.samples[first:last].sum()))
            if piece is None:
                piece = self._one_by_one(u, starts, ends, silent, counts, ok, range(first, last))
            pieces.append(piece)
        return (np.concatenate(pieces) if len(pieces) > 1 else pieces[0]), counts, ok

    def _bulk(self, data: bytes, expected: int) -> I16 | None:
        try:
            pcm = self._decode_one(data)
        except av.error.FFmpegError:
            self._context = None
            return None
        if pcm.shape[0] != expected:
            self._context = None  # its state is not to be trusted any more
            return None
        return pcm

    def _one_by_one(
        self, u: Units, starts: I64, ends: I64, silent: BOOL, counts: I64, ok: BOOL, rows: range
    ) -> I16:
        out: list[I16] = []
        for i in rows:
            want = int(u.samples[i])
            if silent[i]:
                out.append(np.zeros(want, dtype=np.int16))
                continue
            try:
                pcm = self._decode_one(u.data[int(starts[i]) : int(ends[i])])
            except av.error.FFmpegError:
                self._context = None  # start again from a clean state
                pcm = None
            if (
                pcm is None
                or (want != UNKNOWN and pcm.shape[0] != want)
                or (want == UNKNOWN and not pcm.shape[0])
            ):
                ok[i] = False
                pcm = np.zeros(max(want, 0), dtype=np.int16)
            counts[i] = pcm.shape[0]
            out.append(pcm)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int16)


def fixed_frames(packets: RtpPackets, frame_bytes: int, frame_samples: int) -> Units:
    """Units for codecs with one frame size: every payload must be a whole number of frames."""
    lengths = packets.payload_lengths.astype(np.int64)
    frames = lengths // frame_bytes
    bad = (lengths % frame_bytes != 0) | (frames == 0)
    frames[bad] = 0
    keep = np.flatnonzero(~bad)
    data = payload_bytes(packets.select(keep)) if bad.any() else payload_bytes(packets)
    total = int(frames.sum())
    return Units(
        data=data,
        lengths=np.full(total, frame_bytes, dtype=np.int64),
        samples=np.full(total, frame_samples, dtype=np.int64),
        packet=np.repeat(np.arange(len(packets), dtype=np.int64), frames),
        bad=bad,
    )


def payload_bytes(packets: RtpPackets) -> bytes:
    """All payloads back to back, in the order given (one gather, see ``gather_payloads``)."""
    data, _ = gather_payloads(packets)
    return data.tobytes()
