"""store.objects.s3 against a real Ceph RADOS Gateway (tests.helpers.s3_server): multipart writes,
range reads, checksums, COMPLIANCE Object Lock, legal holds, the start-up check and its errors."""

from __future__ import annotations

import hashlib
import os
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from callrec.store.errors import (
    AlreadyExists,
    IntegrityError,
    NotFound,
    ObjectLocked,
    StorageUnreachable,
    StoreError,
)
from callrec.store.objects.base import ObjectStore
from callrec.store.objects.s3 import RangeReader, S3RecordingStore
from callrec.store.objects.settings import MIN_PART_SIZE, StorageSettings
from tests.helpers.s3_server import S3Server

NAME = "recordings/2026/11/28/42.wav.sealed"
SEC = 1_000_000_000


def make_store(
    server: S3Server, bucket: str, lock: str = "compliance", prefix: str = "site-a"
) -> S3RecordingStore:
    settings = StorageSettings(
        url=f"s3://{bucket}/{prefix}", endpoint_url=server.endpoint, object_lock=lock, part_size=MIN_PART_SIZE
    )
    return S3RecordingStore(settings)


def pieces(data: bytes, size: int = 1_000_003) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


def test_a_long_recording_streams_up_in_parts_with_bounded_memory(
    s3_server: S3Server, s3_bucket: str
) -> None:
    store = make_store(s3_server, s3_bucket)
    assert isinstance(store, ObjectStore)
    block = os.urandom(1 << 20)
    total = 24

    def chunks() -> Iterator[bytes]:
        for _ in range(total):
            yield block

    tracemalloc.start()
    try:
        stored = store.write(NAME, chunks())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stored.bytes == total << 20 and stored.path is None and stored.relative_path == NAME
    assert stored.sha256 == hashlib.sha256(block * total).hexdigest()
    assert peak < 4 * MIN_PART_SIZE  # a part at a time, never the 24 MiB
    head = s3_server.client().head_object(Bucket=s3_bucket, Key=f"site-a/{NAME}")
    assert head["ETag"].strip('"').endswith(f"-{-(-(total << 20) // MIN_PART_SIZE)}")  # a multipart object
    assert store.location(NAME) == f"s3://{s3_bucket}/site-a/{NAME}" and store.local_path(NAME) is None


def test_open_reads_with_range_gets_and_seeks(s3_server: S3Server, s3_bucket: str) -> None:
    store = make_store(s3_server, s3_bucket)
    data = os.urandom(3 * MIN_PART_SIZE + 12345)
    store.write(NAME, pieces(data))
    with store.open(NAME) as handle:
        handle.seek(MIN_PART_SIZE - 10)
        assert handle.read(20) == data[MIN_PART_SIZE - 10 : MIN_PART_SIZE + 10]
        handle.seek(-7, os.SEEK_END)
        assert handle.read() == data[-7:]
        handle.seek(0)
        assert handle.read(4) == data[:4]
        raw = handle.raw  # type: ignore[attr-defined]
        assert isinstance(raw, RangeReader) and raw.requests == 3  # one GET per read, a small buffer each
        handle.seek(0)
        assert handle.read() == data
    assert store.checksum(NAME) == (len(data), hashlib.sha256(data).hexdigest())
    assert store.exists(NAME) and not store.exists("recordings/none.wav")
    with pytest.raises(NotFound, match="no recording recordings/none.wav"):
        store.open("recordings/none.wav")


def test_verify_detects_a_replaced_object(s3_server: S3Server, s3_bucket: str) -> None:
    store = make_store(s3_server, s3_bucket, lock="off")
    stored = store.write(NAME, [b"sealed bytes"])
    store.verify(NAME, stored.sha256, stored.bytes)
    s3_server.client().put_object(Bucket=s3_bucket, Key=f"site-a/{NAME}", Body=b"sealed bytez")
    with pytest.raises(IntegrityError, match="is damaged"):
        store.verify(NAME, stored.sha256, stored.bytes)
    with pytest.raises(AlreadyExists):
        store.write(NAME, [b"again"])


