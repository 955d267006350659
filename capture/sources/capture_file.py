"""Capture files (pcap, pcapng, either gzip-compressed) read as :class:`PacketBatch` columns.

The reader fills one buffer with ``readinto`` (or, for gzip, ``read1`` pieces), walks the record
headers with ``struct.unpack_from`` in a tight loop that only collects record offsets, and then
gathers the headers as numpy rows to compute caplens and timestamps for the whole batch at once.
A batch's ``buffer`` is the chunk itself (record headers included) plus zero padding; frame
``offsets`` point past each record header.

Format quirks handled here:

- pcap comes in both byte orders (the magic tells which) and with microsecond (0xa1b2c3d4) or
  nanosecond (0xa1b23c4d) fractions; the modified "Kuznetzov" pcap (0xa1b2cd34) has 24-byte record
  headers. Only the low 16 bits of the header's link-type field are the link type (the upper bits
  may carry an FCS length).
- A file cut mid-record (a capture that crashed, a copy still being written) ends cleanly: the
  complete records are returned, :attr:`CaptureReader.truncated` is set and a warning recorded.
- A record that announces more than :data:`MAX_CAPLEN` bytes is corruption, not a jumbo frame:
  :class:`ParseError` naming the file and the byte offset (the records before it are returned).
- Other capture formats (snoop, NetMon, Sniffer, ...) and archives are recognised by their magic
  and named in the :class:`UnsupportedFormat` message, so a user knows what to convert.

pcapng specifics (sections, interfaces, resolutions) live in :mod:`capture.sources.pcapng`.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from collections.abc import Iterator
from types import TracebackType

from callrec.capture.model.errors import ParseError, Truncated, UnsupportedFormat
from callrec.capture.model.packets import BUFFER_PADDING, PacketBatch
from callrec.capture.sources.pcap import PCAP_MAGICS, PcapWalker
from callrec.capture.sources.pcapng import PcapngWalker
from callrec.capture.sources.walk import Walk, Walker

DEFAULT_BATCH_BYTES = 4 << 20
_MIN_BUFFER = 256
_GZIP_PIECE = 1 << 20
_PAD = bytes(BUFFER_PADDING)


PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"

# Formats Callrec does not read, by their leading bytes, to name them in the error.
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"snoop\x00\x00\x00", "Solaris snoop (convert with editcap -F pcap)"),
    (b"RTSS", "Microsoft NetMon 1.x (convert with editcap -F pcap)"),
    (b"GMBU", "Microsoft NetMon 2.x (convert with editcap -F pcap)"),
    (b"TRSNIFF data    \x1a", "Network General Sniffer for DOS (convert with editcap -F pcap)"),
    (b"XCP\x00", "NetXRay / Sniffer for Windows (convert with editcap -F pcap)"),
    (b"iptrace ", "AIX iptrace (convert with editcap -F pcap)"),
    (b"btsnoop\x00", "btsnoop (Bluetooth HCI log)"),
    (b"PK\x03\x04", "a zip archive (extract it first)"),
    (b"BZh", "bzip2-compressed data (decompress it first)"),
    (b"\xfd7zXZ\x00", "xz-compressed data (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it first)"),
    (b"\x04\x22\x4d\x18", "lz4-compressed data (decompress it first)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-zip archive (extract it first)"),
)


def describe_magic(head: bytes) -> str:
    """What the first bytes of a file that is neither pcap nor pcapng look like."""
    hexed = "0x" + head[:4].hex()
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return f"starts with {hexed}; looks like {name}"
    if len(head) >= 8 and all(32 <= b < 127 or b in (9, 10, 13) for b in head[:64]):
        return f"starts with {hexed}; looks like a text file"
    if len(head) >= 16 and _looks_like_erf(head):
        return f"starts with {hexed}; looks like Endace ERF (convert with editcap -F pcap)"
    return f"starts with {hexed}"


def _looks_like_erf(head: bytes) -> bool:
    """Endace ERF has no magic. Its 16-byte record header starts with a little-endian 32.32
    fixed-point timestamp, then type (1..48), flags (bit 2, "varying length", set by every modern
    writer) and a big-endian record length covering at least the header. A hint, not a parser."""
    seconds = int.from_bytes(head[4:8], "little")
    rlen = int.from_bytes(head[10:12], "big")
    return (
        631_152_000 <= seconds <= 4_102_444_800
        and 1 <= head[8] & 0x7F <= 48
        and head[9] & 0x04 != 0
        and 16 <= rlen <= 65536 + 64
    )


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO or pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _require_regular_file(path: str) -> None:
    """Refuse, by name, what is not a regular file before opening it: opening a FIFO waits for a writer
    forever, and a pipe cannot be walked twice (the format check reads its head first)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        what = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
        raise UnsupportedFormat(f"{path}: not a regular file ({what}); copy it to a file first")


