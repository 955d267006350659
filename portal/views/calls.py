"""The calls pages: the list (filters, search, sorting, pages), one call, its picture, its audio.

Each route asks :class:`portal.gate.Gate` by action, exactly as the command line does: listing is
``calls.list`` (``calls.search`` with words), the call page ``calls.show``, the audio
``calls.play``, the picture ``calls.plot``, downloads ``calls.export``. A supervisor's lists are
narrowed by their scope in SQL, and one call outside it is refused. Everything is audited.
"""

from __future__ import annotations

import io
import json
import logging
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, render_template, request
from werkzeug.wrappers.response import Response as BaseResponse

from callrec.decode.formats.mp3 import check_settings, mp3_chunks
from callrec.decode.formats.wav import read_wav
from callrec.portal.audio import RangeNotSatisfiable, parse_range, wav_seconds
from callrec.portal.state import gate, state
from callrec.store.catalogue.query import DIRECTIONS, CallFilter, where
from callrec.store.crypto.vault import Vault
from callrec.store.errors import InvalidArgument, KeyMissing, NotFound

log = logging.getLogger(__name__)

blueprint = Blueprint("calls", __name__)

# sortable columns: query value -> (SQL over calls AS c, header text)
SORTS: Mapping[str, tuple[str, str]] = {
    "started": ("c.started_ns", "Started (UTC)"),
    "duration": ("c.duration_s", "Duration"),
    "caller": ("c.caller", "Caller"),
    "callee": ("c.callee", "Callee"),
    "direction": ("c.direction", "Direction"),
    "queue": ("c.queue", "Queue"),
    "state": ("c.state", "State"),
    "recording": ("c.recording_seconds", "Recording"),
}
PAGE_SIZES = (25, 50, 100)
CHUNK = 256 * 1024


@dataclass(frozen=True)
class ListQuery:
    """The calls list's query string, checked."""

    spec: CallFilter
    sort: str
    descending: bool
    page: int
    per_page: int
    shown: dict[str, str]


def parse_list_query(
    args: Mapping[str, str], scope: tuple[str, list[Any]] | None, default_size: int
) -> ListQuery:
    """The filters, sort and page of ``args``; :class:`InvalidArgument` names a bad one."""
    shown = {
        k: args.get(k, "").strip()
        for k in (
            "since",
            "until",
            "number",
            "direction",
            "queue",
            "min_duration",
            "recorded",
            "q",
            "sort",
            "order",
            "page",
            "per_page",
        )
    }
    direction = shown["direction"] or None
    if direction is not None and direction not in DIRECTIONS:
        raise InvalidArgument(f"unknown direction {direction!r}: choose one of {', '.join(DIRECTIONS)}")
    choices: dict[str, bool | None] = {"": None, "yes": True, "no": False}
    if shown["recorded"] not in choices:
        raise InvalidArgument("recorded must be yes, no or empty (either)")
    recorded = choices[shown["recorded"]]
    min_duration = _number(shown["min_duration"], "minimum duration")
    sort = shown["sort"] or "started"
    if sort not in SORTS:
        raise InvalidArgument(f"cannot sort by {sort!r}: choose one of {', '.join(SORTS)}")
    order = shown["order"] or "desc"
    if order not in ("asc", "desc"):
        raise InvalidArgument("order must be asc or desc")
    page = int(_number(shown["page"], "page") or 1)
    per_page = int(_number(shown["per_page"], "page size") or default_size)
    if page < 1 or per_page not in (*PAGE_SIZES, default_size):
        raise InvalidArgument(
            f"page must be 1 or more and page size one of {', '.join(map(str, PAGE_SIZES))}"
        )
    spec = CallFilter(
        since=shown["since"] or None,
        until=shown["until"] or None,
        number=shown["number"] or None,
        text=shown["q"] or None,
        direction=direction,
        queue=shown["queue"] or None,
        min_duration_s=min_duration,
        recorded=recorded,
        scope=scope,
    )
    return ListQuery(spec, sort, order == "desc", page, per_page, shown)


def _number(text: str, what: str) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(f"{what} must be a number, not {text!r}") from None
    if not 0 <= value < 1e9:
        raise InvalidArgument(f"{what} must be 0 or more")
    return value


def search_calls(query: ListQuery) -> tuple[list[dict[str, Any]], int]:
    """One page of the calls ``query`` selects, sorted, and how many there are in all."""
    catalogue = gate().catalogue()
    condition = where(catalogue.db.conn, query.spec)
    if condition is None:
        return [], 0
    total = catalogue.count(spec=query.spec)
    column = SORTS[query.sort][0]
    way = "DESC" if query.descending else "ASC"
    sql = (
        f"SELECT c.* FROM calls AS c WHERE {condition[0]} ORDER BY {column} {way} NULLS LAST, c.id {way} "
        "LIMIT ? OFFSET ?"
    )
    params = [*condition[1], query.per_page, (query.page - 1) * query.per_page]
    return list(catalogue.db.query(sql, params)), total


