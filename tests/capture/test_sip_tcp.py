"""SIP over TCP stream reassembly (capture.sip.tcp): segments built by hand, and real captures."""

from __future__ import annotations

import collections
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.sip.tcp import FIN, RST, SYN, SipStreams

KEY = (
    b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 1]),
    5060,
    b"\x00" * 10 + b"\xff\xff" + bytes([10, 0, 0, 2]),
    5060,
)
OTHER = (KEY[0], 40000, KEY[2], 5060)
SEC = 1_000_000_000
PCAPS = Path("/work/shared/pcaps/heplify")


def sip(method: str = "INVITE", body: bytes = b"", clen: bool = True, n: int = 1) -> bytes:
    head = (
        f"{method} sip:bob@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bK{n}\r\n"
        f"Call-ID: call-{n}@x\r\nCSeq: {n} {method}\r\n"
    )
    if clen:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def response(code: int = 200, n: int = 1, body: bytes = b"") -> bytes:
    text = f"SIP/2.0 {code} OK\r\nCall-ID: call-{n}@x\r\nCSeq: {n} INVITE\r\nl: {len(body)}\r\n\r\n"
    return text.encode() + body


SDP = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def new(**kwargs: int) -> tuple[SipStreams, collections.Counter[str]]:
    counters: collections.Counter[str] = collections.Counter()
    return SipStreams(counters, **kwargs), counters


def feed_all(
    streams: SipStreams, segments: list[tuple[int, bytes]], flags: int = 0, ts: int = 0, key=KEY
) -> list[bytes]:
    out: list[bytes] = []
    for seq, data in segments:
        out += [msg for _, msg in streams.feed(key, seq, flags, data, ts)]
    return out


