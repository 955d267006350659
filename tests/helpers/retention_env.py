"""A catalogue with recordings for the retention tests: calls with classes, keys, files and holds."""

from __future__ import annotations

from calendar import timegm
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from callrec.store.catalogue.db import Catalogue
from callrec.store.catalogue.migrations import write_transaction
from callrec.store.objects.local import RecordingStore
from callrec.store.retention.holds import Holds
from callrec.store.retention.policy import RetentionClass, parse_classes, parse_duration, retention_fields
from callrec.store.retention.purge import Retention

SEC = 1_000_000_000
DAY = 86_400 * SEC
T0 = 1_795_874_523_120_000_000  # 2026-11-28T14:02:03.120Z
ROOT = Path(__file__).resolve().parents[2]
CLASSES = parse_classes({"short": "1d", "month": "1m", "year": "1y", "default": "30d"})
SYSTEMD = ROOT / "systemd"


def ns(text: str) -> int:
    """``2024-02-29T10:00:00`` (UTC) -> nanoseconds."""
    moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return timegm(moment.timetuple()) * SEC + moment.microsecond * 1000


def cls(text: str) -> RetentionClass:
    return RetentionClass("x", parse_duration(text))


# --- a catalogue with recordings ---------------------------------------------------------------


@dataclass
class Env:
    root: Path
    cat: Catalogue
    store: RecordingStore
    retention: Retention
    holds: Holds

    @property
    def conn(self) -> Any:
        return self.cat.db.conn


def make_env(root: Path) -> Env:
    root.mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    cat = Catalogue(root / "catalogue.db", clock=lambda: T0)
    store = RecordingStore(root / "home")
    return Env(root, cat, store, Retention(cat.db, store), Holds(cat.db))


def add(
    env: Env,
    name: str,
    started_ns: int,
    retention: str | None = "short",
    *,
    recording: bool = True,
    key: bool = True,
    **overrides: Any,
) -> int:
    """A call with personal data, legs and events; with ``recording`` a small file and a key."""
    call: dict[str, Any] = {
        "call_id": f"{name}@pbx",
        "started_ns": started_ns,
        "caller": f"+35291{name}",
        "callee": "+352200",
        "caller_uri": f"sip:+35291{name}@pbx",
        "callee_uri": "sip:200@pbx",
        "request_uri": "sip:200@pbx",
        "caller_display": f"Person {name}",
        "callee_display": "Support",
        "notes": f"note about {name}",
        "queue": "support",
    }
    if retention is not None:
        call.update(retention_fields(started_ns, CLASSES[retention]))
    call.update(overrides)
    if recording:
        stored = env.store.write(f"recordings/{name}.wav", [f"RIFF audio {name}".encode()])
        call.update(
            recording_path=stored.relative_path,
            recording_bytes=stored.bytes,
            recording_sha256=stored.sha256,
            recording_uuid=f"uuid-{name}",
            plaintext_sha256="ab" * 32,
            key_fingerprint="fp1",
        )
    legs = [{"direction": "caller->callee", "src": "10.0.0.1:4000", "dst": "10.0.0.2:5000", "codec": "PCMA"}]
    events = [
        {
            "ts_ns": started_ns,
            "kind": "sip",
            "summary": "INVITE",
            "sender": "caller",
            "detail": "sdp 10.0.0.1",
        },
        {"ts_ns": started_ns + SEC, "kind": "dtmf", "summary": "7", "sender": "caller", "detail": "100 ms"},
    ]
    call_pk = env.cat.add_call(call, legs, events).id
    if recording and key:
        with write_transaction(env.cat.db):
            env.conn.execute(
                "INSERT INTO recording_keys (call, key_fingerprint, wrapped_key) VALUES (?, ?, ?)",
                (call_pk, "fp1", f"WRAPPEDKEY-{name}-".encode() * 3),
            )
    return call_pk


def dump(env: Env) -> dict[str, Any]:
    """Every row of the tables retention touches, and the recording files."""
    tables = ["calls", "legs", "events", "recording_keys", "holds", "tombstones"]
    rows = {t: env.conn.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    files = sorted(str(p.relative_to(env.store.root)) for p in env.store.root.rglob("*") if p.is_file())
    return {**rows, "files": files}


def tombstone(env: Env, call: int) -> dict[str, Any] | None:
    rows = list(env.cat.db.query("SELECT * FROM tombstones WHERE call = ?", [call]))
    return rows[0] if rows else None


def key_exists(env: Env, call: int) -> bool:
    return env.conn.execute("SELECT 1 FROM recording_keys WHERE call = ?", (call,)).fetchone() is not None


class Crash(Exception):
    """The process dies here."""


def crash_at(call: int, step: str) -> Any:
    def hook(c: int, s: str) -> None:
        if (c, s) == (call, step):
            raise Crash(f"{c} {s}")

    return hook
