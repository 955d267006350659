"""``callrec calls``: search, inspect, export and picture recorded calls."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, cast

import click
import numpy as np
import numpy.typing as npt

from cli.context import Context
from cli.output import call_json, call_text, calls_csv, calls_table, dumps
from decode.mp3 import Mp3Error, check_settings, mp3_chunks
from decode.wav import mono_mix, read_wav, wav_chunks
from store.errors import StoreError

STATES = ("setup", "early", "answered", "completed", "cancelled", "rejected", "redirected", "failed")


@click.group()
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
    "--format",
    "fmt",
    type=click.Choice(["wav", "mp3"]),
    help="Audio format. Default: mp3 if --out ends in .mp3, else wav.",
)
@click.option("--mono", is_flag=True, help="Mix caller and callee into one channel.")
@click.option(
    "--bitrate",
    type=int,
    metavar="KBPS",
    help="MP3 bitrate, kbit/s (8-160 at 8 and 16 kHz). Default: 24 a channel at 8 kHz, 32 at 16 kHz.",
)
@click.pass_obj
def calls_export(
    obj: Context, call_id: int, out: Path, fmt: str | None, mono: bool, bitrate: int | None
) -> None:
    """Export a call's recording: stereo (left: caller, right: callee) or mono, WAV or MP3.

    The file is checked against its SHA-256 in the catalogue; a stereo WAV export is the stored
    file byte for byte.

    \b
    Example:
      callrec calls export 42 --out call-42.wav
      callrec calls export 42 --out call-42.mp3 --mono --bitrate 32
    """
    fmt = fmt or ("mp3" if out.suffix.lower() == ".mp3" else "wav")
    if bitrate is not None and fmt != "mp3":
        raise click.BadOptionUsage("bitrate", "--bitrate is for MP3 exports (--format mp3)")
    row = _recorded_call(obj, call_id, out)
    channels = 1 if mono else int(row.get("channels") or 2)
    try:
        kbps = check_settings(int(row["sample_rate"]), channels, bitrate) if fmt == "mp3" else None
        if fmt == "wav" and not mono:
            with obj.home.recording_store().open(row["recording_path"]) as src:
                _copy_verified(src, out, row.get("recording_sha256"))
        else:
            samples, rate = _read_verified(obj, row)
            samples = mono_mix(samples) if mono else samples
            chunks = mp3_chunks(samples, rate, kbps) if fmt == "mp3" else wav_chunks(samples, rate)
            _write_atomic(out, lambda dst: dst.writelines(chunks))
    except Mp3Error as exc:
        raise click.ClickException(str(exc)) from None
    layout = "mono" if channels == 1 else "stereo"
    how = f", MP3 {kbps} kbit/s" if kbps else ""
    click.echo(f"Wrote {out} ({row.get('recording_seconds')} s, {row.get('sample_rate')} Hz {layout}{how})")


@calls.command("plot")
@click.argument("call_id", metavar="ID", type=int)
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
@click.pass_obj
def calls_plot(
    obj: Context, call_id: int, out: Path, width: int, height: int, from_s: float | None, to_s: float | None
) -> None:
    """Draw a call as a picture: waveforms, answer, hold, DTMF, gaps.

    Caller and callee waveforms on one time axis (seconds from the start of the recording, whose
    UTC time is in the title), with the answer, re-INVITEs (hold, resume), BYE, DTMF digits,
    pauses and stretches without media marked.

    \b
    Example:
      callrec calls plot 42 --out call-42.png
      callrec calls plot 42 --out detail.png --from 30 --to 45 --width 2400
    """
    from decode.plot import PlotError, ns_from_iso, plot_call  # matplotlib: only when drawing

    row = _recorded_call(obj, call_id, out)
    samples, rate = _read_verified(obj, row)
    start = ns_from_iso(row["recording_started_at"]) if row.get("recording_started_at") else None
    answered = row.get("answered_at")
    answered_s = (ns_from_iso(answered) - start) / 1e9 if answered and start is not None else None
    title = f"Call {call_id}: {row.get('caller') or '?'} → {row.get('callee') or '?'}, {row.get('state')}"
    try:
        fig = plot_call(
            samples,
            rate,
            start_ns=start,
            events=row["events"],
            answered_s=answered_s,
            width_px=width,
            height_px=height,
            from_s=from_s,
            to_s=to_s,
            title=title,
        )
    except PlotError as exc:
        raise click.ClickException(str(exc)) from None
    fmt = out.suffix.lower()[1:] if out.suffix.lower() in (".svg", ".pdf") else "png"
    _write_atomic(out, lambda dst: fig.savefig(dst, format=fmt, dpi=fig.dpi))
    click.echo(f"Wrote {out} ({width}x{height} {fmt.upper()})")


def _recorded_call(obj: Context, call_id: int, out: Path) -> dict[str, Any]:
    """The call's catalogue row, if it has a recording that ``out`` would not overwrite."""
    catalogue = obj.catalogue()
    try:
        row = catalogue.get_call(call_id)
    finally:
        catalogue.close()
    if not row.get("recording_path"):
        reason = row.get("error") or "the call has no media"
        raise click.ClickException(f"call {call_id} has no recording ({reason})")
    if out.resolve() == obj.home.recording_store().path_of(row["recording_path"]).resolve():
        raise click.ClickException(f"{out} is the stored recording itself: choose another --out")
    return row


class _HashingReader:
    """A file's ``read`` that hashes what it returns: the samples decoded are the bytes checked."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.digest = raw, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.digest.update(data)
        return data


def _read_verified(obj: Context, row: dict[str, Any]) -> tuple[npt.NDArray[np.int16], int]:
    """The stored recording's samples and rate, after its bytes matched the catalogue's sha256."""
    failure: Exception | None = None
    with obj.home.recording_store().open(row["recording_path"]) as raw:
        src = _HashingReader(raw)
        try:
            samples, rate = read_wav(cast(BinaryIO, src))
        except (wave.Error, ValueError, EOFError) as exc:
            failure = exc
        while src.read(1 << 20):
            pass
    _check_digest(src.digest.hexdigest(), row.get("recording_sha256"))
    if failure is not None:
        raise click.ClickException(f"recording {row['recording_path']} is not a 16-bit WAV file: {failure}")
    return samples, rate


def _check_digest(actual: str, expected: str | None) -> None:
    if expected and actual != expected:
        raise StoreError("recording file does not match its checksum in the catalogue: not exported")


def _copy_verified(src: BinaryIO, out: Path, sha256: str | None) -> None:
    def copy(dst: BinaryIO) -> None:
        digest = hashlib.sha256()
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
        _check_digest(digest.hexdigest(), sha256)

    _write_atomic(out, copy)


def _write_atomic(out: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write`` into a temp file next to ``out``, then rename it into place: on any error (a
    checksum, the disk) no partial file is left and an existing ``out`` is untouched."""
    out_dir = out.parent if str(out.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as dst:
            write(dst)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