def split(data: bytes, cuts: list[int], isn: int) -> list[tuple[int, bytes]]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [((isn + a) & 0xFFFFFFFF, data[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def test_two_messages_in_one_segment_after_syn() -> None:
    streams, counters = new()
    data = sip(body=SDP) + response(180)
    assert streams.feed(KEY, 1000, SYN, b"", 5) == []
    assert streams.feed(KEY, 1001, 0, data, 7) == [(7, sip(body=SDP)), (7, response(180))]
    assert counters["tcp_resync"] == 0


def test_every_split_point_of_two_messages() -> None:
    data = sip(body=SDP) + response(200, body=SDP)
    for cut in range(1, len(data)):
        streams, _ = new()
        streams.feed(KEY, 99, SYN, b"", 0)
        assert feed_all(streams, split(data, [cut], 100)) == [sip(body=SDP), response(200, body=SDP)]


def test_message_over_many_segments_reports_completing_timestamp() -> None:
    streams, _ = new()
    data = sip(body=SDP * 3)
    streams.feed(KEY, 0, SYN, b"", 0)
    results = [streams.feed(KEY, 1 + i, 0, data[i : i + 10], i) for i in range(0, len(data), 10)]
    flat = [r for rs in results for r in rs]
    assert flat == [(len(data) - 1 - (len(data) - 1) % 10, data)]


def test_content_length_body_split_waits_for_body() -> None:
    streams, _ = new()
    data = sip(body=SDP)
    head_end = data.index(b"\r\n\r\n") + 4
    streams.feed(KEY, 0, SYN, b"", 0)
    assert streams.feed(KEY, 1, 0, data[: head_end + 5], 1) == []
    assert streams.feed(KEY, 1 + head_end + 5, 0, data[head_end + 5 :], 2) == [(2, data)]


def test_no_content_length_means_empty_body() -> None:
    streams, _ = new()
    first = sip(method="OPTIONS", clen=False)
    out = feed_all(streams, [(1, first + response(200))], flags=0)
    assert out == [first, response(200)]


def test_keepalives_between_messages_are_skipped() -> None:
    streams, counters = new()
    streams.feed(KEY, 0, SYN, b"", 0)
    data = b"\r\n\r\n" + sip() + b"\r\n" + b"\r\n\r\n" + response(200) + b"\r\n\r\n"
    assert feed_all(streams, split(data, [2, 3, 40], 1)) == [sip(), response(200)]
    # keep-alives alone never accumulate
    for i in range(1000):
        streams.feed(KEY, 1 + len(data) + 4 * i, 0, b"\r\n\r\n", 1)
    streams.close()
    assert counters["tcp_incomplete"] == 0 and counters["tcp_bytes_skipped"] == 0


def test_sequence_wrap() -> None:
    data = sip(body=SDP) + response(200) + sip("BYE", n=2)
    isn = 0xFFFFFFFF - 300
    for cut in (200, 301, 302, 303, 400):
        streams, _ = new()
        streams.feed(KEY, isn, SYN, b"", 0)
        segs = split(data, [cut, cut + 50], isn + 1)
        assert feed_all(streams, list(reversed(segs))) == [sip(body=SDP), response(200), sip("BYE", n=2)]


def test_midstream_start_resyncs_on_next_start_line() -> None:
    streams, counters = new()
    tail = sip(body=SDP)[30:]
    out = feed_all(streams, [(5000, tail + response(180) + sip("ACK", n=3))])
    assert out == [response(180), sip("ACK", n=3)]
    assert counters["tcp_resync"] == 1
    assert counters["tcp_bytes_skipped"] == len(tail)


def test_midstream_start_at_message_boundary_loses_nothing() -> None:
    streams, counters = new()
    assert feed_all(streams, [(77, sip()), (77 + len(sip()), response(200))]) == [sip(), response(200)]
    assert counters["tcp_bytes_skipped"] == 0


def test_garbage_resync_without_syn_and_with_split_start_line() -> None:
    streams, counters = new()
    garbage = b"\x00\x01binary junk\nmore junk INVITE sip:x SIP/2.0 not at line start\n"
    data = garbage + sip(body=SDP)
    cut = len(garbage) + 5  # inside the start line
    assert feed_all(streams, split(data, [cut], 10)) == [sip(body=SDP)]
    assert counters["tcp_bytes_skipped"] == len(garbage)


def test_bad_start_line_on_synced_stream_resyncs() -> None:
    streams, counters = new()
    streams.feed(KEY, 0, SYN, b"", 0)
    data = sip() + b"NOT SIP AT ALL\r\nFoo: bar\r\n\r\n" + response(200)
    assert feed_all(streams, [(1, data)]) == [sip(), response(200)]
    assert counters["tcp_resync"] == 1
    assert counters["tcp_not_sip"] == 0


def test_retransmission_and_overlap_first_copy_wins() -> None:
    streams, counters = new()
    data = sip(body=SDP) + response(200)
    streams.feed(KEY, 0, SYN, b"", 0)
    feed_all(streams, [(1, data[:100]), (1, data[:100])])  # an exact retransmission
    feed_all(streams, [(51, data[50:100] + b"X" * 50)])  # an overlap: only the last 50 bytes are new
    assert counters["tcp_retransmission"] == 1
    assert counters["tcp_overlap"] == 1
    streams2, _ = new()
    streams2.feed(KEY, 0, SYN, b"", 0)
    segs = [(1, data[:100]), (201, data[200:300]), (151, b"Y" * 100), (101, data[100:])]
    assert feed_all(streams2, segs) != [sip(body=SDP), response(200)]  # Y bytes at 150..200 won
    streams3, counters3 = new()
    streams3.feed(KEY, 0, SYN, b"", 0)
    segs = [(1, data[:100]), (201, data[200:300]), (101, data[100:]), (151, b"Y" * 100)]
    assert feed_all(streams3, segs) == [sip(body=SDP), response(200)]
    assert counters3["tcp_out_of_order"] == 1 and counters3["tcp_overlap"] == 1
    assert counters3["tcp_retransmission"] == 1


def test_out_of_order_held_until_gap_fills() -> None:
    streams, counters = new()
    streams.feed(KEY, 0, SYN, b"", 0)
    assert streams.feed(KEY, 1 + len(sip()), 0, response(200), 1) == []
    assert streams.feed(KEY, 1, 0, sip(), 2) == [(2, sip()), (2, response(200))]
    assert counters["tcp_out_of_order"] == 1


def test_gap_given_up_by_buffer_limit_and_timeout() -> None:
    first, second, third = sip(body=SDP), response(200, body=SDP), sip("BYE", n=2)
    for kwargs, ts in (({"max_buffer": 250}, 0), ({"gap_timeout_ns": SEC}, 2 * SEC)):
        streams, counters = new(**kwargs)
        streams.feed(KEY, 0, SYN, b"", 0)
        assert streams.feed(KEY, 1, 0, first[:50], 0) == []
        base = 1 + len(first)
        out = [m for _, m in streams.feed(KEY, base, 0, second, 0)]
        out += [m for _, m in streams.feed(KEY, base + len(second), 0, third, ts)]
        assert out == [second, third], kwargs
        assert counters["tcp_gap"] == 1 and counters["tcp_resync"] == 1
        assert counters["tcp_bytes_skipped"] == 50


def test_buffer_overflow_drops_and_resyncs() -> None:
    streams, counters = new(max_buffer=1000)
    streams.feed(KEY, 0, SYN, b"", 0)
    huge = sip(body=b"a" * 4998 + b"\r\n")
    segs = split(huge + response(200), list(range(0, len(huge), 300)), 1)
    assert feed_all(streams, segs) == [response(200)]
    assert counters["tcp_overflow"] == 1
    assert counters["tcp_bytes_skipped"] == len(huge)


def test_http_stream_is_not_sip_and_bounded() -> None:
    streams, counters = new(max_buffer=4096)
    streams.feed(KEY, 0, SYN, b"", 0)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    assert streams.feed(KEY, 1, 0, request, 1) == []
    assert counters["tcp_not_sip"] == 1
    pos = 1 + len(request)
    for i in range(200):  # a big transfer after it: nothing kept
        assert streams.feed(KEY, pos, 0, b"x" * 1400, 2 + i) == []
        pos += 1400
    state = streams._streams[KEY]
    assert not state.buf and state.held == 0
    # Mid-stream HTTP without SYN: bounded buffer, counted once.
    streams2, counters2 = new(max_buffer=4096)
    body = b"HTTP/1.1 200 OK\r\n" + b"<p>hello sip:x SIP/2.0</p>\n" * 2000
    segs = split(body, list(range(0, len(body), 1000)), 5)
    assert feed_all(streams2, segs) == []
    assert len(streams2._streams[KEY].buf) < 1500
    streams2.close()
    assert counters2["tcp_not_sip"] == 1


def test_tls_like_binary_after_syn_is_not_sip() -> None:
    streams, counters = new()
    streams.feed(KEY, 0, SYN, b"", 0)
    assert streams.feed(KEY, 1, 0, bytes(range(256)) * 40, 1) == []
    assert counters["tcp_not_sip"] == 1


def test_fin_ends_stream_after_delivery_and_waits_for_gap() -> None:
    streams, counters = new()
    streams.feed(KEY, 0, SYN, b"", 0)
    # FIN segment arrives before the segment it follows
    assert streams.feed(KEY, 1 + len(sip()), FIN, response(200), 1) == []
    assert len(streams) == 1
    assert streams.feed(KEY, 1, 0, sip(), 2) == [(2, sip()), (2, response(200))]
    assert len(streams) == 0
    assert counters["tcp_incomplete"] == 0


def test_fin_and_rst_with_partial_message_count_incomplete() -> None:
    for flag in (FIN, RST):
        streams, counters = new()
        streams.feed(KEY, 0, SYN, b"", 0)
        assert streams.feed(KEY, 1, flag, sip()[:40], 1) == []
        assert len(streams) == 0
        assert counters["tcp_incomplete"] == 1
        assert counters["tcp_bytes_skipped"] == 40


def test_new_syn_replaces_old_connection_and_syn_retransmission_is_ignored() -> None:
    streams, counters = new()
    streams.feed(KEY, 10, SYN, b"", 0)
    streams.feed(KEY, 10, SYN, b"", 1)
    assert counters["tcp_retransmission"] == 1
    streams.feed(KEY, 11, 0, sip()[:30], 2)
    streams.feed(KEY, 5000, SYN, b"", 3)
    assert counters["tcp_incomplete"] == 1
    assert feed_all(streams, [(5001, sip())]) == [sip()]


def test_idle_expiry_and_eviction() -> None:
    streams, counters = new(idle_timeout_ns=10 * SEC, max_streams=2)
    streams.feed(KEY, 0, SYN, b"", 0)
    streams.feed(KEY, 1, 0, sip()[:20], 0)
    streams.expire(5 * SEC)
    assert len(streams) == 1
    streams.expire(11 * SEC)
    assert len(streams) == 0
    assert counters["tcp_idle_timeout"] == 1 and counters["tcp_incomplete"] == 1
    for port in range(3):
        streams.feed((KEY[0], port, KEY[2], 5060), 0, SYN, b"", 20 * SEC)
    assert len(streams) == 2 and counters["tcp_evicted"] == 1
    # a bare ACK of an unknown stream creates nothing
    streams.feed(OTHER, 1, 0, b"", 20 * SEC)
    assert len(streams) == 2


def test_directions_are_independent() -> None:
    streams, _ = new()
    back = (KEY[2], KEY[3], KEY[0], KEY[1])
    streams.feed(KEY, 0, SYN, b"", 0)
    streams.feed(back, 900, SYN, b"", 0)
    assert streams.feed(KEY, 1, 0, sip()[:60], 1) == []
    assert streams.feed(back, 901, 0, response(100), 2) == [(2, response(100))]
    assert streams.feed(KEY, 61, 0, sip()[60:], 3) == [(3, sip())]


_MESSAGES = [sip(body=SDP), response(180), sip("ACK", n=2), response(200, body=SDP), sip("BYE", clen=False)]


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[bytes, list[bytes], list[tuple[int, int]], int]:
    picks = draw(st.lists(st.sampled_from(_MESSAGES), min_size=1, max_size=5))
    seps = [draw(st.sampled_from([b"", b"", b"\r\n", b"\r\n\r\n"])) for _ in picks]
    data = b"".join(s + m for s, m in zip(seps, picks, strict=True))
    cuts = draw(st.lists(st.integers(1, len(data) - 1), max_size=12))
    bounds = [0, *sorted(set(cuts)), len(data)]
    segs = list(zip(bounds, bounds[1:], strict=False))
    # duplicates and overlapping copies
    extra = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 400)), max_size=4))
    segs += [(a, min(len(data), a + n)) for a, n in extra]
    # any order within a window: sort by position plus a bounded random displacement
    keys = [a + draw(st.integers(0, 600)) for a, _ in segs]
    order = [seg for _, seg in sorted(zip(keys, segs, strict=True), key=lambda kv: kv[0])]
    isn = draw(st.sampled_from([0, 12345, 0xFFFFFFFF - 500, 0xFFFFFFFF]))
    return data, picks, order, isn


