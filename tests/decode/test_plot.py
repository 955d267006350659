"""The picture of a call: size, ink in the right lane at the right time, markers, envelopes."""

from __future__ import annotations

import io
import struct
import time

import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.image import imread

from callrec.decode.plot import (
    LANE_COLORS,
    PlotError,
    call_markers,
    envelope,
    loss_spans,
    ns_from_iso,
    plot_call,
)

RATE = 8000
START_NS = ns_from_iso("2026-11-28T14:58:12.526Z")


def tone(seconds: float, freq: float, level: int = 12000) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def synthetic_call() -> np.ndarray:
    """10 s: the caller talks from 0.5 to 4 s, the callee from 5 to 9.5 s; zeros elsewhere."""
    samples = np.zeros((10 * RATE, 2), dtype=np.int16)
    samples[int(0.5 * RATE) : 4 * RATE, 0] = tone(3.5, 300)
    samples[5 * RATE : int(9.5 * RATE), 1] = tone(4.5, 450, 8000)
    return samples


def event(t: float, kind: str, summary: str, sender: str = "caller", detail: str = "") -> dict:
    return {
        "ts_ns": START_NS + int(t * 1e9),
        "kind": kind,
        "summary": summary,
        "sender": sender,
        "detail": detail,
    }


EVENTS = [
    event(-0.4, "sip", "INVITE", detail="sdp 198.51.100.1:4000 sendrecv PCMU"),
    event(0.3, "sip", "200 OK", "callee", "sdp 198.51.100.2:5000 sendrecv PCMU"),
    event(3.2, "dtmf", "5"),
    event(3.4, "dtmf", "#"),
    event(3.6, "pause", "pause", ""),
    event(3.9, "pause", "resume", ""),
    event(6.0, "sip", "INVITE", detail="sdp 198.51.100.1:4000 sendonly PCMU"),
    event(6.01, "sip", "INVITE", detail="retransmission"),
    event(7.0, "sip", "INVITE", detail="sdp 198.51.100.1:4000 sendrecv PCMU"),
    event(8.0, "loss", "12 packets lost", "callee", "duration 240 ms"),
    event(9.8, "sip", "BYE", "callee"),
]


def render(fig: Figure) -> np.ndarray:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (round(fig.get_figwidth() * fig.dpi), round(fig.get_figheight() * fig.dpi))
    return imread(io.BytesIO(data))[:, :, :3]


def lane_ink(fig: Figure, image: np.ndarray, lane: int, t: float, color: str) -> int:
    """Pixels of ``color`` in the lane's pixel column at time ``t`` (after rendering)."""
    ax = fig.axes[lane]
    x = round(float(ax.transData.transform((t, 0))[0]))
    box = ax.get_window_extent()
    top, bottom = image.shape[0] - round(box.y1), image.shape[0] - round(box.y0)
    column = image[top:bottom, x]
    rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(column - rgb).max(axis=1) < 0.06).sum())


def test_png_of_the_requested_size_with_ink_where_each_side_talks() -> None:
    fig = plot_call(synthetic_call(), RATE, start_ns=START_NS, events=EVENTS, answered_s=0.3)
    image = render(fig)
    assert image.shape[:2] == (600, 1600)
    caller, callee = LANE_COLORS
    lane_px = fig.axes[0].get_window_extent().height
    assert lane_ink(fig, image, 0, 1.5, caller) > 0.5 * lane_px  # caller talks
    assert lane_ink(fig, image, 1, 8.5, callee) > 0.3 * lane_px  # callee talks, quieter
    assert lane_ink(fig, image, 0, 8.5, caller) <= 2  # at most the zero line
    assert lane_ink(fig, image, 1, 1.5, callee) <= 2
    # packet loss is shaded in the sender's lane only; silence (zeros) is not mistaken for loss
    assert _tinted(fig, image, 1, 8.1)
    assert (
        not _tinted(fig, image, 0, 8.1)
        and not _tinted(fig, image, 0, 4.5)
        and not _tinted(fig, image, 1, 2.0)
    )


def _tinted(fig: Figure, image: np.ndarray, lane: int, t: float) -> bool:
    """Whether the lane's pixel column at ``t`` has the (half transparent) loss red in it."""
    ax = fig.axes[lane]
    x = round(float(ax.transData.transform((t, 0))[0]))
    box = ax.get_window_extent()
    column = image[image.shape[0] - round(box.y1) : image.shape[0] - round(box.y0), x]
    reddish = (column[:, 0] > 0.85) & (column[:, 1] < 0.7) & (column[:, 2] < 0.7)
    return bool(reddish.sum() > 0.25 * column.shape[0])


def test_markers_and_legend() -> None:
    fig = plot_call(synthetic_call(), RATE, start_ns=START_NS, events=EVENTS, answered_s=0.3)
    texts = {t.get_text().strip() for ax in fig.axes for t in ax.texts}
    assert {"answered", "hold (caller)", "resume (caller)", "BYE (callee)", "5", "#"} <= texts
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [
        "caller",
        "callee",
        "packet loss",
        "paused",
        "answered",
        "hold (re-INVITE)",
        "resume (re-INVITE)",
        "BYE / CANCEL",
        "DTMF digit",
    ]
    title = fig.get_suptitle()
    assert "2026-11-28 14:58:12.526 UTC" in title and "10.0 s of audio" in title
    assert [ax.get_xlim() for ax in fig.axes] == [(0.0, 10.0)] * 2


