"""The bench's network: two namespaces joined by a veth pair (documentation addresses, no routes), keys
for its homes, and ending its own processes by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

PASSPHRASE = "callrec live bench, not a secret"
SEND_DEV, CAP_DEV = "s0", "c0"


class SetupError(RuntimeError):
    pass


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise SetupError(f"ip {' '.join(args)}: {done.stderr.strip()}")


class Lab:
    """Two namespaces joined by a veth pair; removed by :meth:`close`."""

    def __init__(self) -> None:
        tag = os.getpid()
        self.send_ns, self.cap_ns = f"crb-send-{tag}", f"crb-cap-{tag}"
        self.made: list[str] = []

    def open(self) -> None:
        for ns in (self.send_ns, self.cap_ns):
            ip("netns", "add", ns)
            self.made.append(ns)
            for key in ("all", "default"):
                subprocess.run(
                    ["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv6.conf.{key}.disable_ipv6=1"],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
        ip(
            "link",
            "add",
            SEND_DEV,
            "netns",
            self.send_ns,
            "type",
            "veth",
            "peer",
            "name",
            CAP_DEV,
            "netns",
            self.cap_ns,
        )
        for ns, dev, host in ((self.send_ns, SEND_DEV, 1), (self.cap_ns, CAP_DEV, 2)):
            ip("-n", ns, "link", "set", dev, "arp", "off", "up")
            ip("-n", ns, "addr", "add", f"203.0.113.{host}/24", "dev", dev)  # documentation range, no routes

    def close(self) -> None:
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
        self.made.clear()


def make_keys(root: Path) -> tuple[Path, Path]:
    """One key set for the run: (keys directory to copy into each home, compliance key file)."""
    from callrec.store.crypto.keys import KeyDirectory

    KeyDirectory(root / "keys").init(root / "compliance.key", PASSPHRASE.encode(), time.time_ns())
    return root / "keys", root / "compliance.key"


def stop_process(process: subprocess.Popen[Any], timeout_s: float = 30.0) -> None:
    """End one of our processes by its PID: SIGTERM, then SIGKILL."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
