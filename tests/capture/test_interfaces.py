"""Live capture (capture.sources.interfaces, capture.sources.ring, capture.sources.bpf) on real veth
pairs, and the replay source.

The namespace tests need root and ``ip netns``; they build two namespaces of their own (names unique per
run) with two veth pairs, ``s0``-``r0`` (198.51.100.0/24) and ``s1``-``r1`` (203.0.113.0/24), IPv6 off
and no routes beyond the connected ones. Frames are written with an AF_PACKET socket on the sender side
and read by a :class:`LiveSource` on the receiver side. Sockets are opened in a namespace by switching
this thread into it with ``setns(2)`` and back (a socket stays in the namespace it was created in).
The namespaces are deleted at the end, whatever happens; no process is started but ``ip`` itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.calls import CapturedCall
from callrec.capture.model.packets import LINKTYPE_ETHERNET, PacketBatch
from callrec.capture.sources.base import PacketSource
from callrec.capture.sources.bpf import (
    DEFAULT_FILTER,
    FilterError,
    compile_filter,
    default_filter,
    filter_compiler,
)
from callrec.capture.sources.capture_file import read_batches
from callrec.capture.sources.interfaces import CaptureSetupError, LiveConfig, LiveSource
from callrec.capture.sources.replay import ReplaySource
from callrec.capture.tracking.tracker import CallTracker

ROOT = Path(__file__).resolve().parents[2]
LAB_PCAP = ROOT / "pcaps" / "lab" / "lab_pcmu_12s.pcap"
FIXTURES = ROOT / "pcaps" / "fixtures"
CLONE_NEWNET = 0x40000000
NO_COMPILER = "compiling capture filters needs libpcap0.8 (tshark depends on it) or tcpdump"
_libc = ctypes.CDLL(None, use_errno=True)

SRC_MAC = bytes.fromhex("020000000001")
DST_MAC = bytes.fromhex("020000000002")


# -- namespaces ----------------------------------------------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@contextlib.contextmanager
def netns(name: str) -> Iterator[None]:
    """Run the block with this thread in network namespace ``name``."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name}")
        yield
    finally:
        if _libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the test's namespace")
        os.close(home)
        os.close(target)


class Lab:
    def __init__(self) -> None:
        tag = f"{os.getpid()}{time.monotonic_ns() % 100000}"
        self.tx, self.rx = f"crl{tag}s", f"crl{tag}r"

    def up(self) -> None:
        for ns in (self.tx, self.rx):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            with netns(ns):
                for key in ("all", "default"):
                    Path(f"/proc/sys/net/ipv6/conf/{key}/disable_ipv6").write_text("1")
        for i, net in enumerate(("198.51.100", "203.0.113")):
            _ip(
                "link",
                "add",
                f"s{i}",
                "netns",
                self.tx,
                "type",
                "veth",
                "peer",
                "name",
                f"r{i}",
                "netns",
                self.rx,
            )
            for ns, dev, host in ((self.tx, f"s{i}", 1), (self.rx, f"r{i}", 2)):
                _ip("-n", ns, "link", "set", dev, "mtu", "9000", "arp", "off", "up")
                _ip("-n", ns, "addr", "add", f"{net}.{host}/24", "dev", dev)

    def down(self) -> None:
        for ns in (self.tx, self.rx):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20, check=False)

    def source(self, ifaces: str | Sequence[str], **options: object) -> LiveSource:
        config = LiveConfig(**{"idle_timeout_s": 0.1, "block_bytes": 1 << 16, **options})  # type: ignore[arg-type]
        with netns(self.rx):
            return LiveSource(ifaces, config)

    def send(self, dev: str, frames: Sequence[bytes]) -> None:
        with netns(self.tx):
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        with sock:
            sock.bind((dev, 0))
            for i, frame in enumerate(frames):
                sock.send(frame)
                if i % 200 == 199:
                    time.sleep(0.002)  # stay below the receive backlog (netdev_max_backlog)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        pytest.skip("live capture tests need root (AF_PACKET sockets, network namespaces)")
    if filter_compiler() is None:
        pytest.skip(NO_COMPILER)
    if shutil.which("ip") is None or not Path("/proc/thread-self/ns/net").exists():
        pytest.skip("live capture tests need iproute2 (`ip netns`) and network namespaces")
    lab = Lab()
    try:
        try:
            lab.up()
        except (subprocess.CalledProcessError, OSError) as exc:
            pytest.skip(f"cannot build a network namespace with veth pairs here: {exc}")
        yield lab
    finally:
        lab.down()