def test_without_events_there_are_no_markers() -> None:
    fig = plot_call(synthetic_call(), RATE)
    render(fig)
    assert not any(ax.texts for ax in fig.axes) and not any(ax.lines[1:] for ax in fig.axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["caller", "callee"]


def test_call_markers_classifies_events() -> None:
    markers, pauses = call_markers(EVENTS, START_NS, 0.3)
    assert [(round(m.t_s, 2), m.kind, m.label, m.lane) for m in markers] == [
        (0.3, "answer", "answered", None),
        (3.2, "dtmf", "5", 0),
        (3.4, "dtmf", "#", 0),
        (6.0, "hold", "hold (caller)", None),
        (7.0, "resume", "resume (caller)", None),
        (9.8, "end", "BYE (callee)", None),
    ]
    assert [(round(a, 2), round(b or 0, 2)) for a, b in pauses] == [(3.6, 3.9)]
    # before the answer an INVITE is the call's own (or an authenticated retry), not a re-INVITE
    assert [m.kind for m in call_markers(EVENTS[:1], START_NS, None)[0]] == []
    inactive = [event(2, "sip", "INVITE", detail="sdp 0.0.0.0:4000 sendrecv PCMU")]
    assert [m.kind for m in call_markers(inactive, START_NS, 1.0)[0]] == ["answer", "hold"]
    callee_digit = call_markers([event(1, "dtmf", "9", "callee")], START_NS, None)[0]
    assert callee_digit[0].lane == 1
    assert call_markers([event(1, "pause", "paused")], START_NS, None)[1] == [(1.0, None)]


def test_window_zooms_and_plots_samples() -> None:
    fig = plot_call(
        synthetic_call(), RATE, start_ns=START_NS, events=EVENTS, answered_s=0.3, from_s=3, to_s=3.5
    )
    assert fig.axes[0].get_xlim() == (3.0, 3.5)
    line = fig.axes[0].lines[0]  # the waveform itself, not an envelope
    assert len(line.get_xdata()) == RATE // 2
    assert "showing 3-3.5 s of 10.0 s" in fig.get_suptitle()
    texts = {t.get_text() for ax in fig.axes for t in ax.texts}
    assert texts == {"5", "#"}  # only what happens in the window
    render(fig)


def test_markers_just_outside_the_media_widen_the_default_window() -> None:
    fig = plot_call(
        synthetic_call(), RATE, start_ns=START_NS, events=[event(10.4, "sip", "BYE")], answered_s=-0.2
    )
    assert fig.axes[0].get_xlim() == pytest.approx((-0.2, 10.4))
    render(fig)


def test_bad_windows_and_sizes_are_refused() -> None:
    samples = synthetic_call()
    with pytest.raises(PlotError, match="must end after it starts"):
        plot_call(samples, RATE, from_s=5, to_s=5)
    with pytest.raises(PlotError, match="10.000 s long: nothing to draw from 12 s on"):
        plot_call(samples, RATE, from_s=12)
    with pytest.raises(PlotError, match="nothing to draw before -1 s"):
        plot_call(samples, RATE, from_s=-3, to_s=-1)
    with pytest.raises(PlotError, match="too small"):
        plot_call(samples, RATE, width_px=100)
    with pytest.raises(PlotError, match="int16"):
        plot_call(samples.astype(np.float32), RATE)


def test_a_long_call_is_an_envelope_per_pixel_column() -> None:
    minutes = 30
    rng = np.random.default_rng(5)
    samples = rng.integers(-3000, 3000, (minutes * 60 * RATE, 2), dtype=np.int16)
    started = time.perf_counter()
    fig = plot_call(samples, RATE, start_ns=START_NS, width_px=1600)
    image = render(fig)
    assert time.perf_counter() - started < 10  # about 1 s
    fills = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]
    vertices = sum(len(path.vertices) for c in fills for path in c.get_paths())
    assert 0 < vertices < 20 * 1600  # not 14 million points
    labels = [label.get_text() for label in fig.axes[-1].get_xticklabels()]
    assert {"5:00", "10:00", "30:00"} <= set(labels)
    assert lane_ink(fig, image, 0, 900, LANE_COLORS[0]) > 0.2 * fig.axes[0].get_window_extent().height


def test_loss_spans_from_events() -> None:
    spans = loss_spans(EVENTS, START_NS)
    assert [(round(a, 3), round(b, 3), lane) for a, b, lane in spans] == [(8.0, 8.24, 1)]


def test_envelope() -> None:
    x = np.array([1, -2, 3, 0, 5, -6, 7], dtype=np.int16)
    lo, hi, per = envelope(x, 3)
    assert per == 3 and lo.tolist() == [-2, -6, 7] and hi.tolist() == [3, 5, 7]
    lo, hi, per = envelope(x, 100)
    assert per == 1 and lo.tolist() == x.tolist()


def test_ns_from_iso() -> None:
    assert ns_from_iso("1970-01-01T00:00:01.250Z") == 1_250_000_000
    assert ns_from_iso("2026-11-28T14:58:12.526Z") == 1_795_877_892_526_000_000
