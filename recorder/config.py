"""The appliance's configuration: TOML files merged in order, checked, with defaults.

Files, each optional, read in this order (later values override earlier ones, table by table)::

    <system dir>/callrec.toml          /etc/callrec unless $CALLREC_CONFIG_DIR says otherwise
    <system dir>/callrec.d/*.toml      drop-ins, by file name
    <home>/callrec.toml                a user install's own configuration
    <home>/callrec.d/*.toml

Every error names the file, the key and the reason (:class:`ConfigError`). What is known so far::

    [retention]                 # named retention classes: <n>h, d, w, m (months) or y (years)
    default = "30d"
    qa = "90d"
    mifid = "5y"

    [recording]
    retention = "default"       # the class stamped on new recordings
    queue_header = "X-Queue"    # SIP header of the INVITE that names the queue

    [keys]
    private_key = ["/media/compliance/callrec-recording.key"]   # key files for opening recordings

    [audit]
    anchor = "/var/log/callrec/anchors.jsonl"   # the audit trail's anchors, outside the data directory

    [capture]                   # how calls are followed (capture.tracking.tracker.TrackerConfig)
    media_timeout_s = 300       # answered, not held, no RTP and no SIP: ended by timeout
    setup_timeout_s = 180
    max_call_s = 43200
    unsignalled = true          # RTP without its SIP becomes an "unsignalled" call (false: dropped)
    unsignalled_min_packets = 25
    sip_ports = [5060, 5080]    # SIP only on these ports (default: any port, recognised by content)
    max_calls = 100000          # calls followed at once; new calls beyond are counted and logged

    [direction]                 # how calls are classified (recorder.policy.direction)
    internal_networks = ["198.51.100.0/24"]
    pbx = ["198.51.100.5"]
    trunks = ["203.0.113.1"]
    internal_numbers = ["2??"]

    [[rules]]                   # recording rules, first match wins (recorder.policy.rules); drop-ins append
    name = "sales-qa"
    direction = "inbound"
    queue = "sales"
    retention = "qa"

    [controls]                  # on-demand start/stop and pause/resume codes (recorder.policy.controls)
    start = "*1"
    pause = "*3"

    [consent]                   # how consent is established (recorder.policy.controls)
    announcement = "consent.wav"    # relative to the file that names it
    after_s = 8

    [storage]                   # where recordings are kept (default: <home>/recordings)
    url = "s3://callrec-recordings/site-a"   # an S3 bucket and key prefix (needs callrec[fleet])
    endpoint_url = "https://s3.example.net"  # S3-compatible store (default: AWS)
    region = "eu-west-1"
    object_lock = "compliance"  # or "governance", "off": retain each object until its expiry
    part_size = "8MiB"          # multipart part size (5 MiB or more): the most held in memory
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callrec.recorder.policy.controls import ConsentSettings, ControlSettings, parse_consent, parse_controls
from callrec.recorder.policy.direction import DirectionPolicy, PolicyError, parse_direction
from callrec.recorder.policy.rule_config import parse_rules
from callrec.recorder.policy.rules import RuleSet
from callrec.store.errors import InvalidArgument, StoreError
from callrec.store.objects.settings import MIN_PART_SIZE, OBJECT_LOCK_MODES, StorageSettings
from callrec.store.retention.policy import RetentionClass, parse_classes

SYSTEM_DIR = Path("/etc/callrec")
FILE_NAME = "callrec.toml"
DROP_IN_DIR = "callrec.d"
DEFAULT_RETENTION = {"default": "30d"}
QUEUE_HEADERS = ("x-queue", "diversion")  # the INVITE headers the capture side keeps

_KNOWN: dict[str, dict[str, type | tuple[type, ...]]] = {
    "retention": {},  # any class name -> duration text (checked by store.retention.purge)
    "recording": {"retention": str, "queue_header": str},
    "keys": {"private_key": (str, list)},
    "audit": {"anchor": str},
    "direction": {},  # checked by recorder.policy.direction
    "controls": {},  # checked by recorder.policy.controls
    "consent": {},
    "rules": {},  # an array of tables, checked by recorder.policy.rules
    "storage": {
        "url": str,
        "endpoint_url": str,
        "region": str,
        "object_lock": str,
        "part_size": (str, int),
    },
    "capture": {
        "media_timeout_s": (int, float),
        "setup_timeout_s": (int, float),
        "max_call_s": (int, float),
        "unsignalled": bool,
        "unsignalled_min_packets": int,
        "sip_ports": list,
        "max_calls": int,
    },
}


EX_CONFIG = 78  # sysexits.h: configuration error; the units' RestartPreventExitStatus=78


class ConfigError(StoreError):
    """A configuration file cannot be used: ``file: key: reason`` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class Config:
    """The merged, checked configuration."""

    files: tuple[Path, ...] = ()
    retention: Mapping[str, RetentionClass] = field(default_factory=dict)
    recording_retention: str = "default"
    queue_header: str = "x-queue"
    private_keys: tuple[Path, ...] = ()
    audit_anchor: Path | None = None  # None: store.home.default_anchor_path
    audit_anchor_set_by: Path | None = None  # the file that set it
    capture: Mapping[str, Any] = field(default_factory=dict)  # TrackerConfig overrides
    direction: DirectionPolicy = field(default_factory=lambda: parse_direction({}))
    rules: RuleSet = field(
        default_factory=lambda: parse_rules([], retention_classes=["default"], default_retention="default")
    )
    controls: ControlSettings = field(default_factory=ControlSettings)
    consent: ConsentSettings = field(default_factory=ConsentSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    merged: Mapping[str, Any] = field(default_factory=dict)

    @staticmethod
    def defaults() -> Config:
        """The configuration when no file exists."""
        return load_config([])

    def retention_class(self, name: str | None = None) -> RetentionClass:
        """The named class (default: the one for new recordings)."""
        return self.retention[name or self.recording_retention]


def system_dir(env: Mapping[str, str]) -> Path:
    """``$CALLREC_CONFIG_DIR`` if set, else ``/etc/callrec``."""
    explicit = env.get("CALLREC_CONFIG_DIR", "").strip()
    return Path(explicit) if explicit else SYSTEM_DIR


def config_files(directories: Sequence[Path]) -> list[Path]:
    """The files that exist, in the order they are merged."""
    found: list[Path] = []
    for directory in directories:
        main = directory / FILE_NAME
        if main.is_file():
            found.append(main)
        drop_ins = directory / DROP_IN_DIR
        if drop_ins.is_dir():
            found += sorted(p for p in drop_ins.glob("*.toml") if p.is_file())
    return found


def load_config(directories: Sequence[Path]) -> Config:
    """Read, merge and check the configuration of ``directories`` (system dir, then home)."""
    files = config_files(directories)
    merged: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, str], Path] = {}
    rules: list[tuple[Path, Any]] = []  # every [[rules]] entry with its file, in order
    problems: list[str] = []
    for path in files:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
            continue
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}: not valid TOML: {exc}")
            continue
        for table, values in data.items():
            if table not in _KNOWN:
                problems.append(f"{path}: [{table}]: unknown section (known: {', '.join(sorted(_KNOWN))})")
                continue
            if table == "rules":
                if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
                    problems.append(f"{path}: rules: must be [[rules]] tables")
                else:
                    rules += [(path, item) for item in values]
                continue
            if not isinstance(values, dict):
                problems.append(f"{path}: {table}: must be a [{table}] table")
                continue
            for key, value in values.items():
                problems += _check_value(path, table, key, value)
                merged.setdefault(table, {})[key] = value
                origin[(table, key)] = path
    if problems:
        raise ConfigError(problems)
    return _build(files, merged, origin, rules)