def collect(source: LiveSource, want: int, timeout_s: float = 5.0) -> list[PacketBatch]:
    """Batches until ``want`` frames arrived, then 50 ms more (to see extra frames); bounded."""
    out: list[PacketBatch] = []
    deadline = time.monotonic() + timeout_s
    while sum(len(b) for b in out) < want and time.monotonic() < deadline:
        out += source.poll(0.05)
    out += source.poll(0.05)
    return out


def frames_of(batches: Sequence[PacketBatch]) -> list[bytes]:
    return [
        b.buffer[o : o + c]
        for b in batches
        for o, c in zip(b.offsets.tolist(), b.caplens.tolist(), strict=True)
    ]


def pcap_frames(path: Path) -> list[bytes]:
    return frames_of(list(read_batches(path)))


# -- frames built here -----------------------------------------------------------------------------


def ipv4(
    proto: int, payload: bytes, *, ident: int = 1, flags_offset: int = 0, total: int | None = None
) -> bytes:
    length = 20 + len(payload) if total is None else total
    src, dst = bytes([198, 51, 100, 1]), bytes([198, 51, 100, 2])
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, ident, flags_offset, 64, proto, 0, src, dst) + payload
    )


def ether(packet: bytes, ethertype: int = 0x0800, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    head = DST_MAC + SRC_MAC + b"".join(struct.pack("!HH", tpid, tci) for tpid, tci in tags)
    return head + struct.pack("!H", ethertype) + packet


def udp(sport: int, dport: int, data: bytes, **ip: int) -> bytes:
    return ether(ipv4(17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data, **ip))


def tcp(sport: int, dport: int, data: bytes = b"") -> bytes:
    return ether(ipv4(6, struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 65535, 0, 0) + data))


