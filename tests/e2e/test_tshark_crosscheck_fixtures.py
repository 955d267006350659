"""The generated fixtures as tshark sees them, and their audio rebuilt from tshark's fields alone."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e.test_fixtures import EXPECTED
from tests.e2e.test_tshark_crosscheck import (
    Packets,
    _tshark,
    invite_call_ids,
    placed_spans,
    rtp_packets,
    rtp_streams,
)
from tests.helpers.fixture_check import CALLEE_TO_CALLER, CALLER_TO_CALLEE, check_audio, generator

# -- fixtures ------------------------------------------------------------------------------------

# malformed_mix: tshark takes 2 of the broken packets on the call's 5-tuple for RTP (CC=15 without
# CSRCs, extension past the end); the fixture's ground truth does not count them.
TSHARK_EXTRA = {("malformed_mix", 0x1A2B0012): 2}


DIRECTIONS = (CALLER_TO_CALLEE, CALLEE_TO_CALLER)

# SIP over TCP: tshark reassembles the out-of-order INVITE only when asked to, and takes a
# non-standard port for SIP only when told (callrec finds SIP on any port by its start line)
_TCP_OOO = ("-o", "tcp.reassemble_out_of_order:TRUE")
TSHARK_SIP_OPTIONS = {
    "sip_tcp": _TCP_OOO,
    "sip_tcp_port": (*_TCP_OOO, "-d", "tcp.port==15070,sip"),
}


def hep_decapsulated(path: Path, out: Path) -> Path:
    """tshark 4.0 has no HEP dissector: the classic pcap ``path`` of Ethernet/IPv4/UDP/HEP3 frames
    rewritten as the Ethernet/IPv4/UDP datagrams the HEP chunks describe (their addresses, ports,
    time and payload; checksums 0), so that tshark can check the HEP fixture too."""
    data = path.read_bytes()
    records = [data[:24]]
    pos = 24
    while pos + 16 <= len(data):
        incl = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        hep = frame[14 + 4 * (frame[14] & 0x0F) + 8 :]
        assert hep[:4] == b"HEP3", "a frame of the HEP fixture is not HEP3"
        chunks: dict[int, bytes] = {}
        at = 6
        while at < struct.unpack_from("!H", hep, 4)[0]:
            _, ctype, size = struct.unpack_from("!HHH", hep, at)
            chunks[ctype] = hep[at + 6 : at + size]
            at += size
        payload = chunks[15]
        udp = chunks[7] + chunks[8] + struct.pack("!HH", 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0) + chunks[3] + chunks[4]
        inner = frame[:14] + ip + udp
        sec, usec = struct.unpack("!I", chunks[9])[0], struct.unpack("!I", chunks[10])[0]
        records.append(struct.pack("<IIII", sec, usec, len(inner), len(inner)) + inner)
    out.write_bytes(b"".join(records))
    return out


def fixture_invite_call_ids(path: Path, name: str) -> set[str]:
    if name not in TSHARK_SIP_OPTIONS:
        return invite_call_ids(path)
    out = _tshark(
        path, *TSHARK_SIP_OPTIONS[name], "-Y", 'sip.Method == "INVITE"', "-T", "fields", "-e", "sip.Call-ID"
    )
    return {line.strip() for line in out.splitlines() if line.strip()}


def leg_ssrcs(leg: dict[str, Any]) -> list[int]:
    """The leg's SSRCs: ``ssrcs`` when it changes SSRC, else ``ssrc`` (none: it sent nothing)."""
    if "ssrcs" in leg:
        return list(leg["ssrcs"])
    return [] if leg["ssrc"] is None else [leg["ssrc"]]


