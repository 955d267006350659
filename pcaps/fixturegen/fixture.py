"""One fixture (a capture and its calls' ground truth), the scenario interface, and the files."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .capfile import write_pcap, write_pcapng
from .constants import PLACEMENT_TOLERANCE_S, RATE
from .frames import Capture


@dataclass
class Fixture:
    name: str
    description: str
    capture: Capture
    calls: list[dict]
    ext: str = "pcap"
    interfaces: list[tuple[int, int, str]] | None = None  # pcapng: (linktype, tsresol, name)


class Scenario(Protocol):
    key: str  # what --only accepts besides the fixture's name

    def build(self, index: int) -> Fixture: ...


@dataclass(frozen=True)
class Custom:
    """A scenario that is its own function (index -> Fixture)."""

    key: str
    make: Callable[[int], Fixture]

    def build(self, index: int) -> Fixture:
        return self.make(index)


def write_fixture(fx: Fixture, out_dir: Path) -> list[Path]:
    capture_name = f"{fx.name}.{fx.ext}"
    frames = fx.capture.sorted_frames()
    cap_path = out_dir / capture_name
    if fx.ext == "pcapng":
        assert fx.interfaces is not None
        write_pcapng(cap_path, frames, fx.interfaces)
    else:
        write_pcap(cap_path, frames, fx.capture.link.linktype)
    expected = {
        "description": fx.description,
        "capture": capture_name,
        "sample_rate": RATE,
        "placement_tolerance_s": PLACEMENT_TOLERANCE_S,
        "calls": fx.calls,
    }
    exp_path = out_dir / f"{fx.name}.expected.json"
    exp_path.write_text(json.dumps(expected, indent=1) + "\n", encoding="utf-8")
    return [cap_path, exp_path]
