"""``callrec users``: who may use callrec, with which role and scope (admins only)."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from pathlib import Path

import click

from callrec.cli.context import Context
from callrec.cli.output import dumps
from callrec.store.access.passwords import check_password, hash_password
from callrec.store.access.principals import ROLES, User, Users

_QUEUE = click.option(
    "--queue", "queues", multiple=True, metavar="NAME", help="A queue in scope (repeatable)."
)
_EXTENSION = click.option(
    "--extension",
    "extensions",
    multiple=True,
    metavar="PATTERN",
    help="Caller/callee numbers in scope, a glob like '2??' or '+35226*' (repeatable).",
)


@click.group()
def users() -> None:
    """Add, remove, list, grant and revoke users (by OS login name).

    Roles: admin (everything), compliance (calls, holds, retention, audit), supervisor (calls in
    their queues or extensions only), auditor (the audit trail only). Until the first user is
    added, whoever can open the data directory acts as admin.

    \b
    Example:
      callrec users add alice --role supervisor --queue sales
      callrec users list
    """


def _describe(user: User) -> dict[str, object]:
    return {
        "name": user.name,
        "role": user.role,
        "queues": list(user.queues),
        "extensions": list(user.extensions),
    }


@users.command("add")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(ROLES), help="The user's role.")
@_QUEUE
@_EXTENSION
@click.pass_obj
def users_add(
    obj: Context, name: str, role: str, queues: tuple[str, ...], extensions: tuple[str, ...]
) -> None:
    """Add a user.

    \b
    Example:
      callrec users add carol --role compliance
      callrec users add alice --role supervisor --queue sales --extension '2??'
    """
    who = obj.allow("users.manage", detail={"user": name})
    Users(obj.catalogue().db).add(
        name, role, by=who.name, now_ns=time.time_ns(), queues=queues, extensions=extensions
    )
    obj.audit("users.add", detail={"user": name, "role": role, "queues": queues, "extensions": extensions})
    click.echo(f"Added {name} ({role})")


@users.command("remove")
@click.argument("name")
@click.pass_obj
def users_remove(obj: Context, name: str) -> None:
    """Remove a user (not the last admin).

    \b
    Example:
      callrec users remove alice
    """
    obj.allow("users.manage", detail={"user": name})
    Users(obj.catalogue().db).remove(name)
    obj.audit("users.remove", detail={"user": name})
    click.echo(f"Removed {name}")


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON array.")
@click.pass_obj
def users_list(obj: Context, as_json: bool) -> None:
    """List users with their roles and scopes.

    \b
    Example:
      callrec users list --json
    """
    obj.allow("users.manage")
    listed = Users(obj.catalogue().db).list()
    obj.audit("users.list")
    if as_json:
        click.echo(dumps([_describe(u) for u in listed]))
        return
    if not listed:
        click.echo("No users: whoever can open the data directory acts as admin.")
    for user in listed:
        scope = ", ".join(
            [*(f"queue {q}" for q in user.queues), *(f"extension {e}" for e in user.extensions)]
        )
        click.echo(f"{user.name:<20} {user.role:<11} {scope}")


@users.command("grant")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), help="Change the user's role.")
@_QUEUE
@_EXTENSION
@click.pass_obj
def users_grant(
    obj: Context, name: str, role: str | None, queues: tuple[str, ...], extensions: tuple[str, ...]
) -> None:
    """Give a user another role or more scope.

    \b
    Example:
      callrec users grant alice --queue support
    """
    if role is None and not queues and not extensions:
        raise click.UsageError("say what to grant: --role, --queue or --extension")
    obj.allow("users.manage", detail={"user": name})
    Users(obj.catalogue().db).grant(name, queues=queues, extensions=extensions, role=role)
    obj.audit("users.grant", detail={"user": name, "role": role, "queues": queues, "extensions": extensions})
    click.echo(f"Granted to {name}")


@users.command("revoke")
@click.argument("name")
@_QUEUE
@_EXTENSION
@click.pass_obj
def users_revoke(obj: Context, name: str, queues: tuple[str, ...], extensions: tuple[str, ...]) -> None:
    """Take queues or extensions out of a user's scope.

    \b
    Example:
      callrec users revoke alice --queue support
    """
    if not queues and not extensions:
        raise click.UsageError("say what to revoke: --queue or --extension")
    obj.allow("users.manage", detail={"user": name})
    Users(obj.catalogue().db).revoke(name, queues=queues, extensions=extensions)
    obj.audit("users.revoke", detail={"user": name, "queues": queues, "extensions": extensions})
    click.echo(f"Revoked from {name}")


PASSWORD_ENV = "CALLREC_PORTAL_PASSWORD"


def _new_password(password_file: Path | None, env: Mapping[str, str]) -> str:
    """The new password: the first line of ``password_file``, else ``$CALLREC_PORTAL_PASSWORD``,
    else asked twice on the terminal."""
    if password_file is not None:
        text = password_file.read_text(encoding="utf-8").split("\n", 1)[0].removesuffix("\r")
        return check_password(text)
    if PASSWORD_ENV in env:
        return check_password(env[PASSWORD_ENV])
    if not sys.stdin.isatty():
        raise click.UsageError(f"no password: give --password-file or set {PASSWORD_ENV}")
    text = click.prompt("New portal password", hide_input=True, confirmation_prompt=True, err=True)
    return check_password(str(text))


@users.command("passwd")
@click.argument("name")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"File whose first line is the new password. Default: ${PASSWORD_ENV}, else asked twice.",
)
@click.option(
    "--clear", is_flag=True, help="Remove the password: the user can no longer log in to the portal."
)
@click.pass_obj
def users_passwd(obj: Context, name: str, password_file: Path | None, clear: bool) -> None:
    """Set a user's web portal password (admins for anyone, every user for themselves).

    Stored as a salted scrypt hash; at least 12 characters.

    \b
    Example:
      callrec users passwd alice
      callrec users passwd alice --password-file /run/secrets/alice
      callrec users passwd alice --clear
    """
    if clear and password_file is not None:
        raise click.UsageError("--clear and --password-file do not go together")
    who = obj.principal()
    if who.name != name or who.bootstrap:
        obj.allow("users.manage", detail={"user": name})
    registry = Users(obj.catalogue().db)
    registry.password_hash(name)  # NotFound before asking for a password
    stored = None if clear else hash_password(_new_password(password_file, obj.env))
    registry.set_password_hash(name, stored)
    obj.audit("users.passwd", detail={"user": name, "cleared": clear})
    click.echo(f"{'Cleared the portal password of' if clear else 'Set the portal password of'} {name}")
