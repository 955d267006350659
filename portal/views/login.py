"""The login and logout pages: a login CSRF nonce bound to a cookie, failed logins limited per
address and per user, every attempt audited, and the session cookie set on success."""

from __future__ import annotations

from typing import Any

from flask import Response, g, redirect, render_template, request, url_for
from werkzeug.wrappers.response import Response as BaseResponse

from callrec.portal.state import gate, session, state
from callrec.store.access.passwords import verify_password
from callrec.store.access.principals import check_name
from callrec.store.errors import InvalidArgument, NotFound

LOGIN_COOKIE = "callrec_login"


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


def _safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site: no scheme, no ``//``)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\\" in target:
        return url_for("calls.calls_list")
    return target


def login_page() -> BaseResponse | tuple[str, int] | tuple[BaseResponse, int]:
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


def logout() -> BaseResponse:
    portal = state()
    found = session()
    if found is not None:
        portal.sessions.end(request.cookies.get(portal.cookie_name))
        gate().audit("portal.logout")
    response = redirect(url_for("login"), code=303)
    response.delete_cookie(portal.cookie_name, path="/", secure=portal.config.secure_cookies, httponly=True)
    return response


def set_login_cookie(response: Response) -> Response:
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
