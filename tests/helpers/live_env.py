"""Run ``callrec capture`` as a real process for tests: start, wait for a log line, signal, stop.

The process is ours (started here, ended by its PID only); its stdout and stderr go to a log file
that the helpers poll, so a test never blocks on a pipe.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def callrec_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "callrec.cli.main", *args]


def run_callrec(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        callrec_command("--home", str(home), *args), cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    if check and done.returncode != 0:
        raise AssertionError(f"callrec {' '.join(args)} exited {done.returncode}: {done.stderr}{done.stdout}")
    return done


class Capture:
    """One ``callrec --home HOME capture ARGS`` process."""

    def __init__(
        self,
        home: Path,
        args: Sequence[str],
        log: Path,
        prefix: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.log_path = log
        self._log = open(log, "w", encoding="utf-8")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            [*prefix, *callrec_command("--home", str(home), "capture", *args)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, text: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"capture exited {self.process.returncode} before {text!r}:\n{self.log}")
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout_s} s:\n{self.log}")

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def wait(self, timeout_s: float = 60.0) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self._log.close()

    def stop(self) -> None:
        """End the process if it still runs (SIGTERM, then SIGKILL) - by its PID only."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()

    def status(self) -> dict[str, Any]:
        done = run_callrec(self.home, "status", "--json")
        reply: dict[str, Any] = json.loads(done.stdout)
        return reply


def calls_json(home: Path) -> list[dict[str, Any]]:
    listed = json.loads(run_callrec(home, "calls", "list", "--json").stdout)
    return [json.loads(run_callrec(home, "calls", "show", str(c["id"]), "--json").stdout) for c in listed]
