"""How calls look on the command line: the JSON contract, CSV and the table."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from callrec.store.objects.base import ObjectStore

LEG_FIELDS = (
    "direction",
    "codec",
    "packets",
    "expected",
    "lost",
    "duplicates",
    "late",
    "ssrc",
    "src",
    "dst",
    "first_media_at",
    "last_media_at",
    "max_gap_ms",
    "jitter_mean_ms",
    "jitter_max_ms",
    "rtcp_packets",
    "mos",
)
# What the catalogue adds to a call (queue, retention, notes, the deciding rule), shown in JSON and text.
STORE_FIELDS = (
    "queue", "retention_class", "expires_at", "notes", "rule", "rule_reason", "consent", "consent_at",
)  # fmt: skip
# event kinds named in the text view (a SIP message or a key press speaks for itself)
NAMED_KINDS = frozenset({"recording", "pause", "consent", "header"})
CALL_FIELDS = (
    "id",
    "call_id",
    "started_at",
    "answered_at",
    "ended_at",
    "duration_s",
    "talk_s",
    "caller",
    "callee",
    "caller_display",
    "callee_display",
    "caller_uri",
    "callee_uri",
    "request_uri",
    "direction",
    "state",
    "end_reason",
    "final_status",
    "codecs",
    "source",
    "error",
    "not_recorded",
    *STORE_FIELDS,
)
CSV_FIELDS = (
    "id",
    "call_id",
    "started_at",
    "answered_at",
    "ended_at",
    "duration_s",
    "caller",
    "callee",
    "direction",
    "queue",
    "state",
    "codecs",
    "recording_seconds",
    "recording_path",
)


def call_json(row: dict[str, Any], store: ObjectStore, *, events: bool = False) -> dict[str, Any]:
    """The JSON object of one call: the field names and types users' scripts rely on. The
    recording's ``path`` is where ``store`` keeps it (a file, or an ``s3://`` url)."""
    out: dict[str, Any] = {}
    for name in CALL_FIELDS:
        if name == "codecs":
            out[name] = [c for c in (row.get("codecs") or "").split(",") if c]
        elif name == "talk_s":
            out[name] = _talk_seconds(row)
        else:
            out[name] = row.get(name)
    out["legs"] = [{k: leg.get(k) for k in LEG_FIELDS} for leg in row.get("legs", [])]
    if row.get("recording_path"):
        out["recording"] = {
            "path": store.location(row["recording_path"]),
            "sample_rate": row.get("sample_rate"),
            "channels": row.get("channels"),
            "seconds": row.get("recording_seconds"),
            "bytes": row.get("recording_bytes"),
            "sha256": row.get("recording_sha256"),
            "audio_sha256": row.get("plaintext_sha256"),
            "sealed": bool(row.get("recording_uuid")),
            "key_fingerprint": row.get("key_fingerprint"),
            "format": row.get("recording_format") or "wav",
            "spans": _json_list(row.get("recorded_spans")),
        }
    else:
        out["recording"] = None
    out["paused_spans"] = _json_list(row.get("paused_spans"))
    if events:
        out["events"] = [
            {k: e.get(k) for k in ("at", "kind", "summary", "sender", "detail")}
            for e in row.get("events", [])
        ]
    return out


def _json_list(text: Any) -> list[Any]:
    """A JSON list column (spans), ``[]`` when empty or unreadable."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _spans_text(spans: list[Any]) -> str:
    parts = []
    for span in spans:
        if isinstance(span, dict):
            text = f"{str(span.get('from', ''))[11:23]}-{str(span.get('to', ''))[11:23]}"
            if span.get("by"):
                text += f" ({span['by']})"
            parts.append(text)
    return ", ".join(parts)


def _talk_seconds(row: dict[str, Any]) -> float | None:
    from datetime import datetime

    answered, ended = row.get("answered_at"), row.get("ended_at")
    if not answered or not ended:
        return None
    a = datetime.fromisoformat(answered.replace("Z", "+00:00"))
    e = datetime.fromisoformat(ended.replace("Z", "+00:00"))
    return round((e - a).total_seconds(), 3)


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def calls_csv(rows: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k) for k in CSV_FIELDS})
    return buf.getvalue()


def calls_table(rows: Sequence[dict[str, Any]]) -> str:
    headers = ("ID", "STARTED (UTC)", "DURATION", "CALLER", "CALLEE", "STATE", "CODECS", "RECORDING")
    lines = [headers]
    for r in rows:
        started = (r.get("started_at") or "")[:19].replace("T", " ")
        rec = f"{r['recording_seconds']:.1f} s" if r.get("recording_path") else "-"
        lines.append(
            (
                str(r["id"]),
                started,
                f"{r.get('duration_s') or 0:.1f} s",
                r.get("caller") or "",
                r.get("callee") or "",
                r.get("state") or "",
                r.get("codecs") or "",
                rec,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def call_text(call: dict[str, Any]) -> str:
    """``calls show`` without --json: metadata, legs and events, readable."""
    out = []
    for key in (
        "id",
        "call_id",
        "state",
        "end_reason",
        "caller",
        "callee",
        "request_uri",
        "started_at",
        "answered_at",
        "ended_at",
        "duration_s",
        "talk_s",
        "codecs",
        "source",
        "error",
        "not_recorded",
        *STORE_FIELDS,
    ):
        value = call.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(value)
        out.append(f"{key + ':':<13} {value}")
    rec = call.get("recording")
    if rec:
        out.append(
            f"{'recording:':<13} {rec['path']} ({rec['seconds']} s, {rec['sample_rate']} Hz, "
            f"{rec['channels']} channels, "
            f"{rec.get('format', 'wav').upper()}, "
            f"{'sealed to key ' + str(rec['key_fingerprint']) if rec['sealed'] else 'plain'})"
        )
        if rec.get("spans"):
            out.append(f"{'recorded:':<13} {_spans_text(rec['spans'])}")
    else:
        out.append(f"{'recording:':<13} none")
    if call.get("paused_spans"):
        out.append(f"{'paused:':<13} {_spans_text(call['paused_spans'])}")
    out.append("legs:")
    for leg in call.get("legs", []):
        out.append(
            f"  {leg['direction']:<15} {leg.get('codec') or '-':<8} packets {leg.get('packets')}  "
            f"lost {leg.get('lost')}  mos {leg.get('mos') if leg.get('mos') is not None else '-'}  "
            f"ssrc {leg.get('ssrc') or '-'}  "
            f"{leg.get('src') or '?'} -> {leg.get('dst') or '?'}"
        )
    if call.get("events"):
        out.append("events:")
        for e in call["events"]:
            sender = f"{e['sender']}: " if e.get("sender") else ""
            detail = f"  ({e['detail']})" if e.get("detail") else ""
            kind = f"{e['kind']} " if e.get("kind") in NAMED_KINDS else ""
            out.append(f"  {(e.get('at') or '')[11:23]}  {sender}{kind}{e['summary']}{detail}")
    return "\n".join(out)
