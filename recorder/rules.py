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

import difflib
import fnmatch
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

from capture.calls import CallState, CapturedCall
from recorder.direction import DIRECTIONS, Address, PolicyError, call_addresses, parse_address

PATTERN_KINDS = ("prefix", "glob", "regex")
RECORD_MODES = ("always", "on-demand", "never")
FORMATS = ("wav", "mp3")
CONSENT_MODES = ("required", "not-required")
CHANNELS = ("both", "caller", "callee")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MATCH_KEYS = ("direction", "caller", "callee", "request_uri", "queue", "pbx", "codec", "time", "days")
ACTION_KEYS = ("record", "min_duration", "format", "retention", "consent", "channels")
DEFAULT_RULE = "default"
_KIND_PREFIX = re.compile(r"^([a-z]+):")
_TIME_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_Bad = Callable[[str, str], None]  # reports one problem of the rule being parsed: bad(key, reason)


class RulesError(PolicyError):
    """The rules cannot be used: every problem, one line each, naming the rule and the key."""


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the rules look at. ``addresses`` are the caller's and the callee's (None when not known);
    ``duration_s`` is talk time: answer to end (0 for a call never answered)."""

    direction: str
    caller: str
    callee: str
    request_uri: str = ""
    queue: str | None = None
    addresses: tuple[str | None, str | None] = (None, None)
    codecs: tuple[str, ...] = ()
    started_ns: int = 0
    duration_s: float = 0.0


def facts_from_call(
    call: CapturedCall, direction: str, queue: str | None, codecs: Sequence[str]
) -> CallFacts:
    """The facts of a finished call. An unsignalled call (RTP only) counts as talking from its start."""
    if call.answered_ns is not None:
        talk_ns = call.ended_ns - call.answered_ns
    elif call.state is CallState.UNSIGNALLED:
        talk_ns = call.ended_ns - call.started_ns
    else:
        talk_ns = 0
    return CallFacts(
        direction=direction,
        caller=call.caller,
        callee=call.callee,
        request_uri=call.request_uri,
        queue=queue,
        addresses=call_addresses(call),
        codecs=tuple(codecs),
        started_ns=call.started_ns,
        duration_s=max(talk_ns, 0) / 1e9,
    )


def call_codecs(call: CapturedCall) -> tuple[str, ...]:
    """The encodings of the payload types the call's media used (both legs, sorted), or those the SDP
    offered when no packet was seen. Unknown payload types are left out."""
    found: set[str] = set()
    for leg in call.legs.values():
        used = set(leg.packets.payload_type.tolist()) if len(leg.packets) else set(leg.formats)
        found |= {leg.formats[pt].encoding for pt in used if pt in leg.formats}
    return tuple(sorted(found, key=str.casefold))


def uri_user(uri: str) -> str:
    """The user part of a SIP/tel URI (``sip:+35226123@pbx;user=phone`` -> ``+35226123``); text that is
    not a URI is returned as it is."""
    text = re.sub(r"^(sips?|tel):", "", uri.strip().strip("<>"), flags=re.IGNORECASE)
    return text.split("@", 1)[0].split(";", 1)[0]


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
        out += _numbers("request_uri", uri_user(facts.request_uri), self.request_uri)
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


def parse_rules(
    items: Sequence[Mapping[str, object]], *, retention_classes: Collection[str], default_retention: str
) -> RuleSet:
    """The ``[[rules]]`` array. Raises :class:`RulesError` (a ``ValueError``) listing every problem as
    ``rules[<index>] '<name>': <key>: reason``."""
    problems: list[str] = []
    classes = sorted(retention_classes)
    if default_retention not in retention_classes:
        problems.append(f"rules: default retention class {default_retention!r} is not one of {classes}")
    base = Actions(retention=default_retention)
    names = [item.get("name") if isinstance(item, Mapping) else None for item in items]
    default = Rule(DEFAULT_RULE, base)
    if DEFAULT_RULE in names:
        at = names.index(DEFAULT_RULE)
        if at != len(items) - 1:
            problems.append(f"rules[{at}] 'default': the default rule must be the last one (of {len(items)})")
        given = [k for k in items[at] if k in MATCH_KEYS]
        if given:
            problems.append(
                f"rules[{at}] 'default': the default rule cannot have match keys ({', '.join(given)})"
            )
        parsed = _parse_rule(at, items[at], base, retention_classes, problems)
        default = parsed if parsed is not None else default
    rules: list[Rule] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(items):
        name = names[index]
        if isinstance(name, str) and name:
            if name in first_index:
                problems.append(f"rules[{index}] {name!r}: duplicate name (also rules[{first_index[name]}])")
            first_index.setdefault(name, index)
        if name == DEFAULT_RULE:
            continue
        rule = _parse_rule(index, item, default.actions, retention_classes, problems)
        if rule is not None:
            rules.append(rule)
    if problems:
        raise RulesError(problems)
    return RuleSet(tuple(rules), default)


def _parse_rule(
    index: int, item: object, base: Actions, classes: Collection[str], problems: list[str]
) -> Rule | None:
    if not isinstance(item, Mapping):
        problems.append(f"rules[{index}]: must be a table ([[rules]]), not {type(item).__name__}")
        return None
    name = item.get("name")
    label = f"rules[{index}] {name!r}" if isinstance(name, str) and name else f"rules[{index}]"
    before = len(problems)

    def bad(key: str, reason: str) -> None:
        problems.append(f"{label}: {key}: {reason}")

    if not isinstance(name, str) or not name.strip():
        problems.append(f'{label}: needs a name (name = "...")')
    known = ("name", *MATCH_KEYS, *ACTION_KEYS)
    for key in item:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            problems.append(f"{label}: unknown key {key!r}{hint}")
    fields: dict[str, object] = {}
    if "direction" in item:
        fields["direction"] = _choices(item["direction"], DIRECTIONS, "direction", bad)
    for key in ("caller", "callee", "request_uri"):
        if key in item:
            texts = _texts(item[key], key, bad)
            fields[key] = (
                None if texts is None else tuple(filter(None, (_pattern(t, key, bad) for t in texts)))
            )
    for key in ("queue", "codec"):
        if key in item:
            texts = _texts(item[key], key, bad)
            fields[key] = None if texts is None else frozenset(t.strip().casefold() for t in texts)
    if "pbx" in item:
        texts = _texts(item["pbx"], "pbx", bad) or []
        ips = [parse_address(t) for t in texts]
        for text, ip in zip(texts, ips, strict=True):
            if ip is None:
                bad("pbx", f"{text!r} is not an IP address")
        fields["pbx"] = frozenset(ip for ip in ips if ip is not None)
    if "time" in item or "days" in item:
        fields["time"] = _window(item.get("time"), item.get("days"), bad)
    actions = _actions(item, base, classes, bad)
    if len(problems) > before:
        return None
    return Rule(name=str(name), actions=actions, **fields)  # type: ignore[arg-type]


def _texts(value: object, key: str, bad: _Bad) -> list[str] | None:
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        bad(key, f"must be text or a list of text, not {value!r}")
        return None
    if not texts or not all(t.strip() for t in texts):
        bad(key, "an empty list or text matches no call; leave the key out to match any call")
        return None
    return texts


def _choices(value: object, allowed: Sequence[str], key: str, bad: _Bad) -> frozenset[str] | None:
    texts = _texts(value, key, bad)
    if texts is None:
        return None
    wrong = [t for t in texts if t not in allowed]
    if wrong:
        bad(key, f"{', '.join(map(repr, wrong))} not one of {', '.join(allowed)}")
    return frozenset(texts)


def _pattern(text: str, key: str, bad: _Bad) -> Pattern | None:
    found = _KIND_PREFIX.match(text)
    if found is None:
        return Pattern("glob", text)
    kind, body = found.group(1), text[found.end() :]
    if kind not in PATTERN_KINDS:
        bad(
            key,
            f"unknown pattern kind {kind!r} in {text!r} (use prefix:, glob: or regex:; bare text is a glob)",
        )
        return None
    if not body:
        bad(key, f"empty {kind} pattern {text!r}")
        return None
    if kind != "regex":
        return Pattern(kind, body)
    try:
        return Pattern(kind, body, re.compile(body))
    except re.error as exc:
        bad(key, f"regex {body!r} does not compile: {exc}")
        return None


def _window(time: object, days: object, bad: _Bad) -> TimeWindow | None:
    start, end = 0, 1440
    if time is not None:
        found = _TIME_RANGE.match(time.replace(" ", "")) if isinstance(time, str) else None
        if found is None:
            bad("time", f'{time!r} is not a range like "08:00-18:00" (UTC)')
            return None
        h1, m1, h2, m2 = (int(g) for g in found.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
            bad("time", f"{time!r} has a time of day out of range (00:00 to 24:00)")
            return None
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end:
            bad("time", f"{time!r} is an empty range; use 00:00-24:00 for the whole day")
            return None
    day_set: frozenset[int] = frozenset()
    if days is not None:
        texts = _texts(days, "days", bad)
        if texts is None:
            return None
        wrong = [d for d in texts if _day(d) is None]
        if wrong:
            bad("days", f"{', '.join(map(repr, wrong))} not one of {', '.join(DAYS)}")
            return None
        day_set = frozenset(d for d in map(_day, texts) if d is not None)
    return TimeWindow(start, end, day_set)


def _day(text: str) -> int | None:
    key = text.strip().lower()
    return next((i for i, d in enumerate(DAYS) if key in (d, _DAY_NAMES[i])), None)


def _actions(item: Mapping[str, object], base: Actions, classes: Collection[str], bad: _Bad) -> Actions:
    changes: dict[str, object] = {}
    enums = {"record": RECORD_MODES, "format": FORMATS, "consent": CONSENT_MODES, "channels": CHANNELS}
    for key in [k for k in enums if k in item]:
        changes[key] = item[key]
        if item[key] not in enums[key]:
            bad(key, f"{item[key]!r} is not one of {', '.join(enums[key])}")
    if "retention" in item:
        changes["retention"] = value = item["retention"]
        if not isinstance(value, str) or value not in classes:
            bad("retention", f"no retention class {value!r} (have: {', '.join(sorted(classes))})")
    if "min_duration" in item:
        value = item["min_duration"]
        number = value if isinstance(value, int | float) and not isinstance(value, bool) else -1.0
        if not math.isfinite(number) or number < 0:
            bad("min_duration", f"must be a number of seconds, 0 or more, not {value!r}")
        changes["min_duration"] = float(number)
    return replace(base, **changes)  # type: ignore[arg-type]
