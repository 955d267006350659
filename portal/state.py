"""What lives as long as the portal process (:class:`PortalState`: settings, sessions, limits,
opened recordings) and what one request carries (its :class:`~callrec.portal.gate.Gate`, its session)."""

from __future__ import annotations

import secrets
import threading

from flask import g

from callrec.portal.audio import AudioCache
from callrec.portal.gate import Gate
from callrec.portal.sessions import LoginCsrf, LoginLimiter, Session, SessionStore
from callrec.portal.settings import PortalConfig
from callrec.store.home import Home

COOKIE = "callrec_session"


SECURE_COOKIE = "__Host-callrec_session"  # the prefix makes browsers insist on Secure, Path=/ and no Domain


class PortalState:
    """What lives as long as the portal process: settings, sessions, limits, opened recordings."""

    def __init__(self, config: PortalConfig) -> None:
        self.config = config
        self.home = Home(config.home)
        self.recordings = self.home.recording_store(config.storage)
        self.sessions = SessionStore(config.clock, config.idle_timeout_s, config.session_lifetime_s)
        self.limiter = LoginLimiter(config.clock, config.login_failures, config.login_window_s)
        self.login_csrf = LoginCsrf(secrets.token_bytes(32))
        self.audio = AudioCache(config.audio_cache_bytes, config.audio_cache_idle_s, config.clock)
        self.pictures: dict[str, bytes] = {}
        self.pictures_lock = threading.Lock()

    @property
    def cookie_name(self) -> str:
        return SECURE_COOKIE if self.config.secure_cookies else COOKIE


def state() -> PortalState:
    from flask import current_app

    found = current_app.extensions["callrec"]
    assert isinstance(found, PortalState)
    return found


def gate() -> Gate:
    found = g.gate
    assert isinstance(found, Gate)
    return found


def session() -> Session | None:
    found = g.get("session")
    return found if isinstance(found, Session) else None
