"""Real softphone calls with every codec the lab offers (pcaps/lab/codecs/), held to what each phone said.

pcaps/make_lab_captures.sh (set "codecs") made each NAME.pcap with ../shared/lab/call.sh: two baresip
user agents in network namespaces, a mirror port, espeak-ng speech, 12 s of talk time. NAME/A_sent.wav
and NAME/B_sent.wav are exactly what the caller (A) and the callee (B) fed their encoders, at the
codec's rate (8 kHz; 16 kHz for G.722, AMR-WB and L16; 48 kHz for Opus). NAME.json is the lab's
metadata: Call-ID, parties, ports, talk time, the RTP streams as tshark saw them on the mirror, and
the scenario's ground truth (the impairer's dropped sequence numbers, the DTMF digits on the wire).

The calls: G.722, Opus, GSM, G.726-32, AMR (octet-aligned), AMR-WB (octet-aligned), L16/16000,
Opus with 5 % loss on the caller's uplink, and PCMU with RFC 4733 digits during speech (the caller
sends 1234 and *#, the callee 9).

test_codec_call, for each call: import (``callrec --home H import NAME.pcap --json``), export
(``calls export ID --out x.wav``), then
* the call, its codec and its legs: one completed call with the lab's Call-ID, parties and codec;
  per direction the RTP packets tshark counted, and as lost exactly the sequence numbers the
  impairer dropped inside the captured range (none without impairment);
* the recording lasts the talk time (within 100 ms);
* left correlates with A_sent and right with B_sent (normalised cross-correlation at the lag found
  by FFT within +-2 s, ground truth resampled to the recording's rate with decode.resample):
  >= 0.95 for G.711, G.722 and L16, >= 0.85 for the lossy codecs (Opus, GSM, G.726, AMR, AMR-WB),
  >= 0.80 for a direction with 5 % loss;
* the lags are where the RTP says: each within 20 ms of its leg's first packet (relative to the
  recording's start, the call's first media packet; codec delays are at most 6.5 ms), and left vs
  right consistent within 20 ms;
* the channels are not swapped: neither channel correlates with the other side's voice.

test_dtmf_events, for the DTMF call: the ``dtmf`` events of ``calls show ID --json`` (kind "dtmf",
summary the digit, sender "caller"/"callee", ``at`` ISO-8601, detail with "duration N ms") are the
digits on the wire, in order, each at its time and with its duration; and the speech after each
sender's last digit is still where it was (correlation >= 0.9 at the whole channel's lag).

The helpers for correlation and lags come from test_lab_calls.py, the CLI helpers from
test_fixtures.py. These calls live in lab/codecs/ and not in lab/ because test_lab_calls.py and
test_tshark_crosscheck.py take every lab/*.json and hold it to G.711 thresholds.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callrec.decode.resample import resample
from tests.e2e.test_lab_calls import DURATION_TOLERANCE_S, LAG_TOLERANCE_S, MAX_CROSS_TALK, _user
from tests.helpers.audio_match import MAX_LAG_S, best_lag, overlap_correlation
from tests.helpers.fixture_check import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    PCAPS,
    codec_name,
    legs_by_direction,
    parse_time,
    read_wav,
    run_cli,
)
from tests.helpers.keyset import provision

CODECS_DIR = PCAPS / "lab" / "codecs"
METAS = sorted(CODECS_DIR.glob("*.json"))
DTMF_METAS = [p for p in METAS if json.loads(p.read_text(encoding="utf-8"))["scenario"].get("dtmf")]

# minimum normalised correlation of a channel with what its side fed the encoder
MIN_CORRELATION = {
    "PCMU": 0.95,
    "PCMA": 0.95,
    "G722": 0.95,
    "L16": 0.95,
    "OPUS": 0.85,
    "GSM": 0.85,
    "G726-32": 0.85,
    "AMR": 0.85,
    "AMR-WB": 0.85,
}
MIN_CORRELATION_IMPAIRED = 0.80  # a direction whose packets the lab dropped (5 % loss)
MIN_CORRELATION_AFTER_DIGITS = 0.90
DIGIT_TIME_TOLERANCE_S = 0.050  # `at` of a digit lies between its first and its end packet, +- this
DIGIT_DURATION_TOLERANCE_MS = 10.0
AFTER_DIGIT_GUARD_S = 0.100  # the speech segment starts this long after the sender's last end packet
EVENT_CLOCK_HZ = 8000  # telephone-event/8000 in every lab call


def _load(meta_path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
    return meta


class Imported:
    """One lab call imported into a fresh home and exported: the call's JSON, the import summary
    (stderr of ``import --json``: packets skipped by reason, e.g. ``no_decoder``) and the WAV."""

    def __init__(self, meta_path: Path, tmp: Path) -> None:
        self.meta = _load(meta_path)
        self.home = provision(tmp / "home")
        pcap = CODECS_DIR / self.meta["pcap"]
        res = run_cli("--home", str(self.home), "import", str(pcap), "--json")
        assert res.exit_code == 0 and not res.exc_text, f"callrec import {pcap.name}: {res.describe()}"
        self.summary = " | ".join(line.strip() for line in res.stderr.splitlines() if line.strip())
        try:
            calls = json.loads(res.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"import --json did not print JSON ({exc}): {res.describe()}") from None
        assert [c.get("call_id") for c in calls] == [self.meta["sip_call_id"]], (
            f"calls found: {[c.get('call_id') for c in calls]}, expected [{self.meta['sip_call_id']}] "
            f"(import summary: {self.summary})"
        )
        self.call: dict[str, Any] = calls[0]

    def export(self, out: Path) -> tuple[int, np.ndarray]:
        assert self.call.get("recording"), (
            f"{self.meta['name']}: no recording (error {self.call.get('error')!r}; import summary: "
            f"{self.summary})"
        )
        res = run_cli("--home", str(self.home), "calls", "export", str(self.call["id"]), "--out", str(out))
        assert res.exit_code == 0 and not res.exc_text, f"calls export {self.call['id']}: {res.describe()}"
        rate, samples = read_wav(out)
        assert samples.shape[1] == 2, f"{out.name}: {samples.shape[1]} channel(s), expected stereo"
        return rate, samples

    def show(self) -> dict[str, Any]:
        res = run_cli("--home", str(self.home), "calls", "show", str(self.call["id"]), "--json")
        assert res.exit_code == 0 and not res.exc_text, f"calls show {self.call['id']}: {res.describe()}"
        shown: dict[str, Any] = json.loads(res.stdout)
        return shown


def leg_direction(meta: dict[str, Any], stream: dict[str, Any]) -> str | None:
    """The call direction of one of tshark's RTP streams in NAME.json, by its source address/port."""
    a, b = meta["a"], meta["b"]
    if stream["src"] == a["ip"] and int(stream["sport"]) == a["rtp_port"]:
        return CALLER_TO_CALLEE
    if stream["src"] == b["ip"] and int(stream["sport"]) == b["rtp_port"]:
        return CALLEE_TO_CALLER
    return None


