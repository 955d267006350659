"""``callrec calls``: list, search, show and verify calls; the audio commands are in ``cli.commands.audio``.

Every command checks the user's role and scope (a supervisor's lists and searches contain only
their calls) and leaves an audit entry with the call ids it returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import click

from callrec.cli.commands.audio import calls_export, calls_play, calls_plot
from callrec.cli.context import Context
from callrec.cli.lazy import LazyGroup
from callrec.cli.output import call_json, call_text, calls_csv, calls_table, dumps
from callrec.cli.params import CALL_ID, COUNT
from callrec.store.audit.calls import call_history, call_problems
from callrec.store.catalogue.db import Catalogue
from callrec.store.catalogue.query import DIRECTIONS, CallFilter
from callrec.store.crypto.vault import Vault
from callrec.store.errors import IntegrityError, NotFound

STATES = (
    "setup", "early", "answered", "completed", "cancelled", "rejected", "redirected", "failed", "unsignalled",
)  # fmt: skip


# calls in progress, through the live capture's control socket (cli.commands.capture): imported when used
_LIVE_COMMANDS = {
    "record": "callrec.cli.commands.capture:calls_record",
    "pause": "callrec.cli.commands.capture:calls_pause",
    "resume": "callrec.cli.commands.capture:calls_resume",
}


@click.group(cls=LazyGroup, lazy=_LIVE_COMMANDS)
def calls() -> None:
    """Search, inspect, verify and export recorded calls.

    \b
    Example:
      callrec calls list --since 2026-11-28 --state completed
      callrec calls search "alice sales" --direction inbound
      callrec calls export 42 --out call-42.wav
    """


F = TypeVar("F", bound=Callable[..., Any])


def _filters(command: F) -> F:
    """The filters ``calls list`` and ``calls search`` share."""
    options = [
        click.option(
            "--since",
            metavar="DATE",
            help="Calls that started at or after DATE (YYYY-MM-DD[THH:MM[:SS]], UTC).",
        ),
        click.option(
            "--until", metavar="DATE", help="Calls that started before DATE (a bare date includes that day)."
        ),
        click.option("--number", metavar="TEXT", help="Caller or callee contains TEXT."),
        click.option("--state", type=click.Choice(STATES), help="Only calls in this state."),
        click.option("--direction", type=click.Choice(DIRECTIONS), help="Only calls in this direction."),
        click.option("--queue", metavar="NAME", help="Only calls to this queue."),
        click.option(
            "--min-duration",
            type=click.FloatRange(min=0),
            metavar="SECONDS",
            help="Calls at least this long.",
        ),
        click.option(
            "--recorded/--not-recorded",
            "recorded",
            default=None,
            help="Only calls with (without) a recording.",
        ),
        click.option("--limit", type=COUNT, default=100, show_default=True, help="At most N calls."),
        click.option("--json", "fmt", flag_value="json", help="JSON array."),
        click.option("--csv", "fmt", flag_value="csv", help="CSV with a header line."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _list(obj: Context, action: str, text: str | None, options: dict[str, Any]) -> None:
    who = obj.allow(action)
    fmt, limit = options.pop("fmt"), options.pop("limit")
    spec = CallFilter(
        since=options["since"],
        until=options["until"],
        number=options["number"],
        state=options["state"],
        text=text,
        direction=options["direction"],
        queue=options["queue"],
        min_duration_s=options["min_duration"],
        recorded=options["recorded"],
        scope=who.scope_condition("c"),
    )
    catalogue = obj.catalogue()
    rows = catalogue.search(limit=limit, spec=spec)
    query = {k: v for k, v in options.items() if v is not None}
    if text is not None:
        query["text"] = text
    obj.audit(action, call_ids=[int(r["id"]) for r in rows], detail={"query": query, "results": len(rows)})
    if fmt == "json":
        full = [catalogue.get_call(int(r["id"])) for r in rows]
        store = obj.recording_store()
        click.echo(dumps([call_json(r, store) for r in full]))
    elif fmt == "csv":
        click.echo(calls_csv(rows), nl=False)
    else:
        click.echo(calls_table(rows) if rows else "No calls.")


@calls.command("list")
@_filters
@click.pass_obj
def calls_list(obj: Context, **options: Any) -> None:
    """List calls, oldest first.

    \b
    Example:
      callrec calls list --since 2026-11-01 --number +35226 --state completed
      callrec calls list --direction inbound --queue sales --min-duration 30 --recorded --csv
    """
    _list(obj, "calls.list", None, options)


@calls.command("search")
@click.argument("query")
@_filters
@click.pass_obj
def calls_search(obj: Context, query: str, **options: Any) -> None:
    """Full-text search over names, numbers, URIs, queue and notes (words as prefixes, all required).

    \b
    Example:
      callrec calls search "alice"
      callrec calls search "+35226 sales" --since 2026-11-01 --json
    """
    if not query.strip():
        raise click.BadParameter("give at least one word to search for", param_hint="QUERY")
    _list(obj, "calls.search", query, options)


@calls.command("show")
@click.argument("call_id", metavar="ID", type=CALL_ID)
@click.option("--json", "as_json", is_flag=True, help="JSON object with legs and events.")
@click.pass_obj
def calls_show(obj: Context, call_id: int, as_json: bool) -> None:
    """Show one call: metadata, legs (codec, packets, lost, SSRC) and events.

    \b
    Example:
      callrec calls show 42
      callrec calls show 42 --json | jq .legs
    """
    row = obj.visible_call(call_id, "calls.show")
    obj.audit("calls.show", call_ids=[call_id])
    call = call_json(row, obj.recording_store(), events=True)
    click.echo(dumps(call) if as_json else call_text(call))


@calls.command("verify")
@click.argument("call_id", metavar="ID", type=CALL_ID, required=False)
@click.option("--json", "as_json", is_flag=True, help="JSON array of results.")
@click.pass_obj
def calls_verify(obj: Context, call_id: int | None, as_json: bool) -> None:
    """Check signatures and sealed files without decrypting (one call, or every call you may see).

    Exit code 1 if anything was altered, truncated, swapped or is missing.

    \b
    Example:
      callrec calls verify 42
      callrec calls verify --json | jq '.[] | select(.ok | not)'
    """
    catalogue = obj.catalogue()
    history = call_history(catalogue.db.conn)
    if call_id is not None:
        try:
            rows = [obj.visible_call(call_id, "calls.verify")]
        except NotFound:  # a call the trail says was added is tampering, not a typo
            if not call_problems(catalogue.db.conn, history, calls={call_id}):
                raise
            rows = []
        checked: set[int] | None = {call_id}
    else:
        who = obj.allow("calls.verify")
        scope = who.scope_condition("c")
        rows = catalogue.search(limit=None, spec=CallFilter(scope=scope))
        checked = None if scope is None else {int(row["id"]) for row in rows}  # the trail's, if unscoped
    trail_says = {p.call: p.message for p in call_problems(catalogue.db.conn, history, calls=checked)}
    vault = Vault(obj.keys(), obj.recording_store())
    results = []
    for found in rows:
        call = int(found["id"])
        error = trail_says.pop(call, None)
        tomb = catalogue.tombstone(call)
        if error is None and tomb is not None and tomb["state"] == "purged":  # redacted; its purge audited
            results.append({"id": call, "ok": True, "error": None, "purged": tomb["purged_at"]})
            continue
        if error is None:
            error = _verify_call(vault, catalogue, call)
        results.append({"id": call, "ok": error is None, "error": error, "purged": None})
    results += [
        {"id": call, "ok": False, "error": error, "purged": None} for call, error in trail_says.items()
    ]
    results.sort(key=lambda result: result["id"])
    bad = [r for r in results if not r["ok"]]
    purged = sum(1 for r in results if r["purged"])
    obj.audit(
        "calls.verify",
        call_ids=[int(r["id"]) for r in results],
        outcome="failed" if bad else "ok",
        detail={"checked": len(results), "failed": [r["id"] for r in bad]},
    )
    if as_json:
        click.echo(dumps(results))
    else:
        for r in bad:
            said = str(r["error"])
            click.echo(said if said.startswith(f"call {r['id']}") else f"call {r['id']}: {said}")
        click.echo(
            f"Verified {len(results)} call(s): {len(results) - len(bad) - purged} intact, {len(bad)} failed"
            + (f", {purged} purged by retention (metadata redacted, nothing to check)" if purged else "")
        )
    if bad:
        raise SystemExit(1)


def _verify_call(vault: Vault, catalogue: Catalogue, call: int) -> str | None:
    """What is wrong with one call's row, legs, events, data key and sealed file, or ``None``."""
    row = catalogue.get_call(call)  # with its legs and events, which the signature covers
    wrapped = catalogue.wrapped_key(call)
    try:
        if row.get("recording_path"):
            vault.verify(row, wrapped)
        else:
            vault.verify_row(row, wrapped)
    except (IntegrityError, NotFound) as exc:
        return str(exc)
    return None


@calls.command("note")
@click.argument("call_id", metavar="ID", type=CALL_ID)
@click.argument("text")
@click.pass_obj
def calls_note(obj: Context, call_id: int, text: str) -> None:
    """Add a note to a call (kept with your name and the time; found by `calls search`).

    \b
    Example:
      callrec calls note 42 "customer disputes the quoted rate; see ticket 881"
    """
    who = obj.principal()
    obj.visible_call(call_id, "calls.note")
    obj.catalogue().add_note(call_id, text, by=who.name, now_ns=time.time_ns())
    obj.audit("calls.note", call_ids=[call_id], detail={"text": text})
    click.echo(f"Noted on call {call_id}")


calls.add_command(calls_export)
calls.add_command(calls_play)
calls.add_command(calls_plot)
