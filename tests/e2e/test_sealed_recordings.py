"""Sealed recordings end to end: a real lab call imported, exported and compared with the
unsealed render; nothing plain at rest; every kind of tampering refused with its own error;
passphrases, missing and rotated keys."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.sources.capture_file import open_capture
from callrec.capture.tracking.tracker import CallTracker
from callrec.cli.main import cli
from callrec.decode.formats.wav import read_wav, wav_chunks
from callrec.decode.render import render_call
from callrec.store.crypto.seal import inspect_sealed
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import PASSPHRASE, keyset, provision

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "pcaps" / "lab"
CALL = LAB / "lab_pcmu_12s.pcap"
OTHER = LAB / "lab_pcma_12s.pcap"


def run(home: Path, *args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner(env=env).invoke(cli, ["--home", str(home), *args])


def imported(home: Path, *captures: Path) -> list[dict]:
    result = run(home, "import", "--json", *map(str, captures))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def unsealed_render(capture: Path) -> bytes:
    """The WAV bytes the pipeline seals, made here without the store."""
    frames, tracker = FrameDecoder(), CallTracker()
    calls = []
    with open_capture(capture) as reader:
        for batch in reader.batches():
            calls += tracker.feed(frames.decode(batch))
    calls += tracker.flush()
    [call] = [c for c in calls if any(len(leg.packets) for leg in c.legs.values())]
    rendered = render_call(call)
    return b"".join(bytes(chunk) for chunk in wav_chunks(rendered.samples, rendered.sample_rate_hz))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return provision(tmp_path / "home")


@pytest.fixture
def call(home: Path) -> dict:
    [found] = imported(home, CALL)
    return found


@pytest.fixture
def long_call(home: Path, tmp_path: Path) -> dict:
    """A call long enough for several sealed chunks (1 MiB each: 33 s of 8 kHz stereo)."""
    [found] = imported(home, write_calls(tmp_path / "long.pcap", [CallSpec("+3526", "201", seconds=110)]))
    return found


def sealed_path(home: Path, call: dict) -> Path:
    return Path(call["recording"]["path"])


def export(
    home: Path, call_id: int, out: Path, *extra: str, env: dict[str, str | None] | None = None
) -> Result:
    return run(home, "calls", "export", str(call_id), "--out", str(out), *extra, env=env)


def test_export_is_the_unsealed_render_byte_for_byte(home: Path, call: dict, tmp_path: Path) -> None:
    out = tmp_path / "call.wav"
    result = export(home, call["id"], out)
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == unsealed_render(CALL)
    assert call["recording"]["sealed"] and call["recording"]["key_fingerprint"] == keyset().fingerprint
    assert sealed_path(home, call).name.endswith(".wav.sealed")


def test_nothing_plain_at_rest(home: Path, call: dict, tmp_path: Path) -> None:
    out = tmp_path / "call.wav"
    assert export(home, call["id"], out).exit_code == 0
    samples, _ = read_wav(out)
    plain = out.read_bytes()
    probes = [plain[44 + k : 44 + k + 32] for k in range(0, len(plain) - 100, len(plain) // 50)]
    probes = [p for p in probes if len(set(p)) >= 16]  # speech, not silence (zeros are everywhere)
    assert len(probes) >= 20
    left = samples[8000:16000, 0].astype(np.float64)  # one second of the caller, mid-call
    left -= left.mean()
    files = [p for p in home.rglob("*") if p.is_file()]
    assert files
    for path in files:
        data = path.read_bytes()
        assert b"RIFF" not in data and b"WAVE" not in data, path
        assert not any(probe in data for probe in probes), f"plain PCM found in {path}"
        if len(data) >= 2 * left.size + 2:  # no stretch of the file correlates with the audio
            pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2").astype(np.float64)
            window = pcm[:200_000]
            corr = np.correlate(window - window.mean(), left, mode="valid")
            norm = np.sqrt(
                np.sum(left**2) * np.convolve((window - window.mean()) ** 2, np.ones(left.size), "valid")
            )
            assert np.max(np.abs(corr) / np.maximum(norm, 1e-9)) < 0.3, path


def test_the_appliance_home_alone_cannot_open_a_recording(home: Path, call: dict, tmp_path: Path) -> None:
    out = tmp_path / "x.wav"
    result = export(home, call["id"], out, env={"CALLREC_KEY": None})
    assert result.exit_code == 1 and "needs the compliance key file" in result.output
    for candidate in [p for p in home.rglob("*") if p.is_file()]:  # no file of the home is a key file
        attempt = export(home, call["id"], out, "--key", str(candidate))
        assert attempt.exit_code == 1, candidate
    assert not out.exists()


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        ("flip", "failed authentication"),
        ("truncate", "truncated"),
        ("swap_chunks", "failed authentication"),
        ("drop_final", "truncated"),
    ],
)
def test_tampered_files_are_refused_with_their_own_error(
    home: Path, long_call: dict, tmp_path: Path, damage: str, error: str
) -> None:
    call = long_call
    path = sealed_path(home, call)
    data = bytearray(path.read_bytes())
    frames = _frames(bytes(data))
    assert len(frames) >= 4
    if damage == "flip":
        start, end = frames[2]
        data[(start + end) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: frames[3][0] + 10]
    elif damage == "swap_chunks":
        (a0, a1), (b0, b1) = frames[1], frames[2]
        data = data[:a0] + data[b0:b1] + data[a0:a1] + data[b1:]
    elif damage == "drop_final":
        data = data[: frames[-1][0]]
    path.write_bytes(bytes(data))
    out = tmp_path / "x.wav"
    result = export(home, call["id"], out)
    assert result.exit_code == 1 and error in result.output, result.output
    assert not out.exists() and not list(tmp_path.glob(".x.wav*"))
    verify = run(home, "calls", "verify", str(call["id"]))
    assert verify.exit_code == 1 and f"call {call['id']}" in verify.output


def _frames(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every frame after the header, by the layout in store/seal.py's docstring:
    a 48-byte fixed header, W bytes of embedded key, a 16-byte tag; frames of kind (1 byte),
    length (4 bytes, big-endian) and ciphertext."""
    position = 48 + int.from_bytes(data[46:48], "big") + 16
    spans = []
    while position < len(data):
        end = position + 5 + int.from_bytes(data[position + 1 : position + 5], "big")
        spans.append((position, end))
        position = end
    return spans


