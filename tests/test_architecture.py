"""The dependency arrows of ARCHITECTURE.md, checked by parsing every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("capture", "decode", "store", "recorder", "cli", "portal")
ALLOWED = {
    "capture": set(),
    "decode": {"capture"},
    "store": set(),
    "recorder": {"capture", "decode", "store"},
    "cli": {"capture", "decode", "store", "recorder"},
    "portal": {"store", "decode"},
}
# The one module allowed across an arrow: `callrec portal` starts the web application. Nothing else in
# cli uses the portal, and the portal uses nothing of cli.
LAUNCHERS = {"cli/portal.py": {"portal"}}
# decode may use only capture's value types, never its machinery.
DECODE_MAY_USE = {
    "callrec.capture.model.media",
    "callrec.capture.model.calls",
    "callrec.capture.model.serial",
    "callrec.capture.model.errors",
    "callrec.capture.model.gather",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            out.append((package, path))
    return out


@pytest.mark.parametrize(("package", "path"), _modules(), ids=lambda v: str(v).replace(str(ROOT) + "/", ""))
def test_module_imports_follow_the_arrows(package: str, path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        if top in PACKAGES and top != package:
            if top in LAUNCHERS.get(str(path.relative_to(ROOT)), set()):
                continue
            assert top in ALLOWED[package], (
                f"{path.relative_to(ROOT)} imports {name}: {package} may not import {top}"
            )
            if package == "decode":
                assert name in DECODE_MAY_USE, (
                    f"{path.relative_to(ROOT)} imports {name}: decode uses capture value types only"
                )


def test_every_package_is_checked() -> None:
    assert {p for p, _ in _modules()} >= {"capture", "decode", "store", "recorder", "cli"}
