"""Retention classes: durations, calendar expiry (never early), and the systemd units of the daily purge."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.store.catalogue.db import iso_from_ns
from callrec.store.errors import InvalidArgument
from callrec.store.retention.policy import (
    Duration,
    RetentionClass,
    class_for,
    expiry_ns,
    parse_classes,
    parse_duration,
    retention_fields,
)
from tests.helpers.retention_env import CLASSES, DAY, SEC, SYSTEMD, T0, cls, ns  # noqa: F401

# --- durations and classes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "count", "unit"),
    [("36h", 36, "h"), ("90d", 90, "d"), ("2w", 2, "w"), ("18m", 18, "m"), ("5y", 5, "y"), (" 7D ", 7, "d")],
)
def test_parse_duration(text: str, count: int, unit: str) -> None:
    assert parse_duration(text) == Duration(count, unit)
    assert str(parse_duration(text)) == f"{count}{unit}"


def test_parse_duration_errors_are_one_actionable_line() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_duration("5 years", class_name="mifid")
    assert str(info.value) == (
        "invalid retention '5 years' for class 'mifid': "
        "use a number and a unit h, d, w, m or y, e.g. 90d or 5y"
    )
    for bad in ["", "5", "y", "1.5y", "-3d", "5 d 2h", "5s", "٣d", "90 days"]:
        with pytest.raises(InvalidArgument, match="use a number and a unit"):
            parse_duration(bad)
    with pytest.raises(InvalidArgument, match="at least 1d"):
        parse_duration("0d")
    with pytest.raises(InvalidArgument, match="too long: at most 100 years"):
        parse_duration("101y", class_name="forever")
    with pytest.raises(InvalidArgument, match="invalid retention 30 for class 'default'"):
        parse_classes({"default": 30})  # type: ignore[dict-item]
    assert parse_duration("100y") == Duration(100, "y")


def test_parse_classes() -> None:
    classes = parse_classes({"qa": "90d", "mifid": "5y", "default": "30d", "a_b-1": "1w"})
    assert classes["mifid"] == RetentionClass("mifid", Duration(5, "y"))
    assert set(classes) == {"qa", "mifid", "default", "a_b-1"}
    with pytest.raises(InvalidArgument, match="need a 'default' class"):
        parse_classes({"qa": "90d"})
    with pytest.raises(InvalidArgument, match="need a 'default' class"):
        parse_classes({})
    for name in ["MiFID", "1qa", "q a", "", "qa!"]:
        with pytest.raises(InvalidArgument, match=f"invalid retention class name {name!r}"):
            parse_classes({name: "1d", "default": "1d"})
    with pytest.raises(InvalidArgument, match="for class 'qa'"):
        parse_classes({"qa": "ninety days", "default": "30d"})


def test_class_for() -> None:
    assert class_for(CLASSES, None).name == "default"
    assert class_for(CLASSES, "year").duration == Duration(1, "y")
    with pytest.raises(InvalidArgument, match="unknown retention class 'gdpr': the configured classes are"):
        class_for(CLASSES, "gdpr")


# --- expiry arithmetic -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "duration", "end"),
    [
        ("2024-02-29T10:00:00", "1y", "2025-03-01T10:00:00"),  # no Feb 29: the day after, never Feb 28
        ("2024-02-29T10:00:00", "4y", "2028-02-29T10:00:00"),
        ("2024-02-28T23:59:59", "1y", "2025-02-28T23:59:59"),
        ("2026-01-31T08:00:00", "1m", "2026-03-01T08:00:00"),
        ("2028-01-31T08:00:00", "1m", "2028-03-01T08:00:00"),  # leap year: Feb 29 exists, 31 does not
        ("2028-01-29T08:00:00", "1m", "2028-02-29T08:00:00"),
        ("2026-03-31T00:00:00", "1m", "2026-05-01T00:00:00"),
        ("2026-01-15T12:30:00", "1m", "2026-02-15T12:30:00"),
        ("2026-11-30T12:00:00", "3m", "2027-03-01T12:00:00"),
        ("2026-12-15T00:00:00", "1m", "2027-01-15T00:00:00"),
        ("2026-11-28T14:02:03", "5y", "2031-11-28T14:02:03"),
        ("2026-11-28T14:02:03", "90d", "2027-02-26T14:02:03"),
        ("2026-11-28T14:02:03", "2w", "2026-12-12T14:02:03"),
        ("2026-11-28T14:02:03", "36h", "2026-11-30T02:02:03"),
        ("1969-12-31T23:00:00", "1m", "1970-01-31T23:00:00"),
    ],
)
def test_expiry_calendar_examples(start: str, duration: str, end: str) -> None:
    assert iso_from_ns(expiry_ns(ns(start), cls(duration)))[:19] == end


def test_expiry_keeps_fractions_of_a_second() -> None:
    start = ns("2024-02-29T10:00:00") + 123_456_789
    assert expiry_ns(start, cls("1y")) == ns("2025-03-01T10:00:00") + 123_456_789
    assert expiry_ns(start, cls("1d")) == start + DAY


def test_expiry_out_of_range() -> None:
    with pytest.raises(InvalidArgument, match="beyond the year 2262"):
        expiry_ns(2**63 - 10 * DAY, cls("30d"))
    with pytest.raises(InvalidArgument, match="beyond the year 2262"):
        expiry_ns(ns("2200-01-01T00:00:00"), cls("100y"))


def test_retention_fields() -> None:
    fields = retention_fields(ns("2024-02-29T10:00:00"), CLASSES["year"])
    assert fields == {
        "retention_class": "year",
        "expires_ns": ns("2025-03-01T10:00:00"),
        "expires_at": "2025-03-01T10:00:00.000Z",
    }


START = st.integers(ns("1970-01-01T00:00:00"), ns("2150-12-31T23:59:59") + SEC - 1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CALENDAR = st.one_of(
    st.builds(Duration, st.integers(1, 1200), st.just("m")),
    st.builds(Duration, st.integers(1, 100), st.just("y")),
)


@settings(max_examples=400, deadline=None)
@given(start=START, duration=CALENDAR)
def test_calendar_expiry_is_never_early(start: int, duration: Duration) -> None:
    count, unit = duration.count, duration.unit
    months = count * (12 if unit == "y" else 1)
    end = expiry_ns(start, RetentionClass("x", duration))
    begin = EPOCH + timedelta(microseconds=start // 1000)
    year, month0 = divmod(begin.year * 12 + begin.month - 1 + months, 12)
    # the calendar date itself when it exists, else the first of the next month; same time of day
    try:
        want = begin.replace(year=year, month=month0 + 1)
    except ValueError:
        first = begin.replace(year=year, month=month0 + 1, day=1)
        want = (first + timedelta(days=32)).replace(day=1)
    assert end // 1000 == (want - EPOCH) // timedelta(microseconds=1)
    assert end % 1000 == start % 1000
    assert end - start >= months * 28 * DAY  # the shortest possible calendar months
    if unit == "y":
        assert end - start >= count * 365 * DAY  # never a day early over leap years
    assert end - start <= months * 31 * DAY + DAY


@settings(max_examples=300, deadline=None)
@given(a=START, b=START, duration=st.sampled_from(["1m", "3m", "1y", "5y", "90d", "36h"]))
def test_a_later_call_never_expires_earlier(a: int, b: int, duration: str) -> None:
    first, second = sorted((a, b))
    assert expiry_ns(first, cls(duration)) <= expiry_ns(second, cls(duration))


# --- systemd units -----------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def test_retention_service_unit() -> None:
    service = unit("callrec-retention.service")["Service"]
    assert service["Type"] == "oneshot" and service["User"] == "callrec"
    assert service["ExecStart"] == "/usr/bin/callrec --home /var/lib/callrec retention apply"
    assert service["ProtectSystem"] == "strict" and service["ReadWritePaths"] == "/var/lib/callrec"
    for setting in ["PrivateTmp", "NoNewPrivileges", "ProtectHome", "PrivateNetwork", "PrivateDevices"]:
        assert service[setting] == "yes", setting
    assert service["UMask"] == "0077"


def test_retention_timer_unit() -> None:
    timer = unit("callrec-retention.timer")
    assert timer["Timer"]["OnCalendar"] == "daily" and timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["RandomizedDelaySec"]
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_units_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` is clean once /usr/bin/callrec exists (here: a stand-in)."""
    for name in ("callrec-retention.service", "callrec-retention.timer"):
        text = (SYSTEMD / name).read_text().replace("/usr/bin/callrec", shutil.which("true") or "/bin/true")
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(p) for p in sorted(tmp_path.iterdir()))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
