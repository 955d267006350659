"""A ctypes binding to libopus's decoder: the way to in-band FEC and packet-loss concealment.

PyAV's Opus decoders (FFmpeg's native ``opus`` and ``libopus``) have no FEC API and are never told
that a packet is missing: ``opus_decode(..., decode_fec=1)`` and ``opus_decode(NULL, ...)`` are
libopus calls only. This module binds the five functions needed, nothing else.

Which library: PyAV's manylinux wheels ship their own libopus (``av.libs/libopus-<hash>.so.0.*``,
libopus 1.6.1 with av 18.1) for libavcodec, so it is on every machine that has PyAV and is loaded
first, by path (it is already mapped into the process once libavcodec is, so this costs nothing).
Else the system library (Debian ``libopus0``, found by ``ctypes.util.find_library("opus")``). If
neither loads, :func:`load` returns ``None`` and Opus falls back to PyAV (no FEC, no PLC).
``opus_packet_has_lbrr`` (libopus >= 1.5) is optional: it only tells whether a repair used FEC.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import os
import weakref
from functools import cache

OPUS_OK = 0
RATE_HZ = 48000
MAX_FRAME_SAMPLES = 5760  # 120 ms at 48 kHz, the longest Opus packet


class LibOpus:
    """The loaded library with typed entry points."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        self.path = path
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_decoder_destroy.restype = None
        # (state, data or NULL, length, pcm out, frame_size, decode_fec) -> samples or error < 0
        lib.opus_decode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_get_version_string.argtypes = []
        lib.opus_get_version_string.restype = ctypes.c_char_p
        self.version = (lib.opus_get_version_string() or b"").decode("ascii", "replace")
        self.opus_decode = lib.opus_decode
        self.has_lbrr = getattr(lib, "opus_packet_has_lbrr", None)
        if self.has_lbrr is not None:
            self.has_lbrr.argtypes = [ctypes.c_void_p, ctypes.c_int32]
            self.has_lbrr.restype = ctypes.c_int
        self._lib = lib

    def create(self, channels: int = 1) -> int:
        """A new decoder state at 48 kHz with ``channels`` output channels (freed by :func:`free`)."""
        error = ctypes.c_int(0)
        state = self._lib.opus_decoder_create(RATE_HZ, channels, ctypes.byref(error))
        if error.value != OPUS_OK or not state:
            raise RuntimeError(f"opus_decoder_create failed ({error.value})")
        return int(state)

    def free(self, state: int) -> None:
        self._lib.opus_decoder_destroy(state)


def candidates() -> list[str]:
    """Library paths to try, best first: PyAV's bundled copy, then the system's."""
    found: list[str] = []
    spec = importlib.util.find_spec("av")
    if spec is not None and spec.origin:
        site = os.path.dirname(os.path.dirname(spec.origin))
        found += sorted(glob.glob(os.path.join(site, "av.libs", "libopus*.so*")), reverse=True)
    system = ctypes.util.find_library("opus")
    if system:
        found.append(system)
    return found


@cache
def load(path: str | None = None) -> LibOpus | None:
    """The library at ``path``, else the first of :func:`candidates` that loads; ``None`` if none does."""
    for candidate in [path] if path else candidates():
        try:
            return LibOpus(candidate)
        except (OSError, AttributeError):
            continue
    return None


class DecoderState:
    """One libopus decoder, destroyed when this object is collected."""

    def __init__(self, lib: LibOpus, channels: int = 1) -> None:
        self.lib = lib
        self.handle = lib.create(channels)
        self._finalizer = weakref.finalize(self, lib.free, self.handle)
