"""store.access.principals: roles and permissions, supervisors' scopes (SQL and Python agree), users, --as."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.store.access.principals import (
    ACTIONS,
    PERMISSIONS,
    ROLES,
    Principal,
    User,
    Users,
    check_extensions,
    check_queues,
    resolve_principal,
)
from callrec.store.audit.trail import AuditTrail
from callrec.store.catalogue.db import Catalogue
from callrec.store.catalogue.migrations import write_transaction
from callrec.store.errors import AccessDenied, AlreadyExists, InvalidArgument, NotFound

NOW_NS = 1_795_874_523_120_000_000  # 2026-11-28T14:02:03.120Z
SEC = 1_000_000_000

# The policy as the product describes it, written out independently of the module's table.
CALL_READING = {"calls.list", "calls.search", "calls.show", "calls.export", "calls.play", "calls.plot"}
EXPECTED = {
    "compliance": CALL_READING
    | {
        "calls.verify",
        "calls.note",
        "hold.add",
        "hold.remove",
        "hold.list",
        "retention.apply",
        "retention.report",
        "audit.list",
        "audit.verify",
        "calls.control",
        "capture.status",
    },
    "supervisor": CALL_READING | {"calls.control", "capture.status"},  # calls.control: in scope only
    "auditor": {"audit.list", "audit.verify"},
}
ADMIN_ONLY = {"users.manage", "keys.manage", "import", "config.show"}


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalogue]:
    with Catalogue(tmp_path / "catalogue.db", clock=lambda: NOW_NS) as catalogue:
        yield catalogue


@pytest.fixture
def users(cat: Catalogue) -> Users:
    return Users(cat.db)


@pytest.fixture
def staffed(users: Users) -> Users:
    """root (admin), carla (compliance), sam (supervisor of sales and 2*), ada (auditor)."""
    users.add("root", "admin", by="root", now_ns=NOW_NS)
    users.add("carla", "compliance", by="root", now_ns=NOW_NS + SEC)
    users.add("sam", "supervisor", by="root", now_ns=NOW_NS, queues=["sales"], extensions=["2*"])
    users.add("ada", "auditor", by="root", now_ns=NOW_NS)
    return users


# --- the permission table -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_permission_table(role: str, action: str) -> None:
    expected = True if role == "admin" else action in EXPECTED[role]
    assert Principal("someone", role).allows(action) is expected


def test_every_named_action_exists_and_admin_only_actions_are_admins() -> None:
    assert set(ACTIONS) >= CALL_READING | EXPECTED["compliance"] | ADMIN_ONLY
    assert PERMISSIONS["admin"] == frozenset(ACTIONS)
    for action in ADMIN_ONLY:
        assert [role for role in ROLES if Principal("x", role).allows(action)] == ["admin"]


@pytest.mark.parametrize("role", ROLES)
def test_a_role_that_may_not_listen_may_not_list(role: str) -> None:
    principal = Principal("x", role)
    assert (
        principal.allows("calls.list") == principal.allows("calls.play") == principal.allows("calls.search")
    )


def test_require_names_the_user_role_and_action() -> None:
    Principal("root", "admin").require("users.manage")
    with pytest.raises(AccessDenied, match=r"^ada \(auditor\) may not play recordings$"):
        Principal("ada", "auditor").require("calls.play")
    with pytest.raises(AccessDenied, match=r"^sam \(supervisor\) may not place legal holds \(call 42\)$"):
        Principal("sam", "supervisor").require("hold.add", what="call 42")


def test_unknown_actions_and_roles_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="unknown action 'calls.delete'"):
        Principal("root", "admin").allows("calls.delete")
    with pytest.raises(ValueError, match="unknown role 'root'"):
        Principal("root", "root")


# --- scopes -----------------------------------------------------------------------------------------------


def add_calls(cat: Catalogue, rows: list[tuple[str | None, str | None, str | None]]) -> list[dict[str, Any]]:
    """Catalogue calls with these (queue, caller, callee); their rows, by id."""
    cat.add_calls(
        [
            (
                {
                    "call_id": f"c{i}@pbx",
                    "started_ns": NOW_NS + i * SEC,
                    "queue": queue,
                    "caller": caller,
                    "callee": callee,
                },
                [],
                [],
            )
            for i, (queue, caller, callee) in enumerate(rows)
        ]
    )
    return list(cat.db.query("SELECT * FROM calls ORDER BY id"))


def visible(cat: Catalogue, principal: Principal) -> list[int]:
    scope = principal.scope_condition("c")
    where, params = scope if scope is not None else ("1", [])
    rows = cat.db.conn.execute(f"SELECT c.id FROM calls AS c WHERE {where} ORDER BY c.id", params)
    return [row[0] for row in rows]


def test_a_sales_supervisor_cannot_see_a_support_call(cat: Catalogue) -> None:
    sales, support = add_calls(cat, [("sales", "301", "302"), ("support", "303", "304")])
    sam = Principal("sam", "supervisor", queues=("sales",))
    assert visible(cat, sam) == [sales["id"]]
    assert sam.can_see(sales) and not sam.can_see(support)
    sam.require_call("calls.play", sales)
    with pytest.raises(
        AccessDenied, match=r"sam \(supervisor\) may not play recordings \(call 2\): it is not in"
    ):
        sam.require_call("calls.play", support)
    with pytest.raises(AccessDenied, match=r"may not place legal holds \(call 1\)$"):
        sam.require_call("hold.add", sales)


def test_extension_patterns_match_caller_or_callee(cat: Catalogue) -> None:
    rows = add_calls(
        cat,
        [
            (None, "201", "999"),
            (None, "999", "2999"),
            (None, "301", "302"),
            (None, "+35220123", None),
            (None, "21", None),
            ("sales", None, None),
        ],
    )
    sam = Principal("sam", "supervisor", extensions=("2*", "+352???23"))
    assert visible(cat, sam) == [1, 2, 4, 5]
    assert [row["id"] for row in rows if sam.can_see(row)] == [1, 2, 4, 5]
    two_digits = Principal("tia", "supervisor", extensions=("2?",))
    assert visible(cat, two_digits) == [5]


def test_unscoped_roles_and_empty_scopes(cat: Catalogue) -> None:
    rows = add_calls(cat, [("sales", "201", "202"), (None, None, None)])
    for role in ("admin", "compliance"):
        assert Principal("x", role).scope_condition() is None
        assert visible(cat, Principal("x", role)) == [1, 2]
        assert all(Principal("x", role).can_see(row) for row in rows)
    for nobody in (Principal("ada", "auditor"), Principal("sam", "supervisor")):
        assert nobody.scope_condition() == ("0", [])
        assert visible(cat, nobody) == [] and not any(nobody.can_see(row) for row in rows)


def test_scope_condition_uses_the_alias_and_parameters() -> None:
    sam = Principal("sam", "supervisor", queues=("a'b", "sales"), extensions=("2*",))
    assert sam.scope_condition("calls") == (
        "(calls.queue IN (?, ?) OR calls.caller GLOB ? OR calls.callee GLOB ?)",
        ["a'b", "sales", "2*", "2*"],
    )
    with pytest.raises(ValueError, match="invalid SQL alias"):
        sam.scope_condition("c; DROP TABLE calls")


TEXT = st.text(st.sampled_from("12+#*?a.é\x00\n"), max_size=5)
PATTERN = st.text(st.sampled_from("12+#a.*?"), min_size=1, max_size=4)
ROW = st.tuples(
    st.none() | st.sampled_from(["sales", "support", "Sales", "sales ", ""]),
    st.none() | TEXT,
    st.none() | TEXT,
)


def test_scope_sql_agrees_with_can_see() -> None:
    """On the real catalogue table, for arbitrary scopes and rows (NULLs, wildcards in the data,
    NULs, newlines, non-ASCII), the SQL condition keeps exactly the rows can_see accepts."""
    with Catalogue(":memory:", clock=lambda: NOW_NS) as cat:
        conn = cat.db.conn

        @settings(max_examples=300, deadline=None)
        @given(
            queues=st.lists(st.sampled_from(["sales", "support", "Sales", "sales "]), max_size=2),
            extensions=st.lists(PATTERN, max_size=3),
            rows=st.lists(ROW, min_size=1, max_size=6),
        )
        def check(queues: list[str], extensions: list[str], rows: list[tuple[str | None, ...]]) -> None:
            principal = Principal("sam", "supervisor", check_queues(queues), check_extensions(extensions))
            try:
                stored = add_calls(cat, rows)  # type: ignore[arg-type]
                assert visible(cat, principal) == [row["id"] for row in stored if principal.can_see(row)]
            finally:
                with write_transaction(cat.db):
                    conn.execute("DELETE FROM calls")

        check()


# --- users ------------------------------------------------------------------------------------------------


def test_add_get_list_count(staffed: Users) -> None:
    assert staffed.count() == 4
    assert [user.name for user in staffed.list()] == ["ada", "carla", "root", "sam"]
    assert staffed.get("sam") == User(
        "sam", "supervisor", ("sales",), ("2*",), "2026-11-28T14:02:03.120Z", "root"
    )
    assert staffed.get("carla") == User("carla", "compliance", (), (), "2026-11-28T14:02:04.120Z", "root")
    assert staffed.get("nobody") is None and staffed.get("Not Valid") is None


def test_add_returns_the_user_and_refuses_duplicates(users: Users) -> None:
    assert users.add("root", "admin", by="root", now_ns=NOW_NS) == User(
        "root", "admin", created_at="2026-11-28T14:02:03.120Z", created_by="root"
    )
    with pytest.raises(AlreadyExists, match="user root already exists"):
        users.add("root", "auditor", by="root", now_ns=NOW_NS)


def test_the_first_user_must_be_an_admin(users: Users) -> None:
    with pytest.raises(InvalidArgument, match="the first callrec user must be an admin, not supervisor"):
        users.add("sam", "supervisor", by="root", now_ns=NOW_NS, queues=["sales"])
    assert users.count() == 0


@pytest.mark.parametrize("name", ["Alice", "1abc", "a" * 33, "al ice", "", "al/ice", "-x", "émile", None])
def test_invalid_user_names(users: Users, name: Any) -> None:
    with pytest.raises(InvalidArgument, match=r"invalid user name .*: use an OS login name"):
        users.add(name, "admin", by="root", now_ns=NOW_NS)


@pytest.mark.parametrize("name", ["_svc", "a.b-c_1", "x" * 32, "root"])
def test_valid_user_names(users: Users, name: str) -> None:
    users.add(name, "admin", by="root", now_ns=NOW_NS)
    assert users.get(name) is not None


def test_invalid_role(users: Users) -> None:
    with pytest.raises(
        InvalidArgument, match="invalid role 'boss': use one of admin, compliance, supervisor, auditor"
    ):
        users.add("root", "boss", by="root", now_ns=NOW_NS)
    users.add("root", "admin", by="root", now_ns=NOW_NS)
    with pytest.raises(InvalidArgument, match="invalid role 'boss'"):
        users.grant("root", role="boss")


@pytest.mark.parametrize("pattern", ["[12]*", "12 34", "", "a" * 65, "12%", "2\n", "2^"])
def test_invalid_extension_patterns(staffed: Users, pattern: str) -> None:
    with pytest.raises(InvalidArgument, match=r"invalid extension pattern .*: use digits, letters and"):
        staffed.grant("sam", extensions=[pattern])


@pytest.mark.parametrize("pattern", ["+35220*", "2??", "alice@pbx.example", "#1", "*", "a-b_c.d"])
def test_valid_extension_patterns(staffed: Users, pattern: str) -> None:
    assert pattern in staffed.grant("sam", extensions=[pattern]).extensions


@pytest.mark.parametrize("queue", ["", "   ", "a\nb", "a\x7f", "a\x85", "\udc80", "q" * 101])
def test_invalid_queue_names(staffed: Users, queue: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid queue name .*: use non-empty text without control"):
        staffed.grant("sam", queues=[queue])


def test_scopes_are_for_supervisors_only(staffed: Users) -> None:
    with pytest.raises(
        InvalidArgument, match="only supervisors have queues and extensions, and carla is compliance"
    ):
        staffed.grant("carla", queues=["sales"])
    with pytest.raises(InvalidArgument, match="only supervisors"):
        staffed.add("cleo", "compliance", by="root", now_ns=NOW_NS, extensions=["2*"])


def test_grant_and_revoke(staffed: Users) -> None:
    sam = staffed.grant("sam", queues=["Sales – EMEA", "sales"], extensions="3*")  # one string: one item
    assert (sam.queues, sam.extensions) == (("Sales – EMEA", "sales"), ("2*", "3*"))
    assert staffed.revoke("sam", queues=["sales"], extensions=["2*", "3*"]) == User(
        "sam", "supervisor", ("Sales – EMEA",), (), "2026-11-28T14:02:03.120Z", "root"
    )
    with pytest.raises(NotFound, match="sam has no queue 'sales'"):
        staffed.revoke("sam", queues=["sales"])
    with pytest.raises(NotFound, match="sam has no extension '9'"):
        staffed.revoke("sam", extensions=["9"])


def test_a_role_change_drops_a_former_supervisors_scope(staffed: Users) -> None:
    assert staffed.grant("sam", role="compliance") == User(
        "sam", "compliance", (), (), "2026-11-28T14:02:03.120Z", "root"
    )
    assert staffed.grant("sam", role="supervisor", queues=["support"]).queues == ("support",)


def test_unknown_users_are_not_found(staffed: Users) -> None:
    for attempt in (
        lambda: staffed.remove("nobody"),
        lambda: staffed.grant("nobody", role="admin"),
        lambda: staffed.revoke("nobody", queues=["sales"]),
        lambda: staffed.password_hash("nobody"),
        lambda: staffed.set_password_hash("nobody", "$argon2id$x"),
    ):
        with pytest.raises(NotFound, match="no callrec user 'nobody': see `callrec users list`"):
            attempt()


def test_remove(staffed: Users, cat: Catalogue) -> None:
    staffed.remove("sam")
    assert staffed.get("sam") is None and staffed.count() == 3
    assert cat.db.conn.execute("SELECT count(*) FROM user_scopes").fetchone()[0] == 0


def test_the_last_admin_is_protected(staffed: Users) -> None:
    with pytest.raises(InvalidArgument, match="cannot remove root: they are the last admin"):
        staffed.remove("root")
    with pytest.raises(InvalidArgument, match="cannot make compliance root: they are the last admin"):
        staffed.grant("root", role="compliance")
    staffed.grant("carla", role="admin")
    staffed.grant("root", role="auditor")
    with pytest.raises(InvalidArgument, match="cannot remove carla: they are the last admin"):
        staffed.remove("carla")
    staffed.grant("root", role="admin")
    staffed.remove("carla")
    assert [user.name for user in staffed.list() if user.role == "admin"] == ["root"]


def test_password_hashes(staffed: Users) -> None:
    assert staffed.password_hash("sam") is None
    staffed.set_password_hash("sam", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
    assert staffed.password_hash("sam") == "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"
    staffed.set_password_hash("sam", None)
    assert staffed.password_hash("sam") is None
    with pytest.raises(InvalidArgument, match="a password hash must be non-empty text"):
        staffed.set_password_hash("sam", "")


def test_user_changes_join_the_open_transaction_with_their_audit_entry(users: Users, cat: Catalogue) -> None:
    trail = AuditTrail(cat.db, signing_key=None, verify_key=None, head_path=None, clock=lambda: NOW_NS)
    with pytest.raises(RuntimeError), write_transaction(cat.db):
        users.add("root", "admin", by="root", now_ns=NOW_NS)
        trail.record(user="root", action="users.manage", detail={"added": "root"})
        raise RuntimeError("interrupted")
    assert users.count() == 0 and trail.entries() == []
    with write_transaction(cat.db):
        users.add("root", "admin", by="root", now_ns=NOW_NS)
        trail.record(user="root", action="users.manage", detail={"added": "root"})
    assert users.count() == 1 and [e.detail for e in trail.entries()] == [{"added": "root"}]


# --- who a command runs as --------------------------------------------------------------------------------


def test_with_no_users_the_os_user_is_a_bootstrap_admin(users: Users) -> None:
    me = resolve_principal(users, "ops", None)
    assert me == Principal("ops", "admin", bootstrap=True)
    assert me.allows("users.manage") and me.scope_condition() is None and me.label == "ops"
    with pytest.raises(NotFound, match="no callrec user 'sam'"):
        resolve_principal(users, "ops", "sam")


def test_an_os_user_who_is_not_a_callrec_user_is_refused(staffed: Users) -> None:
    with pytest.raises(AccessDenied) as caught:
        resolve_principal(staffed, "mallory", None)
    assert str(caught.value) == (
        "OS user mallory is not a callrec user: "
        "an admin can add them with `callrec users add mallory --role ROLE`"
    )


def test_a_users_principal_carries_their_role_and_scope(staffed: Users) -> None:
    sam = resolve_principal(staffed, "sam", None)
    assert sam == Principal("sam", "supervisor", ("sales",), ("2*",))
    assert not sam.bootstrap and sam.acting_for is None
    assert resolve_principal(staffed, "sam", "sam") == sam  # --as yourself is just you


def test_an_admin_may_act_as_another_user(staffed: Users) -> None:
    sam = resolve_principal(staffed, "root", "sam")
    assert sam == Principal("sam", "supervisor", ("sales",), ("2*",), acting_for="root")
    assert sam.label == "root as sam" and not sam.allows("hold.add")
    with pytest.raises(NotFound, match="no callrec user 'nobody'"):
        resolve_principal(staffed, "root", "nobody")


@pytest.mark.parametrize("os_user", ["carla", "sam", "ada"])
def test_only_admins_may_act_as_another_user(staffed: Users, os_user: str) -> None:
    role = staffed.get(os_user).role  # type: ignore[union-attr]
    with pytest.raises(
        AccessDenied, match=rf"^{os_user} \({role}\) may not act as another user: only an admin"
    ):
        resolve_principal(staffed, os_user, "root")
