"""A captured call to one stereo recording: caller left, callee right, on the capture clock.

Both legs are placed on the same clock (the capture's ``ts_ns``) by :mod:`decode.timeline`,
so a word said at second 5 of the call sits at second 5 in both channels, whatever each
phone's RTP clock, jitter, loss or drift. The recording spans the call's media: from the
first audio of either leg (early media included) to the end of the last audio of either
leg, not from INVITE to BYE, which is how a recording "longer than the call" is avoided.

Rendering also gives each leg's RFC 4733 key presses (:mod:`decode.events`, on the audio's
clock) and quality estimate (:mod:`decode.quality`).

Comfort noise (RFC 3389, ``CN``): a sender that stops sending in silence may send a CN packet
whose first byte is the background noise level in -dBov (0 dBov: a full-scale square wave, so
RMS 32767 here). The receiver plays noise at that level until the next packet. Here the noise
is white (the optional spectral coefficients are ignored), seeded per call and leg so a
recording renders the same every time, and lasts from the CN packet's timestamp (mapped
through the leg's audio anchor like an event, else its arrival) until the next audio or CN
packet of the leg, at most :data:`CN_MAX_FILL_NS` (a hold or a stream that simply ends after a
CN packet is not filled for longer). Audio always wins where both overlap, CN never moves or
extends the recording's span, and a level of 127 (or ``comfort_noise=False``) leaves silence.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CapturedCall, CapturedLeg
from callrec.decode.codecs import format_for
from callrec.decode.events import DtmfEvent, anchored_time, call_dtmf_events
from callrec.decode.quality import LegQuality, leg_quality
from callrec.decode.timeline import LegStats, LegTimeline, analyse_leg

DEFAULT_RATE_HZ = 8000  # used only when no leg has audio (an empty recording)
# Column order of the stereo samples: what the caller said, then what the callee said.
CHANNELS = (CALLER_TO_CALLEE, CALLEE_TO_CALLER)
NS = 1_000_000_000
CN_ENCODING = "CN"
CN_MAX_FILL_NS = 5 * NS  # longest stretch one CN packet fills
FULL_SCALE_RMS = 32767.0  # 0 dBov (RFC 3389 section 3) in 16-bit PCM


@dataclass(frozen=True, slots=True)
class RenderedCall:
    """``samples`` is int16 of shape ``(n, 2)``: column 0 the caller (leg ``caller->callee``),
    column 1 the callee (leg ``callee->caller``). Sample 0 was heard at capture time
    ``start_ns``. A call without any audio has ``n == 0``: the caller writes no file.
    ``events``: both legs' RFC 4733 events in time order; ``quality``: per leg direction."""

    samples: npt.NDArray[np.int16]
    sample_rate_hz: int
    start_ns: int
    duration_s: float
    legs: dict[str, LegStats] = field(default_factory=dict)
    events: tuple[DtmfEvent, ...] = ()
    quality: dict[str, LegQuality] = field(default_factory=dict)


def render_call(
    call: CapturedCall, output_rate_hz: int | None = None, *, comfort_noise: bool = True
) -> RenderedCall:
    """Decode and place both legs of ``call`` into one stereo recording.

    The output rate is ``output_rate_hz`` if given, else the highest decoded rate of any
    leg (8 kHz for G.711), so a narrowband leg is converted up next to a wideband one and
    nothing is thrown away; all-G.711 calls stay at 8 kHz without resampling.
    ``comfort_noise=False`` leaves RFC 3389 comfort noise as silence.
    """
    if output_rate_hz is not None and output_rate_hz <= 0:
        raise ValueError(f"output rate must be positive, got {output_rate_hz}")
    legs = [call.legs.get(direction) for direction in CHANNELS]
    timelines = [analyse_leg(leg, direction) for leg, direction in zip(legs, CHANNELS, strict=True)]
    stats = {t.direction: t.stats for t in timelines}
    events = call_dtmf_events(call, {t.direction: t.anchors for t in timelines})
    quality = {t.direction: leg_quality(t.stats, leg) for t, leg in zip(timelines, legs, strict=True)}
    rates = set().union(*(t.sample_rates for t in timelines))
    rate = output_rate_hz or (max(rates) if rates else DEFAULT_RATE_HZ)
    firsts = [t.stats.first_media_ns for t in timelines if t.stats.first_media_ns is not None]
    if not firsts:
        empty = np.zeros((0, len(CHANNELS)), dtype=np.int16)
        return RenderedCall(empty, rate, call.started_ns, 0.0, stats, events, quality)
    start_ns = min(firsts)
    n_samples = max(t.end_index(start_ns, rate) for t in timelines)
    samples = np.zeros((n_samples, len(CHANNELS)), dtype=np.int16)  # a leg without media stays silent
    for column, (leg, timeline) in enumerate(zip(legs, timelines, strict=True)):
        spans = comfort_noise_spans(leg, timeline) if comfort_noise and leg is not None else []
        if spans:
            rng = np.random.default_rng(_noise_seed(call, timeline.direction))
            place_noise(samples[:, column], spans, start_ns, rate, rng)
        timeline.place_into(samples[:, column], start_ns, rate)  # audio over the noise
    return RenderedCall(samples, rate, start_ns, n_samples / rate, stats, events, quality)


