"""Helpers for the codec tests: a speech-like signal, PyAV encoders, RTP packets, lag search.

Not a test module (no ``test_`` prefix): imported by ``test_decode_codec*.py``.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from callrec.capture.frames.decoder import FrameDecoder
from callrec.capture.model.media import RtpPackets
from callrec.capture.model.serial import unwrap_seq
from callrec.capture.sources.capture_file import read_batches
from callrec.capture.streams.medialog import LegSpool
from callrec.capture.streams.rtp import RTCP_TYPE_MAX, RTCP_TYPE_MIN, parse_rtp_columns

I16 = npt.NDArray[np.int16]
ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "pcaps" / "real"


def speechlike(rate: int, seconds: float, seed: int = 1, level: float = 6000.0) -> I16:
    """Voiced-speech stand-in: harmonics of a gliding 100-220 Hz pitch shaped by three formants,
    in 3-4 syllables a second with short pauses. CELP codecs model exactly this (pitch + LPC)."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    f0 = 160 + 60 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    formants = np.array([700.0, 1200.0, 2600.0]) * rng.uniform(0.9, 1.1, 3)
    x = np.zeros(n)
    for k in range(1, int(min(rate / 2, 3800) // 100)):
        fk = k * f0
        gain = sum(1.0 / (1.0 + ((fk - f) / 150.0) ** 2) for f in formants) / k**0.5
        x += gain * np.sin(k * phase)
    syllables = np.clip(np.sin(2 * np.pi * 1.7 * t) * 1.4, 0, 1) ** 0.7
    x *= syllables
    x += rng.normal(0, 0.01, n)
    return np.round(x / np.abs(x).max() * level).astype(np.int16)


def encode(codec: str, pcm: I16, rate: int, frame: int, channels: int = 1, **options: object) -> list[bytes]:
    """``pcm`` (interleaved if stereo) encoded with FFmpeg's ``codec`` in frames of ``frame`` samples."""
    enc = av.CodecContext.create(codec, "w")
    assert isinstance(enc, av.AudioCodecContext)
    enc.sample_rate = rate
    enc.layout = "stereo" if channels == 2 else "mono"
    enc.format = "s16"
    bit_rate = options.pop("bit_rate", None)
    if bit_rate:
        enc.bit_rate = int(bit_rate)  # type: ignore[call-overload]
    enc.options = {k: str(v) for k, v in options.items()}
    enc.open()
    out: list[bytes] = []
    stride = frame * channels
    for i in range(0, pcm.shape[0] - stride + 1, stride):
        f = av.AudioFrame.from_ndarray(pcm[None, i : i + stride], format="s16", layout=enc.layout)
        f.sample_rate = rate
        f.pts = i // channels
        out += [bytes(p) for p in enc.encode(f)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


def rtp(
    payloads: list[bytes], ticks: int, *, pt: int = 96, seq0: int = 1000, ts0: int = 5000,
    drop: set[int] | frozenset[int] = frozenset(), ticks_each: list[int] | None = None,
) -> RtpPackets:  # fmt: skip
    """RtpPackets for ``payloads`` sent back to back (``ticks`` RTP ticks each), minus ``drop``
    (indices of lost packets): what the timeline hands a decoder, in ``ext_seq`` order."""
    keep = [i for i in range(len(payloads)) if i not in drop]
    steps = ticks_each or [ticks] * len(payloads)
    starts = np.concatenate(([0], np.cumsum(steps)[:-1])).astype(np.int64)
    sizes = np.array([len(payloads[i]) for i in keep], dtype=np.int64)
    n = len(keep)
    idx = np.array(keep, dtype=np.int64)
    return RtpPackets(
        ts_ns=idx * 20_000_000,
        seq=(seq0 + idx) & 0xFFFF,
        rtp_ts=(ts0 + starts[idx]) & 0xFFFFFFFF,
        ssrc=np.full(n, 0x1234, dtype=np.int64),
        payload_type=np.full(n, pt, dtype=np.int64),
        marker=np.zeros(n, dtype=np.bool_),
        payload=np.frombuffer(b"".join(payloads[i] for i in keep) + b"\0" * 16, dtype=np.uint8),
        payload_offsets=np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64),
        payload_lengths=sizes,
    )


def best_correlation(ref: npt.ArrayLike, out: npt.ArrayLike, max_lag: int) -> tuple[int, float]:
    """(lag, normalised correlation) of ``out`` against ``ref`` at the best lag in +-``max_lag``
    (``out[i + lag]`` matches ``ref[i]``), over the overlap."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(out, dtype=np.float64)
    size = 1 << int(np.ceil(np.log2(a.shape[0] + b.shape[0])))
    xc = np.fft.irfft(np.conj(np.fft.rfft(a, size)) * np.fft.rfft(b, size), size)
    lags = np.concatenate((np.arange(0, max_lag + 1), np.arange(-max_lag, 0)))
    lag = int(lags[np.argmax(xc[lags])])
    x, y = (a[: b.shape[0] - lag], b[lag:]) if lag >= 0 else (a[-lag:], b[: a.shape[0] + lag])
    m = min(x.shape[0], y.shape[0])
    x, y = x[:m], y[:m]
    return lag, float(np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y) + 1e-12))


def capture_streams(path: Path) -> RtpPackets:
    """Every RTP packet of a capture without SIP, in arrival order (capture.sources.capture_file,
    capture.frames.decoder,
    capture.streams.rtp.parse_rtp_columns); RTCP and non-RTP datagrams are left out."""
    decoder = FrameDecoder()
    spool = LegSpool()
    for batch in read_batches(path):
        d = decoder.decode(batch)
        if len(d) == 0:
            continue
        buf = np.frombuffer(d.buffer, dtype=np.uint8)
        first, second = buf[d.payload_offsets], buf[d.payload_offsets + 1]
        rtcp = (second >= RTCP_TYPE_MIN) & (second <= RTCP_TYPE_MAX)
        rows = np.flatnonzero(((first >> 6) == 2) & (d.payload_lengths >= 12) & ~rtcp)
        packets, _ = parse_rtp_columns(
            d.buffer, d.payload_offsets[rows], d.payload_lengths[rows], d.ts_ns[rows]
        )
        spool.append(packets)
    return spool.packets()


def one_stream(packets: RtpPackets, ssrc: int, pt: int) -> RtpPackets:
    """One SSRC's packets of one payload type, as the timeline hands them to a decoder: in
    ``ext_seq`` order, duplicates removed."""
    p = packets.select(np.flatnonzero((packets.ssrc == ssrc) & (packets.payload_type == pt)))
    ext = unwrap_seq(p.seq)
    order = np.argsort(ext, kind="stable")
    first = np.ones(order.shape[0], dtype=np.bool_)
    first[1:] = ext[order[1:]] != ext[order[:-1]]
    return p.select(order[first])


def spectrum_below(pcm: npt.ArrayLike, rate: int, hz: float) -> float:
    """Share of the signal's energy below ``hz``."""
    x = np.asarray(pcm, dtype=np.float64)
    power = np.abs(np.fft.rfft(x)) ** 2
    freq = np.fft.rfftfreq(x.shape[0], 1 / rate)
    return float(power[freq < hz].sum() / max(power.sum(), 1e-12))


def full_scale_share(pcm: npt.ArrayLike) -> float:
    x = np.asarray(pcm, dtype=np.int32)
    return float(np.mean(np.abs(x) >= 32767))


def rms(pcm: npt.ArrayLike) -> float:
    x = np.asarray(pcm, dtype=np.float64)
    return float(np.sqrt(np.mean(x**2))) if x.shape[0] else 0.0


def prompt_8k() -> I16:
    """The FreeSWITCH prompt of Wireshark's sip-rtp-g711.pcap (real speech, 8.5 s), decoded from
    its PCMU call with the bit-exact G.711 table."""
    from callrec.decode.codecs.g711 import ULAW_TABLE

    packets = capture_streams(REAL / "wireshark-wiki" / "sip-rtp-g711.pcap")
    leg = one_stream(packets, int(packets.ssrc[packets.payload_type == 0][0]), 0)
    data = np.concatenate([np.frombuffer(leg.payload_bytes(i), dtype=np.uint8) for i in range(len(leg))])
    return ULAW_TABLE[data]
