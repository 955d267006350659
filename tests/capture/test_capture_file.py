"""capture.sources.capture_file / capture.sources.pcapng: pcap and pcapng (gzip too) to PacketBatch
columns."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from callrec.capture.model.errors import ParseError, Truncated, UnsupportedFormat
from callrec.capture.model.packets import BUFFER_PADDING, PacketBatch
from callrec.capture.sources.capture_file import open_capture, read_batches
from callrec.capture.sources.pcapng import ticks_to_ns
from callrec.capture.sources.walk import MAX_CAPLEN

NS = 1_000_000_000
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "pcaps"


# -- builders ---------------------------------------------------------------------------------


def pcap(
    frames: list[tuple[int, bytes]],
    *,
    big: bool = False,
    nano: bool = False,
    linktype: int = 1,
    modified: bool = False,
) -> bytes:
    """A pcap file; ``frames`` are (ts_ns, data)."""
    o = ">" if big else "<"
    magic = 0xA1B2CD34 if modified else 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(o + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)]
    for ts, data in frames:
        frac = ts % NS if nano else ts % NS // 1000
        out.append(struct.pack(o + "IIII", ts // NS, frac, len(data), len(data) + 4))
        if modified:
            out.append(struct.pack(o + "iHBB", 3, 0x0800, 0, 0))
        out.append(data)
    return b"".join(out)


def block(o: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    n = len(body) + 12
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def option(o: str, code: int, value: bytes) -> bytes:
    return struct.pack(o + "HH", code, len(value)) + value + bytes(-len(value) % 4)


def shb(o: str = "<") -> bytes:
    return block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(
    o: str, linktype: int, snaplen: int = 0, tsresol: int | None = None, tsoffset: int | None = None
) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += option(o, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(o, 14, struct.pack(o + "q", tsoffset))
    if opts:
        opts += option(o, 0, b"")
    return block(o, 1, struct.pack(o + "HHI", linktype, 0, snaplen) + opts)


def epb(o: str, ifid: int, ticks: int, data: bytes, opts: bytes = b"") -> bytes:
    head = struct.pack(o + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(o, 6, head + data + bytes(-len(data) % 4) + opts)


def spb(o: str, data: bytes, origlen: int | None = None) -> bytes:
    return block(o, 3, struct.pack(o + "I", len(data) if origlen is None else origlen) + data)


def opb(o: str, ifid: int, ticks: int, data: bytes) -> bytes:
    head = struct.pack(o + "HHIIII", ifid, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data), len(data))
    return block(o, 2, head + data)


def frame(i: int, size: int = 60) -> bytes:
    return bytes([i & 0xFF]) * size


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_all(
    path: Path, batch_bytes: int = 4 << 20
) -> tuple[list[PacketBatch], list[bytes], np.ndarray, np.ndarray]:
    batches = list(read_batches(path, batch_bytes))
    frames = [
        b.buffer[int(o) : int(o) + int(c)] for b in batches for o, c in zip(b.offsets, b.caplens, strict=True)
    ]
    ts = np.concatenate([b.ts_ns for b in batches]) if batches else np.zeros(0, np.int64)
    lts = np.concatenate([b.linktypes for b in batches]) if batches else np.zeros(0, np.int64)
    return batches, frames, ts, lts


def check_batch(batch: PacketBatch) -> None:
    """The PacketBatch contract: int64 columns, frames inside the buffer, which ends in zero padding
    (between the last frame and the padding there may be pcapng block trailers)."""
    for col in (batch.offsets, batch.caplens, batch.ts_ns, batch.linktypes):
        assert col.dtype == np.int64 and col.shape == (len(batch),)
    end = int((batch.offsets + batch.caplens).max())
    assert len(batch.buffer) - end >= BUFFER_PADDING
    assert batch.buffer[-BUFFER_PADDING:] == bytes(BUFFER_PADDING)


# -- pcap -------------------------------------------------------------------------------------

TIMES = [1_700_000_000 * NS + 123_456_789, 1_700_000_001 * NS + 5_000, 4_000_000_000 * NS + 999_999_999]


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, big: bool, nano: bool) -> None:
    data = [frame(i, 60 + i) for i in range(3)]
    path = write(
        tmp_path, "a.pcap", pcap(list(zip(TIMES, data, strict=True)), big=big, nano=nano, linktype=113)
    )
    batches, frames, ts, lts = read_all(path)
    assert frames == data
    expected = TIMES if nano else [t // 1000 * 1000 for t in TIMES]
    assert ts.tolist() == expected
    assert lts.tolist() == [113] * 3
    assert batches[0].first_number == 1
    check_batch(batches[0])
    with open_capture(path) as reader:
        assert reader.format == "pcap" and reader.linktypes == {113} and not reader.compressed


def test_modified_pcap_has_longer_record_headers(tmp_path: Path) -> None:
    data = [frame(i) for i in range(4)]
    path = write(tmp_path, "k.pcap", pcap([(NS * i, d) for i, d in enumerate(data)], modified=True))
    assert read_all(path)[1] == data


def test_pcap_linktype_field_upper_bits_are_not_the_linktype(tmp_path: Path) -> None:
    # The upper bits may announce an FCS length (0x14000000: FCS present, 4 bytes... as libpcap writes it).
    path = write(tmp_path, "f.pcap", pcap([(0, frame(1))], linktype=0x14000001))
    assert read_all(path)[3].tolist() == [1]


@pytest.mark.parametrize("batch_bytes", [1, 100, 333, 1000])
def test_small_batches_give_the_same_frames_and_numbers(tmp_path: Path, batch_bytes: int) -> None:
    data = [frame(i, 40 + 7 * i) for i in range(60)]
    times = [NS * 10 + i * 20_000_000 for i in range(60)]
    path = write(tmp_path, "s.pcap", pcap(list(zip(times, data, strict=True))))
    batches, frames, ts, _ = read_all(path, batch_bytes)
    assert frames == data and ts.tolist() == times
    assert len(batches) > 1
    numbers = [b.first_number for b in batches]
    assert numbers == [1 + sum(len(b) for b in batches[:i]) for i in range(len(batches))]
    for b in batches:
        check_batch(b)


def test_record_larger_than_the_buffer_grows_it(tmp_path: Path) -> None:
    data = [frame(1, 60), frame(2, 100_000), frame(3, 60)]
    path = write(tmp_path, "g.pcap", pcap([(0, d) for d in data]))
    assert read_all(path, 1000)[1] == data


@pytest.mark.parametrize("cut", [1, 8, 15, 16, 17, 50])
def test_truncated_last_record_stops_cleanly(tmp_path: Path, cut: int) -> None:
    data = [frame(i, 60) for i in range(5)]
    whole = pcap([(NS, d) for d in data])
    path = write(tmp_path, "t.pcap", whole[: len(whole) - 76 + cut])  # 76 = one record
    reader = open_capture(path)
    frames = [
        b.buffer[o : o + c]
        for b in reader
        for o, c in zip(b.offsets.tolist(), b.caplens.tolist(), strict=True)
    ]
    assert frames == data[:4]
    assert reader.truncated
    assert reader.warnings == [
        f"{path}: file ends inside a record at offset {24 + 4 * 76} "
        f"({cut} of {16 if cut < 16 else 76} bytes present); 4 complete records read"
    ]


def test_complete_file_is_not_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, "c.pcap", pcap([(0, frame(1))]))
    reader = open_capture(path)
    assert len(list(reader)) == 1 and not reader.truncated and reader.warnings == []


def test_header_only_pcap_has_no_batches(tmp_path: Path) -> None:
    path = write(tmp_path, "h.pcap", pcap([]))
    assert list(read_batches(path)) == []


def test_absurd_caplen_raises_with_file_and_offset_after_the_good_records(tmp_path: Path) -> None:
    good = pcap([(0, frame(1)), (0, frame(2))])
    bad = struct.pack("<IIII", 0, 0, MAX_CAPLEN + 1, MAX_CAPLEN + 1) + bytes(100)
    path = write(tmp_path, "x.pcap", good + bad)
    got: list[PacketBatch] = []
    with pytest.raises(ParseError) as err:
        got.extend(read_batches(path))
    assert str(err.value) == (
        f"{path}: record at offset {len(good)} announces {MAX_CAPLEN + 1} captured "
        f"bytes (more than {MAX_CAPLEN}); the file is corrupt"
    )
    assert sum(len(b) for b in got) == 2


def test_absurd_caplen_inside_a_full_buffer_is_caught_too(tmp_path: Path) -> None:
    big = MAX_CAPLEN + 10
    path = write(tmp_path, "y.pcap", pcap([(0, frame(1)), (0, bytes(big)), (0, frame(3))]))
    with pytest.raises(ParseError, match=f"record at offset {24 + 76} announces {big}"):
        list(read_batches(path, 8 << 20))


def test_pcap_header_cut_short_is_truncated(tmp_path: Path) -> None:
    path = write(tmp_path, "hdr.pcap", pcap([])[:10])
    with pytest.raises(Truncated, match="file ends inside the pcap header"):
        open_capture(path)


def test_pcap_version_1_is_unsupported(tmp_path: Path) -> None:
    path = write(tmp_path, "v1.pcap", struct.pack("<IHHiIII", 0xA1B2C3D4, 1, 0, 0, 0, 65535, 1))
    with pytest.raises(UnsupportedFormat, match=r"v1.pcap: pcap version 1.0 is not supported \(only 2.x\)"):
        open_capture(path)


# -- unknown formats --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "what"),
    [
        (
            b"GMBU\x00\x02\x01\x00" + bytes(40),
            "starts with 0x474d4255; looks like Microsoft NetMon 2.x (convert with editcap -F pcap)",
        ),
        (
            b"RTSS" + bytes(40),
            "starts with 0x52545353; looks like Microsoft NetMon 1.x (convert with editcap -F pcap)",
        ),
        (
            b"snoop\x00\x00\x00" + bytes(40),
            "starts with 0x736e6f6f; looks like Solaris snoop (convert with editcap -F pcap)",
        ),
        (
            b"TRSNIFF data    \x1a" + bytes(40),
            "starts with 0x5452534e; looks like Network General Sniffer "
            "for DOS (convert with editcap -F pcap)",
        ),
        (
            b"XCP\x00002." + bytes(40),
            "starts with 0x58435000; looks like NetXRay / Sniffer for Windows (convert with editcap -F pcap)",
        ),
        (b"PK\x03\x04" + bytes(40), "starts with 0x504b0304; looks like a zip archive (extract it first)"),
        (b"INVITE sip:bob@example.com SIP/2.0\r\n", "starts with 0x494e5649; looks like a text file"),
        (b"\x01\x02\x03\x04\xff\xfe\x00\x00\x00\x00\x00\x00\x00\x00", "starts with 0x01020304"),
        (b"", "empty file"),
        (
            struct.pack("<Q", 1_700_000_000 << 32)
            + bytes([2, 4])
            + struct.pack(">HHH", 80, 0, 64)
            + bytes(64),
            "starts with 0x00000000; looks like Endace ERF (convert with editcap -F pcap)",
        ),
    ],
)
def test_unsupported_formats_are_named(tmp_path: Path, head: bytes, what: str) -> None:
    path = write(tmp_path, "x.cap", head)
    with pytest.raises(UnsupportedFormat) as err:
        open_capture(path)
    assert str(err.value) == f"{path}: not a pcap or pcapng file ({what})"


def test_gzip_of_something_else_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "x.gz", gzip.compress(b"snoop\x00\x00\x00" + bytes(100)))
    with pytest.raises(UnsupportedFormat) as err:
        open_capture(path)
    assert str(err.value) == (
        f"{path}: gzip-compressed file, but its content is not a pcap or pcapng file "
        "(starts with 0x736e6f6f; looks like Solaris snoop (convert with editcap -F pcap))"
    )


def test_corrupt_gzip_header_is_unsupported(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.gz", b"\x1f\x8b\x08\x00" + bytes(6) + b"\xff" * 30)
    with pytest.raises(UnsupportedFormat, match="bad.gz: corrupt gzip data"):
        open_capture(path)


# -- gzip -------------------------------------------------------------------------------------


def test_gzip_pcap_and_pcapng(tmp_path: Path) -> None:
    data = [frame(i, 100 + i) for i in range(200)]
    plain = pcap([(NS * i, d) for i, d in enumerate(data)])
    path = write(tmp_path, "a.pcap.gz", gzip.compress(plain))
    reader = open_capture(path, 1000)
    frames = [
        b.buffer[o : o + c]
        for b in reader
        for o, c in zip(b.offsets.tolist(), b.caplens.tolist(), strict=True)
    ]
    assert frames == data and reader.compressed and not reader.truncated
    ng = shb() + idb("<", 1) + b"".join(epb("<", 0, i, d) for i, d in enumerate(data))
    path = write(tmp_path, "a.pcapng.gz", gzip.compress(ng))
    assert read_all(path, 700)[1] == data


def test_gzip_cut_short_is_truncated_not_an_error(tmp_path: Path) -> None:
    data = [bytes(np.random.default_rng(i).integers(0, 256, 300, dtype=np.uint8)) for i in range(100)]
    packed = gzip.compress(pcap([(0, d) for d in data]))
    path = write(tmp_path, "cut.pcap.gz", packed[: len(packed) * 2 // 3])
    reader = open_capture(path, 2000)
    frames = [
        b.buffer[o : o + c]
        for b in reader
        for o, c in zip(b.offsets.tolist(), b.caplens.tolist(), strict=True)
    ]
    assert 0 < len(frames) < 100 and frames == data[: len(frames)]
    assert reader.truncated
    assert any("compressed stream ends early" in w for w in reader.warnings)


# -- pcapng -----------------------------------------------------------------------------------


def test_pcapng_two_interfaces_with_different_linktypes_and_resolutions(tmp_path: Path) -> None:
    o = "<"
    body = shb(o) + idb(o, 1) + idb(o, 113, tsresol=9)
    body += epb(o, 0, 1_700_000_000_123_456, frame(1))  # microseconds (default)
    body += block(o, 4, b"\x00" * 8)  # a name resolution block, skipped
    body += epb(o, 1, 1_700_000_000_987_654_321, frame(2, 70))  # nanoseconds
    body += block(o, 5, struct.pack(o + "III", 0, 0, 0))  # statistics, skipped
    body += block(o, 0x40000BAD, b"custom")  # custom block, skipped
    body += epb(o, 0, 1_700_000_001_000_001, frame(3), opts=option(o, 1, b"comment") + option(o, 0, b""))
    path = write(tmp_path, "two.pcapng", body)
    batches, frames, ts, lts = read_all(path)
    assert frames == [frame(1), frame(2, 70), frame(3)]
    assert lts.tolist() == [1, 113, 1]
    assert ts.tolist() == [1_700_000_000_123_456_000, 1_700_000_000_987_654_321, 1_700_000_001_000_001_000]
    check_batch(batches[0])
    with open_capture(path) as reader:
        assert reader.format == "pcapng"
        list(reader)
        assert reader.linktypes == {1, 113}


@pytest.mark.parametrize("o", ["<", ">"])
def test_pcapng_byte_orders(tmp_path: Path, o: str) -> None:
    body = shb(o) + idb(o, 101, tsresol=3) + epb(o, 0, 1_700_000_000_250, frame(1)) + spb(o, frame(2))
    path = write(tmp_path, "o.pcapng", body)
    _, frames, ts, lts = read_all(path)
    assert frames == [frame(1), frame(2)] and lts.tolist() == [101, 101]
    assert ts.tolist() == [1_700_000_000_250_000_000] * 2


def test_pcapng_sections_switch_byte_order_and_restart_interface_ids(tmp_path: Path) -> None:
    body = shb("<") + idb("<", 1) + epb("<", 0, 5, frame(1))
    body += (
        shb(">")
        + idb(">", 228)
        + idb(">", 229, tsresol=9)
        + epb(">", 1, 7, frame(2))
        + epb(">", 0, 9, frame(3))
    )
    body += shb("<") + idb("<", 0) + epb("<", 0, 11, frame(4))
    path = write(tmp_path, "sec.pcapng", body)
    for batch_bytes in (1, 4 << 20):
        _, frames, ts, lts = read_all(path, batch_bytes)
        assert frames == [frame(i) for i in range(1, 5)]
        assert lts.tolist() == [1, 229, 228, 0]
        assert ts.tolist() == [5000, 7, 9000, 11000]


def test_pcapng_power_of_two_resolution_and_offset(tmp_path: Path) -> None:
    o = "<"
    body = shb(o) + idb(o, 1, tsresol=0x80 | 10, tsoffset=1_600_000_000)  # 1/1024 s, +offset seconds
    body += epb(o, 0, 3 * 1024 + 512, frame(1)) + epb(o, 0, 1, frame(2))
    path = write(tmp_path, "p2.pcapng", body)
    ts = read_all(path)[2]
    assert ts.tolist() == [1_600_000_003_500_000_000, 1_600_000_000 * NS + 976_562]


def test_pcapng_spb_takes_previous_timestamp_and_interface_0_snaplen(tmp_path: Path) -> None:
    o = "<"
    body = shb(o)
    body += idb(o, 1, snaplen=64) + idb(o, 113)
    body += spb(o, frame(1, 60))  # before any timestamped packet: 0
    body += epb(o, 1, 2_000_000, frame(2))
    body += spb(o, frame(3, 100))  # cut to interface 0's snaplen (64)
    body += spb(o, frame(4, 40), origlen=30)  # original length shorter than the block: 30 bytes
    path = write(tmp_path, "spb.pcapng", body)
    for batch_bytes in (1, 4 << 20):
        _, frames, ts, lts = read_all(path, batch_bytes)
        assert frames == [frame(1, 60), frame(2), frame(3, 64), frame(4, 30)]
        assert ts.tolist() == [0, 2 * NS, 2 * NS, 2 * NS]
        assert lts.tolist() == [1, 113, 1, 1]


def test_pcapng_obsolete_packet_block(tmp_path: Path) -> None:
    o = "<"
    body = shb(o) + idb(o, 1) + opb(o, 0, 1_000_001, frame(1)) + epb(o, 0, 2_000_000, frame(2))
    _, frames, ts, _ = read_all(write(tmp_path, "opb.pcapng", body))
    assert frames == [frame(1), frame(2)] and ts.tolist() == [1_000_001_000, 2 * NS]


def test_pcapng_packet_for_unknown_interface_raises(tmp_path: Path) -> None:
    o = "<"
    body = shb(o) + idb(o, 1) + epb(o, 0, 1, frame(1)) + epb(o, 3, 1, frame(2))
    path = write(tmp_path, "if.pcapng", body)
    got: list[PacketBatch] = []
    with pytest.raises(ParseError) as err:
        got.extend(read_batches(path))
    offset = len(shb(o) + idb(o, 1) + epb(o, 0, 1, frame(1)))
    assert (
        str(err.value)
        == f"{path}: packet block at offset {offset} refers to interface 3, but the section has 1"
    )
    assert sum(len(b) for b in got) == 1


def test_pcapng_bad_block_length_raises(tmp_path: Path) -> None:
    o = "<"
    body = shb(o) + idb(o, 1) + struct.pack(o + "II", 6, 10) + bytes(20)
    with pytest.raises(ParseError, match=r"block of type 0x6 at offset \d+ has a bad length 10"):
        list(read_batches(write(tmp_path, "bl.pcapng", body)))


def test_pcapng_truncated_block_stops_cleanly(tmp_path: Path) -> None:
    o = "<"
    whole = shb(o) + idb(o, 1) + b"".join(epb(o, 0, i, frame(i)) for i in range(5))
    path = write(tmp_path, "tr.pcapng", whole[:-30])
    reader = open_capture(path)
    assert sum(len(b) for b in reader) == 4 and reader.truncated


def test_pcapng_bad_byte_order_magic(tmp_path: Path) -> None:
    body = block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x11223344, 1, 0, -1))
    path = write(tmp_path, "bom.pcapng", body)
    with pytest.raises(UnsupportedFormat, match="bad byte-order magic 0x44332211"):
        open_capture(path)


@pytest.mark.parametrize(
    ("units", "ticks"),
    [
        (10**6, [0, 1, 10**12 + 7]),
        (10**9, [5, 2**62]),
        (10**3, [1, 999]),
        (1, [3]),
        (10**12, [10**18 + 999_999]),
        (2**10, [1, 1023, 5 * 1024]),
        (2**32, [2**40 + 12345]),
        (2**40, [2**50 + 2**39 + 12345]),
        (10**7, [123_456_789]),
    ],
)
def test_ticks_to_ns_matches_exact_integer_arithmetic(units: int, ticks: list[int]) -> None:
    got = ticks_to_ns(np.array(ticks, dtype=np.uint64), units, 5 * NS).tolist()
    exact = [t * NS // units + 5 * NS for t in ticks]
    assert all(0 <= e - g <= (1 if units > 2**33 else 0) for g, e in zip(got, exact, strict=True))
