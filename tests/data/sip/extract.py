"""Regenerate the raw SIP messages in this directory from the shared captures, byte for byte.

Usage (from the repository root)::

    .venv/bin/python tests/data/sip/extract.py [PCAPS_DIR] [--check]

PCAPS_DIR defaults to ``../shared/pcaps``. Each ``*.sip`` file is the UDP or TCP payload of one
frame (frame numbers count from 0 as scapy reads the file); ``fuzz/`` holds every UDP payload to or
from port 5060 of the fuzzed nDPI capture. With ``--check`` nothing is written and the exit status
says whether the files here match. Needs scapy (a test dependency), never used by callrec itself.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_PCAPS = HERE.parents[2].parent / "shared" / "pcaps"

# (file written here, capture under PCAPS_DIR, frame index); README.md says what each one shows.
MESSAGES: list[tuple[str, str, int]] = [
    ("g711-invite.sip", "wireshark-wiki/SIP_CALL_RTP_G711", 0),
    ("g711-180-ringing.sip", "wireshark-wiki/SIP_CALL_RTP_G711", 2),
    ("g711-200-ok.sip", "wireshark-wiki/SIP_CALL_RTP_G711", 497),
    ("real-call-invite.sip", "isa-michalcab/real_call.pcap", 5),
    ("real-call-bye.sip", "isa-michalcab/real_call.pcap", 383),
    ("mscml-multipart-invite.sip", "wireshark-wiki/MSCML.pcap", 0),
    ("g729-200-ok.sip", "wireshark-wiki/1filtered.cap", 53),
    ("vowifi-200-ok-tel.sip", "rtpdump-hdiniz/sample2_vowifi_ipv4_esp_ipv4.pcap", 705),
    ("ipv6-invite.sip", "heplify/sip_ipv6_udp.pcap", 0),
    ("dvi4-invite-recvonly.sip", "wireshark-wiki/sip-rtp-dvi4.pcap", 0),
    ("dvi4-200-ok-sendonly.sip", "wireshark-wiki/sip-rtp-dvi4.pcap", 3),
    ("mikey-invite.sip", "wireshark-wiki/mikey.pcap", 0),
    ("srtp-invite.sip", "voipshark/SIP-SRTP-Normal_Call_two_parties.pcap", 61),
    ("srtp-invite-ipfrag.sip", "voipshark/SIP-SRTP-Normal_Call_two_parties.pcap", 57),
    ("video-invite.sip", "wireshark-wiki/testing.ext.pcap", 0),
    ("t38-reinvite.sip", "wireshark-wiki/LtoZ_rtpFilter_fail_2.pcap", 115),
    ("zrtp-xlite-invite.sip", "wireshark-wiki/Asterisk_ZFONE_XLITE.pcap", 17),
]
FUZZ_CAPTURE = "ndpi/fuzz-2006-06-26-2594.pcap"
SIP_PORT = 5060


def _manifest(pcaps: Path) -> dict[str, str]:
    with open(pcaps / "MANIFEST.tsv", newline="") as handle:
        return {row["file"]: row["sha256"] for row in csv.DictReader(handle, delimiter="\t")}


def _payload(packet: Any) -> bytes | None:
    from scapy.layers.inet import TCP, UDP

    for layer in (UDP, TCP):
        if layer in packet:
            return bytes(packet[layer].payload)
    return None


def _reader(path: Path) -> Any:
    import scapy.layers.inet6  # noqa: F401  (registers IPv6 before packets are dissected)
    from scapy.utils import PcapReader

    return PcapReader(str(path))


def _frames(path: Path, wanted: set[int]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    with _reader(path) as reader:
        for index, packet in enumerate(reader):
            if index in wanted:
                payload = _payload(packet)
                if payload is None:
                    raise SystemExit(f"{path}: frame {index} has no UDP/TCP payload")
                found[index] = payload
            if index >= max(wanted):
                break
    return found


def _fuzz(path: Path) -> dict[str, bytes]:
    from scapy.layers.inet import UDP

    out: dict[str, bytes] = {}
    with _reader(path) as reader:
        for index, packet in enumerate(reader):
            if UDP in packet and SIP_PORT in (packet[UDP].sport, packet[UDP].dport):
                out[f"fuzz/ndpi-fuzz-{index:04d}.sip"] = bytes(packet[UDP].payload)
    return out


def extract(pcaps: Path) -> dict[str, bytes]:
    """Relative file name -> bytes, for every file this script owns."""
    manifest = _manifest(pcaps)
    captures = sorted({capture for _, capture, _ in MESSAGES} | {FUZZ_CAPTURE})
    for capture in captures:
        digest = hashlib.sha256((pcaps / capture).read_bytes()).hexdigest()
        if manifest.get(capture) != digest:
            raise SystemExit(f"{capture}: sha256 differs from MANIFEST.tsv")
    files: dict[str, bytes] = {}
    for capture in captures:
        wanted = {frame for _, cap, frame in MESSAGES if cap == capture}
        if wanted:
            frames = _frames(pcaps / capture, wanted)
            for name, cap, frame in MESSAGES:
                if cap == capture:
                    files[name] = frames[frame]
    files.update(_fuzz(pcaps / FUZZ_CAPTURE))
    return files


def _differs(path: Path, data: bytes) -> bool:
    return not path.is_file() or path.read_bytes() != data


def main(argv: list[str]) -> int:
    logging.getLogger("scapy").setLevel(logging.ERROR)
    check = "--check" in argv
    args = [arg for arg in argv if arg != "--check"]
    pcaps = Path(args[0]) if args else DEFAULT_PCAPS
    files = extract(pcaps)
    stale = [name for name, data in files.items() if _differs(HERE / name, data)]
    if check:
        for name in stale:
            print(f"differs: {name}")
        return 1 if stale else 0
    for name in stale:
        (HERE / name).parent.mkdir(parents=True, exist_ok=True)
        (HERE / name).write_bytes(files[name])
    print(f"{len(files)} files, {len(stale)} written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
