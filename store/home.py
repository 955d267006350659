"""The data directory (``--home``): where the catalogue, recordings, spool and temp files live.

Layout::

    <home>/catalogue.db                      SQLite catalogue (plus -wal / -shm)
    <home>/recordings/YYYY/MM/DD/<id>.wav    finished recordings, by the call's UTC start date
    <home>/spool/                            per-call spools of the live recorder
    <home>/tmp/                              temp files of atomic writes (same filesystem)
    <home>/keys/                             recording public keys, the appliance's signing key
    <home>/audit.head                        the audit trail's last signed head (outside SQLite)

and, outside it, the audit trail's anchors (:func:`default_anchor_path`: in ``/var/log/callrec`` when
that directory exists and is writable, else ``<home>.audit-anchors`` beside the data directory).

Every directory the store creates has mode 0700: recordings are personal data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlite_utils import Database

from callrec.store.audit.anchor import FileAnchorStore
from callrec.store.audit.trail import AuditTrail
from callrec.store.crypto.keys import KeyDirectory
from callrec.store.errors import InvalidArgument, KeyMissing, NotFound, StoreError
from callrec.store.objects.base import ObjectStore
from callrec.store.objects.local import RecordingStore
from callrec.store.objects.settings import StorageSettings

CATALOGUE_NAME = "catalogue.db"
RECORDINGS_DIR = "recordings"
SPOOL_DIR = "spool"
TMP_DIR = "tmp"
KEYS_DIR = "keys"
AUDIT_HEAD = "audit.head"
DIR_MODE = 0o700
SYSTEM_ANCHOR_DIR = Path("/var/log/callrec")


def default_home(env: Mapping[str, str]) -> Path:
    """The data directory when ``--home`` is not given: ``$CALLREC_HOME``, else
    ``~/.local/share/callrec``. ``~`` is ``env['HOME']`` (else the user's home directory)."""
    user_home = env.get("HOME", "").strip()
    home = Path(user_home) if user_home else Path.home()
    explicit = env.get("CALLREC_HOME", "").strip()
    if not explicit:
        return (home / ".local" / "share" / "callrec").absolute()
    if explicit == "~" or explicit.startswith("~/"):
        return (home / explicit[2:]).absolute()
    return Path(explicit).expanduser().absolute()


def recording_name(started_ns: int, call_id: int, suffix: str = ".wav") -> str:
    """Name of a call's recording relative to the home: ``recordings/2026/11/28/42.wav``.

    The date is the call's start in UTC; ``call_id`` is the catalogue's integer id."""
    if not suffix.startswith(".") or "/" in suffix or "\\" in suffix:
        raise InvalidArgument(f"invalid recording suffix {suffix!r}: use e.g. '.wav'")
    seconds = started_ns // 1_000_000_000
    day = datetime.fromtimestamp(seconds, UTC)
    return f"{RECORDINGS_DIR}/{day:%Y/%m/%d}/{int(call_id)}{suffix}"


def default_anchor_path(root: str | os.PathLike[str], system_dir: Path = SYSTEM_ANCHOR_DIR) -> Path:
    """Where the audit anchors of the data directory ``root`` go unless configured (``audit.anchor``):
    ``/var/log/callrec/audit-anchors-<16 hex digits of sha256 of root>.jsonl`` when that directory
    exists and is writable, else ``<root>.audit-anchors`` in the directory that holds ``root``."""
    root = Path(root).expanduser().absolute()
    if system_dir.is_dir() and os.access(system_dir, os.W_OK | os.X_OK):
        return system_dir / f"audit-anchors-{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.jsonl"
    return root.parent / f"{root.name}.audit-anchors"


class Home:
    """Paths inside one data directory. Creating the object touches nothing; :meth:`open` checks
    (and with ``create=True`` makes) the directories."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"Home({str(self.root)!r})"

    @property
    def catalogue_path(self) -> Path:
        """The SQLite catalogue file."""
        return self.root / CATALOGUE_NAME

    @property
    def recordings(self) -> Path:
        """Root of the date-laid-out recording files."""
        return self.root / RECORDINGS_DIR

    @property
    def spool(self) -> Path:
        """Per-call spools of the live recorder."""
        return self.root / SPOOL_DIR

    @property
    def tmp(self) -> Path:
        """Temp files of atomic writes; on the same filesystem as the recordings."""
        return self.root / TMP_DIR

    @property
    def keys(self) -> Path:
        """The appliance's keys: recording public keys and the signing key pair."""
        return self.root / KEYS_DIR

    @property
    def audit_head(self) -> Path:
        """The last signed head of the audit trail, kept outside the catalogue."""
        return self.root / AUDIT_HEAD

    def directories(self) -> tuple[Path, ...]:
        """Every directory of the layout, root first."""
        return (self.root, self.recordings, self.spool, self.tmp)

    def open(self, create: bool) -> Home:
        """Check the data directory and return ``self``.

        With ``create=True`` missing directories are made with mode 0700 (the parents of the
        root with the default mode); with ``create=False`` the directory and its catalogue must
        already exist. Raises :class:`NotFound` or :class:`StoreError` with a one-line message."""
        if create:
            _make_dir(self.root)
            _check_writable(self.root)
            for directory in self.directories()[1:]:
                _make_dir(directory)
        else:
            if self.root.exists() and not self.root.is_dir():
                raise StoreError(f"{self.root} is not a directory")
            if not self.catalogue_path.is_file():
                raise NotFound(f"no catalogue in {self.root}: run `callrec import` first")
        for directory in self.directories():
            if directory.exists():
                _check_writable(directory)
        return self

    def recording_name(self, started_ns: int, call_id: int, suffix: str = ".wav") -> str:
        """See :func:`recording_name`."""
        return recording_name(started_ns, call_id, suffix)

    def audit_trail(self, db: Database, anchor: str | os.PathLike[str] | None = None) -> AuditTrail:
        """The audit trail in ``db`` (this home's catalogue), signed with this home's signing key and
        anchored in the file ``anchor`` (default: :func:`default_anchor_path`). Without keys yet,
        entries are chained and signed checkpoints wait for ``callrec keys init``."""
        keys = KeyDirectory(self.keys)
        signing: Ed25519PrivateKey | None = None
        verify: Ed25519PublicKey | None = None
        with contextlib.suppress(KeyMissing):
            signing, verify = keys.signing_key(), keys.verify_key()
        anchors = FileAnchorStore(default_anchor_path(self.root) if anchor is None else anchor)
        return AuditTrail(
            db, signing_key=signing, verify_key=verify, head_path=self.audit_head, anchor=anchors
        )

    def recording_store(self, storage: StorageSettings | None = None) -> ObjectStore:
        """Where this home's recordings are kept (``[storage]``): by default the files under the home
        (temp files in ``tmp/``); with an ``s3://`` url, objects in that bucket (boto3 is imported
        only then)."""
        if storage is None or storage.url is None:
            return RecordingStore(self.root, tmp_dir=self.tmp)
        from callrec.store.objects.s3 import S3RecordingStore

        return S3RecordingStore(storage)


def _make_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) if needed; the leaf gets exactly mode 0700."""
    if path.is_dir():
        return
    if path.exists():
        raise StoreError(f"{path} exists and is not a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StoreError(f"cannot create {path}: a parent is not a directory") from None
    except PermissionError:
        raise StoreError(f"cannot create {path}: permission denied") from None
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        path.mkdir(mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # the umask may have removed bits; make it exact
    except FileExistsError:
        if not path.is_dir():
            raise StoreError(f"{path} exists and is not a directory") from None
    except PermissionError:
        raise StoreError(f"cannot create {path}: permission denied") from None
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None


def _check_writable(path: Path) -> None:
    if not path.is_dir():
        raise StoreError(f"{path} is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write to {path}: permission denied")
