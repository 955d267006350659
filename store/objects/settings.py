"""Which recording store a data directory uses: :class:`StorageSettings` (the ``[storage]`` table).

Without a ``url`` the recordings stay in the data directory (the single box, as always). With
``url = "s3://bucket/prefix"`` they are objects in an S3-compatible store; credentials come from the
standard AWS chain (environment, shared files, profile), never from the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

from callrec.store.errors import InvalidArgument

OBJECT_LOCK_MODES = ("compliance", "governance", "off")
MIN_PART_SIZE = 5 << 20  # S3's smallest part (but the last)
MAX_PART_SIZE = 5 << 30
DEFAULT_PART_SIZE = 8 << 20


@dataclass(frozen=True, slots=True)
class StorageSettings:
    """``url``: ``None`` (the data directory) or ``s3://bucket[/prefix]``; ``endpoint_url``: the S3
    endpoint (``None``: AWS's own); ``region``; ``object_lock``: ``compliance``, ``governance`` or
    ``off``; ``part_size``: bytes per multipart part (and the most of a recording held in memory)."""

    url: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    object_lock: str = "off"
    part_size: int = DEFAULT_PART_SIZE

    def __post_init__(self) -> None:
        if self.object_lock not in OBJECT_LOCK_MODES:
            raise InvalidArgument(f"object_lock must be one of {', '.join(OBJECT_LOCK_MODES)}")
        if not MIN_PART_SIZE <= self.part_size <= MAX_PART_SIZE:
            raise InvalidArgument(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if self.url is not None:
            parse_s3_url(self.url)

    @property
    def kind(self) -> str:
        """``local`` or ``s3``."""
        return "local" if self.url is None else "s3"

    @property
    def bucket(self) -> str:
        return parse_s3_url(self.url or "")[0]

    @property
    def prefix(self) -> str:
        """The key prefix, without slashes at either end ("" for none)."""
        return parse_s3_url(self.url or "")[1]


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> (``bucket``, ``some/prefix``); :class:`InvalidArgument` otherwise.
    Bucket names follow S3's rules (3-63 lower-case letters, digits, dots and hyphens)."""
    if not url.startswith("s3://"):
        raise InvalidArgument(f"storage url {url!r} is not s3://bucket/prefix")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789.-")
    if not 3 <= len(bucket) <= 63 or not set(bucket) <= allowed or not bucket[0].isalnum():
        raise InvalidArgument(f"storage url {url!r}: {bucket!r} is not a valid bucket name")
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise InvalidArgument(f"storage url {url!r}: the prefix has an empty, '.' or '..' part")
    return bucket, prefix
