"""Callrec installs as one name, ``callrec``: setup.cfg lists every package of the tree, the metadata
names ``callrec`` alone as its top level, the portal's templates are package data, and (when the
suite runs against a plain install, as in CI) nothing of the checkout is imported and site-packages
holds no stage folder of its own. ``tools/install_check.sh`` does the same from a fresh venv."""

from __future__ import annotations

import configparser
import importlib.metadata
import importlib.resources
import sysconfig
from pathlib import Path

import pytest

import callrec.capture
import callrec.portal

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("capture", "decode", "store", "recorder", "cli", "portal")


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _listed(key: str) -> list[str]:
    return [line.strip() for line in _setup_cfg()["options"][key].strip().splitlines() if line.strip()]


def _tree_packages() -> set[str]:
    found = set()
    for stage in STAGES:
        for init in (ROOT / stage).rglob("__init__.py"):
            found.add("callrec." + ".".join(init.parent.relative_to(ROOT).parts))
    return found


def test_setup_cfg_lists_every_package_of_the_tree() -> None:
    assert set(_listed("packages")) == _tree_packages()
    mapping = dict(line.replace(" ", "").split("=") for line in _listed("package_dir"))
    assert mapping == {f"callrec.{stage}": stage for stage in STAGES}


def test_every_folder_of_modules_is_a_package() -> None:
    """A folder of modules without ``__init__.py`` would be left out of the install."""
    for stage in STAGES:
        for module in (ROOT / stage).rglob("*.py"):
            for folder in module.relative_to(ROOT / stage).parents:
                if str(folder) != ".":
                    assert (ROOT / stage / folder / "__init__.py").is_file(), (
                        f"{stage}/{folder} has no __init__.py"
                    )


def test_the_installed_distribution_names_callrec_alone() -> None:
    distribution = importlib.metadata.distribution("callrec")
    assert (distribution.read_text("top_level.txt") or "").split() == ["callrec"]
    scripts = {ep.name: ep.value for ep in distribution.entry_points if ep.group == "console_scripts"}
    assert scripts == {"callrec": "callrec.cli.main:main"}
    assert distribution.metadata["License"] == "Apache-2.0"


def test_the_portal_templates_and_static_files_are_package_data() -> None:
    portal = importlib.resources.files(callrec.portal)
    for name in ("templates/base.html", "templates/calls.html", "templates/call.html", "static/player.js"):
        assert portal.joinpath(name).is_file(), name


def _installed_plainly() -> bool:
    """callrec.capture comes from site-packages, not from the checkout's capture/ (an editable install)."""
    return not Path(callrec.capture.__file__ or "").resolve().is_relative_to(ROOT / "capture")


@pytest.mark.skipif(not _installed_plainly(), reason="an editable install (CI runs against a plain one)")
def test_a_plain_install_is_what_runs_and_holds_no_stage_folders() -> None:
    site = Path(sysconfig.get_paths()["purelib"])
    assert Path(callrec.capture.__file__ or "").resolve().is_relative_to(site.resolve())
    for stage in STAGES:
        assert not (site / stage).exists(), f"site-packages has a top-level {stage}"
        assert (site / "callrec" / stage / "__init__.py").is_file()
    assert (site / "callrec" / "portal" / "templates" / "call.html").is_file()
