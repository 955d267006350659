"""A captured call to one stereo recording: caller left, callee right, on the capture clock.

Both legs are placed on the same clock (the capture's ``ts_ns``) by :mod:`decode.timeline`,
so a word said at second 5 of the call sits at second 5 in both channels, whatever each
phone's RTP clock, jitter, loss or drift. The recording spans the call's media: from the
first audio of either leg (early media included) to the end of the last audio of either
leg, not from INVITE to BYE, which is how a recording "longer than the call" is avoided.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from capture.calls import CALLEE_TO_CALLER, CALLER_TO_CALLEE, CapturedCall
from decode.timeline import LegStats, analyse_leg

DEFAULT_RATE_HZ = 8000  # used only when no leg has audio (an empty recording)
# Column order of the stereo samples: what the caller said, then what the callee said.
CHANNELS = (CALLER_TO_CALLEE, CALLEE_TO_CALLER)


@dataclass(frozen=True, slots=True)
class RenderedCall:
    """``samples`` is int16 of shape ``(n, 2)``: column 0 the caller (leg ``caller->callee``),
    column 1 the callee (leg ``callee->caller``). Sample 0 was heard at capture time
    ``start_ns``. A call without any audio has ``n == 0``: the caller writes no file."""

    samples: npt.NDArray[np.int16]
    sample_rate_hz: int
    start_ns: int
    duration_s: float
    legs: dict[str, LegStats] = field(default_factory=dict)


def render_call(call: CapturedCall, output_rate_hz: int | None = None) -> RenderedCall:
    """Decode and place both legs of ``call`` into one stereo recording.

    The output rate is ``output_rate_hz`` if given, else the highest decoded rate of any
    leg (8 kHz for G.711), so a narrowband leg is converted up next to a wideband one and
    nothing is thrown away; all-G.711 calls stay at 8 kHz without resampling.
    """
    if output_rate_hz is not None and output_rate_hz <= 0:
        raise ValueError(f"output rate must be positive, got {output_rate_hz}")
    timelines = [analyse_leg(call.legs.get(direction), direction) for direction in CHANNELS]
    stats = {t.direction: t.stats for t in timelines}
    rates = set().union(*(t.sample_rates for t in timelines))
    rate = output_rate_hz or (max(rates) if rates else DEFAULT_RATE_HZ)
    firsts = [t.stats.first_media_ns for t in timelines if t.stats.first_media_ns is not None]
    if not firsts:
        return RenderedCall(np.zeros((0, len(CHANNELS)), dtype=np.int16), rate, call.started_ns, 0.0, stats)
    start_ns = min(firsts)
    n_samples = max(t.end_index(start_ns, rate) for t in timelines)
    samples = np.zeros((n_samples, len(CHANNELS)), dtype=np.int16)  # a leg without media stays silent
    for column, timeline in enumerate(timelines):
        timeline.place_into(samples[:, column], start_ns, rate)
    return RenderedCall(samples, rate, start_ns, n_samples / rate, stats)
