"""Recordings as objects in an S3-compatible store (AWS S3, Ceph RGW, MinIO), under Object Lock.

:class:`S3RecordingStore` is an :class:`~callrec.store.objects.base.ObjectStore`:

- ``write`` streams the chunks up as a multipart upload, one ``part_size`` part at a time (a long
  call is never whole in memory); a recording smaller than one part is one PUT. An upload that
  fails is aborted: nothing appears under the name. With ``object_lock`` on, the object is written
  with that mode and retain-until = the call's retention expiry (an expiry already past: no lock).
- ``open`` returns a seekable file that reads with range GETs through a small buffer, pinned to
  the version it opened.
- ``delete`` removes every version of the key; a version the store refuses to delete (retention not
  passed, legal hold) raises :class:`ObjectLocked` saying until when.
- ``set_legal_hold`` and ``extend_retention`` act on the current version.

boto3 is imported here only: the single box never needs it (the ``fleet`` extra). Credentials come
from boto3's standard chain. Every S3 failure becomes one :class:`StoreError` line that names the
endpoint and the bucket; connection failures, access denied and a missing bucket are
:class:`StorageUnreachable`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from callrec.store.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ObjectLocked,
    StorageUnreachable,
    StoreError,
)
from callrec.store.objects.base import (
    READ_SIZE,
    Chunk,
    StoredFile,
    StoreStatus,
    check_digest,
    normalize_name,
)
from callrec.store.objects.settings import StorageSettings

READ_BUFFER = 256 << 10
"""Bytes one range GET of a small read fetches (reads larger than this go straight through)."""
_UNREACHABLE_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "InvalidToken",
    "ExpiredToken",
    "403",
    "Forbidden",
}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}


class S3RecordingStore:
    """Recordings under ``s3://bucket/prefix/<name>``; see the module docstring. ``clock`` gives
    nanoseconds since the epoch (whether a retain-until date is still in the future)."""

    kind = "s3"

    def __init__(
        self,
        settings: StorageSettings,
        *,
        clock: Callable[[], int] = time.time_ns,
        client: Any = None,
        read_buffer: int = READ_BUFFER,
    ) -> None:
        if settings.url is None:
            raise InvalidArgument("an S3 recording store needs [storage] url = 's3://bucket/prefix'")
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.endpoint = settings.endpoint_url or "AWS S3"
        self.clock = clock
        self.read_buffer = read_buffer
        self.client = client if client is not None else _client(settings)

    def __repr__(self) -> str:
        return f"S3RecordingStore({self.settings.url!r} at {self.endpoint})"

    @property
    def where(self) -> str:
        """The bucket's url and endpoint, for messages and ``callrec status``."""
        return f"{self.settings.url} at {self.endpoint}"

    def key_of(self, relative_path: str | PurePosixPath) -> str:
        """The object key of a store-relative name."""
        name = normalize_name(relative_path)
        return f"{self.prefix}/{name}" if self.prefix else name

    # -- start-up and status ---------------------------------------------------------------------

    def check(self) -> None:
        """The start-up check: the bucket exists and answers; with ``object_lock`` asked for, it has
        versioning and Object Lock enabled. Raises one :class:`StoreError` line otherwise."""
        with self._errors("checking the bucket", None):
            self.client.head_bucket(Bucket=self.bucket)
        if self.settings.object_lock == "off":
            return
        mode = self.settings.object_lock
        try:
            found = self.client.get_object_lock_configuration(Bucket=self.bucket)
            enabled = found.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
        except Exception as exc:
            if _code(exc) not in ("ObjectLockConfigurationNotFoundError", "InvalidRequest"):
                raise self._failure(exc, "reading the Object Lock configuration", None) from None
            enabled = False
        if not enabled:
            raise StoreError(
                f"bucket {self.bucket} at {self.endpoint} has no Object Lock, but [storage] object_lock = "
                f'"{mode}": use a bucket created with Object Lock enabled, or set object_lock = "off"'
            )
        with self._errors("reading the versioning state", None):
            versioning = self.client.get_bucket_versioning(Bucket=self.bucket).get("Status")
        if versioning != "Enabled":
            raise StoreError(
                f"bucket {self.bucket} at {self.endpoint} has versioning {versioning or 'off'}, but "
                f'[storage] object_lock = "{mode}" needs it enabled'
            )

    def status(self) -> StoreStatus:
        """Where the bucket is, its Object Lock mode, and whether :meth:`check` passes."""
        try:
            self.check()
        except StoreError as exc:
            return StoreStatus("s3", self.where, self.settings.object_lock, False, str(exc))
        return StoreStatus("s3", self.where, self.settings.object_lock, True)

    # -- writing ---------------------------------------------------------------------------------

    def write(
        self,
        relative_name: str,
        chunks: Iterable[Chunk],
        *,
        replace: bool = False,
        sync: bool = True,
        retain_until_ns: int | None = None,
    ) -> StoredFile:
        """Upload ``chunks`` to the name's key (see the module docstring). ``sync`` is accepted for
        the protocol: a completed PUT is durable. Raises :class:`AlreadyExists` if the name is
        taken and ``replace`` is false; exceptions of the ``chunks`` iterator propagate unchanged
        after the upload is aborted."""
        name = normalize_name(relative_name)
        key = self.key_of(name)
        if not replace and self.exists(name):
            raise AlreadyExists(f"recording {name} already exists in {self.settings.url}")
        extra = {"ContentType": "application/octet-stream", **self._lock_arguments(retain_until_ns)}
        part_size = self.settings.part_size
        digest = hashlib.sha256()
        size = 0
        pending = bytearray()
        upload: _Multipart | None = None
        try:
            for chunk in chunks:
                view = memoryview(chunk).cast("B")
                digest.update(view)
                size += view.nbytes
                pending += view
                while len(pending) >= part_size:
                    if upload is None:
                        upload = _Multipart(self, key, name, extra)
                    upload.send(bytes(pending[:part_size]))
                    del pending[:part_size]
            if upload is None:
                with self._errors("uploading", name):
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(pending), **extra)
            else:
                if pending:
                    upload.send(bytes(pending))
                version = upload.complete()
                if "ObjectLockMode" in extra:  # some gateways (Ceph 16) drop the lock of a multipart upload
                    self._put_retention(
                        name, version, extra["ObjectLockMode"], extra["ObjectLockRetainUntilDate"]
                    )
        except BaseException:
            if upload is not None:
                upload.abort()
            raise
        return StoredFile(path=None, relative_path=name, bytes=size, sha256=digest.hexdigest())

    def sync_all(self) -> None:
        """Nothing to do: every completed upload is durable in the store."""

    def _lock_arguments(self, retain_until_ns: int | None) -> dict[str, Any]:
        mode = self.settings.object_lock
        if mode == "off" or retain_until_ns is None or retain_until_ns <= self.clock():
            return {}
        return {"ObjectLockMode": mode.upper(), "ObjectLockRetainUntilDate": _date(retain_until_ns)}

    # -- reading ---------------------------------------------------------------------------------

    def exists(self, relative_path: str | PurePosixPath) -> bool:
        """Whether an object (a current version that is not a delete marker) has the name."""
        try:
            self._head(normalize_name(relative_path))
        except NotFound:
            return False
        return True

    def open(self, relative_path: str | PurePosixPath) -> BinaryIO:
        """A seekable, buffered reader over the current version (range GETs; :class:`NotFound`)."""
        name = normalize_name(relative_path)
        head = self._head(name)
        raw = RangeReader(self, name, int(head["ContentLength"]), head.get("VersionId"))
        return io.BufferedReader(raw, buffer_size=self.read_buffer)  # type: ignore[return-value]

    def checksum(self, relative_path: str | PurePosixPath) -> tuple[int, str]:
        """Size and hex sha256 of the stored bytes, streamed by one GET."""
        name = normalize_name(relative_path)
        digest = hashlib.sha256()
        size = 0
        with self._errors("reading", name):
            body = self.client.get_object(Bucket=self.bucket, Key=self.key_of(name))["Body"]
            for block in body.iter_chunks(READ_SIZE):
                digest.update(block)
                size += len(block)
        return size, digest.hexdigest()

    def verify(self, relative_path: str | PurePosixPath, sha256: str, size: int | None = None) -> None:
        """:class:`IntegrityError` unless the object hashes to ``sha256`` (and has ``size`` bytes)."""
        actual_size, actual = self.checksum(relative_path)
        check_digest(normalize_name(relative_path), actual_size, actual, sha256, size)

    def location(self, relative_path: str | PurePosixPath) -> str:
        """``s3://bucket/key`` of the recording."""
        return f"s3://{self.bucket}/{self.key_of(relative_path)}"

    def local_path(self, relative_path: str | PurePosixPath) -> Path | None:
        """``None``: an object has no local file."""
        return None

    def get_range(self, name: str, first: int, last: int, version: str | None) -> bytes:
        """Bytes ``first``..``last`` (inclusive) of the name's object (that version, if given)."""
        extra = {"VersionId": version} if version else {}
        with self._errors("reading", name):
            found = self.client.get_object(
                Bucket=self.bucket, Key=self.key_of(name), Range=f"bytes={first}-{last}", **extra
            )
            return bytes(found["Body"].read())

    # -- deleting, retention, legal hold ---------------------------------------------------------

    def delete(self, relative_path: str | PurePosixPath, *, missing_ok: bool = False) -> bool:
        """Delete every version (and delete marker) of the name's key. A version the store keeps
        raises :class:`ObjectLocked` ("refused by Object Lock until ..."), after the others went."""
        name = normalize_name(relative_path)
        key = self.key_of(name)
        versions = list(self._versions(name))
        if not versions:
            if missing_ok:
                return False
            raise NotFound(f"no recording {name} in {self.settings.url}")
        refused: str | None = None
        for version, is_marker in versions:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key, VersionId=version)
            except Exception as exc:
                if _code(exc) != "AccessDenied" or is_marker:
                    raise self._failure(exc, "deleting", name) from None
                refused = refused or self._why_kept(name, version)
        if refused is not None:
            raise ObjectLocked(refused)
        return True

    def extend_retention(self, relative_path: str | PurePosixPath, until_ns: int) -> None:
        """Move the current version's retain-until date to ``until_ns`` if that is later (COMPLIANCE
        allows lengthening, never shortening)."""
        mode = self.settings.object_lock
        if mode == "off" or until_ns <= self.clock():
            return
        name = normalize_name(relative_path)
        version = self._head(name).get("VersionId")
        current = self.retention(name)
        if current is not None and current[1] >= _date(until_ns):
            return
        self._put_retention(name, version, mode.upper(), _date(until_ns))

    def _put_retention(self, name: str, version: str | None, mode: str, until: datetime) -> None:
        extra = {"VersionId": version} if version else {}
        with self._errors("setting the retention of", name):
            self.client.put_object_retention(
                Bucket=self.bucket,
                Key=self.key_of(name),
                Retention={"Mode": mode, "RetainUntilDate": until},
                **extra,
            )

    def set_legal_hold(self, relative_path: str | PurePosixPath, on: bool) -> None:
        """Set (``on``) or clear the current version's legal hold (nothing with object_lock off)."""
        if self.settings.object_lock == "off":
            return
        name = normalize_name(relative_path)
        version = self._head(name).get("VersionId")
        with self._errors("setting the legal hold of" if on else "clearing the legal hold of", name):
            self.client.put_object_legal_hold(
                Bucket=self.bucket,
                Key=self.key_of(name),
                VersionId=version,
                LegalHold={"Status": "ON" if on else "OFF"},
            )

    def legal_hold(self, relative_path: str | PurePosixPath) -> bool:
        """Whether the current version has its legal hold on."""
        name = normalize_name(relative_path)
        try:
            found = self.client.get_object_legal_hold(Bucket=self.bucket, Key=self.key_of(name))
        except Exception as exc:
            if _code(exc) in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"):
                return False
            raise self._failure(exc, "reading the legal hold of", name) from None
        return bool(found.get("LegalHold", {}).get("Status") == "ON")

    def retention(
        self, relative_path: str | PurePosixPath, version: str | None = None
    ) -> tuple[str, datetime] | None:
        """(mode, retain-until) of the current version (or ``version``), ``None`` without one."""
        name = normalize_name(relative_path)
        extra = {"VersionId": version} if version else {}
        try:
            found = self.client.get_object_retention(Bucket=self.bucket, Key=self.key_of(name), **extra)
        except Exception as exc:
            if _code(exc) in ("NoSuchObjectLockConfiguration", "ObjectLockConfigurationNotFoundError"):
                return None
            raise self._failure(exc, "reading the retention of", name) from None
        kept = found.get("Retention") or {}
        until = kept.get("RetainUntilDate")
        return (str(kept.get("Mode")), until) if until is not None else None

    # -- helpers ---------------------------------------------------------------------------------

    def _head(self, name: str) -> dict[str, Any]:
        with self._errors("looking up", name):
            found: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key_of(name))
            return found

    def _versions(self, name: str) -> Iterator[tuple[str, bool]]:
        """(version id, is a delete marker) of every version of the name's exact key."""
        key = self.key_of(name)
        with self._errors("listing the versions of", name):
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key)
            for page in pages:
                for entry in page.get("Versions", []):
                    if entry["Key"] == key:
                        yield str(entry["VersionId"]), False
                for entry in page.get("DeleteMarkers", []):
                    if entry["Key"] == key:
                        yield str(entry["VersionId"]), True

    def _why_kept(self, name: str, version: str) -> str:
        """The one line for a refused delete: until when, and whether a legal hold is on."""
        reasons = []
        with contextlib.suppress(StoreError):
            kept = self.retention(name, version)
            if kept is not None and kept[1] > _date(self.clock()):
                reasons.append(f"until {kept[1].astimezone(UTC):%Y-%m-%dT%H:%M:%SZ} ({kept[0]})")
        with contextlib.suppress(Exception):
            found = self.client.get_object_legal_hold(
                Bucket=self.bucket, Key=self.key_of(name), VersionId=version
            )
            if found.get("LegalHold", {}).get("Status") == "ON":
                reasons.append("while a legal hold is on")
        why = " and ".join(reasons) or "(AccessDenied)"
        return f"delete of recording {name} in {self.settings.url} refused by Object Lock {why}"

    @contextlib.contextmanager
    def _errors(self, what: str, name: str | None) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:
            if not _is_s3_error(exc):
                raise
            raise self._failure(exc, what, name) from None

    def _failure(self, exc: BaseException, what: str, name: str | None) -> StoreError:
        """One line naming the endpoint, the bucket (and the recording) for a boto3 failure."""
        where = f"bucket {self.bucket} at {self.endpoint}"
        subject = f"{what} {name}" if name else what
        code = _code(exc)
        if code in _MISSING_CODES and name is not None:
            return NotFound(f"no recording {name} in {self.settings.url} ({where})")
        if code == "NoSuchBucket" or (code in _MISSING_CODES and name is None):
            return StorageUnreachable(f"{where}: the bucket does not exist ({subject})")
        if code in _UNREACHABLE_CODES:
            return StorageUnreachable(f"{where}: access denied ({code}) while {subject}")
        if type(exc).__name__ == "NoCredentialsError":
            return StorageUnreachable(
                f"{where}: no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                f"~/.aws/credentials or AWS_PROFILE) while {subject}"
            )
        if code is None:  # no answer: connection refused, timeout
            text = (str(exc).splitlines() or [type(exc).__name__])[0]
            return StorageUnreachable(f"{where} is unreachable while {subject}: {text}")
        message = _message(exc)
        return StoreError(f"{where}: {subject} failed: {code}{': ' + message if message else ''}")