@settings(max_examples=300, deadline=None)
@given(_scenarios())
def test_property_any_segmentation_order_and_duplication(
    scenario: tuple[bytes, list[bytes], list[tuple[int, int]], int],
) -> None:
    data, picks, order, isn = scenario
    streams, counters = new()
    streams.feed(KEY, isn, SYN, b"", 0)
    out = feed_all(streams, [((isn + 1 + a) & 0xFFFFFFFF, data[a:b]) for a, b in order])
    assert out == picks
    assert counters["tcp_resync"] == 0 and counters["tcp_bytes_skipped"] == 0


# -- real captures -------------------------------------------------------------------------------


def _feed_pcap(path: Path, sip_ports: set[int] | None = None) -> tuple[list[bytes], collections.Counter[str]]:
    scapy_all = pytest.importorskip("scapy.all")
    counters: collections.Counter[str] = collections.Counter()
    streams = SipStreams(counters)
    out: list[bytes] = []
    for pkt in scapy_all.rdpcap(str(path)):
        if scapy_all.IP not in pkt or scapy_all.TCP not in pkt:
            continue
        ip, tcp = pkt[scapy_all.IP], pkt[scapy_all.TCP]
        src = b"\x00" * 10 + b"\xff\xff" + bytes(map(int, ip.src.split(".")))
        dst = b"\x00" * 10 + b"\xff\xff" + bytes(map(int, ip.dst.split(".")))
        if sip_ports is not None and not {tcp.sport, tcp.dport} & sip_ports:
            continue
        payload = bytes(tcp.payload)
        # Ethernet padding of short frames is not TCP payload
        payload = payload[: max(0, ip.len - ip.ihl * 4 - tcp.dataofs * 4)]
        ts = int(pkt.time * 1_000_000_000)
        out += [
            m for _, m in streams.feed((src, tcp.sport, dst, tcp.dport), tcp.seq, int(tcp.flags), payload, ts)
        ]
    streams.close()
    return out, counters