class CaptureReader:
    """One open capture file. Iterate it (once) for :class:`PacketBatch` es; the file is closed
    when the iteration ends (or with :meth:`close` / ``with``).

    Opening reads and checks the file header, so :func:`open_capture` fails early with
    :class:`UnsupportedFormat` on files Callrec cannot read. Attributes: ``format`` ("pcap" or
    "pcapng"), ``compressed`` (gzip), :attr:`linktypes`, and after iteration ``frames`` (records
    read), ``truncated`` (the file ended mid-record) and ``warnings`` (where, in words).
    """

    def __init__(self, path: str | os.PathLike[str], batch_bytes: int = DEFAULT_BATCH_BYTES) -> None:
        self.path = os.fspath(path)
        self.compressed = False
        self.truncated = False
        self.warnings: list[str] = []
        self.frames = 0
        self.format = ""
        self._cap = max(int(batch_bytes), _MIN_BUFFER)
        self._buf = bytearray(self._cap)
        self._end = 0
        self._base = 0  # file (decompressed) offset of the buffer's first byte
        self._eof = False
        self._pending: ParseError | None = None
        _require_regular_file(self.path)
        self._raw: io.FileIO = open(self.path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self._gz: gzip.GzipFile | None = None
        try:
            self._walker = self._open()
        except BaseException:
            self.close()
            raise

    @property
    def position(self) -> int:
        """Bytes of the file on disk read so far (compressed bytes for a gzip file): for progress."""
        try:
            return int(self._raw.tell())
        except (OSError, ValueError):  # closed
            return 0

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> Walker:
        magic = self._raw.read(2)
        self._raw.seek(0)
        if magic == b"\x1f\x8b":
            self.compressed = True
            self._gz = gzip.GzipFile(fileobj=self._raw, mode="rb")
        self._fill(limit=_MIN_BUFFER)
        if self._pending is not None and self._end == 0:
            raise UnsupportedFormat(str(self._pending))
        head = bytes(self._buf[: self._end])
        where = "gzip-compressed file, but its content is " if self.compressed else ""
        if self.truncated and len(head) < 4:
            raise Truncated(f"{self.path}: compressed stream ends after {len(head)} bytes")
        if not head:
            what = "empty after decompression" if self.compressed else "empty file"
            raise UnsupportedFormat(f"{self.path}: not a pcap or pcapng file ({what})")
        if head[:4] in PCAP_MAGICS:
            self.format = "pcap"
            if len(head) < 24:
                raise Truncated(f"{self.path}: file ends inside the pcap header ({len(head)} of 24 bytes)")
            return PcapWalker(self.path, head)
        if head[:4] == PCAPNG_SHB:
            self.format = "pcapng"
            return PcapngWalker(self.path, head)
        raise UnsupportedFormat(f"{self.path}: {where}not a pcap or pcapng file ({describe_magic(head)})")

    def _fill(self, limit: int | None = None) -> None:
        """Read into the buffer up to its capacity (or ``limit`` bytes) or the end of the file."""
        stop = self._cap if limit is None else min(self._cap, limit)
        mv = memoryview(self._buf)
        try:
            while self._end < stop and not self._eof:
                if self._gz is None:
                    got = self._raw.readinto(mv[self._end : stop])
                else:
                    piece = self._gz.read1(min(stop - self._end, _GZIP_PIECE))
                    got = len(piece)
                    mv[self._end : self._end + got] = piece
                if not got:
                    self._eof = True
                self._end += got or 0
        except EOFError:
            self._eof = True
            self.truncated = True
            self.warnings.append(
                f"{self.path}: compressed stream ends early (after {self._base + self._end} bytes)"
            )
        except (zlib.error, OSError) as exc:  # BadGzipFile is an OSError
            if self._gz is None:
                raise  # a real I/O error, not a format problem
            self._eof = True
            self._pending = ParseError(
                f"{self.path}: corrupt gzip data after {self._base + self._end} bytes: {exc}",
            )
        finally:
            mv.release()

    # -- reading ---------------------------------------------------------------------------

    @property
    def linktypes(self) -> set[int]:
        """Link types announced so far (the pcap header, or the pcapng interfaces seen)."""
        return set(self._walker.linktypes)

    def __iter__(self) -> Iterator[PacketBatch]:
        return self.batches()

    def batches(self) -> Iterator[PacketBatch]:
        """Read the file to its end, one batch per buffer fill; closes the file when done."""
        try:
            while True:
                self._fill()
                if self._end == 0 and self._eof:
                    # the previous fill ended exactly at the end of the file: nothing is left
                    if self._pending is not None:
                        raise self._pending
                    return
                w = self._walker.walk(self._buf, self._end, self._base)
                n = int(w.offsets.shape[0])
                if n:
                    yield self._batch(w)
                if w.error is not None:
                    raise w.error
                if not (n or w.pos or w.need):
                    raise ParseError(f"{self.path}: no progress at offset {self._base}")  # a reader bug
                rest = self._end - w.pos
                if w.pos:
                    self._buf[0:rest] = self._buf[w.pos : self._end]
                    self._base += w.pos
                    self._end = rest
                if w.need > self._cap:
                    self._grow(w.need)
                if self._eof and (rest == 0 or w.need):
                    if self._pending is not None:
                        raise self._pending
                    if rest:
                        self._ended_early(rest, w.need)
                    return
        finally:
            self.close()

    def _batch(self, w: Walk) -> PacketBatch:
        buffer = b"".join((memoryview(self._buf)[: w.pos], _PAD))
        batch = PacketBatch(
            buffer=buffer,
            offsets=w.offsets,
            caplens=w.caplens,
            ts_ns=w.ts_ns,
            linktypes=w.linktypes,
            first_number=self.frames + 1,
        )
        self.frames += len(batch)
        return batch

    def _grow(self, need: int) -> None:
        cap = max(need, self._cap * 2)
        new = bytearray(cap)
        new[: self._end] = self._buf[: self._end]
        self._buf = new
        self._cap = cap

    def _ended_early(self, rest: int, need: int) -> None:
        self.truncated = True
        self.warnings.append(
            f"{self.path}: file ends inside a record at offset {self._base} "
            f"({rest} of {need} bytes present); {self.frames} complete records read",
        )

    def close(self) -> None:
        if self._gz is not None:
            self._gz.close()
        self._raw.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_capture(path: str | os.PathLike[str], batch_bytes: int = DEFAULT_BATCH_BYTES) -> CaptureReader:
    """Open a capture file and check its header (raises :class:`UnsupportedFormat`, :class:`Truncated`)."""
    return CaptureReader(path, batch_bytes)


def read_batches(
    path: str | os.PathLike[str], batch_bytes: int = DEFAULT_BATCH_BYTES
) -> Iterator[PacketBatch]:
    """The frames of a pcap or pcapng file (gzip-compressed or not), ``batch_bytes`` at a time.

    A generator: the file is opened at the first ``next()``. Use :func:`open_capture` to check a
    file up front or to see :attr:`CaptureReader.truncated` afterwards.
    """
    with open_capture(path, batch_bytes) as reader:
        yield from reader.batches()
