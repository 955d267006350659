"""``callrec config check|show`` and ``callrec rules test``: the configuration and what it decides."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from callrec.cli.context import Context
from callrec.cli.output import dumps
from callrec.recorder.config import ConfigError, load_for_home
from callrec.recorder.policy.facts import CallFacts
from callrec.store.catalogue.db import parse_when
from callrec.store.catalogue.query import DIRECTIONS


@click.group("config")
def config_group() -> None:
    """Check and show the configuration (/etc/callrec, then the data directory's own files).

    \b
    Example:
      callrec config check
      callrec config show --json
    """


@config_group.command("check")
@click.pass_obj
def config_check(obj: Context) -> None:
    """Read every configuration file and report every problem (file, key, reason); exit 1 if any.

    \b
    Example:
      callrec --home /var/lib/callrec config check && systemctl reload callrec-capture
    """
    try:
        config = load_for_home(obj.home.root, obj.env)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        raise SystemExit(1) from None
    files = ", ".join(str(f) for f in config.files) or "no files (defaults)"
    click.echo(f"Configuration is valid: {files}; {len(config.rules.rules)} rule(s) before the default")


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="JSON object.")
@click.pass_obj
def config_show(obj: Context, as_json: bool) -> None:
    """Print the merged configuration, with the files it came from.

    \b
    Example:
      callrec config show
    """
    audited = obj.home.catalogue_path.is_file()  # no catalogue yet: no users either, nothing to audit
    if audited:
        obj.allow("config.show")
    config = load_for_home(obj.home.root, obj.env)
    if audited:
        obj.audit("config.show")
    shown = {"files": [str(f) for f in config.files], **{k: v for k, v in config.merged.items()}}
    if as_json:
        click.echo(dumps(shown))
        return
    click.echo("# files: " + (", ".join(shown["files"]) or "none (defaults)"))
    for table, values in config.merged.items():
        if isinstance(values, list):
            for item in values:
                click.echo(f"\n[[{table}]]")
                click.echo("\n".join(f"{k} = {_toml(v)}" for k, v in item.items()))
            continue
        click.echo(f"\n[{table}]")
        click.echo("\n".join(f"{k} = {_toml(v)}" for k, v in values.items()))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


@click.group("rules")
def rules_group() -> None:
    """Try the recording rules on a call you describe.

    \b
    Example:
      callrec rules test --caller +35226123456 --callee 201 --direction inbound --queue sales
    """


@rules_group.command("test")
@click.option("--caller", required=True, help="Caller number.")
@click.option("--callee", required=True, help="Callee number.")
@click.option("--direction", type=click.Choice(DIRECTIONS), default="unknown", show_default=True)
@click.option("--queue", help="Queue the call went to.")
@click.option("--request-uri", default="", help="Request-URI (default: sip:CALLEE).")
@click.option("--codec", "codecs", multiple=True, help="A codec of the call (repeatable).")
@click.option("--at", "at", metavar="TIME", help="Start time (YYYY-MM-DD[THH:MM[:SS]], UTC). Default: now.")
@click.option("--duration", type=click.FloatRange(min=0), default=60.0, show_default=True, help="Seconds.")
@click.option("--json", "as_json", is_flag=True, help="JSON object.")
@click.pass_obj
def rules_test(
    obj: Context,
    caller: str,
    callee: str,
    direction: str,
    queue: str | None,
    request_uri: str,
    codecs: tuple[str, ...],
    at: str | None,
    duration: float,
    as_json: bool,
) -> None:
    """Explain which rule matches a call and why (every rule in order, then the decision).

    \b
    Example:
      callrec rules test --caller +35226123456 --callee 201 --direction inbound --queue sales
    """
    import time

    config = load_for_home(obj.home.root, obj.env)
    facts = CallFacts(
        direction=direction,
        caller=caller,
        callee=callee,
        request_uri=request_uri or f"sip:{callee}",
        queue=queue,
        addresses=(None, None),
        codecs=tuple(codecs),
        started_ns=parse_when(at) if at else time.time_ns(),
        duration_s=duration,
    )
    steps = config.rules.explain(facts)
    decision = config.rules.decide(facts)
    if as_json:
        click.echo(
            dumps(
                {
                    "rules": [{"rule": name, "matched": matched, "why": why} for name, matched, why in steps],
                    "decision": dataclasses.asdict(decision),
                }
            )
        )
        return
    for name, matched, why in steps:
        click.echo(f"{'MATCH' if matched else 'no   '} {name}: {why}")
    click.echo(f"=> {decision.rule}: {decision.reason}")
    actions = {k: v for k, v in dataclasses.asdict(decision).items() if k not in ("rule", "reason")}
    click.echo("   " + ", ".join(f"{k} = {v}" for k, v in actions.items()))
