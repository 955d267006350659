"""G.711 tables (bit exact with the ITU reference as shipped in Python's audioop), the codec
registry, and the payload gather that feeds decoders."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.decode.codecs import (
    NON_AUDIO_ENCODINGS,
    decoder_for,
    format_for,
    is_audio_format,
)
from callrec.decode.codecs.base import gather_payloads
from callrec.decode.codecs.g711 import ALAW_TABLE, ULAW_TABLE, ALawDecoder, MuLawDecoder
from tests.helpers.legs import stream, ulaw_encode


def _audioop():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return importlib.import_module("audioop")
        except ModuleNotFoundError:
            pytest.skip("audioop is not available (removed in Python 3.13)")


ALL_CODES = bytes(range(256))


def test_ulaw_table_is_bit_exact_with_audioop() -> None:
    audioop = _audioop()
    want = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(ULAW_TABLE, want)


def test_alaw_table_is_bit_exact_with_audioop() -> None:
    audioop = _audioop()
    want = np.frombuffer(audioop.alaw2lin(ALL_CODES, 2), dtype=np.int16)
    np.testing.assert_array_equal(ALAW_TABLE, want)


def test_table_landmarks_from_the_standard() -> None:
    # µ-law: 0x00 and 0x80 are the extremes, 0xFF and 0x7F the two zeros.
    assert (ULAW_TABLE[0x00], ULAW_TABLE[0x80], ULAW_TABLE[0xFF], ULAW_TABLE[0x7F]) == (-32124, 32124, 0, 0)
    # A-law: 0xD5 / 0x55 are the smallest steps (+8 / -8), 0xAA / 0x2A the extremes.
    assert (ALAW_TABLE[0xD5], ALAW_TABLE[0x55], ALAW_TABLE[0xAA], ALAW_TABLE[0x2A]) == (8, -8, 32256, -32256)
    assert not ULAW_TABLE.flags.writeable


def test_the_tests_encoder_inverts_the_table() -> None:
    codes = np.arange(256, dtype=np.uint8)
    again = ulaw_encode(ULAW_TABLE[codes])
    assert np.all((again == codes) | (codes == 0x7F))  # 0x7F and 0xFF both decode to 0; 0xFF wins


def test_ulaw_encoder_agrees_with_audioop() -> None:
    audioop = _audioop()
    x = np.random.default_rng(1).integers(-32768, 32768, 20_000).astype(np.int16)
    want = np.frombuffer(audioop.lin2ulaw(x.tobytes(), 2), dtype=np.uint8)
    np.testing.assert_array_equal(ulaw_encode(x), want)


@pytest.mark.parametrize(("decoder", "table"), [(MuLawDecoder(), ULAW_TABLE), (ALawDecoder(), ALAW_TABLE)])
def test_decoding_is_one_sample_per_byte_in_the_order_given(decoder, table) -> None:  # type: ignore[no-untyped-def]
    p = stream(30)
    order = np.random.default_rng(4).permutation(30)
    pcm, counts = decoder.decode(p.select(order))
    want = np.concatenate([table[np.frombuffer(p.payload_bytes(int(i)), np.uint8)] for i in order])
    np.testing.assert_array_equal(pcm, want)
    assert counts.tolist() == [160] * 30 and pcm.dtype == np.int16
    assert (decoder.clock_rate_hz, decoder.sample_rate_hz) == (8000, 8000)
    assert decoder.samples_for_ticks(np.array([160, 320])).tolist() == [160, 320]


def _packets(lengths: list[int], order: list[int]) -> tuple[RtpPackets, bytes]:
    """Payloads of the given lengths stored back to back, listed in ``order``."""
    sizes = np.array(lengths, dtype=np.int64)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    flat = np.random.default_rng(len(lengths)).integers(0, 256, int(sizes.sum()), dtype=np.uint8)
    idx = np.array(order, dtype=np.int64)
    n = len(order)
    z = np.zeros(n, dtype=np.int64)
    p = RtpPackets(z, z, z, z, z, np.zeros(n, bool), flat, starts[idx], sizes[idx])
    want = b"".join(flat[starts[i] : starts[i] + sizes[i]].tobytes() for i in order)
    return p, want


@pytest.mark.parametrize(
    ("lengths", "order"),
    [
        ([160] * 5, [0, 1, 2, 3, 4]),  # contiguous: one slice
        ([160] * 5, [1, 0, 2, 4, 3]),  # one size: strided row gather
        ([80, 160, 0, 240, 7], [3, 0, 1, 2, 4]),  # mixed sizes (and an empty one): runs sliced
        ([80, 160, 240], [2, 1, 0]),
    ],
)
def test_gather_payloads_concatenates_in_the_order_given(lengths: list[int], order: list[int]) -> None:
    p, want = _packets(lengths, order)
    data, got_lengths = gather_payloads(p)
    assert data.tobytes() == want
    assert got_lengths.tolist() == [lengths[i] for i in order]


def test_gather_of_nothing() -> None:
    data, lengths = gather_payloads(RtpPackets.empty())
    assert data.shape == (0,) and lengths.shape == (0,)


def test_registry_by_encoding_and_clock() -> None:
    assert isinstance(decoder_for(MediaFormat(0, "pcmu", 8000)), MuLawDecoder)
    assert isinstance(decoder_for(MediaFormat(97, "PCMA", 8000)), ALawDecoder)
    assert decoder_for(MediaFormat(97, "PCMA", 16000)) is None  # the clock is part of the key
    assert decoder_for(MediaFormat(0, "PCMU", 8000, channels=2)) is None
    assert decoder_for(MediaFormat(101, "telephone-event", 8000)) is None
    first, second = decoder_for(MediaFormat(0, "PCMU", 8000)), decoder_for(MediaFormat(0, "PCMU", 8000))
    assert first is not second  # a fresh decoder per segment: codecs may keep state


def test_non_audio_formats() -> None:
    for name in ("telephone-event", "CN", "red", "ulpfec"):
        assert not is_audio_format(MediaFormat(100, name, 8000))
    assert is_audio_format(MediaFormat(0, "PCMU", 8000)) and is_audio_format(
        MediaFormat(111, "opus", 48000, 2)
    )
    assert "TELEPHONE-EVENT" in NON_AUDIO_ENCODINGS


def test_format_lookup_falls_back_to_the_static_table() -> None:
    negotiated = {0: MediaFormat(0, "PCMU", 8000), 96: MediaFormat(96, "opus", 48000, 2)}
    assert format_for(96, negotiated) == negotiated[96]
    assert format_for(8, negotiated) == MediaFormat(8, "PCMA", 8000)
    assert format_for(9, {}) == MediaFormat(9, "G722", 8000)
    assert format_for(97, negotiated) is None
