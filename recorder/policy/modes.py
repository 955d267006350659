"""Which stretches of a call are stored: on-demand start/stop, pause/resume and consent.

A rule decides *whether* a call may be recorded (:mod:`recorder.policy.rules`); this module decides
*which part*, from what happened during the call:

* **Signals**: key codes (RFC 4733 events and SIP INFO key presses, see :mod:`recorder.policy.controls`),
  the control header of in-dialog requests (``X-Record: start``), and commands given to the
  running capture (``callrec calls record|pause|resume``) arrive as :class:`Signal`\\ s in time order.
* **Consent** (rules with ``consent = "required"``): nothing before consent is stored. Consent is
  established when the announcement has been heard in full in the callee->caller audio
  (:mod:`decode.announce`), else when the consent header says so, else (last resort) ``after_s``
  seconds after the answer. It is declined by the header, by the caller keying the opt-out key
  before it is established, or by the call ending during the announcement; then nothing is stored.
* **On-demand** (``record = "on-demand"``): recording runs from each start to the next stop (or the
  end); without a start nothing is stored. ``record = "always"`` records from the first audio.
* **Pause**: from pause to resume (or the end) both channels are blanked (silence, or a soft tone),
  and key presses in the pause are redacted from the events: a card number keyed while paused is
  kept nowhere.

The stored recording is the recorded spans one after the other: what was not recorded is absent,
not silent. :class:`RecordingPlan` says where each span sits on the call's clock and in the file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from callrec.capture.model.calls import CallEvent, CapturedCall
from callrec.decode.announce import find_announcement
from callrec.decode.events import DtmfEvent
from callrec.decode.render import RenderedCall
from callrec.recorder.policy.controls import DECLINED, GRANTED, ConsentSettings, ControlSettings
from callrec.recorder.policy.rules import Decision

NS = 1_000_000_000
TONE_HZ = 400.0
TONE_LEVEL = 0.02  # about -34 dBFS: audible, far below speech
REDACTED = "redacted"


@dataclass(frozen=True, slots=True)
class Signal:
    """One request to change the recording: ``action`` is start, stop, pause or resume."""

    ts_ns: int
    action: str
    source: str  # e.g. "keys *1 (caller)", "X-Record header (callee)", "callrec calls pause (alice)"


@dataclass(frozen=True, slots=True)
class Span:
    start_ns: int
    end_ns: int
    by: str = ""  # what began it

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / NS


@dataclass(frozen=True, slots=True)
class Consent:
    """How consent went: ``state`` is established, declined, not-established or not-required."""

    state: str
    at_ns: int | None = None
    how: str = ""


@dataclass(slots=True)
class RecordingPlan:
    recorded: list[Span] = field(default_factory=list)
    paused: list[Span] = field(default_factory=list)
    consent: Consent = field(default_factory=lambda: Consent("not-required"))
    blocked: str | None = None  # why nothing is stored
    events: list[CallEvent] = field(default_factory=list)  # recording, pause and consent events

    def redacts(self, ts_ns: int) -> bool:
        """Whether a key pressed at ``ts_ns`` is redacted: inside a pause, or the resume key ending it."""
        return any(span.start_ns < ts_ns <= span.end_ns for span in self.paused)


def key_signals(dtmf: Iterable[tuple[int, str, str]], controls: ControlSettings) -> list[Signal]:
    """Key codes in ``(time, key, sender)`` presses: each sender's keys, in time order, build up a
    code while they follow each other within ``digit_gap_s``; a complete code is a signal at the
    time of its last key."""
    codes = controls.codes()
    longest = max(len(code) for code in codes)
    gap_ns = int(controls.digit_gap_s * NS)
    typed: dict[str, tuple[str, int]] = {}  # sender -> (keys so far, time of the last)
    found: list[Signal] = []
    for ts_ns, key, sender in sorted(dtmf):
        if controls.keyed_by != "any" and sender != controls.keyed_by:
            continue
        keys, last = typed.get(sender, ("", ts_ns))
        keys = (keys if ts_ns - last <= gap_ns else "") + key
        keys = keys[-longest:]
        for code, action in codes.items():
            if keys.endswith(code):
                found.append(Signal(ts_ns, action, f"keys {code} ({sender or 'unknown'})"))
                keys = ""
                break
        typed[sender] = (keys, ts_ns)
    return found


def header_signals(events: Iterable[CallEvent], header: str) -> list[Signal]:
    """``X-Record: start`` (stop, pause, resume) in in-dialog requests."""
    found = []
    for event in events:
        if event.kind == "header" and header and event.summary == header:
            action = event.detail.strip().lower()
            if action in ("start", "stop", "pause", "resume"):
                found.append(Signal(event.ts_ns, action, f"{header} header ({event.sender or 'unknown'})"))
    return found


def key_presses(call: CapturedCall, rendered: RenderedCall | None) -> list[tuple[int, str, str]]:
    """Every key press of the call (RFC 4733 from the media, SIP INFO from the signalling)."""
    presses = [(e.ts_ns, e.summary, e.sender) for e in call.events if e.kind == "dtmf"]
    events: Sequence[DtmfEvent] = rendered.events if rendered is not None else ()
    presses += [(d.start_ns, d.digit, d.sender) for d in events if len(d.digit) == 1]
    return sorted(presses)


def establish_consent(
    call: CapturedCall,
    rendered: RenderedCall,
    settings: ConsentSettings,
    presses: Sequence[tuple[int, str, str]],
) -> Consent:
    """When (and how) consent was established, or why it was not; see the module docstring."""
    answered = call.answered_ns if call.answered_ns is not None else rendered.start_ns
    at_ns: int | None = None
    how = ""
    declined = ""
    if settings.announcement is not None and rendered.samples.shape[0]:
        match = find_announcement(
            rendered.samples[:, 1],
            rendered.sample_rate_hz,
            settings.announcement,
            search_s=settings.search_s,
            min_score=settings.min_score,
        )
        if match is not None and match.complete:
            at_ns = rendered.start_ns + round(match.end_s * NS)
            how = f"announcement heard (match {match.score:.2f}, {match.end_s - match.start_s:.2f} s)"
        elif match is not None:
            declined = "the call ended during the announcement"
    for event in call.events:
        if settings.header and event.kind == "header" and event.summary == settings.header:
            value = event.detail.strip().lower()
            if value in DECLINED and (at_ns is None or event.ts_ns < at_ns):
                return Consent("declined", event.ts_ns, f"{settings.header}: {event.detail}")
            if value in GRANTED and at_ns is None and not declined:
                at_ns, how = event.ts_ns, f"{settings.header}: {event.detail}"
    if at_ns is None and not declined and settings.after_s is not None:
        timer = answered + round(settings.after_s * NS)
        if timer < call.ended_ns:
            at_ns, how = timer, f"{settings.after_s:g} s after the answer (no other sign of consent)"
    if settings.opt_out:
        for ts_ns, key, sender in presses:
            before = at_ns is None or ts_ns < at_ns
            if sender == "caller" and key == settings.opt_out and ts_ns >= answered and before:
                return Consent("declined", ts_ns, f"the caller keyed the opt-out key {key}")
    if declined:
        return Consent("declined", call.ended_ns, declined)
    if at_ns is None:
        missing = []
        if settings.announcement is not None:
            missing.append("the announcement was not heard")
        if settings.header:
            missing.append(f"no {settings.header} header")
        if settings.after_s is not None:
            missing.append(f"the call ended within {settings.after_s:g} s of the answer")
        return Consent("not-established", None, "; ".join(missing) or "no way to establish it is configured")
    return Consent("established", at_ns, how)


def plan_recording(
    call: CapturedCall,
    rendered: RenderedCall,
    decision: Decision,
    controls: ControlSettings,
    consent_settings: ConsentSettings,
    commands: Sequence[Signal] = (),
) -> RecordingPlan:
    """What of ``rendered`` may be stored (see the module docstring)."""
    plan = RecordingPlan()
    begin = rendered.start_ns
    end = begin + round(rendered.samples.shape[0] * NS / rendered.sample_rate_hz)
    presses = key_presses(call, rendered)
    signals = sorted(
        [*key_signals(presses, controls), *header_signals(call.events, controls.header), *commands],
        key=lambda s: s.ts_ns,
    )
    gate = begin
    if decision.consent == "required":
        plan.consent = establish_consent(call, rendered, consent_settings, presses)
        consent = plan.consent
        if consent.at_ns is not None:
            plan.events.append(CallEvent(consent.at_ns, "consent", consent.state, "", consent.how))
        if consent.state != "established" or consent.at_ns is None:
            plan.blocked = f"rule '{decision.rule}': consent {consent.state.replace('-', ' ')}: {consent.how}"
            return plan
        gate = consent.at_ns
    wanted = _spans(signals, "start", "stop", begin, end, initially=decision.record == "always")
    plan.recorded = _clip(wanted, gate, end)
    plan.paused = _clip(_spans(signals, "pause", "resume", begin, end, initially=False), begin, end)
    plan.events += _span_events(plan.recorded, "recording", "started", "stopped", end)
    plan.events += _span_events(plan.paused, "pause", "paused", "resumed", end)
    if not plan.recorded:
        if decision.record == "on-demand":
            plan.blocked = f"rule '{decision.rule}': record = on-demand and no start was asked for"
        else:
            plan.blocked = "nothing left to record after consent"
    return plan


def _spans(
    signals: Sequence[Signal], on: str, off: str, begin: int, end: int, *, initially: bool
) -> list[Span]:
    spans: list[Span] = []
    since: tuple[int, str] | None = (begin, "the rule") if initially else None
    for signal in signals:
        if signal.action == on and since is None:
            since = (max(signal.ts_ns, begin), signal.source)
        elif signal.action == off and since is not None:
            if signal.ts_ns > since[0]:
                spans.append(Span(since[0], min(signal.ts_ns, end), since[1]))
            since = None
    if since is not None and since[0] < end:
        spans.append(Span(since[0], end, since[1]))
    return [span for span in spans if span.end_ns > span.start_ns]


def _clip(spans: Sequence[Span], start: int, end: int) -> list[Span]:
    clipped = [Span(max(s.start_ns, start), min(s.end_ns, end), s.by) for s in spans]
    return [s for s in clipped if s.end_ns > s.start_ns]


def _span_events(spans: Sequence[Span], kind: str, begins: str, ends: str, end: int) -> list[CallEvent]:
    events = []
    for span in spans:
        events.append(CallEvent(span.start_ns, kind, begins, "", span.by))
        if span.end_ns < end:
            events.append(CallEvent(span.end_ns, kind, ends, "", ""))
    return events


def stored_samples(
    rendered: RenderedCall, plan: RecordingPlan, pause_fill: str = "silence"
) -> tuple[npt.NDArray[np.int16], list[tuple[Span, float]]]:
    """The samples to store (recorded spans one after another, pauses blanked) and where each span
    begins in them, in seconds."""
    rate = rendered.sample_rate_hz
    # blanking pauses writes into a copy; without pauses the rendered samples are used as they are
    samples = rendered.samples.copy() if plan.paused else rendered.samples
    for span in plan.paused:
        first, last = _index(span.start_ns, rendered), _index(span.end_ns, rendered)
        if pause_fill == "tone":
            t = np.arange(first, last) / rate
            tone = np.rint(np.sin(2 * math.pi * TONE_HZ * t) * TONE_LEVEL * 32767).astype(np.int16)
            samples[first:last] = tone[:, None]
        else:
            samples[first:last] = 0
    pieces = []
    placed: list[tuple[Span, float]] = []
    at = 0
    for span in plan.recorded:
        first, last = _index(span.start_ns, rendered), _index(span.end_ns, rendered)
        if last <= first:
            continue
        placed.append((span, at / rate))
        pieces.append(samples[first:last])
        at += last - first
    if not pieces:
        return np.zeros((0, samples.shape[1]), dtype=np.int16), []
    if len(pieces) == 1 and pieces[0].shape[0] == samples.shape[0]:
        return samples, placed
    return np.concatenate(pieces), placed


def _index(ts_ns: int, rendered: RenderedCall) -> int:
    index = round((ts_ns - rendered.start_ns) * rendered.sample_rate_hz / NS)
    return min(max(index, 0), rendered.samples.shape[0])
