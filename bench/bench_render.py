"""Render benchmark: decode + timeline + stereo of a one-hour call, in x realtime, per codec.

Builds the call's two legs directly (20 ms packets, 30 ms for G.723.1, with jitter and 0.2 % loss)
and renders it ``--repeat`` times; prints one JSON line per codec with the best time.

G.711 payloads are random bytes. For the other codecs an hour of a test signal (harmonics of a
gliding pitch, syllable-like bursts) is encoded once with PyAV's encoder and cached in
``bench/out/`` (``codec-<name>-<minutes>m.npz``), so later runs only decode.

    python bench/bench_render.py [--minutes 60] [--codec g711|g722|opus|opus-pyav|...|all]

``opus`` decodes with libopus by ctypes (the registry's choice, FEC and PLC included);
``opus-pyav`` swaps in PyAV's decoder for the same packets, for comparison.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from callrec.capture.model.calls import (
    CALLEE_TO_CALLER,
    CALLER_TO_CALLEE,
    CallState,
    CapturedCall,
    CapturedLeg,
)
from callrec.capture.model.media import STATIC_PAYLOAD_TYPES, MediaFormat, RtpPackets
from callrec.decode.codecs import decoder_for, register_decoder
from callrec.decode.codecs.opus import AvOpusDecoder, make_opus
from callrec.decode.render import render_call

OUT = Path(__file__).resolve().parent / "out"

# name: (label, format, encoder, encoder rate, samples per packet at that rate, RTP ticks per packet,
#        encoder options)
CODECS: dict[str, tuple[str, MediaFormat, str, int, int, int, dict[str, object]]] = {
    "g722": ("G.722", MediaFormat(9, "G722", 8000), "g722", 16000, 320, 160, {}),
    "opus": ("Opus (libopus, ctypes)", MediaFormat(111, "opus", 48000, 2), "libopus", 48000, 960, 960,
             {"bit_rate": 32000, "fec": 1, "packet_loss": 5, "application": "voip"}),
    "opus-pyav": ("Opus (PyAV)", MediaFormat(111, "opus", 48000, 2), "libopus", 48000, 960, 960,
                  {"bit_rate": 32000, "fec": 1, "packet_loss": 5, "application": "voip"}),
    "g726": ("G.726-32", MediaFormat(96, "G726-32", 8000), "adpcm_g726le", 8000, 160, 160,
             {"bit_rate": 32000}),
    "amr": ("AMR 12.2 (bandwidth-efficient)", MediaFormat(96, "AMR", 8000), "libopencore_amrnb", 8000, 160,
            160, {"bit_rate": 12200}),
    "g723": ("G.723.1 6.3", MediaFormat(4, "G723", 8000), "g723_1", 8000, 240, 240, {"bit_rate": 6300}),
    "l16": ("L16/16000", MediaFormat(97, "L16", 16000), "", 16000, 320, 320, {}),
}  # fmt: skip


def test_signal(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * np.cumsum(150 + 50 * np.sin(2 * np.pi * 0.3 * t)) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    bursts = np.clip(np.sin(2 * np.pi * 1.7 * t) * 1.5, 0, 1)
    return np.round(x * bursts * 5000).astype(np.int16)


def encode(name: str, minutes: float) -> list[bytes]:
    """An hour (``minutes``) of the test signal in RTP payloads of ``name``, cached in bench/out/."""
    _, _, codec, rate, frame, _, options = CODECS[name]
    cache = OUT / f"codec-{name.replace('-pyav', '')}-{minutes:g}m.npz"
    if cache.exists():
        stored = np.load(cache)
        data, lengths = stored["data"], stored["lengths"]
        ends = np.cumsum(lengths)
        return [data[e - n : e].tobytes() for e, n in zip(ends.tolist(), lengths.tolist(), strict=True)]
    x = test_signal(rate, minutes * 60)
    if not codec:  # L16: big-endian samples
        raw = x.astype(">i2").tobytes()
        payloads = [raw[i : i + 2 * frame] for i in range(0, len(raw) - 2 * frame + 1, 2 * frame)]
    else:
        payloads = encode_av(codec, x, rate, frame, dict(options))
    if name == "amr":  # storage frames (header + bits) to RFC 4867 bandwidth-efficient payloads
        payloads = [amr_bandwidth_efficient(f) for f in payloads]
    if name == "g726":
        stream = b"".join(payloads)
        payloads = [stream[i : i + 80] for i in range(0, len(stream) - 79, 80)]
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache, data=np.frombuffer(b"".join(payloads), np.uint8), lengths=np.array([len(p) for p in payloads])
    )
    return payloads


def encode_av(codec: str, x: np.ndarray, rate: int, frame: int, options: dict[str, object]) -> list[bytes]:
    enc = av.CodecContext.create(codec, "w")
    assert isinstance(enc, av.AudioCodecContext)
    enc.sample_rate, enc.layout, enc.format = rate, "mono", "s16"
    if "bit_rate" in options:
        enc.bit_rate = int(options.pop("bit_rate"))  # type: ignore[call-overload]
    enc.options = {k: str(v) for k, v in options.items()}
    enc.open()
    out: list[bytes] = []
    for i in range(0, x.shape[0] - frame + 1, frame):
        f = av.AudioFrame.from_ndarray(x[None, i : i + frame], format="s16", layout="mono")
        f.sample_rate, f.pts = rate, i
        out += [bytes(p) for p in enc.encode(f)]
    return out + [bytes(p) for p in enc.encode(None)]


def amr_bandwidth_efficient(frame: bytes) -> bytes:
    bits = (95, 103, 118, 134, 148, 159, 204, 244, 39)[(frame[0] >> 3) & 0x0F]
    speech = "".join(f"{b:08b}" for b in frame[1:])[:bits]
    packed = "1111" + f"0{(frame[0] >> 3) & 0x0F:04b}1" + speech
    packed += "0" * (-len(packed) % 8)
    return int(packed, 2).to_bytes(len(packed) // 8, "big")


def leg(direction: str, payloads: list[bytes], ticks: int, pt: int, seed: int, formats: dict) -> CapturedLeg:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    packets = len(payloads)
    keep = np.flatnonzero(rng.random(packets) > 0.002)  # 0.2 % loss
    n = keep.shape[0]
    sizes = np.array([len(payloads[i]) for i in keep.tolist()], dtype=np.int64)
    ms = ticks * 1000 // formats[pt].clock_rate_hz
    rtp = RtpPackets(
        ts_ns=keep * ms * 1_000_000 + rng.integers(0, 3_000_000, n),
        seq=(keep + 1000) & 0xFFFF,
        rtp_ts=(keep * ticks + 12345) & 0xFFFFFFFF,
        ssrc=np.full(n, 0x1000 + seed, dtype=np.int64),
        payload_type=np.full(n, pt, dtype=np.int64),
        marker=np.zeros(n, dtype=np.bool_),
        payload=np.frombuffer(b"".join(payloads[i] for i in keep.tolist()), dtype=np.uint8),
        payload_offsets=np.cumsum(sizes) - sizes,
        payload_lengths=sizes,
    )
    return CapturedLeg(direction, formats, rtp)


def g711_payloads(packets: int, seed: int) -> list[bytes]:
    data = np.random.default_rng(seed).integers(0, 256, packets * 160, dtype=np.uint8).tobytes()
    return [data[i * 160 : (i + 1) * 160] for i in range(packets)]


def call(legs: dict[str, CapturedLeg], seconds: float) -> CapturedCall:
    return CapturedCall(
        call_id="bench", state=CallState.COMPLETED, started_ns=0, answered_ns=0,
        ended_ns=int(seconds * 1e9), end_reason="bye", caller="a", callee="b",
        caller_uri="", callee_uri="", request_uri="", legs=legs,
    )  # fmt: skip


def measure(name: str, minutes: float, repeat: int) -> dict[str, object]:
    formats = dict(STATIC_PAYLOAD_TYPES)
    if name == "g711":
        packets = int(minutes * 60 * 50)
        label = "G.711 (PCMU + PCMA)"
        legs = {
            CALLER_TO_CALLEE: leg(CALLER_TO_CALLEE, g711_payloads(packets, 1), 160, 0, 1, formats),
            CALLEE_TO_CALLER: leg(CALLEE_TO_CALLER, g711_payloads(packets, 2), 160, 8, 2, formats),
        }
    else:
        label, fmt, _, _, _, ticks, _ = CODECS[name]
        formats[fmt.payload_type] = fmt
        payloads = encode(name, minutes)
        legs = {
            d: leg(d, payloads, ticks, fmt.payload_type, seed, formats)
            for d, seed in ((CALLER_TO_CALLEE, 1), (CALLEE_TO_CALLER, 2))
        }
    restore: Callable[[], None] = lambda: None  # noqa: E731
    if name == "opus-pyav":
        register_decoder("opus", 48000, lambda fmt: AvOpusDecoder())
        restore = lambda: register_decoder("opus", 48000, make_opus)  # noqa: E731
    try:
        fmt0 = legs[CALLER_TO_CALLEE].formats[int(legs[CALLER_TO_CALLEE].packets.payload_type[0])]
        decoder = type(decoder_for(fmt0)).__name__
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            rendered = render_call(call(legs, minutes * 60))
            best = min(best, time.perf_counter() - t0)
    finally:
        restore()
    audio_s = rendered.samples.shape[0] / rendered.sample_rate_hz
    return {
        "bench": "render",
        "codec": label,
        "decoder": decoder,
        "rate_hz": rendered.sample_rate_hz,
        "audio_s": round(audio_s, 1),
        "render_s": round(best, 3),
        "x_realtime": round(audio_s / best),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--codec", default="g711", choices=["g711", *CODECS, "all"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    names = ["g711", *CODECS] if args.codec == "all" else [args.codec]
    for name in names:
        print(json.dumps(measure(name, args.minutes, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
