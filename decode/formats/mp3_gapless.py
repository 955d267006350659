"""Gapless MP3: the LAME "Info" tag that tells a decoder how many samples to drop, for :mod:`.mp3`.

An MP3 encoder delays its input (LAME: 576 samples) and pads the end to whole frames, and every
decoder adds 529 samples of its own filter delay: decoded as it is, a 10.02 s recording lasts
10.22 s and starts 138 ms late. LAME's answer, which FFmpeg, mpg123, foobar2000, iTunes and most
players honour, is a first frame that decodes to silence and carries, after the side information,
a Xing header named ``Info`` (a CBR stream) and LAME's extension with the encoder delay and the
padding (12 bits each). A decoder that reads it drops ``delay + 529`` samples at the start and
keeps ``frames * samples_per_frame - delay - padding`` samples: exactly the input.

The layout (Xing: flags, then the fields they announce; LAME extension: 36 bytes from the
encoder's name to the tag's CRC-16) follows LAME's documentation of its tag ("Mp3 Info Tag rev 1
specifications"); the CRC is CRC-16/ARC (polynomial 0x8005, reflected, initial value 0) over the
frame up to the CRC itself. lameenc writes no tag, so :func:`info_frame` builds it from the first
frame LAME wrote (same MPEG version, rate and channel mode) and from the input's length, which is
known before the first byte is written: the stream stays streamed. :class:`FrameCounter` checks,
as the stream goes by, that LAME wrote the number of frames the tag announced.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ENCODER_DELAY = 576  # LAME's (ENCDELAY in its source), in samples
DECODER_DELAY = 529  # every MPEG Layer III decoder's, in samples
# LAME 3.100 stops once the delayed input and at least 576 more samples are in whole frames
# (measured with lameenc 1.9: every input length from 0 to 5,000 at 8 and 48 kHz, 1,700 more at
# 11.025, 16 and 44.1 kHz and 100 up to 2 M samples; mp3_chunks checks it on every stream)
FLUSH_MIN = 576
ENCODER_NAME = b"LAME3.100"  # the encoder inside lameenc; decoders look for "LAME"
XING_FRAMES = 0x1
XING_BYTES = 0x2
LAME_EXTENSION = 36
MAX_PADDING = 0xFFF

_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG-1 Layer III
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG-2 and 2.5
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version bits


class GaplessError(ValueError):
    """Bytes that are not the MP3 frame header or stream expected here."""


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """The fields of a Layer III frame header that size it and place its side information."""

    word: int  # the 32 header bits as read

    @classmethod
    def parse(cls, data: bytes | memoryview, at: int = 0) -> FrameHeader:
        if len(data) - at < 4:
            raise GaplessError("an MP3 frame header needs 4 bytes")
        (word,) = struct.unpack_from(">I", data, at)
        header = cls(word)
        if word >> 21 != 0x7FF or (word >> 19) & 3 == 1 or (word >> 17) & 3 != 1:
            raise GaplessError(f"not an MPEG Layer III frame header: {word:08x}")
        if not 0 < (word >> 12) & 15 < 15 or (word >> 10) & 3 == 3:
            raise GaplessError(f"free, bad bitrate or reserved rate in MP3 frame header {word:08x}")
        return header

    @property
    def version_bits(self) -> int:
        return (self.word >> 19) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5

    @property
    def mpeg1(self) -> bool:
        return self.version_bits == 3

    @property
    def sample_rate_hz(self) -> int:
        return _RATES[self.version_bits][(self.word >> 10) & 3]

    @property
    def kbps(self) -> int:
        return _BITRATES[1 if self.mpeg1 else 2][(self.word >> 12) & 15]

    @property
    def mono(self) -> bool:
        return (self.word >> 6) & 3 == 3

    @property
    def samples_per_frame(self) -> int:
        return 1152 if self.mpeg1 else 576

    @property
    def side_info_bytes(self) -> int:
        if self.mpeg1:
            return 17 if self.mono else 32
        return 9 if self.mono else 17

    @property
    def size(self) -> int:
        """The frame's length in bytes, header included."""
        slots = 144 if self.mpeg1 else 72
        return slots * self.kbps * 1000 // self.sample_rate_hz + ((self.word >> 9) & 1)

    def fixed_size(self) -> bool:
        """Whether every frame of this bitrate and rate has the same size (no padding slots)."""
        return (144 if self.mpeg1 else 72) * self.kbps * 1000 % self.sample_rate_hz == 0

    def with_bitrate_index(self, index: int) -> FrameHeader:
        """The same header without padding or CRC, at bitrate ``index``."""
        word = (self.word & ~((15 << 12) | (1 << 9))) | (index << 12) | (1 << 16)
        return FrameHeader(word)


