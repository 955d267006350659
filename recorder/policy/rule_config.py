"""The ``[[rules]]`` of the configuration read into a :class:`~callrec.recorder.policy.rules.RuleSet`:
every key and value checked, every problem reported with its rule and key at once
(:class:`RulesError`)."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace

from callrec.recorder.policy.direction import DIRECTIONS, PolicyError, parse_address
from callrec.recorder.policy.rules import (
    ACTION_KEYS,
    CHANNELS,
    CONSENT_MODES,
    DAYS,
    DEFAULT_RULE,
    FORMATS,
    MATCH_KEYS,
    PATTERN_KINDS,
    RECORD_MODES,
    Actions,
    Pattern,
    Rule,
    RuleSet,
    TimeWindow,
)

_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


_KIND_PREFIX = re.compile(r"^([a-z]+):")


_TIME_RANGE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


_Bad = Callable[[str, str], None]  # reports one problem of the rule being parsed: bad(key, reason)


class RulesError(PolicyError):
    """The rules cannot be used: every problem, one line each, naming the rule and the key."""


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
