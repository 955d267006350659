"""Small builders for tests: SIP messages, SDP bodies, RTP packets and DatagramBatches."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from callrec.capture.model.packets import BUFFER_PADDING, DatagramBatch, address_bytes

CALLER_IP = "198.51.100.10"
CALLEE_IP = "198.51.100.20"


def sdp(
    addr: str, port: int, pts: Sequence[int] = (0, 101), direction: str = "sendrecv", extra: str = ""
) -> bytes:
    fam = "IP6" if ":" in addr else "IP4"
    lines = [
        "v=0",
        f"o=- 1 1 IN {fam} {addr}",
        "s=-",
        f"c=IN {fam} {addr}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(str(p) for p in pts)}",
    ]
    names = {0: "PCMU/8000", 8: "PCMA/8000", 101: "telephone-event/8000"}
    lines += [f"a=rtpmap:{p} {names[p]}" for p in pts if p in names]
    lines.append(f"a={direction}")
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\n").encode()


def sip(
    start: str,
    *,
    call_id: str = "c1@test",
    cseq: str = "1 INVITE",
    from_tag: str = "a1",
    to_tag: str | None = None,
    body: bytes = b"",
    branch: str | None = None,
    caller: str = "sip:1001@example.com",
    callee: str = "sip:1002@example.com",
    extra_headers: Sequence[str] = (),
    content_type: str = "application/sdp",
) -> bytes:
    to = f"<{callee}>" + (f";tag={to_tag}" if to_tag else "")
    headers = [
        start,
        f"Via: SIP/2.0/UDP {CALLER_IP}:5060;branch={branch or 'z9hG4bK' + cseq.replace(' ', '')}",
        f'From: "Alice" <{caller}>;tag={from_tag}',
        f"To: {to}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq}",
        *extra_headers,
    ]
    if body:
        headers.append(f"Content-Type: {content_type}")
    headers.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def rtp(
    seq: int, ts: int, ssrc: int, pt: int = 0, payload: bytes = b"\x55" * 160, marker: bool = False
) -> bytes:
    return (
        struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        + payload
    )


Row = tuple[int, str, int, str, int, bytes]  # ts_ns, src, sport, dst, dport, payload


def batch(rows: Sequence[Row]) -> DatagramBatch:
    """A DatagramBatch of the given UDP datagrams, in the given order."""
    buf = bytearray()
    offsets = []
    for _, _, _, _, _, payload in rows:
        offsets.append(len(buf))
        buf += payload
    buf += bytes(BUFFER_PADDING)
    n = len(rows)
    src = np.array([list(address_bytes(r[1])) for r in rows], dtype=np.uint8).reshape(n, 16)
    dst = np.array([list(address_bytes(r[3])) for r in rows], dtype=np.uint8).reshape(n, 16)
    return DatagramBatch(
        buffer=bytes(buf),
        ts_ns=np.array([r[0] for r in rows], dtype=np.int64),
        src_addr=src,
        dst_addr=dst,
        src_port=np.array([r[2] for r in rows], dtype=np.int64),
        dst_port=np.array([r[4] for r in rows], dtype=np.int64),
        payload_offsets=np.array(offsets, dtype=np.int64),
        payload_lengths=np.array([len(r[5]) for r in rows], dtype=np.int64),
        vlan=np.full(n, -1, dtype=np.int64),
        numbers=np.arange(1, n + 1, dtype=np.int64),
    )
