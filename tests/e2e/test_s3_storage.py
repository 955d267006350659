"""A data directory whose recordings are S3 objects under COMPLIANCE Object Lock, on a real Ceph RGW
(tests.helpers.s3_server), through the real `callrec` program: import, verify, export (byte for byte
the single box's export), the portal's range requests, legal holds, the purge, and an outage."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from callrec.recorder.config import load_for_home
from callrec.store.catalogue.db import Catalogue
from callrec.store.home import Home
from callrec.store.retention.purge import Retention
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import provision
from tests.helpers.portal_env import Portal, build_home, call_ids, login
from tests.helpers.s3_server import S3Server

REPO = Path(__file__).resolve().parents[2]
DEMO = sorted((REPO / "pcaps" / "demo").glob("*.pcap"))
SEC = 1_000_000_000


def callrec(home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callrec.cli.main", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"{done.args}: {done.stdout}\n{done.stderr}"
    return done


def s3_home(root: Path, server: S3Server, bucket: str, retention: str = "5y") -> Path:
    home = provision(root)
    (home / "callrec.toml").write_text(
        f'[storage]\nurl = "s3://{bucket}/site-a"\nendpoint_url = "{server.endpoint}"\n'
        f'region = "{server.region}"\nobject_lock = "compliance"\npart_size = "5MiB"\n'
        f'[retention]\ndefault = "{retention}"\n'
    )
    return home


def rows(home: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(home / "catalogue.db") as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT id, recording_path, expires_ns FROM calls ORDER BY id").fetchall()


def key_of(row: sqlite3.Row) -> str:
    return f"site-a/{row['recording_path']}"


def test_recordings_are_locked_objects_and_read_back_as_on_the_single_box(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    home = s3_home(tmp_path / "s3", s3_server, s3_bucket)
    local = provision(tmp_path / "local")
    (local / "callrec.toml").write_text('[retention]\ndefault = "5y"\n')
    imported = json.loads(ok(callrec(home, "import", "--json", *map(str, DEMO))).stdout)
    ok(callrec(local, "import", *map(str, DEMO)))
    recorded = [c for c in imported if c.get("recording")]
    assert recorded and all(c["recording"]["path"].startswith(f"s3://{s3_bucket}/site-a/") for c in recorded)
    assert not [p for p in (home / "recordings").rglob("*") if p.is_file()]  # nothing on the local disk

    client = s3_server.client()
    catalogued = [r for r in rows(home) if r["recording_path"]]
    locked = [r for r in catalogued if r["expires_ns"] > time.time_ns()]
    assert locked
    for row in catalogued:  # each object retained, COMPLIANCE, until its call's expiry (if still ahead)
        if row not in locked:  # a capture older than its retention: nothing to lock, the purge is due
            with pytest.raises(ClientError, match="ObjectLockConfigurationNotFound"):
                client.get_object_retention(Bucket=s3_bucket, Key=key_of(row))
            continue
        found = client.get_object_retention(Bucket=s3_bucket, Key=key_of(row))["Retention"]
        assert found["Mode"] == "COMPLIANCE"
        assert int(found["RetainUntilDate"].timestamp()) == -(-row["expires_ns"] // SEC)
    ok(callrec(home, "calls", "verify"))

    catalogued = locked
    first = catalogued[0]["id"]
    for where in (home, local):
        ok(callrec(where, "calls", "export", str(first), "--out", str(tmp_path / f"{where.name}.wav")))
    assert (tmp_path / "s3.wav").read_bytes() == (tmp_path / "local.wav").read_bytes()

    ok(callrec(home, "hold", "add", str(first), "--reason", "case 2026-117"))
    hold = client.get_object_legal_hold(Bucket=s3_bucket, Key=key_of(catalogued[0]))["LegalHold"]
    assert hold["Status"] == "ON"
    ok(callrec(home, "hold", "remove", str(first), "--reason", "closed"))
    hold = client.get_object_legal_hold(Bucket=s3_bucket, Key=key_of(catalogued[0]))["LegalHold"]
    assert hold["Status"] == "OFF"

    versions = client.list_object_versions(Bucket=s3_bucket, Prefix=key_of(catalogued[0]))["Versions"]
    with pytest.raises(ClientError) as refused:  # the store itself refuses: COMPLIANCE
        client.delete_object(Bucket=s3_bucket, Key=key_of(catalogued[0]), VersionId=versions[0]["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"


def test_a_bucket_without_object_lock_is_a_clear_start_up_error(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    plain = s3_server.create_bucket(object_lock=False)
    home = s3_home(tmp_path / "s3", s3_server, plain)
    done = callrec(home, "import", str(DEMO[0]))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: bucket {plain} at {s3_server.endpoint} has no Object Lock, but [storage] "
        'object_lock = "compliance": use a bucket created with Object Lock enabled, '
        'or set object_lock = "off"'
    ]


def test_portal_range_requests_read_the_object(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    root = tmp_path / "portal"
    s3_home(root / "home", s3_server, s3_bucket)
    home = build_home(root)
    call = call_ids(home)["+35220004"]
    portal = Portal.make(home, storage=load_for_home(home).storage)
    client = portal.app().test_client()
    assert login(client, "alice").status_code == 303
    whole = client.get(f"/calls/{call}/audio.wav")
    assert whole.status_code == 200 and whole.data[:4] == b"RIFF"
    part = client.get(f"/calls/{call}/audio.wav", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206 and part.data == whole.data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(whole.data)}"


def test_purge_shreds_at_once_and_deletes_the_object_when_the_lock_allows(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    # expiry = start + 1 h = a few seconds from now: the object is locked until then
    start = time.time() - 3600 + 6
    pcap = write_calls(tmp_path / "calls.pcap", [CallSpec("+35220001", "201", start_s=start)])
    home = s3_home(tmp_path / "s3", s3_server, s3_bucket, retention="1h")
    ok(callrec(home, "import", str(pcap)))
    (row,) = [r for r in rows(home) if r["recording_path"]]
    call, client = int(row["id"]), s3_server.client()
    store = Home(home).recording_store(load_for_home(home).storage)
    moved = row["expires_ns"] + 86_400 * SEC  # the purge's clock: a day after the expiry
    with Catalogue(Home(home).catalogue_path) as catalogue:
        report = Retention(catalogue.db, store).apply(moved, by="test")
        assert report.purged == () and report.errors == {}
        assert "refused by Object Lock until" in report.deferred[call]  # recorded, not an error
        assert catalogue.wrapped_key(call) is None  # crypto-shredded already: unreadable
    assert client.head_object(Bucket=s3_bucket, Key=key_of(row))  # the store still keeps the object
    export = callrec(home, "calls", "export", str(call), "--out", str(tmp_path / "x.wav"))
    assert export.returncode == 1 and "Traceback" not in export.stderr and not (tmp_path / "x.wav").exists()

    deadline = time.monotonic() + 60
    while time.time_ns() <= row["expires_ns"] + SEC and time.monotonic() < deadline:
        time.sleep(0.5)
    with Catalogue(Home(home).catalogue_path) as catalogue:
        trail = Home(home).audit_trail(catalogue.db)
        report = Retention(catalogue.db, store).apply(
            moved,
            by="test",
            audit=lambda action, ids, detail: trail.record(
                user="test", action=action, call_ids=ids, detail=detail
            ),
        )
    assert report.purged == (call,) and report.resumed == (call,) and not report.deferred
    listed = client.list_object_versions(Bucket=s3_bucket, Prefix=key_of(row))
    assert not listed.get("Versions") and not listed.get("DeleteMarkers")
    assert rows(home)[0]["recording_path"] is None  # redacted
    ok(callrec(home, "calls", "verify"))


def test_an_outage_during_an_import_is_one_error_and_commits_only_whole_recordings(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    calls = [
        CallSpec(f"+3522{n:04d}", f"2{n:02d}", seconds=20, start_s=1_764_000_000 + 60 * n) for n in range(40)
    ]
    pcap = write_calls(tmp_path / "many.pcap", calls)
    home = s3_home(tmp_path / "s3", s3_server, s3_bucket)
    client = s3_server.client()
    importing = subprocess.Popen(
        [sys.executable, "-m", "callrec.cli.main", "--home", str(home), "import", str(pcap)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and importing.poll() is None:  # the first objects are up
            if client.list_objects_v2(Bucket=s3_bucket, Prefix="site-a/").get("KeyCount", 0) >= 2:
                break
            time.sleep(0.05)
        s3_server.outage("stop")
        try:
            stdout, stderr = importing.communicate(timeout=300)
        finally:
            s3_server.outage("start")
    finally:
        if importing.poll() is None:
            importing.kill()
            importing.wait(timeout=30)
    assert importing.returncode == 1, f"the import was not interrupted: {stdout}\n{stderr}"
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1
    assert lines[0].startswith("Error: import stopped, recording storage unavailable: ")
    assert f"bucket {s3_bucket} at {s3_server.endpoint}" in lines[0]
    catalogued = [r for r in rows(home) if r["recording_path"]]
    assert len(catalogued) < len(calls)
    for row in catalogued:  # every catalogued recording is whole in the bucket
        assert client.head_object(Bucket=s3_bucket, Key=key_of(row))["ContentLength"] > 0
    ok(callrec(home, "calls", "verify"))
    ok(callrec(home, "import", str(pcap)))  # once the store is back, the rest goes in
    assert len([r for r in rows(home) if r["recording_path"]]) == len(calls)
    ok(callrec(home, "calls", "verify"))