@blueprint.route("/calls")
def calls_list() -> tuple[str, int] | str:
    args = request.args
    action = "calls.search" if args.get("q", "").strip() else "calls.list"
    who = gate().allow(action)
    try:
        query = parse_list_query(args, who.scope_condition("c"), state().config.page_size)
        rows, total = search_calls(query)
    except InvalidArgument as exc:
        shown = {k: v for k, v in args.items() if isinstance(v, str)}
        return render_template(
            "calls.html",
            error=str(exc),
            rows=[],
            total=0,
            shown=shown,
            query=None,
            sorts=SORTS,
            directions=DIRECTIONS,
            page_sizes=PAGE_SIZES,
            pages=0,
        ), 400
    filters = {k: v for k, v in query.shown.items() if v}
    gate().audit(
        action, call_ids=[int(r["id"]) for r in rows], detail={"query": filters, "results": len(rows)}
    )
    pages = max(1, -(-total // query.per_page))
    return render_template(
        "calls.html",
        error=None,
        rows=rows,
        total=total,
        shown=query.shown,
        query=query,
        sorts=SORTS,
        directions=DIRECTIONS,
        page_sizes=PAGE_SIZES,
        pages=pages,
    )


@blueprint.route("/calls/<int:call_id>")
def call_page(call_id: int) -> str:
    row = gate().visible_call(call_id, "calls.show")
    gate().audit("calls.show", call_ids=[call_id])
    who = gate().who()
    portal = state()
    consent = {k: v for k, v in row.items() if k.startswith("consent") and v not in (None, "")}
    return render_template(
        "call.html",
        call=row,
        consent=consent,
        recorded_spans=_spans(row.get("recorded_spans")),
        paused_spans=_spans(row.get("paused_spans")),
        can_play=who.allows("calls.play"),
        can_export=who.allows("calls.export"),
        can_plot=who.allows("calls.plot"),
        keys_unlocked=bool(portal.config.private_keys),
        recorded=bool(row.get("recording_path")),
    )


def _opened_audio(row: Mapping[str, Any]) -> bytes:
    """The recording's plain WAV bytes, opened (fully verified) once and then kept in memory."""
    if not row.get("recording_path"):
        reason = row.get("not_recorded") or row.get("error") or "the call has no media"
        raise NotFound(f"call {row.get('id')} has no recording ({reason})")
    portal = state()
    if not portal.config.private_keys:
        raise KeyMissing("the portal was started without the compliance key (callrec portal --key)")
    call_id = int(row["id"])

    def open_() -> bytes:
        vault = Vault(gate().keys(), portal.recordings)
        return vault.open_bytes(row, gate().catalogue().wrapped_key(call_id), portal.config.private_keys)

    data, _cached = portal.audio.get(
        f"{call_id}:{row.get('plaintext_sha256') or row.get('recording_sha256')}", open_
    )
    return data


def _wav_layout(data: bytes) -> tuple[int, int]:
    """Where the samples start in a WAV file and its bytes per second (from the ``fmt`` chunk)."""
    at = data.find(b"data", 12, 4096)
    header = at + 8 if at >= 0 else 44
    fmt = data.find(b"fmt ", 12, 4096)
    byte_rate = struct.unpack_from("<I", data, fmt + 16)[0] if fmt >= 0 and len(data) >= fmt + 20 else 0
    return header, int(byte_rate)


def _chunks(view: memoryview) -> Iterator[bytes]:
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start : start + CHUNK])


@blueprint.route("/calls/<int:call_id>/audio.wav", methods=["GET", "HEAD"])
def call_audio(call_id: int) -> BaseResponse:
    row = gate().visible_call(call_id, "calls.play", detail={"range": request.headers.get("Range", "")[:100]})
    try:
        data = _opened_audio(row)
    except Exception as exc:
        gate().audit("calls.play", call_ids=[call_id], outcome="failed", detail={"error": str(exc)})
        log.warning("call %d could not be played: %s", call_id, exc)
        raise
    total = len(data)
    header, byte_rate = _wav_layout(data)
    try:
        wanted = parse_range(request.headers.get("Range"), total)
    except RangeNotSatisfiable:
        gate().audit(
            "calls.play",
            call_ids=[call_id],
            outcome="failed",
            detail={"range": request.headers.get("Range", "")[:100], "error": "range not satisfiable"},
        )
        response = Response(status=416)
        response.headers["Content-Range"] = f"bytes */{total}"
        return response
    first, last = (0, total - 1) if wanted is None else (wanted.first, wanted.last)
    span = [wav_seconds(first, header, byte_rate), wav_seconds(last + 1, header, byte_rate)]
    if request.method == "GET":
        gate().audit(
            "calls.play", call_ids=[call_id], detail={"bytes": [first, last], "of": total, "span_s": span}
        )
    body = memoryview(data)[first : last + 1]
    response = Response(
        _chunks(body) if request.method == "GET" else b"",
        status=200 if wanted is None else 206,
        mimetype="audio/wav",
        direct_passthrough=True,
    )
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["Content-Length"] = str(len(body))
    if wanted is not None:
        response.headers["Content-Range"] = wanted.content_range
    return response


