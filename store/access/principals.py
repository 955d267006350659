"""Who may use callrec and for what: users, their roles, supervisors' scopes, permission checks.

Users are stored in the catalogue (``users``, ``user_scopes``); a user's name is their OS login
name, since the CLI runs as that user (the portal will authenticate with ``password_hash``). A
:class:`Principal` is the user a command runs as; commands ask it about actions by name
(:meth:`Principal.require`) and narrow their queries to the calls it may see
(:meth:`Principal.scope_condition` in SQL, :meth:`Principal.can_see` for one row; both apply
the same rule). :func:`resolve_principal` turns the OS user (and ``--as``) into a principal.

Writes join a transaction already open on the connection (so a change and its audit entry commit
together), or take the write lock themselves.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sqlite_utils import Database

from callrec.store.catalogue.migrations import iso_from_ns, write_transaction
from callrec.store.errors import AccessDenied, AlreadyExists, InvalidArgument, NotFound

ROLES = ("admin", "compliance", "supervisor", "auditor")

# Every action a command can ask about, with the words an error message uses for it. Commands ask by
# action, never by role, so the CLI and the portal share one policy.
ACTIONS: Mapping[str, str] = MappingProxyType(
    {
        "calls.list": "list calls",
        "calls.search": "search calls",
        "calls.show": "show calls",
        "calls.export": "export recordings",
        "calls.play": "play recordings",
        "calls.verify": "verify recordings",
        "calls.plot": "plot recordings",
        "calls.note": "annotate calls",
        "calls.control": "start, stop, pause and resume the recording of calls in progress",
        "capture.status": "see the running capture's status",
        "hold.add": "place legal holds",
        "hold.remove": "release legal holds",
        "hold.list": "list legal holds",
        "retention.apply": "apply retention",
        "retention.report": "see retention reports",
        "audit.list": "read the audit trail",
        "audit.verify": "verify the audit trail",
        "users.manage": "manage users",
        "keys.manage": "manage keys",
        "import": "import captures",
        "config.show": "show the configuration",
    }
)

_READ_CALLS = frozenset(
    {"calls.list", "calls.search", "calls.show", "calls.export", "calls.play", "calls.plot"}
)

# The whole policy as data, so it is reviewed (and tested) in one place instead of being spread over
# `if role == ...` branches in commands. Every role that may list calls may also play them (DESIGN.md: a
# role that may not listen to a recording cannot list it either); supervisors get the same reading actions
# as compliance, but only over the calls in their scope (SCOPED_ROLES). Auditors check the trail and see
# no call at all. Managing users and keys, importing and the configuration stay with admins.
PERMISSIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "admin": frozenset(ACTIONS),
        "compliance": _READ_CALLS
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
        },  # fmt: skip
        "supervisor": _READ_CALLS | {"calls.control", "capture.status"},
        "auditor": frozenset({"audit.list", "audit.verify"}),
    }
)
SCOPED_ROLES = frozenset({"supervisor"})
"""Roles limited to the calls of their queues and extensions; the others see every call they may list."""

_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_EXTENSION = re.compile(r"[0-9A-Za-z+*#?._@-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")  # and lone surrogates: not storable
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_QUEUE = 100


@dataclass(frozen=True, slots=True)
class User:
    """A callrec user: ``queues`` and ``extensions`` (glob patterns) scope a supervisor."""

    name: str
    role: str
    queues: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    created_at: str = ""
    created_by: str = ""


@dataclass(frozen=True, slots=True)
class Principal:
    """The user a command runs as. ``bootstrap``: an OS user let in as admin because there are no
    users yet. ``acting_for``: the real user's name when an admin runs a command ``--as`` someone."""

    name: str
    role: str
    queues: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    bootstrap: bool = False
    acting_for: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}: use one of {', '.join(ROLES)}")

    @classmethod
    def of(cls, user: User, *, acting_for: str | None = None) -> Principal:
        """The principal of a stored user."""
        return cls(user.name, user.role, user.queues, user.extensions, acting_for=acting_for)

    @property
    def label(self) -> str:
        """Who acts, for the audit trail: ``alice``, or ``root as alice`` under ``--as``."""
        return self.name if self.acting_for is None else f"{self.acting_for} as {self.name}"

    def allows(self, action: str) -> bool:
        """Whether the role may do ``action`` (one of :data:`ACTIONS`; others are a ValueError)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}: add it to callrec.store.access.principals.ACTIONS")
        return action in PERMISSIONS[self.role]

    def require(self, action: str, *, what: str = "") -> None:
        """Raise :class:`AccessDenied` unless the role may do ``action``; ``what`` names the object
        in the message: ``bob (auditor) may not play recordings (call 42)``."""
        if not self.allows(action):
            suffix = f" ({what})" if what else ""
            raise AccessDenied(f"{self.name} ({self.role}) may not {ACTIONS[action]}{suffix}")

    def require_call(self, action: str, call: Mapping[str, object]) -> None:
        """:meth:`require` ``action`` on one catalogue row, which must also be in scope."""
        what = f"call {call.get('id')}"
        self.require(action, what=what)
        if not self.can_see(call):
            raise AccessDenied(
                f"{self.name} ({self.role}) may not {ACTIONS[action]} ({what}): it is not in their queues "
                "or extensions"
            )

    def scope_condition(self, alias: str = "c") -> tuple[str, list[object]] | None:
        """An SQL condition (and its parameters) over the ``calls`` table aliased ``alias`` that
        keeps only the calls this principal may see; ``None`` if they may see every call. A call is
        in a supervisor's scope if its queue is one of theirs, or its caller or callee matches one
        of their extension patterns (GLOB); a role that may not list calls sees none (``"0"``)."""
        if not _ALIAS.fullmatch(alias):
            raise ValueError(f"invalid SQL alias {alias!r}")
        if not self.allows("calls.list"):
            return "0", []
        if self.role not in SCOPED_ROLES:
            return None
        parts: list[str] = []
        params: list[object] = []
        if self.queues:
            parts.append(f"{alias}.queue IN ({', '.join('?' * len(self.queues))})")
            params.extend(self.queues)
        for pattern in self.extensions:
            parts.append(f"{alias}.caller GLOB ? OR {alias}.callee GLOB ?")
            params.extend((pattern, pattern))
        if not parts:
            return "0", []
        return f"({' OR '.join(parts)})", params

    def can_see(self, call: Mapping[str, object]) -> bool:
        """Whether one catalogue row (a dict with ``queue``, ``caller``, ``callee``) is in scope:
        the rule of :meth:`scope_condition`, in Python."""
        if not self.allows("calls.list"):
            return False
        if self.role not in SCOPED_ROLES:
            return True
        if call.get("queue") in self.queues:
            return True
        for field in ("caller", "callee"):
            value = call.get(field)
            if isinstance(value, str):
                value = value.partition("\x00")[0]  # SQLite's GLOB reads text up to a NUL
                if any(_glob(pattern).fullmatch(value) for pattern in self.extensions):
                    return True
        return False


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    """SQLite's GLOB for a validated extension pattern: ``*`` any text, ``?`` one character,
    everything else literal and case-sensitive."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(regex, re.DOTALL)


