"""Recording modes end to end on synthetic calls (tests/helpers/callpcap.py): key codes sent as SIP INFO, the
X-Record and X-Consent headers of in-dialog requests, what reaches the catalogue and the sealed file,
and recordings stored as MP3."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from callrec.decode.formats.mp3 import read_mp3
from callrec.decode.formats.mp3_gapless import read_info
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.fixture_check import read_wav, run_cli
from tests.helpers.keyset import provision

RELAY = "application/dtmf-relay"


def info(
    at: float, key: str, from_caller: bool = True
) -> tuple[float, bool, str, tuple[str, ...], bytes, str]:
    return (at, from_caller, "INFO", (), f"Signal={key}\r\nDuration=160\r\n".encode(), RELAY)


def header(
    at: float, line: str, from_caller: bool = True
) -> tuple[float, bool, str, tuple[str, ...], bytes, str]:
    return (at, from_caller, "INFO", (line,), b"", "")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Home:
    def __init__(self, tmp: Path, config: str, spec: CallSpec) -> None:
        self.root = provision(tmp / "home")
        (self.root / "callrec.toml").write_text(config, encoding="utf-8")
        pcap = write_calls(tmp / "call.pcap", [spec])
        res = run_cli("--home", str(self.root), "import", str(pcap), "--json")
        assert res.exit_code == 0, res.describe()
        (self.call,) = json.loads(res.stdout)
        self.first_rtp = spec.start_s + 0.52

    def show(self) -> dict[str, Any]:
        res = run_cli("--home", str(self.root), "calls", "show", str(self.call["id"]), "--json")
        assert res.exit_code == 0, res.describe()
        shown: dict[str, Any] = json.loads(res.stdout)
        return shown

    def export(self, out: Path, *args: str) -> Path:
        res = run_cli(
            "--home", str(self.root), "calls", "export", str(self.call["id"]), "--out", str(out), *args
        )
        assert res.exit_code == 0, res.describe()
        return out

    def sealed(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.sealed"))


ON_DEMAND = '[[rules]]\nname = "advisors"\nrecord = "on-demand"\n'


def test_sip_info_keys_start_and_an_x_record_header_stops(tmp_path: Path) -> None:
    spec = CallSpec(
        "100",
        "200",
        seconds=10,
        requests=[info(2.0, "*"), info(2.2, "1"), header(6.0, "X-Record: stop", False)],
    )
    home = Home(tmp_path, ON_DEMAND, spec)
    shown = home.show()
    (span,) = shown["recording"]["spans"]
    assert abs(epoch(span["from"]) - (home.first_rtp + 2.2)) < 0.002
    assert abs(epoch(span["to"]) - (home.first_rtp + 6.0)) < 0.002
    assert span["by"] == "keys *1 (caller)"
    events = [(e["kind"], e["summary"], e["sender"], e["detail"]) for e in shown["events"]]
    assert ("dtmf", "*", "caller", "SIP INFO") in events and ("dtmf", "1", "caller", "SIP INFO") in events
    assert ("header", "x-record", "callee", "stop") in events
    assert [(k, s) for k, s, _, _ in events if k == "recording"] == [
        ("recording", "started"),
        ("recording", "stopped"),
    ]
    rate, samples = read_wav(home.export(tmp_path / "x.wav"))
    assert abs(samples.shape[0] / rate - 3.8) < 0.001
    res = run_cli("--home", str(home.root), "calls", "show", str(home.call["id"]))
    assert "recorded:" in res.stdout and "(keys *1 (caller))" in res.stdout
    assert "recording stopped" in res.stdout


def test_without_a_start_nothing_is_written(tmp_path: Path) -> None:
    home = Home(tmp_path, ON_DEMAND, CallSpec("100", "200", seconds=4))
    shown = home.show()
    assert shown["recording"] is None and home.sealed() == []
    assert shown["not_recorded"] == "rule 'advisors': record = on-demand and no start was asked for"


def test_pause_by_header_blanks_and_redacts_keys(tmp_path: Path) -> None:
    spec = CallSpec(
        "100",
        "200",
        seconds=10,
        requests=[
            header(2.0, "X-Record: pause", False),
            info(3.0, "4"),
            info(3.5, "2"),
            header(6.0, "X-Record: resume", False),
        ],
    )
    home = Home(tmp_path, "", spec)
    shown = home.show()
    (pause,) = shown["paused_spans"]
    assert pause["by"] == "x-record header (callee)"
    digits = [e for e in shown["events"] if e["kind"] == "dtmf"]
    assert [(e["summary"], e["detail"]) for e in digits] == [
        ("redacted", "keyed during a pause: not kept")
    ] * 2
    rate, samples = read_wav(home.export(tmp_path / "p.wav"))
    start = epoch(shown["recording"]["spans"][0]["from"])
    first, last = round((epoch(pause["from"]) - start) * rate), round((epoch(pause["to"]) - start) * rate)
    assert last - first == 4 * rate
    assert (
        not samples[first:last].any()
        and samples[:first].any(axis=0).all()
        and samples[last:].any(axis=0).all()
    )
    (catalogue,) = home.root.glob("catalogue*.db")
    # the redacted keys are nowhere in the catalogue's events (only the pause's own events mention it)
    res = run_cli("--home", str(home.root), "calls", "show", str(home.call["id"]))
    assert "redacted" in res.stdout and "pause paused" in res.stdout and catalogue.stat().st_size > 0


def test_consent_header_gates_and_declines(tmp_path: Path) -> None:
    config = '[[rules]]\nname = "advice"\nconsent = "required"\n'
    granted = Home(
        tmp_path / "a",
        config,
        CallSpec("100", "200", seconds=8, requests=[header(3.0, "X-Consent: granted", False)]),
    )
    shown = granted.show()
    assert shown["consent"] == "established: x-consent: granted"
    assert abs(epoch(shown["consent_at"]) - (granted.first_rtp + 3.0)) < 0.002
    assert shown["recording"]["spans"][0]["from"] == shown["consent_at"]
    declined = Home(
        tmp_path / "b",
        config,
        CallSpec("100", "200", seconds=8, requests=[header(3.0, "X-Consent: declined", False)]),
    )
    shown = declined.show()
    assert shown["recording"] is None and declined.sealed() == []
    assert shown["not_recorded"] == "rule 'advice': consent declined: x-consent: declined"


def test_mp3_storage_round_trip(tmp_path: Path) -> None:
    spec = CallSpec("100", "200", seconds=6)
    wav_home = Home(tmp_path / "wav", "", spec)
    mp3_home = Home(tmp_path / "mp3", '[[rules]]\nname = "qa"\nformat = "mp3"\n', spec)
    (stored,) = mp3_home.sealed()
    assert stored.name.endswith(".mp3.sealed")
    shown = mp3_home.show()
    assert shown["recording"]["format"] == "mp3"
    wav_size = wav_home.show()["recording"]["bytes"]
    assert shown["recording"]["bytes"] < wav_size / 4  # 48 kbit/s against 256 kbit/s
    assert run_cli("--home", str(mp3_home.root), "calls", "verify").exit_code == 0
    rate, from_mp3 = read_wav(mp3_home.export(tmp_path / "from-mp3.wav"))
    _, from_wav = read_wav(wav_home.export(tmp_path / "from-wav.wav"))
    assert rate == 8000 and from_mp3.shape == from_wav.shape
    for channel in range(2):
        a, b = from_mp3[:, channel].astype(np.float64), from_wav[:, channel].astype(np.float64)
        assert np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)) > 0.9
    as_stored = mp3_home.export(tmp_path / "stored.mp3").read_bytes()
    decoded, mp3_rate = read_mp3(as_stored, from_wav.shape[0])
    assert mp3_rate == 8000 and np.array_equal(decoded, from_mp3)
    assert np.array_equal(read_mp3(as_stored)[0], from_mp3)  # the gapless tag alone says the length
    assert plain_decode(as_stored).shape[0] == from_wav.shape[0]  # and every player is told
    played = tmp_path / "played.wav"
    res = run_cli(
        "--home", str(mp3_home.root), "calls", "play", str(mp3_home.call["id"]), "--player", f"tee {played}"
    )
    assert res.exit_code == 0, res.describe()
    assert played.read_bytes()[:4] == b"RIFF"
    assert read_wav(played)[1].shape == from_mp3.shape


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_mono_exports_of_both_stored_formats(fmt: str, tmp_path: Path) -> None:
    home = Home(tmp_path, f'[[rules]]\nname = "r"\nformat = "{fmt}"\n', CallSpec("100", "200", seconds=3))
    rate, mono = read_wav(home.export(tmp_path / "m.wav", "--mono"))
    assert mono.shape[1] == 1 and abs(mono.shape[0] / rate - home.show()["recording"]["seconds"]) < 0.001


def test_config_check_reports_controls_and_consent_errors(tmp_path: Path) -> None:
    home = provision(tmp_path / "home")
    config = home / "callrec.toml"
    config.write_text(
        '[controls]\nstop = "*1"\n[consent]\nannouncement = "gone.wav"\nopt_out = "99"\n', encoding="utf-8"
    )
    res = run_cli("--home", str(home), "config", "check")
    assert res.exit_code == 1
    for line in (
        f"{config}: controls.start: the same code as stop ('*1')",
        f"{config}: consent.announcement: cannot read {home / 'gone.wav'}",
        f"{config}: consent.opt_out: '99' is not one key",
    ):
        assert line in res.stderr + res.stdout, res.describe()
    config.write_text('[controls]\nstart = "#1"\npause_fill = "tone"\n', encoding="utf-8")
    res = run_cli("--home", str(home), "config", "show")
    assert res.exit_code == 0 and "#1" in res.stdout, res.describe()


def test_plot_of_an_on_demand_call_places_events_on_the_files_clock(tmp_path: Path) -> None:
    from callrec.decode.plot import events_in_file, ns_from_iso

    spec = CallSpec(
        "100",
        "200",
        seconds=12,
        requests=[
            *(
                info(at, key)
                for at, key in ((1.0, "*"), (1.2, "1"), (3.0, "*"), (3.2, "2"), (6.0, "*"), (6.2, "1"))
            ),
            header(7.0, "X-Record: pause"),
            header(8.0, "X-Record: resume"),
            *(info(at, key) for at, key in ((9.0, "*"), (9.2, "2"))),
        ],
    )
    home = Home(tmp_path, ON_DEMAND, spec)
    shown = home.show()
    spans = shown["recording"]["spans"]
    assert len(spans) == 2 and abs(spans[1]["at_s"] - 2.0) < 0.002
    start = ns_from_iso(spans[0]["from"])
    moved = events_in_file(shown["events"], spans, start)
    at = {(e["kind"], e["summary"]): round((e["ts_ns"] - start) / 1e9, 2) for e in moved}
    # span 1 is 1.2-3.2 s of the call (0-2 s of the file), span 2 is 6.2-9.2 s (2-5 s of the file)
    assert at[("pause", "paused")] == 2.8 and at[("pause", "resumed")] == 3.8
    assert ("sip", "INVITE") not in at  # before the first span: not in the file
    out = tmp_path / "plot.png"
    res = run_cli("--home", str(home.root), "calls", "plot", str(home.call["id"]), "--out", str(out))
    assert res.exit_code == 0, res.describe()
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def plain_decode(data: bytes) -> np.ndarray:
    """What FFmpeg (a player) decodes from an MP3 file, with no help from callrec."""
    with av.open(io.BytesIO(data), format="mp3") as container:
        return np.concatenate([frame.to_ndarray().T for frame in container.decode(audio=0)])


def test_an_mp3_stored_without_a_gapless_tag_plays_exports_and_plots_its_length(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recordings sealed before the tag was written: the stored stream is as it was (the seal
    covers it), a WAV export, play and plot cut the delay and padding from the catalogue's length,
    and an MP3 export is the stored stream with a tag in front, so players get the length too."""
    from callrec.decode.formats import mp3 as mp3_module
    from callrec.recorder.saving import saver

    def untagged(*args: Any, **kwargs: Any) -> Iterator[bytes]:  # what mp3_chunks wrote before
        stream = b"".join(mp3_module.mp3_chunks(*args, **kwargs))
        info = read_info(stream)
        assert info is not None
        yield stream[info.tag_bytes :]

    spec = CallSpec("100", "200", seconds=10.02)
    with monkeypatch.context() as patched:
        patched.setattr(saver, "mp3_chunks", untagged)
        old = Home(tmp_path / "old", '[[rules]]\nname = "qa"\nformat = "mp3"\n', spec)
    (sealed,) = old.sealed()
    wav_home = Home(tmp_path / "wav", "", spec)
    _, from_wav = read_wav(wav_home.export(tmp_path / "from-wav.wav"))
    n = from_wav.shape[0]
    assert n == 80160
    stored = old.export(tmp_path / "stored.mp3").read_bytes()
    info = read_info(stored)
    assert info is not None and info.samples == n  # a tag was put in front of the stored frames
    assert plain_decode(stored).shape[0] == n
    assert read_wav(old.export(tmp_path / "old.wav"))[1].shape == from_wav.shape
    played = tmp_path / "played.wav"
    res = run_cli("--home", str(old.root), "calls", "play", str(old.call["id"]), "--player", f"tee {played}")
    assert res.exit_code == 0, res.describe()
    assert read_wav(played)[1].shape == from_wav.shape