@dataclass(frozen=True, slots=True)
class NoiseSpan:
    """Comfort noise at ``level`` -dBov over ``[start_ns, end_ns)`` of the capture clock."""

    start_ns: int
    end_ns: int
    level: int  # 0-127: the noise is ``-level`` dBov


def comfort_noise_spans(leg: CapturedLeg, timeline: LegTimeline) -> list[NoiseSpan]:
    """Where the leg's CN packets ask for noise (see the module docstring), in time order."""
    packets = leg.packets
    clocks: dict[int, int] = {}
    for pt in np.unique(packets.payload_type).tolist():
        fmt = format_for(int(pt), leg.formats)
        if fmt is not None and fmt.encoding.upper() == CN_ENCODING and fmt.clock_rate_hz > 0:
            clocks[int(pt)] = fmt.clock_rate_hz
    if not clocks:
        return []
    rows = np.flatnonzero(np.isin(packets.payload_type, list(clocks)) & (packets.payload_lengths >= 1))
    seen: set[tuple[int, int]] = set()
    found: list[tuple[int, int]] = []  # (start_ns, level)
    for row in rows.tolist():
        ssrc, seq = int(packets.ssrc[row]), int(packets.seq[row])
        if (ssrc, seq) in seen:  # a duplicate
            continue
        seen.add((ssrc, seq))
        arrival = int(packets.ts_ns[row])
        clock = clocks[int(packets.payload_type[row])]
        at = anchored_time(timeline.anchors, ssrc, clock, int(packets.rtp_ts[row]), arrival)
        level = int(packets.payload[int(packets.payload_offsets[row])]) & 0x7F
        found.append((arrival if at is None else at, level))
    if not found:
        return []
    found.sort()
    audio = [block.start_ns() for block in timeline.blocks]
    cn_starts = np.array([start for start, _ in found], dtype=np.int64)
    bounds = np.unique(np.concatenate([cn_starts, *audio]))  # where a later packet takes over
    following = np.searchsorted(bounds, cn_starts, side="right")
    spans = []
    for (start, level), index in zip(found, following.tolist(), strict=True):
        end = start + CN_MAX_FILL_NS
        if index < bounds.shape[0]:
            end = min(end, int(bounds[index]))
        spans.append(NoiseSpan(start, end, level))
    return spans


def place_noise(
    out: npt.NDArray[np.int16], spans: list[NoiseSpan], start_ns: int, rate_hz: int, rng: np.random.Generator
) -> None:
    """White noise of each span's level into ``out`` (sample 0 at ``start_ns``), clipped to it."""
    for span in spans:
        first = max(round((span.start_ns - start_ns) * rate_hz / NS), 0)
        last = min(round((span.end_ns - start_ns) * rate_hz / NS), out.shape[0])
        if last <= first:
            continue
        rms = FULL_SCALE_RMS * 10.0 ** (-span.level / 20.0)
        noise = np.rint(rng.standard_normal(last - first) * rms)
        out[first:last] = np.clip(noise, -32768, 32767).astype(np.int16)


def _noise_seed(call: CapturedCall, direction: str) -> int:
    """The same noise every time a call is rendered (crc32 of what identifies the call and leg)."""
    return zlib.crc32(f"{call.call_id}\0{call.started_ns}\0{direction}".encode())