def _first_tokens(messages: list[bytes]) -> collections.Counter[str]:
    tokens: collections.Counter[str] = collections.Counter()
    for msg in messages:
        words = msg.split(b" ", 2)
        tokens[(words[1] if msg.startswith(b"SIP/2.0") else words[0]).decode()] += 1
    return tokens


def _tshark_tokens(path: Path, extra: list[str]) -> collections.Counter[str]:
    proc = subprocess.run(
        ["tshark", "-r", str(path), *extra, "-Y", "sip and tcp", "-T", "fields", "-E", "occurrence=a"]
        + ["-E", "aggregator=,", "-e", "sip.Method", "-e", "sip.Status-Code"],
        capture_output=True,
        check=True,
        text=True,
    )
    tokens: collections.Counter[str] = collections.Counter()
    for line in proc.stdout.splitlines():
        for field_ in line.split("\t"):
            tokens.update(t for t in field_.split(",") if t)
    return tokens


@pytest.mark.parametrize(
    ("name", "extra", "expected"),
    [
        ("sip_ipv4_tcp.pcap", [], {"INVITE": 1, "ACK": 1, "BYE": 1, "100": 1, "180": 1, "200": 2}),
        ("sip_ipv4_tcp_retrans.pcap", [], {"REGISTER": 2, "401": 1, "200": 1}),
        (
            "sip_ipv4_tcp_fragmented.pcap",
            ["-d", "tcp.port==6060,sip"],
            {"INVITE": 37, "ACK": 37, "BYE": 34, "UPDATE": 63, "200": 142},
        ),
    ],
)
def test_real_captures_match_expected_counts(name: str, extra: list[str], expected: dict[str, int]) -> None:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    messages, counters = _feed_pcap(path)
    tokens = _first_tokens(messages)
    for token, count in expected.items():
        assert tokens[token] == count, (token, tokens)
    if shutil.which("tshark"):
        assert tokens == _tshark_tokens(path, extra)
    assert counters["tcp_incomplete"] == 0
    if name == "sip_ipv4_tcp_retrans.pcap":
        assert counters["tcp_retransmission"] >= 1


