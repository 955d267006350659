"""``callrec``: the command line over the library. Parse, call one library function, format.

Library errors (``capture.model.errors.ParseError``, ``store.errors.StoreError``, ``OSError``) become
``Error: <message>`` on stderr with exit code 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from callrec.capture.model.errors import ParseError
from callrec.cli.lazy import LazyGroup
from callrec.store.errors import StoreError

if TYPE_CHECKING:
    from callrec.cli.context import Context
    from callrec.recorder.pipeline import ImportReport

# Imported when used: `callrec import` does not load the live capture, the portal or the audio tools.
_COMMANDS = {
    "audit": "callrec.cli.commands.audit:audit",
    "calls": "callrec.cli.commands.calls:calls",
    "capture": "callrec.cli.commands.capture:capture",
    "config": "callrec.cli.commands.config:config_group",
    "hold": "callrec.cli.commands.retention:hold",
    "keys": "callrec.cli.commands.keys:keys",
    "portal": "callrec.cli.commands.portal:portal",
    "retention": "callrec.cli.commands.retention:retention",
    "rules": "callrec.cli.commands.config:rules_group",
    "status": "callrec.cli.commands.capture:status",
    "users": "callrec.cli.commands.users:users",
}


class CallrecGroup(LazyGroup):
    """Maps library errors to one ``Error:`` line and exit code 1 (traceback only with --debug)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("lazy", _COMMANDS)
        super().__init__(*args, **kwargs)

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


@click.group(cls=CallrecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory (catalogue, recordings). Default: $CALLREC_HOME, else ~/.local/share/callrec.",
)
@click.option(
    "--as",
    "as_user",
    metavar="NAME",
    help="Act as this callrec user (admins only; for tests and support). Default: the OS login name.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="callrec")
@click.pass_context
def cli(ctx: click.Context, home: Path | None, as_user: str | None, debug: bool) -> None:
    """Callrec: passive call recording from captured SIP and RTP.

    \b
    Example:
      callrec --home /srv/callrec import mirror-2026-11-28.pcap
      callrec --home /srv/callrec calls list --since 2026-11-28
    """
    from callrec.cli.context import Context
    from callrec.store.home import default_home

    ctx.obj = Context(home if home is not None else default_home(os.environ), as_user=as_user)
    ctx.call_on_close(ctx.obj.close)


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
    from callrec.cli.output import call_json, dumps
    from callrec.recorder.config import load_for_home
    from callrec.recorder.pipeline import check_captures, import_captures

    check_captures(files)  # one unreadable file imports nothing, and creates nothing
    obj.catalogue(create=True)
    obj.allow("import")
    config = load_for_home(obj.home.root, obj.env)
    total = sum(f.stat().st_size for f in files)
    show_bar = sys.stderr.isatty() and not as_json
    if show_bar:
        with click.progressbar(length=total, label="Importing", file=sys.stderr) as bar:
            report = import_captures(files, obj.home, progress=bar.update, config=config)
    else:
        report = import_captures(files, obj.home, config=config)
    obj.audit(
        "import",
        call_ids=report.created_ids,
        detail={"files": [str(f) for f in files], "calls": report.calls_found, "recorded": report.recorded},
    )
    if as_json:
        catalogue = obj.catalogue()
        store = obj.home.recording_store(config.storage)
        calls = [call_json(catalogue.get_call(i), store) for i in report.created_ids]
        click.echo(dumps(calls))
        click.echo(_summary(report), err=True)
    else:
        click.echo(_summary(report))


def _summary(report: ImportReport) -> str:
    """The totals, then (for several files) one block per capture: frames read, calls found,
    recorded, not recorded and why, frames skipped by reason."""
    lines = [
        f"{len(report.files)} file(s), {report.packets} packets: {report.calls_found} call(s) found, "
        f"{report.recorded} recorded, {len(report.created_ids)} added to the catalogue"
        + (f", {report.already_present} already present" if report.already_present else ""),
    ]
    lines += _details("  ", report.not_recorded, report.skipped_packets, report.warnings)
    tls, ws = report.counters["sip_tls_connections"], report.counters["sip_websocket_connections"]
    if tls or ws:
        lines.append(
            f"  signalling seen but not readable: {tls} SIP-over-TLS and {ws} SIP-over-WebSocket host pair(s)"
        )
    if len(report.per_file) > 1:
        for one in report.per_file:
            lines.append(
                f"  {Path(one.path).name}: {one.frames} frames, {one.calls_found} call(s) found, "
                f"{one.recorded} recorded"
            )
            lines += _details("    ", one.not_recorded, one.skipped, [])
    return "\n".join(lines)


def _details(
    indent: str, not_recorded: Mapping[str, int], skipped: Mapping[str, int], warnings: list[str]
) -> list[str]:
    lines = [f"{indent}not recorded: {count} ({reason})" for reason, count in sorted(not_recorded.items())]
    lines += [f"{indent}warning: {warning}" for warning in warnings]
    if skipped:
        lines.append(f"{indent}packets skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    return lines


def main() -> None:
    cli(prog_name="callrec")


if __name__ == "__main__":
    main()
