"""The Flask application: sessions, CSRF, security headers, errors, and the login and logout pages.

Every request gets a :class:`portal.gate.Gate` (catalogue, principal, audit trail) in ``g.gate``.
A request without a live session is sent to the login page (an expired one says so); a POST
without the session's CSRF token is refused (403) and audited. The calls pages are in
:mod:`portal.views.calls`, the login and logout pages in :mod:`portal.views.login`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, redirect, render_template, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers.response import Response as BaseResponse

from callrec.portal.gate import Gate
from callrec.portal.sessions import tokens_equal
from callrec.portal.settings import PortalConfig
from callrec.portal.state import PortalState, gate, session, state
from callrec.portal.templating import duration_text, url_with, utc_text
from callrec.portal.views.calls import blueprint
from callrec.portal.views.login import login_page, logout, set_login_cookie
from callrec.store.errors import AccessDenied, InvalidArgument, KeyMissing, NotFound, StoreError

PUBLIC_ENDPOINTS = frozenset({"login", "static"})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


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
    app.add_url_rule("/login", "login", login_page, methods=["GET", "POST"])
    app.add_url_rule("/logout", "logout", logout, methods=["POST"])

    app.register_blueprint(blueprint)
    return app


# -- every request ---------------------------------------------------------------------------------


def _open_request() -> BaseResponse | tuple[str, int] | None:
    portal = state()
    g.gate = Gate(
        portal.home, client=f"portal {request.remote_addr or 'unknown'}", anchor=portal.config.audit_anchor
    )
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
    return set_login_cookie(response)


def _error_page(status: int) -> Any:
    def handle(exc: Exception) -> tuple[str, int]:
        message = str(exc) if status != 500 else f"The portal could not do that: {exc}"
        if status == 503:
            message = f"Recordings cannot be opened right now: {exc}"
        return render_template("error.html", status=status, message=message), status

    return handle
