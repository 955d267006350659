"""README.md stays true: its CLI reference is what ``--help`` prints, and it opens with the two commands."""

from __future__ import annotations

from pathlib import Path

from callrec.cli.reference import block, current_block

README = Path(__file__).resolve().parent.parent / "README.md"


def test_cli_reference_matches_help() -> None:
    assert current_block(README.read_text()) == block(), "run: python -m callrec.cli.reference --write"


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text[text.index("```sh") : text.index("```", text.index("```sh") + 5)]
    assert "make demo" in first_block and "make test" in first_block
