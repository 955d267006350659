"""A click group whose subcommands are imported when first used.

``callrec import`` should not pay for importing the live capture, the portal or the audio tools:
each lazy subcommand is named as ``"module:attribute"`` and imported by :meth:`get_command`. Anything
that reads :attr:`LazyGroup.commands` directly (help of every command, the README reference) gets
them all, imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click


class LazyGroup(click.Group):
    """A :class:`click.Group` with subcommands given as ``{name: "module:attribute"}`` in ``lazy``."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        self._lazy: dict[str, str] = dict(lazy or {})
        super().__init__(*args, **kwargs)
        for name in self._commands:  # commands given outright win
            self._lazy.pop(name, None)

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        for name in list(self._lazy):
            self._load(name)
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._commands = value

    def add_lazy(self, name: str, target: str) -> None:
        self._lazy[name] = target

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        name = name or cmd.name
        if name is None:
            raise TypeError("Command has no name.")
        self._lazy.pop(name, None)
        self._commands[name] = cmd

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            self._load(cmd_name)
        return self._commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self._commands, *self._lazy})

    def _load(self, name: str) -> None:
        target = self._lazy.pop(name, None)
        if target is None:
            return
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        self._commands[name] = command
