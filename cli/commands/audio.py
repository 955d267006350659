"""``callrec calls export|play|plot``: the commands that open a sealed recording.

Opening needs the compliance key file and its passphrase (see ``cli.passphrase``). Every opening
checks the catalogue row against its signature and authenticates every chunk; nothing is
written or played unless the whole recording verified. Each opening is audited.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt

from callrec.cli.context import Context
from callrec.cli.params import CALL_ID, BoundedInt
from callrec.cli.passphrase import key_option, private_keys
from callrec.decode.formats.audiofile import AudioFileError, audio_format, read_audio
from callrec.decode.formats.mp3 import Mp3Error, check_settings, mp3_chunks
from callrec.decode.formats.mp3_gapless import with_tag
from callrec.decode.formats.wav import mono_mix, wav_chunks
from callrec.recorder.config import load_for_home
from callrec.store.crypto.vault import Vault
from callrec.store.files import write_atomic

PLAYERS = ("paplay", "aplay", "ffplay -nodisp -autoexit -loglevel error -", "play -q -")


def _opened(
    obj: Context, row: dict[str, Any], key_files: tuple[Path, ...], passphrase_file: Path | None
) -> Iterator[bytes]:
    """The recording's plain bytes (verified chunk by chunk; the end is checked last)."""
    configured = load_for_home(obj.home.root, obj.env).private_keys
    keys = private_keys(key_files, passphrase_file, obj.env, configured)
    vault = Vault(obj.keys(), obj.recording_store())
    return vault.open(row, obj.catalogue().wrapped_key(int(row["id"])), keys)


def _recorded_call(obj: Context, call_id: int, action: str) -> dict[str, Any]:
    """The call's row if the user may ``action`` it and it has a recording."""
    row = obj.visible_call(call_id, action)
    if not row.get("recording_path"):
        reason = row.get("not_recorded") or row.get("error") or "the call has no media"
        raise click.ClickException(f"call {call_id} has no recording ({reason})")
    return row


def _audited(
    obj: Context, action: str, call_id: int, detail: dict[str, Any], run: Callable[[], None]
) -> None:
    """Run an opening; audit it as done, or as failed with the reason (then re-raise)."""
    try:
        run()
    except Exception as exc:
        obj.audit(action, call_ids=[call_id], outcome="failed", detail={**detail, "error": str(exc)})
        raise
    obj.audit(action, call_ids=[call_id], detail=detail)


def _frames(row: dict[str, Any]) -> int | None:
    """The recording's length in samples per channel, from the catalogue (None: not known)."""
    if row.get("recording_seconds") and row.get("sample_rate"):
        return round(float(row["recording_seconds"]) * int(row["sample_rate"]))
    return None


def _samples(plain: bytes, row: dict[str, Any]) -> tuple[npt.NDArray[np.int16], int]:
    """The recording's samples, whether it is stored as WAV or as MP3."""
    try:
        return read_audio(plain, _frames(row))
    except AudioFileError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("export")
@click.argument("call_id", metavar="ID", type=CALL_ID)
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write it."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["wav", "mp3"]),
    help="Audio format. Default: mp3 if --out ends in .mp3, else wav.",
)
@click.option("--mono", is_flag=True, help="Mix caller and callee into one channel.")
@click.option(
    "--bitrate",
    type=BoundedInt("bitrate", 1, 10_000),
    metavar="KBPS",
    help="MP3 bitrate, kbit/s (8-160 at 8 and 16 kHz). Default: 24 a channel at 8 kHz, 32 at 16 kHz.",
)
@key_option
@click.pass_obj
def calls_export(
    obj: Context,
    call_id: int,
    out: Path,
    fmt: str | None,
    mono: bool,
    bitrate: int | None,
    key_files: tuple[Path, ...],
    passphrase_file: Path | None,
) -> None:
    """Export a call's recording: stereo (left: caller, right: callee) or mono, WAV or MP3.

    The recording is unsealed with the compliance key file, checked against its signature and
    authenticated chunk by chunk; a stereo WAV export is the recorded audio byte for byte.
    Tampered recordings are refused and nothing is written.

    \b
    Example:
      callrec calls export 42 --out call-42.wav --key /media/usb/callrec-recording.key
      CALLREC_KEY=... CALLREC_PASSPHRASE=... callrec calls export 42 --out call-42.mp3 --mono
    """
    fmt = fmt or ("mp3" if out.suffix.lower() == ".mp3" else "wav")
    if bitrate is not None and fmt != "mp3":
        raise click.BadOptionUsage("bitrate", "--bitrate is for MP3 exports (--format mp3)")
    row = _recorded_call(obj, call_id, "calls.export")
    stored = obj.recording_store().local_path(row["recording_path"])
    if stored is not None and out.resolve() == stored.resolve():
        raise click.ClickException(f"{out} is the stored recording itself: choose another --out")
    channels = 1 if mono else int(row.get("channels") or 2)
    try:
        kbps = check_settings(int(row["sample_rate"]), channels, bitrate) if fmt == "mp3" else None
    except Mp3Error as exc:
        raise click.ClickException(str(exc)) from None

    def run() -> None:
        plain = _opened(obj, row, key_files, passphrase_file)
        if fmt == (row.get("recording_format") or "wav") and not mono and bitrate is None:
            if fmt == "mp3" and (frames := _frames(row)) is not None:  # stored before gapless tags
                plain = iter([with_tag(b"".join(plain), frames)])
            write_atomic(out, lambda dst: dst.writelines(plain))  # the stored format: as it is
            return
        samples, rate = _samples(b"".join(plain), row)
        samples = mono_mix(samples) if mono else samples
        chunks = mp3_chunks(samples, rate, kbps) if fmt == "mp3" else wav_chunks(samples, rate)
        try:
            write_atomic(out, lambda dst: dst.writelines(chunks))
        except Mp3Error as exc:
            raise click.ClickException(str(exc)) from None

    _audited(obj, "calls.export", call_id, {"format": fmt, "mono": mono, "out": str(out)}, run)
    layout = "mono" if channels == 1 else "stereo"
    how = f", MP3 {kbps} kbit/s" if kbps else ""
    click.echo(f"Wrote {out} ({row.get('recording_seconds')} s, {row.get('sample_rate')} Hz {layout}{how})")


