"""Frame decoding cross-checked: scapy-built frames, mutations, random frames, real captures, tshark."""

from __future__ import annotations

import ipaddress
import random
import shutil
import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.sources.capture_file import read_batches
from tests.capture.test_frames import (
    BIG,
    LINKS,
    SHARED,
    V4,
    V6,
    both_paths,
    eth,
    ext,
    ipv4,
    ipv6,
    make_batch,
    rows,
    udp,
    v4_fragments,
    v6_fragments,
)

# -- cross-checks -----------------------------------------------------------------------------


def test_scapy_built_frames_agree() -> None:
    from scapy.layers.inet import IP, UDP, fragment
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
    from scapy.layers.l2 import Dot1Q, Ether

    rng = random.Random(11)
    packets, expected = [], []
    for i in range(60):
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 160, 1400, 4000])))
        sport, dport = rng.randrange(1, 65536), rng.randrange(1, 65536)
        vlan = rng.choice([None, 10, 4000])
        mac = Ether(src="00:11:22:33:44:55", dst="66:77:88:99:aa:bb")
        l2 = mac / Dot1Q(vlan=vlan) if vlan is not None else mac
        if i % 2:
            ip = IP(src=f"192.0.2.{i}", dst="198.51.100.7", id=i) / UDP(sport=sport, dport=dport) / payload
            parts = [l2 / f for f in fragment(ip, fragsize=1000)] if len(payload) > 1400 else [l2 / ip]
            src = f"192.0.2.{i}"
        else:
            ip6 = IPv6(src=f"2001:db8::{i:x}", dst="2001:db8::ff") / UDP(sport=sport, dport=dport) / payload
            if len(payload) > 1400:
                parts = [
                    l2 / f
                    for f in fragment6(
                        IPv6(
                            bytes(
                                IPv6(src=f"2001:db8::{i:x}", dst="2001:db8::ff")
                                / IPv6ExtHdrFragment(id=i)
                                / UDP(sport=sport, dport=dport)
                                / payload
                            )
                        ),
                        1280,
                    )
                ]
            else:
                parts = [l2 / ip6]
            src = str(ipaddress.IPv6Address(f"2001:db8::{i:x}"))
        packets += [bytes(p) for p in parts]
        expected.append((src, sport, dport, -1 if vlan is None else vlan, payload))
    got, _ = both_paths([make_batch([(p, 1) for p in packets])])
    assert [(r[2], r[4], r[5], r[6], r[7]) for r in got] == expected


def _mutated_frames(data: st.DataObject) -> list[tuple[bytes, int]]:
    bases = [(d, lt) for _, d, lt, _ in LINKS] + [(eth(f), 1) for f in v4_fragments(BIG[:300], 96)]
    bases += [
        (eth(ipv6(ext(60) + ext(17) + udp(1, 2, b"e"), nh=0), 0x86DD), 1),
        (eth(V4, tags=((0x8100, 1), (0x8100, 2), (0x8100, 3))), 1),
    ]
    frames = []
    for _ in range(data.draw(st.integers(1, 12))):
        frame, lt = data.draw(st.sampled_from(bases))
        body = bytearray(frame)
        for _ in range(data.draw(st.integers(0, 4))):
            at = data.draw(st.integers(0, max(0, len(body) - 1)))
            if body:
                body[at] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(body)))
        frames.append((bytes(body[:cut] if data.draw(st.booleans()) else body), lt))
    return frames


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_mutated_frames_never_raise_and_both_paths_agree(data: st.DataObject) -> None:
    frames = _mutated_frames(data)
    both_paths([make_batch(frames, seed=data.draw(st.integers(0, 5)))])


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(
        st.tuples(st.binary(max_size=120), st.sampled_from([0, 1, 101, 108, 113, 228, 229, 276, 2])),
        min_size=1,
        max_size=10,
    )
)
def test_random_frames_never_raise_only_count(frames: list[tuple[bytes, int]]) -> None:
    both_paths([make_batch(frames)])


# -- real captures ----------------------------------------------------------------------------


def _real(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{name} not available")
    return path


def test_real_ipv6_fragmented_sip_on_linux_cooked() -> None:
    decoder = FrameDecoder()
    got = [r for b in read_batches(_real("sngrep/ipv6frag.pcap")) for r in rows(decoder.decode(b))]
    invites = [(r[0], len(r[7])) for r in got if r[7].startswith(b"INVITE")]
    assert invites == [(2, 1691), (5, 1871)]  # tshark: udp.length 1699 and 1879
    assert decoder.counters["reassembled"] == 2 and len(got) == 32


def test_real_vlan_rtp_pcapng() -> None:
    decoder = FrameDecoder()
    got = [r for b in read_batches(_real("ndpi/rtp.pcapng")) for r in rows(decoder.decode(b))]
    assert Counter(r[6] for r in got) == Counter({-1: 45, 1508: 30})


@pytest.mark.parametrize(
    "name",
    [
        "wireshark-wiki/SIP_CALL_RTP_G711",
        "heplify/ipip0.pcap",
        "rtpproxy/DLT_NULL.a.rtp",
        "rtpdump-hdiniz/sample1_ipv4_amr-nb.pcap",
        "voipshark/SIP-SRTP-Normal_Call_two_parties.pcap",
    ],
)
def test_real_captures_both_paths_agree(name: str) -> None:
    got, counters = both_paths(list(read_batches(_real(name), 1 << 16)))
    assert got


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_datagrams_agree_with_tshark(tmp_path: Path) -> None:
    chain = ext(60) + ext(17) + udp(7, 8, b"ext")
    frames = [eth(V4), eth(V6, 0x86DD, tags=((0x88A8, 100), (0x8100, 200))), eth(ipv6(chain, nh=0), 0x86DD)]
    frames += [eth(f, tags=((0x8100, 5),)) for f in reversed(v4_fragments(BIG, 1480))]
    frames += [eth(f, 0x86DD) for f in v6_fragments(BIG, 1232)]
    short = eth(ipv4(udp(1000, 2000, b"hi")))
    frames += [short + bytes(60 - len(short)), eth(ipv4(bytes(20), proto=6)), eth(V4)[:40]]
    header = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    path = tmp_path / "x.pcap"
    path.write_bytes(
        header + b"".join(struct.pack("<IIII", i, 0, len(f), len(f)) + f for i, f in enumerate(frames))
    )
    decoder = FrameDecoder()
    ours = [(r[0], r[4], r[5], len(r[7])) for b in read_batches(path, 3000) for r in rows(decoder.decode(b))]
    fields = ["frame.number", "udp.srcport", "udp.dstport", "udp.length"]
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-Y",
            "udp && !_ws.malformed",
            "-T",
            "fields",
            *[a for f in fields for a in ("-e", f)],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    theirs = [
        (int(n), int(s), int(d), int(u) - 8) for n, s, d, u in (line.split("\t") for line in out.splitlines())
    ]
    assert ours == theirs
