"""The catalogue's schema, step by step: :data:`MIGRATIONS` (applied by :mod:`store.catalogue.migrations`).

Append new steps; never edit or renumber one that has shipped.
"""

from __future__ import annotations

from callrec.store.catalogue.migrations import Migration, sql_migration

_FTS_COLUMNS = "caller, callee, caller_display, callee_display, request_uri"
_NUMBER_COLUMNS = "caller, callee"


def _new(columns: str) -> str:
    return ", ".join(f"new.{name.strip()}" for name in columns.split(","))


def _old(columns: str) -> str:
    return ", ".join(f"old.{name.strip()}" for name in columns.split(","))


_V1 = sql_migration(
    """
    CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL,
        started_at TEXT NOT NULL,
        answered_at TEXT,
        ended_at TEXT,
        started_ns INTEGER NOT NULL,
        duration_s REAL,
        caller TEXT,
        callee TEXT,
        caller_uri TEXT,
        callee_uri TEXT,
        request_uri TEXT,
        caller_display TEXT,
        callee_display TEXT,
        direction TEXT NOT NULL DEFAULT 'unknown',
        state TEXT,
        end_reason TEXT,
        final_status INTEGER,
        codecs TEXT,
        source TEXT,
        error TEXT,
        recording_path TEXT,
        recording_bytes INTEGER,
        recording_sha256 TEXT,
        sample_rate INTEGER,
        channels INTEGER,
        recording_seconds REAL,
        recording_started_at TEXT,
        imported_at TEXT NOT NULL
    )
    """,
    # the unique key of a call; also serves lookups by call_id alone (leftmost column)
    "CREATE UNIQUE INDEX calls_call_id_started ON calls (call_id, started_ns)",
    "CREATE INDEX calls_started ON calls (started_ns)",
    "CREATE INDEX calls_caller ON calls (caller)",
    "CREATE INDEX calls_callee ON calls (callee)",
    "CREATE INDEX calls_state ON calls (state, started_ns)",
    """
    CREATE TABLE legs (
        id INTEGER PRIMARY KEY,
        call INTEGER NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
        direction TEXT NOT NULL,
        codec TEXT,
        packets INTEGER,
        expected INTEGER,
        lost INTEGER,
        duplicates INTEGER,
        late INTEGER,
        ssrc TEXT,
        src TEXT,
        dst TEXT,
        first_media_at TEXT,
        last_media_at TEXT,
        max_gap_ms REAL,
        jitter_mean_ms REAL,
        jitter_max_ms REAL,
        rtcp_packets INTEGER
    )
    """,
    "CREATE INDEX legs_call ON legs (call)",
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        call INTEGER NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
        ts_ns INTEGER NOT NULL,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '',
        sender TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT ''
    )
    """,
    "CREATE INDEX events_call ON events (call, ts_ns)",
    # words of names and URIs (text search), external content kept in sync by triggers
    f"CREATE VIRTUAL TABLE calls_fts USING fts5({_FTS_COLUMNS}, content='calls', content_rowid='id')",
    # trigrams of numbers: indexed substring search for number queries of 3+ characters
    f"CREATE VIRTUAL TABLE calls_numbers USING fts5({_NUMBER_COLUMNS}, content='calls', content_rowid='id', "
    "tokenize='trigram')",
    f"""
    CREATE TRIGGER calls_search_ai AFTER INSERT ON calls BEGIN
        INSERT INTO calls_fts (rowid, {_FTS_COLUMNS}) VALUES (new.id, {_new(_FTS_COLUMNS)});
        INSERT INTO calls_numbers (rowid, {_NUMBER_COLUMNS}) VALUES (new.id, {_new(_NUMBER_COLUMNS)});
    END
    """,
    f"""
    CREATE TRIGGER calls_search_ad AFTER DELETE ON calls BEGIN
        INSERT INTO calls_fts (calls_fts, rowid, {_FTS_COLUMNS})
            VALUES ('delete', old.id, {_old(_FTS_COLUMNS)});
        INSERT INTO calls_numbers (calls_numbers, rowid, {_NUMBER_COLUMNS})
            VALUES ('delete', old.id, {_old(_NUMBER_COLUMNS)});
    END
    """,
    f"""
    CREATE TRIGGER calls_search_au AFTER UPDATE OF {_FTS_COLUMNS} ON calls BEGIN
        INSERT INTO calls_fts (calls_fts, rowid, {_FTS_COLUMNS})
            VALUES ('delete', old.id, {_old(_FTS_COLUMNS)});
        INSERT INTO calls_fts (rowid, {_FTS_COLUMNS}) VALUES (new.id, {_new(_FTS_COLUMNS)});
        INSERT INTO calls_numbers (calls_numbers, rowid, {_NUMBER_COLUMNS})
            VALUES ('delete', old.id, {_old(_NUMBER_COLUMNS)});
        INSERT INTO calls_numbers (rowid, {_NUMBER_COLUMNS}) VALUES (new.id, {_new(_NUMBER_COLUMNS)});
    END
    """,
)

# v2: per-leg E-model MOS estimate (decode.quality, ITU-T G.107); NULL for legs without audio or
# of a codec without planning values, and for calls recorded before it.
_V2 = sql_migration("ALTER TABLE legs ADD COLUMN mos REAL")
_V3 = sql_migration("ALTER TABLE calls ADD COLUMN not_recorded TEXT")


# v4: sealed recordings, retention, legal holds, users and roles, the audit trail.
_FTS_V4 = "caller, callee, caller_display, callee_display, request_uri, queue, notes"
_V4 = sql_migration(
    # the queue a call went to (from a configured SIP header), free-text notes of compliance staff
    "ALTER TABLE calls ADD COLUMN queue TEXT",
    "ALTER TABLE calls ADD COLUMN notes TEXT",
    # sealing: the recording's random id (bound into every chunk), the recording key it was sealed
    # to, the hash of the audio before sealing, and the appliance's signature over the metadata
    "ALTER TABLE calls ADD COLUMN recording_uuid TEXT",
    "ALTER TABLE calls ADD COLUMN key_fingerprint TEXT",
    "ALTER TABLE calls ADD COLUMN plaintext_sha256 TEXT",
    "ALTER TABLE calls ADD COLUMN signed_metadata TEXT",
    "ALTER TABLE calls ADD COLUMN signature TEXT",
    "ALTER TABLE calls ADD COLUMN signing_key TEXT",
    # retention: the class stamped at recording time and when it expires
    "ALTER TABLE calls ADD COLUMN retention_class TEXT",
    "ALTER TABLE calls ADD COLUMN expires_ns INTEGER",
    "ALTER TABLE calls ADD COLUMN expires_at TEXT",
    "CREATE INDEX calls_direction ON calls (direction, started_ns)",
    "CREATE INDEX calls_queue ON calls (queue, started_ns)",
    "CREATE INDEX calls_expires ON calls (expires_ns) WHERE expires_ns IS NOT NULL",
    "CREATE INDEX calls_duration ON calls (duration_s)",
    # each recording's data key, wrapped to the recording public key (HPKE). Kept apart from the
    # sealed file: deleting this row (with secure_delete on) crypto-shreds the recording even
    # where a copy of the file survives (a backup).
    """
    CREATE TABLE recording_keys (
        call INTEGER PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
        key_fingerprint TEXT NOT NULL,
        wrapped_key BLOB NOT NULL
    )
    """,
    """
    CREATE TABLE holds (
        id INTEGER PRIMARY KEY,
        call INTEGER NOT NULL REFERENCES calls (id),
        reason TEXT NOT NULL,
        placed_by TEXT NOT NULL,
        placed_at TEXT NOT NULL,
        released_by TEXT,
        released_at TEXT,
        release_reason TEXT
    )
    """,
    "CREATE INDEX holds_active ON holds (call) WHERE released_at IS NULL",
    # one row per purged (or being purged) recording: who, when, why, which policy
    """
    CREATE TABLE tombstones (
        call INTEGER PRIMARY KEY REFERENCES calls (id),
        state TEXT NOT NULL CHECK (state IN ('purging', 'purged')),
        started_at TEXT NOT NULL,
        purged_at TEXT,
        purged_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        retention_class TEXT,
        expires_at TEXT,
        recording_path TEXT,
        recording_sha256 TEXT
    )
    """,
    """
    CREATE TABLE users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('admin', 'compliance', 'supervisor', 'auditor')),
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        password_hash TEXT
    )
    """,
    """
    CREATE TABLE user_scopes (
        user TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('queue', 'extension')),
        pattern TEXT NOT NULL,
        PRIMARY KEY (user, kind, pattern)
    )
    """,
    # append-only, hash-chained: hash = sha256(prev_hash + canonical entry)
    """
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        at_ns INTEGER NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        call_ids TEXT NOT NULL DEFAULT '[]',
        detail TEXT NOT NULL DEFAULT '{}',
        client TEXT NOT NULL DEFAULT '',
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )
    """,
    "CREATE INDEX audit_user ON audit (user, seq)",
    "CREATE INDEX audit_at ON audit (at_ns)",
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END",
    # signed checkpoints of the chain's head (Ed25519, the appliance signing key)
    """
    CREATE TABLE audit_checkpoints (
        seq INTEGER PRIMARY KEY,
        hash TEXT NOT NULL,
        at TEXT NOT NULL,
        key_fingerprint TEXT NOT NULL,
        signature TEXT NOT NULL
    )
    """,
    # text search over queue and notes too: rebuild the words index with the new columns
    "DROP TRIGGER calls_search_ai",
    "DROP TRIGGER calls_search_ad",
    "DROP TRIGGER calls_search_au",
    "DROP TABLE calls_fts",
    f"CREATE VIRTUAL TABLE calls_fts USING fts5({_FTS_V4}, content='calls', content_rowid='id')",
    f"""
    CREATE TRIGGER calls_search_ai AFTER INSERT ON calls BEGIN
        INSERT INTO calls_fts (rowid, {_FTS_V4}) VALUES (new.id, {_new(_FTS_V4)});
        INSERT INTO calls_numbers (rowid, {_NUMBER_COLUMNS}) VALUES (new.id, {_new(_NUMBER_COLUMNS)});
    END
    """,
    f"""
    CREATE TRIGGER calls_search_ad AFTER DELETE ON calls BEGIN
        INSERT INTO calls_fts (calls_fts, rowid, {_FTS_V4}) VALUES ('delete', old.id, {_old(_FTS_V4)});
        INSERT INTO calls_numbers (calls_numbers, rowid, {_NUMBER_COLUMNS})
            VALUES ('delete', old.id, {_old(_NUMBER_COLUMNS)});
    END
    """,
    f"""
    CREATE TRIGGER calls_search_au AFTER UPDATE OF {_FTS_V4} ON calls BEGIN
        INSERT INTO calls_fts (calls_fts, rowid, {_FTS_V4}) VALUES ('delete', old.id, {_old(_FTS_V4)});
        INSERT INTO calls_fts (rowid, {_FTS_V4}) VALUES (new.id, {_new(_FTS_V4)});
        INSERT INTO calls_numbers (calls_numbers, rowid, {_NUMBER_COLUMNS})
            VALUES ('delete', old.id, {_old(_NUMBER_COLUMNS)});
        INSERT INTO calls_numbers (rowid, {_NUMBER_COLUMNS}) VALUES (new.id, {_new(_NUMBER_COLUMNS)});
    END
    """,
    "INSERT INTO calls_fts (calls_fts) VALUES ('rebuild')",
)

# v5: what the recording rules decided for each call: the rule's name and why it matched.
_V5 = sql_migration(
    "ALTER TABLE calls ADD COLUMN rule TEXT",
    "ALTER TABLE calls ADD COLUMN rule_reason TEXT",
)

# v6: what the recording modes decided: the stored format, consent (how and when), the spans of the
# call that were recorded and those that were paused (JSON lists: start/end on the call's clock and
# where each recorded span begins in the file).
_V6 = sql_migration(
    "ALTER TABLE calls ADD COLUMN recording_format TEXT",
    "ALTER TABLE calls ADD COLUMN consent TEXT",
    "ALTER TABLE calls ADD COLUMN consent_at TEXT",
    "ALTER TABLE calls ADD COLUMN recorded_spans TEXT",
    "ALTER TABLE calls ADD COLUMN paused_spans TEXT",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "calls, legs, events, search indexes", _V1),
    Migration(2, "legs: mos (E-model estimate)", _V2),
    Migration(3, "calls: not_recorded (why a call has no recording, or a silent channel)", _V3),
    Migration(4, "sealing, retention, holds, users, audit trail; queue and notes searchable", _V4),
    Migration(5, "calls: rule, rule_reason (the recording rule that decided)", _V5),
    Migration(6, "calls: recording_format, consent, consent_at, recorded_spans, paused_spans", _V6),
)
"""Every migration, in order. Append new ones; the newest id is the schema version."""

LATEST_VERSION = MIGRATIONS[-1].id
