"""Recording modes on real softphone calls (pcaps/lab/modes/, made by pcaps/make_lab_captures.sh modes).

Each call is a baresip-to-baresip call on the lab's mirror port with ground-truth audio (NAME/A_sent.wav,
NAME/B_sent.wav: what each side fed its encoder; sample 0 is in its side's first RTP packet) and the key
presses on the wire with their times (NAME.json, scenario.dtmf[].wire). Each is imported with a
configuration of its own, then shown and exported through the CLI:

* md_ondemand_pcmu_15s, rule ``record = "on-demand"``: the caller keys *1 at +2 s, *2 at +5 s, *1 at
  +9 s, *2 at +12 s. Two spans are recorded, each starting and ending within 100 ms of the last key of
  its code on the wire; the file holds those two spans only (its length is their sum), each span's audio
  is what the phones said at that time, and what was said between them is absent.
* md_pause_pcmu_13s, rule ``record = "always"``: *3 at +3 s, a card number 4111 at +5 s, *4 at +9 s.
  The pause spans *3 to *4 (within 100 ms); both channels are digital silence there in the export, the
  rest is the phones' audio; the keys pressed in the pause are redacted in the events.
* md_consent_pcmu_10s and md_consent_opus_10s, rule ``consent = "required"`` with the announcement
  pcaps/lab/modes/announcement.wav (espeak-ng, the callee's first sentence, at 16 kHz): consent is
  established, and recording starts, within 200 ms after the announcement ends in the callee's audio
  (found in B_sent.wav by waveform cross-correlation, independently of the recorder's spectral match).
* md_consent_optout_pcma_8s: the caller keys the opt-out 9 at +1 s: consent declined, no recording.
* md_consent_hangup_pcmu_3s: the caller hangs up at +3 s, inside the 4.2 s announcement: no recording.
In the last two no sealed file exists anywhere under the home.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callrec.decode.formats.wav import read_wav as read_wav_rate
from callrec.decode.resample import resample
from tests.helpers.audio_match import best_lag, overlap_correlation
from tests.helpers.fixture_check import PCAPS, read_wav, run_cli
from tests.helpers.keyset import provision

MODES = PCAPS / "lab" / "modes"
ANNOUNCEMENT = MODES / "announcement.wav"
SPAN_TOLERANCE_S = 0.100
CONSENT_LATE_S = 0.200
CONSENT_EARLY_S = 0.030  # one 32 ms analysis frame
MIN_CORRELATION = 0.9  # G.711 span audio against what the phone said


def _meta(name: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads((MODES / f"{name}.json").read_text(encoding="utf-8"))
    return meta


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _key_times(meta: dict[str, Any], code: str) -> list[float]:
    """Wire start times of the last key of each sending of ``code``."""
    return [entry["wire"][-1]["start_time"] for entry in meta["scenario"]["dtmf"] if entry["digits"] == code]


def _first_rtp(meta: dict[str, Any], src_ip: str) -> float:
    return min(s["start_time"] for s in meta["wire"]["rtp_streams"] if s["src"] == src_ip)


class Imported:
    def __init__(self, name: str, tmp: Path, config: str) -> None:
        self.name = name
        self.meta = _meta(name)
        self.home = provision(tmp / "home")
        (self.home / "callrec.toml").write_text(config, encoding="utf-8")
        res = run_cli("--home", str(self.home), "import", str(MODES / f"{name}.pcap"), "--json")
        assert res.exit_code == 0 and not res.exc_text, res.describe()
        calls = json.loads(res.stdout)
        assert [c["call_id"] for c in calls] == [self.meta["sip_call_id"]]
        self.call: dict[str, Any] = calls[0]

    def show(self) -> dict[str, Any]:
        res = run_cli("--home", str(self.home), "calls", "show", str(self.call["id"]), "--json")
        assert res.exit_code == 0, res.describe()
        shown: dict[str, Any] = json.loads(res.stdout)
        return shown

    def export(self, out: Path) -> np.ndarray:
        res = run_cli("--home", str(self.home), "calls", "export", str(self.call["id"]), "--out", str(out))
        assert res.exit_code == 0 and not res.exc_text, res.describe()
        rate, samples = read_wav(out)
        assert rate == 8000
        return samples.astype(np.float64)

    def sealed_files(self) -> list[Path]:
        return [p for p in self.home.rglob("*") if p.is_file() and ".sealed" in p.name]

    def sent(self, side: str) -> np.ndarray:
        rate, samples = read_wav(MODES / self.name / f"{side}_sent.wav")
        assert rate == 8000
        return samples[:, 0].astype(np.float64)


def _span_audio_matches(recording: np.ndarray, sent: np.ndarray, sent_start_s: float) -> float:
    """Correlation of ``recording`` with ``sent`` from ``sent_start_s`` on, at the best lag within
    40 ms of that position."""
    start = round(sent_start_s * 8000)
    reference = sent[start : start + recording.shape[0]]
    lag, _ = best_lag(recording, reference, 8000, max_lag_s=0.04)
    return overlap_correlation(recording, reference, lag)


@pytest.fixture(scope="module")
def ondemand(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    config = '[[rules]]\nname = "advisors"\nrecord = "on-demand"\n'
    return Imported("md_ondemand_pcmu_15s", tmp_path_factory.mktemp("ondemand"), config)


def test_on_demand_spans_follow_the_keys(ondemand: Imported, tmp_path: Path) -> None:
    shown = ondemand.show()
    assert shown["rule"] == "advisors" and shown["recording"] is not None
    spans = shown["recording"]["spans"]
    starts, stops = _key_times(ondemand.meta, "*1"), _key_times(ondemand.meta, "*2")
    assert len(spans) == 2 == len(starts) == len(stops)
    for span, start, stop in zip(spans, starts, stops, strict=True):
        assert abs(_epoch(span["from"]) - start) <= SPAN_TOLERANCE_S, (span, start)
        assert abs(_epoch(span["to"]) - stop) <= SPAN_TOLERANCE_S, (span, stop)
        assert span["by"] == "keys *1 (caller)"
    kinds = [(e["kind"], e["summary"]) for e in shown["events"] if e["kind"] == "recording"]
    assert kinds == [("recording", "started"), ("recording", "stopped")] * 2

    samples = ondemand.export(tmp_path / "ondemand.wav")
    lengths = [_epoch(s["to"]) - _epoch(s["from"]) for s in spans]
    assert abs(samples.shape[0] / 8000 - sum(lengths)) < 0.01  # only the spans: the rest is absent
    assert abs(spans[1]["at_s"] - lengths[0]) < 0.002
    a_first = _first_rtp(ondemand.meta, ondemand.meta["a"]["ip"])
    b_first = _first_rtp(ondemand.meta, ondemand.meta["b"]["ip"])
    for span, length in zip(spans, lengths, strict=True):
        first = round(span["at_s"] * 8000)
        piece = samples[first + 80 : first + round(length * 8000) - 80]
        offset = _epoch(span["from"]) + 0.01
        assert _span_audio_matches(piece[:, 0], ondemand.sent("A"), offset - a_first) >= MIN_CORRELATION
        assert _span_audio_matches(piece[:, 1], ondemand.sent("B"), offset - b_first) >= MIN_CORRELATION
    # the speech between the spans (5 s to 9 s) is nowhere in the file
    gap_start = _epoch(spans[0]["to"]) + 0.5 - a_first
    gap = ondemand.sent("A")[round(gap_start * 8000) : round((gap_start + 2.0) * 8000)]
    _, found = best_lag(samples[:, 0], gap, 8000, max_lag_s=samples.shape[0] / 8000)
    assert found < 0.5


@pytest.fixture(scope="module")
def paused(tmp_path_factory: pytest.TempPathFactory) -> Imported:
    return Imported("md_pause_pcmu_13s", tmp_path_factory.mktemp("pause"), "")


def test_pause_blanks_both_channels_and_redacts_the_keys(paused: Imported, tmp_path: Path) -> None:
    shown = paused.show()
    assert len(shown["paused_spans"]) == 1
    pause = shown["paused_spans"][0]
    (pause_key,), (resume_key,) = _key_times(paused.meta, "*3"), _key_times(paused.meta, "*4")
    assert abs(_epoch(pause["from"]) - pause_key) <= SPAN_TOLERANCE_S
    assert abs(_epoch(pause["to"]) - resume_key) <= SPAN_TOLERANCE_S

    dtmf = [e for e in shown["events"] if e["kind"] == "dtmf"]
    inside = [e for e in dtmf if _epoch(pause["from"]) < _epoch(e["at"]) <= _epoch(pause["to"])]
    assert [e["summary"] for e in inside] == ["redacted"] * 6  # 4111 and the *4 that resumed
    assert [e["summary"] for e in dtmf if e not in inside] == ["*", "3"]

    samples = paused.export(tmp_path / "pause.wav")
    start = _epoch(shown["recording"]["spans"][0]["from"])
    first = round((_epoch(pause["from"]) - start) * 8000)
    last = round((_epoch(pause["to"]) - start) * 8000)
    assert last - first > 5 * 8000
    assert not samples[first:last].any()  # digital silence in both channels
    # outside the pause: what the phones said
    a_first = _first_rtp(paused.meta, paused.meta["a"]["ip"])
    after = samples[last + 400 : last + 400 + 2 * 8000, 0]
    when = start + (last + 400) / 8000
    assert _span_audio_matches(after, paused.sent("A"), when - a_first) >= MIN_CORRELATION
    before = samples[8000 : first - 400, 1]
    b_first = _first_rtp(paused.meta, paused.meta["b"]["ip"])
    assert _span_audio_matches(before, paused.sent("B"), start + 1.0 - b_first) >= MIN_CORRELATION


CONSENT_CONFIG = f"""
[[rules]]
name = "advice"
consent = "required"

