"""``callrec users``: who may use callrec, with which role and scope (admins only)."""

from __future__ import annotations

import time

import click
from store.access import ROLES, User, Users

from cli.context import Context
from cli.output import dumps

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
