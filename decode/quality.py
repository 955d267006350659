"""Per-leg media quality: RFC 3550 interarrival jitter and an ITU-T G.107 E-model MOS estimate.

Jitter (RFC 3550 section 6.4.1) is computed by :mod:`decode.timeline` with
:func:`callrec.decode.jitter.rfc3550_jitter`.

The MOS is a *planning* estimate (ITU-T G.107, simplified), not a listening test. Per leg:

* ``R = 93.2 - Id - Ie_eff``. 93.2 is G.107's rating with every parameter at its default value
  (no delay, no loss, no codec impairment), so only the two terms that a passive recorder can
  see are taken off it.
* ``Id``, the delay impairment, from a one-way delay estimate. The recorder sees neither the
  mouth-to-ear delay nor the phones' jitter buffers, so ``d = 40 ms + 2 x mean RFC 3550 jitter``:
  40 ms for packetization, codec look-ahead and a campus network path, plus a jitter buffer
  sized to twice the jitter. ``Id = 0.024 d + 0.11 (d - 177.3) H(d - 177.3)`` is the well-known
  fit of G.107's delay terms with default echo parameters (Cole and Rosenbluth, "Voice over
  IP performance monitoring", ACM SIGCOMM CCR 31(2), 2001). It is under 1 for d = 40 ms.
* ``Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)`` (G.107 clause 7.3): ``Ppl`` the
  packet loss in percent (``lost / expected``), ``BurstR`` the burst ratio, ``1 / (p + q)`` for
  a two-state Markov model of the loss (``p``: a packet is lost after a received one, ``q``: a
  packet is received after a lost one), 1 for random loss, measured per leg from the
  sequence numbers (:func:`burst_ratio`). Packets that a jitter buffer would discard as too
  late are not counted as lost: the phones' buffers are not seen.
* ``Ie`` and ``Bpl`` per codec from ITU-T G.113 Appendix I (:data:`IMPAIRMENTS`, each entry
  names its source; values marked "approximation" are not in G.113 and are documented guesses).
  G.711 is taken *with* packet loss concealment (Bpl 25.1), as every current phone conceals
  loss; without it G.113 gives Bpl 4.3 (:data:`G711_WITHOUT_PLC`). Wideband codecs (G.722,
  Opus) are rated on the narrowband scale, like G.711: G.107.1's wideband scale would be needed
  to credit their bandwidth. A codec without values gets no MOS.
* ``MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)`` (G.107 Annex B), 1 for R <= 0 and 4.5 for
  R >= 100, and never below 1 (the cubic dips to 0.99 just above R = 0). A perfect G.711 leg
  rates R = 92.2, MOS 4.39.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import CapturedLeg
from callrec.capture.model.media import RtpPackets
from callrec.capture.model.serial import unwrap_seq
from callrec.decode.codecs import format_for, is_audio_format
from callrec.decode.timeline import LegStats

F64 = npt.NDArray[np.float64]


R_DEFAULT = 93.2  # G.107: R with all parameters at their defaults
FIXED_DELAY_MS = 40.0  # packetization, look-ahead and network path (assumed, see above)
JITTER_BUFFER_FACTOR = 2.0  # a jitter buffer of twice the mean RFC 3550 jitter
MAX_DROPOUT = 3000  # RFC 3550 A.1: a larger sequence jump is a restart, not loss


@dataclass(frozen=True, slots=True)
class CodecImpairment:
    """E-model planning values of a codec: equipment impairment ``ie`` and packet-loss
    robustness ``bpl`` (ITU-T G.113 Appendix I), and where they come from."""

    ie: float
    bpl: float
    source: str


_G711 = CodecImpairment(0.0, 25.1, "G.113 App. I Table I.3: G.711 with PLC (G.711 App. I), random loss")
G711_WITHOUT_PLC = CodecImpairment(0.0, 4.3, "G.113 App. I Table I.3: G.711 without PLC")
_EFR = CodecImpairment(5.0, 10.0, "G.113 App. I Table I.3: GSM-EFR")
IMPAIRMENTS: dict[str, CodecImpairment] = {
    "PCMU": _G711,
    "PCMA": _G711,
    "G729": CodecImpairment(11.0, 19.0, "G.113 App. I Table I.3: G.729A + VAD"),
    "G723": CodecImpairment(15.0, 16.1, "G.113 App. I Table I.3: G.723.1 6.3 kbit/s + VAD"),
    "GSM-EFR": _EFR,
    "GSM": CodecImpairment(20.0, 10.0, "Ie: G.113 App. I Table I.1 (GSM 06.10); Bpl: approximation (EFR)"),
    "AMR": CodecImpairment(5.0, 10.0, "approximation: AMR 12.2 kbit/s is GSM-EFR"),
    "G722": CodecImpairment(0.0, 25.1, "approximation: rated as G.711 with PLC (narrowband scale)"),
    "OPUS": CodecImpairment(0.0, 25.1, "approximation: rated as G.711 with PLC (narrowband scale)"),
}
"""Planning values by upper-case SDP encoding name."""


def delay_impairment(delay_ms: float) -> float:
    """``Id`` for a one-way delay (Cole and Rosenbluth's fit of G.107, default echo values)."""
    d = max(delay_ms, 0.0)
    return 0.024 * d + (0.11 * (d - 177.3) if d > 177.3 else 0.0)


def one_way_delay_ms(jitter_mean_ms: float) -> float:
    """The delay proxy: ``40 ms + 2 x mean jitter`` (see the module docstring)."""
    return FIXED_DELAY_MS + JITTER_BUFFER_FACTOR * max(jitter_mean_ms, 0.0)


def effective_impairment(codec: CodecImpairment, loss_percent: float, burst_ratio: float = 1.0) -> float:
    """``Ie_eff = Ie + (95 - Ie) * Ppl / (Ppl / BurstR + Bpl)`` (G.107 clause 7.3)."""
    ppl = min(max(loss_percent, 0.0), 100.0)
    burst = max(burst_ratio, 1e-9)
    return codec.ie + (95.0 - codec.ie) * ppl / (ppl / burst + codec.bpl)


def mos_from_r(r: float) -> float:
    """G.107 Annex B: R to the estimated mean opinion score (1 to 4.5)."""
    if r <= 0.0:
        return 1.0
    if r >= 100.0:
        return 4.5
    return max(1.0, 1.0 + 0.035 * r + 7e-6 * r * (r - 60.0) * (100.0 - r))


def r_factor(
    codec: CodecImpairment, loss_percent: float, burst_ratio: float = 1.0, jitter_mean_ms: float = 0.0
) -> float:
    """``R = 93.2 - Id - Ie_eff`` (see the module docstring)."""
    delay = delay_impairment(one_way_delay_ms(jitter_mean_ms))
    return R_DEFAULT - delay - effective_impairment(codec, loss_percent, burst_ratio)


def estimate_mos(
    codec: str, loss_percent: float, burst_ratio: float = 1.0, jitter_mean_ms: float = 0.0
) -> float | None:
    """MOS of a leg of ``codec`` (SDP encoding name), or ``None`` if the codec has no values."""
    values = IMPAIRMENTS.get(codec.upper())
    if values is None:
        return None
    return mos_from_r(r_factor(values, loss_percent, burst_ratio, jitter_mean_ms))


def burst_ratio(packets: RtpPackets) -> float:
    """G.107's ``BurstR = 1 / (p + q)`` from the leg's sequence numbers (per SSRC): 1 for random
    loss, above 1 when losses come in bursts, 1 when nothing was lost."""
    received = lost = runs = 0
    for ssrc in np.unique(packets.ssrc).tolist():
        seen = np.unique(unwrap_seq(packets.seq[packets.ssrc == ssrc]))
        gaps = np.diff(seen) - 1
        gaps = gaps[(gaps > 0) & (gaps <= MAX_DROPOUT)]  # a larger jump is a restart, not loss
        received += int(seen.shape[0])
        lost += int(gaps.sum())
        runs += int(gaps.shape[0])
    if runs == 0:
        return 1.0
    p = runs / received  # received -> lost transitions per received packet
    q = runs / lost  # lost -> received transitions per lost packet
    return 1.0 / (p + q)


MAX_LOSS_BURSTS = 200  # per leg: enough to draw and investigate a bad call, bounded for a worse one


@dataclass(frozen=True, slots=True)
class LossBurst:
    """Packets that never arrived: ``packets`` sequence numbers missing between two received
    packets, from about ``start_ns`` (the packet before, plus one packet time) to ``end_ns`` (the
    arrival of the packet after)."""

    start_ns: int
    end_ns: int
    packets: int


def loss_bursts(packets: RtpPackets, limit: int = MAX_LOSS_BURSTS) -> list[LossBurst]:
    """The leg's losses by sequence number, per SSRC, in time order (the first ``limit``).
    Telephone-events and comfort noise share the audio's sequence numbers, so they leave no gap;
    a jump of more than RFC 3550's ``MAX_DROPOUT`` is a restart, not loss."""
    bursts: list[LossBurst] = []
    for ssrc in np.unique(packets.ssrc).tolist():
        rows = np.flatnonzero(packets.ssrc == ssrc)
        ext = unwrap_seq(packets.seq[rows])
        order = np.argsort(ext, kind="stable")
        ext, arrival = ext[order], packets.ts_ns[rows][order]
        first = np.concatenate(([True], ext[1:] != ext[:-1]))  # duplicates: the first copy
        ext, arrival = ext[first], arrival[first]
        step = np.diff(ext)
        for g in np.flatnonzero((step > 1) & (step <= MAX_DROPOUT)).tolist():
            before, after, missing = int(arrival[g]), int(arrival[g + 1]), int(step[g]) - 1
            start = before + max(0, after - before) // (missing + 1)
            bursts.append(LossBurst(min(start, after), after, missing))
    bursts.sort(key=lambda b: b.start_ns)
    return bursts[:limit]


def leg_codecs(leg: CapturedLeg) -> list[str]:
    """The leg's audio encodings, most used first: RFC 4733 events, comfort noise, FEC and other
    non-audio payloads left out (as the codec registry defines audio); an unknown payload type is
    named ``PT<n>``."""
    if len(leg.packets) == 0:
        return []
    types, counts = np.unique(leg.packets.payload_type, return_counts=True)
    names: list[str] = []
    for pt in types[np.argsort(-counts, kind="stable")].tolist():
        fmt = format_for(int(pt), leg.formats)
        name = fmt.encoding if fmt is not None else f"PT{pt}"
        if (fmt is None or is_audio_format(fmt)) and name not in names:
            names.append(name)
    return names


def main_codec(leg: CapturedLeg) -> str:
    """The leg's most used audio encoding, or ``""``."""
    codecs = leg_codecs(leg)
    return codecs[0] if codecs else ""


@dataclass(frozen=True, slots=True)
class LegQuality:
    """The E-model inputs and result of one leg (see the module docstring)."""

    codec: str
    packets_received: int  # packets - duplicates
    loss_percent: float  # Ppl: lost / expected
    burst_ratio: float
    delay_ms: float  # the one-way delay proxy
    r_factor: float | None
    mos: float | None  # None: no audio, or a codec without planning values


def leg_quality(stats: LegStats, leg: CapturedLeg | None) -> LegQuality:
    """Quality of one leg from its timeline statistics and packets."""
    codec = main_codec(leg) if leg is not None and len(leg.packets) else ""
    loss = 100.0 * stats.lost / stats.expected if stats.expected > 0 else 0.0
    burst = burst_ratio(leg.packets) if leg is not None and stats.lost > 0 else 1.0
    values = IMPAIRMENTS.get(codec.upper())
    r = None
    if values is not None and stats.expected > 0:
        r = r_factor(values, loss, burst, stats.jitter_mean_ms)
    return LegQuality(
        codec=codec,
        packets_received=stats.packets - stats.duplicates,
        loss_percent=loss,
        burst_ratio=burst,
        delay_ms=one_way_delay_ms(stats.jitter_mean_ms),
        r_factor=r,
        mos=None if r is None else mos_from_r(r),
    )
