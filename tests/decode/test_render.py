"""Stereo rendering: channel order, span, alignment of the two legs on the capture clock,
drift over an hour, output rate and resampling, the speed of a one-hour call, and RFC 3389
comfort noise in silence-suppression gaps."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pytest

from callrec.capture.model.calls import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    CallState,
    CapturedCall,
    CapturedLeg,
)
from callrec.capture.model.media import MediaFormat, RtpPackets
from callrec.capture.streams.medialog import LegSpool
from callrec.decode import codecs
from callrec.decode.codecs.base import I16, I64, AudioDecoder, gather_payloads
from callrec.decode.render import RenderedCall, render_call
from callrec.decode.resample import resample
from tests.helpers.legs import MS, SPP, T0, S, decoded, make_leg, stream, tone, ulaw_encode

SILENCE = 0xFF  # µ-law code of 0


def call_of(
    caller: RtpPackets | None, callee: RtpPackets | None, formats: dict[int, MediaFormat] | None = None
) -> CapturedCall:
    legs: dict[str, CapturedLeg] = {}
    if caller is not None:
        legs[CALLER_TO_CALLEE] = make_leg(caller, CALLER_TO_CALLEE, formats)
    if callee is not None:
        legs[CALLEE_TO_CALLER] = make_leg(callee, CALLEE_TO_CALLER, formats)
    return CapturedCall(
        "call-1",
        CallState.COMPLETED,
        T0 - 2 * S,
        T0 - S,
        T0 + 3600 * S,
        "bye",
        "1001",
        "1002",
        "sip:1001@x",
        "sip:1002@x",
        "sip:1002@x",
        legs=legs,
    )


def speech(
    n_packets: int,
    bursts_at: list[int],
    drift_ppm: float = 0.0,
    burst_samples: int = 800,
    freq_hz: float = 1000.0,
) -> npt.NDArray[np.uint8]:
    """µ-law payloads (n, 160) of silence with a tone burst starting when the *capture* clock
    reads ``T0 + at`` ns, for a sender whose clock runs ``drift_ppm`` fast."""
    codes = np.full(n_packets * SPP, SILENCE, dtype=np.uint8)
    burst = ulaw_encode(np.rint(12000 * np.cos(2 * np.pi * freq_hz * np.arange(burst_samples) / 8000)))
    for at in bursts_at:
        first = int(round(at * 8000 * (1 + drift_ppm * 1e-6) / S))  # the sender's own sample count
        codes[first : first + burst_samples] = burst
    return codes.reshape(n_packets, SPP)


def onsets(channel: npt.NDArray[np.int16], threshold: int = 3000) -> list[int]:
    """First sample of each burst (bursts are far apart)."""
    loud = np.flatnonzero(np.abs(channel.astype(np.int32)) > threshold)
    if loud.shape[0] == 0:
        return []
    starts = np.concatenate(([0], np.flatnonzero(np.diff(loud) > 8000) + 1))
    return loud[starts].tolist()


def test_caller_is_left_and_callee_right_and_a_silent_leg_is_a_zero_channel() -> None:
    callee = stream(25, ssrc=0xB)
    rendered = render_call(call_of(None, callee))
    assert rendered.samples.shape == (25 * SPP, 2) and rendered.samples.dtype == np.int16
    assert not rendered.samples[:, 0].any()
    np.testing.assert_array_equal(rendered.samples[:, 1], decoded(callee))
    assert rendered.legs[CALLER_TO_CALLEE].packets == 0
    assert rendered.legs[CALLEE_TO_CALLER].audio_packets == 25
    both = render_call(call_of(stream(25, seed=3), callee))
    np.testing.assert_array_equal(both.samples[:, 0], decoded(stream(25, seed=3)))


def test_a_call_without_media_renders_no_samples() -> None:
    rendered = render_call(call_of(None, None))
    assert rendered.samples.shape == (0, 2) and rendered.duration_s == 0.0
    events_only = stream(5, pt=101, ts_ticks=np.zeros(5), payload=np.zeros((5, 4), np.uint8))
    rendered = render_call(call_of(events_only, None))
    assert rendered.samples.shape[0] == 0 and rendered.legs[CALLER_TO_CALLEE].packets == 5


def test_the_span_runs_from_the_first_media_of_either_leg_to_the_end_of_the_last() -> None:
    early = stream(50, ssrc=0xB, start_ns=T0 - 2 * S)  # early media from the callee (ringback)
    caller = stream(100, start_ns=T0, seq0=7, ts0=99)
    callee = stream(150, ssrc=0xB, seq0=2000, ts0=9_000_000, start_ns=T0 + 500 * MS, seed=4)
    from tests.helpers.legs import join

    rendered = render_call(call_of(caller, join(early, callee)))
    assert rendered.start_ns == T0 - 2 * S
    end = T0 + 500 * MS + 150 * 20 * MS
    assert rendered.samples.shape[0] == (end - rendered.start_ns) * 8000 // S
    assert rendered.duration_s == pytest.approx(5.5)
    assert rendered.sample_rate_hz == 8000
    left, right = rendered.samples[:, 0], rendered.samples[:, 1]
    np.testing.assert_array_equal(left[16_000 : 16_000 + 100 * SPP], decoded(caller))
    assert not left[:16_000].any() and not left[16_000 + 100 * SPP :].any()
    np.testing.assert_array_equal(right[: 50 * SPP], decoded(early))
    np.testing.assert_array_equal(right[20_000:], decoded(callee))
    assert not right[50 * SPP : 20_000].any()


def test_both_channels_line_up_on_the_capture_clock() -> None:
    """Both sides say something at T0 + 5 s; their streams share nothing but the capture clock."""
    rng = np.random.default_rng(9)
    n = 400
    caller = stream(
        n,
        payload=speech(n, [5 * S]),
        seq0=60_000,
        ts0=4_294_000_000,
        delay_ns=2 * MS,
        jitter_ns=rng.integers(0, 25 * MS, n),
    )
    callee = stream(
        n + 100,
        ssrc=0xB,
        start_ns=T0 - 2 * S,
        payload=speech(n + 100, [7 * S]),
        seq0=3,
        ts0=12345,
        delay_ns=2 * MS,
        jitter_ns=rng.integers(0, 8 * MS, n + 100),
    )
    caller = caller.select(np.argsort(caller.ts_ns, kind="stable"))
    callee = callee.select(np.argsort(callee.ts_ns, kind="stable"))
    rendered = render_call(call_of(caller, callee))
    at = (5 * S + 2 * S) * 8000 // S  # 5 s after T0, and the recording starts at T0 - 2 s
    assert onsets(rendered.samples[:, 0]) == [at]
    assert onsets(rendered.samples[:, 1]) == [at]


def test_an_output_rate_resamples_and_keeps_time() -> None:
    n = 100
    caller = stream(n, payload=ulaw_encode(tone(n * SPP, 440.0)).reshape(n, SPP))
    rendered = render_call(call_of(caller, None), output_rate_hz=16_000)
    assert rendered.sample_rate_hz == 16_000 and rendered.samples.shape[0] == 2 * n * SPP
    left = rendered.samples[:, 0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(left[4000:-4000] * np.hanning(left.shape[0] - 8000)))
    freqs = np.fft.rfftfreq(left.shape[0] - 8000, 1 / 16_000)
    assert freqs[spectrum.argmax()] == pytest.approx(440.0, abs=2.0)
    assert np.abs(spectrum[freqs > 4000]).max() < spectrum.max() * 1e-3  # no images above 4 kHz
    ideal = 8000 * np.sin(2 * np.pi * 440.0 * np.arange(left.shape[0]) / 16_000)
    assert np.abs(left[2000:-2000] - ideal[2000:-2000]).max() < 400  # µ-law's own error is ~1-3 %


class _L16Decoder(AudioDecoder):
    """A test-only wideband codec: RFC 3551 L16 (big-endian 16-bit PCM) at 16 kHz."""

    encoding = "L16"

    def __init__(self) -> None:
        self.clock_rate_hz = 16_000
        self.sample_rate_hz = 16_000

    def decode(self, packets: RtpPackets) -> tuple[I16, I64]:
        data, lengths = gather_payloads(packets)
        return data.view(">i2").astype(np.int16), lengths // 2


def test_legs_at_different_rates_meet_at_the_higher_rate_and_stay_aligned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(codecs._REGISTRY, ("L16", 16_000), lambda fmt: _L16Decoder())
    formats = {0: MediaFormat(0, "PCMU", 8000), 96: MediaFormat(96, "L16", 16_000)}
    n = 200
    caller = stream(n, payload=speech(n, [2 * S]))
    wide = np.zeros(n * 320, dtype=np.int16)
    wide[2 * 16_000 : 2 * 16_000 + 1600] = np.rint(
        12000 * np.cos(2 * np.pi * 1000 * np.arange(1600) / 16_000)
    )
    callee = stream(
        n, ssrc=0xB, pt=96, ts_ticks=np.arange(n) * 320, payload=wide.astype(">i2").view(np.uint8)
    )
    rendered = render_call(call_of(caller, callee, formats))
    assert rendered.sample_rate_hz == 16_000
    assert rendered.legs[CALLEE_TO_CALLER].codecs == ("L16",)
    assert rendered.samples.shape[0] == n * 320
    left, right = onsets(rendered.samples[:, 0]), onsets(rendered.samples[:, 1])
    assert right == [32_000]
    assert len(left) == 1 and abs(left[0] - 32_000) <= 2  # the resampler's filter is centred


def test_resampler_does_not_alias() -> None:
    rate, n = 48_000, 48_000
    t = np.arange(n) / rate
    above = np.rint(20000 * np.sin(2 * np.pi * 5000 * t)).astype(np.int16)  # above 8 kHz's Nyquist
    inside = np.rint(20000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    down_above = resample(above, rate, 8000).astype(np.float64)
    down_inside = resample(inside, rate, 8000).astype(np.float64)
    assert down_inside.shape == (8000,)
    level = 20 * np.log10(
        np.sqrt(np.mean(down_above[500:-500] ** 2)) / np.sqrt(np.mean(down_inside[500:-500] ** 2))
    )
    assert level < -60
    up = resample(inside[::6].copy(), 8000, 48_000).astype(np.float64)  # 1 kHz at 8 kHz, back to 48 kHz
    spectrum = np.abs(np.fft.rfft(up[6000:-6000] * np.hanning(up.shape[0] - 12_000)))
    freqs = np.fft.rfftfreq(up.shape[0] - 12_000, 1 / 48_000)
    images = spectrum[freqs > 4000].max()
    assert 20 * np.log10(images / spectrum.max()) < -60  # images at 7, 9, 15, 17 kHz are gone
    assert resample(inside, rate, rate).tolist() == inside.tolist()


@pytest.mark.slow
def test_an_hour_with_drifting_phones_stays_aligned_and_renders_fast() -> None:
    """Two phones, +50 ppm and -30 ppm, an hour of 20 ms packets each (2 x 180,000), jitter.
    Both sides say something at the same capture times every ten minutes; uncorrected, the
    channels would end 288 ms apart (2300 samples)."""
    n = 180_000
    rng = np.random.default_rng(1)
    say = [k * 600 * S + S for k in range(6)] + [3595 * S]
    legs = []
    for ppm, ssrc, seed in ((50.0, 0xA, 2), (-30.0, 0xB, 3)):
        jitter = rng.exponential(3 * MS, n).astype(np.int64)
        p = stream(
            n,
            ssrc=ssrc,
            drift_ppm=ppm,
            payload=speech(n, say, ppm),
            delay_ns=5 * MS,
            jitter_ns=jitter,
            seq0=seed * 1000,
            ts0=seed * 7_000_000,
        )
        legs.append(p.select(np.argsort(p.ts_ns, kind="stable")))
    call = call_of(legs[0], legs[1])
    render_call(call)
    started = time.perf_counter()
    rendered: RenderedCall = render_call(call)
    elapsed = time.perf_counter() - started
    speed = rendered.duration_s / elapsed
    print(f"\n1-hour stereo G.711 call rendered in {elapsed * 1000:.0f} ms: {speed:.0f}x realtime")
    left, right = onsets(rendered.samples[:, 0]), onsets(rendered.samples[:, 1])
    want = [round((T0 + at + 5 * MS - rendered.start_ns) * 8000 / S) for at in say]
    assert len(left) == len(right) == len(want)
    assert max(abs(a - b) for a, b in zip(left, right, strict=True)) <= 16  # 2 ms; the rule is 20 ms
    assert max(abs(a - w) for a, w in zip(left, want, strict=True)) <= 16
    assert max(abs(b - w) for b, w in zip(right, want, strict=True)) <= 16
    assert rendered.legs[CALLER_TO_CALLEE].drift_ppm == pytest.approx(50.0, abs=1.0)
    assert rendered.legs[CALLEE_TO_CALLER].drift_ppm == pytest.approx(-30.0, abs=1.0)
    assert speed > 500  # measured ~10,000x on one core; generous for a loaded CI machine


# -- comfort noise (RFC 3389) -----------------------------------------------------------------


def dtx_call(
    gap_s: int, level: int = 40, cn_ts: int | None = None
) -> tuple[CapturedCall, RtpPackets, RtpPackets]:
    """One second of speech, a CN packet at its end (1 ms late), silence of ``gap_s`` seconds
    (nothing sent; sequence numbers go on after the CN), one second of speech."""
    first = stream(50)
    ts_cn = 50_000 + 50 * SPP if cn_ts is None else cn_ts
    cn = stream(
        1, pt=13, seq0=1050, ts0=ts_cn, start_ns=T0 + S + MS, payload=np.full((1, 1), level, np.uint8)
    )
    back = 1 + gap_s  # seconds
    second = stream(
        50, seq0=1051, ts0=50_000 + back * 8000, start_ns=T0 + back * S, seed=2, marker_first=True
    )
    spool = LegSpool()
    for part in (first, cn, second):
        spool.append(part)
    return call_of(spool.packets(), None), first, second


def rms(x: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


def test_comfort_noise_fills_the_gap_at_its_level_and_speech_stays_in_place() -> None:
    call, first, second = dtx_call(gap_s=1)
    rendered = render_call(call)
    left = rendered.samples[:, 0]
    assert rendered.start_ns == T0 and left.shape[0] == 3 * 8000
    np.testing.assert_array_equal(left[:8000], decoded(first))
    np.testing.assert_array_equal(left[16000:], decoded(second))  # exactly where its timestamps say
    assert rms(left[8000:16000]) == pytest.approx(32767 * 10 ** (-40 / 20), rel=0.03)  # -40 dBov: 327.7
    np.testing.assert_array_equal(render_call(call).samples, rendered.samples)  # seeded: reproducible
    assert not render_call(call, comfort_noise=False).samples[8000:16000].any()
    assert not render_call(dtx_call(1, level=127)[0]).samples[8000:16000, 0].any()  # -127 dBov: nothing


def test_one_comfort_noise_packet_fills_at_most_five_seconds() -> None:
    call, _, second = dtx_call(gap_s=8)
    left = render_call(call).samples[:, 0]
    assert rms(left[8000 : 8000 + 5 * 8000]) == pytest.approx(327.67, rel=0.03)
    assert not left[8000 + 5 * 8000 : 9 * 8000].any()
    np.testing.assert_array_equal(left[9 * 8000 :], decoded(second))


def test_comfort_noise_with_a_foreign_timestamp_starts_at_its_arrival() -> None:
    call, first, second = dtx_call(gap_s=1, cn_ts=123)
    left = render_call(call).samples[:, 0]
    assert not left[8000 : 8000 + 8].any()  # arrived 1 ms (8 samples) after its slot
    assert rms(left[8000 + 8 : 16000]) == pytest.approx(327.67, rel=0.03)
    np.testing.assert_array_equal(left[16000:], decoded(second))
