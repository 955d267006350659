"""Capture files under stress: only ParseError on bad bytes, real captures vs tshark, equal-size runs."""

from __future__ import annotations

import contextlib
import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callrec.capture.model.errors import ParseError, Truncated, UnsupportedFormat
from callrec.capture.model.packets import BUFFER_PADDING
from callrec.capture.sources.capture_file import open_capture, read_batches
from tests.capture.test_capture_file import (
    NS,
    SHARED,
    check_batch,
    epb,
    frame,
    idb,
    opb,
    pcap,
    read_all,
    shb,
    spb,
    write,
)

# -- robustness: only ParseError, never IndexError / struct.error ------------------------------


def _drain(path: Path, batch_bytes: int) -> int:
    count = 0
    for batch in read_batches(path, batch_bytes):
        check_batch(batch)
        assert bool((batch.offsets + batch.caplens <= len(batch.buffer) - BUFFER_PADDING).all())
        count += len(batch)
    return count


def _valid_files() -> list[bytes]:
    data = [frame(i, 30 + 13 * i) for i in range(8)]
    o = ">"
    ng = (
        shb("<")
        + idb("<", 1, snaplen=50)
        + idb("<", 113, tsresol=0x83)
        + epb("<", 1, 99, data[0])
        + spb("<", data[1])
    )
    ng += opb("<", 0, 5, data[2]) + shb(o) + idb(o, 101) + epb(o, 0, 7, data[3])
    return [
        pcap([(NS * i, d) for i, d in enumerate(data)]),
        pcap([(i, d) for i, d in enumerate(data)], big=True, nano=True),
        ng,
        gzip.compress(ng),
    ]


VALID = _valid_files()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.integers(0, len(VALID) - 1), cut=st.floats(0, 1), batch_bytes=st.sampled_from([1, 64, 1 << 20])
)
def test_prefixes_of_valid_files_end_cleanly_or_raise_parse_errors(
    tmp_path: Path, which: int, cut: float, batch_bytes: int
) -> None:
    whole = VALID[which]
    path = write(tmp_path, "p.bin", whole[: int(len(whole) * cut)])
    with contextlib.suppress(ParseError):
        _drain(path, batch_bytes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(VALID) - 2), data=st.data(), batch_bytes=st.sampled_from([1, 64, 1 << 20]))
