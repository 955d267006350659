"""Recording rules: matching, first match wins, the default, every error, and decide() == explain()."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.model.calls import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    CallState,
    CapturedCall,
    CapturedLeg,
    Endpoint,
)
from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.capture.sip.addresses import dialled_number, uri_user
from callrec.recorder.policy.direction import DIRECTIONS
from callrec.recorder.policy.facts import CallFacts, call_codecs, facts_from_call
from callrec.recorder.policy.rule_config import RulesError, parse_rules
from callrec.recorder.policy.rules import RuleSet, TimeWindow

CLASSES = ("default", "qa", "mifid")


def at(text: str) -> int:
    """Nanoseconds of a UTC time like '2026-11-30 09:15' (a Monday)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * 1_000_000_000


MONDAY_0915 = at("2026-11-30 09:15")


def rules(*items: dict[str, Any], default_retention: str = "default") -> RuleSet:
    return parse_rules(list(items), retention_classes=CLASSES, default_retention=default_retention)


def facts(**changes: Any) -> CallFacts:
    base: dict[str, Any] = {
        "direction": "inbound",
        "caller": "+33123456789",
        "callee": "201",
        "request_uri": "sip:201@pbx.example;user=phone",
        "queue": None,
        "addresses": ("203.0.113.1", "198.51.100.5"),
        "codecs": ("PCMA", "telephone-event"),
        "started_ns": MONDAY_0915,
        "duration_s": 60.0,
    }
    return CallFacts(**{**base, **changes})


OFFICE = rules(
    {"name": "internal", "direction": "internal", "record": "never"},
    {
        "name": "sales-qa",
        "direction": ["inbound", "outbound"],
        "queue": ["sales", "Sales-EU"],
        "record": "always",
        "min_duration": 5,
        "format": "mp3",
        "retention": "qa",
        "consent": "required",
    },
    {"name": "traders", "caller": "prefix:+35227", "record": "always", "retention": "mifid"},
    {"name": "advisors", "callee": ["glob:3??"], "record": "on-demand", "channels": "callee"},
    {"name": "night", "time": "22:00-06:00", "record": "never"},
    {"name": "default", "record": "never"},
)


@pytest.mark.parametrize(
    ("changes", "rule", "record", "discard"),
    [
        ({"direction": "internal", "queue": "sales"}, "internal", "never", "rule 'internal': record = never"),
        ({"queue": "sales"}, "sales-qa", "always", ""),
        ({"queue": "SALES-eu", "direction": "outbound"}, "sales-qa", "always", ""),
        ({"queue": "sales", "duration_s": 4.9}, "sales-qa", "always", "talk time 4.9 s < min_duration 5 s"),
        ({"queue": "sales", "duration_s": 5.0}, "sales-qa", "always", ""),
        ({"queue": "sales", "direction": "external"}, "default", "never", "rule 'default': record = never"),
        ({"queue": "support"}, "default", "never", "record = never"),
        ({"caller": "+352271234"}, "traders", "always", ""),
        ({"caller": "+352271234", "queue": "sales"}, "sales-qa", "always", ""),  # first match wins
        ({"callee": "301"}, "advisors", "on-demand", ""),
        ({"callee": "3010"}, "default", "never", "record = never"),
        ({"started_ns": at("2026-11-30 23:30")}, "night", "never", "record = never"),
        ({"started_ns": at("2026-12-01 05:59")}, "night", "never", "record = never"),
        ({"started_ns": at("2026-12-01 06:00")}, "default", "never", "record = never"),
    ],
)
def test_matching_table(changes: dict[str, Any], rule: str, record: str, discard: str) -> None:
    decision = OFFICE.decide(facts(**changes))
    assert (decision.rule, decision.record) == (rule, record)
    assert discard in decision.discard and bool(decision.discard) == bool(discard)


def test_decision_carries_actions_and_reason() -> None:
    decision = OFFICE.decide(facts(queue="sales"))
    assert decision.reason == "direction inbound, queue 'sales' (rule 'sales-qa')"
    assert decision.matched
    assert (decision.format, decision.retention, decision.consent, decision.channels) == (
        "mp3",
        "qa",
        "required",
        "both",
    )
    assert decision.min_duration == 5.0
    fallback = OFFICE.decide(facts(direction="external"))
    assert fallback.reason == "no rule matched: default" and not fallback.matched
    # actions a rule leaves out come from the default rule (which leaves format etc. to the built-in)
    advisors = OFFICE.decide(facts(callee="301"))
    assert (advisors.format, advisors.retention, advisors.consent, advisors.channels) == (
        "wav",
        "default",
        "not-required",
        "callee",
    )


