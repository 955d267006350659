"""Callrec agrees with tshark's inventory of every shared capture that carries SIP INVITEs.

For each capture of ../shared/pcaps/MANIFEST.tsv whose ``sip_invite/200inv/bye`` column counts at
least one INVITE:

(a) the SIP calls callrec finds (calls of state "unsignalled", rebuilt from RTP alone, excluded)
    and how many of them were answered equal the manifest's ``calls`` column ("N (M answered)",
    made with tshark: distinct INVITE Call-IDs, and those with a 2xx to an INVITE);
(b) every leg with RTP counts exactly the packets of tshark's ``-z rtp,streams`` streams that carry
    one of the leg's SSRCs from one of the leg's sources, and every tshark stream is in some leg
    (a SIP call's or an unsignalled call's).

Each disagreement is a line of text; the lines of a capture must equal its EXCEPTIONS entry
exactly, so a disagreement that is fixed (or that changes) fails the test until the table is
updated. Each exception says who is right and why; each was checked with tshark (SIP flow,
SDP, per-packet RTP fields).
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from callrec.capture.model.errors import ParseError
from callrec.recorder.pipeline import import_captures
from callrec.store.catalogue.db import Catalogue
from callrec.store.home import Home
from tests.helpers.keyset import provision

SHARED = Path(__file__).resolve().parents[3] / "shared" / "pcaps"
MANIFEST = SHARED / "MANIFEST.tsv"
TSHARK = shutil.which("tshark")

_AAA_LATE_RTP = (
    "callrec: the caller sent these 9 PCMA packets 1.0 s after the 480 that ended call 11894297 (and"
    " its ACK); media later than 0.5 s after a call's end is not the call's (rtp_after_call_end)"
)
_FUZZ = (
    "callrec: fuzzed copy of aaa.pcap; every INVITE is corrupt (a mangled CSeq method, header lines"
    " without a colon, a head cut short) and is refused as malformed, tshark dissects them leniently"
)
_FUZZ_RTP = (
    "callrec: 1-3 RTP packets of the fuzzed copy, no SIP call to own them, too short to be unsignalled"
)
_TLS = (
    "manifest: SIP is TLS-encrypted; the manifest decrypted it with the RSA key beside the capture"
    " (tls.keys_list), callrec sees no SIP and records the RTP as two unsignalled calls instead"
)
_BAD_CLOCK = (
    "manifest: the file's timestamps are corrupt (the 200 OK is stamped %s the INVITE); callrec goes"
    " by capture time, so the INVITE timed out unanswered, tshark ignores time"
)

# file -> {disagreement line: one-line reason (who is right, and why)}, checked with tshark.
EXCEPTIONS: dict[str, dict[str, str]] = {
    "heplify/sip_ipv6_udp.pcap": {
        "calls: callrec 1 (0 answered), manifest 1 (1 answered)": _BAD_CLOCK % "6.4 years after",
    },
    "wireshark-wiki/testing.ext.pcap": {
        "calls: callrec 1 (0 answered), manifest 1 (1 answered)": _BAD_CLOCK % "100 years before",
    },
    "heplify/sip_sctp.pcap": {
        "calls: callrec 0 (0 answered), manifest 1 (0 answered)": (
            "manifest: the INVITE (403, ACK) travels over SCTP; callrec reads SIP over UDP and TCP only"
        ),
    },
    "wireshark-wiki/c07-sip-r2.cap": {
        "callrec refuses the file: unsupported_format": (
            "manifest: a Microsoft NetMon 2.x file (PROTOS c07 SIP test cases); callrec reads pcap and"
            " pcapng only (editcap -F pcap converts it)"
        ),
    },
    "ndpi/fuzz-2006-06-26-2594.pcap": {
        "calls: callrec 0 (0 answered), manifest 4 (0 answered)": _FUZZ,
        **{
            f"stream {s}: 1 packets in no leg": _FUZZ_RTP
            for s in (
                "192.168.1.2:30000->212.242.33.36:40392 ssrc 0x37968BAA",
                "192.168.1.2:30000->212.242.33.36:40392 ssrc 0xAAAAAAAA",
                "192.168.1.2:30000->214.242.33.36:40392 ssrc 0x3796CB71",
                "192.168.1.2:30000->37.115.0.36:40392 ssrc 0x3796CB71",
                "192.168.1.3:30000->212.242.33.36:40392 ssrc 0x3796CB71",
                "81.168.1.2:30000->212.242.33.36:40392 ssrc 0x3796CB71",
            )
        },
        "stream 192.168.1.2:30000->212.242.33.36:40392 ssrc 0x3796CB71: 3 packets in no leg": _FUZZ_RTP,
    },
    "ndpi/sip.pcap": {
        "stream 192.168.1.2:30000->212.242.33.36:40392 ssrc 0x3796CB71: 9 packets in no leg": _AAA_LATE_RTP,
    },
    "wireshark-wiki/aaa.pcap": {
        "stream 192.168.1.2:30000->212.242.33.36:40392 ssrc 0x3796CB71: 9 packets in no leg": _AAA_LATE_RTP,
    },
    "voipshark/SIP-over-TLS-RSA-SRTP_Normal_Call_two_parties.pcap": {
        "calls: callrec 0 (0 answered), manifest 1 (1 answered)": _TLS,
    },
    "voipshark/SIP-over-TLS-RTP-Normal_Call_two_parties.pcap": {
        "calls: callrec 0 (0 answered), manifest 1 (1 answered)": _TLS,
    },
    "wireshark-wiki/1filtered.cap": {
        "stream 174.120.125.35:18530->174.132.174.114:21980 ssrc 0x23157D23: 17 packets in no leg": (
            "callrec: the PBX 174.132.174.114's other call leg, whose SIP this filtered capture lacks"
            " (the PBX relays it with the same SSRC to 8.19.97.196); 17 packets, too few to be unsignalled"
        ),
        "stream 174.132.174.114:21980->174.120.125.35:18530 ssrc 0x730B89B2: 1 packets in no leg": (
            "callrec: the PBX's relayed copy of 8.19.97.196's stream (same SSRC) on its other leg, whose"
            " SIP is not in the capture; one packet"
        ),
    },
    "wireshark-wiki/SIP_CALL_RTP_G711": {
        "stream 200.57.7.196:40378->200.57.7.199:4800 ssrc 0xD2BD4E3E: 548 packets in no leg": (
            "callrec: the media relay .196's other side, a copy of the call's callee->caller stream (same"
            " SSRC, same count); not the SDP endpoints, so not counted twice"
        ),
        "stream 200.57.7.199:4800->200.57.7.196:40378 ssrc 0x58F33DEA: 891 packets in no leg": (
            "callrec: the media relay .196's other side, a copy of the call's caller->callee stream (same"
            " SSRC, same count); not the SDP endpoints, so not counted twice"
        ),
        "stream 200.57.7.202:30000->200.57.7.196:40362 ssrc 0x00002E3D: 6 packets in no leg": (
            "callrec: media of an MGCP call (CRCX, frame 2945), not SIP; 6 packets, too few to be an"
            " unsignalled call"
        ),
    },
    "wireshark-wiki/h263-over-rtp.pcap": {
        "stream 192.168.6.199:57128->192.168.6.199:32976 ssrc 0x5482ECE0: 45 packets in no leg": (
            "callrec: H.263 video (PT 34) to the SDP's m=video port; callrec records the audio legs only"
            " and counts video apart (callrec.capture.streams.sidemedia)"
        ),
    },
}


def _manifest_rows() -> list[dict[str, str]]:
    if not MANIFEST.is_file():
        return []
    with MANIFEST.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = []
    for row in rows:
        counts = row["sip_invite/200inv/bye"].split("/")
        if counts[0].isdigit() and int(counts[0]) > 0 and (SHARED / row["file"]).is_file():
            out.append(row)
    return out


ROWS = {row["file"]: row for row in _manifest_rows()}

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(not ROWS, reason="../shared/pcaps is not beside this checkout"),
    pytest.mark.skipif(TSHARK is None, reason="tshark is not installed: manifest cross-check skipped"),
]

_STREAM_LINE = re.compile(
    r"^\s*[\d.]+\s+[\d.]+\s+(?P<src>\S+)\s+(?P<sport>\d+)\s+(?P<dst>\S+)\s+(?P<dport>\d+)\s+"
    r"(?P<ssrc>0x[0-9A-Fa-f]+)\s+.+?\s+(?P<pkts>\d+)\s+-?\d+\s+\("
)

Stream = tuple[str, int, str, int, int, int]  # src, sport, dst, dport, ssrc, packets


def _tshark_streams(name: str) -> tuple[Stream, ...]:
    assert TSHARK is not None
    proc = subprocess.run(
        [TSHARK, "-n", "-r", str(SHARED / name), "-q", "-o", "rtp.heuristic_rtp:TRUE", "-z", "rtp,streams"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"tshark -z rtp,streams on {name}: {proc.stderr}"
    out = []
    for line in proc.stdout.splitlines():
        m = _STREAM_LINE.match(line)
        if m:
            out.append(
                (m["src"], int(m["sport"]), m["dst"], int(m["dport"]), int(m["ssrc"], 16), int(m["pkts"]))
            )
    return tuple(out)


@cache
def all_streams() -> dict[str, tuple[Stream, ...]]:
    """tshark's RTP streams of every compared capture, the tshark runs in parallel (once a session)."""
    names = sorted(ROWS)
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(names, pool.map(_tshark_streams, names), strict=True))


