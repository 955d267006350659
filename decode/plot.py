"""A picture of a call: the two channels' waveforms on one time axis, with what happened on it.

:func:`plot_call` takes plain data (samples, rate, the recording's start, the catalogue's event
dicts, the answer's offset) and returns a matplotlib :class:`~matplotlib.figure.Figure` (no
pyplot, no display) that is ``width_px`` x ``height_px`` pixels when saved at its own dpi.

- One lane per channel (caller on top, callee below), sharing seconds from the recording's start;
  the wall-clock start (UTC) is in the title. Both lanes use one amplitude scale, so a quiet side
  looks quiet; each lane's label gives its peak in dBFS.
- Long stretches are drawn as a min/max envelope per pixel column (one reshape and two reductions),
  never as millions of points; a short window shows the samples themselves.
- Markers: the answer, re-INVITEs (hold when the offer is sendonly/recvonly/inactive or 0.0.0.0,
  resume when it is sendrecv again), BYE/CANCEL, DTMF digits (events of kind ``dtmf``, in their
  sender's lane) and pauses (kind ``pause``: a span from one such event to the next whose summary
  says it ends: "end", "stop" or "resume").
- Shaded red in the sender's lane: packet loss (events of kind ``loss`` with "duration N ms" in their
  detail, from the RTP sequence numbers), so silence in the audio is not mistaken for missing media.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MultipleLocator

DPI = 100
LANES = ("caller", "callee")
LANE_COLORS = ("#1f77b4", "#d95f02")
LOSS_COLOR = "#e41a1c"
PAUSE_COLOR = "#f2d36b"
DTMF_COLOR = "#b8327a"
# marker kind -> (legend text, colour, line style)
MARKER_STYLE = {
    "answer": ("answered", "#1b9e77", "-"),
    "hold": ("hold (re-INVITE)", "#7570b3", "--"),
    "resume": ("resume (re-INVITE)", "#7570b3", "-."),
    "reinvite": ("re-INVITE", "#7570b3", ":"),
    "end": ("BYE / CANCEL", "#333333", "-"),
}
_HOLD = re.compile(r"\b(sendonly|recvonly|inactive)\b|\b0\.0\.0\.0\b")
_PAUSE_ENDS = re.compile(r"\b(end|ends|ended|stop|stopped|resume|resumed)\b", re.IGNORECASE)


class PlotError(ValueError):
    """A window or size the picture cannot have."""


@dataclass(frozen=True, slots=True)
class Marker:
    """Something that happened at ``t_s`` seconds from the recording's start. ``lane`` is the
    channel it belongs to (DTMF), ``None`` for the whole call."""

    t_s: float
    kind: str
    label: str
    lane: int | None = None


def ns_from_iso(text: str) -> int:
    """Integer nanoseconds since the epoch of a catalogue time (``2026-11-28T14:58:12.523Z``)."""
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = when.replace(tzinfo=when.tzinfo or UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def events_in_file(
    events: Sequence[Mapping[str, Any]], spans: Sequence[Mapping[str, Any]], start_ns: int
) -> list[dict[str, Any]]:
    """The events of a recording stored as several spans (on-demand: what was not recorded is
    absent), moved onto the file's clock: an event at call time t inside a span that begins at
    ``from`` and sits ``at_s`` into the file is drawn at ``start_ns + at_s + (t - from)``; events
    outside every span are left out (a span's own start and end are kept)."""
    bounds = [
        (ns_from_iso(str(s["from"])), ns_from_iso(str(s["to"])), float(s.get("at_s", 0.0))) for s in spans
    ]
    moved = []
    for event in events:
        t = _event_s(event, 0)
        if t is None:
            continue
        ts = round(t * 1e9)
        for first, last, at_s in bounds:
            if first <= ts <= last:
                moved.append({**event, "ts_ns": start_ns + round(at_s * 1e9) + ts - first})
                break
    return moved


def _event_s(event: Mapping[str, Any], start_ns: int) -> float | None:
    ts = event.get("ts_ns")
    if ts is None and event.get("at"):
        ts = ns_from_iso(str(event["at"]))
    return None if ts is None else (int(ts) - start_ns) / 1e9


def call_markers(
    events: Sequence[Mapping[str, Any]], start_ns: int, answered_s: float | None
) -> tuple[list[Marker], list[tuple[float, float | None]]]:
    """The markers and the pause spans (start, end or ``None`` if still paused) of a call's
    events (catalogue dicts: ``ts_ns`` or ``at``, ``kind``, ``summary``, ``sender``, ``detail``)."""
    markers = [Marker(answered_s, "answer", "answered")] if answered_s is not None else []
    pauses: list[tuple[float, float | None]] = []
    held = False
    for event in events:
        t = _event_s(event, start_ns)
        kind, summary = event.get("kind"), str(event.get("summary") or "")
        detail, sender = str(event.get("detail") or ""), str(event.get("sender") or "")
        if t is None or detail == "retransmission":
            continue
        if kind == "dtmf":
            markers.append(Marker(t, "dtmf", summary, LANES.index(sender) if sender in LANES else 0))
        elif kind == "pause":
            if pauses and pauses[-1][1] is None:
                if _PAUSE_ENDS.search(summary):
                    pauses[-1] = (pauses[-1][0], t)
            elif not _PAUSE_ENDS.search(summary):
                pauses.append((t, None))
        elif kind == "sip" and summary == "INVITE" and answered_s is not None and t > answered_s:
            hold = bool(_HOLD.search(detail))
            which = "hold" if hold else "resume" if held and "sendrecv" in detail else "reinvite"
            held = hold or (held and which == "reinvite")
            markers.append(Marker(t, which, f"{MARKER_STYLE[which][0].split(' ')[0]} ({sender})"))
        elif kind == "sip" and summary in ("BYE", "CANCEL"):
            markers.append(Marker(t, "end", f"{summary} ({sender})" if sender else summary))
    return markers, pauses


_DURATION = re.compile(r"duration (\d+(?:\.\d+)?) ms")


def loss_spans(events: Sequence[Mapping[str, Any]], start_ns: int) -> list[tuple[float, float, int]]:
    """``(start s, end s, lane)`` of the call's packet-loss events (kind ``loss``)."""
    spans = []
    for event in events:
        t = _event_s(event, start_ns)
        found = _DURATION.search(str(event.get("detail") or ""))
        if event.get("kind") != "loss" or t is None or found is None:
            continue
        sender = str(event.get("sender") or "")
        spans.append((t, t + float(found.group(1)) / 1000, LANES.index(sender) if sender in LANES else 0))
    return spans


def envelope(x: npt.NDArray[np.int16], columns: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Minimum and maximum of each block of ``ceil(len(x) / columns)`` samples, and that size."""
    per = max(1, -(-len(x) // max(1, columns)))
    full = len(x) // per * per
    blocks = x[:full].reshape(-1, per)
    lo, hi = blocks.min(axis=1), blocks.max(axis=1)
    if full < len(x):
        lo, hi = np.append(lo, x[full:].min()), np.append(hi, x[full:].max())
    return lo, hi, per


def _clock(seconds: float, _pos: object = None) -> str:
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _utc(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _window(
    n: int, rate: int, from_s: float | None, to_s: float | None, markers: Sequence[Marker]
) -> tuple[float, float]:
    """The time span shown: by default the recording, widened to the markers (an answer just
    before the first packet, a BYE after the last); it must overlap the recording."""
    times = [m.t_s for m in markers]
    lo = min([0.0, *times]) if from_s is None else from_s
    hi = max([n / rate, *times]) if to_s is None else to_s
    if lo >= n / rate:
        raise PlotError(f"the recording is {n / rate:.3f} s long: nothing to draw from {lo:g} s on")
    if hi <= lo:
        raise PlotError(f"the window must end after it starts, not at {hi:g} s (from {lo:g} s)")
    if hi <= 0:
        raise PlotError(f"the recording starts at 0 s: nothing to draw before {hi:g} s")
    return lo, hi


def plot_call(
    samples: npt.ArrayLike,
    sample_rate_hz: int,
    *,
    start_ns: int | None = None,
    events: Sequence[Mapping[str, Any]] = (),
    answered_s: float | None = None,
    width_px: int = 1600,
    height_px: int = 600,
    from_s: float | None = None,
    to_s: float | None = None,
    title: str = "Call",
) -> Figure:
    """The picture of a recording (int16, ``(n, channels)``; caller left); see the module docstring.
    ``start_ns`` is the recording's first sample (UTC ns), event times count from it."""
    x = np.asarray(samples)
    x = x.reshape(-1, 1) if x.ndim == 1 else x
    if x.dtype != np.int16 or x.ndim != 2 or not 1 <= x.shape[1] <= 2 or sample_rate_hz <= 0:
        raise PlotError(f"expected int16 samples of one or two channels, got {x.dtype} {x.shape}")
    if width_px < 300 or height_px < 200:
        raise PlotError(f"a {width_px}x{height_px} picture is too small (at least 300x200)")
    markers, pauses = call_markers(events if start_ns is not None else (), start_ns or 0, answered_s)
    losses = loss_spans(events if start_ns is not None else (), start_ns or 0)
    lo_s, hi_s = _window(x.shape[0], sample_rate_hz, from_s, to_s, markers)
    window = x[max(0, round(lo_s * sample_rate_hz)) : max(0, round(hi_s * sample_rate_hz))]

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    axes: list[Axes] = list(fig.subplots(x.shape[1], 1, sharex=True, squeeze=False)[:, 0])
    peak = max(1, int(np.abs(window.astype(np.int32)).max(initial=0)))
    handles: dict[str, Artist] = {}
    for lane, ax in enumerate(axes):
        _draw_lane(ax, x[:, lane], sample_rate_hz, (lo_s, hi_s), width_px, lane, handles)
        spans = [(a, max(b - a, 0.003 * (hi_s - lo_s))) for a, b, in_lane in losses if in_lane == lane]
        if spans:
            ax.broken_barh(
                spans, (0, 1), transform=ax.get_xaxis_transform(), color=LOSS_COLOR, alpha=0.5, zorder=0
            )
            handles["packet loss"] = Patch(color=LOSS_COLOR, alpha=0.5)
        ax.set_ylim(-peak * 1.08, peak * 1.08)
        ax.set_xlim(lo_s, hi_s)
    for start, end in pauses:
        a, b = max(start, lo_s), hi_s if end is None else min(end, hi_s)
        if a < b:
            handles["paused"] = Patch(color=PAUSE_COLOR, alpha=0.45)
            for ax in axes:
                ax.axvspan(a, b, color=PAUSE_COLOR, alpha=0.45, lw=0, zorder=0.5)
    _draw_markers(axes, [m for m in markers if lo_s <= m.t_s <= hi_s], lo_s + 0.85 * (hi_s - lo_s), handles)

    last = axes[-1]
    if hi_s - lo_s >= 300:
        step = next((s for s in (60, 120, 300, 600, 900, 1800, 3600) if (hi_s - lo_s) / s <= 12), 7200)
        last.xaxis.set_major_locator(MultipleLocator(step))
        last.xaxis.set_major_formatter(FuncFormatter(_clock))
        last.set_xlabel("time from the start of the recording (h:mm:ss)")
    else:
        last.set_xlabel("seconds from the start of the recording")
    when = f" · recording starts {_utc(start_ns)} UTC" if start_ns is not None else ""
    shown = (
        f" · showing {lo_s:g}-{hi_s:g} s of {x.shape[0] / sample_rate_hz:.1f} s"
        if (from_s is not None or to_s is not None)
        else f" · {x.shape[0] / sample_rate_hz:.1f} s of audio"
    )
    fig.suptitle(f"{title}{when}{shown}", x=0.01, ha="left", fontsize=11)
    order = [*LANES, "packet loss", "paused", *(style[0] for style in MARKER_STYLE.values()), "DTMF digit"]
    labels = sorted(handles, key=lambda k: next((i for i, o in enumerate(order) if k.startswith(o)), 99))
    fig.legend(
        [handles[k] for k in labels],
        labels,
        loc="outside lower center",
        ncols=max(1, min(len(labels), width_px // 150)),
        frameon=False,
    )
    return fig


def _draw_lane(
    ax: Axes, x: npt.NDArray[np.int16], rate: int, span: tuple[float, float], width_px: int, lane: int,
    handles: dict[str, Artist],
) -> None:  # fmt: skip
    """One channel (all of it: a silence that begins before the window still counts) in ``span``."""
    color, name = LANE_COLORS[lane % 2], LANES[lane] if lane < len(LANES) else f"channel {lane + 1}"
    i0, i1 = (min(len(x), max(0, round(t * rate))) for t in span)
    shown, columns = x[i0:i1], round(width_px * (i1 - i0) / ((span[1] - span[0]) * rate))
    if len(shown) > 4 * columns:
        lo, hi, per = envelope(shown, columns)
        t = (i0 + np.arange(len(lo)) * per + per / 2) / rate
        ax.fill_between(t, lo, hi, step="mid", color=color, lw=0.6, zorder=2)
    else:
        ax.plot((i0 + np.arange(len(shown))) / rate, shown, color=color, lw=0.8, zorder=2)
    handles[name] = Patch(color=color)
    peak = int(np.abs(shown.astype(np.int32)).max(initial=0))
    level = f"peak {round(20 * np.log10(peak / 32768)) + 0} dBFS" if peak else "silent"
    ax.set_ylabel(f"{name}\n{level}", fontsize=9)
    ax.set_yticks([])
    ax.axhline(0, color="#999999", lw=0.4, zorder=1)
    ax.grid(axis="x", color="#eeeeee", lw=0.6)
    ax.set_axisbelow(True)


def _draw_markers(axes: list[Axes], markers: list[Marker], flip_s: float, handles: dict[str, Artist]) -> None:
    """Marker lines across every lane, named at the top (left of the line after ``flip_s``)."""
    digits = 0
    for marker in markers:
        if marker.kind == "dtmf":
            ax = axes[min(marker.lane or 0, len(axes) - 1)]
            ax.text(
                marker.t_s,
                0.9 - 0.14 * (digits % 2),
                marker.label,
                transform=ax.get_xaxis_transform(),
                ha="center",
                va="top",
                fontsize=9,
                fontweight="bold",
                color=DTMF_COLOR,
                zorder=5,
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": DTMF_COLOR, "lw": 0.8},
            )
            digits += 1
            handles["DTMF digit"] = Line2D([], [], ls="", marker="s", mfc="white", mec=DTMF_COLOR)
            continue
        legend, color, style = MARKER_STYLE[marker.kind]
        for ax in axes:
            ax.axvline(marker.t_s, color=color, ls=style, lw=1.3, zorder=4)
        axes[0].text(
            marker.t_s,
            0.98,
            f"{marker.label} " if marker.t_s > flip_s else f" {marker.label}",
            transform=axes[0].get_xaxis_transform(),
            ha="right" if marker.t_s > flip_s else "left",
            va="top",
            fontsize=8,
            color=color,
            zorder=5,
            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
        )
        handles[legend] = Line2D([], [], color=color, ls=style, lw=1.3)
