"""The README's CLI reference, generated from the commands' own ``--help``.

    python -m cli.reference            # print the reference
    python -m cli.reference --write    # replace the block in README.md

``tests/test_readme.py`` fails when README.md and ``--help`` disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from callrec.cli.main import cli

START = "<!-- cli-reference:start -->"
END = "<!-- cli-reference:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name in sorted(group.commands):
        command = group.commands[name]
        if isinstance(command, click.Group):
            out += _commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


def reference() -> str:
    runner = CliRunner()
    parts = []
    for path in _commands(cli):
        result = runner.invoke(cli, [*path, "--help"], prog_name="callrec", terminal_width=100)
        title = " ".join(("callrec", *path))
        parts.append(f"### `{title}`\n\n```\n{result.output.rstrip()}\n```\n")
    return "\n".join(parts)


def block() -> str:
    return f"{START}\n{reference()}{END}"


def current_block(text: str) -> str:
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


def main() -> None:
    if "--write" in sys.argv[1:]:
        text = README.read_text()
        README.write_text(text.replace(current_block(text), block()))
    else:
        print(reference())


if __name__ == "__main__":
    main()