def test_builtin_default_records_everything_with_configured_retention() -> None:
    decision = rules(default_retention="qa").decide(facts())
    assert (decision.rule, decision.record, decision.format, decision.retention) == (
        "default",
        "always",
        "wav",
        "qa",
    )
    assert (decision.consent, decision.channels, decision.min_duration, decision.discard) == (
        "not-required",
        "both",
        0.0,
        "",
    )
    assert rules(default_retention="qa").explain(facts()) == [("default", True, "no rule matched: default")]


def test_default_rule_actions_are_inherited() -> None:
    ruleset = rules(
        {"name": "sales", "queue": "sales"}, {"name": "default", "record": "never", "format": "mp3"}
    )
    assert ruleset.decide(facts(queue="sales")).record == "never"  # inherited from the default rule
    assert ruleset.decide(facts(queue="sales")).format == "mp3"


@pytest.mark.parametrize(
    ("pattern", "number", "matched"),
    [
        ("prefix:+352", "+35226123", True),
        ("prefix:+352", "0035226123", False),
        ("glob:2??", "201", True),
        ("glob:2??", "2010", False),
        ("2??", "299", True),  # a bare pattern is a glob
        ("+35226*", "+35226", True),
        ("glob:[23]0?", "305", True),
        ("regex:^\\+352(26|27)", "+35227000", True),
        ("regex:^\\+352(26|27)", "+35228000", False),
        ("regex:99", "+3599123", True),  # searched, not anchored
    ],
)
def test_pattern_kinds(pattern: str, number: str, matched: bool) -> None:
    for key, value in (("caller", number), ("callee", number), ("request_uri", f"sip:{number}@x;user=phone")):
        ruleset = rules({"name": "r", key: [pattern]})
        assert (ruleset.decide(facts(**{key: value})).rule == "r") is matched, key


def test_request_uri_user_part() -> None:
    assert dialled_number("sip:+35226123@pbx.example;user=phone") == "+35226123"
    assert dialled_number("<sips:201@pbx>") == "201"
    assert dialled_number("tel:+35226123;phone-context=x") == "+35226123"
    assert dialled_number("201") == "201"
    # the same number as the catalogue shows it (capture's uri_user): visual separators removed
    assert dialled_number("tel:+1-555-0100") == uri_user("tel:+1-555-0100") == "+15550100"


def test_a_request_uri_rule_matches_the_number_the_catalogue_shows() -> None:
    ruleset = rules({"name": "us", "request_uri": ["+15550100"]})
    assert ruleset.decide(facts(request_uri="tel:+1-555-0100")).rule == "us"
    assert ruleset.decide(facts(request_uri="sip:+1-555-0100@pbx;user=phone")).rule == "us"


def test_pbx_codec_and_explain() -> None:
    ruleset = rules(
        {"name": "via-pbx", "pbx": ["198.51.100.9"]},
        {"name": "g722", "codec": "g722"},
        {"name": "pcma", "codec": ["pcma"], "pbx": "198.51.100.5"},
    )
    assert ruleset.decide(facts()).rule == "pcma"
    assert ruleset.decide(facts(codecs=("G722",))).rule == "g722"
    assert ruleset.decide(facts(addresses=("198.51.100.9", None))).rule == "via-pbx"
    assert ruleset.explain(facts()) == [
        ("via-pbx", False, "addresses 203.0.113.1, 198.51.100.5 not 198.51.100.9"),
        ("g722", False, "codecs PCMA, telephone-event not g722"),
        ("pcma", True, "pbx 198.51.100.5, codec PCMA"),
        ("default", True, "no rule matched: default"),
    ]
    assert ruleset.decide(facts()).reason == "pbx 198.51.100.5, codec PCMA (rule 'pcma')"


