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

from capture.media import STATIC_PAYLOAD_TYPES, MediaFormat
from decode.codecs.base import AudioDecoder
from decode.codecs.g711 import ALawDecoder, MuLawDecoder

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