@blueprint.route("/calls/<int:call_id>/listened", methods=["POST"])
def call_listened(call_id: int) -> tuple[str, int]:
    """What the player reports it played (``start``..``end`` seconds), for the audit trail."""
    row = gate().visible_call(call_id, "calls.play")
    try:
        start, end = float(request.form["start"]), float(request.form["end"])
    except (KeyError, ValueError):
        raise InvalidArgument("give start and end in seconds") from None
    length = float(row.get("recording_seconds") or 0) + 1
    if not 0 <= start <= end <= length:
        raise InvalidArgument(f"a span must lie within the recording (0-{length:g} s)")
    gate().audit("calls.play", call_ids=[call_id], detail={"listened_s": [round(start, 3), round(end, 3)]})
    return "", 204


@blueprint.route("/calls/<int:call_id>/waveform.png")
def call_waveform(call_id: int) -> BaseResponse:
    from callrec.decode.plot import ns_from_iso, plot_call  # matplotlib: only when drawing

    row = gate().visible_call(call_id, "calls.plot")
    portal = state()
    key = f"{call_id}:{row.get('plaintext_sha256') or row.get('recording_sha256')}"
    with portal.pictures_lock:
        picture = portal.pictures.get(key)
    if picture is None:
        try:
            samples, rate = read_wav(io.BytesIO(_opened_audio(row)))
        except Exception as exc:
            gate().audit("calls.plot", call_ids=[call_id], outcome="failed", detail={"error": str(exc)})
            raise
        start = ns_from_iso(row["recording_started_at"]) if row.get("recording_started_at") else None
        answered = row.get("answered_at")
        answered_s = (ns_from_iso(answered) - start) / 1e9 if answered and start is not None else None
        title = f"Call {call_id}: {row.get('caller') or '?'} → {row.get('callee') or '?'}"
        fig = plot_call(
            samples,
            rate,
            start_ns=start,
            events=row["events"],
            answered_s=answered_s,
            width_px=1200,
            height_px=420,
            title=title,
        )
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=fig.dpi)
        picture = out.getvalue()
        with portal.pictures_lock:
            if len(portal.pictures) >= 64:
                portal.pictures.pop(next(iter(portal.pictures)))
            portal.pictures[key] = picture
    gate().audit("calls.plot", call_ids=[call_id], detail={"via": "portal"})
    return Response(picture, mimetype="image/png")


@blueprint.route("/calls/<int:call_id>/download")
def call_download(call_id: int) -> BaseResponse:
    fmt = request.args.get("format", "wav")
    if fmt not in ("wav", "mp3"):
        raise InvalidArgument("format must be wav or mp3")
    row = gate().visible_call(call_id, "calls.export", detail={"format": fmt})
    try:
        data = _opened_audio(row)
        if fmt == "mp3":
            samples, rate = read_wav(io.BytesIO(data))
            kbps = check_settings(rate, samples.shape[1] if samples.ndim == 2 else 1, None)
            body: Any = mp3_chunks(samples, rate, kbps)
        else:
            body = _chunks(memoryview(data))
    except Exception as exc:
        gate().audit(
            "calls.export", call_ids=[call_id], outcome="failed", detail={"format": fmt, "error": str(exc)}
        )
        raise
    gate().audit("calls.export", call_ids=[call_id], detail={"format": fmt, "via": "portal"})
    response = Response(body, mimetype="audio/mpeg" if fmt == "mp3" else "audio/wav", direct_passthrough=True)
    if fmt == "wav":
        response.headers["Content-Length"] = str(len(data))
    response.headers["Content-Disposition"] = f'attachment; filename="call-{call_id}.{fmt}"'
    return response


def _spans(text: object) -> list[dict[str, str]]:
    """A spans column (JSON list of ``from``/``to``/``by``) as rows for the page; [] when empty."""
    if not isinstance(text, str) or not text:
        return []
    try:
        spans = json.loads(text)
    except ValueError:
        return []
    return [
        {"from": str(s.get("from", "")), "to": str(s.get("to", "")), "by": str(s.get("by", ""))}
        for s in spans
        if isinstance(s, dict)
    ]