def test_compliance_lock_refuses_the_delete_until_the_retention_expiry(
    s3_server: S3Server, s3_bucket: str
) -> None:
    store = make_store(s3_server, s3_bucket)
    until = (time.time_ns() // SEC + 3) * SEC
    store.write(NAME, [b"x" * 1000], retain_until_ns=until)
    client = s3_server.client()
    found = client.get_object_retention(Bucket=s3_bucket, Key=f"site-a/{NAME}")["Retention"]
    assert found["Mode"] == "COMPLIANCE" and int(found["RetainUntilDate"].timestamp()) == until // SEC
    with pytest.raises(ObjectLocked, match="refused by Object Lock until .* \\(COMPLIANCE\\)"):
        store.delete(NAME)
    assert store.exists(NAME)
    deadline = time.monotonic() + 30
    while time.time_ns() <= until + SEC and time.monotonic() < deadline:
        time.sleep(0.5)
    assert store.delete(NAME) is True
    versions = client.list_object_versions(Bucket=s3_bucket, Prefix=f"site-a/{NAME}")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")  # every version gone
    assert store.delete(NAME, missing_ok=True) is False


def test_a_multipart_object_is_locked_too(s3_server: S3Server, s3_bucket: str) -> None:
    store = make_store(s3_server, s3_bucket)
    store.write(NAME, pieces(os.urandom(2 * MIN_PART_SIZE + 1)), retain_until_ns=time.time_ns() + 3600 * SEC)
    with pytest.raises(ObjectLocked, match="COMPLIANCE"):
        store.delete(NAME)


def test_legal_hold_set_and_cleared(s3_server: S3Server, s3_bucket: str) -> None:
    store = make_store(s3_server, s3_bucket)
    store.write(NAME, [b"held"])
    client = s3_server.client()
    store.set_legal_hold(NAME, True)
    assert client.get_object_legal_hold(Bucket=s3_bucket, Key=f"site-a/{NAME}")["LegalHold"]["Status"] == "ON"
    with pytest.raises(ObjectLocked, match="while a legal hold is on"):
        store.delete(NAME)
    store.set_legal_hold(NAME, False)
    assert (
        client.get_object_legal_hold(Bucket=s3_bucket, Key=f"site-a/{NAME}")["LegalHold"]["Status"] == "OFF"
    )
    assert store.delete(NAME)


def test_retention_is_extended_never_shortened(s3_server: S3Server, s3_bucket: str) -> None:
    store = make_store(s3_server, s3_bucket)
    now = time.time_ns()
    store.write(NAME, [b"x"], retain_until_ns=now + 3600 * SEC)
    store.extend_retention(NAME, now + 7200 * SEC)
    found = store.retention(NAME)
    assert found is not None and int(found[1].timestamp()) == -(-(now + 7200 * SEC) // SEC)
    store.extend_retention(NAME, now + 60 * SEC)  # shorter: left as it is
    assert store.retention(NAME) == found


def test_a_failing_stream_leaves_no_object_and_no_upload(s3_server: S3Server, s3_bucket: str) -> None:
    store = make_store(s3_server, s3_bucket)

    def broken() -> Iterator[bytes]:
        yield os.urandom(MIN_PART_SIZE + 1)  # one part sent
        raise RuntimeError("encoder failed")

    with pytest.raises(RuntimeError, match="encoder failed"):
        store.write(NAME, broken())
    assert not store.exists(NAME)
    assert not s3_server.client().list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


def test_start_up_check_names_what_is_wrong(s3_server: S3Server, s3_bucket: str) -> None:
    make_store(s3_server, s3_bucket).check()
    plain = s3_server.create_bucket(object_lock=False)
    with pytest.raises(StoreError, match=f"bucket {plain} at {s3_server.endpoint} has no Object Lock"):
        make_store(s3_server, plain).check()
    make_store(s3_server, plain, lock="off").check()  # no lock asked for: fine
    with pytest.raises(
        StorageUnreachable, match=f"bucket callrec-nowhere at {s3_server.endpoint}: .*does not exist"
    ):
        make_store(s3_server, "callrec-nowhere").check()
    closed = StorageSettings(url=f"s3://{s3_bucket}", endpoint_url="http://127.0.0.1:9")
    with pytest.raises(StorageUnreachable, match=f"bucket {s3_bucket} at http://127.0.0.1:9 is unreachable"):
        S3RecordingStore(closed).check()
    status = S3RecordingStore(closed).status()
    assert status.kind == "s3" and not status.reachable and "unreachable" in (status.error or "")


def test_wrong_credentials_are_access_denied(
    s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(StorageUnreachable, match=f"bucket {s3_bucket} at .*: access denied"):
        make_store(s3_server, s3_bucket).write(NAME, [b"x"])


def test_without_object_lock_a_plain_bucket_works_and_delete_removes_the_object(
    s3_server: S3Server, s3_bucket: str
) -> None:
    plain = s3_server.create_bucket(object_lock=False)  # no versioning either
    store = make_store(s3_server, plain, lock="off")
    store.check()
    stored = store.write(NAME, [b"plain"], retain_until_ns=time.time_ns() + 3600 * SEC)  # no lock to set
    store.set_legal_hold(NAME, True)  # nothing to do with object_lock off
    store.verify(NAME, stored.sha256, stored.bytes)
    assert store.delete(NAME) and not store.exists(NAME)
    assert not s3_server.client().list_objects_v2(Bucket=plain).get("Contents")
