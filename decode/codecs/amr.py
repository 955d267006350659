"""AMR (narrowband, 8 kHz) and AMR-WB (wideband, 16 kHz): RFC 4867 payloads to storage format.

FFmpeg's AMR decoders (opencore's, bundled with PyAV: ``libopencore_amrnb`` / ``libopencore_amrwb``;
FFmpeg's native ``amrnb`` cannot decode SID or NO_DATA frames) read the *storage format* of RFC
4867 section 5: per frame one header octet ``0 FT(4) Q 0 0`` followed by the frame's bits padded to
an octet. An RTP payload is laid out differently, so each one is rewritten before decoding:

* **bandwidth-efficient** (the default, RFC 4867 section 4.3): a 4-bit CMR, then 6-bit table-of-
  contents entries ``F FT(4) Q`` (F = another entry follows), then the frames' bits back to back
  with no octet alignment, then padding. Bits are pulled out of the payload as one integer.
* **octet-aligned** (fmtp ``octet-align=1``, section 4.4): one CMR octet, one TOC octet per frame,
  with ``crc=1`` one CRC octet per speech frame, then each frame padded to an octet, which is the
  storage layout already. ``interleaving`` and ``robust-sorting`` (reordered frames) and more than
  one channel are not supported: the factory declines them and the timeline counts the packets as
  ``no_decoder``.

Every TOC entry is 20 ms (160 samples narrowband, 320 wideband; the RTP clock is 8000 / 16000), so
the samples per packet follow the timestamps; NO_DATA entries (FT 15, and FT 14 "speech lost" in
AMR-WB) are passed as header-only frames, as are the other systems' SID types (FT 9-11 narrowband,
their bits skipped, marked NO_DATA), and
opencore renders them as comfort noise or concealment, as a handset would. A reserved frame type or
a payload too short for its table of contents makes the packet corrupt (silence, counted).
"""

from __future__ import annotations

import re

import numpy as np

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs.avcodec import AvDecoder, Units

# Speech bits per frame type (RFC 4867 section 3.6, 3GPP TS 26.101 / 26.201); None: reserved.
NB_BITS: tuple[int | None, ...] = (95, 103, 118, 134, 148, 159, 204, 244, 39, 43, 38, 37, None, None, None, 0)
WB_BITS: tuple[int | None, ...] = (
    132,
    177,
    253,
    285,
    317,
    365,
    397,
    461,
    477,
    40,
    None,
    None,
    None,
    None,
    0,
    0,
)
# GSM-EFR, TDMA-EFR and PDC-EFR SID frames (narrowband FT 9-11): opencore has no use for them,
# so they are handed over as NO_DATA (FT 15) and their bits skipped.
NB_FOREIGN_SID = frozenset({9, 10, 11})
NO_DATA = 15
_PARAM = re.compile(r"(?:^|;)\s*([a-z-]+)\s*=\s*([^;\s]+)", re.IGNORECASE)


def fmtp_params(fmtp: str) -> dict[str, str]:
    return {k.lower(): v for k, v in _PARAM.findall(fmtp)}


def storage_frame(ft: int, q: int, body: bytes, foreign: frozenset[int]) -> bytes:
    """One storage-format frame: header octet ``0 FT Q 0 0``, then the padded speech bits."""
    if ft in foreign:
        return bytes([NO_DATA << 3 | q << 2])
    return bytes([ft << 3 | q << 2]) + body


def bandwidth_efficient_frames(
    payload: bytes, bits: tuple[int | None, ...], foreign: frozenset[int] = frozenset()
) -> list[bytes] | None:
    """Storage-format frames of one bandwidth-efficient payload, or None if it is corrupt."""
    total = len(payload) * 8
    value = int.from_bytes(payload, "big")
    at = 4  # after the CMR

    def take(n: int) -> int:
        return (value >> (total - at - n)) & ((1 << n) - 1)

    toc: list[tuple[int, int]] = []
    while True:
        if at + 6 > total:
            return None
        entry = take(6)
        at += 6
        toc.append(((entry >> 1) & 0x0F, entry & 1))
        if not entry & 0x20:
            break
    frames = []
    for ft, q in toc:
        size = bits[ft]
        if size is None or at + size > total:
            return None
        body = (take(size) << (-size % 8)).to_bytes((size + 7) // 8, "big") if size else b""
        at += size
        frames.append(storage_frame(ft, q, body, foreign))
    return frames


def octet_aligned_frames(
    payload: bytes, bits: tuple[int | None, ...], crc: bool, foreign: frozenset[int] = frozenset()
) -> list[bytes] | None:
    """Storage-format frames of one octet-aligned payload, or None if it is corrupt."""
    at = 1  # after the CMR octet
    toc: list[int] = []
    while True:
        if at >= len(payload):
            return None
        entry = payload[at]
        at += 1
        toc.append(entry)
        if not entry & 0x80:
            break
    sizes = []
    for entry in toc:
        size = bits[(entry >> 3) & 0x0F]
        if size is None:
            return None
        sizes.append((size + 7) // 8)
    if crc:
        at += sum(1 for s in sizes if s)
    frames = []
    for entry, size in zip(toc, sizes, strict=True):
        if at + size > len(payload):
            return None
        frames.append(storage_frame((entry >> 3) & 0x0F, (entry >> 2) & 1, payload[at : at + size], foreign))
        at += size
    return frames


class AmrDecoder(AvDecoder):
    def __init__(self, wideband: bool, octet_aligned: bool, crc: bool) -> None:
        super().__init__()
        self.wideband = wideband
        self.encoding = "AMR-WB" if wideband else "AMR"
        self.codec = "libopencore_amrwb" if wideband else "libopencore_amrnb"
        self.clock_rate_hz = self.sample_rate_hz = 16000 if wideband else 8000
        self.frame_samples = 320 if wideband else 160
        self.octet_aligned = octet_aligned
        self.crc = crc

    def units(self, packets: RtpPackets) -> Units:
        bits = WB_BITS if self.wideband else NB_BITS
        foreign = frozenset() if self.wideband else NB_FOREIGN_SID
        n = len(packets)
        bad = np.zeros(n, dtype=np.bool_)
        frames: list[bytes] = []
        owner: list[int] = []
        for i in range(n):
            payload = packets.payload_bytes(i)
            if self.octet_aligned:
                found = octet_aligned_frames(payload, bits, self.crc, foreign)
            else:
                found = bandwidth_efficient_frames(payload, bits, foreign)
            if found is None:
                bad[i] = True
                continue
            frames += found
            owner += [i] * len(found)
        lengths = np.array([len(f) for f in frames], dtype=np.int64)
        return Units(
            data=b"".join(frames),
            lengths=lengths,
            samples=np.full(lengths.shape[0], self.frame_samples, dtype=np.int64),
            packet=np.array(owner, dtype=np.int64),
            bad=bad,
        )


def amr_factory(wideband: bool):  # type: ignore[no-untyped-def]
    def make(fmt: MediaFormat) -> AmrDecoder | None:
        params = fmtp_params(fmt.fmtp)
        octet_aligned = params.get("octet-align") == "1"
        unsupported = params.get("interleaving") or params.get("robust-sorting") == "1"
        if fmt.channels != 1 or unsupported:
            return None
        return AmrDecoder(wideband, octet_aligned, octet_aligned and params.get("crc") == "1")

    return make