def first_packets(meta: dict[str, Any]) -> dict[str, float]:
    """Epoch time of each direction's first RTP packet on the mirror."""
    first: dict[str, float] = {}
    for s in meta["wire"]["rtp_streams"]:
        direction = leg_direction(meta, s)
        if direction:
            first[direction] = min(first.get(direction, s["start_time"]), s["start_time"])
    assert set(first) == {CALLER_TO_CALLEE, CALLEE_TO_CALLER}, meta["wire"]["rtp_streams"]
    return first


def impaired(meta: dict[str, Any], direction: str) -> dict[str, Any] | None:
    key = "a_to_b" if direction == CALLER_TO_CALLEE else "b_to_a"
    imp: dict[str, Any] | None = ((meta.get("scenario") or {}).get("impairment") or {}).get(key)
    return imp


def expected_lost(meta: dict[str, Any], direction: str) -> int:
    """Sequence numbers missing on the mirror between a direction's first and last packet, as tshark
    counted them (no duplicates in the lab, so Wireshark's "Lost" is the plain count). Without
    impairment that is 0; with it, the impairer's drops inside that range (test_codec_calls_present
    checks the two agree)."""
    return sum(int(s["lost"]) for s in meta["wire"]["rtp_streams"] if leg_direction(meta, s) == direction)


