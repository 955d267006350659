"""``callrec``: the command line over the library. Parse, call one library function, format.

Library errors (``capture.errors.ParseError``, ``store.errors.StoreError``, ``OSError``) become
``Error: <message>`` on stderr with exit code 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from capture.errors import ParseError
from cli.output import call_json, call_text, calls_csv, calls_table, dumps
from recorder.pipeline import ImportReport, import_captures
from store.catalogue import Catalogue
from store.errors import StoreError
from store.home import Home, default_home

STATES = ("setup", "early", "answered", "completed", "cancelled", "rejected", "redirected", "failed")


class CallrecGroup(click.Group):
    """Maps library errors to one ``Error:`` line and exit code 1 (traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ParseError, StoreError, OSError) as exc:
            if ctx.find_root().params.get("debug"):
                raise
            message = str(exc) if not isinstance(exc, OSError) else _os_error_text(exc)
            raise click.ClickException(message) from None


def _os_error_text(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


class Context:
    def __init__(self, home: Path) -> None:
        self.home = Home(home)

    def catalogue(self) -> Catalogue:
        self.home.open(create=False)
        return Catalogue(self.home.catalogue_path)


@click.group(cls=CallrecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory (catalogue, recordings). Default: $CALLREC_HOME, else ~/.local/share/callrec.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="callrec")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, debug: bool) -> None:
    """Callrec: passive call recording from captured SIP and RTP.

    \b
    Example:
      callrec --home /srv/callrec import mirror-2026-11-28.pcap
      callrec --home /srv/callrec calls list --since 2026-11-28
    """
    ctx.obj = Context(home if home is not None else default_home(os.environ))


# -- import -------------------------------------------------------------------------------------


@cli.command("import")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--json", "as_json", is_flag=True, help="Print the created calls as a JSON array.")
@click.pass_obj
def import_cmd(obj: Context, files: tuple[Path, ...], as_json: bool) -> None:
    """Import capture files (pcap, pcapng, gzip-compressed) and record their calls.

    Every file is checked before anything is written: one unreadable file imports nothing.

    \b
    Example:
      callrec import mirror.pcap more.pcapng.gz
      callrec import --json call.pcap | jq '.[].id'
    """
    total = sum(f.stat().st_size for f in files)
    show_bar = sys.stderr.isatty() and not as_json
    if show_bar:
        with click.progressbar(length=total, label="Importing", file=sys.stderr) as bar:
            report = import_captures(files, obj.home, progress=bar.update)
    else:
        report = import_captures(files, obj.home)
    if as_json:
        catalogue = Catalogue(obj.home.catalogue_path)
        try:
            calls = [call_json(catalogue.get_call(i), obj.home.root) for i in report.created_ids]
        finally:
            catalogue.close()
        click.echo(dumps(calls))
        click.echo(_summary(report), err=True)
    else:
        click.echo(_summary(report))


def _summary(report: ImportReport) -> str:
    lines = [
        f"{len(report.files)} file(s), {report.packets} packets: {report.calls_found} call(s) found, "
        f"{report.recorded} recorded, {len(report.created_ids)} added to the catalogue"
        + (f", {report.already_present} already present" if report.already_present else ""),
    ]
    for reason, count in sorted(report.not_recorded.items()):
        lines.append(f"  not recorded: {count} ({reason})")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    if report.skipped_packets:
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped_packets.items()))
        lines.append(f"  packets skipped: {skipped}")
    return "\n".join(lines)


# -- calls --------------------------------------------------------------------------------------


@cli.group()
def calls() -> None:
    """Search, inspect and export recorded calls.

    \b
    Example:
      callrec calls list --since 2026-11-28 --state completed
      callrec calls export 42 --out call-42.wav
    """


@calls.command("list")
@click.option(
    "--since", metavar="DATE", help="Calls that started at or after DATE (YYYY-MM-DD[THH:MM[:SS]], UTC)."
)
@click.option(
    "--until", metavar="DATE", help="Calls that started before DATE (a bare date includes that day)."
)
@click.option("--number", metavar="TEXT", help="Caller or callee contains TEXT.")
@click.option("--state", type=click.Choice(STATES), help="Only calls in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most N calls.")
@click.option("--json", "fmt", flag_value="json", help="JSON array.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV with a header line.")
@click.pass_obj
def calls_list(
    obj: Context,
    since: str | None,
    until: str | None,
    number: str | None,
    state: str | None,
    limit: int,
    fmt: str | None,
) -> None:
    """List calls, oldest first.

    \b
    Example:
      callrec calls list --since 2026-11-01 --number +35226 --state completed
      callrec calls list --json --limit 10
    """
    catalogue = obj.catalogue()
    try:
        rows = catalogue.search(since=since, until=until, number=number, state=state, limit=limit)
        if fmt == "json":
            full = [catalogue.get_call(int(r["id"])) for r in rows]
            click.echo(dumps([call_json(r, obj.home.root) for r in full]))
        elif fmt == "csv":
            click.echo(calls_csv(rows), nl=False)
        else:
            click.echo(calls_table(rows) if rows else "No calls.")
    finally:
        catalogue.close()


@calls.command("show")
@click.argument("call_id", metavar="ID", type=int)
@click.option("--json", "as_json", is_flag=True, help="JSON object with legs and events.")
@click.pass_obj
def calls_show(obj: Context, call_id: int, as_json: bool) -> None:
    """Show one call: metadata, legs (codec, packets, lost, SSRC) and events.

    \b
    Example:
      callrec calls show 42
      callrec calls show 42 --json | jq .legs
    """
    catalogue = obj.catalogue()
    try:
        call = call_json(catalogue.get_call(call_id), obj.home.root, events=True)
    finally:
        catalogue.close()
    click.echo(dumps(call) if as_json else call_text(call))


@calls.command("export")
@click.argument("call_id", metavar="ID", type=int)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the recording.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["wav"]), default="wav", show_default=True, help="Audio format."
)
@click.pass_obj
def calls_export(obj: Context, call_id: int, out: Path, fmt: str) -> None:
    """Export a call's stereo recording (left: caller, right: callee).

    \b
    Example:
      callrec calls export 42 --out call-42.wav
    """
    catalogue = obj.catalogue()
    try:
        row = catalogue.get_call(call_id)
    finally:
        catalogue.close()
    if not row.get("recording_path"):
        reason = row.get("error") or "the call has no media"
        raise click.ClickException(f"call {call_id} has no recording ({reason})")
    store = obj.home.recording_store()
    with store.open(row["recording_path"]) as src:
        _copy_verified(src, out, row.get("recording_sha256"))
    click.echo(f"Wrote {out} ({row.get('recording_seconds')} s, {row.get('sample_rate')} Hz stereo)")


def _copy_verified(src: Any, out: Path, sha256: str | None) -> None:
    import hashlib
    import tempfile

    digest = hashlib.sha256()
    out_dir = out.parent if str(out.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
        if sha256 and digest.hexdigest() != sha256:
            raise StoreError("recording file does not match its checksum in the catalogue: not exported")
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main() -> None:
    cli(prog_name="callrec")


if __name__ == "__main__":
    main()
