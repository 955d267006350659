"""The command-line contract: commands, options, JSON fields, errors and exit codes."""

from __future__ import annotations

import hashlib
import json
import wave
from pathlib import Path

import pytest
from click.testing import CliRunner

from callrec.cli.main import cli
from tests.helpers.keyset import provision

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "pcaps" / "fixtures"
BASIC = FIXTURES / "basic_pcmu.pcap"
BUSY = FIXTURES / "busy_486.pcap"

CALL_KEYS = {
    "id",
    "call_id",
    "started_at",
    "answered_at",
    "ended_at",
    "duration_s",
    "talk_s",
    "caller",
    "callee",
    "caller_display",
    "callee_display",
    "caller_uri",
    "callee_uri",
    "request_uri",
    "direction",
    "state",
    "end_reason",
    "final_status",
    "codecs",
    "source",
    "error",
    "not_recorded",
    "queue",
    "retention_class",
    "expires_at",
    "notes",
    "rule",
    "rule_reason",
    "consent",
    "consent_at",
    "paused_spans",
    "legs",
    "recording",
}
LEG_KEYS = {
    "direction",
    "codec",
    "packets",
    "expected",
    "lost",
    "duplicates",
    "late",
    "ssrc",
    "src",
    "dst",
    "first_media_at",
    "last_media_at",
    "max_gap_ms",
    "jitter_mean_ms",
    "jitter_max_ms",
    "rtcp_packets",
    "mos",
}


def run(home: Path, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--home", str(home), *args], input=input, catch_exceptions=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return provision(tmp_path / "home")


@pytest.fixture
def imported(home: Path) -> list[dict]:
    result = run(home, "import", "--json", str(BASIC), str(BUSY))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_import_json_has_the_contract_fields(imported: list[dict], home: Path) -> None:
    assert len(imported) == 2
    call = next(c for c in imported if c["state"] == "completed")
    assert set(call) == CALL_KEYS
    assert call["codecs"] == ["PCMU"]
    assert [leg["direction"] for leg in call["legs"]] == ["caller->callee", "callee->caller"]
    for leg in call["legs"]:
        assert set(leg) == LEG_KEYS
        assert leg["codec"] == "PCMU" and leg["packets"] > 0 and leg["lost"] == 0
        assert leg["ssrc"].startswith("0x")
    rec = call["recording"]
    assert set(rec) == {
        "path",
        "sample_rate",
        "channels",
        "seconds",
        "bytes",
        "sha256",
        "sealed",
        "key_fingerprint",
        "audio_sha256",
        "format",
        "spans",
    }
    # recorded by the default rule from the first audio to the last, nothing paused, no consent needed
    assert rec["format"] == "wav" and len(rec["spans"]) == 1 and rec["spans"][0]["at_s"] == 0
    assert call["consent"] == "not-required" and call["consent_at"] is None and call["paused_spans"] == []
    assert rec["sealed"] is True and call["retention_class"] == "default" and call["expires_at"].endswith("Z")
    assert rec["sample_rate"] == 8000 and rec["channels"] == 2
    assert Path(rec["path"]).is_file() and Path(rec["path"]).is_relative_to(home)
    assert call["started_at"].endswith("Z") and "T" in call["started_at"]
    busy = next(c for c in imported if c["state"] == "rejected")
    assert busy["recording"] is None and busy["final_status"] == 486


def test_import_summary_and_reimport_is_idempotent(home: Path, imported: list[dict]) -> None:
    again = run(home, "import", str(BASIC))
    assert again.exit_code == 0
    assert (
        "1 call(s) found" in again.stdout
        and "0 added" in again.stdout
        and "1 already present" in again.stdout
    )
    listed = json.loads(run(home, "calls", "list", "--json").stdout)
    assert len(listed) == 2


def test_list_table_csv_and_filters(home: Path, imported: list[dict]) -> None:
    table = run(home, "calls", "list")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "STARTED", "(UTC)"]
    csv_out = run(home, "calls", "list", "--csv").stdout.splitlines()
    assert csv_out[0].startswith("id,call_id,started_at") and len(csv_out) == 3
    completed = json.loads(run(home, "calls", "list", "--json", "--state", "completed").stdout)
    assert [c["state"] for c in completed] == ["completed"]
    number = imported[0]["caller"][-4:]
    assert json.loads(run(home, "calls", "list", "--json", "--number", number).stdout)
    assert json.loads(run(home, "calls", "list", "--json", "--number", "no-such-number").stdout) == []
    assert len(json.loads(run(home, "calls", "list", "--json", "--limit", "1").stdout)) == 1
    day = imported[0]["started_at"][:10]
    assert len(json.loads(run(home, "calls", "list", "--json", "--since", day, "--until", day).stdout)) == 2
    assert json.loads(run(home, "calls", "list", "--json", "--since", "2099-01-01").stdout) == []
    assert run(home, "calls", "list", "--state", "completed").stdout.count("\n") == 2


def test_show_text_and_json(home: Path, imported: list[dict]) -> None:
    call_id = next(c["id"] for c in imported if c["state"] == "completed")
    shown = json.loads(run(home, "calls", "show", str(call_id), "--json").stdout)
    assert set(shown) == CALL_KEYS | {"events"}
    assert [e["summary"] for e in shown["events"]][:1] == ["INVITE"]
    text = run(home, "calls", "show", str(call_id)).stdout
    assert "caller->callee" in text and "INVITE" in text and "recording:" in text


