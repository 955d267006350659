"""``calls export`` (WAV/MP3, stereo/mono, bitrates, atomic, verified) and ``calls plot``."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner, Result

from callrec.cli.main import cli
from callrec.decode.formats.wav import mono_mix, read_wav
from tests.helpers.audio_match import best_lag
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import provision

ROOT = Path(__file__).resolve().parents[2]
BASIC = ROOT / "pcaps" / "fixtures" / "basic_pcmu.pcap"
BUSY = ROOT / "pcaps" / "fixtures" / "busy_486.pcap"


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return provision(tmp_path / "home")


@pytest.fixture
def calls(home: Path) -> dict[str, dict]:
    result = run(home, "import", "--json", str(BASIC), str(BUSY))
    assert result.exit_code == 0, result.output
    return {c["state"]: c for c in json.loads(result.stdout)}


@pytest.fixture
def out(tmp_path: Path) -> Path:
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


def stereo(home: Path, call: dict, tmp_path: Path) -> tuple[np.ndarray, int]:
    """The call's recording, exported as the stereo WAV (outside the ``out`` directory)."""
    target = tmp_path / f"reference-{call['id']}.wav"
    if not target.exists():
        result = run(home, "calls", "export", str(call["id"]), "--out", str(target))
        assert result.exit_code == 0, result.output
    return read_wav(target)


def decode_mp3(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray().T for f in container.decode(audio=0)]
        rate = container.streams.audio[0].rate
    return np.concatenate(frames).astype(np.float64) * 32768, rate


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))


