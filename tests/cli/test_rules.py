"""Recording rules end to end: direction from the configured networks, first-match rules deciding
what is recorded, kept how long and on which channels; what they do not select leaves no audio."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from callrec.cli.main import cli
from callrec.decode.formats.wav import read_wav
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import provision

CONFIG = """
[retention]
default = "30d"
qa = "90d"

[direction]
internal_networks = ["203.0.113.0/24"]

[[rules]]
name = "sales-qa"
direction = "inbound"
queue = "sales"
retention = "qa"
channels = "caller"

[[rules]]
name = "no-support"
queue = "support"
record = "never"

[[rules]]
name = "advice-consent"
queue = "advice"
consent = "required"

[[rules]]
name = "default"
min_duration = 3
"""


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = provision(tmp_path / "home")
    (home / "callrec.toml").write_text(CONFIG)
    return home


@pytest.fixture
def calls(home: Path, tmp_path: Path) -> dict[str, dict]:
    capture = write_calls(
        tmp_path / "calls.pcap",
        [
            CallSpec("+35220001", "201", ["X-Queue: sales"], seconds=3),
            CallSpec("+35220002", "301", ["X-Queue: support"], seconds=3),
            CallSpec("+35220003", "401", ["X-Queue: advice"], seconds=3),
            CallSpec("+35220004", "202", seconds=1),  # shorter than the default's min_duration
            CallSpec("+35220005", "203", seconds=4),
        ],
    )
    result = run(home, "import", "--json", str(capture))
    assert result.exit_code == 0, result.output
    return {c["callee"]: c for c in json.loads(result.stdout)}


def test_each_call_gets_the_first_matching_rule(calls: dict[str, dict]) -> None:
    assert {k: (c["rule"], c["direction"]) for k, c in calls.items()} == {
        "201": ("sales-qa", "inbound"),
        "301": ("no-support", "inbound"),
        "401": ("advice-consent", "inbound"),
        "202": ("default", "inbound"),
        "203": ("default", "inbound"),
    }
    assert calls["201"]["retention_class"] == "qa" and calls["203"]["retention_class"] == "default"
    assert "queue 'sales'" in calls["201"]["rule_reason"]


def test_what_the_rules_do_not_select_leaves_no_audio(calls: dict[str, dict], home: Path) -> None:
    recorded = {k for k, c in calls.items() if c["recording"]}
    assert recorded == {"201", "203"}
    assert calls["301"]["not_recorded"] == "rule 'no-support': record = never"
    assert calls["401"]["not_recorded"] == (
        "rule 'advice-consent': consent not established: no x-consent header"
    )
    assert "min_duration 3" in calls["202"]["not_recorded"]
    files = [p for p in (home / "recordings").rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == sorted(Path(calls[k]["recording"]["path"]).name for k in recorded)
    assert not list((home / "tmp").iterdir())


def test_a_caller_only_rule_keeps_the_callee_silent(
    calls: dict[str, dict], home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sales.wav"
    assert run(home, "calls", "export", str(calls["201"]["id"]), "--out", str(out)).exit_code == 0
    samples, _ = read_wav(out)
    assert np.count_nonzero(samples[:, 0]) > 1000 and not samples[:, 1].any()
    both = tmp_path / "other.wav"
    assert run(home, "calls", "export", str(calls["203"]["id"]), "--out", str(both)).exit_code == 0
    other, _ = read_wav(both)
    assert other[:, 0].any() and other[:, 1].any()


def test_show_says_which_rule_decided(calls: dict[str, dict], home: Path) -> None:
    shown = run(home, "calls", "show", str(calls["301"]["id"])).output
    assert "rule:         no-support" in shown and "record = never" in shown


def test_rules_test_explains_the_match(home: Path) -> None:
    result = run(home, "rules", "test", "--caller", "+35220001", "--callee", "201", "--direction", "inbound",
                 "--queue", "sales", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    explained = json.loads(result.stdout)
    assert [r["matched"] for r in explained["rules"]][:2] == [True, False]
    assert explained["decision"]["rule"] == "sales-qa" and explained["decision"]["retention"] == "qa"
    text = run(home, "rules", "test", "--caller", "1", "--callee", "2", "--queue", "support").output
    assert "=> no-support" in text


def test_config_check_and_show(home: Path) -> None:
    ok = run(home, "config", "check")
    assert ok.exit_code == 0 and "3 rule(s) before the default" in ok.output
    shown = json.loads(run(home, "config", "show", "--json").stdout)
    assert [r["name"] for r in shown["rules"]] == ["sales-qa", "no-support", "advice-consent", "default"]
    (home / "callrec.d").mkdir()
    (home / "callrec.d" / "50-bad.toml").write_text('[[rules]]\nname = "x"\nrecrod = "never"\n')
    (home / "callrec.toml").write_text(CONFIG.replace('"203.0.113.0/24"', '"203.0.113.7/24"'))
    bad = run(home, "config", "check")
    assert bad.exit_code == 1
    assert "callrec.toml: direction.internal_networks" in bad.output
    import_refused = run(
        home, "import", str(Path(__file__).resolve().parents[2] / "pcaps" / "fixtures" / "basic_pcmu.pcap")
    )
    assert import_refused.exit_code == 1 and "internal_networks" in import_refused.output