class _Multipart:
    """One multipart upload in progress: parts sent in order, then completed or aborted."""

    def __init__(self, store: S3RecordingStore, key: str, name: str, extra: dict[str, Any]) -> None:
        self.store, self.key, self.name = store, key, name
        with store._errors("starting the upload of", name):
            found = store.client.create_multipart_upload(Bucket=store.bucket, Key=key, **extra)
        self.upload_id = str(found["UploadId"])
        self.parts: list[dict[str, Any]] = []

    def send(self, body: bytes) -> None:
        number = len(self.parts) + 1
        with self.store._errors(f"uploading part {number} of", self.name):
            found = self.store.client.upload_part(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
            )
        self.parts.append({"ETag": found["ETag"], "PartNumber": number})

    def complete(self) -> str | None:
        """Complete the upload; the new object's version id (``None`` without versioning)."""
        with self.store._errors("completing the upload of", self.name):
            found = self.store.client.complete_multipart_upload(
                Bucket=self.store.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        version = found.get("VersionId")
        return str(version) if version else None

    def abort(self) -> None:
        """Abort the upload (its parts are dropped); a failure here is not the one to report."""
        with contextlib.suppress(Exception):
            self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
            )


class RangeReader(io.RawIOBase):
    """A seekable raw file over one object version: every read is one range GET. Wrap it in an
    :class:`io.BufferedReader` (as :meth:`S3RecordingStore.open` does) for small reads."""

    def __init__(self, store: S3RecordingStore, name: str, size: int, version: str | None) -> None:
        super().__init__()
        self.store, self.name, self.size, self.version = store, name, size, version
        self.position = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self.position = base + offset
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(view.nbytes, self.size - self.position)
        if wanted <= 0:
            return 0
        data = self.store.get_range(self.name, self.position, self.position + wanted - 1, self.version)
        got = len(data)
        view[:got] = data
        self.requests += 1
        self.position += got
        return got


def _client(settings: StorageSettings) -> Any:
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise StoreError(
            "[storage] url is an s3:// url but boto3 is not installed: pip install 'callrec[fleet]'"
        ) from None
    config = BotoConfig(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=settings.endpoint_url, region_name=settings.region, config=config
    )


def _is_s3_error(exc: BaseException) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError)


def _code(exc: BaseException) -> str | None:
    """The S3 error code of a ClientError (``None`` for a failure without an answer)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None


def _message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Message") or "")
    return ""


def _date(ns: int) -> datetime:
    """A nanosecond timestamp as an aware UTC datetime (whole seconds, rounded up)."""
    return datetime.fromtimestamp(-(-ns // 1_000_000_000), UTC)