def sent_audio(meta: dict[str, Any], side: str, rate: int) -> np.ndarray:
    """X_sent.wav of one side as float64 at ``rate`` (decode.resample when the rates differ)."""
    wav = meta["wav"][f"{side}_sent"]
    sent_rate, mono = read_wav(CODECS_DIR / wav["file"])
    x = mono[:, 0]
    if sent_rate != rate:
        x = resample(np.ascontiguousarray(x, dtype=np.int16), sent_rate, rate)
    return np.asarray(x, dtype=np.float64)


def min_correlation(meta: dict[str, Any], direction: str) -> float:
    codec = codec_name(meta["codec"])
    if impaired(meta, direction):
        return MIN_CORRELATION_IMPAIRED
    return MIN_CORRELATION[codec]


@pytest.mark.parametrize("meta_path", METAS, ids=[p.stem for p in METAS])
def test_codec_call(meta_path: Path, tmp_path: Path) -> None:
    got = Imported(meta_path, tmp_path)
    meta, call = got.meta, got.call
    problems: list[str] = []
    want = {"state": "completed", "caller": _user(meta["a"]["uri"]), "callee": _user(meta["b"]["uri"])}
    for key, value in want.items():
        if call.get(key) != value:
            problems.append(f"{key} is {call.get(key)!r}, expected {value!r}")
    codec = codec_name(meta["codec"])
    if codec not in [codec_name(c) for c in call.get("codecs") or []]:
        problems.append(f"codecs {call.get('codecs')!r}, expected {meta['sdp_rtpmap']!r} among them")

    # the legs: packets per direction as tshark saw them, lost as the impairer dropped
    legs = legs_by_direction(call)
    tshark_packets: dict[str, int] = {}
    for s in meta["wire"]["rtp_streams"]:
        direction = leg_direction(meta, s)
        if direction:
            tshark_packets[direction] = tshark_packets.get(direction, 0) + int(s["pkts"])
    for direction, packets in tshark_packets.items():
        mine = legs.get(direction, [])
        n = sum(int(leg.get("packets") or 0) for leg in mine)
        if n != packets:
            problems.append(f"{direction}: {n} RTP packets, tshark saw {packets}")
        lost = sum(int(leg.get("lost") or 0) for leg in mine)
        if lost != expected_lost(meta, direction):
            problems.append(f"{direction}: {lost} lost, the lab dropped {expected_lost(meta, direction)}")
        codecs = {codec_name(leg.get("codec")) for leg in mine}
        if codecs != {codec}:
            problems.append(f"{direction}: leg codec(s) {sorted(codecs)}, expected {codec}")

    recording = call.get("recording")
    talk = float(meta["talk_s"])
    if recording and abs(float(recording["seconds"]) - talk) > DURATION_TOLERANCE_S:
        problems.append(
            f"recording is {recording['seconds']} s, the talk time {talk} s (+- {DURATION_TOLERANCE_S})"
        )
    if not recording:
        problems.append(f"no recording (error {call.get('error')!r}); import summary: {got.summary}")
        pytest.fail(f"{meta_path.stem}:\n  " + "\n  ".join(problems))

    rate, samples = got.export(tmp_path / "call.wav")
    if abs(len(samples) / rate - talk) > DURATION_TOLERANCE_S:
        problems.append(f"the exported WAV lasts {len(samples) / rate:.3f} s, the talk time {talk} s")
    channels = {"left": samples[:, 0].astype(np.float64), "right": samples[:, 1].astype(np.float64)}
    sent = {side: sent_audio(meta, side, rate) for side in ("A", "B")}
    first = first_packets(meta)
    t0 = min(first.values())
    lags: dict[str, tuple[float, float]] = {}
    for label, side, other, direction in (
        ("left", "A", "B", CALLER_TO_CALLEE),
        ("right", "B", "A", CALLEE_TO_CALLER),
    ):
        channel = channels[label]
        lag, corr = best_lag(channel, sent[side], rate)
        cross_lag, cross = best_lag(channel, sent[other], rate)
        expected_lag = first[direction] - t0
        lags[label] = (lag / rate, expected_lag)
        floor = min_correlation(meta, direction)
        if corr < floor:
            problems.append(
                f"{label} vs {side}_sent: correlation {corr:.3f} at lag {lag / rate:+.4f} s, want >= {floor} "
                f"({codec}{', impaired' if impaired(meta, direction) else ''}; vs {other}_sent: "
                f"{cross:.3f}); import summary: {got.summary}"
            )
        if abs(cross) > MAX_CROSS_TALK:
            problems.append(
                f"{label} correlates {cross:.3f} with {other}_sent (lag {cross_lag / rate:+.3f} s): "
                "channels swapped or mixed?"
            )
        if abs(lag / rate - expected_lag) > LAG_TOLERANCE_S:
            problems.append(
                f"{label}: {side}_sent starts at {lag / rate:+.4f} s in the recording, its first RTP packet "
                f"at {expected_lag:+.4f} s (+- {LAG_TOLERANCE_S})"
            )
    (lag_l, exp_l), (lag_r, exp_r) = lags["left"], lags["right"]
    if abs((lag_l - lag_r) - (exp_l - exp_r)) > LAG_TOLERANCE_S:
        problems.append(
            f"left and right are misaligned: lags {lag_l:+.4f} / {lag_r:+.4f} s, expected "
            f"{exp_l:+.4f} / {exp_r:+.4f} s"
        )
    assert not problems, f"{meta_path.stem} (rate {rate} Hz):\n  " + "\n  ".join(problems)


