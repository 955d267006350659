"""``callrec keys``: the recording key pair (X25519) and the appliance's signing key (Ed25519)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from callrec.cli.context import Context
from callrec.cli.output import dumps
from callrec.cli.passphrase import passphrase

_PRIVATE_KEY = click.option(
    "--private-key",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Where the recording PRIVATE key is written, passphrase-protected. Keep it off the appliance.",
)
_PASSPHRASE_FILE = click.option(
    "--passphrase-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File whose first line is the passphrase. Default: $CALLREC_PASSPHRASE, else a prompt.",
)


@click.group()
def keys() -> None:
    """Create, rotate and show the keys recordings are sealed and signed with.

    The appliance keeps only the recording PUBLIC key (it can seal, never open) and its signing
    key; the private key goes to a passphrase-protected file that compliance keeps elsewhere.

    \b
    Example:
      callrec keys init --private-key /media/usb/callrec-recording.key
      callrec keys show
    """


@keys.command("init")
@_PRIVATE_KEY
@_PASSPHRASE_FILE
@click.pass_obj
def keys_init(obj: Context, private_key: Path, passphrase_file: Path | None) -> None:
    """Create the recording key pair and the signing key pair (once per appliance).

    \b
    Example:
      CALLREC_PASSPHRASE=... callrec keys init --private-key /media/usb/callrec-recording.key
    """
    obj.catalogue(create=True)
    obj.allow("keys.manage")
    secret = passphrase(passphrase_file, obj.env, confirm=True)
    info = obj.keys().init(private_key, secret, time.time_ns())
    obj.audit(
        "keys.init",
        detail={"recording_key": info.recording.fingerprint, "private_key_file": str(private_key)},
    )
    click.echo(f"Recording key {info.recording.fingerprint} created; private key written to {private_key}")
    click.echo(f"Signing key {obj.keys().signing_fingerprint()}")


@keys.command("rotate")
@_PRIVATE_KEY
@_PASSPHRASE_FILE
@click.pass_obj
def keys_rotate(obj: Context, private_key: Path, passphrase_file: Path | None) -> None:
    """Start a new recording key for new recordings; old recordings keep theirs.

    If the private key file exists, the new key is added to it (same passphrase); otherwise a
    new file is written. Keep every key file as long as recordings sealed with it are kept.

    \b
    Example:
      callrec keys rotate --private-key /media/usb/callrec-recording.key
    """
    obj.allow("keys.manage")
    secret = passphrase(passphrase_file, obj.env, confirm=not private_key.exists())
    info = obj.keys().rotate(private_key, secret, time.time_ns())
    obj.audit(
        "keys.rotate",
        detail={"recording_key": info.recording.fingerprint, "private_key_file": str(private_key)},
    )
    click.echo(f"Recording key {info.recording.fingerprint} is now current; private key in {private_key}")


@keys.command("show")
@click.option("--json", "as_json", is_flag=True, help="JSON object.")
@click.pass_obj
def keys_show(obj: Context, as_json: bool) -> None:
    """Print the fingerprints of the recording keys (current marked) and the signing key.

    \b
    Example:
      callrec keys show --json | jq .current
    """
    obj.allow("keys.manage")
    directory = obj.keys()
    recording = directory.recording_keys()
    current = directory.current_recording_key().fingerprint
    signing = directory.signing_fingerprint()
    obj.audit("keys.show")
    if as_json:
        listed = [
            {"fingerprint": k.fingerprint, "created_ns": k.created_ns, "current": k.fingerprint == current}
            for k in recording
        ]
        click.echo(dumps({"current": current, "recording_keys": listed, "signing_key": signing}))
        return
    for key in recording:
        mark = "current" if key.fingerprint == current else "old"
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.created_ns // 1_000_000_000))
        click.echo(f"recording {key.fingerprint}  {created}  {mark}")
    click.echo(f"signing   {signing}")