def test_explain_names_the_first_failing_condition() -> None:
    ruleset = rules(
        {"name": "a", "direction": "outbound", "queue": "sales"},
        {"name": "b", "direction": "inbound", "queue": "sales"},
        {"name": "c", "direction": "inbound", "callee": "prefix:9", "time": "10:00-12:00"},
        {"name": "d", "time": "08:00-10:00", "days": ["sat", "sunday"]},
        {"name": "e"},
    )
    assert ruleset.explain(facts()) == [
        ("a", False, "direction inbound not outbound"),
        ("b", False, "no queue not sales"),
        ("c", False, "callee '201' matches none of prefix:9"),
        ("d", False, "time mon 09:15 outside 08:00-10:00 sat,sun"),
        ("e", True, "matches every call"),
        ("default", True, "no rule matched: default"),
    ]
    assert ruleset.decide(facts()).rule == "e"


@pytest.mark.parametrize(
    ("window", "when", "inside"),
    [
        ("22:00-06:00", "2026-11-30 22:00", True),
        ("22:00-06:00", "2026-11-30 21:59", False),
        ("22:00-06:00", "2026-12-01 00:00", True),
        ("22:00-06:00", "2026-12-01 05:59", True),
        ("22:00-06:00", "2026-12-01 06:00", False),
        ("08:00-18:00", "2026-11-30 08:00", True),
        ("08:00-18:00", "2026-11-30 18:00", False),
        ("18:00-24:00", "2026-11-30 23:59", True),
        ("00:00-24:00", "2026-11-30 00:00", True),
    ],
)
def test_time_windows(window: str, when: str, inside: bool) -> None:
    ruleset = rules({"name": "w", "time": window})
    assert (ruleset.decide(facts(started_ns=at(when))).rule == "w") is inside


def test_days_of_a_window_crossing_midnight_are_its_start_day() -> None:
    friday_night = rules({"name": "fri", "time": "22:00-06:00", "days": ["fri"]})
    assert friday_night.decide(facts(started_ns=at("2026-12-04 23:00"))).rule == "fri"  # Friday
    assert friday_night.decide(facts(started_ns=at("2026-12-05 03:00"))).rule == "fri"  # Saturday morning
    assert friday_night.decide(facts(started_ns=at("2026-12-04 03:00"))).rule == "default"  # Friday morning
    weekend = rules({"name": "we", "days": ["sat", "sun"]})
    assert weekend.decide(facts(started_ns=at("2026-12-06 12:00"))).rule == "we"
    assert weekend.decide(facts(started_ns=at("2026-12-07 12:00"))).rule == "default"


@given(
    start=st.integers(0, 1439),
    end=st.integers(0, 1440),
    minute=st.integers(0, 7 * 1440 - 1),
)
def test_window_crossing_midnight_is_the_complement_of_its_reverse(start: int, end: int, minute: int) -> None:
    if start == end or end == 1440 or start == 0:
        return
    ts = at("2026-11-30 00:00") + minute * 60 * 1_000_000_000
    forward, reverse = TimeWindow(start, end), TimeWindow(end, start)
    assert forward.contains(ts) != reverse.contains(ts)
    m = minute % 1440
    expected = start <= m < end if start < end else (m >= start or m < end)
    assert forward.contains(ts) is expected