def fragments(datagram: bytes, size: int, ident: int) -> list[bytes]:
    """IPv4 fragments of a UDP ``datagram`` (UDP header + data), ``size`` (a multiple of 8) bytes each."""
    out = []
    for start in range(0, len(datagram), size):
        more = 0x2000 if start + size < len(datagram) else 0
        out.append(
            ether(ipv4(17, datagram[start : start + size], ident=ident, flags_offset=more | start // 8))
        )
    return out


def ipv6_fragment(data: bytes) -> bytes:
    header = struct.pack(
        "!IHBB16s16s", 6 << 28, 8 + len(data), 44, 64, bytes(15) + b"\x01", bytes(15) + b"\x02"
    )
    frag = struct.pack("!BBHI", 17, 0, 8 | 1, 77)  # offset 8 bytes, more fragments
    return ether(header + frag + data, 0x86DD)


def calls_summary(calls: Sequence[CapturedCall]) -> list[tuple[str, str, dict[str, int]]]:
    return sorted(
        (c.call_id, c.state.name, {d: len(leg.packets.seq) for d, leg in c.legs.items()}) for c in calls
    )


def track(batches: Sequence[PacketBatch]) -> list[CapturedCall]:
    decoder, tracker = FrameDecoder(), CallTracker()
    calls = [c for b in batches for c in tracker.feed(decoder.decode(b))]
    decoder.finish()
    return calls + tracker.flush()


# -- live source on veth -------------------------------------------------------------------------------


def test_frames_arrive_byte_identical_in_order(lab: Lab) -> None:
    sent = pcap_frames(LAB_PCAP)
    with lab.source("r0", filter=None) as src:
        lab.send("s0", sent)
        got = collect(src, len(sent))
        stats = src.stats()
    assert [f for f in frames_of(got) if f in set(sent)] == sent
    assert all(int(lt) == LINKTYPE_ETHERNET for b in got for lt in b.linktypes)
    numbers = [b.first_number for b in got]
    assert numbers[0] == 1 and numbers == sorted(numbers)
    ts = [t for b in got for t in b.ts_ns.tolist()]
    assert ts == sorted(ts) and abs(ts[0] / 1e9 - time.time()) < 60
    assert stats.kernel_drops == 0 and stats.kernel_packets == stats.frames >= len(sent)


@pytest.mark.parametrize(("fixture", "vlan"), [("vlan_8021q.pcap", 100), ("qinq.pcap", 200)])
def test_vlan_tags_put_back(lab: Lab, fixture: str, vlan: int) -> None:
    sent = pcap_frames(FIXTURES / fixture)
    with lab.source("r0") as src:
        lab.send("s0", sent)
        got = collect(src, len(sent))
    assert frames_of(got) == sent  # the default filter keeps every frame of the call
    datagrams = [FrameDecoder().decode(b) for b in got]
    assert {int(v) for d in datagrams for v in d.vlan} == {vlan}
    assert calls_summary(track(got)) == calls_summary(track(list(read_batches(FIXTURES / fixture))))


def test_default_filter_keeps_fragments_and_sip_drops_the_rest(lab: Lab) -> None:
    invite = b"INVITE sip:bob@example.com SIP/2.0\r\n" + b"X-Pad: " + b"x" * 3000 + b"\r\n\r\n"
    datagram = struct.pack("!HHHH", 5060, 5060, 8 + len(invite), 0) + invite
    frags = fragments(datagram, 1480, ident=4242)
    keep = [
        udp(40000, 20000, b"\x80\x00rtp"),
        *frags,
        tcp(33000, 5060, b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
        ipv6_fragment(b"later part of an IPv6 datagram"),
        ether(frags[2][14:], tags=[(0x8100, 7)]),
        ether(ether(ipv4(17, b"\x00" * 12), tags=[(0x8100, 30)])[14:], tags=[(0x88A8, 20)]),
    ]
    drop = [
        ether(ipv4(1, b"\x08\x00" + bytes(6))),  # ICMP echo
        tcp(33001, 80, b"GET / HTTP/1.1\r\n\r\n"),
        ether(ipv4(1, b"\x08\x00" + bytes(6)), tags=[(0x8100, 7)]),
        ether(bytes(28), 0x0806),  # ARP
    ]
    with lab.source("r0") as src:
        lab.send("s0", [f for pair in zip(keep, drop * 2, strict=True) for f in pair])
        got = frames_of(collect(src, len(keep)))
    assert got == keep
    # Why never a bare "port 5060": the fragments after the first have no UDP header.
    with lab.source("r0", filter="udp port 5060") as src:
        lab.send("s0", frags)
        assert frames_of(collect(src, 1, timeout_s=1.0)) == frags[:1]


@pytest.mark.skipif(filter_compiler() is None, reason=NO_COMPILER)
def test_bad_filter_is_named() -> None:
    with pytest.raises(FilterError, match="'udp and frobnicate'"):
        compile_filter("udp and frobnicate")
    assert len(compile_filter(DEFAULT_FILTER)) > 10
    assert "port (5060 or 5061)" in DEFAULT_FILTER and "port (5060 or 5061)" not in default_filter(None)


def test_setup_errors(lab: Lab) -> None:
    with pytest.raises(FilterError, match="'tcp port http2x'"):
        lab.source("r0", filter="tcp port http2x")
    with pytest.raises(CaptureSetupError, match="nosuch0"):
        lab.source("nosuch0")
    with pytest.raises(CaptureSetupError, match="multiple of"):
        lab.source("r0", block_bytes=1000)


def test_two_interfaces_at_once(lab: Lab) -> None:
    one = [udp(1000 + i, 2000, b"one") for i in range(50)]
    two = [udp(3000 + i, 4000, b"two") for i in range(70)]
    with lab.source(["r0", "r1"]) as src:
        lab.send("s0", one)
        lab.send("s1", two)
        got = frames_of(collect(src, len(one) + len(two)))
        stats = src.stats()
    assert [f for f in got if f.endswith(b"one")] == one
    assert [f for f in got if f.endswith(b"two")] == two
    assert [(i.name, i.frames) for i in stats.interfaces] == [("r0", 50), ("r1", 70)]


def test_fanout_shares_one_interface_by_flow(lab: Lab) -> None:
    sent = [udp(10000 + flow, 20000, struct.pack("!HH", flow, n)) for n in range(6) for flow in range(64)]
    group = os.getpid() & 0xFFFF
    with lab.source("r0", fanout=(group, "hash")) as a, lab.source("r0", fanout=(group, "hash")) as b:
        lab.send("s0", sent)
        got_a, got_b = frames_of(collect(a, 1, 1.0)), frames_of(collect(b, 1, 1.0))
    assert sorted(got_a + got_b) == sorted(sent)
    assert got_a and got_b
    flows_a = {f[-4:-2] for f in got_a}
    assert flows_a.isdisjoint({f[-4:-2] for f in got_b})  # a flow stays with one socket


def test_kernel_counters_count_drops(lab: Lab) -> None:
    sent = [udp(5000, 6000, struct.pack("!I", i) + bytes(1000)) for i in range(400)]
    with lab.source("r0", block_bytes=4096, buffer_bytes=8192, block_timeout_ms=1) as src:
        lab.send("s0", sent)  # nobody reads: two small blocks fill up, the rest is dropped
        time.sleep(0.05)
        got = frames_of(collect(src, len(sent), timeout_s=0.5))
        stats = src.stats()
    assert 0 < len(got) < len(sent) and got == [f for f in sent if f in set(got)]
    assert stats.kernel_drops > 0
    assert stats.kernel_packets == stats.frames + stats.kernel_drops == len(sent)
    assert stats.interfaces[0].kernel_freezes >= 0


def test_idle_line_returns_control(lab: Lab) -> None:
    with lab.source("r0", idle_timeout_s=0.2) as src:
        start = time.monotonic()
        assert src.poll(0.2) == []
        assert 0.15 < time.monotonic() - start < 1.0
        seen: list[int] = []
        start = time.monotonic()
        for batch in src.batches():
            seen.append(len(batch))
            if len(seen) == 3:
                src.stop()
        assert seen == [0, 0, 0] and time.monotonic() - start < 2.0


def test_live_calls_match_the_file(lab: Lab) -> None:
    with lab.source("r0") as src:
        lab.send("s0", pcap_frames(LAB_PCAP))
        got = collect(src, 1220)
    live = calls_summary(track(got))
    assert live == calls_summary(track(list(read_batches(LAB_PCAP))))
    assert len(live) == 1 and sum(live[0][2].values()) > 1000


# -- replay --------------------------------------------------------------------------------------------


def test_replay_as_fast_as_possible_is_the_file() -> None:
    source: PacketSource = ReplaySource(LAB_PCAP)
    got = list(source.batches())
    source.close()
    assert frames_of(got) == pcap_frames(LAB_PCAP)
    assert source.stats().frames == 1220


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_replay_paced_to_capture_time() -> None:
    clock = FakeClock()
    path = FIXTURES / "hold_60s.pcap"
    source = ReplaySource(path, speed=2.0, idle_timeout_s=1.0, clock=clock, sleep=clock.sleep)
    wall: list[tuple[float, int]] = []
    empties = 0
    for batch in source.batches():
        if not len(batch):
            empties += 1
            continue
        wall += [(clock.now, t) for t in batch.ts_ns.tolist()]
    t0_wall, t0_ts = 100.0, wall[0][1]  # the replay starts at once with the first frame
    late = [w - t0_wall - (t - t0_ts) / 2e9 for w, t in wall]
    assert all(-1e-6 <= d <= 0.005 + 1e-6 for d in late)  # never early, late by at most a 10 ms slice / 2
    assert empties >= 25  # the 60 s hold, at speed 2, in 1 s idle steps
    assert frames_of([b for b in ReplaySource(path).batches()]) == pcap_frames(path)


def test_replay_stop_ends_batches() -> None:
    clock = FakeClock()
    source = ReplaySource(LAB_PCAP, speed=1.0, clock=clock, sleep=clock.sleep)
    seen = 0
    for batch in source.batches():
        seen += len(batch)
        source.stop()
    assert 0 < seen < 1220
    source.close()
