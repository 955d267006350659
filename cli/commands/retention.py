"""``callrec retention`` and ``callrec hold``: purge what has expired, never what is held."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import click

from callrec.cli.context import Context
from callrec.cli.output import dumps
from callrec.cli.params import CALL_ID
from callrec.recorder.config import load_for_home
from callrec.store.catalogue.db import iso_from_ns
from callrec.store.retention.holds import Holds
from callrec.store.retention.purge import Retention


@click.group()
def retention() -> None:
    """Apply the retention classes: crypto-shred expired recordings, keep a tombstone.

    Run daily (systemd/callrec-retention.timer, or cron). Idempotent and safe to interrupt:
    the next run completes what a crash left half done. Held recordings are never purged.

    \b
    Example:
      callrec retention apply --dry-run
      callrec retention report
    """


@retention.command("apply")
@click.option("--dry-run", is_flag=True, help="Say what would be purged; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="JSON object.")
@click.pass_obj
def retention_apply(obj: Context, dry_run: bool, as_json: bool) -> None:
    """Purge every expired recording that is not on hold.

    \b
    Example:
      callrec retention apply
      15 3 * * *  callrec --home /var/lib/callrec retention apply   (crontab)
    """
    who = obj.allow("retention.apply")
    catalogue = obj.catalogue()

    def audit_purge(action: str, call_ids: Sequence[int], detail: Mapping[str, object]) -> None:
        obj.audit(action, call_ids=call_ids, detail=detail)

    engine = Retention(catalogue.db, obj.recording_store())
    report = engine.apply(
        time.time_ns(), by=who.name, dry_run=dry_run, audit=None if dry_run else audit_purge
    )
    summary = {
        "dry_run": dry_run,
        "purged": list(report.purged),
        "would_purge": list(report.would_purge),
        "held": list(report.held),
        "resumed": list(report.resumed),
        "errors": {str(k): v for k, v in report.errors.items()},
        "deferred": {str(k): v for k, v in report.deferred.items()},
        "vacuumed": report.vacuumed,
    }
    obj.audit(
        "retention.apply",
        call_ids=report.purged or report.would_purge,
        detail={k: v for k, v in summary.items() if k != "purged" and k != "would_purge"},
        outcome="failed" if report.errors else "ok",
    )
    if as_json:
        click.echo(dumps(summary))
    else:
        done = report.would_purge if dry_run else report.purged
        verb = "would purge" if dry_run else "purged"
        click.echo(f"Retention: {verb} {len(done)} call(s); {len(report.held)} expired but on hold")
        if report.resumed:
            click.echo(f"  completed {len(report.resumed)} purge(s) an earlier run left unfinished")
        for call, error in sorted(report.errors.items()):
            click.echo(f"  call {call}: {error}")
        for call, why in sorted(report.deferred.items()):
            click.echo(f"  call {call}: shredded (unreadable); {why}; retried on the next run")
    if report.errors:
        raise SystemExit(1)


@retention.command("report")
@click.option("--json", "as_json", is_flag=True, help="JSON object.")
@click.pass_obj
def retention_report(obj: Context, as_json: bool) -> None:
    """Per retention class: recordings kept, due, held, purged, next expiry.

    \b
    Example:
      callrec retention report --json
    """
    obj.allow("retention.report")
    classes = load_for_home(obj.home.root, obj.env).retention
    summary = Retention(obj.catalogue().db, obj.recording_store()).report(time.time_ns(), classes)
    obj.audit("retention.report")
    rows = [_class_json(c) for c in summary.classes]
    if as_json:
        click.echo(dumps({"classes": rows, "unclassified": summary.unclassified}))
        return
    click.echo(f"{'class':<12} {'keep':>6} {'kept':>8} {'due':>6} {'held':>6} {'purged':>8}  next expiry")
    for row in rows:
        click.echo(
            f"{row['class']:<12} {row['duration'] or '?':>6} {row['kept']:>8} {row['due']:>6} "
            f"{row['held']:>6} {row['purged']:>8}  {row['next_expiry'] or '-'}"
        )
    if summary.unclassified:
        click.echo(f"{summary.unclassified} recording(s) without a retention class (recorded before classes)")


def _class_json(c: Any) -> dict[str, Any]:
    return {
        "class": c.name,
        "duration": str(c.duration) if c.duration is not None else None,
        "kept": c.kept,
        "due": c.due,
        "held": c.held,
        "purged": c.purged,
        "next_expiry": iso_from_ns(c.next_expiry_ns) if c.next_expiry_ns is not None else None,
    }


@click.group()
def hold() -> None:
    """Legal holds: a held recording is never purged, whatever its retention.

    \b
    Example:
      callrec hold add 42 --reason "case 2026-117"
      callrec hold list
    """


@hold.command("add")
@click.argument("call_id", metavar="ID", type=CALL_ID)
@click.option("--reason", required=True, help="Why (a case or matter reference).")
@click.pass_obj
def hold_add(obj: Context, call_id: int, reason: str) -> None:
    """Put a call's recording on legal hold.

    \b
    Example:
      callrec hold add 42 --reason "complaint 2026-117"
    """
    who = obj.allow("hold.add", call_ids=[call_id])
    catalogue = obj.catalogue()
    hold_id = Holds(catalogue.db, obj.recording_store()).add(
        call_id, reason=reason, by=who.name, now_ns=time.time_ns()
    )
    obj.audit("hold.add", call_ids=[call_id], detail={"hold": hold_id, "reason": reason})
    click.echo(f"Call {call_id} is on hold ({reason})")


@hold.command("remove")
@click.argument("call_id", metavar="ID", type=CALL_ID)
@click.option("--reason", default="", help="Why the hold ends.")
@click.pass_obj
def hold_remove(obj: Context, call_id: int, reason: str) -> None:
    """Release a call's holds (its retention applies again).

    \b
    Example:
      callrec hold remove 42 --reason "case closed"
    """
    who = obj.allow("hold.remove", call_ids=[call_id])
    released = Holds(obj.catalogue().db, obj.recording_store()).remove(
        call_id, by=who.name, now_ns=time.time_ns(), reason=reason
    )
    obj.audit("hold.remove", call_ids=[call_id], detail={"released": released, "reason": reason})
    click.echo(f"Call {call_id}: {released} hold(s) released")


@hold.command("list")
@click.option("--all", "show_all", is_flag=True, help="Released holds too.")
@click.option("--json", "as_json", is_flag=True, help="JSON array.")
@click.pass_obj
def hold_list(obj: Context, show_all: bool, as_json: bool) -> None:
    """List legal holds.

    \b
    Example:
      callrec hold list --json
    """
    obj.allow("hold.list")
    holds = Holds(obj.catalogue().db).list(active_only=not show_all)
    obj.audit("hold.list", call_ids=sorted({h.call for h in holds}))
    rows = [
        {"call": h.call, "reason": h.reason, "placed_by": h.placed_by, "placed_at": h.placed_at,
         "released_by": h.released_by, "released_at": h.released_at}
        for h in holds
    ]  # fmt: skip
    if as_json:
        click.echo(dumps(rows))
        return
    for row in rows:
        released = f", released {row['released_at']} by {row['released_by']}" if row["released_at"] else ""
        click.echo(
            f"call {row['call']}: {row['reason']} (by {row['placed_by']} {row['placed_at']}{released})"
        )
    if not rows:
        click.echo("No holds.")
