"""Retention classes and what they mean for a call: durations (``90d``, ``5y``) parsed and checked,
and the expiry of a call started at a given time (calendar months and years, UTC)."""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from callrec.store.catalogue.migrations import NS_PER_SECOND, iso_from_ns
from callrec.store.errors import InvalidArgument

DEFAULT_CLASS = "default"


_DAY_S = 86_400


_NS_PER_UNIT = {"h": 3600 * NS_PER_SECOND, "d": _DAY_S * NS_PER_SECOND, "w": 7 * _DAY_S * NS_PER_SECOND}


_MONTHS_PER_UNIT = {"m": 1, "y": 12}


_MAX_COUNT = {"h": 876_600, "d": 36_525, "w": 5_218, "m": 1_200, "y": 100}  # 100 years


_DURATION = re.compile(r"\s*([0-9]+)\s*([hdwmy])\s*", re.IGNORECASE)


_CLASS_NAME = re.compile(r"[a-z][a-z0-9_-]*")


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


_HELP = "use a number and a unit h, d, w, m or y, e.g. 90d or 5y"


@dataclass(frozen=True, slots=True)
class Duration:
    """A retention period: ``count`` of ``unit`` (``h`` hours, ``d`` days, ``w`` weeks, ``m``
    calendar months, ``y`` calendar years). ``str()`` gives it back as ``90d``."""

    count: int
    unit: str

    def __str__(self) -> str:
        return f"{self.count}{self.unit}"

    def after(self, start_ns: int) -> int:
        """The instant this duration after ``start_ns``; see :func:`expiry_ns`."""
        if self.unit in _NS_PER_UNIT:
            end = start_ns + self.count * _NS_PER_UNIT[self.unit]
        else:
            end = _add_months(start_ns, self.count * _MONTHS_PER_UNIT[self.unit], self)
        if end > _INT64_MAX:
            raise InvalidArgument(f"retention {self} after {start_ns} ns ends beyond the year 2262")
        return end


@dataclass(frozen=True, slots=True)
class RetentionClass:
    """A named retention policy from the configuration."""

    name: str
    duration: Duration


def parse_duration(text: str, *, class_name: str | None = None) -> Duration:
    """``90d`` -> ``Duration(90, "d")``. Units: h, d, w, m (calendar months), y (calendar years);
    at least 1, at most 100 years. ``class_name`` only makes the error message clearer."""
    where = "" if class_name is None else f" for class {class_name!r}"
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidArgument(f"invalid retention {text!r}{where}: {_HELP}")
    count, unit = int(match[1]), match[2].lower()
    if count < 1:
        raise InvalidArgument(f"invalid retention {text!r}{where}: it must be at least 1{unit}")
    if count > _MAX_COUNT[unit]:
        raise InvalidArgument(
            f"retention {text!r}{where} is too long: at most 100 years ({_MAX_COUNT[unit]}{unit})"
        )
    return Duration(count, unit)


def parse_classes(mapping: Mapping[str, str]) -> dict[str, RetentionClass]:
    """Retention classes from configuration (``{"qa": "90d", "default": "30d"}``). Names are
    lowercase (``[a-z][a-z0-9_-]*``); a ``default`` class is required. Raises InvalidArgument."""
    classes: dict[str, RetentionClass] = {}
    for name, text in mapping.items():
        if not isinstance(name, str) or _CLASS_NAME.fullmatch(name) is None:
            raise InvalidArgument(
                f"invalid retention class name {name!r}: use lowercase letters, digits, '_' and '-', "
                "starting with a letter"
            )
        classes[name] = RetentionClass(name, parse_duration(text, class_name=name))
    if DEFAULT_CLASS not in classes:
        raise InvalidArgument(
            "retention classes need a 'default' class (used when no rule names one), e.g. default = \"30d\""
        )
    return classes


def class_for(classes: Mapping[str, RetentionClass], name: str | None) -> RetentionClass:
    """The class called ``name`` (``None``: the default class); unknown names raise InvalidArgument."""
    cls = classes.get(DEFAULT_CLASS if name is None else name)
    if cls is None:
        known = ", ".join(sorted(classes)) or "none"
        raise InvalidArgument(f"unknown retention class {name!r}: the configured classes are {known}")
    return cls


def expiry_ns(started_ns: int, cls: RetentionClass) -> int:
    """When a recording started at ``started_ns`` expires under ``cls``.

    Hours, days and weeks are exact. Months and years are calendar arithmetic in UTC: the same
    time of day on the same day of the month ``n`` months later; where that day does not exist
    (Jan 31 + 1m, Feb 29 + 1y) it is the first day of the following month, never the day before.
    So a recording never expires earlier than its calendar period."""
    return cls.duration.after(started_ns)


def retention_fields(started_ns: int, cls: RetentionClass) -> dict[str, Any]:
    """The call fields that stamp a recording with its class: retention_class, expires_ns, expires_at."""
    expires = expiry_ns(started_ns, cls)
    return {"retention_class": cls.name, "expires_ns": expires, "expires_at": iso_from_ns(expires)}


def _add_months(start_ns: int, months: int, duration: Duration) -> int:
    seconds, fraction = divmod(start_ns, NS_PER_SECOND)
    days, second_of_day = divmod(seconds, _DAY_S)
    try:
        start = date.fromordinal(_EPOCH_ORDINAL + days)
        year, month0 = divmod(start.year * 12 + start.month - 1 + months, 12)
        last_day = calendar.monthrange(year, month0 + 1)[1]
        end = date(year, month0 + 1, min(start.day, last_day))
        if start.day > last_day:
            end += timedelta(days=1)  # no such day in that month: the next day, never the one before
    except (ValueError, OverflowError):
        raise InvalidArgument(f"retention {duration} after {start_ns} ns is out of range") from None
    return ((end.toordinal() - _EPOCH_ORDINAL) * _DAY_S + second_of_day) * NS_PER_SECOND + fraction


_INT64_MAX = 2**63 - 1
