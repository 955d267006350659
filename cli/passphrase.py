"""Where the compliance key file and its passphrase come from, for the commands that open audio.

Key files: ``--key PATH`` (repeatable), else ``$CALLREC_KEY`` (paths separated by ``:``), else
``[keys] private_key`` of the configuration. Passphrase: ``--passphrase-file``, else
``$CALLREC_PASSPHRASE``, else a prompt when a terminal is attached.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from callrec.store.crypto.keys import load_private_keys, read_passphrase
from callrec.store.errors import KeyMissing

F = TypeVar("F", bound=Callable[..., Any])


def key_option(command: F) -> F:
    """``--key`` and ``--passphrase-file`` for commands that open recordings."""
    command = click.option(
        "--passphrase-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="File whose first line is the key file's passphrase. Default: $CALLREC_PASSPHRASE, else asked.",
    )(command)
    return click.option(
        "--key",
        "key_files",
        multiple=True,
        type=click.Path(dir_okay=False, path_type=Path),
        metavar="PATH",
        help="Compliance key file (repeat for rotated keys). Default: $CALLREC_KEY, else [keys] private_key.",
    )(command)


def passphrase(passphrase_file: Path | None, env: Mapping[str, str], *, confirm: bool = False) -> bytes:
    """The passphrase from the file, the environment, or a prompt; a clear error otherwise."""
    given = read_passphrase(passphrase_file, env)
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise click.UsageError("no passphrase: give --passphrase-file or set CALLREC_PASSPHRASE")
    text = click.prompt("Key file passphrase", hide_input=True, confirmation_prompt=confirm, err=True)
    if not text:
        raise click.UsageError("an empty passphrase is not allowed")
    return str(text).encode()


def key_files(given: Sequence[Path], env: Mapping[str, str], configured: Sequence[Path]) -> list[Path]:
    """The key files to try, by the precedence in the module docstring."""
    if given:
        return list(given)
    from_env = [Path(p) for p in env.get("CALLREC_KEY", "").split(os.pathsep) if p.strip()]
    if from_env:
        return from_env
    if configured:
        return list(configured)
    raise KeyMissing("opening a recording needs the compliance key file: give --key PATH or set CALLREC_KEY")


def private_keys(
    given: Sequence[Path], passphrase_file: Path | None, env: Mapping[str, str], configured: Sequence[Path]
) -> dict[str, X25519PrivateKey]:
    """Every recording private key of the key files, unlocked (fingerprint -> key)."""
    files = key_files(given, env, configured)
    return load_private_keys(files, passphrase(passphrase_file, env))
