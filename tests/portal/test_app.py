"""The web portal through Flask's test client: login, sessions, CSRF, rate limit, every route by role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callrec.portal.state import COOKIE, SECURE_COOKIE
from callrec.portal.views.login import LOGIN_COOKIE
from tests.helpers.portal_env import ME, Portal, audit_entries, build_home, call_ids, csrf_of, login


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_home(tmp_path_factory.mktemp("portal"))


@pytest.fixture(scope="module")
def ids(home: Path) -> dict[str, int]:
    return call_ids(home)


@pytest.fixture
def portal(home: Path) -> Portal:
    return Portal.make(home)


@pytest.fixture
def client(portal: Portal) -> Any:
    return portal.app().test_client()


def as_user(portal: Portal, user: str) -> Any:
    client = portal.app().test_client()
    assert login(client, user).status_code == 303
    return client


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def listed_ids(html: str) -> set[int]:
    import re

    return {int(m) for m in re.findall(r'href="/calls/(\d+)"', html)}


def last_entry(home: Path, **filters: Any) -> Any:
    entries = audit_entries(home, **filters)
    assert entries, f"no audit entry for {filters}"
    return entries[-1]


# -- login, cookies, headers ----------------------------------------------------------------------


def test_the_login_page_has_a_csrf_token_labels_and_strict_headers(client: Any) -> None:
    page = client.get("/login")
    html = text(page)
    assert page.status_code == 200 and csrf_of(html)
    assert '<label for="username">' in html and '<label for="password">' in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith(f"{LOGIN_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_logging_in_sets_an_httponly_samesite_session_cookie(client: Any, home: Path) -> None:
    response = login(client, "alice")
    assert response.status_code == 303 and response.headers["Location"] == "/calls"
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie and "Path=/" in cookie
    assert client.get("/calls").status_code == 200
    entry = last_entry(home, user="alice", action="portal.login")
    assert entry.outcome == "ok" and entry.client == "portal 127.0.0.1"


def test_behind_tls_the_cookie_is_secure_with_the_host_prefix_and_hsts(home: Path) -> None:
    portal = Portal.make(home, secure_cookies=True, trusted_proxies=1)
    client = portal.app().test_client()
    page = client.get("/login", base_url="https://portal.example")
    token = csrf_of(text(page))
    response = client.post(
        "/login",
        base_url="https://portal.example",
        data={"csrf_token": token, "username": "alice", "password": "alice password 1"},
        headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"},
    )
    assert response.status_code == 303
    cookie = next(c for c in response.headers.getlist("Set-Cookie") if c.startswith(SECURE_COOKIE))
    assert "Secure" in cookie and "HttpOnly" in cookie and "Domain" not in cookie
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")
    assert last_entry(home, user="alice", action="portal.login").client == "portal 203.0.113.9"


def test_wrong_passwords_and_unknown_users_are_refused_alike_and_audited(client: Any, home: Path) -> None:
    wrong = login(client, "alice", "not the password")
    unknown = client.post(
        "/login",
        data={"csrf_token": csrf_of(text(client.get("/login"))), "username": "mallory", "password": "x"},
    )
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong user name or password." in text(wrong) and "Wrong user name or password." in text(unknown)
    assert client.get("/calls").status_code == 302
    denied = audit_entries(home, action="portal.login")[-2:]
    assert [(e.user, e.outcome, e.detail["reason"]) for e in denied] == [
        ("alice", "denied", "bad credentials"),
        ("mallory", "denied", "bad credentials"),
    ]


def test_a_login_without_the_forms_csrf_token_is_refused(client: Any, home: Path) -> None:
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": "alice password 1"})
    assert response.status_code == 403 and client.get("/calls").status_code == 302
    assert last_entry(home, action="portal.csrf").outcome == "denied"


def test_logins_are_rate_limited_per_user_and_address(portal: Portal) -> None:
    app = portal.app()
    client = app.test_client()
    for _ in range(5):
        assert login(client, "bob", "guess guess guess").status_code == 401
    limited = login(client, "bob")  # even the right password, now
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    other = app.test_client()  # another browser at the same address: the address is limited too
    assert login(other, "carol").status_code == 429
    portal.clock.now += 15 * 60 + 1
    assert login(client, "bob").status_code == 303


def test_the_next_parameter_only_leads_to_this_site(client: Any) -> None:
    assert login(client, "alice", next="//evil.example/x").headers["Location"] == "/calls"
    client2 = client.application.test_client()
    assert login(client2, "alice", next="/calls?queue=sales").headers["Location"] == "/calls?queue=sales"


# -- sessions: required, idle timeout, lifetime, logout -------------------------------------------


def test_pages_need_a_session(client: Any, ids: dict[str, int]) -> None:
    call = ids["+35220001"]
    for path in ("/calls", f"/calls/{call}", f"/calls/{call}/audio.wav", f"/calls/{call}/waveform.png"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")
    assert client.post(f"/calls/{call}/listened", data={"start": 0, "end": 1}).status_code == 401


def test_an_idle_session_expires_and_says_so(portal: Portal) -> None:
    client = as_user(portal, "alice")
    portal.clock.now += 14 * 60
    assert client.get("/calls").status_code == 200  # activity keeps it alive
    portal.clock.now += 14 * 60
    assert client.get("/calls").status_code == 200
    portal.clock.now += 15 * 60 + 1
    response = client.get("/calls?queue=sales")
    assert response.status_code == 302 and "expired=1" in response.headers["Location"]
    assert "without activity" in text(client.get(response.headers["Location"]))
    assert client.get("/calls").status_code == 302  # gone for good, not just this once


def test_a_session_has_an_absolute_lifetime(home: Path) -> None:
    portal = Portal.make(home, session_lifetime_s=3600)
    client = as_user(portal, "alice")
    for _ in range(5):
        portal.clock.now += 14 * 60
        client.get("/calls")
    assert client.get("/calls").status_code == 302


def test_logout_needs_the_csrf_token_and_ends_the_session(portal: Portal, home: Path) -> None:
    client = as_user(portal, "alice")
    token = csrf_of(text(client.get("/calls")))
    assert client.post("/logout").status_code == 403
    assert client.get("/calls").status_code == 200
    cookie = client.get_cookie(COOKIE).value
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert last_entry(home, user="alice", action="portal.logout").outcome == "ok"
    client.set_cookie(COOKIE, cookie)  # a copy of the old cookie is worthless
    assert client.get("/calls").status_code == 302


def test_removed_users_lose_their_session_and_role_changes_apply_at_once(tmp_path: Path) -> None:
    from tests.helpers.portal_env import run

    home = build_home(tmp_path)
    ids = call_ids(home)
    portal = Portal.make(home)
    alice, bob = as_user(portal, "alice"), as_user(portal, "bob")
    assert run(home, "users", "grant", "alice", "--role", "compliance").exit_code == 0
    assert listed_ids(text(alice.get("/calls"))) == set(ids.values())
    assert run(home, "users", "remove", "bob").exit_code == 0
    assert bob.get("/calls").status_code == 302


# -- the calls list, by role ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "callers"),
    [
        (ME, {"+35220001", "+35220002", "+35220003", "+35220004", "+35220005"}),
        ("carol", {"+35220001", "+35220002", "+35220003", "+35220004", "+35220005"}),
        ("alice", {"+35220001", "+35220004"}),  # queue sales
        ("bob", {"+35220001", "+35220003", "+35220004"}),  # callee 20?
    ],
)
def test_each_role_lists_exactly_its_scope(
    portal: Portal, ids: dict[str, int], user: str, callers: set[str]
) -> None:
    html = text(as_user(portal, user).get("/calls?per_page=100"))
    assert listed_ids(html) == {ids[c] for c in callers}
    for caller, call in ids.items():
        assert (caller in html) == (caller in callers), caller
        assert (f'href="/calls/{call}"' in html) == (caller in callers)


def test_an_auditor_may_not_list_calls_and_is_audited(portal: Portal, home: Path) -> None:
    response = as_user(portal, "ada").get("/calls")
    assert response.status_code == 403 and "may not list calls" in text(response)
    entry = last_entry(home, user="ada", action="calls.list")
    assert entry.outcome == "denied" and entry.detail["reason"] == "role"


def test_listing_is_audited_with_the_query_and_the_ids_shown(
    portal: Portal, home: Path, ids: dict[str, int]
) -> None:
    as_user(portal, "alice").get("/calls?number=0004&queue=sales")
    entry = last_entry(home, user="alice", action="calls.list")
    assert entry.call_ids == (ids["+35220004"],) and entry.detail["query"] == {
        "number": "0004",
        "queue": "sales",
    }
    as_user(portal, "alice").get("/calls?q=sales")
    assert last_entry(home, user="alice", action="calls.search").detail["query"] == {"q": "sales"}


@pytest.mark.parametrize(
    ("query", "callers"),
    [
        ("queue=support", {"+35220002", "+35220005"}),
        ("number=20003", {"+35220003"}),
        ("q=support", {"+35220002", "+35220005"}),
        ("min_duration=5.5", {"+35220004"}),
        ("recorded=yes", {"+35220001", "+35220002", "+35220003", "+35220004", "+35220005"}),
        ("recorded=no", set()),
        ("since=2025-11-25", set()),
        (
            "since=2025-11-24&until=2025-11-24",
            {"+35220001", "+35220002", "+35220003", "+35220004", "+35220005"},
        ),
        ("direction=outbound&queue=sales", set()),
    ],
)
def test_filters(portal: Portal, ids: dict[str, int], query: str, callers: set[str]) -> None:
    response = as_user(portal, "carol").get(f"/calls?{query}")
    assert response.status_code == 200
    assert listed_ids(text(response)) == {ids[c] for c in callers}


def test_a_supervisor_cannot_widen_their_scope_with_filters(portal: Portal) -> None:
    html = text(as_user(portal, "alice").get("/calls?queue=support"))
    assert listed_ids(html) == set() and "0 calls" in html


def test_bad_filters_are_explained(portal: Portal) -> None:
    client = as_user(portal, "carol")
    for query, words in (
        ("since=yesterday", "invalid date"),
        ("min_duration=-3", "0 or more"),
        ("direction=sideways", "unknown direction"),
        ("sort=password_hash", "cannot sort"),
        ("recorded=maybe", "recorded must be"),
    ):
        response = client.get(f"/calls?{query}")
        assert response.status_code == 400 and words in text(response), query


def test_sorting_by_any_column_both_ways(portal: Portal, ids: dict[str, int]) -> None:
    import re

    client = as_user(portal, "carol")
    newest = text(client.get("/calls"))
    rows = [int(n) for n in re.findall(r'href="/calls/(\d+)"', newest)]
    assert rows == sorted(ids.values(), reverse=True) and 'aria-sort="descending"' in newest
    by_callee = text(client.get("/calls?sort=callee&order=asc"))
    order = [int(n) for n in re.findall(r'href="/calls/(\d+)"', by_callee)]
    assert order == [ids[c] for c in ("+35220001", "+35220003", "+35220004", "+35220002", "+35220005")]
    assert 'aria-sort="ascending"' in by_callee
    assert "sort=callee&amp;order=desc" in by_callee  # the active column's link flips the order
    durations = text(client.get("/calls?sort=duration&order=desc"))
    assert [int(n) for n in re.findall(r'href="/calls/(\d+)"', durations)][0] == ids["+35220004"]


def test_pagination(home: Path, ids: dict[str, int]) -> None:
    import re

    client = as_user(Portal.make(home, page_size=2), "carol")
    seen: list[int] = []
    url = "/calls?sort=started&order=asc"
    for page in (1, 2, 3):
        html = text(client.get(url))
        assert f"page {page} of 3" in html
        seen += [int(n) for n in re.findall(r'href="/calls/(\d+)"', html)]
        found = re.search(r'href="([^"]+)" rel="next"', html)
        if page < 3:
            assert found
            url = found.group(1).replace("&amp;", "&")
        else:
            assert found is None
    assert seen == sorted(ids.values())


# -- one call ---------------------------------------------------------------------------------------


def test_the_call_page_shows_metadata_legs_events_picture_and_player(
    portal: Portal, home: Path, ids: dict[str, int]
) -> None:
    call = ids["+35220001"]
    html = text(as_user(portal, "alice").get(f"/calls/{call}"))
    for part in (
        "+35220001",
        "sales",
        "Legs and quality",
        "caller-&gt;callee",
        "Recording decision",
        f'src="/calls/{call}/waveform.png"',
        f'<audio id="player" controls preload="metadata" src="/calls/{call}/audio.wav"',
        f"/calls/{call}/download?format=mp3",
        'alt="Waveforms of call',
        "<dt>Consent</dt><dd>not-required</dd>",
        "<dt>Recorded</dt><dd>",
        "(the rule)</dd>",
    ):
        assert part in html, part
    assert last_entry(home, user="alice", action="calls.show").call_ids == (call,)


def test_a_call_outside_the_scope_is_refused_on_every_route_and_audited(
    portal: Portal, home: Path, ids: dict[str, int]
) -> None:
    client = as_user(portal, "alice")
    support = ids["+35220002"]
    token = csrf_of(text(client.get("/calls")))
    routes = [
        ("calls.show", client.get(f"/calls/{support}")),
        ("calls.play", client.get(f"/calls/{support}/audio.wav", headers={"Range": "bytes=0-"})),
        ("calls.plot", client.get(f"/calls/{support}/waveform.png")),
        ("calls.export", client.get(f"/calls/{support}/download?format=wav")),
        (
            "calls.play",
            client.post(f"/calls/{support}/listened", data={"csrf_token": token, "start": 0, "end": 1}),
        ),
    ]
    for action, response in routes:
        assert response.status_code == 403 and "outside the scope of alice" in text(response), action
    denied = [(e.action, e.call_ids, e.detail["reason"]) for e in audit_entries(home, user="alice")[-5:]]
    assert denied == [(action, (support,), "outside scope") for action, _ in routes]


def test_unknown_calls_are_404_and_auditors_are_refused(portal: Portal, ids: dict[str, int]) -> None:
    assert as_user(portal, "carol").get("/calls/999999").status_code == 404
    ada = as_user(portal, "ada")
    assert ada.get(f"/calls/{ids['+35220001']}").status_code == 403
    assert ada.get(f"/calls/{ids['+35220001']}/audio.wav").status_code == 403


def test_without_the_key_calls_show_but_recordings_do_not_open(home: Path, ids: dict[str, int]) -> None:
    client = as_user(Portal.make(home, private_keys={}), "alice")
    call = ids["+35220001"]
    assert "started without the compliance key" in text(client.get(f"/calls/{call}"))
    response = client.get(f"/calls/{call}/audio.wav")
    assert response.status_code == 503 and "callrec portal --key" in text(response)


ROUTES = ("", "/audio.wav", "/waveform.png", "/download?format=wav", "/download?format=mp3")


@pytest.mark.parametrize(
    ("user", "caller", "status"),
    [
        (ME, "+35220002", 200),
        ("carol", "+35220002", 200),
        ("alice", "+35220001", 200),  # her queue
        ("alice", "+35220003", 403),  # no queue, callee 202: bob's extension, not hers
        ("bob", "+35220003", 200),
        ("bob", "+35220002", 403),
        ("ada", "+35220001", 403),  # auditors see no call
    ],
)
def test_every_call_route_for_every_role(
    portal: Portal, home: Path, ids: dict[str, int], user: str, caller: str, status: int
) -> None:
    client = as_user(portal, user)
    call = ids[caller]
    for route in ROUTES:
        response = client.get(f"/calls/{call}{route}")
        assert response.status_code == status, (route, response.status_code)
    outcomes = {e.outcome for e in audit_entries(home, user=user, call=call)[-len(ROUTES) :]}
    assert outcomes == ({"ok"} if status == 200 else {"denied"})


def test_the_root_leads_to_the_calls_and_the_stylesheet_needs_no_session(portal: Portal) -> None:
    client = portal.app().test_client()
    assert client.get("/").headers["Location"].startswith("/login")
    css = client.get("/static/portal.css")
    assert css.status_code == 200 and b":focus-visible" in css.data
    assert as_user(portal, "alice").get("/").headers["Location"] == "/calls"
