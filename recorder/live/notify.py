"""What the live capture tells the outside: systemd (readiness, watchdog, status line) and Prometheus.

systemd (``Type=notify``): datagrams to ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract
namespace), as ``sd_notify(3)`` describes: ``READY=1`` once the capture is open and the store checked,
``WATCHDOG=1`` from the main loop at least twice per ``$WATCHDOG_USEC``, ``STATUS=...`` a one-line
summary, ``RELOADING=1`` / ``READY=1`` around a reload, ``STOPPING=1`` at shutdown. Without
``$NOTIFY_SOCKET`` (a foreground run) nothing is sent.

Metrics: the Prometheus text format (version 0.0.4) written to a file, atomically, for the node
exporter's textfile collector (``--metrics-file /var/lib/prometheus/node-exporter/callrec.prom``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path


class Notifier:
    """``sd_notify`` without libsystemd: one datagram per message; errors are ignored (systemd gone)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        target = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if target.startswith("@"):
            self.address = b"\0" + target[1:].encode()
        elif target.startswith("/"):
            self.address = target
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watched = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_interval_s = int(usec) / 2e6 if watched else None
        self._last_watchdog = 0.0
        self._socket: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> None:
        if self.address is None:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto("\n".join(fields).encode(), self.address)
        except OSError:
            pass

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        """``WATCHDOG=1`` if the interval asks for it (call from the main loop as often as you like)."""
        if self.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog >= self.watchdog_interval_s:
            self._last_watchdog = now
            self.send("WATCHDOG=1")

    def reloading(self) -> None:
        monotonic_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_us}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


Metric = tuple[str, str, str, Iterable[tuple[Mapping[str, str], float]]]  # name, type, help, samples


def prometheus_text(metrics: Iterable[Metric]) -> str:
    """The exposition text of ``(name, type, help, [(labels, value), ...])`` metrics."""
    lines: list[str] = []
    for name, kind, help_text, samples in metrics:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            shown = (
                repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))
            )
            lines.append(f"{name}{{{label_text}}} {shown}" if label_text else f"{name} {shown}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` atomically (the collector never reads half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
