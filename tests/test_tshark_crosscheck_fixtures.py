"""The generated fixtures as tshark sees them, and their audio rebuilt from tshark's fields alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_fixtures import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    EXPECTED,
    check_audio,
    generator,
)
from test_tshark_crosscheck import invite_call_ids, placed_spans, rtp_packets, rtp_streams

# -- fixtures ------------------------------------------------------------------------------------

# malformed_mix: tshark takes 2 of the broken packets on the call's 5-tuple for RTP (CC=15 without
# CSRCs, extension past the end); the fixture's ground truth does not count them.
TSHARK_EXTRA = {("malformed_mix", 0x1A2B0012): 2}


def _reference_render(expected: dict[str, Any], path: Path) -> dict[str, tuple[int, np.ndarray]]:
    """A recording per call, from tshark's fields only: G.711 decoded with the generator's tables,
    placed by RTP timestamp (lower-envelope anchor), t = 0 at the first placed packet."""
    gen = generator()
    tables = {
        0: np.array([gen.ulaw2lin(b) for b in range(256)]),
        8: np.array([gen.alaw2lin(b) for b in range(256)]),
    }
    # only whole 20 ms G.711 frames: tshark also takes some of malformed_mix's broken packets for RTP
    by_ssrc = {key[4]: p.select([len(x) == 160 for x in p.payload]) for key, p in rtp_packets(path).items()}
    out = {}
    for call in expected["calls"]:
        if not call["recorded"]:
            continue
        legs = {d: by_ssrc.get(call["legs"][d]["ssrc"]) for d in (CALLER_TO_CALLEE, CALLEE_TO_CALLER)}
        placed = {d: placed_spans(p) for d, p in legs.items() if p is not None}
        t0 = min(s.min() for s, _, _ in placed.values())
        t1 = max(e.max() for _, e, _ in placed.values())
        n = int(round((t1 - t0) * 8000))
        stereo = np.zeros((n, 2), dtype=np.int16)
        for col, d in enumerate((CALLER_TO_CALLEE, CALLEE_TO_CALLER)):
            p = legs[d]
            if p is None:
                continue
            for s, pt, payload in zip(placed[d][0], p.pt, p.payload, strict=True):
                k = int(round((s - t0) * 8000))
                pcm = tables[pt][np.frombuffer(payload, dtype=np.uint8)]
                stereo[k : k + len(pcm), col] = pcm[: max(0, n - k)]
        out[call["call_id"]] = (8000, stereo)
    return out


@pytest.mark.parametrize(
    "expected_path", EXPECTED, ids=[p.name.removesuffix(".expected.json") for p in EXPECTED]
)
def test_fixture_matches_tshark(expected_path: Path) -> None:
    """Wireshark reads each fixture as expected.json describes it, and rendering its RTP from
    tshark's fields passes the same audio checks that the recorder must pass."""
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    path = expected_path.parent / expected["capture"]
    name = expected_path.name.removesuffix(".expected.json")
    assert invite_call_ids(path) == {c["call_id"] for c in expected["calls"]}
    counts: dict[int, int] = {}
    for s in rtp_streams(path):
        counts[s["ssrc"]] = counts.get(s["ssrc"], 0) + s["packets"]
    for call in expected["calls"]:
        for d in (CALLER_TO_CALLEE, CALLEE_TO_CALLER):
            leg = call["legs"][d]
            if leg["ssrc"] is None:
                continue
            want = leg["packets"] + TSHARK_EXTRA.get((name, leg["ssrc"]), 0)
            assert counts.get(leg["ssrc"]) == want, (
                f"{call['call_id']} {d}: tshark {counts.get(leg['ssrc'])}, want {want}"
            )
            payloads = {s["payload"] for s in rtp_streams(path) if s["ssrc"] == leg["ssrc"]}
            assert payloads == {"g711U" if leg["codec"] == "PCMU" else "g711A"}, payloads
    rendered = _reference_render(expected, path)
    problems: list[str] = []
    for call in expected["calls"]:
        if call["recorded"]:
            rate, stereo = rendered[call["call_id"]]
            problems += check_audio(call, rate, stereo, float(expected["placement_tolerance_s"]))
    assert not problems, "\n".join(problems)
