"""The one error family of the ``store`` package.

Every failure the store reports on purpose is a :class:`StoreError` whose message is one line a
user can act on; the CLI prints it as ``Error: <message>`` and the daemon as its startup line.
Programming errors (wrong types) stay ``TypeError``/``ValueError``.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class: something about the data directory, a recording or the catalogue is wrong."""


class NotFound(StoreError):
    """A call, a recording file or the data directory does not exist."""


class AlreadyExists(StoreError):
    """A recording file already exists under the name being written."""


class IntegrityError(StoreError):
    """Stored bytes do not match their recorded checksum."""


class InvalidArgument(StoreError, ValueError):
    """A caller-supplied value (a date, a field name, a path) cannot be used."""


class SchemaError(StoreError):
    """The catalogue's schema cannot be used by this version (e.g. it is newer)."""


class KeyMissing(StoreError):
    """A key that is needed is not there: no recording key yet, a key file that does not exist,
    or a recording sealed with a key that none of the given key files holds."""


class WrongPassphrase(StoreError):
    """A compliance key file does not open with the passphrase given."""


class TamperedError(IntegrityError):
    """Sealed or signed bytes fail authentication: altered, truncated, reordered or swapped."""


class AccessDenied(StoreError):
    """The user's role (or their queues and extensions) does not allow what they asked for."""


class AuditTampered(IntegrityError):
    """The audit trail fails verification: an entry was changed, removed or reordered."""


class AlreadyPurged(StoreError):
    """The call's recording was destroyed by retention (crypto-shredded): it cannot be held."""


class ObjectLocked(StoreError):
    """The object store refused to delete a recording: its Object Lock retention has not passed yet,
    or a legal hold is on it. The message says until when (a purge retries it on a later run)."""


class StorageUnreachable(StoreError):
    """The recording store cannot be reached or refuses us: connection refused, access denied, no such
    bucket. The message names the endpoint and the bucket; nothing was written under the name."""
