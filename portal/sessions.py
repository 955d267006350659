"""Server-side sessions, CSRF tokens and the login rate limit, all in the portal process's memory.

The session cookie holds only a random 256-bit token; who is logged in, since when, when they
were last seen and their CSRF token stay in the process. Logging out or an idle timeout ends a
session for good (a stolen cookie is useless afterwards), and restarting the portal logs
everyone out, which is what we want after the compliance key was unlocked anew.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Session:
    """One logged-in user's session."""

    token: str
    user: str
    created: float
    last_seen: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class SessionStore:
    """Sessions by token, with an idle timeout and an absolute lifetime (seconds of ``clock``)."""

    def __init__(self, clock: Callable[[], float], idle_timeout_s: float, lifetime_s: float) -> None:
        self._clock = clock
        self._idle = idle_timeout_s
        self._lifetime = lifetime_s
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, user: str) -> Session:
        """A new session for ``user`` (a new token: never reuse one from before the login)."""
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), user, now, now)
        with self._lock:
            self._sweep(now)
            self._sessions[_key(session.token)] = session
        return session

    def get(self, token: str | None) -> tuple[Session | None, bool]:
        """The live session of ``token`` (touched: its idle time starts again) and whether the
        token named a session that has just expired (to tell the user why they must log in)."""
        if not token or len(token) > 128:
            return None, False
        now = self._clock()
        with self._lock:
            session = self._sessions.get(_key(token))
            if session is None:
                return None, False
            if self._expired(session, now):
                del self._sessions[_key(token)]
                return None, True
            session.last_seen = now
            return session, False

    def end(self, token: str | None) -> None:
        """Forget a session (logout)."""
        if token:
            with self._lock:
                self._sessions.pop(_key(token), None)

    def end_user(self, user: str) -> None:
        """Forget every session of ``user`` (removed, or their password changed)."""
        with self._lock:
            for key in [k for k, s in self._sessions.items() if s.user == user]:
                del self._sessions[key]

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self._idle or now - session.created > self._lifetime

    def _sweep(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[key]


def _key(token: str) -> str:
    """Sessions are kept by a hash of their token: the dict's keys are not the cookies."""
    return hashlib.sha256(token.encode()).hexdigest()


def tokens_equal(given: object, expected: str) -> bool:
    """Whether a submitted CSRF token is the expected one (constant time)."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


class LoginCsrf:
    """CSRF tokens of the login form, before there is a session: the form carries an HMAC of a
    random nonce that is also set as a cookie (a signed double submit), so another site cannot
    log a browser in with its own account."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def issue(self) -> tuple[str, str]:
        """A (cookie nonce, form token) pair."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self.token(nonce)

    def token(self, nonce: str) -> str:
        return hmac.new(self._secret, b"login\n" + nonce.encode(), hashlib.sha256).hexdigest()

    def check(self, nonce: str | None, token: object) -> bool:
        return bool(nonce) and len(nonce or "") <= 64 and tokens_equal(token, self.token(nonce or ""))


class LoginLimiter:
    """At most ``failures`` failed logins per key (a client address, a user name) in a sliding
    window of ``window_s`` seconds; a key over the limit is refused until its oldest failure in
    the window is older than the window."""

    def __init__(self, clock: Callable[[], float], failures: int, window_s: float) -> None:
        self._clock = clock
        self._failures = failures
        self._window = window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> int:
        """Seconds until every key may try again (0: they may now)."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._trim(key, now)
                if len(times) >= self._failures:
                    wait = max(wait, times[0] + self._window - now)
        return int(wait) + 1 if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._seen) > 100_000:  # bounded memory under a flood of distinct keys
                for key in list(self._seen):
                    self._trim(key, now)
            for key in keys:
                self._seen.setdefault(key, deque(maxlen=self._failures)).append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._seen.pop(key, None)

    def _trim(self, key: str, now: float) -> deque[float]:
        times = self._seen.get(key)
        if times is None:
            return deque()
        while times and now - times[0] >= self._window:
            times.popleft()
        if not times:
            del self._seen[key]
        return times
