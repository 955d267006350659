"""The running capture's control socket: ``callrec status`` and ``callrec calls record|pause|resume``.

A Unix stream socket (default ``<home>/run/control.sock``, mode 0660: the callrec user and its group).
One request per connection: a JSON object on one line, answered by one JSON line, then the
connection closes. Requests::

    {"command": "status"}
    {"command": "signal", "call": "<Call-ID, caller or callee>", "action": "start|stop|pause|resume"}

Answers are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``. The server knows who asks
from the socket itself (``SO_PEERCRED``: the peer's uid, turned into a login name), never from the
request, so the capture can check the callrec role of that user and audit what was asked.

The server never blocks the capture loop: :meth:`ControlServer.serve` accepts what is pending, reads
each request with a short deadline, answers and returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import select
import socket
import stat
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
READ_DEADLINE_S = 0.5


class ControlError(RuntimeError):
    """The control socket cannot be used (no capture running, refused, a broken answer)."""


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"


Handler = Callable[[Mapping[str, Any], Peer], dict[str, Any]]


class ControlServer:
    def __init__(self, path: Path, handler: Handler, mode: int = 0o660) -> None:
        self.path = path
        self.handler = handler
        self.mode = mode
        self._socket: socket.socket | None = None

    def open(self) -> None:
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                raise ControlError(f"{self.path} exists and is not a socket: not replacing it")
            if _answers(self.path):
                raise ControlError(f"another capture is running: {self.path} answers")
            self.path.unlink()  # left behind by a capture that crashed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o777 & ~self.mode)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, self.mode)
        sock.listen(16)
        sock.setblocking(False)
        self._socket = sock

    def fileno(self) -> int:
        return self._socket.fileno() if self._socket is not None else -1

    def serve(self) -> int:
        """Answer every connection waiting now; returns how many were answered."""
        if self._socket is None:
            return 0
        answered = 0
        while True:
            try:
                conn, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                return answered
            with conn:
                self._answer(conn)
                answered += 1

    def _answer(self, conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        peer = Peer(*struct.unpack("3i", creds))
        try:
            request = _read_line(conn, time.monotonic() + READ_DEADLINE_S)
            message = json.loads(request)
            if not isinstance(message, dict):
                raise ValueError("a request is a JSON object")
            reply = self.handler(message, peer)
        except (ValueError, TimeoutError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Exception as exc:  # the capture goes on whatever one request does
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            log.warning("control request failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(OSError):
            conn.setblocking(True)
            conn.settimeout(READ_DEADLINE_S)
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _read_line(conn: socket.socket, deadline: float) -> bytes:
    conn.setblocking(False)
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete request line in time")
        poller = select.poll()  # not select(): the capture holds thousands of descriptors (spill files)
        poller.register(conn, select.POLLIN)
        if not poller.poll(left * 1000):
            continue
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
    return data.split(b"\n", 1)[0]


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def request(path: Path, message: Mapping[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to the capture at ``path``; its answer, or :class:`ControlError`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlError(f"no capture is running here ({path} does not exist)") from None
        except PermissionError:
            raise ControlError(f"not allowed to talk to the capture ({path}: permission denied)") from None
        except OSError as exc:
            raise ControlError(f"the capture does not answer at {path}: {exc.strerror or exc}") from None
        try:
            sock.sendall(json.dumps(dict(message)).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as exc:
            raise ControlError(f"the capture stopped answering at {path}: {exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ControlError(f"the capture at {path} sent an unreadable answer") from None
    if not isinstance(reply, dict):
        raise ControlError(f"the capture at {path} sent an unreadable answer")
    return reply
