#!/usr/bin/env python3
"""Synthetic SIP/RTP captures with ground truth, for Callrec's tests.

    python pcaps/make_fixtures.py [--out DIR] [--only NAME ...] [--list]

Writes, for every scenario in ``fixturegen.scenarios.SCENARIOS``, ``NAME.pcap`` (or
``NAME.pcapng``) and ``NAME.expected.json`` into ``pcaps/fixtures/`` (or DIR). The output is
reproducible byte for byte: fixed timestamps (no clock), fixed seeds, own PRNG (xorshift32),
signals computed with integer arithmetic or ``math.sin`` on exactly reduced arguments, own G.711
encoders, own pcap/pcapng writers. scapy only builds the frames (Ethernet, 802.1Q, 802.1ad,
Linux SLL, IPv4, IPv6, UDP); every field that scapy would otherwise choose is set.

Media: every leg sends 20 ms packets (160 samples, 8 kHz G.711) of a known signal, numbered by
RTP time: sample ``n`` of a leg is the ``n``-th sample after the RTP timestamp of the leg's
first packet. Arrival times are the nominal packet times plus a small non-negative jitter (0 for
the leg's first packet and every 5th packet), so a recorder that places audio by RTP timestamp
puts sample ``n`` exactly at ``origin_s + n / 8000``.

The signals are in ``fixturegen.signals`` (:func:`signal_samples`), the G.711 encoders and the
decoded reference in ``fixturegen.g711`` (:func:`decoded_reference`), the schema of
expected.json in ``fixturegen.expected``. This module re-exports what the tests use as the
reference, so it can be loaded from its path on its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # loaded from its path (the tests): make fixturegen importable
    sys.path.insert(0, str(_HERE))

from fixturegen.g711 import CODECS, alaw2lin, decoded_reference, lin2alaw, lin2ulaw, ulaw2lin  # noqa: E402
from fixturegen.signals import signal_samples  # noqa: E402

__all__ = [
    "CODECS",
    "alaw2lin",
    "decoded_reference",
    "lin2alaw",
    "lin2ulaw",
    "main",
    "signal_samples",
    "ulaw2lin",
]


def main(argv: list[str] | None = None) -> int:
    from fixturegen.fixture import write_fixture
    from fixturegen.scenarios import SCENARIOS, build

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=_HERE / "fixtures")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to (re)generate")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for idx in range(len(SCENARIOS)):
            fx = build(idx)
            print(f"{fx.name:22s} {fx.description}")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    total = 0
    for idx, scenario in enumerate(SCENARIOS):
        fx = build(idx)
        if args.only and fx.name not in args.only and scenario.key not in args.only:
            continue
        for path in write_fixture(fx, args.out):
            size = path.stat().st_size
            total += size
            print(f"{size:9d}  {path}")
    print(f"{total:9d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
