"""What one portal process is given when it starts: the data directory, the unlocked keys, the limits."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from callrec.store.objects.settings import StorageSettings


@dataclass(frozen=True)
class PortalConfig:
    """Settings of one portal process.

    ``private_keys`` are the recording private keys unlocked by the operator at start (fingerprint
    -> key; empty: calls can be browsed but recordings not opened). ``secure_cookies``: the
    portal is reached over HTTPS (a TLS reverse proxy), so cookies get ``Secure`` and the
    ``__Host-`` prefix. ``trusted_proxies``: how many reverse proxies' ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` to believe (0: none; the client address is the socket's peer).
    ``clock`` gives seconds (sessions, rate limits); tests pass a fake one."""

    home: Path
    audit_anchor: Path | None = None  # the audit anchor file (None: store.home.default_anchor_path)
    storage: StorageSettings | None = None  # where the recordings are ([storage]; None: the home)
    private_keys: Mapping[str, X25519PrivateKey] = field(default_factory=dict)
    secure_cookies: bool = False
    trusted_proxies: int = 0
    idle_timeout_s: float = 15 * 60
    session_lifetime_s: float = 12 * 3600
    login_failures: int = 5
    """Failed logins allowed per client address and per user name within ``login_window_s``."""
    login_window_s: float = 15 * 60
    page_size: int = 50
    audio_cache_bytes: int = 512 * 1024 * 1024
    """Decrypted recordings kept in memory for seeking (never on disk); the least recently used go."""
    audio_cache_idle_s: float = 10 * 60
    clock: Callable[[], float] = time.time
