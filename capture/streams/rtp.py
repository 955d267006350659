"""RTP and RTCP headers (RFC 3550, RFC 5761 multiplexing).

Two forms: :func:`parse_rtp` for one packet (tests, tools, slow paths) and :func:`parse_rtp_columns`
for many packets in one buffer at once (the capture path: numpy over the batch, payloads copied
out by row gathers, no per-packet objects).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callrec.capture.model.errors import ParseError, Truncated
from callrec.capture.model.gather import rows as gather_rows
from callrec.capture.model.media import RtpPackets, gather_payloads

RTP_VERSION = 2
RTP_HEADER_LEN = 12
# RFC 5761 section 4: with RTP and RTCP on one port, a second byte of 192..223 is RTCP
# (RTCP packet types 192-223; RTP payload types 64-95 with the marker set are avoided for that reason).
RTCP_TYPE_MIN = 192
RTCP_TYPE_MAX = 223

_HDR = struct.Struct("!BBHII")


@dataclass(frozen=True, slots=True)
class RtpHeader:
    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    extension_profile: int | None
    extension_data: bytes
    payload: bytes
    padding_length: int


def is_rtcp(data: bytes) -> bool:
    """True if ``data`` has RTCP's version and packet-type range (RFC 5761 demultiplexing)."""
    return len(data) >= 8 and data[0] >> 6 == RTP_VERSION and RTCP_TYPE_MIN <= data[1] <= RTCP_TYPE_MAX


def parse_rtp(data: bytes) -> RtpHeader:
    """Parse one RTP packet; raises :class:`ParseError` (or :class:`Truncated`) on bad input."""
    if len(data) < RTP_HEADER_LEN:
        raise Truncated(f"RTP packet of {len(data)} bytes is shorter than the 12-byte header")
    b0, b1, seq, ts, ssrc = _HDR.unpack_from(data, 0)
    version = b0 >> 6
    if version != RTP_VERSION:
        raise ParseError(f"RTP version {version}, expected 2", "rtp_version")
    padding = bool(b0 & 0x20)
    extension = bool(b0 & 0x10)
    cc = b0 & 0x0F
    pos = RTP_HEADER_LEN + 4 * cc
    if len(data) < pos:
        raise Truncated("RTP packet has truncated CSRC list")
    csrcs = struct.unpack_from(f"!{cc}I", data, RTP_HEADER_LEN) if cc else ()
    ext_profile = None
    ext_data = b""
    if extension:
        if len(data) < pos + 4:
            raise Truncated("RTP packet has truncated extension header")
        ext_profile, ext_words = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + 4 * ext_words
        if len(data) < end:
            raise Truncated("RTP packet has truncated extension")
        ext_data = data[pos + 4 : end]
        pos = end
    end = len(data)
    pad = 0
    if padding:
        pad = data[-1]
        if pad == 0 or pos + pad > end:
            raise ParseError(f"RTP padding length {pad} is invalid", "rtp_padding")
        end -= pad
    return RtpHeader(
        version,
        padding,
        extension,
        cc,
        bool(b1 & 0x80),
        b1 & 0x7F,
        seq,
        ts,
        ssrc,
        tuple(csrcs),
        ext_profile,
        bytes(ext_data),
        bytes(data[pos:end]),
        pad,
    )


