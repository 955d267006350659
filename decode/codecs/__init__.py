"""Which decoder handles which payload format.

Decoders are registered by upper-cased encoding name and RTP clock rate, the pair that
identifies a format in SDP (``a=rtpmap:0 PCMU/8000``). Adding a codec is one module with an
:class:`~decode.codecs.base.AudioDecoder` subclass and one :func:`register_decoder` line
below. Formats that travel in an audio stream but are not audio (RFC 4733 events, comfort
noise, redundancy and FEC wrappers) are named in :data:`NON_AUDIO_ENCODINGS`: the timeline
drops them before anything is placed, so they can never move the audio.
"""

from __future__ import annotations

from collections.abc import Callable

from callrec.capture.model.media import STATIC_PAYLOAD_TYPES, MediaFormat
from callrec.decode.codecs.amr import amr_factory
from callrec.decode.codecs.base import AudioDecoder
from callrec.decode.codecs.dvi4 import make_dvi4
from callrec.decode.codecs.g711 import ALawDecoder, MuLawDecoder
from callrec.decode.codecs.g722 import make_g722
from callrec.decode.codecs.g723 import make_g723
from callrec.decode.codecs.g726 import g726_factory
from callrec.decode.codecs.g729 import make_g729
from callrec.decode.codecs.gsm import make_gsm
from callrec.decode.codecs.ilbc import make_ilbc
from callrec.decode.codecs.l16 import make_linear
from callrec.decode.codecs.opus import make_opus
from callrec.decode.codecs.speex import RATES as SPEEX_RATES
from callrec.decode.codecs.speex import make_speex

DecoderFactory = Callable[[MediaFormat], AudioDecoder | None]

NON_AUDIO_ENCODINGS = frozenset(
    {
        "TELEPHONE-EVENT",  # RFC 4733 DTMF and line events: shares the audio clock, is not audio
        "TONE",  # RFC 4733 tones
        "CN",  # RFC 3389 comfort noise: rendered as silence for now (the gap stays zeros)
        "RED",  # RFC 2198 redundancy wrapper
        "ULPFEC",  # RFC 5109 forward error correction
        "FLEXFEC",  # RFC 8627
        "PARITYFEC",  # RFC 3009
        "RTX",  # RFC 4588 retransmissions
        "T140",  # RFC 4103 real-time text
    }
)

# RFC 3551 static payload types, used when the SDP that named them was not seen.
STATIC_FORMATS = STATIC_PAYLOAD_TYPES

_REGISTRY: dict[tuple[str, int], DecoderFactory] = {}


def register_decoder(encoding: str, clock_rate_hz: int, factory: DecoderFactory) -> None:
    """Make ``factory`` the decoder for ``encoding``/``clock_rate_hz`` (case-insensitive name).

    The factory receives the full format (fmtp, channels) and may return ``None`` for
    variants it cannot decode.
    """
    _REGISTRY[(encoding.upper(), clock_rate_hz)] = factory


def _mono_only(cls: type[AudioDecoder]) -> DecoderFactory:
    def make(fmt: MediaFormat) -> AudioDecoder | None:
        return cls() if fmt.channels == 1 else None

    return make


register_decoder("PCMU", 8000, _mono_only(MuLawDecoder))
register_decoder("PCMA", 8000, _mono_only(ALawDecoder))
register_decoder("G722", 8000, make_g722)
register_decoder("G722", 16000, make_g722)  # non-standard clock some endpoints announce
for _kbps in (16, 24, 32, 40):
    register_decoder(f"G726-{_kbps}", 8000, g726_factory(_kbps, aal2=False))
    register_decoder(f"AAL2-G726-{_kbps}", 8000, g726_factory(_kbps, aal2=True))
for _name in ("G729", "G729A", "G729B", "G729D"):
    register_decoder(_name, 8000, make_g729)
register_decoder("GSM", 8000, make_gsm)
register_decoder("iLBC", 8000, make_ilbc)
register_decoder("G723", 8000, make_g723)
for _rate in SPEEX_RATES:
    register_decoder("speex", _rate, make_speex)
for _rate in (8000, 11025, 16000, 22050, 32000, 44100, 48000):
    register_decoder("L16", _rate, make_linear)
    register_decoder("L8", _rate, make_linear)
for _rate in (8000, 11025, 16000, 22050):
    register_decoder("DVI4", _rate, make_dvi4)
register_decoder("opus", 48000, make_opus)
register_decoder("AMR", 8000, amr_factory(wideband=False))
register_decoder("AMR-WB", 16000, amr_factory(wideband=True))


def is_audio_format(fmt: MediaFormat) -> bool:
    """False for the formats that ride in an audio stream but carry no audio to place."""
    return fmt.encoding.upper() not in NON_AUDIO_ENCODINGS


def decoder_for(fmt: MediaFormat) -> AudioDecoder | None:
    """A new decoder for ``fmt`` (one per segment: decoders may keep state), or ``None`` if
    the format is not audio or no decoder is registered for it."""
    if not is_audio_format(fmt):
        return None
    factory = _REGISTRY.get((fmt.encoding.upper(), fmt.clock_rate_hz))
    return None if factory is None else factory(fmt)


def format_for(payload_type: int, formats: dict[int, MediaFormat]) -> MediaFormat | None:
    """The format of ``payload_type``: as negotiated, else from the static table, else ``None``."""
    fmt = formats.get(payload_type)
    return fmt if fmt is not None else STATIC_FORMATS.get(payload_type)


__all__ = [
    "NON_AUDIO_ENCODINGS",
    "STATIC_FORMATS",
    "AudioDecoder",
    "DecoderFactory",
    "decoder_for",
    "format_for",
    "is_audio_format",
    "register_decoder",
]
