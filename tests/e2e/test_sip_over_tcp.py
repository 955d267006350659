"""SIP over TCP through the whole recorder: real captures, counts as tshark's inventory has them."""

from __future__ import annotations

from pathlib import Path

from callrec.recorder.pipeline import import_captures
from callrec.store.catalogue.db import Catalogue
from callrec.store.home import Home
from tests.helpers.keyset import provision

HEPLIFY = Path(__file__).resolve().parents[2] / "pcaps" / "real" / "heplify"


def _calls(tmp_path: Path, name: str) -> tuple[list[dict], object]:
    home = Home(provision(tmp_path))
    report = import_captures([HEPLIFY / name], home)
    with Catalogue(home.catalogue_path) as catalogue:
        return [catalogue.get_call(r["id"]) for r in catalogue.search(limit=1000)], report


def test_a_call_signalled_over_tcp_is_recorded(tmp_path: Path) -> None:
    calls, report = _calls(tmp_path, "sip_ipv4_tcp.pcap")
    assert len(calls) == 1 and calls[0]["state"] == "completed"
    assert calls[0]["recording_path"] and all(leg["packets"] > 0 for leg in calls[0]["legs"])
    assert "tcp" not in report.skipped_packets  # every segment went to the SIP streams


def test_messages_split_across_segments_on_a_non_standard_port(tmp_path: Path) -> None:
    calls, report = _calls(tmp_path, "sip_ipv4_tcp_fragmented.pcap")
    assert len(calls) == 37  # tshark: 37 INVITE Call-IDs, 32 answered (MANIFEST.tsv)
    assert sum(1 for c in calls if c["answered_at"]) == 32
    assert report.counters["tcp_resync"] == 8  # directions first seen mid-stream


def test_retransmissions_and_tls_are_counted_not_parsed(tmp_path: Path) -> None:
    calls, report = _calls(tmp_path, "sip_ipv4_tcp_retrans.pcap")
    assert calls == []  # REGISTERs only
    assert report.counters["tcp_retransmission"] == 1 and report.counters["tcp_not_sip"] > 0
