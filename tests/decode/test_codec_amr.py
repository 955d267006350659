"""AMR and AMR-WB (RFC 4867): RTP payloads, both layouts, rewritten to storage format for opencore.

The payloads are built here bit by bit from storage-format frames (this file's own packer, not the
decoder's parser): opencore's AMR-NB encoder through PyAV, VisualOn's AMR-WB encoder by ctypes
(Debian libvo-amrwbenc0; the tests skip without it). The real VoLTE capture is decoded in
``test_decode_codec_captures.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import pytest

from callrec.capture.model.media import MediaFormat
from tests.decode.test_codecs import SECONDS, consistent_with_clock, decode_all
from tests.helpers.codec_signals import best_correlation, encode, rtp, speechlike

NB_BITS = (95, 103, 118, 134, 148, 159, 204, 244, 39)  # 3GPP TS 26.101, per frame type
WB_BITS = (132, 177, 253, 285, 317, 365, 397, 461, 477, 40)  # TS 26.201


def _storage_bits(frame: bytes, table: tuple[int, ...]) -> tuple[int, int, str]:
    """(FT, Q, speech bits as a '0'/'1' string) of one storage-format frame."""
    ft, q = (frame[0] >> 3) & 0x0F, (frame[0] >> 2) & 1
    bits = "".join(f"{b:08b}" for b in frame[1:])[: table[ft] if ft < len(table) else 0]
    return ft, q, bits


def amr_payload(frames: list[bytes], table: tuple[int, ...], octet_aligned: bool) -> bytes:
    """RFC 4867 payload (CMR 15: no request) of storage-format frames, built bit by bit."""
    parsed = [_storage_bits(f, table) for f in frames]
    if octet_aligned:
        toc = bytes(((k < len(parsed) - 1) << 7) | ft << 3 | q << 2 for k, (ft, q, _) in enumerate(parsed))
        return bytes([0xF0]) + toc + b"".join(f[1:] for f in frames)
    bits = "1111" + "".join(f"{int(k < len(parsed) - 1)}{ft:04b}{q}" for k, (ft, q, _) in enumerate(parsed))
    bits += "".join(b for _, _, b in parsed)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


@pytest.mark.parametrize("octet_aligned", [False, True])
def test_amr_nb_payloads_rewritten_to_storage_format(octet_aligned: bool) -> None:
    x = speechlike(8000, SECONDS, seed=9)
    frames = encode("libopencore_amrnb", x, 8000, 160, bit_rate=12200)
    assert {f[0] >> 3 for f in frames} == {7}  # 12.2 kbit/s storage frames
    payloads = [amr_payload(frames[i : i + 2], NB_BITS, octet_aligned) for i in range(0, len(frames) - 1, 2)]
    assert {len(p) for p in payloads} == ({1 + 2 + 62} if octet_aligned else {63})  # 4 + 2 x (6 + 244) bits
    fmt = MediaFormat(96, "AMR", 8000, fmtp="octet-align=1" if octet_aligned else "")
    pcm, counts, decoder = decode_all(fmt, rtp(payloads, 320))
    assert set(counts.tolist()) == {320} and consistent_with_clock(decoder, counts, 320)
    assert best_correlation(x, pcm, 400)[1] >= 0.85


def test_amr_no_data_and_sid_entries_keep_their_20_ms() -> None:
    x = speechlike(8000, 1, seed=2)
    frames = encode("libopencore_amrnb", x, 8000, 160, bit_rate=12200)
    no_data = bytes([15 << 3 | 4])
    payloads = [amr_payload([f], NB_BITS, False) for f in frames[:20]]
    payloads[5] = amr_payload([no_data], NB_BITS, False)  # 2 octets: CMR + TOC, nothing else
    payloads[6] = amr_payload([frames[6], no_data], NB_BITS, False)
    ticks = [160] * 20
    ticks[6] = 320
    pcm, counts, decoder = decode_all(MediaFormat(96, "AMR", 8000), rtp(payloads, 160, ticks_each=ticks))
    assert counts.tolist() == [160] * 6 + [320] + [160] * 13 and decoder.bad_packets == 0  # type: ignore[attr-defined]


def _vo_amrwbenc() -> ctypes.CDLL:
    name = ctypes.util.find_library("vo-amrwbenc")
    if not name:
        pytest.skip("libvo-amrwbenc (Debian libvo-amrwbenc0) is not installed: no AMR-WB encoder")
    lib = ctypes.CDLL(name)
    lib.E_IF_init.restype = ctypes.c_void_p
    lib.E_IF_encode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    lib.E_IF_exit.argtypes = [ctypes.c_void_p]
    return lib


@pytest.mark.parametrize("octet_aligned", [False, True])
def test_amr_wb_payloads_rewritten_to_storage_format(octet_aligned: bool) -> None:
    lib = _vo_amrwbenc()
    x = speechlike(16000, SECONDS, seed=4)
    state, out, frames = lib.E_IF_init(), ctypes.create_string_buffer(64), []
    for i in range(0, x.shape[0] - 319, 320):
        n = lib.E_IF_encode(
            state, 2, np.ascontiguousarray(x[i : i + 320]).ctypes.data, out, 0
        )  # 12.65 kbit/s
        frames.append(out.raw[:n])
    lib.E_IF_exit(state)
    payloads = [amr_payload([f], WB_BITS, octet_aligned) for f in frames]
    fmt = MediaFormat(96, "AMR-WB", 16000, fmtp="octet-align=1" if octet_aligned else "")
    pcm, counts, decoder = decode_all(fmt, rtp(payloads, 320))
    assert set(counts.tolist()) == {320} and consistent_with_clock(decoder, counts, 320)
    assert best_correlation(x, pcm, 800)[1] >= 0.85
