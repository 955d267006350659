"""Who, as far as the operating system says, runs a command: the ``client`` column of the audit
trail. What the kernel says comes first (the real uid and its login name, the login uid that
``pam_loginuid`` set at login and no later ``sudo`` or ``su`` changes, the terminal); what only the
environment says, which the user sets at will (``SSH_CONNECTION``, ``SUDO_USER``), follows after
``claimed:``: ``"uid 0 (root), login uid 1000 (carol), local tty /dev/pts/3; claimed: ssh
203.0.113.7 via sudo from carol"``."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import re
from collections.abc import Mapping
from pathlib import Path

from callrec.store.audit.trail import clean_text

_LOGIN = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_UNSET_LOGIN_UID = 0xFFFFFFFF  # (uid_t)-1: no login session (a daemon, a container)
LOGIN_UID_FILE = Path("/proc/self/loginuid")


def client_description(
    env: Mapping[str, str], tty: str | None = None, *, ids: tuple[int, int | None] | None = None
) -> str:
    """Where a command comes from, for the audit trail (see the module docstring). ``tty``: the
    terminal (default: the one on standard input; ``""``: none); ``ids``: the real uid and the
    login uid (``None``: not known), by default this process's."""
    uid, login_uid = (os.getuid(), login_uid_of_process()) if ids is None else ids
    known = [f"uid {uid} ({user_name(uid)})"]
    if login_uid is not None and login_uid != uid:
        known.append(f"login uid {login_uid} ({user_name(login_uid)})")
    with contextlib.suppress(OSError):
        tty = os.ttyname(0) if tty is None else tty
    if tty and tty.startswith("/dev/"):
        known.append(f"local tty {clean_text(tty)}")
    claims: list[str] = []
    for name in ("SSH_CONNECTION", "SSH_CLIENT"):
        with contextlib.suppress(ValueError, IndexError):
            claims = claims or [f"ssh {ipaddress.ip_address(env.get(name, '').split()[0])}"]
    sudo = env.get("SUDO_USER", "")
    if _LOGIN.fullmatch(sudo):
        claims.append(f"via sudo from {sudo}")
    said = ", ".join(known)
    return f"{said}; claimed: {' '.join(claims)}" if claims else said


def user_name(uid: int) -> str:
    """The login name of ``uid`` from the password database, ``"unknown"`` if it has none."""
    try:
        return clean_text(pwd.getpwuid(uid).pw_name)
    except (KeyError, OverflowError):
        return "unknown"


def login_uid_of_process(path: Path = LOGIN_UID_FILE) -> int | None:
    """The audit login uid of this process (Linux), ``None`` where there is none."""
    try:
        value = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return None if value == _UNSET_LOGIN_UID else value
