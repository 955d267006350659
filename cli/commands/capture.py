"""``callrec capture`` (the live appliance), ``callrec status`` and ``callrec calls record|pause|resume``
(requests to the running capture through its control socket)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from callrec.capture.sources.bpf import DEFAULT_FILTER, FilterError
from callrec.capture.sources.interfaces import CaptureSetupError
from callrec.cli.context import Context
from callrec.recorder.config import EX_CONFIG, ConfigError, load_for_home
from callrec.recorder.live.control_socket import ControlError, request
from callrec.recorder.live.launch import open_source, parse_size, start_service
from callrec.recorder.live.state import LiveOptions

CONTROL_NAME = "run/control.sock"


def control_path(obj: Context, given: Path | None) -> Path:
    return given if given is not None else obj.home.root / CONTROL_NAME


def _log_to_stdout() -> None:
    """The service's log lines (the callrec.* loggers) on standard output, one a line, as the journal
    reads a unit's output."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("callrec")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _size(text: str, option: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.command("capture")
@click.option(
    "--interface", "-i", "interfaces", multiple=True, metavar="IF", help="Mirror port to sniff (repeatable)."
)
@click.option(
    "--filter", "expr", default=DEFAULT_FILTER, show_default="SIP, RTP and fragments", help="BPF expression."
)
@click.option(
    "--buffer",
    "buffer",
    default="128M",
    show_default=True,
    help="Ring buffer per interface (128M holds about 2.5 s at 200,000 G.711 frames/s).",
)
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A capture file instead of an interface (tests, demos).",
)
@click.option(
    "--speed",
    type=float,
    default=1.0,
    show_default=True,
    help="Replay speed (1: capture speed; 0: as fast as possible).",
)
@click.option(
    "--control",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Control socket. Default: HOME/{CONTROL_NAME}.",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write Prometheus metrics here every second.",
)
@click.option(
    "--journal/--no-journal",
    default=True,
    show_default=True,
    help="Journal frames for recovery after a crash.",
)
@click.option(
    "--free-space-floor",
    default="0",
    help="Purge expired recordings when free space is below this (e.g. 5G).",
)
@click.option(
    "--max-waiting-calls",
    default=1000,
    show_default=True,
    help="Calls kept in memory while storage is unavailable.",
)
@click.option(
    "--saver",
    type=click.Choice(["process", "inline"]),
    default="process",
    show_default=True,
    help="Save calls (render, seal, commit) in processes of their own, or in the capture loop.",
)
@click.option(
    "--savers",
    type=click.IntRange(1, 64),
    default=2,
    show_default=True,
    help="Saver processes (with --saver process): more absorb larger waves of hang-ups.",
)
@click.pass_obj
def capture(
    obj: Context,
    interfaces: tuple[str, ...],
    expr: str,
    buffer: str,
    replay: Path | None,
    speed: float,
    control: Path | None,
    metrics_file: Path | None,
    journal: bool,
    free_space_floor: str,
    max_waiting_calls: int,
    saver: str,
    savers: int,
) -> None:
    """Record calls live from mirror ports until stopped (SIGTERM); SIGHUP reloads the configuration.

    Reads the configuration (rules, modes, retention, keys) like import. Logs one line per call
    recorded or not recorded. Exits 78 when the configuration is invalid.

    \b
    Example:
      callrec --home /var/lib/callrec capture -i eth1 -i eth2
      callrec capture --replay calls.pcap --speed 1
    """
    if bool(interfaces) == (replay is not None):
        raise click.UsageError("give --interface (one or more) or --replay FILE, not both")
    if speed < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--speed")
    home = obj.home
    options = LiveOptions(
        source_name=f"replay:{replay.name}" if replay else "live:" + ",".join(interfaces),
        control_path=control_path(obj, control),
        metrics_path=metrics_file,
        journal_dir=home.root / "journal" if journal else None,
        max_waiting_calls=max_waiting_calls,
        free_space_floor=_size(free_space_floor, "--free-space-floor"),
        saver=saver,
        savers=savers,
    )
    try:
        source = open_source(
            interfaces, replay, speed=speed, buffer_bytes=_size(buffer, "--buffer"), bpf_filter=expr
        )
    except (CaptureSetupError, FilterError) as exc:
        raise click.ClickException(str(exc)) from None
    _log_to_stdout()
    try:
        service = start_service(home, source, lambda: load_for_home(home.root, obj.env), options)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"configuration error: {problem}", err=True)
        sys.exit(EX_CONFIG)
    service.run()