def check_name(name: object) -> str:
    """A valid user name, or :class:`InvalidArgument` saying what one looks like."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"invalid user name {name!r}: use an OS login name (lower-case letters, digits, _ . -; "
            "starting with a letter or _; at most 32 characters)"
        )
    return name


def check_role(role: object) -> str:
    """A valid role, or :class:`InvalidArgument` listing them."""
    if role not in ROLES:
        raise InvalidArgument(f"invalid role {role!r}: use one of {', '.join(ROLES)}")
    return str(role)


def _items(values: Iterable[str] | str) -> list[str]:
    return [values] if isinstance(values, str) else list(values)


def check_queues(queues: Iterable[str] | str) -> tuple[str, ...]:
    """Queue names, checked (non-empty text without control characters), sorted and unique."""
    items = _items(queues)
    for queue in items:
        if (
            not isinstance(queue, str)
            or not queue.strip()
            or len(queue) > _MAX_QUEUE
            or _CONTROL.search(queue)
        ):
            raise InvalidArgument(
                f"invalid queue name {queue!r}: use non-empty text without control characters "
                f"(at most {_MAX_QUEUE} characters)"
            )
    return tuple(sorted(set(items)))


def check_extensions(extensions: Iterable[str] | str) -> tuple[str, ...]:
    """Extension patterns, checked, sorted and unique: digits, letters and ``+ # . _ @ -``, with
    ``*`` (any text) and ``?`` (one character) as wildcards; no brackets, so SQLite's GLOB and
    Python agree."""
    items = _items(extensions)
    for pattern in items:
        if not isinstance(pattern, str) or not _EXTENSION.fullmatch(pattern):
            raise InvalidArgument(
                f"invalid extension pattern {pattern!r}: use digits, letters and + # . _ @ -, "
                "with * and ? as wildcards (e.g. 2* or +35220?????)"
            )
    return tuple(sorted(set(items)))


@contextlib.contextmanager
def joined_write(db: Database) -> Iterator[Database]:
    """Join the transaction open on ``db``'s connection (its owner commits or rolls back), or run
    a ``BEGIN IMMEDIATE`` ... ``COMMIT`` of our own."""
    if db.conn.in_transaction:
        yield db
    else:
        with write_transaction(db):
            yield db


class Users:
    """The users of a catalogue database (``Catalogue(path).db``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(
        self,
        name: str,
        role: str,
        *,
        by: str,
        now_ns: int,
        queues: Iterable[str] = (),
        extensions: Iterable[str] = (),
    ) -> User:
        """Add a user (``by`` is who adds them, ``now_ns`` when). Only supervisors have queues and
        extensions. The first user must be an admin, so that someone can manage the others."""
        check_name(name)
        check_role(role)
        queue_list, extension_list = check_queues(queues), check_extensions(extensions)
        _scopes_allowed(name, role, queue_list, extension_list)
        if not isinstance(by, str) or not by.strip():
            raise InvalidArgument("a new user needs the name of who adds them (by)")
        created_at = iso_from_ns(now_ns)
        conn = self._db.conn
        with joined_write(self._db):
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AlreadyExists(
                    f"user {name} already exists: change their role or scope with `callrec users grant`"
                )
            if role != "admin" and self.count() == 0:
                raise InvalidArgument(
                    f"the first callrec user must be an admin, not {role}: add an admin (yourself) first"
                )
            conn.execute(
                "INSERT INTO users (name, role, created_at, created_by) VALUES (?, ?, ?, ?)",
                (name, role, created_at, by),
            )
            self._add_scopes(name, queue_list, extension_list)
        return User(name, role, queue_list, extension_list, created_at, by)

    def remove(self, name: str) -> None:
        """Remove a user and their scopes; the last admin cannot be removed."""
        with joined_write(self._db):
            if self._role(name) == "admin":
                self._keep_an_admin(name, "remove")
            self._db.conn.execute("DELETE FROM user_scopes WHERE user = ?", (name,))
            self._db.conn.execute("DELETE FROM users WHERE name = ?", (name,))

    def get(self, name: str) -> User | None:
        """The user called ``name``, if there is one."""
        found = self._load(name)
        return found[0] if found else None

    def list(self) -> builtins.list[User]:
        """Every user, by name."""
        return self._load(None)

    def count(self) -> int:
        """How many users there are (none: the OS user is a bootstrap admin)."""
        return int(self._db.conn.execute("SELECT count(*) FROM users").fetchone()[0])

    def grant(
        self,
        name: str,
        *,
        queues: Iterable[str] = (),
        extensions: Iterable[str] = (),
        role: str | None = None,
    ) -> User:
        """Give a user more queues or extensions, or a new ``role``. A user who stops being a
        supervisor loses their scope; the last admin keeps their role."""
        queue_list, extension_list = check_queues(queues), check_extensions(extensions)
        with joined_write(self._db):
            current = self._role(name)
            new_role = current if role is None else check_role(role)
            _scopes_allowed(name, new_role, queue_list, extension_list)
            if new_role != current:
                if current == "admin":
                    self._keep_an_admin(name, f"make {new_role}")
                self._db.conn.execute("UPDATE users SET role = ? WHERE name = ?", (new_role, name))
                if new_role not in SCOPED_ROLES:
                    self._db.conn.execute("DELETE FROM user_scopes WHERE user = ?", (name,))
            self._add_scopes(name, queue_list, extension_list)
        return self._get(name)

    def revoke(self, name: str, *, queues: Iterable[str] = (), extensions: Iterable[str] = ()) -> User:
        """Take queues or extensions away from a user; each must be one they have."""
        with joined_write(self._db):
            self._role(name)
            for kind, patterns in (("queue", _items(queues)), ("extension", _items(extensions))):
                for pattern in patterns:
                    cursor = self._db.conn.execute(
                        "DELETE FROM user_scopes WHERE user = ? AND kind = ? AND pattern = ?",
                        (name, kind, pattern),
                    )
                    if cursor.rowcount == 0:
                        raise NotFound(f"{name} has no {kind} {pattern!r}: see `callrec users list`")
        return self._get(name)

    def set_password_hash(self, name: str, password_hash: str | None) -> None:
        """Store (or with ``None`` clear) a user's password hash for the web portal."""
        if password_hash is not None and (not isinstance(password_hash, str) or not password_hash):
            raise InvalidArgument("a password hash must be non-empty text (or None to clear it)")
        with joined_write(self._db):
            self._role(name)
            self._db.conn.execute("UPDATE users SET password_hash = ? WHERE name = ?", (password_hash, name))

    def password_hash(self, name: str) -> str | None:
        """A user's stored password hash, if they have one."""
        row = self._db.conn.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no callrec user {name!r}: see `callrec users list`")
        return None if row[0] is None else str(row[0])

    def _role(self, name: str) -> str:
        row = self._db.conn.execute("SELECT role FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no callrec user {name!r}: see `callrec users list`")
        return str(row[0])

    def _get(self, name: str) -> User:
        user = self.get(name)
        if user is None:
            raise NotFound(f"no callrec user {name!r}: see `callrec users list`")
        return user

    def _keep_an_admin(self, name: str, change: str) -> None:
        admins = self._db.conn.execute("SELECT count(*) FROM users WHERE role = 'admin'").fetchone()[0]
        if admins <= 1:
            raise InvalidArgument(
                f"cannot {change} {name}: they are the last admin; make someone else admin first"
            )

    def _add_scopes(self, name: str, queues: tuple[str, ...], extensions: tuple[str, ...]) -> None:
        rows = [(name, "queue", queue) for queue in queues] + [(name, "extension", ext) for ext in extensions]
        self._db.conn.executemany(
            "INSERT OR IGNORE INTO user_scopes (user, kind, pattern) VALUES (?, ?, ?)", rows
        )

    def _load(self, name: str | None) -> builtins.list[User]:
        """One user (``name``) or all of them, with their scopes."""
        conn = self._db.conn
        where, params = ("", ()) if name is None else ("WHERE name = ?", (name,))
        rows = conn.execute(
            f"SELECT name, role, created_at, created_by FROM users {where} ORDER BY name", params
        ).fetchall()
        scopes: dict[tuple[str, str], list[str]] = {}
        where = where.replace("name", "user")
        for user, kind, pattern in conn.execute(
            f"SELECT user, kind, pattern FROM user_scopes {where} ORDER BY pattern", params
        ):
            scopes.setdefault((user, kind), []).append(pattern)
        return [
            User(
                name,
                role,
                tuple(scopes.get((name, "queue"), ())),
                tuple(scopes.get((name, "extension"), ())),
                created_at,
                created_by,
            )
            for name, role, created_at, created_by in rows
        ]


def _scopes_allowed(name: str, role: str, queues: tuple[str, ...], extensions: tuple[str, ...]) -> None:
    if (queues or extensions) and role not in SCOPED_ROLES:
        raise InvalidArgument(
            f"only supervisors have queues and extensions, and {name} is {role}: other roles are not scoped"
        )


def resolve_principal(users: Users, os_user: str, as_user: str | None) -> Principal:
    """Who a command runs as. With no users yet, the OS user (who could open the 0700 home, so its
    owner or root) is a bootstrap admin. Otherwise the OS user must be a callrec user; ``as_user``
    (``--as``) is for admins only and gives that user's principal, ``acting_for`` the real one."""
    if users.count() == 0:
        real = Principal(os_user, "admin", bootstrap=True)
    else:
        user = users.get(os_user)
        if user is None:
            raise AccessDenied(
                f"OS user {os_user} is not a callrec user: an admin can add them with "
                f"`callrec users add {os_user} --role ROLE`"
            )
        real = Principal.of(user)
    if as_user is None or as_user == os_user:
        return real
    if real.role != "admin":
        raise AccessDenied(f"{os_user} ({real.role}) may not act as another user: only an admin can use --as")
    target = users.get(as_user)
    if target is None:
        raise NotFound(f"no callrec user {as_user!r}: see `callrec users list`")
    return Principal.of(target, acting_for=os_user)
