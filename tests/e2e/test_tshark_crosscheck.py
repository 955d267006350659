"""Callrec against Wireshark's dissectors (tshark), on real captures, lab captures and the fixtures.

For each real capture in FACTS (and the lab captures, whose facts come from their NAME.json):

1. tshark still sees what the FACTS table says (INVITE Call-IDs; per stream: endpoints, SSRC,
   packets, via ``tshark -q -o rtp.heuristic_rtp:TRUE -z rtp,streams``). The table was made by
   hand with tshark 4.0 and each entry was checked against the SIP/SDP flow (see the comments).
2. ``callrec import`` finds exactly those calls, and each leg's packet count (and SSRC, and
   address/port when the leg reports them) equals tshark's count for the stream(s) of that leg.
3. The exported audio is non-silent exactly where RTP flowed, per 100 ms window of each
   channel. Each packet's place on the recording's timeline is computed from tshark's fields
   the way DESIGN.md prescribes: RTP timestamp, mapped to capture time per SSRC segment by the
   lower envelope of arrival - timestamp / clock (a new segment at a marker bit, a timestamp jump
   beyond the sequence numbers, or an offset jump > 100 ms); t = 0 is the earliest placed packet of
   the call. Then, with a guard of G = 20 ms
   for the recorder's own anchoring:
   * a window must contain non-zero samples if an audio packet (PCMU/PCMA) whose payload is not
     all digital silence (0xFF/0x7F, 0xD5/0x55) lies entirely inside [w0 + G, w1 - G];
   * a window must be all zeros if no packet of the leg (any payload type), by placement or by
     arrival, comes within G of it.
   Windows that are neither (edges, telephone-events, comfort noise) are not judged.

For the fixtures, tshark's streams must agree with expected.json, and a reference rendering built
from tshark's fields alone must pass test_fixtures' audio checks (which checks the checker).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.fixture_check import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    PCAPS,
    as_int,
    export_wav,
    import_capture,
    legs_by_direction,
)

TSHARK = shutil.which("tshark")
pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(
        TSHARK is None,
        reason="tshark is not installed (`make system-deps` installs it as root): "
        "Wireshark cross-checks skipped",
    ),
]

WINDOW_S = 0.1
GUARD_S = 0.020
REANCHOR_S = 0.100
SILENT_PAYLOAD = {0: {0xFF, 0x7F}, 8: {0xD5, 0x55}}  # PCMU, PCMA digital silence
AUDIO_PT = {0: "PCMU", 8: "PCMA"}

# ---------------------------------------------------------------------------------------------
# Facts verified by hand with tshark 4.0.17 (-o rtp.heuristic_rtp:TRUE -z rtp,streams, SIP/SDP fields).
# A stream is (src, sport, dst, dport, ssrc, packets). "calls" lists every INVITE Call-ID; "legs" maps
# a direction to the stream(s) of that leg; a direction not listed has no media.

Stream = tuple[str, int, str, int, int, int]

FACTS: dict[str, dict[str, Any]] = {
    # X-Lite via a proxy (200.57.7.195) and a media relay (200.57.7.196). Call 1: INVITE SDP offers
    # .196:40376, the 200 OK answers .204:8000; PCMA both ways, no BYE in the capture (answered).
    # The relay's other side (.199:4800 <-> .196:40378) carries the SAME SSRCs but is not this
    # call's SDP endpoints: it must not be counted. Call 2 rings at the end of the capture.
    "real/wireshark-wiki/SIP_CALL_RTP_G711": {
        "calls": {
            "12013223@200.57.7.195": {
                CALLER_TO_CALLEE: [("200.57.7.196", 40376, "200.57.7.204", 8000, 0x58F33DEA, 891)],
                CALLEE_TO_CALLER: [("200.57.7.204", 8000, "200.57.7.196", 40376, 0xD2BD4E3E, 548)],
            },
            "12015624@200.57.7.195": {},
        },
        "other_streams": [
            ("200.57.7.199", 4800, "200.57.7.196", 40378, 0x58F33DEA, 891),
            ("200.57.7.196", 40378, "200.57.7.199", 4800, 0xD2BD4E3E, 548),
            ("200.57.7.202", 30000, "200.57.7.196", 40362, 0x00002E3D, 6),
        ],
    },
    # SIPp (10.0.2.20, caller, SDP recvonly) <-> FreeSWITCH (10.0.2.15, answers sendonly): media
    # only callee -> caller. Call 1 PCMU, ended by the callee's BYE; call 2 PCMA, no BYE.
    "real/wireshark-wiki/sip-rtp-g711.pcap": {
        "calls": {
            "1-1966@10.0.2.20": {
                CALLEE_TO_CALLER: [("10.0.2.15", 27942, "10.0.2.20", 6000, 0x343DA99B, 425)]
            },
            "1-1968@10.0.2.20": {
                CALLEE_TO_CALLER: [("10.0.2.15", 28102, "10.0.2.20", 6000, 0x343FFA34, 414)]
            },
        },
    },
    # A SIP-DECT system (192.168.105.110) where handset 2502 calls 2504 via the PBX .105: call 5514
    # is declined (603); call 25672 is a delayed offer (INVITE without SDP; offer in the 200 OK:
    # .110:4376, answer in the ACK: .110:4374), hairpinned back to .110 with the same Call-ID.
    # Media runs via 192.168.105.172: .110:4374 -> .172:4376 (PCMA, 30 ms) leaves the caller's SDP
    # endpoint; .172:4376 receives that and sends back to .110:4376 (PCMA + 35 RFC 2833 events,
    # PT 96), i.e. .172:4376 is the callee's media end (symmetric RTP). The two streams carry
    # unrelated audio (correlation 0.03, envelopes -0.02): two directions, not one stream relayed.
    "real/wireshark-wiki/SIP_DTMF2.cap": {
        "calls": {
            "5514@192.168.105.110": {},
            "25672@192.168.105.110": {
                CALLER_TO_CALLEE: [("192.168.105.110", 4374, "192.168.105.172", 4376, 0x9A7B5382, 665)],
                CALLEE_TO_CALLER: [("192.168.105.172", 4376, "192.168.105.110", 4376, 0x5711BF84, 666)],
            },
        },
    },
    # Asterisk (10.0.2.15) as B2BUA between Linphone 10.0.2.4 (Call-ID 1278621692) and 10.0.2.5
    # (Call-ID 2d96...@10.0.2.15:5060); re-INVITEs move the media to 10.0.2.4:7078 <-> 10.0.2.5:7078
    # directly, in BOTH dialogs. 10.0.2.4 is the caller of dialog 1, Asterisk (offering 10.0.2.4's
    # media) the caller of dialog 2, so in both dialogs caller->callee is 10.0.2.4 -> 10.0.2.5.
    "real/isa-michalcab/real_call.pcap": {
        "calls": {
            "1278621692": {
                CALLER_TO_CALLEE: [("10.0.2.4", 7078, "10.0.2.5", 7078, 0x15D7B1AC, 152)],
                CALLEE_TO_CALLER: [("10.0.2.5", 7078, "10.0.2.4", 7078, 0x38D2EBB2, 188)],
            },
            "2d9639532965f07f406d8b2d35d7c435@10.0.2.15:5060": {
                CALLER_TO_CALLEE: [("10.0.2.4", 7078, "10.0.2.5", 7078, 0x15D7B1AC, 152)],
                CALLEE_TO_CALLER: [("10.0.2.5", 7078, "10.0.2.4", 7078, 0x38D2EBB2, 188)],
            },
        },
        "shared_media": True,  # one media session, two dialogs: each stream in at least one of them
    },
    # SIP over IPv6 through a proxy, INVITEs fragmented (IPv6 fragment header), Linux SLL, 183 +
    # PRACK + UPDATE, 200, BYE after 160 s; no RTP at all.
    "real/sngrep/ipv6frag.pcap": {
        "calls": {"71846-1647924829-397430@fd17:625c:f037:2:a00:27ff:feb9:1521": {}},
    },
}


def lab_facts(json_path: Path) -> dict[str, Any]:
    """Facts of a lab capture from its NAME.json (written by the lab from tshark's own output)."""
    meta = json.loads(json_path.read_text(encoding="utf-8"))
    a, b = meta["a"], meta["b"]
    legs: dict[str, list[Stream]] = {}
    for s in meta["wire"]["rtp_streams"]:
        stream = (s["src"], int(s["sport"]), s["dst"], int(s["dport"]), int(s["ssrc"], 16), int(s["pkts"]))
        if s["src"] == a["ip"] and int(s["sport"]) == a["rtp_port"]:
            legs.setdefault(CALLER_TO_CALLEE, []).append(stream)
        elif s["src"] == b["ip"] and int(s["sport"]) == b["rtp_port"]:
            legs.setdefault(CALLEE_TO_CALLER, []).append(stream)
    return {"calls": {meta["sip_call_id"]: legs}}


LAB_JSONS = sorted((PCAPS / "lab").glob("*.json"))
CASES: dict[str, dict[str, Any]] = dict(FACTS)
for _json in LAB_JSONS:
    CASES[f"lab/{_json.stem}.pcap"] = lab_facts(_json)


# ---------------------------------------------------------------------------------------------
# tshark


def _tshark(path: Path, *args: str) -> str:
    assert TSHARK is not None
    proc = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-o", "rtp.heuristic_rtp:TRUE", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"tshark {' '.join(args)} on {path.name}: {proc.stderr}"
    return proc.stdout


_STREAM_LINE = re.compile(
    r"^\s*(?P<start>[\d.]+)\s+(?P<end>[\d.]+)\s+(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+"
    r"(?P<ssrc>0x[0-9A-Fa-f]+)\s+(?P<payload>.+?)\s+(?P<pkts>\d+)\s+(?P<lost>-?\d+)\s+\("
)


@cache
def rtp_streams(path: Path) -> tuple[dict[str, Any], ...]:
    """``tshark -z rtp,streams``: one dict per stream."""
    out = []
    for line in _tshark(path, "-q", "-z", "rtp,streams").splitlines():
        m = _STREAM_LINE.match(line)
        if m:
            out.append(
                {
                    "src": m["src"],
                    "sport": int(m["sport"]),
                    "dst": m["dst"],
                    "dport": int(m["dport"]),
                    "ssrc": int(m["ssrc"], 16),
                    "payload": m["payload"],
                    "packets": int(m["pkts"]),
                    "lost": int(m["lost"]),
                }
            )
    return tuple(out)


@dataclass
class Packets:
    """RTP packets of one stream as tshark dissects them (ICMP-quoted copies excluded)."""

    arrival: list[float] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    pt: list[int] = field(default_factory=list)
    marker: list[bool] = field(default_factory=list)
    payload: list[bytes] = field(default_factory=list)

    def select(self, keep: list[bool]) -> Packets:
        pick = [i for i, k in enumerate(keep) if k]
        return Packets(
            [self.arrival[i] for i in pick],
            [self.seq[i] for i in pick],
            [self.ts[i] for i in pick],
            [self.pt[i] for i in pick],
            [self.marker[i] for i in pick],
            [self.payload[i] for i in pick],
        )


@cache
def rtp_packets(path: Path) -> dict[tuple[str, int, str, int, int], Packets]:
    fields = [
        "frame.time_epoch",
        "ip.src",
        "ipv6.src",
        "udp.srcport",
        "ip.dst",
        "ipv6.dst",
        "udp.dstport",
        "rtp.ssrc",
        "rtp.seq",
        "rtp.timestamp",
        "rtp.p_type",
        "rtp.marker",
        "rtp.payload",
    ]
    args = ["-Y", "rtp && !icmp && !icmpv6", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]
    for f in fields:
        args += ["-e", f]
    streams: dict[tuple[str, int, str, int, int], Packets] = {}
    for line in _tshark(path, *args).splitlines():
        cols = line.split("\t")
        if len(cols) < len(fields):
            continue
        t, s4, s6, sport, d4, d6, dport, ssrc, seq, ts, pt, marker, payload = cols[: len(fields)]
        if not (ssrc and seq and ts and pt):
            continue
        key = (s4 or s6, int(sport), d4 or d6, int(dport), int(ssrc, 16))
        p = streams.setdefault(key, Packets())
        p.arrival.append(float(t))
        p.seq.append(int(seq))
        p.ts.append(int(ts))
        p.pt.append(int(pt))
        p.marker.append(marker in ("1", "True"))
        p.payload.append(bytes.fromhex(payload.replace(":", "")))
    return streams


def invite_call_ids(path: Path) -> set[str]:
    out = _tshark(path, "-Y", 'sip.Method == "INVITE"', "-T", "fields", "-e", "sip.Call-ID")
    return {line.strip() for line in out.splitlines() if line.strip()}


# ---------------------------------------------------------------------------------------------
# where each packet belongs on the recording's timeline


def _unwrap(values: list[int], modulus: int) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    base = 0
    for i, v in enumerate(values):
        if i:
            prev = out[i - 1]
            cand = base + v
            # pick the representative closest to the previous value
            while cand - prev > modulus // 2:
                cand -= modulus
            while prev - cand > modulus // 2:
                cand += modulus
            base = cand - v
            out[i] = cand
        else:
            out[i] = v
    return out


def placed_spans(p: Packets, clock: int = 8000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end) capture times of each packet as placed by RTP timestamp, and the arrival.

    Talkspurts (segments) start at the first packet, at a marker bit, where the timestamp jumps by
    more than the sequence numbers account for (silence suppression), and where arrival minus
    timestamp jumps by more than 100 ms; each segment is anchored at its lower envelope."""
    arrival = np.asarray(p.arrival)
    order = np.argsort(_unwrap(p.seq, 1 << 16), kind="stable")
    ext_seq = _unwrap([p.seq[i] for i in order], 1 << 16)
    ext_ts = _unwrap([p.ts[i] for i in order], 1 << 32).astype(np.float64)
    marker = np.asarray([p.marker[i] for i in order], dtype=bool)
    arr = arrival[order]
    steps = np.diff(ext_ts)
    seq_steps = np.diff(ext_seq)
    audio_steps = steps[(steps > 0) & (steps <= clock) & (seq_steps == 1)]
    frame = float(np.median(audio_steps)) if audio_steps.size else 0.02 * clock
    offset = arr - ext_ts / clock
    new_segment = np.zeros(len(offset), dtype=bool)
    new_segment[0] = True
    new_segment[1:] = marker[1:] | (steps > seq_steps * frame + 1) | (np.abs(np.diff(offset)) > REANCHOR_S)
    seg_start = np.concatenate([np.flatnonzero(new_segment), [len(offset)]])
    start = np.empty(len(offset))
    for a, b in zip(seg_start[:-1], seg_start[1:], strict=True):
        start[a:b] = offset[a:b].min() + ext_ts[a:b] / clock
    placed = np.empty(len(offset))
    placed[order] = start
    return placed, placed + frame / clock, arrival


def check_activity(label: str, channel: np.ndarray, rate: int, legs: list[Packets], t0: float) -> list[str]:
    """Per 100 ms window: sound where audio packets were, digital silence where none was."""
    problems: list[str] = []
    n_win = int(np.ceil(len(channel) / rate / WINDOW_S))
    must_sound = np.zeros(n_win, dtype=bool)
    may_sound = np.zeros(n_win, dtype=bool)
    for p in legs:
        start, end, arrival = placed_spans(p)
        frame_s = float(np.median(end - start)) if len(start) else 0.02
        for s, e, a, pt, payload in zip(start, end, arrival, p.pt, p.payload, strict=True):
            s, e, a = s - t0, e - t0, a - t0
            for lo, hi in ((s, e), (min(s, a - frame_s), max(e, a))):
                w_lo = max(0, int(np.floor((lo - GUARD_S) / WINDOW_S)))
                w_hi = min(n_win - 1, int(np.floor((hi + GUARD_S) / WINDOW_S)))
                may_sound[w_lo : w_hi + 1] = True
            silent_payload = set(payload) <= SILENT_PAYLOAD.get(pt, set())
            if pt in AUDIO_PT and payload and not silent_payload:
                w = int(np.floor(s / WINDOW_S))
                if 0 <= w < n_win and s >= w * WINDOW_S + GUARD_S and e <= (w + 1) * WINDOW_S - GUARD_S:
                    must_sound[w] = True
    quiet_but_sent, loud_but_nothing = [], []
    for w in range(n_win):
        a, b = int(round(w * WINDOW_S * rate)), min(len(channel), int(round((w + 1) * WINDOW_S * rate)))
        nonzero = bool(np.any(channel[a:b]))
        if must_sound[w] and not nonzero:
            quiet_but_sent.append(w * WINDOW_S)
        if not may_sound[w] and nonzero:
            loud_but_nothing.append(w * WINDOW_S)
    if quiet_but_sent:
        problems.append(
            f"{label}: {len(quiet_but_sent)} window(s) all zero although RTP audio flowed, at "
            + ", ".join(f"{t:.1f}" for t in quiet_but_sent[:10])
            + " s"
        )
    if loud_but_nothing:
        problems.append(
            f"{label}: {len(loud_but_nothing)} window(s) with sound although no RTP of this leg was "
            "on the wire, at " + ", ".join(f"{t:.1f}" for t in loud_but_nothing[:10]) + " s"
        )
    audible = any(
        pt in AUDIO_PT and payload and not set(payload) <= SILENT_PAYLOAD[pt]
        for p in legs
        for pt, payload in zip(p.pt, p.payload, strict=True)
    )
    if audible and not must_sound.any():
        problems.append(f"{label}: audio packets flowed but no window could be judged")
    return problems


# ---------------------------------------------------------------------------------------------
# the tests


def _streams_of(facts: dict[str, Any]) -> list[Stream]:
    out = [s for legs in facts["calls"].values() for ss in legs.values() for s in ss]
    return out + list(facts.get("other_streams", []))


@pytest.mark.parametrize("name", sorted(CASES))
def test_facts_hold_in_tshark(name: str) -> None:
    """The table above is what tshark sees (so it cannot silently go stale)."""
    path = PCAPS / name
    facts = CASES[name]
    assert invite_call_ids(path) == set(facts["calls"]), f"{name}: INVITE Call-IDs per tshark"
    seen = {(s["src"], s["sport"], s["dst"], s["dport"], s["ssrc"]): s["packets"] for s in rtp_streams(path)}
    for src, sport, dst, dport, ssrc, packets in _streams_of(facts):
        key = (src, sport, dst, dport, ssrc)
        assert seen.get(key) == packets, (
            f"{name}: tshark counts {seen.get(key)} packets for {key}, table {packets}"
        )
        assert len(rtp_packets(path)[key].arrival) == packets, f"{name}: per-packet dump disagrees for {key}"


def _endpoints(text: Any) -> set[tuple[str, int]]:
    """ "198.51.100.10:4000", "[2001:db8::1]:4000", or several of them comma-separated."""
    out = set()
    for item in str(text or "").split(","):
        m = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", item.strip())
        if m:
            out.add((m[1], int(m[2])))
    return out


def _leg_matches(leg: dict[str, Any], stream: Stream) -> bool:
    """SSRC and source as seen must match (the leg's "dst" is the receiver's SDP endpoint, which
    differs from the wire with relays and NAT, so it is not compared)."""
    src, sport, _dst, _dport, ssrc, _ = stream
    if leg.get("ssrc") not in (None, ""):
        try:
            ssrcs = (
                {as_int(x) for x in str(leg["ssrc"]).split(",")}
                if isinstance(leg["ssrc"], str)
                else {leg["ssrc"]}
            )
        except ValueError:
            return False
        if ssrc not in ssrcs:
            return False
    got_src = _endpoints(leg.get("src"))
    return not (got_src and (src, sport) not in got_src)


@pytest.mark.parametrize("name", sorted(CASES))
def test_callrec_agrees_with_tshark(name: str, tmp_path: Path) -> None:
    path = PCAPS / name
    facts = CASES[name]
    home = tmp_path / "home"
    calls = import_capture(home, path)
    found = {c.get("call_id"): c for c in calls}
    assert sorted(found) == sorted(facts["calls"]), (
        f"{name}: calls found {sorted(found)}, expected {sorted(facts['calls'])}"
    )
    packets = rtp_packets(path)
    problems: list[str] = []
    attributed: dict[Stream, list[str]] = {}
    for call_id, fact_legs in facts["calls"].items():
        call = found[call_id]
        legs = legs_by_direction(call)
        for direction in (CALLER_TO_CALLEE, CALLEE_TO_CALLER):
            streams = fact_legs.get(direction, [])
            got = [leg for leg in legs.get(direction, []) if leg.get("packets")]
            want_packets = sum(s[5] for s in streams)
            got_packets = sum(int(leg["packets"]) for leg in got)
            if facts.get("shared_media") and got_packets == 0:
                continue  # the media may be attributed to the other dialog of the B2BUA
            if got_packets != want_packets:
                problems.append(
                    f"{call_id} {direction}: callrec counts {got_packets} RTP packets, tshark "
                    f"{want_packets} ({streams or 'no stream'}); callrec legs: {got}"
                )
                continue
            for leg in got:
                if not any(_leg_matches(leg, s) for s in streams):
                    problems.append(
                        f"{call_id} {direction}: leg {leg} matches none of tshark's streams {streams}"
                    )
            for s in streams:
                attributed.setdefault(s, []).append(call_id)
        if not call.get("recording"):
            if any(fact_legs.values()) and not facts.get("shared_media"):
                problems.append(f"{call_id}: RTP flowed ({fact_legs}) but there is no recording")
            continue
        # audio activity per 100 ms window
        rate, samples = export_wav(home, call, tmp_path / f"{call['id']}.wav")
        leg_packets = {
            d: [packets[s[:5]] for s in fact_legs.get(d, [])] for d in (CALLER_TO_CALLEE, CALLEE_TO_CALLER)
        }
        if facts.get("shared_media") and not any(leg.get("packets") for leg in call.get("legs") or []):
            continue
        starts = [placed_spans(p)[0].min() for ps in leg_packets.values() for p in ps if p.arrival]
        if not starts:
            problems.append(f"{call_id}: has a recording but tshark sees no RTP for it")
            continue
        t0 = min(starts)
        problems += check_activity(
            f"{call_id} left (caller)", samples[:, 0], rate, leg_packets[CALLER_TO_CALLEE], t0
        )
        problems += check_activity(
            f"{call_id} right (callee)", samples[:, 1], rate, leg_packets[CALLEE_TO_CALLER], t0
        )
    if facts.get("shared_media"):
        for s in {s for legs in facts["calls"].values() for ss in legs.values() for s in ss}:
            if s not in attributed:
                problems.append(f"stream {s} is in no call")
    assert not problems, f"{name}:\n  " + "\n  ".join(problems)