@click.command("status")
@click.option(
    "--control",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Control socket. Default: HOME/{CONTROL_NAME}.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def status(obj: Context, control: Path | None, as_json: bool) -> None:
    """Show the running capture: calls in progress, packets/s, drops, spool and disk, and the
    recording store (local directory or S3 bucket) and whether it answers.

    \b
    Example:
      callrec --home /var/lib/callrec status
    """
    reply = _ask(control_path(obj, control), {"command": "status"})
    found = obj.recording_store().status()
    reply["storage"] = {
        "kind": found.kind,
        "location": found.location,
        "object_lock": found.object_lock,
        "reachable": found.reachable,
        "error": found.error,
    }
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    click.echo(
        f"capture on {reply['source']}, up {reply['uptime_s']} s: {reply['packets_per_s']} packets/s, "
        f"{reply['kernel_drops']} kernel drops"
    )
    click.echo(
        f"recorded {reply['recorded']}, not recorded {sum(reply['not_recorded'].values())}, failed "
        f"{reply['failed']}, waiting for storage {reply['waiting']}, lost {reply['lost']}"
    )
    click.echo(
        f"journal {reply['journal_bytes']} bytes; disk {reply['disk_used_bytes']} used, "
        f"{reply['disk_free_bytes']} free"
    )
    lock = f", Object Lock {found.object_lock}" if found.kind != "local" else ""
    state = "reachable" if found.reachable else f"NOT reachable: {found.error}"
    click.echo(f"storage {found.kind} {found.location}{lock}: {state}")
    if reply.get("last_error"):
        click.echo(f"last error: {reply['last_error']}")
    calls = reply["calls_in_progress"]
    click.echo(f"{len(calls)} call(s) in progress" + (":" if calls else ""))
    for call in calls:
        asked = f"  [{', '.join(call['commands'])}]" if call["commands"] else ""
        parties = f"{call['caller']} -> {call['callee']}"
        click.echo(f"  {call['call_id']}  {parties}  {call['state']}  {call['seconds']} s{asked}")


def _ask(path: Path, message: dict[str, Any]) -> dict[str, Any]:
    try:
        reply = request(path, message)
    except ControlError as exc:
        raise click.ClickException(str(exc)) from None
    if not reply.get("ok"):
        raise click.ClickException(str(reply.get("error") or "the capture refused"))
    return reply


def _control_command(name: str, actions: dict[str, str], help_text: str) -> click.Command:
    @click.argument("call", metavar="CALL")
    @click.option(
        "--control",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"Control socket. Default: HOME/{CONTROL_NAME}.",
    )
    @click.pass_obj
    def command(obj: Context, call: str, control: Path | None, **flags: bool) -> None:
        chosen = [action for flag, action in actions.items() if flags.get(flag)]
        if len(actions) > 1 and len(chosen) != 1:
            raise click.UsageError(f"give one of {', '.join('--' + f for f in actions)}")
        action = chosen[0] if chosen else next(iter(actions.values()))
        reply = _ask(control_path(obj, control), {"command": "signal", "call": call, "action": action})
        click.echo(f"{action} asked for call {reply['call_id']} at {reply['at']}")

    for flag in actions if len(actions) > 1 else ():
        command = click.option(f"--{flag}", is_flag=True, help=f"{flag.capitalize()} recording.")(command)
    command.__doc__ = help_text
    return click.command(name)(command)


calls_record = _control_command(
    "record",
    {"start": "start", "stop": "stop"},
    """Start or stop recording a call in progress (rules with record = on-demand).

    CALL is its Call-ID, or the caller's or callee's number when only one call in progress has it
    (``callrec status`` lists them). Only the recorded spans are kept.

    \b
    Example:
      callrec calls record 2001 --start
    """,
)
calls_pause = _control_command(
    "pause",
    {"pause": "pause"},
    """Pause the recording of a call in progress: both channels are blanked until resume.

    \b
    Example:
      callrec calls pause 2001
    """,
)
calls_resume = _control_command(
    "resume",
    {"resume": "resume"},
    """Resume the recording of a paused call.

    \b
    Example:
      callrec calls resume 2001
    """,
)
