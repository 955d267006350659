"""Who, as far as the operating system says, runs a command: the ``client`` column of the audit
trail (local tty, SSH peer, sudo)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
from collections.abc import Mapping

from callrec.store.audit.trail import clean_text

_LOGIN = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")


def client_description(env: Mapping[str, str], tty: str | None = None) -> str:
    """Where a command comes from, for the audit trail: ``"ssh 203.0.113.7"`` (``SSH_CONNECTION`` or
    ``SSH_CLIENT``), else ``"local tty /dev/pts/3"`` (``tty``, by default the terminal on standard
    input; ``""``: none) or ``"local"``; ``" via sudo from alice"`` is added when ``SUDO_USER`` is set."""
    where = ""
    for name in ("SSH_CONNECTION", "SSH_CLIENT"):
        with contextlib.suppress(ValueError, IndexError):
            where = where or f"ssh {ipaddress.ip_address(env.get(name, '').split()[0])}"
    if not where:
        with contextlib.suppress(OSError):
            tty = os.ttyname(0) if tty is None else tty
        where = f"local tty {clean_text(tty)}" if tty and tty.startswith("/dev/") else "local"
    sudo = env.get("SUDO_USER", "")
    return f"{where} via sudo from {sudo}" if _LOGIN.fullmatch(sudo) else where