def test_corrupted_valid_files_raise_only_parse_errors(
    tmp_path: Path, which: int, data: st.DataObject, batch_bytes: int
) -> None:
    body = bytearray(VALID[which])
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = data.draw(st.integers(0, 255))
    path = write(tmp_path, "c.bin", bytes(body))
    with contextlib.suppress(ParseError):
        _drain(path, batch_bytes)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    head=st.sampled_from([b"", b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", b"\x0a\x0d\x0d\x0a", b"\x1f\x8b"]),
    tail=st.binary(max_size=600),
)
def test_random_bytes_raise_only_parse_errors(tmp_path: Path, head: bytes, tail: bytes) -> None:
    path = write(tmp_path, "r.bin", head + tail)
    with contextlib.suppress(ParseError):
        _drain(path, 64)


# -- real captures (read-only, shared; skipped when absent) ------------------------------------

REAL = [
    ("wireshark-wiki/SIP_CALL_RTP_G711", "pcap", 4269, {1}),
    ("isa-michalcab/sip.pcap.pcapng", "pcapng", 175, {1}),
    ("ndpi/rtp.pcapng", "pcapng", 112, {1}),
    ("sngrep/ipv6frag.pcap", "pcap", 34, {113}),
    ("heplify/ipip0.pcap", "pcap", 8, {101}),
    ("rtpproxy/DLT_NULL.a.rtp", "pcap", 600, {0}),
    ("wireshark-wiki/h223-over-rtp.pcap.gz", "pcap", 776, {1}),
]


@pytest.mark.parametrize(("name", "fmt", "count", "linktypes"), REAL)
def test_real_captures(name: str, fmt: str, count: int, linktypes: set[int]) -> None:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{name} not available")
    reader = open_capture(path, 1 << 16)
    assert sum(len(b) for b in reader) == count
    assert reader.format == fmt and reader.linktypes == linktypes and not reader.truncated


@pytest.mark.parametrize("name", ["wireshark-wiki/c07-sip-r2.cap", "wireshark-wiki/123.snoop"])
def test_real_unsupported_captures(name: str) -> None:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{name} not available")
    with pytest.raises(UnsupportedFormat, match="looks like"):
        open_capture(path)


@pytest.mark.tshark
@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_timestamps_and_lengths_agree_with_tshark(tmp_path: Path) -> None:
    o = "<"
    body = shb(o) + idb(o, 1) + idb(o, 1, tsresol=9) + idb(o, 1, tsresol=0x80 | 20)
    body += epb(o, 0, 1_700_000_000_000_001, frame(1)) + epb(o, 1, 1_700_000_000_123_456_789, frame(2, 90))
    body += epb(o, 2, (1_700_000_002 << 20) + 777, frame(3, 61))
    path = write(tmp_path, "ts.pcapng", body)
    out = subprocess.run(
        ["tshark", "-r", str(path), "-T", "fields", "-e", "frame.time_epoch", "-e", "frame.cap_len"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    _, frames, ts, _ = read_all(path)
    for i, t in enumerate(ts.tolist()):
        sec, frac = out[2 * i].split(".")
        assert abs(int(sec) * NS + int(frac.ljust(9, "0")[:9]) - t) <= 1
        assert int(out[2 * i + 1]) == len(frames[i])


def test_gzip_cut_inside_its_header_is_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, "h.pcap.gz", gzip.compress(pcap([(0, frame(1))]))[:12])
    with pytest.raises(Truncated, match=r"h.pcap.gz: compressed stream ends after \d bytes"):
        open_capture(path)


@settings(max_examples=60, deadline=None)
@given(
    runs=st.lists(
        st.tuples(st.integers(min_value=0, max_value=300), st.integers(min_value=1, max_value=120)),
        min_size=1,
        max_size=12,
    ),
    batch_bytes=st.sampled_from([64, 1000, 4096, 1 << 20]),
)
def test_speculative_walk_finds_every_record_of_runs(tmp_path_factory, runs, batch_bytes) -> None:
    """Runs of equal-sized records (walked by speculation) interrupted by other sizes."""
    sizes = [size for size, count in runs for _ in range(count)]
    path = tmp_path_factory.mktemp("runs") / "runs.pcap"
    body = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i, size in enumerate(sizes):
        body += struct.pack("<IIII", i, 7, size, size) + bytes([i % 251]) * size
    path.write_bytes(bytes(body))
    got_sizes, got_ts, got_first = [], [], []
    for batch in read_batches(path, batch_bytes=batch_bytes):
        got_sizes += batch.caplens.tolist()
        got_ts += batch.ts_ns.tolist()
        pairs = zip(batch.offsets.tolist(), batch.caplens.tolist(), strict=True)
        got_first += [batch.buffer[o] if c else None for o, c in pairs]
    assert got_sizes == sizes
    assert got_ts == [i * 1_000_000_000 + 7_000 for i in range(len(sizes))]
    assert got_first == [(i % 251) if size else None for i, size in enumerate(sizes)]


def test_a_file_exactly_the_size_of_the_buffer_ends_cleanly(tmp_path: Path) -> None:
    """Found by the property above: 256 bytes in a 256-byte buffer; EOF only shows on the next read."""
    body = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    body += struct.pack("<IIII", 0, 7, 0, 0)
    for i in range(3):
        body += struct.pack("<IIII", i + 1, 7, 56, 56) + bytes(56)
    assert len(body) == 256
    path = tmp_path / "exact.pcap"
    path.write_bytes(bytes(body))
    sizes = [c for b in read_batches(path, batch_bytes=64) for c in b.caplens.tolist()]
    assert sizes == [0, 56, 56, 56]
