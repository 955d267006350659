"""Import edge cases on real captures: fuzzed SIP, HTTP on port 5060, refused formats, gzip, pcapng."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.fixture_check import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    REAL,
    STATES,
    export_wav,
    import_capture,
    legs_by_direction,
    run_cli,
)

# -- real captures: robustness facts (verified with tshark 4.0 by hand; no tshark needed here) ---------


def test_fuzzed_sip_is_survived(tmp_path: Path) -> None:
    """ndpi/fuzz-2006-06-26-2594.pcap: corrupted SIP (INVITEs answered 4xx, broken Call-IDs, no BYE)."""
    calls = import_capture(tmp_path / "home", REAL / "ndpi" / "fuzz-2006-06-26-2594.pcap")
    for call in calls:
        assert call.get("state") in STATES, call
        assert call.get("state") != "completed", f"no INVITE in this capture is answered and ended: {call}"


def test_http_on_sip_port_is_not_a_call(tmp_path: Path) -> None:
    """ndpi/http_on_sip_port.pcap: HTTP over TCP port 5060; nothing in it is SIP."""
    assert import_capture(tmp_path / "home", REAL / "ndpi" / "http_on_sip_port.pcap") == []


def test_unsupported_format_is_refused_clearly(tmp_path: Path) -> None:
    """wireshark-wiki/RTP-only_PCMU_2-packets.cap is a Network General Sniffer 2.0 file, not pcap."""
    res = run_cli(
        "--home",
        str(tmp_path / "home"),
        "import",
        str(REAL / "wireshark-wiki" / "RTP-only_PCMU_2-packets.cap"),
        "--json",
    )
    assert res.exit_code == 1, f"expected exit code 1: {res.describe()}"
    assert not res.exc_text and "Traceback" not in res.stdout + res.stderr, res.describe()
    assert "Error:" in res.stderr + res.stdout, res.describe()


def test_gzip_pcap_with_undecodable_payload(tmp_path: Path) -> None:
    """wireshark-wiki/h223-over-rtp.pcap.gz: gzip-compressed pcap, one SIP call carrying H.223 video
    telephony as RTP CLEARMODE (PT 99): found, legs counted, but no garbage audio."""
    home = tmp_path / "home"
    calls = import_capture(home, REAL / "wireshark-wiki" / "h223-over-rtp.pcap.gz")
    ids = [c.get("call_id") for c in calls]
    assert ids == ["2c85dc22-5e10-4320-99ef-1dc954b3190a.1@cutlass.mxtelecom.com"], ids
    call = calls[0]
    assert call.get("state") == "completed", call
    legs = legs_by_direction(call)
    counts = {
        d: sum(int(leg.get("packets") or 0) for leg in legs.get(d, []))
        for d in (CALLER_TO_CALLEE, CALLEE_TO_CALLER)
    }
    assert counts == {CALLER_TO_CALLEE: 344, CALLEE_TO_CALLER: 375}, counts
    if call.get("recording"):
        _, samples = export_wav(home, call, tmp_path / "h223.wav")
        assert not samples.any(), "CLEARMODE is not audio: a recording of it must be silent (or absent)"


def _comparable(call: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in call.items() if k not in ("id", "source", "recording")}
    out["legs"] = sorted(call.get("legs") or [], key=lambda leg: str(leg.get("direction")))
    return out


def test_pcap_and_pcapng_of_the_same_packets_agree(tmp_path: Path) -> None:
    """isa-michalcab/sip.pcap and sip.pcap.pcapng hold the same 175 packets: same calls, same audio."""
    results = []
    for name in ("sip.pcap", "sip.pcap.pcapng"):
        home = tmp_path / name
        calls = import_capture(home, REAL / "isa-michalcab" / name)
        assert [c.get("call_id") for c in calls] == ["681270918"], calls
        rate, samples = export_wav(home, calls[0], tmp_path / f"{name}.wav")
        results.append((_comparable(calls[0]), rate, samples))
    (a, rate_a, wav_a), (b, rate_b, wav_b) = results
    assert a == b
    assert rate_a == rate_b and np.array_equal(wav_a, wav_b)