def error_for(*items: Any, default_retention: str = "default") -> list[str]:
    with pytest.raises(ValueError) as caught:
        parse_rules(list(items), retention_classes=CLASSES, default_retention=default_retention)
    assert isinstance(caught.value, RulesError)
    problems = caught.value.problems
    assert problems and all("\n" not in p for p in problems)
    return problems


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [{"name": "a"}, {"name": "sales", "recrod": "never"}],
            "rules[1] 'sales': unknown key 'recrod' (did you mean 'record'?)",
        ),
        (
            [{"name": "x", "caller": "regex:x("}],
            "rules[0] 'x': caller: regex 'x(' does not compile: missing )",
        ),
        ([{"caller": "2??"}], "rules[0]: needs a name"),
        ([{"name": "a"}, {"name": "a"}], "rules[1] 'a': duplicate name (also rules[0])"),
        (
            [{"name": "t", "time": "25:00-18:00"}],
            "rules[0] 't': time: '25:00-18:00' has a time of day out of range",
        ),
        (
            [{"name": "t", "time": "8h-18h"}],
            "rules[0] 't': time: '8h-18h' is not a range like \"08:00-18:00\"",
        ),
        ([{"name": "t", "time": "08:00-08:00"}], "rules[0] 't': time: '08:00-08:00' is an empty range"),
        ([{"name": "t", "days": ["mon", "funday"]}], "rules[0] 't': days: 'funday' not one of mon, tue"),
        (
            [{"name": "r", "retention": "gold"}],
            "rules[0] 'r': retention: no retention class 'gold' (have: default, mifid, qa)",
        ),
        (
            [{"name": "r", "record": "sometimes"}],
            "rules[0] 'r': record: 'sometimes' is not one of always, on-demand, never",
        ),
        ([{"name": "r", "format": "ogg"}], "rules[0] 'r': format: 'ogg' is not one of wav, mp3"),
        (
            [{"name": "r", "consent": True}],
            "rules[0] 'r': consent: True is not one of required, not-required",
        ),
        (
            [{"name": "r", "channels": "left"}],
            "rules[0] 'r': channels: 'left' is not one of both, caller, callee",
        ),
        (
            [{"name": "r", "min_duration": -1}],
            "rules[0] 'r': min_duration: must be a number of seconds, 0 or more, not -1",
        ),
        ([{"name": "r", "min_duration": "5s"}], "rules[0] 'r': min_duration: must be a number of seconds"),
        ([{"name": "r", "direction": "in"}], "rules[0] 'r': direction: 'in' not one of inbound, outbound"),
        ([{"name": "r", "queue": []}], "rules[0] 'r': queue: an empty list or text matches no call"),
        ([{"name": "r", "codec": 8}], "rules[0] 'r': codec: must be text or a list of text, not 8"),
        ([{"name": "r", "pbx": ["pbx.example"]}], "rules[0] 'r': pbx: 'pbx.example' is not an IP address"),
        (
            [{"name": "r", "callee": "pre:+352"}],
            "rules[0] 'r': callee: unknown pattern kind 'pre' in 'pre:+352'",
        ),
        ([{"name": "r", "callee": "prefix:"}], "rules[0] 'r': callee: empty prefix pattern 'prefix:'"),
        (
            [{"name": "default"}, {"name": "b"}],
            "rules[0] 'default': the default rule must be the last one (of 2)",
        ),
        (
            [{"name": "default", "queue": "x"}],
            "rules[0] 'default': the default rule cannot have match keys (queue)",
        ),
        (["record"], "rules[0]: must be a table ([[rules]]), not str"),
        ([], "rules: default retention class 'gone' is not one of"),
    ],
)
def test_every_error_names_rule_and_key(items: list[Any], message: str) -> None:
    default_retention = "gone" if not items else "default"
    problems = error_for(*items, default_retention=default_retention)
    assert any(p.startswith(message) for p in problems), problems


def test_all_problems_are_reported_at_once() -> None:
    problems = error_for(
        {"name": "a", "recrod": "never", "format": "ogg"},
        {"name": "b", "caller": "regex:(", "retention": "gold"},
        {"name": "a"},
    )
    assert len(problems) == 5, problems


def call(answered: bool = True, state: CallState = CallState.COMPLETED) -> CapturedCall:
    a, b = Endpoint("198.51.100.20", 4000), Endpoint("203.0.113.1", 5000)
    legs = {
        CALLER_TO_CALLEE: CapturedLeg(
            CALLER_TO_CALLEE, {}, RtpPackets.empty(), sources=(a,), destinations=(b,)
        ),
        CALLEE_TO_CALLER: CapturedLeg(
            CALLEE_TO_CALLER, {}, RtpPackets.empty(), sources=(b,), destinations=(a,)
        ),
    }
    return CapturedCall(
        call_id="c1",
        state=state,
        started_ns=MONDAY_0915,
        answered_ns=MONDAY_0915 + 10_000_000_000 if answered else None,
        ended_ns=MONDAY_0915 + 13_500_000_000,
        end_reason="bye",
        caller="201",
        callee="+33123456",
        caller_uri="sip:201@pbx",
        callee_uri="sip:+33123456@pbx",
        request_uri="sip:+33123456@pbx",
        legs=legs,
    )