def _endpoints(text: Any) -> set[tuple[str, int]]:
    """ "198.51.100.10:4000", "[2001:db8::1]:4000", or several of them comma-separated."""
    out = set()
    for item in str(text or "").split(","):
        m = re.fullmatch(r"\[?([^\]]+?)\]?:(\d+)", item.strip())
        if m:
            out.add((m[1], int(m[2])))
    return out


def _ssrcs(text: Any) -> set[int]:
    return {int(x, 16) for x in str(text or "").split(",") if x.strip()}


def _stream_text(s: Stream) -> str:
    return f"{s[0]}:{s[1]}->{s[2]}:{s[3]} ssrc 0x{s[4]:08X}"


def disagreements(name: str, calls: list[dict[str, Any]], streams: tuple[Stream, ...]) -> list[str]:
    """What callrec's ``calls`` (catalogue rows with legs) and the manifest / tshark disagree on."""
    lines = []
    m = re.fullmatch(r"(\d+) \((\d+) answered\)", ROWS[name]["calls"].strip())
    assert m, f"{name}: manifest calls column {ROWS[name]['calls']!r}"
    sip = [c for c in calls if c["state"] != "unsignalled"]
    found, answered = len(sip), sum(1 for c in sip if c["answered_at"] is not None)
    if (found, answered) != (int(m[1]), int(m[2])):
        lines.append(f"calls: callrec {found} ({answered} answered), manifest {m[1]} ({m[2]} answered)")
    in_a_leg: set[Stream] = set()
    for call in calls:
        for leg in call["legs"]:
            ssrcs, sources = _ssrcs(leg["ssrc"]), _endpoints(leg["src"])
            mine = [s for s in streams if s[4] in ssrcs and (s[0], s[1]) in sources]
            in_a_leg.update(mine)
            want = sum(s[5] for s in mine)
            if int(leg["packets"] or 0) != want:
                lines.append(
                    f"leg {call['call_id']} {leg['direction']}: callrec {leg['packets']} packets, "
                    f"tshark {want} ({', '.join(_stream_text(s) for s in mine) or 'no stream'})"
                )
    for s in streams:
        if s not in in_a_leg:
            lines.append(f"stream {_stream_text(s)}: {s[5]} packets in no leg")
    return sorted(lines)


