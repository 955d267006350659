"""G.711 with the classic Sun g711.c rules (checked bit-exact against CPython's audioop)."""

from __future__ import annotations

from .signals import signal_samples

_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for i, end in enumerate(ends):
        if value <= end:
            return i
    return len(ends)


def lin2ulaw(sample: int) -> int:
    """16-bit linear PCM -> G.711 mu-law byte (Sun g711.c linear2ulaw)."""
    pcm = max(-32768, min(32767, sample)) >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + (0x84 >> 2)
    seg = _segment(pcm, _SEG_UEND)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0xF)) ^ mask


def lin2alaw(sample: int) -> int:
    """16-bit linear PCM -> G.711 A-law byte (Sun g711.c linear2alaw)."""
    pcm = max(-32768, min(32767, sample)) >> 3
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = _segment(pcm, _SEG_AEND)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm >> 1) & 0xF if seg < 2 else (pcm >> seg) & 0xF
    return aval ^ mask


def ulaw2lin(byte: int) -> int:
    u = ~byte & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def alaw2lin(byte: int) -> int:
    a = byte ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


CODECS = {  # name -> (static payload type, encoder, decoder)
    "PCMU": (0, lin2ulaw, ulaw2lin),
    "PCMA": (8, lin2alaw, alaw2lin),
}


def payload_type(codec: str) -> int:
    return CODECS[codec][0]


def decoded_reference(spec: dict, codec: str, count: int) -> list[int]:
    """What a correct G.711 decoder outputs for samples 0 .. count-1 of the leg."""
    _, enc, dec = CODECS[codec]
    return [dec(enc(x)) for x in signal_samples(spec, count)]
