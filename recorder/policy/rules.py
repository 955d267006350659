"""Recording rules: which calls are recorded, how, and for how long they are kept.

Configured as an array of tables, tried in order; the first rule whose match keys all hold decides::

    [[rules]]
    name = "internal"
    direction = "internal"              # one or a list of: inbound outbound internal external unknown
    record = "never"

    [[rules]]
    name = "sales-qa"
    direction = ["inbound", "outbound"]
    queue = ["sales", "Sales-EU"]       # the queue the pipeline found (header or called number); any case
    callee = ["prefix:+35226", "glob:2??", "regex:^\\+352(26|27)"]   # a bare pattern is a glob
    time = "08:00-18:00"                # UTC, start inclusive, end exclusive; may cross midnight
    days = ["mon", "tue", "wed", "thu", "fri"]   # a window crossing midnight belongs to its start day
    record = "always"
    min_duration = 5                    # seconds of talk time (answer to end); shorter: no audio stored
    format = "mp3"
    retention = "qa"                    # a class of [retention]
    consent = "required"
    channels = "both"                   # or "caller" / "callee": one direction only

    [[rules]]
    name = "default"                    # optional; must be last and have no match keys
    record = "never"

Other match keys: ``caller``, ``request_uri`` (its user part) like ``callee``; ``pbx`` (the caller's or the
callee's address is one of these); ``codec`` (any of the call's codecs, any case). Regexes are searched
(anchor them with ``^``/``$``), prefixes and globs match the whole number as signalled.

The default rule decides when no other rule matches. Actions a rule leaves out come from the default
rule; what it leaves out comes from the built-in default: ``record = "always"``, no ``min_duration``,
``format = "wav"``, the recording retention class of ``[recording]``, ``consent = "not-required"``,
``channels = "both"``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection
from dataclasses import dataclass, field

from callrec.capture.sip.addresses import dialled_number
from callrec.recorder.policy.direction import Address, parse_address
from callrec.recorder.policy.facts import CallFacts

PATTERN_KINDS = ("prefix", "glob", "regex")
RECORD_MODES = ("always", "on-demand", "never")
FORMATS = ("wav", "mp3")
CONSENT_MODES = ("required", "not-required")
CHANNELS = ("both", "caller", "callee")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MATCH_KEYS = ("direction", "caller", "callee", "request_uri", "queue", "pbx", "codec", "time", "days")
ACTION_KEYS = ("record", "min_duration", "format", "retention", "consent", "channels")
DEFAULT_RULE = "default"


@dataclass(frozen=True, slots=True)
class Pattern:
    """A number pattern: ``prefix``, ``glob`` (``*``, ``?``, ``[...]``) or ``regex`` (searched)."""

    kind: str
    text: str
    regex: re.Pattern[str] | None = None

    def matches(self, value: str) -> bool:
        if self.kind == "prefix":
            return value.startswith(self.text)
        if self.regex is not None:
            return self.regex.search(value) is not None
        return fnmatch.fnmatchcase(value, self.text)

    def __str__(self) -> str:
        return f"{self.kind}:{self.text}"


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Minutes of the UTC day ``[start, end)``, crossing midnight when ``start > end``; ``days`` (Monday
    is 0) restricts the day the window starts on (empty: every day)."""

    start: int
    end: int
    days: frozenset[int] = frozenset()

    def contains(self, ts_ns: int) -> bool:
        seconds = ts_ns // 1_000_000_000
        minute, day = (seconds // 60) % 1440, (seconds // 86400 + 3) % 7  # 1970-01-01 was a Thursday
        if self.start < self.end:
            inside, start_day = self.start <= minute < self.end, day
        elif minute >= self.start:
            inside, start_day = True, day
        else:
            inside, start_day = minute < self.end, (day - 1) % 7
        return inside and (not self.days or start_day in self.days)

    def __str__(self) -> str:
        text = f"{_hhmm(self.start)}-{_hhmm(self.end)}"
        return text + (" " + ",".join(DAYS[d] for d in sorted(self.days)) if self.days else "")


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _when(ts_ns: int) -> str:
    seconds = ts_ns // 1_000_000_000
    return f"{DAYS[(seconds // 86400 + 3) % 7]} {_hhmm((seconds // 60) % 1440)}"


@dataclass(frozen=True, slots=True)
class Actions:
    record: str = "always"
    min_duration: float = 0.0
    format: str = "wav"
    retention: str = "default"
    consent: str = "not-required"
    channels: str = "both"


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: its match keys (None: not given, matches anything) and its actions."""

    name: str
    actions: Actions
    direction: frozenset[str] | None = None
    caller: tuple[Pattern, ...] | None = None
    callee: tuple[Pattern, ...] | None = None
    request_uri: tuple[Pattern, ...] | None = None
    queue: frozenset[str] | None = None  # casefolded
    pbx: frozenset[Address] | None = None
    codec: frozenset[str] | None = None  # casefolded
    time: TimeWindow | None = None

    def check(self, facts: CallFacts) -> tuple[bool, str]:
        """(matched, why): the conditions that held, or the first one that did not."""
        held: list[str] = []
        for ok, why in self._conditions(facts):
            if not ok:
                return False, why
            held.append(why)
        return True, ", ".join(held) if held else "matches every call"

    def _conditions(self, facts: CallFacts) -> list[tuple[bool, str]]:
        out: list[tuple[bool, str]] = []
        if self.direction is not None:
            ok = facts.direction in self.direction
            out.append((ok, f"direction {facts.direction}" + ("" if ok else f" not {_any(self.direction)}")))
        for key, value in (("caller", facts.caller), ("callee", facts.callee)):
            out += _numbers(key, value, getattr(self, key))
        out += _numbers("request_uri", dialled_number(facts.request_uri), self.request_uri)
        if self.queue is not None:
            ok = facts.queue is not None and facts.queue.casefold() in self.queue
            seen = f"queue {facts.queue!r}" if facts.queue is not None else "no queue"
            out.append((ok, seen + ("" if ok else f" not {_any(self.queue)}")))
        if self.pbx is not None:
            ips = [parse_address(a) for a in facts.addresses if a]
            hit = next((ip for ip in ips if ip is not None and ip in self.pbx), None)
            seen = ", ".join(a for a in facts.addresses if a) or "none known"
            ok = hit is not None
            out.append((ok, f"pbx {hit}" if ok else f"addresses {seen} not {_any(self.pbx)}"))
        if self.codec is not None:
            hit_codec = next((c for c in facts.codecs if c.casefold() in self.codec), None)
            seen = ", ".join(facts.codecs) or "none"
            ok = hit_codec is not None
            out.append((ok, f"codec {hit_codec}" if ok else f"codecs {seen} not {_any(self.codec)}"))
        if self.time is not None:
            ok = self.time.contains(facts.started_ns)
            out.append((ok, f"time {_when(facts.started_ns)} {'in' if ok else 'outside'} {self.time}"))
        return out


def _any(values: Collection[object]) -> str:
    texts = sorted(str(v) for v in values)
    return texts[0] if len(texts) == 1 else "one of " + ", ".join(texts)


def _numbers(key: str, value: str, patterns: tuple[Pattern, ...] | None) -> list[tuple[bool, str]]:
    if patterns is None:
        return []
    hit = next((p for p in patterns if p.matches(value)), None)
    if hit is not None:
        return [(True, f"{key} {value!r} matches {hit}")]
    return [(False, f"{key} {value!r} matches none of {', '.join(str(p) for p in patterns)}")]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rules decided for one call. ``discard`` says why no audio is to be stored ("" when it
    may be: ``record = "on-demand"`` still keeps only the spans asked for)."""

    rule: str
    reason: str
    matched: bool  # False: no rule matched, the default decided
    record: str
    min_duration: float
    format: str
    retention: str
    consent: str
    channels: str
    discard: str = ""


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    default: Rule = field(default_factory=lambda: Rule(DEFAULT_RULE, Actions()))

    def explain(self, facts: CallFacts) -> list[tuple[str, bool, str]]:
        """Every rule in order, the default last: (name, matched, why or why not)."""
        rows = [(rule.name, *rule.check(facts)) for rule in self.rules]
        return [*rows, (self.default.name, True, "no rule matched: default")]

    def decide(self, facts: CallFacts) -> Decision:
        for rule in self.rules:
            matched, why = rule.check(facts)
            if matched:
                return _decision(rule, f"{why} (rule {rule.name!r})", True, facts)
        return _decision(self.default, "no rule matched: default", False, facts)


def _decision(rule: Rule, reason: str, matched: bool, facts: CallFacts) -> Decision:
    a = rule.actions
    discard = ""
    if a.record == "never":
        discard = f"rule {rule.name!r}: record = never"
    elif facts.duration_s < a.min_duration:
        talk = round(facts.duration_s, 2)
        discard = f"rule {rule.name!r}: talk time {talk:g} s < min_duration {a.min_duration:g} s"
    return Decision(
        rule=rule.name,
        reason=reason,
        matched=matched,
        record=a.record,
        min_duration=a.min_duration,
        format=a.format,
        retention=a.retention,
        consent=a.consent,
        channels=a.channels,
        discard=discard,
    )