def _check_value(path: Path, table: str, key: str, value: object) -> list[str]:
    known = _KNOWN[table]
    if table == "retention":
        return [] if isinstance(value, str) else [f'{path}: retention.{key}: must be text like "90d"']
    if table in ("direction", "controls", "consent"):
        return []  # checked as a whole by recorder.policy.direction / recorder.policy.controls
    if key not in known:
        return [f"{path}: {table}.{key}: unknown key (known: {', '.join(sorted(known))})"]
    expected = known[key]
    if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
        return [f"{path}: {table}.{key}: wrong type {type(value).__name__}"]
    if key == "sip_ports" and not all(type(p) is int and 0 < p < 65536 for p in value):  # type: ignore[attr-defined]
        return [f"{path}: capture.sip_ports: must be a list of port numbers (1-65535)"]
    if table == "capture" and isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        return [f"{path}: {table}.{key}: must be greater than 0, not {value}"]
    return []


def _build(
    files: list[Path],
    merged: dict[str, dict[str, Any]],
    origin: dict[tuple[str, str], Path],
    rules: list[tuple[Path, Any]],
) -> Config:
    def where(table: str, key: str) -> str:
        path = origin.get((table, key))
        return f"{path}: {table}.{key}" if path else f"{table}.{key}"

    retention_text = {**DEFAULT_RETENTION, **merged.get("retention", {})}
    try:
        classes = parse_classes(retention_text)
    except StoreError as exc:
        raise ConfigError([f"retention: {exc}"]) from None
    recording = merged.get("recording", {})
    chosen = recording.get("retention", "default")
    if chosen not in classes:
        raise ConfigError(
            [f"{where('recording', 'retention')}: no retention class {chosen!r} (have: {', '.join(classes)})"]
        )
    header = str(recording.get("queue_header", "X-Queue")).strip().lower()
    if header not in QUEUE_HEADERS:
        raise ConfigError(
            [f"{where('recording', 'queue_header')}: {header!r} is not kept by the capture "
             f"(one of: {', '.join(QUEUE_HEADERS)})"]
        )  # fmt: skip
    keys = merged.get("keys", {}).get("private_key", [])
    key_list = [keys] if isinstance(keys, str) else list(keys)
    if not all(isinstance(k, str) and k for k in key_list):
        raise ConfigError([f"{where('keys', 'private_key')}: must be a path or a list of paths"])
    anchor = merged.get("audit", {}).get("anchor")
    if anchor is not None and not anchor.strip():
        raise ConfigError([f"{where('audit', 'anchor')}: must be a file path"])
    try:
        direction = parse_direction(merged.get("direction", {}))
    except PolicyError as exc:
        paths = sorted({str(p) for (table, _), p in origin.items() if table == "direction"})
        raise ConfigError([f"{', '.join(paths)}: {problem}" for problem in exc.problems]) from None
    problems: list[str] = []
    controls = ControlSettings()
    consent = ConsentSettings()
    try:
        controls = parse_controls(merged.get("controls", {}))
    except PolicyError as exc:
        problems += [f"{_origin_of(origin, 'controls', problem)}: {problem}" for problem in exc.problems]
    consent_file = origin.get(("consent", "announcement"))
    try:
        consent = parse_consent(merged.get("consent", {}), base=consent_file.parent if consent_file else None)
    except PolicyError as exc:
        problems += [f"{_origin_of(origin, 'consent', problem)}: {problem}" for problem in exc.problems]
    if problems:
        raise ConfigError(problems)
    try:
        rule_set = parse_rules(
            [item for _, item in rules], retention_classes=classes, default_retention=chosen
        )
    except PolicyError as exc:
        raise ConfigError([_rule_problem(problem, rules) for problem in exc.problems]) from None
    storage = _storage(merged.get("storage", {}), where)
    shown: dict[str, Any] = dict(merged)
    if rules:
        shown["rules"] = [item for _, item in rules]
    return Config(
        files=tuple(files),
        direction=direction,
        rules=rule_set,
        retention=classes,
        recording_retention=chosen,
        queue_header=header,
        private_keys=tuple(Path(k).expanduser() for k in key_list),
        audit_anchor=None if anchor is None else Path(anchor).expanduser().absolute(),
        audit_anchor_set_by=origin.get(("audit", "anchor")),
        capture={k: frozenset(v) if k == "sip_ports" else v for k, v in merged.get("capture", {}).items()},
        controls=controls,
        consent=consent,
        storage=storage,
        merged=shown,
    )


