"""``callrec audit``: read and verify the append-only, hash-chained audit trail."""

from __future__ import annotations

import click

from callrec.cli.context import Context
from callrec.cli.output import dumps
from callrec.cli.params import CALL_ID, COUNT
from callrec.store.audit.calls import call_history, call_problems
from callrec.store.audit.trail import AuditEntry
from callrec.store.catalogue.db import parse_until, parse_when


@click.group()
def audit() -> None:
    """List and verify the audit trail: every search, view, export, hold, purge, key and user change.

    \b
    Example:
      callrec audit list --since 2026-11-28 --user alice
      callrec audit verify
    """


def _entry_json(entry: AuditEntry) -> dict[str, object]:
    return {
        "seq": entry.seq,
        "at": entry.at,
        "user": entry.user,
        "action": entry.action,
        "outcome": entry.outcome,
        "call_ids": list(entry.call_ids),
        "detail": entry.detail,
        "client": entry.client,
        "hash": entry.hash,
    }


@audit.command("list")
@click.option("--since", metavar="DATE", help="Entries at or after DATE (YYYY-MM-DD[THH:MM[:SS]], UTC).")
@click.option("--until", metavar="DATE", help="Entries before DATE (a bare date includes that day).")
@click.option("--user", metavar="NAME", help="Only this user's entries.")
@click.option("--action", metavar="ACTION", help="Only this action (e.g. calls.export).")
@click.option("--call", "call", type=CALL_ID, metavar="ID", help="Only entries about this call.")
@click.option("--limit", type=COUNT, help="At most the last N entries.")
@click.option("--json", "as_json", is_flag=True, help="JSON array.")
@click.pass_obj
def audit_list(
    obj: Context,
    since: str | None,
    until: str | None,
    user: str | None,
    action: str | None,
    call: int | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List audit entries, oldest first.

    \b
    Example:
      callrec audit list --since 2026-11-28 --action calls.export --json
    """
    obj.allow("audit.list")
    trail = obj.audit_trail()
    entries = trail.entries(
        since_ns=parse_when(since) if since else None,
        until_ns=parse_until(until) if until else None,
        user=user,
        action=action,
        call=call,
    )
    if limit is not None:
        entries = entries[-limit:]
    obj.audit("audit.list", detail={"entries": len(entries)})
    if as_json:
        click.echo(dumps([_entry_json(e) for e in entries]))
        return
    for e in entries:
        calls = f" calls {','.join(map(str, e.call_ids))}" if e.call_ids else ""
        outcome = "" if e.outcome == "ok" else f" [{e.outcome}]"
        click.echo(f"{e.seq:>6} {e.at} {e.user} {e.action}{outcome}{calls} {e.client}".rstrip())
    if not entries:
        click.echo("No audit entries.")


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="JSON object with the problems found.")
@click.pass_obj
def audit_verify(obj: Context, as_json: bool) -> None:
    """Check the chain, the signed checkpoints, the head, the anchors and the calls the trail names.

    Exit code 1 if anything was changed, cut, or a call the trail added is gone. Verifying signs
    nothing (its own entry is signed by the next command).

    \b
    Example:
      callrec audit verify && echo intact
    """
    obj.allow("audit.verify")
    obj.sign_on_close = False  # read-only: its own entry is signed by the next command, never over a gap
    report = obj.audit_trail().verify()
    conn = obj.catalogue().db.conn
    lost = call_problems(conn, call_history(conn))  # calls the trail added or purged, by call id
    problems = [{"seq": p.seq, "kind": p.kind, "message": p.message} for p in report.problems]
    problems += [{"seq": None, "kind": "calls", "call": p.call, "message": p.message} for p in lost]
    ok = report.ok and not lost
    if as_json:
        click.echo(dumps({"ok": ok, "entries": report.entries, "checkpoints": report.checkpoints,
                          "unsigned_tail": report.unsigned_tail, "problems": problems}))  # fmt: skip
    else:
        for problem in report.problems:
            click.echo(f"entry {problem.seq}: {problem.message}" if problem.seq else problem.message)
        for call in lost:
            click.echo(call.message)
        state = "intact" if ok else f"{len(problems)} problem(s)"
        click.echo(f"Audit trail: {report.entries} entries, {report.checkpoints} signed checkpoints: {state}")
    obj.audit("audit.verify", outcome="ok" if ok else "failed", detail={"problems": len(problems)})
    if not ok:
        raise SystemExit(1)
