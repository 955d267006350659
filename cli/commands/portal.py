"""``callrec portal``: serve the supervisors' web portal (see ``portal/``), loopback by default.

The operator who starts it (a user who may open every recording: compliance or admin) unlocks
the compliance key file once, with its passphrase; the keys stay in the process's memory and
are never written anywhere. TLS belongs to a reverse proxy in front (README: "Web portal").
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import NoReturn

import click
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from callrec.cli.context import Context
from callrec.cli.passphrase import key_files, passphrase
from callrec.recorder.config import EX_CONFIG, load_for_home
from callrec.store.crypto.keys import PASSPHRASE_ENV, load_private_keys
from callrec.store.errors import AccessDenied, KeyMissing, StoreError


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as a host and port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise click.BadParameter(
            f"{text!r}: use HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080", param_hint="--listen"
        )
    return host.removeprefix("[").removesuffix("]"), int(port_text)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _fail(message: str) -> NoReturn:
    """A startup error: one line and exit code 78 (EX_CONFIG), as the appliance's daemons do."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EX_CONFIG)


@click.command("portal")
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Address to serve on. Keep it on loopback and put a TLS reverse proxy in front.",
)
@click.option(
    "--key",
    "key_paths",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Compliance key file (repeat for rotated keys). Default: $CALLREC_KEY, else [keys] private_key. "
    "Without one, calls can be browsed but not played.",
)
@click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File whose first line is the key file's passphrase. Default: $CALLREC_PASSPHRASE, else asked.",
)
@click.option(
    "--behind-tls",
    is_flag=True,
    help="Reached through a TLS reverse proxy on this host: Secure cookies, and the client address "
    "and scheme from its X-Forwarded-For / X-Forwarded-Proto (one hop).",
)
@click.option(
    "--idle-timeout",
    type=click.IntRange(1, 24 * 60),
    default=15,
    show_default=True,
    metavar="MINUTES",
    help="Log a user out after this long without a request.",
)
@click.option("--allow-remote", is_flag=True, help="Allow --listen on a non-loopback address (plain HTTP!).")
@click.option("--threads", type=click.IntRange(1, 64), default=8, show_default=True, help="Worker threads.")
@click.pass_obj
def portal(
    obj: Context,
    listen: str,
    key_paths: tuple[Path, ...],
    passphrase_file: Path | None,
    behind_tls: bool,
    idle_timeout: int,
    allow_remote: bool,
    threads: int,
) -> None:
    """Serve the web portal for supervisors (log in with `callrec users passwd`).

    Every page view, play, download and refusal is in `callrec audit list`.

    \b
    Example:
      callrec portal --key /media/usb/callrec-recording.key
      callrec portal --listen 127.0.0.1:8080 --behind-tls --passphrase-file /run/credentials/callrec.pass
    """
    host, port = parse_listen(listen)
    if not _loopback(host) and not allow_remote:
        raise click.BadParameter(
            f"{host} is not a loopback address: serve on 127.0.0.1 behind a TLS reverse proxy "
            "(or give --allow-remote to serve plain HTTP on the network)",
            param_hint="--listen",
        )
    try:
        from waitress import create_server

        from callrec.portal.app import create_app
        from callrec.portal.settings import PortalConfig
    except ImportError as exc:
        _fail(f"the portal needs Flask and waitress ({exc}): pip install 'callrec[portal]'")
    who = obj.principal()
    if not who.allows("calls.export") or who.scope_condition("c") is not None:
        obj.audit("portal.start", outcome="denied", detail={"listen": listen})
        raise AccessDenied(
            f"{who.name} ({who.role}) may not start the portal: it opens every recording, so it is for "
            "compliance or admin users"
        )
    keys: dict[str, X25519PrivateKey] = {}
    config = load_for_home(obj.home.root, obj.env)
    configured = config.private_keys
    try:
        files = key_files(key_paths, obj.env, configured)
    except KeyMissing:
        files = []
        click.echo(
            "warning: no compliance key given (--key): calls can be browsed, recordings not opened", err=True
        )
    if files:
        try:
            keys = load_private_keys(files, passphrase(passphrase_file, obj.env))
        except StoreError as exc:
            obj.audit("portal.start", outcome="failed", detail={"error": str(exc)})
            _fail(str(exc))
    os.environ.pop(PASSPHRASE_ENV, None)  # nothing started from here inherits it
    obj.audit(
        "portal.start",
        detail={
            "listen": f"{host}:{port}",
            "keys": sorted(keys),
            "behind_tls": behind_tls,
            "idle_timeout_min": idle_timeout,
        },
    )
    obj.close()  # sign the trail; the portal opens the catalogue per request

    app = create_app(
        PortalConfig(
            home=obj.home.root,
            audit_anchor=config.audit_anchor,
            storage=config.storage,
            private_keys=keys,
            secure_cookies=behind_tls,
            trusted_proxies=1 if behind_tls else 0,
            idle_timeout_s=idle_timeout * 60,
        )
    )
    try:
        server = create_server(app, host=host, port=port, threads=threads, ident="callrec")
    except OSError as exc:
        _fail(f"cannot listen on {listen}: {exc.strerror or exc}")
    where = f"[{host}]" if ":" in host else host
    bound = getattr(server, "effective_port", port)  # several sockets (a name with IPv4 and IPv6): as asked
    click.echo(f"Callrec portal on http://{where}:{bound}/ (Ctrl-C stops it)", err=True)
    sys.stderr.flush()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