def _import(name: str, tmp_path: Path) -> list[dict[str, Any]] | str:
    """The calls callrec stores for the capture, or why it refuses the file."""
    home = Home(provision(tmp_path / "home"))
    try:
        import_captures([SHARED / name], home)
    except ParseError as exc:
        return f"callrec refuses the file: {exc.reason}"
    with Catalogue(home.catalogue_path) as catalogue:
        return [catalogue.get_call(row["id"]) for row in catalogue.search(limit=None)]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_capture_agrees_with_manifest_and_tshark(name: str, tmp_path: Path) -> None:
    calls = _import(name, tmp_path)
    got = [calls] if isinstance(calls, str) else disagreements(name, calls, all_streams()[name])
    expected = EXCEPTIONS.get(name, {})
    unexplained = [line for line in got if line not in expected]
    gone = [line for line in expected if line not in got]
    assert not unexplained and not gone, (
        f"{name}:\n  disagreements with no exception:\n    "
        + "\n    ".join(unexplained or ["none"])
        + "\n  exceptions that no longer happen:\n    "
        + "\n    ".join(gone or ["none"])
    )


def test_exceptions_name_compared_captures() -> None:
    assert set(EXCEPTIONS) <= set(ROWS), sorted(set(EXCEPTIONS) - set(ROWS))
    for name, entries in EXCEPTIONS.items():
        for line, reason in entries.items():
            assert reason.strip() and "\n" not in reason, f"{name}: {line}: give a one-line reason"
