"""What a capture-file format's record walker finds in a buffer (:class:`Walk`), the interface every
format implements (:class:`Walker`), and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from callrec.capture.model.errors import ParseError
from callrec.capture.model.gather import rows as gather_rows

# Larger than any link's MTU with headers (jumbo frames, TSO/GRO super-packets reach 64 KiB).
MAX_CAPLEN = 256 * 1024


I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class Walk:
    """What one pass over the buffer found: records, how far it got and why it stopped."""

    pos: int = 0  # bytes consumed from the buffer start
    offsets: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    caplens: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    ts_ns: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    linktypes: I64 = field(default_factory=lambda: np.zeros(0, np.int64))
    need: int = 0  # bytes from ``pos`` needed to go on (0: stopped for another reason)
    error: ParseError | None = None  # raised after the records found so far were returned

    def cut(self, offset: int, error: ParseError) -> None:
        """Keep only records whose data starts before ``offset``, then fail with ``error``."""
        keep = self.offsets < offset
        self.offsets = self.offsets[keep]
        self.caplens = self.caplens[keep]
        self.ts_ns = self.ts_ns[keep]
        self.linktypes = self.linktypes[keep]
        self.error = error


class Walker(Protocol):
    linktypes: set[int]

    def walk(self, buf: bytearray, end: int, base: int) -> Walk: ...


def header_rows(buf: bytearray, end: int, starts: I64, width: int, dtype: str) -> npt.NDArray[np.uint32]:
    """Rows of ``width`` bytes at ``starts`` viewed as 32-bit words of ``dtype`` byte order."""
    arr = np.frombuffer(buf, dtype=np.uint8, count=end)
    rows = gather_rows(arr, starts, width)
    return rows.view(dtype).astype(np.uint32)