@click.command("play")
@click.argument("call_id", metavar="ID", type=CALL_ID)
@click.option(
    "--player",
    metavar="COMMAND",
    help="Player reading a WAV on its stdin. Default: the first found of paplay, aplay, ffplay, play.",
)
@key_option
@click.pass_obj
def calls_play(
    obj: Context, call_id: int, player: str | None, key_files: tuple[Path, ...], passphrase_file: Path | None
) -> None:
    """Play a call's recording through an audio player (the audio never touches the disk).

    \b
    Example:
      callrec calls play 42 --key /media/usb/callrec-recording.key
      callrec calls play 42 --player "ffplay -nodisp -autoexit -"
    """
    command = shlex.split(player) if player else _find_player()
    if not command or shutil.which(command[0]) is None:
        raise click.ClickException(
            "no audio player found (looked for "
            + ", ".join(p.split()[0] for p in PLAYERS)
            + f"): install one, give --player, or export the call: callrec calls export {call_id} --out FILE"
        )
    row = _recorded_call(obj, call_id, "calls.play")

    def run() -> None:
        plain = b"".join(_opened(obj, row, key_files, passphrase_file))  # fully verified before playing
        if audio_format(plain) != "wav":  # an MP3 recording: the players read WAV on stdin
            plain = b"".join(wav_chunks(*_samples(plain, row)))
        done = subprocess.run(command, input=plain, check=False)
        if done.returncode != 0:
            raise click.ClickException(f"{command[0]} exited with status {done.returncode}")

    _audited(
        obj, "calls.play", call_id, {"player": command[0], "span_s": [0, row.get("recording_seconds")]}, run
    )


def _find_player() -> list[str]:
    for candidate in PLAYERS:
        parts = shlex.split(candidate)
        if shutil.which(parts[0]):
            return parts
    return []


@click.command("plot")
@click.argument("call_id", metavar="ID", type=CALL_ID)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the picture: PNG (SVG or PDF if --out ends so).",
)
@click.option(
    "--width",
    type=click.IntRange(300, 20000),
    default=1600,
    show_default=True,
    metavar="PX",
    help="Width in pixels.",
)
@click.option(
    "--height",
    type=click.IntRange(200, 10000),
    default=600,
    show_default=True,
    metavar="PX",
    help="Height in pixels.",
)
@click.option(
    "--from",
    "from_s",
    type=click.FloatRange(min=0),
    metavar="S",
    help="Start at S seconds into the recording.",
)
@click.option("--to", "to_s", type=click.FloatRange(min=0), metavar="S", help="End at S seconds.")
@key_option
@click.pass_obj
def calls_plot(
    obj: Context,
    call_id: int,
    out: Path,
    width: int,
    height: int,
    from_s: float | None,
    to_s: float | None,
    key_files: tuple[Path, ...],
    passphrase_file: Path | None,
) -> None:
    """Draw a call as a picture: waveforms, answer, hold, DTMF, gaps.

    Caller and callee waveforms on one time axis (seconds from the start of the recording, whose
    UTC time is in the title), with the answer, re-INVITEs (hold, resume), BYE, DTMF digits,
    pauses and stretches without media marked. Needs the key file, like an export.

    \b
    Example:
      callrec calls plot 42 --out call-42.png
      callrec calls plot 42 --out detail.png --from 30 --to 45 --width 2400
    """
    from callrec.decode.plot import (  # matplotlib: when drawing
        PlotError,
        events_in_file,
        ns_from_iso,
        plot_call,
    )

    row = _recorded_call(obj, call_id, "calls.plot")

    def run() -> None:
        samples, rate = _samples(b"".join(_opened(obj, row, key_files, passphrase_file)), row)
        start = ns_from_iso(row["recording_started_at"]) if row.get("recording_started_at") else None
        answered = row.get("answered_at")
        answered_s = (ns_from_iso(answered) - start) / 1e9 if answered and start is not None else None
        title = f"Call {call_id}: {row.get('caller') or '?'} → {row.get('callee') or '?'}, {row.get('state')}"
        events = row["events"]
        spans = json.loads(row["recorded_spans"]) if row.get("recorded_spans") else []
        if len(spans) > 1 and start is not None:  # on-demand: the file is the spans one after another
            events = events_in_file(events, spans, start)
        try:
            fig = plot_call(
                samples, rate, start_ns=start, events=events, answered_s=answered_s, width_px=width,
                height_px=height, from_s=from_s, to_s=to_s, title=title,
            )  # fmt: skip
        except PlotError as exc:
            raise click.ClickException(str(exc)) from None
        fmt = out.suffix.lower()[1:] if out.suffix.lower() in (".svg", ".pdf") else "png"
        write_atomic(out, lambda dst: fig.savefig(dst, format=fmt, dpi=fig.dpi))

    _audited(obj, "calls.plot", call_id, {"out": str(out)}, run)
    fmt = out.suffix.lower()[1:] if out.suffix.lower() in (".svg", ".pdf") else "png"
    click.echo(f"Wrote {out} ({width}x{height} {fmt.upper()})")