[consent]
announcement = "{ANNOUNCEMENT}"
"""


def _announcement_end_in(sent: np.ndarray, rate: int) -> float:
    """Seconds into ``sent`` where the announcement's last voiced 10 ms frame ends (waveform
    cross-correlation of the announcement at ``rate`` with the first 8 s of ``sent``)."""
    announcement, ann_rate = read_wav_rate(ANNOUNCEMENT)
    ann = resample(announcement[:, 0], ann_rate, rate).astype(np.float64)
    lag, corr = best_lag(sent[: 8 * rate], ann, rate, max_lag_s=4.0)
    assert corr > 0.8, f"the announcement is not at the start of the callee's audio ({corr:.2f})"
    hop = rate // 100
    frames = ann[: ann.shape[0] // hop * hop].reshape(-1, hop)
    energy = 10 * np.log10((frames**2).mean(axis=1) + 1e-9)
    voiced = np.flatnonzero(energy >= energy.max() - 35.0)
    return (lag + (int(voiced[-1]) + 1) * hop) / rate


@pytest.mark.parametrize("name", ["md_consent_pcmu_10s", "md_consent_opus_10s"])
def test_consent_starts_recording_after_the_announcement(name: str, tmp_path: Path) -> None:
    imported = Imported(name, tmp_path, CONSENT_CONFIG)
    shown = imported.show()
    assert shown["consent"].startswith("established: announcement heard"), shown["consent"]
    rate = imported.meta["codec_sample_rate_hz"]
    _, b_sent = read_wav(MODES / name / "B_sent.wav")
    ends_at = _first_rtp(imported.meta, imported.meta["b"]["ip"]) + _announcement_end_in(
        b_sent[:, 0].astype(np.float64), rate
    )
    consent_at = _epoch(shown["consent_at"])
    assert -CONSENT_EARLY_S <= consent_at - ends_at <= CONSENT_LATE_S, (consent_at, ends_at)
    (span,) = shown["recording"]["spans"]
    assert span["from"] == shown["consent_at"]
    assert [e["summary"] for e in shown["events"] if e["kind"] == "consent"] == ["established"]
    # the recording holds what came after the announcement, to the end of the call
    recorded_s = shown["recording"]["seconds"]
    assert abs(recorded_s - (_epoch(span["to"]) - consent_at)) < 0.01
    assert recorded_s < imported.meta["talk_s"] - 3.5


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("md_consent_optout_pcma_8s", "consent declined: the caller keyed the opt-out key 9"),
        ("md_consent_hangup_pcmu_3s", "consent declined: the call ended during the announcement"),
    ],
)
def test_declined_consent_leaves_no_recording(name: str, why: str, tmp_path: Path) -> None:
    imported = Imported(name, tmp_path, CONSENT_CONFIG)
    shown = imported.show()
    assert shown["recording"] is None
    assert shown["not_recorded"] == f"rule 'advice': {why}"
    assert shown["consent"].startswith("declined")
    assert imported.sealed_files() == []
    if "optout" in name:
        (nine,) = _key_times(imported.meta, "9")
        assert abs(_epoch(shown["consent_at"]) - nine) <= SPAN_TOLERANCE_S
