"""Mirrored traffic inside tunnels reaches the recorder as if captured directly (real captures)."""

from __future__ import annotations

from pathlib import Path

from callrec.recorder.pipeline import import_captures
from callrec.store.catalogue.db import Catalogue
from callrec.store.home import Home
from tests.helpers.keyset import provision

REAL = Path(__file__).resolve().parents[2] / "pcaps" / "real"


def _calls(tmp_path: Path, path: Path) -> tuple[list[dict], object]:
    home = Home(provision(tmp_path))
    report = import_captures([path], home)
    with Catalogue(home.catalogue_path) as catalogue:
        return list(catalogue.search(limit=100)), report


def test_a_gre_mirror_carries_its_calls(tmp_path: Path) -> None:
    calls, report = _calls(tmp_path, REAL / "heplify" / "erspan_sip_ipv4_udp.pcapng")
    assert len(calls) == 3 and all(c["answered_at"] for c in calls)  # tshark: 3 calls, 3 answered
    assert report.counters["decapsulated_gre"] == 140  # every frame
    assert not any(k.startswith("decapsulated") for k in report.skipped_packets)


def test_sip_over_tcp_inside_ip_in_ip(tmp_path: Path) -> None:
    calls, report = _calls(tmp_path, REAL / "sngrep" / "ipip.pcap")
    assert len(calls) == 1 and calls[0]["answered_at"]
    assert report.counters["decapsulated_ipip"] == 2 and report.counters["tcp_segments"] >= 2