def test_facts_from_call_uses_talk_time_and_media_addresses() -> None:
    got = facts_from_call(call(), "outbound", "sales", ["PCMU"])
    assert got == CallFacts(
        direction="outbound",
        caller="201",
        callee="+33123456",
        request_uri="sip:+33123456@pbx",
        queue="sales",
        addresses=("198.51.100.20", "203.0.113.1"),
        codecs=("PCMU",),
        started_ns=MONDAY_0915,
        duration_s=3.5,
    )
    assert (
        facts_from_call(call(answered=False, state=CallState.CANCELLED), "outbound", None, []).duration_s == 0
    )
    unsignalled = facts_from_call(call(answered=False, state=CallState.UNSIGNALLED), "unknown", None, [])
    assert unsignalled.duration_s == 13.5
    short = rules({"name": "min", "min_duration": 4}).decide(facts_from_call(call(), "outbound", None, []))
    assert short.discard == "rule 'min': talk time 3.5 s < min_duration 4 s"


# --- decide() is the first rule whose explain() says matched -----------------------------------------

NUMBERS = st.sampled_from(["201", "299", "+35226123", "+35227999", "+33123", "301", ""])
RULE_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "direction": st.lists(st.sampled_from(DIRECTIONS), min_size=1, max_size=3),
        "caller": st.sampled_from(["2??", "prefix:+352", "regex:^\\+3522[67]", "glob:3*"]),
        "callee": st.lists(st.sampled_from(["2??", "prefix:+33", "regex:9$"]), min_size=1, max_size=2),
        "queue": st.sampled_from(["sales", "Support"]),
        "codec": st.sampled_from(["pcmu", "G722"]),
        "time": st.sampled_from(["08:00-18:00", "22:00-06:00", "00:00-24:00"]),
        "days": st.lists(st.sampled_from(["mon", "sat", "sun"]), min_size=1, max_size=2),
        "record": st.sampled_from(["always", "on-demand", "never"]),
        "min_duration": st.integers(0, 30),
    },
)
FACTS = st.builds(
    CallFacts,
    direction=st.sampled_from(DIRECTIONS),
    caller=NUMBERS,
    callee=NUMBERS,
    request_uri=NUMBERS,
    queue=st.sampled_from([None, "sales", "SUPPORT", "other"]),
    addresses=st.just((None, None)),
    codecs=st.lists(st.sampled_from(["PCMU", "PCMA", "g722"]), max_size=2).map(tuple),
    started_ns=st.integers(0, 10 * 365 * 86400).map(lambda s: s * 1_000_000_000),
    duration_s=st.floats(0, 60),
)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(RULE_ITEM, max_size=6), call_facts=FACTS)
def test_decide_is_the_first_rule_explain_says_matched(
    items: list[dict[str, Any]], call_facts: CallFacts
) -> None:
    ruleset = rules(*({"name": f"r{i}", **item} for i, item in enumerate(items)))
    explained = ruleset.explain(call_facts)
    assert [name for name, _, _ in explained] == [f"r{i}" for i in range(len(items))] + ["default"]
    first = next(row for row in explained if row[1])
    decision = ruleset.decide(call_facts)
    assert decision.rule == first[0]
    assert decision.reason == (f"{first[2]} (rule {first[0]!r})" if decision.matched else first[2])
    expected_record = items[int(first[0][1:])].get("record", "always") if decision.matched else "always"
    assert decision.record == expected_record


def test_call_codecs_used_else_offered() -> None:
    formats = {
        0: MediaFormat(0, "PCMU", 8000),
        8: MediaFormat(8, "PCMA", 8000),
        101: MediaFormat(101, "telephone-event", 8000),
    }
    z = np.zeros(3, dtype=np.int64)
    used = RtpPackets(
        z, z, z, z, np.array([8, 101, 8]), np.zeros(3, dtype=np.bool_), np.zeros(0, dtype=np.uint8), z, z
    )
    seen = CapturedLeg(CALLER_TO_CALLEE, formats, used)
    offered = CapturedLeg(CALLEE_TO_CALLER, {0: formats[0]}, RtpPackets.empty())
    base = call()
    assert call_codecs(replace(base, legs={CALLER_TO_CALLEE: seen})) == ("PCMA", "telephone-event")
    both = {CALLER_TO_CALLEE: seen, CALLEE_TO_CALLER: offered}
    assert call_codecs(replace(base, legs=both)) == (
        "PCMA",
        "PCMU",
        "telephone-event",
    )
