"""The capture's control socket (recorder.live.control_socket) in-process: one request answered while the
process
holds more than 1,024 descriptors, as a live capture does with its spill files open (select() cannot
wait on a descriptor that high; the server must not use it)."""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path
from typing import Any

import pytest

from callrec.recorder.live.control_socket import ControlServer, Peer, request


@pytest.fixture
def many_descriptors() -> Any:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2048
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError) as exc:
            pytest.fail(f"cannot raise the descriptor limit to {want} for this test: {exc}")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        yield held
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_request_is_answered_above_descriptor_1024(tmp_path: Path, many_descriptors: list[int]) -> None:
    assert max(many_descriptors) > 1024
    seen: list[tuple[dict[str, Any], Peer]] = []

    def handler(message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        seen.append((message, peer))
        return {"ok": True, "echo": message["ping"]}

    server = ControlServer(tmp_path / "run" / "control.sock", handler)
    server.open()
    answers: list[dict[str, Any]] = []
    client = threading.Thread(target=lambda: answers.append(request(server.path, {"ping": 7}, timeout_s=10)))
    try:
        client.start()
        for _ in range(1000):
            if server.serve():
                break
            client.join(timeout=0.01)
        client.join(timeout=10)
    finally:
        server.close()
    assert answers == [{"ok": True, "echo": 7}]
    assert seen[0][1].pid == os.getpid() and seen[0][1].uid == os.getuid()
