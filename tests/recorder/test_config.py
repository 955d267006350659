"""The configuration files: merge order, every error with its file and key, capture settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from callrec.capture.tracking.tracker import TrackerConfig
from callrec.recorder.config import Config, ConfigError, load_config


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_files_merge_in_order_system_then_drop_ins_then_home(tmp_path: Path) -> None:
    system, home = tmp_path / "etc", tmp_path / "home"
    write(system, "callrec.toml", '[retention]\ndefault = "30d"\nqa = "90d"\n[recording]\nretention = "qa"\n')
    write(system, "callrec.d/20-mifid.toml", '[retention]\nmifid = "5y"\n')
    write(system, "callrec.d/10-first.toml", '[retention]\nmifid = "1y"\n')  # read before 20-mifid
    write(
        home,
        "callrec.toml",
        '[recording]\nretention = "mifid"\n[capture]\nunsignalled = false\nsip_ports = [5080]\n',
    )
    config = load_config([system, home])
    assert [p.name for p in config.files] == [
        "callrec.toml",
        "10-first.toml",
        "20-mifid.toml",
        "callrec.toml",
    ]
    assert str(config.retention["mifid"].duration) == "5y" and config.recording_retention == "mifid"
    assert config.capture == {"unsignalled": False, "sip_ports": frozenset({5080})}
    assert TrackerConfig(**config.capture).unsignalled is False


def test_no_file_gives_the_defaults() -> None:
    config = Config.defaults()
    assert config.files == () and list(config.retention) == ["default"] and config.queue_header == "x-queue"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[retention\n", "not valid TOML"),
        ("[storage]\nx = 1\n", "storage.x: unknown key"),
        (
            '[storage]\nurl = "http://b/p"\n',
            "storage.url: storage url 'http://b/p' is not s3://bucket/prefix",
        ),
        (
            '[storage]\nurl = "s3://bucket"\nobject_lock = "forever"\n',
            "storage.object_lock: 'forever' is not one of",
        ),
        (
            '[storage]\nurl = "s3://bucket"\npart_size = "1MiB"\n',
            "storage.part_size: '1MiB' is not a size of 5 MiB",
        ),
        ('[storage]\nobject_lock = "compliance"\n', "storage.object_lock: needs [storage] url"),
        ("[recording]\nformat = 'wav'\n", "recording.format: unknown key"),
        ("[capture]\nmedia_timeout_s = 'long'\n", "capture.media_timeout_s: wrong type str"),
        ("[capture]\nunsignalled = 1\n", "capture.unsignalled: wrong type int"),
        ("[capture]\nmedia_timeout_s = true\n", "capture.media_timeout_s: wrong type bool"),
        ("[capture]\nmax_call_s = 0\n", "capture.max_call_s: must be greater than 0"),
        ("[retention]\nqa = 90\n", 'retention.qa: must be text like "90d"'),
        ("[recording]\nqueue_header = 'X-Team'\n", "is not kept by the capture"),
        ("[keys]\nprivate_key = ['']\n", "keys.private_key: must be a path"),
        ("[capture]\nsip_ports = [5060, 70000]\n", "capture.sip_ports: must be a list of port numbers"),
    ],
)
def test_every_error_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "callrec.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config([tmp_path])
    assert message in str(caught.value)
    if (
        "not valid TOML" not in message
        and "keys.private_key" not in message
        and "queue_header" not in message
    ):
        assert str(path) in str(caught.value)
