"""The Flask application: sessions, CSRF, security headers, errors, and the login and logout pages.

Every request gets a :class:`portal.gate.Gate` (catalogue, principal, audit trail) in ``g.gate``.
A request without a live session is sent to the login page (an expired one says so); a POST
without the session's CSRF token is refused (403) and audited. The calls pages are in
:mod:`portal.calls`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, redirect, render_template, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers.response import Response as BaseResponse

from portal.audio import AudioCache
from portal.config import PortalConfig
from portal.gate import Gate
from portal.sessions import LoginCsrf, LoginLimiter, Session, SessionStore, tokens_equal
from store.access import check_name
from store.errors import AccessDenied, InvalidArgument, KeyMissing, NotFound, StoreError
from store.home import Home
from store.passwords import verify_password

COOKIE = "callrec_session"
SECURE_COOKIE = "__Host-callrec_session"  # the prefix makes browsers insist on Secure, Path=/ and no Domain
LOGIN_COOKIE = "callrec_login"
PUBLIC_ENDPOINTS = frozenset({"login", "static"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class PortalState:
    """What lives as long as the portal process: settings, sessions, limits, opened recordings."""

    def __init__(self, config: PortalConfig) -> None:
        self.config = config
        self.home = Home(config.home)
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


def create_app(config: PortalConfig) -> Flask:
    """The portal application for ``config`` (a WSGI app; ``callrec portal`` serves it)."""
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024, TEMPLATES_AUTO_RELOAD=False)
    app.extensions["callrec"] = PortalState(config)
    if config.trusted_proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=config.trusted_proxies, x_proto=config.trusted_proxies
        )
    app.jinja_env.globals.update(url_with=url_with, utc=utc_text, duration=duration_text)
    app.context_processor(_template_context)
    app.before_request(_open_request)
    app.teardown_request(_close_request)
    app.after_request(_security_headers)
    for error, status in ((AccessDenied, 403), (NotFound, 404), (InvalidArgument, 400), (KeyMissing, 503)):
        app.register_error_handler(error, _error_page(status))
    app.register_error_handler(StoreError, _error_page(500))
    app.add_url_rule("/", "index", lambda: redirect(url_for("calls.calls_list")))
    app.add_url_rule("/login", "login", _login, methods=["GET", "POST"])
    app.add_url_rule("/logout", "logout", _logout, methods=["POST"])

    from portal.calls import blueprint

    app.register_blueprint(blueprint)
    return app


# -- every request ---------------------------------------------------------------------------------


def _open_request() -> BaseResponse | tuple[str, int] | None:
    portal = state()
    g.gate = Gate(portal.home, client=f"portal {request.remote_addr or 'unknown'}")
    g.session = None
    if request.endpoint == "static":
        return None
    session, expired = portal.sessions.get(request.cookies.get(portal.cookie_name))
    if session is not None and gate().load_principal(session.user) is None:
        portal.sessions.end_user(session.user)  # removed by an admin since they logged in
        session = None
    g.session = session
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if session is None:
        if request.endpoint == "logout":
            return redirect(url_for("login"), code=303)
        if request.method != "GET" or request.endpoint is None:
            return render_template("error.html", status=401, message="Please log in again."), 401
        target = request.full_path if request.query_string else request.path
        query = {"next": target, **({"expired": "1"} if expired else {})}
        return redirect(url_for("login") + "?" + urlencode(query))
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        given = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if not tokens_equal(given, session.csrf):
            gate().audit(
                "portal.csrf", detail={"path": request.path, "method": request.method}, outcome="denied"
            )
            return render_template(
                "error.html", status=403, message="The form expired: please try again."
            ), 403
    return None


def _template_context() -> dict[str, Any]:
    found = session()
    return {"csrf_token": found.csrf if found else "", "who": g.gate.principal if "gate" in g else None}


def _close_request(_exc: BaseException | None) -> None:
    found = g.pop("gate", None)
    if isinstance(found, Gate):
        found.close()


def _security_headers(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    if request.endpoint != "static":
        headers["Cache-Control"] = "no-store"
    if state().config.secure_cookies:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return _set_login_cookie(response)


def _error_page(status: int) -> Any:
    def handle(exc: Exception) -> tuple[str, int]:
        message = str(exc) if status != 500 else f"The portal could not do that: {exc}"
        if status == 503:
            message = f"Recordings cannot be opened right now: {exc}"
        return render_template("error.html", status=status, message=message), status

    return handle


def session() -> Session | None:
    found = g.get("session")
    return found if isinstance(found, Session) else None


def _set_session_cookie(response: BaseResponse, token: str) -> None:
    portal = state()
    response.set_cookie(
        portal.cookie_name,
        token,
        httponly=True,
        samesite="Lax",
        secure=portal.config.secure_cookies,
        path="/",
    )


# -- login and logout ------------------------------------------------------------------------------


def _safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site: no scheme, no ``//``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target:
        return url_for("calls.calls_list")
    return target


def _login() -> BaseResponse | tuple[str, int] | tuple[BaseResponse, int]:
    portal = state()
    if request.method == "GET":
        if session() is not None:
            return redirect(_safe_next(request.args.get("next")))
        return _login_form(expired=request.args.get("expired") == "1")
    nonce = request.cookies.get(LOGIN_COOKIE)
    if not portal.login_csrf.check(nonce, request.form.get("csrf_token")):
        gate().audit("portal.csrf", detail={"path": request.path, "method": "POST"}, outcome="denied")
        return _login_form(error="The login form expired: please try again.", status=403)
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    try:
        user = check_name(name)
    except InvalidArgument:
        user = ""
    client = request.remote_addr or "unknown"
    keys = [f"address {client}"] + ([f"user {user}"] if user else [])
    wait = portal.limiter.retry_after(*keys)
    audit_user = user or "anonymous"
    detail: dict[str, Any] = {} if user else {"name_given": name[:64]}
    if wait:
        gate().audit(
            "portal.login", detail={**detail, "reason": "rate limited"}, outcome="denied", user=audit_user
        )
        response, status = _login_form(
            error=f"Too many failed logins: try again in {wait} seconds.", status=429, name=name
        )
        return _with_header(response, status, "Retry-After", str(wait))
    stored = None
    if user:
        try:
            stored = gate().users().password_hash(user)
        except NotFound:
            stored = None
    if not verify_password(password, stored):
        portal.limiter.failed(*keys)
        gate().audit(
            "portal.login", detail={**detail, "reason": "bad credentials"}, outcome="denied", user=audit_user
        )
        return _login_form(error="Wrong user name or password.", status=401, name=name)
    portal.limiter.succeeded(f"user {user}")
    new = portal.sessions.create(user)
    gate().load_principal(user)
    gate().audit("portal.login", user=user)
    done = redirect(_safe_next(request.form.get("next")), code=303)
    _set_session_cookie(done, new.token)
    done.delete_cookie(LOGIN_COOKIE, path="/login")
    return done


def _with_header(body: str, status: int, name: str, value: str) -> tuple[BaseResponse, int]:
    response = Response(body, status=status, mimetype="text/html")
    response.headers[name] = value
    return response, status


def _login_form(
    *, error: str | None = None, expired: bool = False, status: int = 200, name: str = ""
) -> tuple[str, int]:
    """The login page, with a fresh login CSRF nonce set as a cookie after the response is made."""
    nonce, token = state().login_csrf.issue()
    g.login_nonce = nonce
    page = render_template(
        "login.html",
        error=error,
        expired=expired,
        csrf_token=token,
        name=name,
        next=request.values.get("next", ""),
    )
    return page, status


def _logout() -> BaseResponse:
    portal = state()
    found = session()
    if found is not None:
        portal.sessions.end(request.cookies.get(portal.cookie_name))
        gate().audit("portal.logout")
    response = redirect(url_for("login"), code=303)
    response.delete_cookie(portal.cookie_name, path="/", secure=portal.config.secure_cookies, httponly=True)
    return response


def _set_login_cookie(response: Response) -> Response:
    """After a login page is rendered: the nonce its CSRF token is bound to."""
    nonce = g.get("login_nonce")
    if nonce:
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            httponly=True,
            samesite="Strict",
            secure=state().config.secure_cookies,
            path="/login",
            max_age=3600,
        )
    return response


# -- template helpers ------------------------------------------------------------------------------


def url_with(args: Mapping[str, str], **changes: object) -> str:
    """The current page's URL with some query arguments changed (``None`` removes one)."""
    merged = {k: v for k, v in args.items() if v != ""}
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = str(value)
    return request.path + ("?" + urlencode(merged) if merged else "")


def utc_text(iso: str | None) -> str:
    """``2026-11-28T14:02:03.120Z`` as ``2026-11-28 14:02:03``."""
    return (iso or "")[:19].replace("T", " ")


def duration_text(seconds: float | None) -> str:
    """``75.2`` as ``1:15``; hours when there are some."""
    if seconds is None:
        return "–"
    whole = int(round(float(seconds)))
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
