"""Classic pcap records (both byte orders, micro- or nanosecond fractions, the 24-byte-header
\"Kuznetzov\" variant), walked as :class:`~callrec.capture.sources.walk.Walk` s."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from callrec.capture.model.errors import ParseError, UnsupportedFormat
from callrec.capture.model.gather import rows as gather_rows
from callrec.capture.sources.walk import I64, MAX_CAPLEN, Walk, header_rows

_NS = 1_000_000_000


# pcap magics as the first four bytes of the file: (big-endian, nanoseconds, record header size)
PCAP_MAGICS: dict[bytes, tuple[bool, bool, int]] = {
    b"\xd4\xc3\xb2\xa1": (False, False, 16),
    b"\xa1\xb2\xc3\xd4": (True, False, 16),
    b"\x4d\x3c\xb2\xa1": (False, True, 16),
    b"\xa1\xb2\x3c\x4d": (True, True, 16),
    b"\x34\xcd\xb2\xa1": (False, False, 24),
    b"\xa1\xb2\xcd\x34": (True, False, 24),
}


_RUN_TRIGGER = 8  # equal record sizes in a row before the walk starts to speculate


_RUN_FIRST = 32  # records predicted by the first speculation of a run


_RUN_MAX = 8192


class PcapWalker:
    """Classic pcap: 24-byte file header, then records of header + captured bytes."""

    def __init__(self, path: str, head: bytes) -> None:
        big, nano, self._hlen = PCAP_MAGICS[head[:4]]
        order = ">" if big else "<"
        self._path = path
        self._dtype = order + "u4"
        self._caplen_at = struct.Struct(order + "I").unpack_from
        self._frac_ns = 1 if nano else 1000
        major, minor, _zone, _sigfigs, _snaplen, network = struct.unpack_from(order + "HHiIII", head, 4)
        if major != 2:
            raise UnsupportedFormat(f"{path}: pcap version {major}.{minor} is not supported (only 2.x)")
        self.linktype = network & 0xFFFF
        self.linktypes = {self.linktype}
        self._skip = 24  # the file header, consumed by the first walk

    def walk(self, buf: bytearray, end: int, base: int) -> Walk:
        """Record starts in ``buf[:end]``. Runs of equal-sized records (a G.711 stream is one
        frame size throughout) are walked by speculation: after :data:`_RUN_TRIGGER` equal sizes
        in a row, the next ``k`` positions are predicted and their length fields checked in one
        numpy gather; ``k`` doubles while predictions hold and the walk steps one record at a
        time again after a miss."""
        pos = self._skip
        self._skip = 0
        hlen = self._hlen
        caplen_at = self._caplen_at
        starts: list[int] = []
        add = starts.append
        extend = starts.extend
        last = end - hlen
        need = 0
        same = 0
        prev = -1
        k = _RUN_FIRST
        words: npt.NDArray[np.uint8] | None = None
        while pos <= last:
            caplen = caplen_at(buf, pos + 8)[0]
            nxt = pos + hlen + caplen
            if nxt > end:
                need = nxt - pos
                break
            add(pos)
            pos = nxt
            same = same + 1 if caplen == prev else 0
            prev = caplen
            if same >= _RUN_TRIGGER:
                if words is None:
                    words = np.frombuffer(buf, dtype=np.uint8, count=end)
                step = hlen + caplen
                fit = min(k, (end - pos) // step)
                if fit > 1:
                    predicted = np.arange(pos, pos + fit * step, step, dtype=np.int64)
                    lengths = gather_rows(words, predicted + 8, 4).view(self._dtype)[:, 0]
                    miss = np.flatnonzero(lengths != caplen)
                    good = int(miss[0]) if miss.shape[0] else fit
                    if good:
                        extend(range(pos, pos + good * step, step))
                        pos += good * step
                    k = min(k * 2, _RUN_MAX) if good == fit else _RUN_FIRST
                    same = 0 if good < fit else same
        else:
            need = hlen if pos < end else 0  # a partial record header, or nothing left
        w = Walk(pos=pos, need=need)
        if need - hlen > MAX_CAPLEN:
            w.error = ParseError(
                f"{self._path}: record at offset {base + pos} announces {need - hlen} captured bytes "
                f"(more than {MAX_CAPLEN}); the file is corrupt",
            )
            w.need = 0
        if starts:
            self._columns(w, buf, end, base, np.array(starts, dtype=np.int64))
        return w

    def _columns(self, w: Walk, buf: bytearray, end: int, base: int, starts: I64) -> None:
        rows = header_rows(buf, end, starts, 16, self._dtype)
        caplens = rows[:, 2].astype(np.int64)
        w.offsets = starts + self._hlen
        w.caplens = caplens
        w.ts_ns = rows[:, 0].astype(np.int64) * _NS + rows[:, 1].astype(np.int64) * self._frac_ns
        w.linktypes = np.full(starts.shape[0], self.linktype, dtype=np.int64)
        bad = np.flatnonzero(caplens > MAX_CAPLEN)
        if bad.shape[0]:
            i = int(bad[0])
            w.cut(
                int(w.offsets[i]),
                ParseError(
                    f"{self._path}: record at offset {base + int(starts[i])} announces {int(caplens[i])} "
                    f"captured bytes (more than {MAX_CAPLEN}); the file is corrupt",
                ),
            )
            w.pos = int(starts[i])
            w.need = 0
