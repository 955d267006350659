"""The interface every audio decoder implements, and the payload gather they share.

A decoder turns the payloads of many RTP packets into one flat PCM array in a single call:
the timeline hands it a run of one segment (one SSRC, one payload type) sorted by ``ext_seq``
with duplicates removed, so decoding is bulk numpy work, never a per-packet Python loop.
Decoders may keep state between calls (Opus, G.722 predictors), which is why the registry
makes a fresh instance for every segment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.gather import row_view
from callrec.capture.model.media import RtpPackets
from callrec.capture.model.serial import unwrap_seq, unwrap_ts

I16 = npt.NDArray[np.int16]
I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
BOOL = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Concealment:
    """Audio a decoder made for packets that never arrived (in-band FEC repair or loss concealment).

    Optional output next to :meth:`AudioDecoder.decode`, never mixed into its PCM (so the samples
    per received packet keep matching the RTP timestamps). Piece ``k`` is
    ``pcm[pcm_starts[k] : pcm_starts[k] + counts[k]]`` and covers the ``counts[k]`` decoded samples
    that end exactly where packet ``before[k]`` starts (an index into the packets given to
    ``decode``): a timeline places it at that packet's start index minus ``counts[k]``, i.e.
    ``counts[k] * clock_rate_hz / sample_rate_hz`` RTP ticks before the packet's timestamp.
    ``repaired[k]`` is true where the piece ends with audio rebuilt from the next packet's in-band
    FEC (the rest of the piece, if longer than that, is concealment).
    """

    before: I64
    pcm: I16
    pcm_starts: I64
    counts: I64
    repaired: BOOL

    @classmethod
    def empty(cls) -> Concealment:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, np.zeros(0, dtype=np.int16), z, z, np.zeros(0, dtype=np.bool_))


class AudioDecoder(ABC):
    """Decodes one payload format to mono int16 PCM.

    ``clock_rate_hz`` is the RTP clock of the format (what ``rtp_ts`` counts) and
    ``sample_rate_hz`` the rate of the decoded audio. They differ for some codecs (G.722
    runs an 8 kHz RTP clock for 16 kHz audio, RFC 3551 section 4.5.2), which is why the
    timeline converts RTP ticks to samples with both rates (:meth:`samples_for_ticks`) and
    never assumes one tick is one sample.
    """

    encoding: str
    clock_rate_hz: int
    sample_rate_hz: int
    # Payloads the codec rejected (corrupt, truncated, an unknown frame type) since the decoder
    # was made: each was replaced by silence of its nominal length, so the call still renders.
    bad_packets: int = 0

    @abstractmethod
    def decode(self, packets: RtpPackets) -> tuple[I16, I64]:
        """Decode ``packets`` in the order given.

        Returns the flat PCM (packet after packet, no gaps) and the number of samples each
        packet produced, so that packet ``i``'s audio is
        ``pcm[starts[i] : starts[i] + counts[i]]`` with ``starts = cumsum(counts) - counts``.
        """

    def concealment(self) -> Concealment | None:
        """Audio made up for packets lost inside the last :meth:`decode` call (see
        :class:`Concealment`), or ``None`` if this codec makes none. Optional: decoders that keep
        no state worth carrying across a gap (G.711, L16) leave the gap silent."""
        return None

    def samples_for_ticks(self, ticks: I64) -> I64:
        """Decoded samples spanned by ``ticks`` of the RTP clock (floored when not exact)."""
        return (ticks * self.sample_rate_hz) // self.clock_rate_hz

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.encoding}/{self.clock_rate_hz} -> {self.sample_rate_hz} Hz)"


def gather_payloads(packets: RtpPackets) -> tuple[U8, I64]:
    """The packets' payload bytes, concatenated in the order given, and each payload's length.

    Packets usually arrive in order and their payloads sit back to back in the flat array,
    so the common case is one slice (no copy). Otherwise payloads of one size (a codec at a
    fixed packet time) are gathered as rows of a strided view in one numpy call, and mixed
    sizes are sliced run by run (a run is a stretch of payloads already back to back), which
    costs a Python step per run but copies each byte once.
    """
    lengths = packets.payload_lengths.astype(np.int64, copy=False)
    n = lengths.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.uint8), lengths
    starts = packets.payload_offsets.astype(np.int64, copy=False)
    ends = starts + lengths
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    if breaks.shape[0] == 0:
        return packets.payload[int(starts[0]) : int(ends[-1])], lengths
    size = int(lengths[0])
    if size > 0 and bool((lengths == size).all()):
        rows = row_view(packets.payload, size)[starts]
        return rows.reshape(-1), lengths
    run_first = np.concatenate(([0], breaks))
    run_last = np.concatenate((breaks, [n])) - 1
    parts = [
        packets.payload[a:b] for a, b in zip(starts[run_first].tolist(), ends[run_last].tolist(), strict=True)
    ]
    return np.concatenate(parts), lengths


def nominal_counts(packets: RtpPackets, counts: I64, bad: BOOL, decoder: AudioDecoder) -> I64:
    """``counts`` with each bad packet's entry replaced by its nominal length in decoded samples.

    A payload the codec rejected still spans RTP time. Its length is the timestamp step to the
    next packet when that one follows it directly (next sequence number, a step of at most a
    second), else the median count of the good packets, so the silence substituted for it keeps
    later packets where their timestamps put them. ``packets`` are in ``ext_seq`` order.
    """
    out = counts.astype(np.int64, copy=True)
    where = np.flatnonzero(bad)
    if where.shape[0] == 0:
        return out
    good = out[~bad]
    typical = int(np.median(good)) if good.shape[0] else 0
    seq_step = np.diff(unwrap_seq(packets.seq))
    ts_step = np.diff(unwrap_ts(packets.rtp_ts))
    for i in where.tolist():
        ticks = int(ts_step[i]) if i < seq_step.shape[0] and int(seq_step[i]) == 1 else 0
        if 0 < ticks <= decoder.clock_rate_hz:
            out[i] = int(decoder.samples_for_ticks(np.array([ticks], dtype=np.int64))[0])
        else:
            out[i] = typical
    return out