_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


def _storage(table: Mapping[str, Any], where: Callable[[str, str], str]) -> StorageSettings:
    """The ``[storage]`` table, checked: an ``s3://`` url, a known Object Lock mode, a part size of
    at least 5 MiB (S3's smallest), an http(s) endpoint."""
    problems: list[str] = []
    url = table.get("url")
    if url is not None and not url.strip():
        url = None
    lock = str(table.get("object_lock", "off")).strip().lower()
    if lock not in OBJECT_LOCK_MODES:
        problems.append(
            f"{where('storage', 'object_lock')}: {lock!r} is not one of {', '.join(OBJECT_LOCK_MODES)}"
        )
    endpoint = table.get("endpoint_url")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        problems.append(f"{where('storage', 'endpoint_url')}: {endpoint!r} is not an http:// or https:// url")
    part = table.get("part_size", 8 << 20)
    size = part if isinstance(part, int) else None
    if isinstance(part, str):
        found = _SIZE.fullmatch(part.strip())
        size = int(found.group(1)) * _UNITS[(found.group(2) or "").lower()] if found else None
    if size is None or size < MIN_PART_SIZE:
        problems.append(
            f'{where("storage", "part_size")}: {part!r} is not a size of 5 MiB or more (e.g. "8MiB")'
        )
    if url is None and lock != "off":
        problems.append(f"{where('storage', 'object_lock')}: needs [storage] url (an s3:// bucket)")
    if problems:
        raise ConfigError(problems)
    try:
        return StorageSettings(
            url=url,
            endpoint_url=endpoint,
            region=table.get("region"),
            object_lock=lock,
            part_size=int(size or 0),
        )
    except InvalidArgument as exc:
        raise ConfigError([f"{where('storage', 'url')}: {exc}"]) from None


def _origin_of(origin: Mapping[tuple[str, str], Path], table: str, problem: str) -> str:
    """The file that set the key a ``table.key: reason`` problem is about (else every file of the table)."""
    key = problem.split(":", 1)[0].removeprefix(f"{table}.")
    path = origin.get((table, key))
    if path is not None:
        return str(path)
    return ", ".join(sorted({str(p) for (t, _), p in origin.items() if t == table})) or table


def _rule_problem(problem: str, rules: list[tuple[Path, Any]]) -> str:
    """``rules[2] 'x': ...`` prefixed with the file that rule came from."""
    found = re.match(r"rules\[(\d+)\]", problem)
    if found and int(found.group(1)) < len(rules):
        return f"{rules[int(found.group(1))][0]}: {problem}"
    return f"{', '.join(sorted({str(path) for path, _ in rules}))}: {problem}"


def load_for_home(home: Path, env: Mapping[str, str] | None = None) -> Config:
    """The configuration of a data directory: the system directory, then the home's own. The audit
    anchor is where the trail is held to from outside the data directory, so only the system
    directory may move it."""
    config = load_config([system_dir(os.environ if env is None else env), home])
    origin = config.audit_anchor_set_by
    if origin is not None and Path(origin).absolute().is_relative_to(Path(home).absolute()):
        raise ConfigError([f"{origin}: audit.anchor: may only be set in the system configuration directory"])
    return config
