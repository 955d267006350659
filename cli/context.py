"""What every command gets: the data directory, who is asking, the catalogue and the audit trail.

Every command that touches calls, holds, retention, keys, users or the audit trail goes through
:meth:`Context.allow` (a denial is audited, then raised) and :meth:`Context.audit` (what was done).
The audit trail is checkpointed (signed) when the command ends.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from callrec.store.access.principals import Principal, Users, resolve_principal
from callrec.store.audit.client import client_description
from callrec.store.audit.trail import AuditTrail
from callrec.store.catalogue.db import Catalogue
from callrec.store.crypto.keys import KeyDirectory
from callrec.store.errors import AccessDenied
from callrec.store.home import Home
from callrec.store.objects.base import ObjectStore


def os_user() -> str:
    """The login name of the effective user (not $USER, which anyone can set)."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid{os.geteuid()}"


class Context:
    def __init__(
        self, home: Path, *, as_user: str | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.home = Home(home)
        self.as_user = as_user
        self.env = dict(os.environ if env is None else env)
        self._catalogue: Catalogue | None = None
        self._principal: Principal | None = None
        self._audit: AuditTrail | None = None
        self.sign_on_close = True

    # -- the catalogue and the trail ---------------------------------------------------------

    def catalogue(self, *, create: bool = False) -> Catalogue:
        """The catalogue, opened once per command (``create`` makes the home if missing)."""
        if self._catalogue is None:
            self.home.open(create=create)
            self._catalogue = Catalogue(self.home.catalogue_path)
        return self._catalogue

    def recording_store(self) -> ObjectStore:
        """Where this home's recordings are (``[storage]`` of its configuration; default the home)."""
        from callrec.recorder.config import load_for_home

        return self.home.recording_store(load_for_home(self.home.root, self.env).storage)

    def keys(self) -> KeyDirectory:
        return KeyDirectory(self.home.keys)

    def audit_trail(self) -> AuditTrail:
        if self._audit is None:
            self._audit = self.home.audit_trail(self.catalogue().db, self.audit_anchor())
        return self._audit

    def audit_anchor(self) -> Path | None:
        """The configured audit anchor file (``audit.anchor``), ``None`` for the default. A broken
        configuration is reported by the commands that use it; the trail then takes the default."""
        from callrec.recorder.config import ConfigError, load_for_home

        try:
            return load_for_home(self.home.root, self.env).audit_anchor
        except ConfigError:
            return None

    def close(self) -> None:
        """Sign the trail's new entries and close the catalogue (called when the command ends),
        unless the command verified the trail (:attr:`sign_on_close` False): verifying never signs."""
        try:
            if self._audit is not None and self.sign_on_close:
                refused = self._audit.checkpoint()
                if refused:
                    print(
                        f"warning: audit trail not signed: {refused} (see callrec audit verify)",
                        file=sys.stderr,
                    )
        finally:
            if self._catalogue is not None:
                self._catalogue.close()
            self._catalogue = self._audit = self._principal = None

    # -- who is asking -------------------------------------------------------------------------

    def principal(self) -> Principal:
        if self._principal is None:
            users = Users(self.catalogue().db)
            real = os_user()
            try:
                self._principal = resolve_principal(users, real, self.as_user)
            except AccessDenied as exc:  # logged under who asked, never under the name asked for
                detail = {"reason": str(exc), "os_user": real, "requested_as": self.as_user}
                self.audit_trail().record(
                    user=real, action="login", outcome="denied", detail=detail, client=self.client
                )
                raise
        return self._principal

    @property
    def client(self) -> str:
        return client_description(self.env)

    def allow(
        self, action: str, *, call_ids: Iterable[int] = (), detail: Mapping[str, Any] | None = None
    ) -> Principal:
        """The principal, if it may do ``action``; else audit the denial and raise it."""
        who = self.principal()
        if not who.allows(action):
            self.audit(action, call_ids=call_ids, detail=detail, outcome="denied")
            who.require(action)
        return who

    def visible_call(self, call: int, action: str) -> dict[str, Any]:
        """Catalogue row of ``call`` if the principal may do ``action`` on it (scope checked)."""
        who = self.allow(action, call_ids=[call])
        row = self.catalogue().get_call(call)
        if not who.can_see(row):
            self.audit(action, call_ids=[call], detail={"reason": "outside scope"}, outcome="denied")
            raise AccessDenied(f"call {call} is outside the scope of {who.name} ({who.role})")
        return row

    def audit(
        self,
        action: str,
        *,
        call_ids: Iterable[int] = (),
        detail: Mapping[str, Any] | None = None,
        outcome: str = "ok",
    ) -> int:
        """Append one entry to the audit trail as the current principal (or the OS user)."""
        who = self._principal
        name = who.name if who is not None else os_user()  # --as counts once it is allowed
        info = dict(detail or {})
        if who is None and self.as_user:
            info["requested_as"] = self.as_user
        if who is not None and who.acting_for:
            info["acting_for"] = who.acting_for
        return self.audit_trail().record(
            user=name,
            action=action,
            outcome=outcome,
            call_ids=list(call_ids),
            detail=info,
            client=self.client,
        )
