"""Checking a recording against its fixture's expected result (``pcaps/fixtures/NAME.expected.json``):
running the CLI, reading WAVs, and comparing calls, legs, channels and audio within tolerances."""

from __future__ import annotations

import importlib.util
import json
import sys
import traceback
import wave
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.helpers.keyset import provision

ROOT = Path(__file__).resolve().parents[2]


PCAPS = ROOT / "pcaps"


FIXTURES = PCAPS / "fixtures"


REAL = PCAPS / "real"


RATE = 8000


CALLER_TO_CALLEE = "caller->callee"


CALLEE_TO_CALLER = "callee->caller"


STATES = {"setup", "early", "answered", "completed", "cancelled", "rejected", "redirected", "failed"}


MIN_CORRELATION = 0.95


FREQ_TOLERANCE = 0.02


_generator_module: ModuleType | None = None


def generator() -> ModuleType:
    """pcaps/make_fixtures.py as a module (signals and G.711 tables for the references)."""
    global _generator_module
    if _generator_module is None:
        spec = importlib.util.spec_from_file_location("callrec_make_fixtures", PCAPS / "make_fixtures.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses need the module registered
        spec.loader.exec_module(module)
        _generator_module = module
    return _generator_module


class CliResult:
    def __init__(self, exit_code: int, stdout: str, stderr: str, exc_text: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr
        self.exc_text = exc_text

    def describe(self) -> str:
        return (
            f"exit code {self.exit_code}\n--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n"
            f"{self.stderr[-3000:]}\n{self.exc_text}"
        )


def run_cli(*args: str) -> CliResult:
    """``callrec ARGS`` in-process (click's CliRunner), stdout and stderr kept apart."""
    from click.testing import CliRunner

    try:
        from callrec.cli.main import cli
    except ImportError as exc:  # the CLI is built by others; say so instead of a bare traceback
        pytest.fail(f"the callrec CLI (callrec.cli.main:cli) cannot be imported: {exc!r}")
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()
    result = runner.invoke(cli, list(args), catch_exceptions=True)
    exc_text = ""
    if result.exception is not None and not isinstance(result.exception, SystemExit) and result.exc_info:
        exc_text = "".join(traceback.format_exception(*result.exc_info))
    try:
        stderr = result.stderr
    except ValueError:
        stderr = ""
    return CliResult(result.exit_code, result.stdout, stderr, exc_text)


def import_capture(home: Path, *files: Path) -> list[dict[str, Any]]:
    provision(home)
    res = run_cli("--home", str(home), "import", *map(str, files), "--json")
    assert res.exit_code == 0 and not res.exc_text, (
        f"callrec import {' '.join(map(str, files))}: {res.describe()}"
    )
    try:
        calls = json.loads(res.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"import --json did not print JSON ({exc}): {res.describe()}") from None
    assert isinstance(calls, list), f"import --json printed {type(calls).__name__}, not a list"
    return calls


def export_wav(home: Path, call: dict[str, Any], out: Path) -> tuple[int, np.ndarray]:
    """Export a call's recording; returns (sample rate, int16 array of shape (n, 2))."""
    res = run_cli("--home", str(home), "calls", "export", str(call["id"]), "--out", str(out))
    assert res.exit_code == 0 and not res.exc_text, f"callrec calls export {call['id']}: {res.describe()}"
    return read_wav(out)


def read_wav(path: Path) -> tuple[int, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
        data = w.readframes(frames)
    assert width == 2, f"{path.name}: {8 * width}-bit samples, expected 16-bit"
    samples = np.frombuffer(data, dtype="<i2").reshape(-1, channels)
    return rate, samples


def to_rate(x: np.ndarray, rate: int, target: int = RATE) -> np.ndarray:
    """Band-limited (FFT) resampling, only used if the recorder does not write 8 kHz."""
    x = np.asarray(x, dtype=np.float64)
    if rate == target or len(x) == 0:
        return x
    n_out = int(round(len(x) * target / rate))
    spec = np.fft.rfft(x)
    keep = n_out // 2 + 1
    out_spec = np.zeros(keep, dtype=complex)
    m = min(keep, len(spec))
    out_spec[:m] = spec[:m]
    return np.fft.irfft(out_spec, n_out) * (n_out / len(x))


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def as_int(value: Any) -> int | None:
    """SSRCs may come as int, "0x1a2b..." or bare hex text."""
    if value is None or isinstance(value, int):
        return value
    text = str(value).strip().lower()
    try:
        return int(text, 0)
    except ValueError:
        return int(text, 16)


def codec_name(value: Any) -> str:
    return str(value or "").split("/")[0].upper()


def legs_by_direction(call: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for leg in call.get("legs") or []:
        out.setdefault(leg.get("direction"), []).append(leg)
    return out


def span_mask(spans: list[list[float]], n: int, rate: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for start, end in spans:
        mask[max(0, int(round(start * rate))) : max(0, min(n, int(round(end * rate))))] = True
    return mask


def dilate(mask: np.ndarray, k: int) -> np.ndarray:
    if k <= 0 or not mask.any():
        return mask.copy()
    c = np.concatenate([[0], np.cumsum(mask.astype(np.int64))])
    n = len(mask)
    idx = np.arange(n)
    lo = np.clip(idx - k, 0, n)
    hi = np.clip(idx + k + 1, 0, n)
    return (c[hi] - c[lo]) > 0


def erode(mask: np.ndarray, k: int) -> np.ndarray:
    return ~dilate(~mask, k)


def ncc(x: np.ndarray, y: np.ndarray) -> float:
    den = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return float(np.dot(x, y)) / den if den > 0 else 0.0


def dominant_hz(x: np.ndarray, rate: int) -> float:
    n = max(len(x), 4 * rate)  # zero-pad to 0.25 Hz bins
    spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x)), n))
    return float(np.argmax(spec) * rate / n)


def leg_reference(leg: dict[str, Any], n: int) -> np.ndarray:
    """The exact decoded signal of a leg on the recording's timeline (8 kHz), zero where the
    leg has no packets."""
    gen = generator()
    ref = np.zeros(n)
    start = int(round(leg["origin_s"] * RATE))
    end = int(round(max(e for _, e in leg["active"]) * RATE))
    values = np.asarray(gen.decoded_reference(leg["signal"], leg["codec"], end - start), dtype=np.float64)
    stop = min(n, end)
    if stop > start:
        ref[start:stop] = values[: stop - start]
    return ref * span_mask(leg["active"], n, RATE)


def check_channel(
    label: str,
    native: np.ndarray,
    rate: int,
    leg: dict[str, Any],
    other: dict[str, Any],
    tolerance_s: float,
) -> list[str]:
    """Problems with one channel (``native``: the WAV's samples at ``rate``) against its leg."""
    problems: list[str] = []
    n_native = len(native)
    if leg["signal"] is None:
        nz = np.flatnonzero(native)
        if nz.size:
            problems.append(
                f"{label}: the leg sent no media but the channel has {nz.size} non-zero samples "
                f"(first at {nz[0] / rate:.4f} s, peak {int(np.abs(native).max())})"
            )
        return problems

    # 1. exact silence outside the active spans (lost slots, before / after the leg, ...)
    margin_native = int(round((tolerance_s + 0.001) * rate))
    active_native = span_mask(leg["active"], n_native, rate)
    quiet = ~dilate(active_native, margin_native)
    nz = np.flatnonzero(native * quiet)
    if nz.size:
        t = nz[0] / rate
        where = (
            "a lost packet's slot" if any(s <= t < e for s, e in leg["silent"]) else "outside the leg's media"
        )
        problems.append(
            f"{label}: {nz.size} non-zero samples where there must be silence; first at {t:.4f} s "
            f"({where}), peak {int(np.abs(native[quiet]).max())}"
        )

    # 2. the signal, at 8 kHz
    chan = to_rate(native, rate)
    n = len(chan)
    ref = leg_reference(leg, n)
    active = span_mask(leg["active"], n, RATE)
    margin = int(round((tolerance_s + 0.001) * RATE))
    noise = leg["signal"]["kind"] == "noise"
    max_lag = int(round(0.020 * RATE)) if noise else int(round(tolerance_s * RATE))
    inner = erode(active, margin + max_lag)
    inner[: max_lag + 1] = False
    inner[max(0, n - max_lag - 1) :] = False
    idx = np.flatnonzero(inner)
    if idx.size < RATE // 10:
        problems.append(
            f"{label}: only {idx.size} samples of the leg's active spans lie inside the recording "
            f"({n / RATE:.3f} s long)"
        )
        return problems
    lags = list(range(-max_lag, max_lag + 1))
    scores = [ncc(chan[idx + lag], ref[idx]) for lag in lags]
    best = int(np.argmax(scores))
    lag, score = lags[best], scores[best]
    at_zero = scores[max_lag]
    if score < MIN_CORRELATION:
        hint = ""
        if other.get("signal") is not None:
            swapped = ncc(chan[idx], leg_reference(other, n)[idx])
            if abs(swapped) > 0.5:
                hint = f"; it correlates {swapped:.3f} with the OTHER leg's signal: channels swapped?"
        problems.append(
            f"{label}: correlation with the expected {leg['signal']} is {score:.3f} at best "
            f"(lag {lag / RATE * 1000:+.2f} ms; {at_zero:.3f} at lag 0), want >= {MIN_CORRELATION}{hint}"
        )
    elif noise and abs(lag) > tolerance_s * RATE:
        problems.append(
            f"{label}: the leg's audio is placed {lag / RATE * 1000:+.2f} ms from where its RTP "
            f"timestamps put it (tolerance {tolerance_s * 1000:.1f} ms)"
        )
    else:
        # every active span on its own, at the same lag (catches one misplaced or mangled segment)
        for start, end in leg["active"]:
            sub = idx[(idx >= start * RATE) & (idx < end * RATE)]
            if sub.size >= int(0.03 * RATE):
                c = ncc(chan[sub + lag], ref[sub])
                if c < MIN_CORRELATION:
                    problems.append(
                        f"{label}: span {start:.3f}-{end:.3f} s correlates only {c:.3f} with the "
                        f"reference (lag {lag / RATE * 1000:+.2f} ms)"
                    )

    # 3. the tone's frequency
    if leg["signal"]["kind"] == "tone":
        start, end = max(leg["active"], key=lambda se: se[1] - se[0])
        a, b = int(round(start * RATE)) + margin, int(round(end * RATE)) - margin
        if b - a > RATE // 10:
            hz = dominant_hz(chan[a:b], RATE)
            want = float(leg["signal"]["hz"])
            if abs(hz - want) > FREQ_TOLERANCE * want:
                problems.append(
                    f"{label}: dominant frequency {hz:.1f} Hz in {start:.3f}-{end:.3f} s, "
                    f"expected {want:g} Hz"
                )

    # 4. sound in every 20 ms packet slot
    empty = []
    for start, end in leg["active"]:
        k = int(round(start * RATE))
        stop = int(round(end * RATE))
        while k + 160 <= stop:
            a, b = k + margin, k + 160 - margin
            if b <= n and b > a:
                want_rms = float(np.sqrt(np.mean(ref[a:b] ** 2)))
                got_rms = float(np.sqrt(np.mean(chan[a:b] ** 2)))
                if want_rms > 0 and got_rms < 0.25 * want_rms:
                    empty.append(k / RATE)
            k += 160
    if empty:
        shown = ", ".join(f"{t:.3f}" for t in empty[:8])
        problems.append(
            f"{label}: {len(empty)} packet slot(s) without sound where the leg has packets, at {shown} s"
        )
    return problems


def check_call(exp: dict[str, Any], call: dict[str, Any]) -> list[str]:
    """Metadata of one call against expected.json."""
    p: list[str] = []
    cid = exp["call_id"]
    for key in ("state", "caller", "callee"):
        if call.get(key) != exp[key]:
            p.append(f"{cid}: {key} is {call.get(key)!r}, expected {exp[key]!r}")
    if call.get("state") not in STATES:
        p.append(f"{cid}: state {call.get('state')!r} is not one of {sorted(STATES)}")
    for key, tol in (
        ("started_at", 0.001),
        ("answered_at", 0.001),
        ("ended_at", exp.get("ended_at_tolerance_s", 0.05)),
    ):
        want, got = exp.get(key), call.get(key)
        if want is None or got is None:
            if (want is None) != (got is None):
                p.append(f"{cid}: {key} is {got!r}, expected {want!r}")
            continue
        try:
            diff = abs((parse_time(got) - parse_time(want)).total_seconds())
        except ValueError:
            p.append(f"{cid}: {key} {got!r} is not ISO-8601")
            continue
        if diff > tol:
            p.append(f"{cid}: {key} is {got}, expected {want} (+- {tol} s)")

    if "end_reason" in exp and call.get("end_reason") != exp["end_reason"]:
        p.append(f"{cid}: end_reason is {call.get('end_reason')!r}, expected {exp['end_reason']!r}")

    recording = call.get("recording")
    if bool(recording) != exp["recorded"]:
        p.append(f"{cid}: recording is {recording!r}, expected {'one' if exp['recorded'] else 'none'}")
    if recording and exp["recorded"]:
        seconds = recording.get("seconds")
        if seconds is None or abs(float(seconds) - exp["duration_s"]) > exp["duration_tolerance_s"]:
            p.append(
                f"{cid}: recording is {seconds} s long, expected {exp['duration_s']} s "
                f"(+- {exp['duration_tolerance_s']})"
            )
        if recording.get("channels") not in (None, 2):
            p.append(f"{cid}: recording has {recording.get('channels')} channels, expected 2")

    legs = legs_by_direction(call)
    for direction in (CALLER_TO_CALLEE, CALLEE_TO_CALLER):
        want = exp["legs"][direction]
        got = legs.get(direction, [])
        if want["packets"] == 0:
            sent = [leg for leg in got if leg.get("packets")]
            if sent:
                p.append(f"{cid} {direction}: expected no media, got {sent}")
            continue
        if len(got) != 1:
            p.append(f"{cid} {direction}: expected one leg, got {len(got)}: {got}")
            continue
        leg = got[0]
        for key in ("packets", "lost"):
            if leg.get(key) != want[key]:
                p.append(f"{cid} {direction}: {key} is {leg.get(key)!r}, expected {want[key]}")
        # a leg that changes SSRC lists all of them ("ssrcs"), callrec as "0x...,0x..." in order
        try:
            ssrcs = [as_int(x) for x in str(leg.get("ssrc") or "").split(",") if x.strip()]
        except ValueError:
            ssrcs = []
        if ssrcs != want.get("ssrcs", [want["ssrc"]]):
            p.append(
                f"{cid} {direction}: ssrc is {leg.get('ssrc')!r}, expected {want.get('ssrcs', want['ssrc'])}"
            )
        if codec_name(leg.get("codec")) != want["codec"]:
            p.append(f"{cid} {direction}: codec is {leg.get('codec')!r}, expected {want['codec']}")
        if want["codec"] not in {codec_name(c) for c in call.get("codecs") or []}:
            p.append(f"{cid}: codecs {call.get('codecs')!r} do not list {want['codec']}")
    return p


def check_audio(exp: dict[str, Any], rate: int, samples: np.ndarray, tolerance_s: float) -> list[str]:
    cid = exp["call_id"]
    p: list[str] = []
    if samples.ndim != 2 or samples.shape[1] != 2:
        return [f"{cid}: the WAV has {samples.shape[1] if samples.ndim == 2 else 1} channel(s), expected 2"]
    seconds = len(samples) / rate
    if abs(seconds - exp["duration_s"]) > exp["duration_tolerance_s"]:
        p.append(
            f"{cid}: the WAV is {seconds:.4f} s long, expected {exp['duration_s']} s "
            f"(+- {exp['duration_tolerance_s']}): it must span first to last media packet"
        )
    caller, callee = exp["legs"][CALLER_TO_CALLEE], exp["legs"][CALLEE_TO_CALLER]
    left = samples[:, 0].astype(np.float64)
    right = samples[:, 1].astype(np.float64)
    p += check_channel(f"{cid} left (caller)", left, rate, caller, callee, tolerance_s)
    p += check_channel(f"{cid} right (callee)", right, rate, callee, caller, tolerance_s)
    return p
