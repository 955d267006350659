"""Wiring a capture service together and running it until it is stopped: the packet source for
mirror ports or a replayed file, the service, and the signals that stop and reload it."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from pathlib import Path

from callrec.capture.sources.base import PacketSource
from callrec.capture.sources.interfaces import LiveConfig, LiveSource
from callrec.capture.sources.replay import ReplaySource
from callrec.recorder.config import Config
from callrec.recorder.live.notify import Notifier
from callrec.recorder.live.service import CaptureService
from callrec.recorder.live.state import LiveOptions
from callrec.store.home import Home

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``512M``, ``2G``, ``64k``, ``1024`` (binary units, an optional ``B`` or ``iB``) as bytes;
    :class:`ValueError` naming the text otherwise."""
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS else ""
    try:
        size = int(float(value[: len(value) - len(unit)]) * _SIZE_UNITS[unit])
    except (ValueError, OverflowError):
        raise ValueError(f"{text!r} is not a size such as 512M or 2G") from None
    if size < 0:
        raise ValueError(f"{text!r} is not a size such as 512M or 2G")
    return size


def open_source(
    interfaces: Sequence[str],
    replay: Path | None,
    *,
    speed: float = 1.0,
    buffer_bytes: int = 128 << 20,
    bpf_filter: str | None = None,
) -> PacketSource:
    """Rings on ``interfaces`` (mirror ports), or ``replay`` paced at ``speed`` (0: as fast as it
    reads). Raises ``CaptureSetupError`` or ``FilterError`` (one line each) when that cannot be had."""
    if bool(interfaces) == (replay is not None):
        raise ValueError("give interfaces or a capture file to replay, not both")
    if replay is not None:
        return ReplaySource(replay, speed=speed)
    return LiveSource(list(interfaces), LiveConfig(buffer_bytes=buffer_bytes, filter=bpf_filter or None))


def start_service(
    home: Home, source: PacketSource, load_config: Callable[[], Config], options: LiveOptions
) -> CaptureService:
    """A started service (store open, configuration read, journal recovered, control socket open),
    with SIGTERM and SIGINT stopping it and SIGHUP reloading its configuration. The source is closed
    when starting fails (``ConfigError`` for a broken configuration, or any other error)."""
    service = CaptureService(home, source, load_config, options, notifier=Notifier())
    try:
        service.start()
    except BaseException:
        source.close()
        raise
    signal.signal(signal.SIGTERM, lambda *_: service.stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: service.stop("SIGINT"))
    signal.signal(signal.SIGHUP, lambda *_: service.request_reload())
    return service