V4 = bytes(10) + b"\xff\xff"


def test_sip_over_tls_and_websocket_are_remembered_per_host_pair() -> None:
    streams, counters = new()
    a, b, c = V4 + bytes([198, 51, 100, 1]), V4 + bytes([198, 51, 100, 2]), V4 + bytes([203, 0, 113, 9])
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40)
    streams.feed((a, 40000, b, 5061), 1000, SYN, b"", 0)
    assert streams.feed((a, 40000, b, 5061), 1001, 0, hello, 1) == []
    streams.feed((c, 40001, b, 443), 7, SYN, b"", 2)
    streams.feed((c, 40001, b, 443), 8, 0, hello, 3)  # TLS on 443: HTTPS as far as we know
    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: pbx.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    )
    streams.feed((c, 40002, a, 8088), 50, SYN, b"", 4)
    streams.feed((c, 40002, a, 8088), 51, 0, upgrade, 5)
    assert streams.unreadable == {
        frozenset({"198.51.100.1", "198.51.100.2"}): "SIP over TLS (port 5061)",
        frozenset({"203.0.113.9", "198.51.100.1"}): "SIP over WebSocket",
    }
    assert counters["sip_tls_connections"] == 1 and counters["sip_websocket_connections"] == 1
    streams.feed((a, 40003, b, 5061), 90, SYN, b"", 6)
    streams.feed((a, 40003, b, 5061), 91, 0, hello, 7)
    assert counters["sip_tls_connections"] == 1  # once per pair of hosts
