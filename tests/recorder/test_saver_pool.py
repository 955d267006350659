"""Several saver processes behind the live capture (recorder.saving.pool.SaverPool): every call handed over
is saved exactly once, by the saver with the fewest calls outstanding, and their states add up."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.calls import CapturedCall
from callrec.capture.sources.capture_file import CaptureReader
from callrec.capture.tracking.tracker import CallTracker
from callrec.recorder.config import Config
from callrec.recorder.saving.pool import SaveJob, SaverOptions, SaverPool, merged_state
from callrec.store.catalogue.db import Catalogue
from callrec.store.home import Home
from tests.helpers.callpcap import CallSpec, write_calls
from tests.helpers.keyset import provision


def captured_calls(path: Path) -> list[CapturedCall]:
    frames, tracker = FrameDecoder(), CallTracker()
    calls: list[CapturedCall] = []
    with CaptureReader(path) as reader:
        for batch in reader.batches():
            calls += tracker.feed(frames.decode(batch))
    return calls + tracker.flush()


def drain(pool: SaverPool, want: int, timeout_s: float = 60.0) -> list[tuple[str, Any]]:
    messages: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        messages += pool.poll()
        if sum(1 for kind, _ in messages if kind == "saved") >= want and not any(pool.outstanding):
            committed = sum(len(v) for kind, v in messages if kind == "committed")
            if committed >= want:
                return messages
        time.sleep(0.05)
    raise AssertionError(f"saver pool did not save {want} calls in {timeout_s} s: {messages[-5:]}")


def test_merged_state_adds_counts_and_keeps_the_first_error() -> None:
    states = [
        {"waiting": 2, "pending": 1, "last_error": "", "lost": 0},
        {"waiting": 3, "pending": 0, "last_error": "storage unavailable: disk full", "lost": 4},
        {},
    ]
    assert merged_state(states) == {
        "waiting": 5,
        "pending": 1,
        "last_error": "storage unavailable: disk full",
        "lost": 4,
    }


def test_a_pool_of_two_savers_records_every_call_once(tmp_path: Path) -> None:
    root = provision(tmp_path / "home")
    pcap = write_calls(tmp_path / "calls.pcap", [CallSpec(f"10{n}", f"20{n}", seconds=1.0) for n in range(6)])
    calls = captured_calls(pcap)
    assert len(calls) == 6
    pool = SaverPool(root, Config.defaults(), SaverOptions(max_waiting=10), processes=2)
    try:
        for call in calls:
            pool.send("save", SaveJob(call, "test"))
        # handed out by fewest outstanding: the two savers take turns
        assert pool.outstanding == [3, 3]
        messages = drain(pool, len(calls))
    finally:
        final = pool.stop(timeout_s=60)
    saved = [v for kind, v in messages if kind == "saved"]
    assert sorted(v["call_id"] for v in saved) == sorted(c.call_id for c in calls)
    assert {v["outcome"] for v in saved} == {"recorded"}
    assert pool.outstanding == [0, 0]
    assert final[-1] == ("stopped", {"waiting": 0, "pending": 0, "last_error": "", "lost": 0})
    catalogue = Catalogue(Home(root).catalogue_path)
    try:
        rows = list(catalogue.db.query("SELECT call_id, recording_path FROM calls"))
    finally:
        catalogue.close()
    assert sorted(r["call_id"] for r in rows) == sorted(c.call_id for c in calls)
    assert all(r["recording_path"] for r in rows)


def test_a_pool_needs_a_saver() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SaverPool(Path("/nonexistent"), Config.defaults(), SaverOptions(), processes=0)


def test_a_saver_that_dies_is_replaced_and_its_calls_saved_by_the_new_one(tmp_path: Path) -> None:
    root = provision(tmp_path / "home")
    pcap = write_calls(tmp_path / "calls.pcap", [CallSpec(f"30{n}", f"40{n}", seconds=1.0) for n in range(4)])
    calls = captured_calls(pcap)
    pool = SaverPool(root, Config.defaults(), SaverOptions(), processes=2)
    try:
        first = pool.savers[0].process
        first.kill()  # before it could take anything: the calls handed to it wait in its queue
        first.join(timeout=10)
        for call in calls:
            pool.send("save", SaveJob(call, "test"))
        assert pool.outstanding[0] >= 1
        messages = drain(pool, len(calls))
    finally:
        pool.stop(timeout_s=60)
    assert pool.replaced == 1 and pool.savers[0].process is not first
    assert any(kind == "log" and "a new one saves" in text for kind, text in messages)
    saved = {v["call_id"]: v["outcome"] for kind, v in messages if kind == "saved"}
    assert saved == {c.call_id: "recorded" for c in calls}


def test_a_call_with_two_savers_that_died_is_failed_not_handed_on_again(tmp_path: Path) -> None:
    root = provision(tmp_path / "home")
    pcap = write_calls(tmp_path / "calls.pcap", [CallSpec("500", "600", seconds=1.0)])
    (call,) = captured_calls(pcap)
    pool = SaverPool(root, Config.defaults(), SaverOptions(), processes=1)
    try:
        for _ in range(2):
            saver = pool.savers[0].process
            saver.kill()
            saver.join(timeout=10)
            if not pool.outstanding[0]:
                pool.send("save", SaveJob(call, "test"))
            messages = pool.poll()  # the dead saver replaced; the call handed on once, then failed
        assert pool.replaced == 2
    finally:
        pool.stop(timeout_s=60)
    saved = [v for kind, v in messages if kind == "saved"]
    assert saved == [
        {"call_id": call.call_id, "started_ns": call.started_ns, "outcome": "failed", "crashed": True}
    ]
    assert pool.outstanding == [0]