def parse_rtp_columns(
    buffer: bytes,
    offsets: npt.NDArray[np.int64],
    lengths: npt.NDArray[np.int64],
    ts_ns: npt.NDArray[np.int64] | None = None,
) -> tuple[RtpPackets, npt.NDArray[np.bool_]]:
    """Parse the RTP packets at ``offsets``/``lengths`` in ``buffer`` (padded as in
    ``capture.model.packets``).

    Returns the valid packets as :class:`RtpPackets` (payloads copied out) and the mask of which
    input rows were valid RTP (version 2, header, CSRCs, extension and padding within the packet).
    ``ts_ns`` (capture times of the input rows) is carried over for the valid rows.
    """
    n = int(offsets.shape[0])
    if n == 0:
        return RtpPackets.empty(), np.zeros(0, dtype=np.bool_)
    buf = np.frombuffer(buffer, dtype=np.uint8)
    raw = gather_rows(buf, offsets, RTP_HEADER_LEN)  # (n, 12) uint8, C-contiguous
    b0 = raw[:, 0].astype(np.int64)
    b1 = raw[:, 1].astype(np.int64)
    cc = b0 & 0x0F
    head_len = RTP_HEADER_LEN + 4 * cc
    has_ext = (b0 & 0x10) != 0
    valid = ((b0 >> 6) == RTP_VERSION) & (lengths >= head_len)
    if has_ext.any():
        ext_at = offsets + head_len + 2
        ok_ext = has_ext & (lengths >= head_len + 4)
        idx = np.where(ok_ext, ext_at, 0)
        ext_words = (buf[idx].astype(np.int64) << 8) | buf[idx + 1]
        head_len = np.where(ok_ext, head_len + 4 + 4 * ext_words, head_len)
        valid &= ~has_ext | ok_ext
    has_pad = (b0 & 0x20) != 0
    pad = np.zeros(n, dtype=np.int64)
    if has_pad.any():
        last = np.where(has_pad & (lengths > 0), offsets + lengths - 1, 0)
        pad = np.where(has_pad, buf[last].astype(np.int64), 0)
        valid &= ~has_pad | (pad > 0)
    payload_len = lengths - head_len - pad
    valid &= payload_len >= 0
    keep = np.flatnonzero(valid)
    words16 = raw.view(">u2")  # (n, 6): sequence number in column 1
    words32 = raw.view(">u4")  # (n, 3): timestamp in column 1, SSRC in column 2
    p_start = (offsets + head_len)[keep]
    p_len = payload_len[keep]
    flat, flat_offsets = gather_payloads(buf, p_start, p_len)
    packets = RtpPackets(
        ts_ns=ts_ns[keep] if ts_ns is not None else np.zeros(keep.shape[0], dtype=np.int64),
        seq=words16[keep, 1].astype(np.int64),
        rtp_ts=words32[keep, 1].astype(np.int64),
        ssrc=words32[keep, 2].astype(np.int64),
        payload_type=b1[keep] & 0x7F,
        marker=(b1[keep] & 0x80) != 0,
        payload=flat,
        payload_offsets=flat_offsets,
        payload_lengths=p_len,
    )
    return packets, valid


ZRTP_COOKIE = 0x5A525450  # "ZRTP" at bytes 4-7 of every ZRTP packet (RFC 6189 section 5)


@dataclass(frozen=True, slots=True)
class PayloadKinds:
    """What a batch's UDP payloads look like, by their first bytes (indices into the batch)."""

    media: npt.NDArray[np.int64]  # RTP or RTCP (version 2), in order
    rtcp: npt.NDArray[np.bool_]  # for each ``media`` row: RTCP (RFC 5761 packet-type range)
    text: npt.NDArray[np.int64]  # starts with an upper-case letter or CR/LF: SIP candidates
    zrtp: npt.NDArray[np.int64]  # ZRTP packets (in-band key agreement: the media is SRTP)
    other: int  # none of these


def classify_payloads(
    buffer: bytes, offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]
) -> PayloadKinds:
    """Sort every payload of a batch at once (numpy over the first bytes; the buffer is padded)."""
    buf = np.frombuffer(buffer, dtype=np.uint8)
    head = gather_rows(buf, offsets, 8)
    b0, b1 = head[:, 0], head[:, 1]
    v2 = (b0 >> 6) == RTP_VERSION
    rtcp = v2 & (b1 >= RTCP_TYPE_MIN) & (b1 <= RTCP_TYPE_MAX) & (lengths >= 8)
    media = np.flatnonzero((v2 & ~rtcp & (lengths >= RTP_HEADER_LEN)) | rtcp)
    text = np.flatnonzero(((b0 >= 0x41) & (b0 <= 0x5A)) | (b0 == 0x0D) | (b0 == 0x0A))
    cookie = np.ascontiguousarray(head[:, 4:8]).view(">u4")[:, 0]
    zrtp = np.flatnonzero(((b0 & 0xF0) == 0x10) & (lengths >= 12) & (cookie == ZRTP_COOKIE))
    other = int(offsets.shape[0]) - media.shape[0] - text.shape[0] - zrtp.shape[0]
    return PayloadKinds(media, rtcp[media], text, zrtp, other)
