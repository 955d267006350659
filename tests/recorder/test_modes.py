"""Recording modes without captures: key codes, control headers, spans, consent, stored samples and the
``[controls]`` / ``[consent]`` tables (the lab calls of test_recording_modes_lab.py run the same code on
real softphone audio)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.model.calls import CallEvent, CallState, CapturedCall
from callrec.capture.sip.dialog import info_digit
from callrec.decode.announce import announcement_from_samples, find_announcement
from callrec.decode.formats.wav import wav_chunks
from callrec.decode.render import RenderedCall
from callrec.recorder.config import ConfigError, load_config
from callrec.recorder.policy.controls import ConsentSettings, ControlSettings, parse_consent, parse_controls
from callrec.recorder.policy.direction import PolicyError
from callrec.recorder.policy.modes import (
    NS,
    Signal,
    establish_consent,
    header_signals,
    key_signals,
    plan_recording,
    stored_samples,
)
from callrec.recorder.policy.rules import Decision

RATE = 8000
T0 = 1_700_000_000 * NS
CONTROLS = ControlSettings()


def decision(record: str = "always", consent: str = "not-required") -> Decision:
    return Decision(
        rule="r",
        reason="test",
        matched=True,
        record=record,
        min_duration=0.0,
        format="wav",
        retention="default",
        consent=consent,
        channels="both",
    )


def call(events: tuple[CallEvent, ...] = (), seconds: float = 20.0, answered_s: float = 0.0) -> CapturedCall:
    return CapturedCall(
        call_id="c1",
        state=CallState.COMPLETED,
        started_ns=T0,
        answered_ns=T0 + round(answered_s * NS),
        ended_ns=T0 + round(seconds * NS),
        end_reason="bye",
        caller="100",
        callee="200",
        caller_uri="sip:100@x",
        callee_uri="sip:200@x",
        request_uri="sip:200@x",
        events=events,
    )


def rendered(seconds: float = 20.0, samples: np.ndarray | None = None) -> RenderedCall:
    if samples is None:
        t = np.arange(round(seconds * RATE))
        samples = np.stack([(t % 100) + 1, -((t % 50) + 1)], axis=1).astype(np.int16)  # never silent
    return RenderedCall(samples, RATE, T0, samples.shape[0] / RATE)


def keys(*presses: tuple[float, str, str]) -> tuple[CallEvent, ...]:
    """SIP INFO key presses at seconds after T0: (seconds, key, sender)."""
    return tuple(CallEvent(T0 + round(s * NS), "dtmf", k, who, "SIP INFO") for s, k, who in presses)


def seconds(ns: int) -> float:
    return round((ns - T0) / NS, 3)


# -- key codes and headers --------------------------------------------------------------------------


def test_codes_need_their_keys_within_the_gap_and_from_one_sender() -> None:
    presses = [
        (T0 + 1 * NS, "*", "caller"),
        (T0 + 1 * NS + NS // 4, "1", "caller"),  # *1: start at 1.25 s
        (T0 + 5 * NS, "*", "caller"),
        (T0 + 9 * NS, "2", "caller"),  # 4 s apart: no code
        (T0 + 10 * NS, "*", "callee"),
        (T0 + 10 * NS + NS // 2, "2", "caller"),  # * from the callee, 2 from the caller: no code
        (T0 + 12 * NS, "7", "caller"),
        (T0 + 12 * NS + 1, "*", "caller"),
        (T0 + 12 * NS + 2, "3", "caller"),  # 7*3: ends with *3, a pause
    ]
    found = key_signals(presses, CONTROLS)
    assert [(seconds(s.ts_ns), s.action, s.source) for s in found] == [
        (1.25, "start", "keys *1 (caller)"),
        (12.0, "pause", "keys *3 (caller)"),
    ]
    only_callee = key_signals(presses, replace(CONTROLS, keyed_by="callee"))
    assert only_callee == []


def test_headers_of_in_dialog_requests_are_signals() -> None:
    events = [
        CallEvent(T0 + 2 * NS, "header", "x-record", "caller", "Start"),
        CallEvent(T0 + 3 * NS, "header", "x-record", "caller", "bogus"),
        CallEvent(T0 + 4 * NS, "header", "x-other", "caller", "stop"),
        CallEvent(T0 + 5 * NS, "header", "x-record", "callee", "pause"),
    ]
    found = header_signals(events, "x-record")
    assert [(seconds(s.ts_ns), s.action) for s in found] == [(2.0, "start"), (5.0, "pause")]
    assert found[1].source == "x-record header (callee)"


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("Application/DTMF-Relay; charset=x", b"signal= *\r\n", "*"),
        ("application/dtmf-relay", b"Signal=11\r\n", "#"),
        ("application/dtmf", b"9", "9"),
        ("application/dtmf-relay", b"Signal=16\r\n", ""),
        ("text/plain", b"Signal=5", ""),
        ("application/dtmf-relay", b"Duration=160", ""),
    ],
)
def test_sip_info_key_presses(content_type: str, body: bytes, digit: str) -> None:
    assert info_digit(content_type, body) == digit


# -- spans -------------------------------------------------------------------------------------------


def test_on_demand_records_from_each_start_to_the_next_stop() -> None:
    c = call(keys((2, "*", "caller"), (2.2, "1", "caller"), (5, "*", "callee"), (5.2, "2", "callee"),
                  (9, "*", "caller"), (9.2, "1", "caller")))  # fmt: skip
    plan = plan_recording(c, rendered(), decision("on-demand"), CONTROLS, ConsentSettings())
    assert plan.blocked is None
    assert [(seconds(s.start_ns), seconds(s.end_ns), s.by) for s in plan.recorded] == [
        (2.2, 5.2, "keys *1 (caller)"),
        (9.2, 20.0, "keys *1 (caller)"),
    ]
    summaries = [(e.kind, e.summary, seconds(e.ts_ns)) for e in plan.events]
    assert summaries == [
        ("recording", "started", 2.2),
        ("recording", "stopped", 5.2),
        ("recording", "started", 9.2),
    ]
    samples, placed = stored_samples(rendered(), plan)
    assert samples.shape[0] == round((3.0 + 10.8) * RATE)
    assert [round(at, 3) for _, at in placed] == [0.0, 3.0]
    source = rendered().samples
    assert np.array_equal(samples[: 3 * RATE], source[round(2.2 * RATE) : round(5.2 * RATE)])
    assert np.array_equal(samples[3 * RATE :], source[round(9.2 * RATE) :])


def test_on_demand_without_a_start_stores_nothing() -> None:
    c = call(keys((3, "*", "caller"), (3.1, "2", "caller")))  # a stop alone
    plan = plan_recording(c, rendered(), decision("on-demand"), CONTROLS, ConsentSettings())
    assert plan.blocked == "rule 'r': record = on-demand and no start was asked for"
    assert plan.recorded == []


def test_control_commands_and_headers_combine_with_keys() -> None:
    c = call((CallEvent(T0 + 4 * NS, "header", "x-record", "caller", "stop"),))
    commands = [Signal(T0 + 1 * NS, "start", "callrec calls record (alice)")]
    plan = plan_recording(c, rendered(), decision("on-demand"), CONTROLS, ConsentSettings(), commands)
    assert [(seconds(s.start_ns), seconds(s.end_ns), s.by) for s in plan.recorded] == [
        (1.0, 4.0, "callrec calls record (alice)")
    ]


def test_pause_blanks_both_channels_and_tone_fill() -> None:
    c = call(keys((3, "*", "caller"), (3.1, "3", "caller"), (8, "*", "callee"), (8.1, "4", "callee")))
    plan = plan_recording(c, rendered(), decision(), CONTROLS, ConsentSettings())
    assert [(seconds(s.start_ns), seconds(s.end_ns)) for s in plan.paused] == [(3.1, 8.1)]
    assert plan.redacts(T0 + 5 * NS) and plan.redacts(T0 + round(8.1 * NS)) and not plan.redacts(T0 + 9 * NS)
    silent, _ = stored_samples(rendered(), plan)
    first, last = round(3.1 * RATE), round(8.1 * RATE)
    assert not silent[first:last].any() and silent[:first].all() and silent[last:].all()
    toned, _ = stored_samples(rendered(), plan, "tone")
    assert np.array_equal(toned[first:last, 0], toned[first:last, 1])
    rms = float(np.sqrt(np.mean(toned[first:last, 0].astype(np.float64) ** 2)))
    assert 300 < rms < 600  # about -34 dBFS: soft
    spectrum = np.abs(np.fft.rfft(toned[first:last, 0]))
    assert abs(np.argmax(spectrum) * RATE / (last - first) - 400) < 2


def test_a_pause_never_resumed_lasts_to_the_end() -> None:
    c = call(keys((15, "*", "caller"), (15.1, "3", "caller")))
    plan = plan_recording(c, rendered(), decision(), CONTROLS, ConsentSettings())
    assert [(seconds(s.start_ns), seconds(s.end_ns)) for s in plan.paused] == [(15.1, 20.0)]
    assert [e.summary for e in plan.events if e.kind == "pause"] == ["paused"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0, 25), st.sampled_from(["start", "stop", "pause", "resume"])), max_size=12),
    st.booleans(),
)
def test_spans_are_ordered_disjoint_and_inside_the_audio(
    signals: list[tuple[float, str]], always: bool
) -> None:
    commands = [Signal(T0 + round(s * NS), action, "test") for s, action in signals]
    plan = plan_recording(
        call(),
        rendered(),
        decision("always" if always else "on-demand"),
        CONTROLS,
        ConsentSettings(),
        commands,
    )
    for spans in (plan.recorded, plan.paused):
        for span in spans:
            assert T0 <= span.start_ns < span.end_ns <= T0 + 20 * NS
        for a, b in zip(spans, spans[1:], strict=False):
            assert a.end_ns <= b.start_ns
    samples, placed = stored_samples(rendered(), plan)
    assert abs(samples.shape[0] / RATE - sum(s.seconds for s in plan.recorded)) <= len(plan.recorded) / RATE


# -- consent -----------------------------------------------------------------------------------------


def speechlike(seconds_: float, seed: int) -> np.ndarray:
    """Noise bursts shaped like syllables, with a spectrum that changes from burst to burst."""
    rng = np.random.default_rng(seed)
    out = np.zeros(round(seconds_ * RATE))
    at = 0
    while at < out.shape[0]:
        n = int(rng.integers(800, 2400))
        hz = float(rng.uniform(300, 2500))
        t = np.arange(n) / RATE
        burst = np.sin(2 * np.pi * hz * t + rng.uniform(0, 6)) * np.hanning(n) * rng.uniform(3000, 9000)
        out[at : at + n] = burst[: out.shape[0] - at]
        at += n + int(rng.integers(200, 1600))
    return out


def test_announcement_found_through_level_noise_and_a_narrower_rate() -> None:
    prompt = speechlike(3.0, 1)
    announcement = announcement_from_samples(np.rint(prompt).astype(np.int16), RATE)
    other = speechlike(12.0, 2)
    leg = other.copy()
    start = 2 * RATE
    leg[start : start + prompt.shape[0]] = prompt * 0.25  # 12 dB quieter
    leg += np.random.default_rng(3).normal(0, 60, leg.shape[0])
    match = find_announcement(np.rint(leg).astype(np.int16), RATE, announcement)
    assert match is not None and match.complete and match.score > 0.8
    assert abs(match.start_s - (2.0 + announcement_offset(prompt))) < 0.03
    assert abs(match.end_s - (match.start_s + announcement.seconds)) < 1e-9
    assert find_announcement(np.rint(other).astype(np.int16), RATE, announcement) is None
    cut = np.rint(leg[: start + RATE * 3 // 2]).astype(np.int16)  # the leg ends half-way through it
    partial = find_announcement(cut, RATE, announcement)
    assert partial is not None and not partial.complete


def announcement_offset(prompt: np.ndarray) -> float:
    """Where the voiced part of ``prompt`` begins (the matcher trims leading silence), to a frame."""
    hop = 80
    power = np.array([np.mean(prompt[i : i + 256] ** 2) for i in range(0, prompt.shape[0] - 256, hop)])
    db = 10 * np.log10(power + 1e-12 * 32768**2) - 10 * np.log10(32768.0**2)
    return float(np.flatnonzero(db >= db.max() - 35.0)[0] * hop / RATE)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    path.write_bytes(b"".join(wav_chunks(samples, rate)))


def consent_of(events: tuple[CallEvent, ...], settings: ConsentSettings, seconds_: float = 20.0) -> str:
    c = call(events, seconds=seconds_, answered_s=1.0)
    presses = [(e.ts_ns, e.summary, e.sender) for e in events if e.kind == "dtmf"]
    got = establish_consent(c, rendered(seconds_), settings, presses)
    at = "-" if got.at_ns is None else f"{seconds(got.at_ns):g}"
    return f"{got.state} {at} {got.how}"


def test_consent_by_header_timer_and_opt_out() -> None:
    header = ConsentSettings()
    granted = (CallEvent(T0 + 6 * NS, "header", "x-consent", "callee", "granted"),)
    assert consent_of(granted, header) == "established 6 x-consent: granted"
    declined = (CallEvent(T0 + 6 * NS, "header", "x-consent", "callee", "declined"),)
    assert consent_of(declined, header) == "declined 6 x-consent: declined"
    timer = ConsentSettings(header="", after_s=8)
    assert consent_of((), timer) == "established 9 8 s after the answer (no other sign of consent)"
    assert consent_of((), timer, seconds_=5.0).startswith("not-established - the call ended within 8 s")
    opted_out = keys((4, "9", "caller"))
    assert consent_of(opted_out, timer) == "declined 4 the caller keyed the opt-out key 9"
    assert consent_of(keys((4, "9", "callee")), timer).startswith("established 9")  # only the caller opts out
    assert consent_of(keys((12, "9", "caller")), timer).startswith("established 9")  # after consent: a key
    assert (
        consent_of((), ConsentSettings(header="")) == "not-established - no way to establish it is configured"
    )


def test_required_consent_gates_the_recording() -> None:
    c = call((CallEvent(T0 + 6 * NS, "header", "x-consent", "callee", "yes"),))
    plan = plan_recording(c, rendered(), decision(consent="required"), CONTROLS, ConsentSettings())
    assert [(seconds(s.start_ns), seconds(s.end_ns)) for s in plan.recorded] == [(6.0, 20.0)]
    assert [(e.kind, e.summary) for e in plan.events][:1] == [("consent", "established")]
    refused = call((CallEvent(T0 + 6 * NS, "header", "x-consent", "callee", "no"),))
    plan = plan_recording(refused, rendered(), decision(consent="required"), CONTROLS, ConsentSettings())
    assert plan.blocked == "rule 'r': consent declined: x-consent: no" and plan.recorded == []


# -- configuration -------------------------------------------------------------------------------


def test_controls_table_errors_name_every_key() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_controls(
            {
                "start": "*1",
                "stop": "*12",
                "pause": "x",
                "keyed_by": "boss",
                "digit_gap_s": 0,
                "header": "Record",
                "pause_fill": "music",
                "colour": "red",
            }  # fmt: skip
        )
    text = "\n".join(caught.value.problems)
    for expected in (
        "controls.colour: unknown key",
        "controls.pause: 'x' is not a key code",
        "controls.start: '*1' begins stop's code '*12'",
        "controls.keyed_by: 'boss' is not one of caller, callee, any",
        "controls.digit_gap_s: must be a number of seconds greater than 0",
        "controls.header: 'Record' must be an X- header name",
        "controls.pause_fill: 'music' is not one of silence, tone",
    ):
        assert expected in text, text
    assert parse_controls({"start": "#9", "keyed_by": "caller"}).codes()["#9"] == "start"


def test_consent_table_reads_and_checks_the_announcement(tmp_path: Path) -> None:
    prompt = np.rint(speechlike(2.0, 5)).astype(np.int16)
    write_wav(tmp_path / "consent.wav", prompt, RATE)
    settings = parse_consent({"announcement": "consent.wav", "after_s": 10, "opt_out": "#"}, base=tmp_path)
    assert settings.announcement is not None and settings.after_s == 10.0 and settings.opt_out == "#"
    with pytest.raises(PolicyError) as caught:
        parse_consent(
            {"announcement": "missing.wav", "opt_out": "99", "min_score": 2, "search_s": -1}, base=tmp_path
        )
    text = "\n".join(caught.value.problems)
    assert "consent.announcement: cannot read" in text and "missing.wav" in text
    assert "consent.opt_out: '99' is not one key" in text
    assert "consent.min_score: must be a number between 0 and 1" in text
    assert "consent.search_s: must be a number of seconds greater than 0" in text
    write_wav(tmp_path / "silent.wav", np.zeros(RATE, dtype=np.int16), RATE)
    with pytest.raises(PolicyError, match="the announcement is silent"):
        parse_consent({"announcement": str(tmp_path / "silent.wav")})


def test_config_files_name_the_file_for_controls_and_consent_errors(tmp_path: Path) -> None:
    (tmp_path / "callrec.toml").write_text('[controls]\nstart = "*1"\n', encoding="utf-8")
    (tmp_path / "callrec.d").mkdir()
    bad = tmp_path / "callrec.d" / "50-modes.toml"
    bad.write_text('[controls]\npause = "*1"\n[consent]\nannouncement = "nowhere.wav"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config([tmp_path])
    problems = caught.value.problems
    assert any(p.startswith(f"{bad}: controls.pause: the same code as start") for p in problems), problems
    assert any(p.startswith(f"{bad}: consent.announcement: cannot read") for p in problems), problems
    relative = tmp_path / "callrec.d" / "nowhere.wav"
    write_wav(relative, np.rint(speechlike(2.0, 6)).astype(np.int16), RATE)
    bad.write_text('[consent]\nannouncement = "nowhere.wav"\nafter_s = 5\n', encoding="utf-8")
    config = load_config([tmp_path])
    assert config.consent.announcement_path == relative and config.consent.after_s == 5.0
    assert config.controls.start == "*1"