def _reference_render(expected: dict[str, Any], path: Path) -> dict[int, tuple[int, np.ndarray]]:
    """A recording per call, from tshark's fields only: G.711 decoded with the generator's tables,
    placed by RTP timestamp (lower-envelope anchor), t = 0 at the first placed packet."""
    gen = generator()
    tables = {
        0: np.array([gen.ulaw2lin(b) for b in range(256)]),
        8: np.array([gen.alaw2lin(b) for b in range(256)]),
    }
    # only whole 20 ms G.711 frames: tshark also takes some of malformed_mix's broken packets for RTP
    # one SSRC on several 5-tuples (a re-INVITE moved the port) is one stream, in arrival order
    merged: dict[int, list[tuple]] = {}
    for key, p in rtp_packets(path).items():
        p = p.select([len(x) == 160 for x in p.payload])
        rows = zip(p.arrival, p.seq, p.ts, p.pt, p.marker, p.payload, strict=True)
        merged.setdefault(key[4], []).extend(rows)
    by_ssrc = {
        x: Packets(*map(list, zip(*sorted(rows, key=lambda r: r[0]), strict=True)))
        for x, rows in merged.items()
    }
    out = {}
    for index, call in enumerate(expected["calls"]):
        if not call["recorded"]:
            continue
        # a leg that changes SSRC is several streams, each placed on its own
        legs = {d: [by_ssrc[x] for x in leg_ssrcs(call["legs"][d]) if x in by_ssrc] for d in DIRECTIONS}
        placed = {d: [placed_spans(p) for p in streams] for d, streams in legs.items()}
        t0 = min(s.min() for spans in placed.values() for s, _, _ in spans)
        t1 = max(e.max() for spans in placed.values() for _, e, _ in spans)
        n = int(round((t1 - t0) * 8000))
        stereo = np.zeros((n, 2), dtype=np.int16)
        for col, d in enumerate(DIRECTIONS):
            for p, (starts, _, _) in zip(legs[d], placed[d], strict=True):
                for s, pt, payload in zip(starts, p.pt, p.payload, strict=True):
                    k = int(round((s - t0) * 8000))
                    pcm = tables[pt][np.frombuffer(payload, dtype=np.uint8)]
                    stereo[k : k + len(pcm), col] = pcm[: max(0, n - k)]
        out[index] = (8000, stereo)  # a Call-ID may name several calls (callid_reuse)
    return out


@pytest.mark.parametrize(
    "expected_path", EXPECTED, ids=[p.name.removesuffix(".expected.json") for p in EXPECTED]
)
def test_fixture_matches_tshark(expected_path: Path, tmp_path: Path) -> None:
    """Wireshark reads each fixture as expected.json describes it, and rendering its RTP from
    tshark's fields passes the same audio checks that the recorder must pass."""
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    path = expected_path.parent / expected["capture"]
    name = expected_path.name.removesuffix(".expected.json")
    if name == "hep3":
        path = hep_decapsulated(path, tmp_path / "hep3-inner.pcap")
    assert fixture_invite_call_ids(path, name) == {c["call_id"] for c in expected["calls"]}
    counts: dict[int, int] = {}
    for s in rtp_streams(path):
        counts[s["ssrc"]] = counts.get(s["ssrc"], 0) + s["packets"]
    for call in expected["calls"]:
        for d in DIRECTIONS:
            leg = call["legs"][d]
            ssrcs = leg_ssrcs(leg)
            if not ssrcs:
                continue
            want = leg["packets"] + TSHARK_EXTRA.get((name, leg["ssrc"]), 0)
            got = sum(counts.get(x, 0) for x in ssrcs)
            assert got == want, f"{call['call_id']} {d}: tshark {got}, want {want}"
            payloads = {s["payload"] for s in rtp_streams(path) if s["ssrc"] in ssrcs}
            assert payloads == {"g711U" if leg["codec"] == "PCMU" else "g711A"}, payloads
    rendered = _reference_render(expected, path)
    problems: list[str] = []
    for index, call in enumerate(expected["calls"]):
        if call["recorded"]:
            rate, stereo = rendered[index]
            problems += check_audio(call, rate, stereo, float(expected["placement_tolerance_s"]))
    assert not problems, "\n".join(problems)
