"""store.retention.purge, as properties: exactly the expired, unheld recordings are purged, a second run
changes nothing, and a crash anywhere ends as an uninterrupted run does."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.store.retention.policy import expiry_ns
from tests.helpers.retention_env import (  # noqa: F401
    CLASSES,
    DAY,
    SEC,
    T0,
    Crash,
    Env,
    add,
    crash_at,
    dump,
    key_exists,
    make_env,
    tombstone,
)

NOW = T0 + 10 * DAY


# --- properties --------------------------------------------------------------------------------

CALL = st.fixed_dictionaries(
    {
        "day": st.integers(-60, 60),
        "retention": st.sampled_from(["short", "month", "year", None]),
        "recording": st.booleans(),
        "key": st.booleans(),
        "hold": st.sampled_from([None, "active", "released"]),
    }
)
SCENARIO = st.lists(CALL, min_size=1, max_size=7)


def build(root: Path, scenario: list[dict[str, Any]]) -> tuple[Env, list[int]]:
    env = make_env(root)
    ids = []
    for n, spec in enumerate(scenario):
        call = add(
            env,
            str(n),
            T0 + spec["day"] * DAY,
            spec["retention"],
            recording=spec["recording"],
            key=spec["key"],
        )
        if spec["hold"]:
            env.holds.add(call, reason="case", by="carol", now_ns=T0)
            if spec["hold"] == "released":
                env.holds.remove(call, by="carol", now_ns=T0)
        ids.append(call)
    return env, ids


def due_at(scenario: list[dict[str, Any]], ids: list[int], now_ns: int, held: bool = False) -> set[int]:
    """The expired calls (with a recording or not) without an active hold (with ``held``: those
    with one)."""
    return {
        call
        for call, spec in zip(ids, scenario, strict=True)
        if spec["retention"] and (spec["hold"] == "active") == held
        and expiry_ns(T0 + spec["day"] * DAY, CLASSES[spec["retention"]]) <= now_ns
    }  # fmt: skip


def purged_calls(env: Env) -> set[int]:
    return {row[0] for row in env.conn.execute("SELECT call FROM tombstones WHERE state = 'purged'")}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=SCENARIO, days=st.lists(st.integers(-10, 500), min_size=1, max_size=3))
def test_exactly_the_expired_unheld_recordings_are_purged(
    scenario: list[dict[str, Any]], days: list[int]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        env, ids = build(Path(tmp), scenario)
        with env.cat:
            check_runs(env, ids, scenario, days)


def check_runs(env: Env, ids: list[int], scenario: list[dict[str, Any]], days: list[int]) -> None:
    """Apply at each day in turn: exactly the due recordings are purged; a repeat changes nothing."""
    for day in sorted(days):
        now = T0 + day * DAY
        dry = env.retention.apply(now, by="retention", dry_run=True)
        report = env.retention.apply(now, by="retention")
        expected = due_at(scenario, ids, now)
        assert purged_calls(env) == expected
        assert set(dry.would_purge) == set(report.purged) and report.ok
        assert set(report.held) == set(dry.held) == due_at(scenario, ids, now, held=True)
        for call, spec in zip(ids, scenario, strict=True):
            row = env.cat.get_call(call)
            if call in expected:
                assert row["recording_path"] is None and row["caller"] is None and not key_exists(env, call)
                assert not env.store.exists(f"recordings/{ids.index(call)}.wav")
            elif spec["recording"]:
                assert env.store.exists(row["recording_path"]) and row["caller"] is not None
                assert key_exists(env, call) == spec["key"]
        before = dump(env)
        assert env.retention.apply(now, by="retention").purged == ()
        assert dump(env) == before


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=SCENARIO, day=st.integers(0, 500), pick=st.integers(0, 1000))
def test_a_crash_anywhere_ends_as_an_uninterrupted_run(
    scenario: list[dict[str, Any]], day: int, pick: int
) -> None:
    now = T0 + day * DAY
    with tempfile.TemporaryDirectory() as tmp:
        clean, _ = build(Path(tmp) / "clean", scenario)
        crashed, _ = build(Path(tmp) / "crashed", scenario)
        with clean.cat, crashed.cat:
            steps: list[tuple[int, str]] = []
            clean.retention.apply(now, by="retention", after_step=lambda c, s: steps.append((c, s)))
            if steps:
                call, step = steps[pick % len(steps)]
                with pytest.raises(Crash):
                    crashed.retention.apply(now, by="retention", after_step=crash_at(call, step))
            crashed.retention.apply(now, by="retention")
            assert dump(crashed) == dump(clean)