def lame_frames(input_samples: int, samples_per_frame: int) -> int:
    """How many audio frames LAME writes for ``input_samples`` samples (see :data:`FLUSH_MIN`)."""
    return -(-(input_samples + ENCODER_DELAY + FLUSH_MIN) // samples_per_frame)


def crc16(data: bytes) -> int:
    """CRC-16/ARC: polynomial 0x8005 reflected (0xA001), initial value 0, no final XOR."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def info_frame(first: FrameHeader, input_samples: int, audio_frames: int) -> bytes:
    """The tag frame to put before ``audio_frames`` frames like ``first`` that encode
    ``input_samples`` samples with LAME's delay. Its bitrate is the stream's if the tag fits in
    such a frame, else the lowest that holds it (8 kbit/s frames at 24 kHz are 24 bytes long)."""
    spf = first.samples_per_frame
    padding = audio_frames * spf - ENCODER_DELAY - input_samples
    if not 0 <= padding <= MAX_PADDING:
        raise GaplessError(f"{audio_frames} frames cannot hold {input_samples} samples and the delay")
    stream_bytes = audio_frames * first.size if first.fixed_size() else 0  # else unknown ahead
    table = _BITRATES[1 if first.mpeg1 else 2]
    own = first.with_bitrate_index(table.index(first.kbps))
    # the stream's own bitrate, with the byte count if it fits, else without; else the lowest that fits
    lowest = ((first.with_bitrate_index(i), stream_bytes) for i in range(1, len(table)))
    tries = [(own, stream_bytes), (own, 0), *lowest]
    for header, counted in tries:
        if 4 + header.side_info_bytes + (16 if counted else 12) + LAME_EXTENSION <= header.size:
            break
    else:  # pragma: no cover - the highest bitrate of every rate holds the tag
        raise GaplessError(f"no frame at {first.sample_rate_hz} Hz holds the tag")
    flags = XING_FRAMES | (XING_BYTES if counted else 0)
    total = header.size + counted if counted else 0
    body = bytearray(header.size)
    struct.pack_into(">I", body, 0, header.word)
    at = 4 + header.side_info_bytes  # the side information stays zero: the frame is silence
    counts = [audio_frames, total] if flags & XING_BYTES else [audio_frames]
    xing_bytes = b"Info" + struct.pack(f">I{len(counts)}I", flags, *counts)
    body[at : at + len(xing_bytes)] = xing_bytes
    at += len(xing_bytes)
    extension = (
        ENCODER_NAME
        + bytes([0x01, 0])  # tag revision 0, CBR; no lowpass recorded
        + bytes(8)  # no ReplayGain peak, radio or audiophile gain
        + bytes([0, min(first.kbps, 255)])  # no encoding flags, ATH 0; the bitrate
        + ((ENCODER_DELAY << 12) | padding).to_bytes(3, "big")
        + bytes(4)  # misc, MP3 gain, preset and surround: none
        + struct.pack(">IH", total, 0)  # music length (0: unknown ahead), music CRC (not known ahead)
    )
    body[at : at + len(extension)] = extension
    at += len(extension)
    struct.pack_into(">H", body, at, crc16(bytes(body[:at])))
    return bytes(body)


@dataclass(frozen=True, slots=True)
class GaplessInfo:
    """What a tag frame says: the samples to drop at the start and how many to keep."""

    tag_bytes: int  # length of the tag frame (the audio frames follow)
    delay: int  # encoder delay, samples
    padding: int
    frames: int  # audio frames after the tag frame
    samples_per_frame: int
    stream_bytes: int = 0  # the whole stream's length as the tag states it (0: not stated)

    @property
    def samples(self) -> int:
        return self.frames * self.samples_per_frame - self.delay - self.padding


def read_info(data: bytes) -> GaplessInfo | None:
    """The gapless information of an MP3 stream's first frame (Xing/Info with a LAME extension
    and its frame count), or None when it has none (streams written before tags were)."""
    at = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # an ID3v2 tag first: its size is syncsafe
        at = 10 + sum((data[6 + i] & 0x7F) << (7 * (3 - i)) for i in range(4))
    try:
        header = FrameHeader.parse(data, at)
    except GaplessError:
        return None
    frame = data[at : at + header.size]
    xing = 4 + header.side_info_bytes
    if len(frame) < header.size or frame[xing : xing + 4] not in (b"Info", b"Xing"):
        return None
    (flags,) = struct.unpack_from(">I", frame, xing + 4)
    pos, frames, stream_bytes = xing + 8, 0, 0
    if flags & XING_FRAMES:
        (frames,) = struct.unpack_from(">I", frame, pos)
        pos += 4
    if flags & XING_BYTES:
        (stream_bytes,) = struct.unpack_from(">I", frame, pos)
        pos += 4
    pos += 100 * bool(flags & 0x4) + 4 * bool(flags & 0x8)  # a table of contents, a VBR quality
    extension = frame[pos : pos + LAME_EXTENSION]
    if not frames or len(extension) < LAME_EXTENSION or extension[:4] not in (b"LAME", b"Lavf", b"Lavc"):
        return None
    value = int.from_bytes(extension[21:24], "big")
    spf = header.samples_per_frame
    info = GaplessInfo(at + header.size, value >> 12, value & MAX_PADDING, frames, spf, stream_bytes)
    return info if info.samples >= 0 else None


class FrameCounter:
    """Counts whole MP3 frames in a stream fed in arbitrary pieces."""

    def __init__(self) -> None:
        self.frames = 0
        self._pending = b""

    def feed(self, data: bytes) -> None:
        buffer = self._pending + data
        view, at = memoryview(buffer), 0
        while len(buffer) - at >= 4:
            size = FrameHeader.parse(view, at).size
            if len(buffer) - at < size:
                break
            at += size
            self.frames += 1
        self._pending = bytes(view[at:])

    def finish(self) -> int:
        if self._pending:
            raise GaplessError(f"the MP3 stream ends inside a frame ({len(self._pending)} bytes left)")
        return self.frames


def with_tag(stream: bytes, input_samples: int) -> bytes:
    """``stream`` with a gapless tag in front if it has none (an MP3 stored before tags were
    written, of about ``input_samples`` samples encoded by LAME: a length rounded to the
    millisecond will do); a tagged stream, or one whose frame count is not LAME's for that
    length (give or take a frame), is returned as it is."""
    if read_info(stream) is not None:
        return stream
    try:
        first = FrameHeader.parse(stream)
        counter = FrameCounter()
        counter.feed(stream)
        frames = counter.finish()
    except GaplessError:
        return stream
    if abs(frames - lame_frames(input_samples, first.samples_per_frame)) > 1:
        return stream
    try:
        return info_frame(first, input_samples, frames) + stream
    except GaplessError:
        return stream
