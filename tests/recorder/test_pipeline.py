"""The offline pipeline: fault isolation per call, progress, counters, durability order."""

from __future__ import annotations

from pathlib import Path

import pytest

import callrec.recorder.saving.saver as saving
from callrec.recorder.pipeline import import_captures
from callrec.store.catalogue.db import Catalogue
from callrec.store.home import Home
from tests.helpers.keyset import provision

FIXTURES = Path(__file__).resolve().parents[2] / "pcaps" / "fixtures"
TWO_CALLS = FIXTURES / "two_calls.pcap"


def test_a_call_that_fails_to_render_is_stored_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = saving.render_call
    seen: list[str] = []

    def flaky(call):  # the first call breaks, the second renders
        seen.append(call.call_id)
        if len(seen) == 1:
            raise ValueError("decoder exploded")
        return real(call)

    monkeypatch.setattr(saving, "render_call", flaky)
    home = Home(provision(tmp_path))
    report = import_captures([TWO_CALLS], home)
    assert report.calls_found == 2 and report.recorded == 1 and report.failed == 1
    assert report.not_recorded["processing failed"] == 1
    with Catalogue(home.catalogue_path) as catalogue:
        rows = {r["call_id"]: catalogue.get_call(r["id"]) for r in catalogue.search()}
    broken, fine = rows[seen[0]], rows[seen[1]]
    assert broken["error"] == "ValueError: decoder exploded" and broken["recording_path"] is None
    assert broken["state"] == "completed" and len(broken["legs"]) == 2 and broken["events"]
    assert fine["error"] is None and fine["recording_path"]


def test_progress_adds_up_to_the_file_size(tmp_path: Path) -> None:
    steps: list[int] = []
    import_captures([TWO_CALLS], Home(provision(tmp_path)), progress=steps.append)
    assert sum(steps) == TWO_CALLS.stat().st_size and all(s >= 0 for s in steps)


def test_counters_separate_what_was_seen_from_what_was_skipped(tmp_path: Path) -> None:
    report = import_captures([FIXTURES / "malformed_mix.pcap"], Home(provision(tmp_path)))
    assert report.counters["rtp_packets"] > 0 and "rtp_packets" not in report.skipped_packets
    assert report.skipped_packets  # the garbage is counted by reason
    assert all(value > 0 for value in report.skipped_packets.values())


def test_rows_are_committed_only_after_the_files_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    home = Home(provision(tmp_path))
    store_cls = type(home.recording_store())
    real_sync, real_add = store_cls.sync_all, Catalogue.add_calls
    monkeypatch.setattr(store_cls, "sync_all", lambda self: (order.append("sync"), real_sync(self))[1])
    monkeypatch.setattr(
        Catalogue,
        "add_calls",
        lambda self, batch, **kw: (order.append("rows"), real_add(self, batch, **kw))[1],
    )
    import_captures([TWO_CALLS], home)
    assert order == ["sync", "rows"]