def test_a_file_swapped_between_two_calls_is_caught(home: Path, call: dict, tmp_path: Path) -> None:
    [other] = imported(home, OTHER)
    a, b = sealed_path(home, call), sealed_path(home, other)
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    result = export(home, call["id"], tmp_path / "x.wav")
    assert result.exit_code == 1 and "file swapped" in result.output
    assert "file swapped" in run(home, "calls", "verify", str(other["id"])).output


def test_a_changed_catalogue_row_is_caught(home: Path, call: dict, tmp_path: Path) -> None:
    with sqlite3.connect(home / "catalogue.db") as db:
        db.execute("UPDATE calls SET caller = '+352999' WHERE id = ?", (call["id"],))
    result = export(home, call["id"], tmp_path / "x.wav")
    assert result.exit_code == 1 and "catalogue row changed after signing (caller)" in result.output
    verify = run(home, "calls", "verify", "--json")
    assert verify.exit_code == 1
    assert json.loads(verify.stdout) == [
        {
            "id": call["id"],
            "ok": False,
            "error": f"call {call['id']}: catalogue row changed after signing (caller)",
            "purged": None,
        }
    ]


def test_verify_passes_on_intact_recordings(home: Path, call: dict) -> None:
    result = run(home, "calls", "verify")
    assert result.exit_code == 0 and "1 intact, 0 failed" in result.output


def test_wrong_passphrase_and_missing_key_file(home: Path, call: dict, tmp_path: Path) -> None:
    wrong = export(home, call["id"], tmp_path / "x.wav", env={"CALLREC_PASSPHRASE": "not it"})
    assert wrong.exit_code == 1 and "wrong passphrase" in wrong.output
    missing = export(home, call["id"], tmp_path / "x.wav", "--key", str(tmp_path / "nope.key"))
    assert missing.exit_code == 1 and "nope.key" in missing.output
    phrase = tmp_path / "phrase"
    phrase.write_text(PASSPHRASE + "\n")
    by_file = export(
        home,
        call["id"],
        tmp_path / "x.wav",
        "--passphrase-file",
        str(phrase),
        env={"CALLREC_PASSPHRASE": None},
    )
    assert by_file.exit_code == 0, by_file.output


def test_rotated_keys(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first_key, second_key = tmp_path / "first.key", tmp_path / "second.key"
    env = {"CALLREC_PASSPHRASE": "rotation test", "CALLREC_KEY": None}
    assert run(home, "keys", "init", "--private-key", str(first_key), env=env).exit_code == 0
    [old] = imported(home, CALL)
    rotated = run(home, "keys", "rotate", "--private-key", str(second_key), env=env)
    assert rotated.exit_code == 0, rotated.output
    [new] = imported(home, OTHER)
    assert old["recording"]["key_fingerprint"] != new["recording"]["key_fingerprint"]
    assert (
        inspect_sealed(sealed_path(home, new).open("rb")).key_fingerprint
        == new["recording"]["key_fingerprint"]
    )
    out = tmp_path / "x.wav"
    assert export(home, old["id"], out, "--key", str(first_key), env=env).exit_code == 0
    assert export(home, new["id"], out, "--key", str(second_key), env=env).exit_code == 0
    refused = export(home, old["id"], out, "--key", str(second_key), env=env)
    assert refused.exit_code == 1 and "none of the key files given holds it" in refused.output
    both = export(home, old["id"], out, "--key", str(second_key), "--key", str(first_key), env=env)
    assert both.exit_code == 0
    shown = json.loads(run(home, "keys", "show", "--json").stdout)
    assert [k["current"] for k in shown["recording_keys"]] == [False, True]
    assert shown["current"] == new["recording"]["key_fingerprint"]


def test_import_without_keys_is_refused(tmp_path: Path) -> None:
    result = run(tmp_path / "home", "import", str(CALL))
    assert result.exit_code == 1 and "callrec keys init" in result.output


def test_play_pipes_the_verified_audio_to_the_player(home: Path, call: dict, tmp_path: Path) -> None:
    out = tmp_path / "played.wav"
    result = run(home, "calls", "play", str(call["id"]), "--player", f"sh -c 'cat > {out}'")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == unsealed_render(CALL)
    missing = run(home, "calls", "play", str(call["id"]), "--player", "no-such-player-here")
    assert missing.exit_code == 1 and "calls export" in missing.output
