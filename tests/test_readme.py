"""README.md and docs/cli.md stay true: the CLI reference is what ``--help`` prints, the README opens
with the two commands and links to the reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_help() -> None:
    tool = _tool()
    assert tool.DOC.read_text() == tool.document(), "run: .venv/bin/python tools/cli_reference.py --write"


def test_every_command_is_in_the_reference() -> None:
    text = (ROOT / "docs" / "cli.md").read_text()
    for command in (
        "import",
        "calls export",
        "keys init",
        "audit verify",
        "retention apply",
        "capture",
        "portal",
    ):
        assert f"### `callrec {command}`" in text


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text[text.index("```sh") : text.index("```", text.index("```sh") + 5)]
    assert "make demo" in first_block and "make test" in first_block
    assert "docs/cli.md" in text
