"""Call direction from internal networks, PBX and trunk addresses, and internal number patterns."""

from __future__ import annotations

import pytest

from callrec.capture.model.calls import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    CallState,
    CapturedCall,
    CapturedLeg,
    Endpoint,
)
from callrec.capture.model.media import RtpPackets
from callrec.recorder.policy.direction import (
    DirectionPolicy,
    PolicyError,
    call_addresses,
    classify,
    parse_direction,
)

TABLE = {
    "internal_networks": ["198.51.100.0/24", "2001:db8:10::/48"],
    "pbx": ["198.51.100.5"],
    "trunks": ["203.0.113.1"],
    "internal_numbers": ["2??", "+35226*"],
}
POLICY = parse_direction(TABLE, "direction")
PBX, TRUNK, PHONE, PHONE6, OUTSIDE = (
    "198.51.100.5",
    "203.0.113.1",
    "198.51.100.20",
    "2001:db8:10::7",
    "192.0.2.9",
)


def test_parse_direction_reads_every_key() -> None:
    assert [str(n) for n in POLICY.internal_networks] == ["198.51.100.0/24", "2001:db8:10::/48"]
    assert {str(a) for a in POLICY.pbx} == {PBX} and {str(a) for a in POLICY.trunks} == {TRUNK}
    assert POLICY.internal_numbers == ("2??", "+35226*")
    assert POLICY.configured and not parse_direction({}, "direction").configured
    assert (
        parse_direction({"pbx": "198.51.100.5"}, "direction").pbx == POLICY.pbx
    )  # one text is a list of one


@pytest.mark.parametrize(
    ("caller", "callee", "caller_address", "callee_address", "expected"),
    [
        # numbers decide when they match an internal pattern
        ("+33123456", "201", TRUNK, PBX, "inbound"),
        ("201", "+33123456", PBX, TRUNK, "outbound"),
        ("201", "202", PBX, PBX, "internal"),
        ("+3522612345", "201", None, None, "internal"),
        # PBX address is ambiguous: a number not internal makes the party external
        ("+33123456", "+44123456", PBX, PBX, "external"),
        ("+33123456", "201", PBX, PBX, "inbound"),
        # addresses decide otherwise: trunk external, internal network internal, elsewhere external
        ("alice", "bob", TRUNK, PHONE, "inbound"),
        ("alice", "bob", PHONE, OUTSIDE, "outbound"),
        ("alice", "bob", PHONE, PHONE6, "internal"),
        ("alice", "bob", OUTSIDE, TRUNK, "external"),
        ("alice", "bob", f"::ffff:{PHONE}", f"[{TRUNK}]", "outbound"),
        # a trunk number matching an internal pattern is still internal (numbers first)
        ("205", "bob", TRUNK, PHONE, "internal"),
    ],
)
def test_classify_table(
    caller: str, callee: str, caller_address: str | None, callee_address: str | None, expected: str
) -> None:
    got = classify(
        POLICY, caller=caller, callee=callee, caller_address=caller_address, callee_address=callee_address
    )
    assert got == expected


def test_classify_unknown_without_policy_or_evidence() -> None:
    empty = DirectionPolicy()
    assert (
        classify(empty, caller="201", callee="202", caller_address=PHONE, callee_address=PHONE) == "unknown"
    )
    addresses_only = parse_direction({"internal_networks": ["198.51.100.0/24"], "pbx": [PBX]}, "d")
    # PBX address, no number patterns: nothing to decide on
    assert (
        classify(addresses_only, caller="a", callee="b", caller_address=PBX, callee_address=PHONE)
        == "unknown"
    )
    assert (
        classify(addresses_only, caller="a", callee="b", caller_address=None, callee_address=PHONE)
        == "unknown"
    )
    assert classify(addresses_only, caller="a", callee="b", caller_address=OUTSIDE, callee_address=PHONE) == (
        "inbound"
    )
    numbers_only = parse_direction({"internal_numbers": ["2??"]}, "d")
    assert (
        classify(numbers_only, caller="", callee="201", caller_address=None, callee_address=None) == "unknown"
    )
    assert classify(numbers_only, caller="+33", callee="201", caller_address=None, callee_address=None) == (
        "inbound"
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"internal_network": ["10.0.0.0/8"]}, "direction.internal_network: unknown key"),
        ({"internal_networks": ["10.0.0/8"]}, "direction.internal_networks: '10.0.0/8' is not a network"),
        ({"internal_networks": ["10.0.0.1/8"]}, "did you mean 10.0.0.0/8?"),
        ({"internal_networks": 10}, "direction.internal_networks: must be text or a list of text, not 10"),
        ({"pbx": ["pbx.example"]}, "direction.pbx: 'pbx.example' is not an IP address"),
        ({"trunks": ["203.0.113.300"]}, "direction.trunks: '203.0.113.300' is not an IP address"),
        ({"pbx": [PBX], "trunks": [PBX]}, f"direction: {PBX} is listed both in pbx and in trunks"),
        ({"internal_numbers": ["2??", " "]}, "direction.internal_numbers: an empty pattern matches nothing"),
        ({"internal_numbers": [2]}, "direction.internal_numbers: must be text or a list of text"),
    ],
)
def test_parse_direction_errors_name_key_and_value(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_direction(table, "direction")
    assert isinstance(caught.value, PolicyError)
    assert any(message in problem for problem in caught.value.problems), caught.value.problems
    assert all("\n" not in problem for problem in caught.value.problems)


def test_parse_direction_reports_every_problem() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_direction({"pbx": ["x"], "trunks": ["y"], "extra": 1}, "direction")
    assert len(caught.value.problems) == 3


def leg(direction: str, sources: tuple[Endpoint, ...], destinations: tuple[Endpoint, ...]) -> CapturedLeg:
    return CapturedLeg(direction, {}, RtpPackets.empty(), sources=sources, destinations=destinations)


def call(legs: dict[str, CapturedLeg]) -> CapturedCall:
    return CapturedCall(
        call_id="c1",
        state=CallState.COMPLETED,
        started_ns=0,
        answered_ns=1,
        ended_ns=2,
        end_reason="bye",
        caller="201",
        callee="+33123456",
        caller_uri="sip:201@pbx",
        callee_uri="sip:+33123456@pbx",
        request_uri="sip:+33123456@pbx",
        legs=legs,
    )


def test_call_addresses_from_sources_then_destinations() -> None:
    a, b, c = Endpoint(PHONE, 4000), Endpoint(TRUNK, 5000), Endpoint(PBX, 6000)
    both = call(
        {
            CALLER_TO_CALLEE: leg(CALLER_TO_CALLEE, (a,), (c,)),
            CALLEE_TO_CALLER: leg(CALLEE_TO_CALLER, (b,), (a,)),
        }
    )
    assert call_addresses(both) == (PHONE, TRUNK)
    one_way = call({CALLER_TO_CALLEE: leg(CALLER_TO_CALLEE, (a,), (c,))})
    assert call_addresses(one_way) == (PHONE, PBX)
    only_back = call({CALLEE_TO_CALLER: leg(CALLEE_TO_CALLER, (b,), (a,))})
    assert call_addresses(only_back) == (PHONE, TRUNK)
    assert call_addresses(call({})) == (None, None)
