"""What every request gets: the catalogue, who is asking, and the audit trail (as ``cli.context`` for
the command line). Permissions and scopes are the library's (:class:`store.access.principals.Principal`):
the portal asks by action name and by catalogue row, and every denial is audited before it is
raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from callrec.store.access.principals import Principal, Users
from callrec.store.audit.trail import AuditTrail
from callrec.store.catalogue.db import Catalogue
from callrec.store.crypto.keys import KeyDirectory
from callrec.store.errors import AccessDenied, NotFound
from callrec.store.home import Home


class Gate:
    """One request's view of the store. ``client`` is how the audit trail names where the request
    came from (``portal 203.0.113.7``). Close it when the request ends: the trail's new entries are
    then signed (checkpointed) and the catalogue closed."""

    def __init__(self, home: Home, client: str, anchor: Path | None = None) -> None:
        self.home = home
        self.client = client
        self.anchor = anchor
        self._catalogue: Catalogue | None = None
        self._audit: AuditTrail | None = None
        self.principal: Principal | None = None
        self.recorded = 0

    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            self.home.open(create=False)
            self._catalogue = Catalogue(self.home.catalogue_path, create=False)
        return self._catalogue

    def keys(self) -> KeyDirectory:
        return KeyDirectory(self.home.keys)

    def users(self) -> Users:
        return Users(self.catalogue().db)

    def audit_trail(self) -> AuditTrail:
        if self._audit is None:
            self._audit = self.home.audit_trail(self.catalogue().db, self.anchor)
        return self._audit

    def close(self) -> None:
        try:
            if self._audit is not None and self.recorded:
                self._audit.checkpoint()
        finally:
            if self._catalogue is not None:
                self._catalogue.close()
            self._catalogue = self._audit = None

    # -- who ----------------------------------------------------------------------------------------

    def load_principal(self, name: str) -> Principal | None:
        """The principal of the user ``name`` as stored now (a role or scope changed by an admin
        applies at the next request); ``None`` if they were removed."""
        user = self.users().get(name)
        self.principal = None if user is None else Principal.of(user)
        return self.principal

    def who(self) -> Principal:
        if self.principal is None:
            raise AccessDenied("not logged in")
        return self.principal

    # -- checks, each audited when it fails ---------------------------------------------------------

    def allow(
        self, action: str, *, call_ids: Iterable[int] = (), detail: Mapping[str, Any] | None = None
    ) -> Principal:
        """The principal, if its role may do ``action``; else audit the denial and raise it."""
        who = self.who()
        if not who.allows(action):
            self.audit(
                action, call_ids=call_ids, detail={**(detail or {}), "reason": "role"}, outcome="denied"
            )
            who.require(action)
        return who

    def visible_call(self, call: int, action: str, detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The catalogue row of ``call`` (with legs and events) if the principal may do ``action``
        on it: the role allows it and the call is in scope. A call that does not exist is
        :class:`NotFound`; one outside the scope is :class:`AccessDenied`. Both are audited."""
        who = self.allow(action, call_ids=[call], detail=detail)
        try:
            row = self.catalogue().get_call(call)
        except NotFound:
            self.audit(
                action, call_ids=[call], detail={**(detail or {}), "reason": "no such call"}, outcome="failed"
            )
            raise
        if not who.can_see(row):
            self.audit(
                action,
                call_ids=[call],
                detail={**(detail or {}), "reason": "outside scope"},
                outcome="denied",
            )
            raise AccessDenied(f"call {call} is outside the scope of {who.name} ({who.role})")
        return row

    def audit(
        self,
        action: str,
        *,
        call_ids: Iterable[int] = (),
        detail: Mapping[str, Any] | None = None,
        outcome: str = "ok",
        user: str | None = None,
    ) -> int:
        """Append one entry as the principal (or ``user``, for logins that have none yet)."""
        name = user or (self.principal.name if self.principal is not None else "anonymous")
        seq = self.audit_trail().record(
            user=name,
            action=action,
            outcome=outcome,
            call_ids=list(call_ids),
            detail=dict(detail or {}),
            client=self.client,
        )
        self.recorded += 1
        return seq