def test_export_writes_the_stereo_wav(home: Path, imported: list[dict], tmp_path: Path) -> None:
    call = next(c for c in imported if c["state"] == "completed")
    out = tmp_path / "out.wav"
    result = run(home, "calls", "export", str(call["id"]), "--out", str(out))
    assert result.exit_code == 0 and str(out) in result.stdout
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        assert abs(w.getnframes() / 8000 - call["recording"]["seconds"]) < 0.001
    assert hashlib.sha256(out.read_bytes()).hexdigest() == call["recording"]["audio_sha256"]
    assert out.read_bytes()[:4] == b"RIFF" and Path(call["recording"]["path"]).read_bytes()[:4] != b"RIFF"


def test_errors_are_one_line_and_exit_1(home: Path, imported: list[dict], tmp_path: Path) -> None:
    missing = run(home, "calls", "show", "999")
    assert missing.exit_code == 1 and missing.stderr.strip() == "Error: no call with id 999"
    busy = next(c for c in imported if c["state"] == "rejected")
    no_audio = run(home, "calls", "export", str(busy["id"]), "--out", str(tmp_path / "x.wav"))
    assert no_audio.exit_code == 1 and no_audio.stderr.startswith(
        f"Error: call {busy['id']} has no recording"
    )
    assert not (tmp_path / "x.wav").exists()
    bad_date = run(home, "calls", "list", "--since", "yesterday")
    assert bad_date.exit_code == 1 and "invalid date 'yesterday'" in bad_date.stderr
    assert "Traceback" not in bad_date.output


def test_unknown_file_format_imports_nothing(tmp_path: Path, home: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, this is not a capture\n")
    result = run(home, "import", str(BASIC), str(junk))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "notes.txt" in result.stderr
    assert not (home / "catalogue.db").exists()  # nothing written, not even the good file


def test_commands_without_a_catalogue_say_what_to_do(tmp_path: Path) -> None:
    result = run(tmp_path / "empty", "calls", "list")
    assert result.exit_code == 1 and "run `callrec import` first" in result.stderr


def test_home_defaults_to_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLREC_HOME", str(provision(tmp_path / "envhome")))
    result = CliRunner().invoke(cli, ["import", str(BASIC)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "envhome" / "catalogue.db").is_file()


def test_debug_shows_the_traceback(home: Path, imported: list[dict]) -> None:
    result = CliRunner().invoke(cli, ["--home", str(home), "--debug", "calls", "show", "999"])
    assert result.exit_code == 1 and result.exception is not None  # raised, not mapped


def test_bad_arguments_say_what_is_wrong(home: Path) -> None:
    result = run(home, "calls", "list", "--limit", "0")
    assert result.exit_code == 2 and "--limit" in result.stderr
    result = run(home, "calls", "show", "abc")
    assert result.exit_code == 2 and "'abc' is not a call id (digits 0-9 only)" in result.stderr


def test_every_command_help_has_an_example() -> None:
    for args in (["import"], ["calls"], ["calls", "list"], ["calls", "show"], ["calls", "export"], []):
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output, args


def test_a_capture_cut_mid_record_is_imported_with_a_warning(tmp_path: Path, home: Path) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(BASIC.read_bytes()[:50_000])
    result = run(home, "import", str(cut))
    assert result.exit_code == 0
    assert "1 call(s) found, 1 recorded" in result.stdout
    assert "warning: " in result.stdout and "cut.pcap" in result.stdout


def test_packet_loss_bursts_are_events_of_the_sender(home: Path) -> None:
    fixture = FIXTURES / "loss_dup_reorder.expected.json"
    expected = json.loads(fixture.read_text())["calls"][0]["legs"]
    result = run(home, "import", "--json", str(FIXTURES / "loss_dup_reorder.pcap"))
    call = json.loads(result.stdout)[0]
    shown = json.loads(run(home, "calls", "show", str(call["id"]), "--json").stdout)
    lost = {"caller": 0, "callee": 0}
    for e in shown["events"]:
        if e["kind"] == "loss":
            lost[e["sender"]] += int(e["summary"].split()[0])
            assert e["detail"].startswith("duration ") and e["detail"].endswith(" ms")
    assert lost == {
        "caller": expected["caller->callee"]["lost"],
        "callee": expected["callee->caller"]["lost"],
    }


def test_import_reports_each_capture(home: Path) -> None:
    malformed = FIXTURES / "malformed_mix.pcap"
    result = run(home, "import", str(BASIC), str(BUSY), str(malformed))
    lines = result.stdout.splitlines()
    per_file = [line for line in lines if line.startswith("  ") and ": " in line and " frames, " in line]
    assert [line.split(":")[0].strip() for line in per_file] == [BASIC.name, BUSY.name, malformed.name]
    basic = next(line for line in per_file if BASIC.name in line)
    assert basic.endswith("1 call(s) found, 1 recorded")
    busy_block = lines[lines.index(next(line for line in per_file if BUSY.name in line)) + 1]
    assert busy_block.strip() == "not recorded: 1 (no media)"
    skipped = lines[lines.index(next(line for line in per_file if malformed.name in line)) + 1 :]
    assert any(line.startswith("    packets skipped: ") for line in skipped)