def wire_digits(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The digits the lab sent, as they were on the wire, in time order: digit, sender, first and
    end packet (epoch), duration (ms). Each command's wire digits must be the digits commanded."""
    out = []
    for command in meta["scenario"]["dtmf"]:
        wire = command["wire"]
        on_wire = "".join(d["digit"] or "?" for d in wire)
        assert on_wire.upper() == command["digits"].upper(), f"the lab's ground truth disagrees: {command}"
        for d in wire:
            out.append(
                {
                    "digit": d["digit"],
                    "sender": "caller" if command["by"] == "A" else "callee",
                    "start": float(d["start_time"]),
                    "end": float(d["end_time"]),
                    "duration_ms": 1000.0 * int(d["duration_ts"]) / EVENT_CLOCK_HZ,
                }
            )
    return sorted(out, key=lambda d: d["start"])


def epoch(iso: str) -> float:
    t: datetime = parse_time(iso)
    return t.timestamp()


@pytest.mark.parametrize("meta_path", DTMF_METAS, ids=[p.stem for p in DTMF_METAS])
def test_dtmf_events(meta_path: Path, tmp_path: Path) -> None:
    got = Imported(meta_path, tmp_path)
    meta = got.meta
    expected = wire_digits(meta)
    events = [e for e in got.show().get("events") or [] if e.get("kind") == "dtmf"]
    problems: list[str] = []
    want_seq = [(d["sender"], d["digit"]) for d in expected]
    got_seq = [(e.get("sender"), e.get("summary")) for e in events]
    if got_seq != want_seq:
        problems.append(f"dtmf events (sender, digit) {got_seq}, the wire had {want_seq}")
    pairs = list(zip(expected, events, strict=True)) if got_seq == want_seq else []
    for d, e in pairs:
        label = f"digit {d['digit']!r} from the {d['sender']}"
        try:
            at = epoch(str(e.get("at")))
        except ValueError:
            problems.append(f"{label}: `at` {e.get('at')!r} is not ISO-8601")
            continue
        if not d["start"] - DIGIT_TIME_TOLERANCE_S <= at <= d["end"] + DIGIT_TIME_TOLERANCE_S:
            problems.append(
                f"{label}: at {e.get('at')} ({at - d['start']:+.3f} s from its first packet), on the wire "
                f"from its first packet to its end packet ({d['end'] - d['start']:.3f} s later)"
            )
        m = re.search(r"duration (\d+(?:\.\d+)?) ms", str(e.get("detail") or ""))
        if not m:
            problems.append(f"{label}: detail {e.get('detail')!r} has no 'duration N ms'")
        elif abs(float(m.group(1)) - d["duration_ms"]) > DIGIT_DURATION_TOLERANCE_MS:
            problems.append(f"{label}: duration {m.group(1)} ms, on the wire {d['duration_ms']:.0f} ms")

    # the speech after each sender's last digit is where it was before the digits
    if not got.call.get("recording"):
        problems.append(f"no recording (error {got.call.get('error')!r}); import summary: {got.summary}")
        pytest.fail(f"{meta_path.stem}:\n  " + "\n  ".join(problems))
    rate, samples = got.export(tmp_path / "call.wav")
    t0 = min(first_packets(meta).values())
    for label, side, column, sender in (("left", "A", 0, "caller"), ("right", "B", 1, "callee")):
        mine = [d for d in expected if d["sender"] == sender]
        if not mine:
            continue
        channel = samples[:, column].astype(np.float64)
        sent = sent_audio(meta, side, rate)
        lag, corr = best_lag(channel, sent, rate, MAX_LAG_S)
        s0 = int(round((mine[-1]["end"] + AFTER_DIGIT_GUARD_S - t0) * rate))
        segment = channel[s0:]
        after = overlap_correlation(segment, sent, lag - s0)
        if after < MIN_CORRELATION_AFTER_DIGITS:
            # where the segment's speech is instead, for the message
            ref = sent[max(0, s0 - lag) : max(0, s0 - lag) + len(segment)]
            own_lag, own = best_lag(segment, ref, rate, 0.5)
            problems.append(
                f"{label}: after the {sender}'s last digit (from {s0 / rate:.3f} s) the channel "
                f"correlates {after:.3f} with {side}_sent at the call's lag {lag / rate:+.4f} s (whole "
                f"channel {corr:.3f}), want >= {MIN_CORRELATION_AFTER_DIGITS}; best {own:.3f} shifted "
                f"{own_lag / rate * 1000:+.1f} ms"
            )
    assert not problems, f"{meta_path.stem}:\n  " + "\n  ".join(problems)


def test_codec_calls_present() -> None:
    """The set of calls this file is about: one per codec, the lossy Opus call and the DTMF call."""
    codecs = sorted(codec_name(_load(p)["codec"]) for p in METAS)
    assert codecs == sorted(["G722", "OPUS", "OPUS", "GSM", "G726-32", "AMR", "AMR-WB", "L16", "PCMU"]), (
        f"{CODECS_DIR}: {[p.name for p in METAS]}"
    )
    assert len(DTMF_METAS) == 1, DTMF_METAS
    assert sum(1 for p in METAS if impaired(_load(p), CALLER_TO_CALLEE)) == 1
    for p in METAS:
        meta = _load(p)
        for direction in (CALLER_TO_CALLEE, CALLEE_TO_CALLER):
            imp = impaired(meta, direction)
            dropped = sum(int(s["dropped"]) for s in ((imp or {}).get("rtp_streams") or {}).values())
            # every packet the impairer dropped was between the first and last one on the mirror
            assert expected_lost(meta, direction) == dropped, (p.name, direction, dropped)
        for side in ("A", "B"):
            assert (CODECS_DIR / meta["wav"][f"{side}_sent"]["file"]).is_file(), (p.name, side)
        assert (CODECS_DIR / meta["pcap"]).is_file(), p.name