def test_mp3_is_inferred_from_the_suffix_and_sounds_like_the_recording(
    home: Path, calls: dict, out: Path
) -> None:
    call = calls["completed"]
    target = out / "call.mp3"
    result = run(home, "calls", "export", str(call["id"]), "--out", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"Wrote {target} (3.019 s, 8000 Hz stereo, MP3 48 kbit/s)"
    stored, _ = stereo(home, call, out.parent)
    decoded, rate = decode_mp3(target)
    assert rate == 8000 and decoded.shape[1] == 2
    for channel in (0, 1):
        assert correlation(stored[:, channel], decoded[:, channel]) >= 0.9
    assert abs(target.stat().st_size - 48_000 / 8 * 3.019) < 1500
    assert sorted(p.name for p in out.iterdir()) == ["call.mp3"]


def test_mono_wav_is_the_mix_of_both_channels(home: Path, calls: dict, out: Path) -> None:
    call = calls["completed"]
    target = out / "mono.wav"
    result = run(home, "calls", "export", str(call["id"]), "--out", str(target), "--mono")
    assert result.exit_code == 0 and "8000 Hz mono)" in result.stdout
    stored, _ = stereo(home, call, out.parent)
    samples, rate = read_wav(target)
    assert rate == 8000 and samples.shape == (len(stored), 1)
    assert np.array_equal(samples[:, 0], mono_mix(stored))


def test_mono_mp3_with_a_bitrate(home: Path, calls: dict, out: Path) -> None:
    call = calls["completed"]
    target = out / "mono.mp3"
    result = run(home, "calls", "export", str(call["id"]), "--out", str(target), "--mono", "--bitrate", "16")
    assert result.exit_code == 0 and result.stdout.strip().endswith("8000 Hz mono, MP3 16 kbit/s)")
    decoded, _ = decode_mp3(target)
    stored, _ = stereo(home, call, out.parent)
    assert decoded.shape[1] == 1
    assert correlation(mono_mix(stored), decoded[:, 0]) >= 0.9
    assert abs(target.stat().st_size - 16_000 / 8 * 3.019) < 800


def test_explicit_format_wins_over_the_suffix(home: Path, calls: dict, out: Path) -> None:
    call = calls["completed"]
    as_wav = out / "really-a-wav.mp3"
    assert (
        run(home, "calls", "export", str(call["id"]), "--out", str(as_wav), "--format", "wav").exit_code == 0
    )
    stereo(home, call, out.parent)
    assert as_wav.read_bytes() == (out.parent / f"reference-{call['id']}.wav").read_bytes()
    as_mp3 = out / "call.audio"
    result = run(home, "calls", "export", str(call["id"]), "--out", str(as_mp3), "--format", "mp3")
    assert result.exit_code == 0 and as_mp3.read_bytes()[:2] == b"\xff\xe3"  # MPEG-2.5 layer III sync


def test_unsupported_bitrate_is_an_error_and_writes_nothing(home: Path, calls: dict, out: Path) -> None:
    call = calls["completed"]
    target = out / "call.mp3"
    target.write_bytes(b"an older export")
    result = run(home, "calls", "export", str(call["id"]), "--out", str(target), "--bitrate", "100")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: bitrate 100 kbit/s is not supported at 8000 Hz (MPEG-2.5: 8, 16,")
    assert target.read_bytes() == b"an older export" and sorted(out.iterdir()) == [target]


def test_bitrate_without_mp3_is_a_usage_error(home: Path, calls: dict, out: Path) -> None:
    result = run(
        home, "calls", "export", str(calls["completed"]["id"]), "--out", str(out / "a.wav"), "--bitrate", "32"
    )
    assert result.exit_code == 2 and "--bitrate is for MP3 exports" in result.stderr
    assert not list(out.iterdir())


@pytest.mark.parametrize("extra", [[], ["--mono"], ["--format", "mp3"]])
def test_a_damaged_recording_is_not_exported(home: Path, calls: dict, out: Path, extra: list[str]) -> None:
    call = calls["completed"]
    stored = Path(call["recording"]["path"])
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0x01  # one bit of the last chunk's authentication tag
    stored.write_bytes(bytes(data))
    target = out / "call.out"
    result = run(home, "calls", "export", str(call["id"]), "--out", str(target), *extra)
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: chunk 0 failed authentication (altered, reordered or from another file)"
    )
    assert not list(out.iterdir())  # no partial file, no temp file


def test_export_refuses_to_overwrite_the_stored_recording(home: Path, calls: dict) -> None:
    call = calls["completed"]
    stored = Path(call["recording"]["path"])
    before = stored.read_bytes()
    result = run(home, "calls", "export", str(call["id"]), "--out", str(stored), "--mono")
    assert result.exit_code == 1 and "is the stored recording itself" in result.stderr
    assert stored.read_bytes() == before


def test_a_call_without_recording(home: Path, calls: dict, out: Path) -> None:
    busy = calls["rejected"]["id"]
    for command in ("export", "plot"):
        result = run(home, "calls", command, str(busy), "--out", str(out / "x.mp3"))
        assert result.exit_code == 1 and result.stderr.startswith(f"Error: call {busy} has no recording")
    assert not list(out.iterdir())


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_writes_a_png_of_the_requested_size(home: Path, calls: dict, out: Path) -> None:
    call_id = str(calls["completed"]["id"])
    target = out / "call.png"
    result = run(home, "calls", "plot", call_id, "--out", str(target))
    assert result.exit_code == 0 and result.stdout.strip() == f"Wrote {target} (1600x600 PNG)"
    assert png_size(target) == (1600, 600)
    small = out / "small.png"
    assert (
        run(
            home, "calls", "plot", call_id, "--out", str(small), "--width", "800", "--height", "300"
        ).exit_code
        == 0
    )
    assert png_size(small) == (800, 300)
    zoom = out / "zoom.png"
    assert (
        run(home, "calls", "plot", call_id, "--out", str(zoom), "--from", "1", "--to", "1.5").exit_code == 0
    )
    assert png_size(zoom) == (1600, 600)
    svg = out / "call.svg"
    assert run(home, "calls", "plot", call_id, "--out", str(svg)).exit_code == 0
    assert b"<svg" in svg.read_bytes()[:500]


def test_plot_errors(home: Path, calls: dict, out: Path) -> None:
    call_id = str(calls["completed"]["id"])
    target = out / "call.png"
    late = run(home, "calls", "plot", call_id, "--out", str(target), "--from", "60")
    assert late.exit_code == 1 and late.stderr.strip() == (
        "Error: the recording is 3.019 s long: nothing to draw from 60 s on"
    )
    backwards = run(home, "calls", "plot", call_id, "--out", str(target), "--from", "2", "--to", "1")
    assert backwards.exit_code == 1 and "must end after it starts" in backwards.stderr
    tiny = run(home, "calls", "plot", call_id, "--out", str(target), "--width", "10")
    assert tiny.exit_code == 2 and "--width" in tiny.stderr
    assert not list(out.iterdir())


def test_plot_draws_the_catalogue_s_markers(home: Path, calls: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from callrec.decode import plot as decode_plot

    seen: dict = {}

    def spy(*args: object, **kwargs: object) -> object:
        figure = real(*args, **kwargs)
        seen["figure"], seen["kwargs"] = figure, kwargs
        return figure

    real = decode_plot.plot_call
    monkeypatch.setattr(decode_plot, "plot_call", spy)
    call = calls["completed"]
    result = run(home, "calls", "plot", str(call["id"]), "--out", str(home / "plot.png"))
    assert result.exit_code == 0
    kwargs = seen["kwargs"]
    assert kwargs["answered_s"] == pytest.approx(-0.012)  # answered 12 ms before the first packet
    assert [e["summary"] for e in kwargs["events"]][:1] == ["INVITE"]
    texts = {t.get_text().strip() for ax in seen["figure"].axes for t in ax.texts}
    assert {"answered", "BYE (caller)"} <= texts
    assert (
        f"Call {call['id']}: {call['caller']} → {call['callee']}, completed" in seen["figure"].get_suptitle()
    )


def test_help_has_examples() -> None:
    for command in ("export", "plot"):
        result = CliRunner().invoke(cli, ["calls", command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output
    assert "--mono" in CliRunner().invoke(cli, ["calls", "export", "--help"]).output


def ffprobe_samples(path: Path) -> int | None:
    """Samples FFmpeg's command-line prober decodes from ``path`` (None: ffprobe not installed)."""
    if shutil.which("ffprobe") is None:
        return None
    done = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "frame=nb_samples",
            "-of",
            "csv=p=0",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return sum(int(line.strip(",")) for line in done.stdout.split())


def test_an_mp3_export_is_as_long_as_the_wav_and_sample_aligned(tmp_path: Path) -> None:
    """A 10.02 s call as WAV and as MP3: the MP3 carries the encoder delay and padding in its
    LAME "Info" tag, so FFmpeg (PyAV, ffprobe) decodes exactly the WAV's samples, not 10.22 s."""
    home = provision(tmp_path / "home")
    pcap = write_calls(tmp_path / "call.pcap", [CallSpec("100", "200", seconds=10.02)])
    (call,) = json.loads(run(home, "import", "--json", str(pcap)).stdout)
    assert call["recording"]["seconds"] == pytest.approx(10.02, abs=0.01)
    wav, mp3 = tmp_path / "call.wav", tmp_path / "call.mp3"
    for target in (wav, mp3):
        assert run(home, "calls", "export", str(call["id"]), "--out", str(target)).exit_code == 0
    samples, rate = read_wav(wav)
    decoded, mp3_rate = decode_mp3(mp3)
    assert mp3_rate == rate == 8000 and decoded.shape[1] == 2
    assert abs(decoded.shape[0] - samples.shape[0]) <= 0.030 * rate, (decoded.shape[0], samples.shape[0])
    for channel in (0, 1):
        lag, corr = best_lag(decoded[:, channel], samples[:, channel].astype(np.float64), rate, 0.5)
        assert abs(lag) < rate // 1000 and corr > 0.9, (channel, lag, corr)  # aligned within 1 ms
    probed = ffprobe_samples(mp3)
    if probed is not None:
        assert abs(probed - samples.shape[0]) <= 0.030 * rate, (probed, samples.shape[0])
