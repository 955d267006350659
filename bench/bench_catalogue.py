"""Catalogue benchmark: batched inserts and searches over N synthetic calls.

Prints one JSON line (rates per second, times in ms). Usage (from the repository root):

    .venv/bin/python bench/bench_catalogue.py [--rows 100000] [--batch 1000] [--seed 7]

Calls are spread over 90 days from 2026-09-01 (about 1,100 a day), each with two legs and six
SIP events; callers are Luxembourg mobile numbers drawn from 20,000 subscribers, callees
three-digit extensions. Search figures are the median of repeated runs (ms).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from callrec.store.access.principals import Principal  # noqa: E402
from callrec.store.catalogue.db import CallRecord, Catalogue, parse_when  # noqa: E402
from callrec.store.catalogue.query import CallFilter  # noqa: E402

START_NS = parse_when("2026-09-01")
SPAN_NS = 90 * 86_400 * 1_000_000_000
QUEUES = ["sales", "support", "billing", "claims", "advice", "switchboard"]
NAMES = ["Alice Martin", "Bob Weber", "Chloé Muller", "David Schmit", "Emma Hoffmann", "Félix Klein"]


def synthetic_calls(rows: int, seed: int) -> Iterator[CallRecord]:
    """Deterministic calls in start order."""
    rng = random.Random(seed)
    subscribers = [f"+3526{rng.randrange(10**7, 10**8)}" for _ in range(20_000)]
    step = SPAN_NS // rows
    for n in range(rows):
        started = START_NS + n * step + rng.randrange(step)
        caller, callee = rng.choice(subscribers), str(rng.randrange(100, 1000))
        call = {
            "call_id": f"{rng.getrandbits(64):016x}@pbx.example.lu",
            "started_ns": started,
            "duration_s": rng.uniform(5, 600),
            "caller": caller,
            "callee": callee,
            "caller_uri": f"sip:{caller}@pbx.example.lu",
            "callee_uri": f"sip:{callee}@pbx.example.lu",
            "request_uri": f"sip:{callee}@10.0.0.5",
            "caller_display": rng.choice(NAMES),
            "callee_display": f"Desk {callee}",
            "state": rng.choice(["completed"] * 8 + ["cancelled", "rejected"]),
            "codecs": "PCMA",
            "source": "bench.pcap",
            "queue": rng.choice(QUEUES),
            "direction": rng.choice(["inbound", "inbound", "outbound", "internal"]),
        }
        legs = [
            {
                "direction": d,
                "codec": "PCMA",
                "packets": 3000,
                "expected": 3000,
                "lost": 0,
                "ssrc": rng.getrandbits(32),
            }
            for d in ("caller->callee", "callee->caller")
        ]
        events = [
            {"ts_ns": started + i * 1_000_000, "kind": "sip", "summary": s, "sender": "caller"}
            for i, s in enumerate(["INVITE", "100 Trying", "180 Ringing", "200 OK", "ACK", "BYE"])
        ]
        yield CallRecord(call, legs, events)


def median_ms(action: Callable[[], Any], repeat: int = 30) -> float:
    """Median wall time of ``action`` in milliseconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        action()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    records = list(synthetic_calls(args.rows, args.seed))
    with tempfile.TemporaryDirectory() as tmp:
        catalogue = Catalogue(Path(tmp) / "catalogue.db")
        t0 = time.perf_counter()
        for i in range(0, len(records), args.batch):
            catalogue.add_calls(records[i : i + args.batch])
        insert_s = time.perf_counter() - t0
        some = records[len(records) // 2].call
        supervisor = Principal(
            name="alice",
            role="supervisor",
            queues=("sales",),
            extensions=("2??",),
            bootstrap=False,
            acting_for=None,
        )
        number, day = str(some["caller"]), "2026-10-15"
        stored_rows = sum(1 + len(r.legs) + len(r.events) for r in records)
        figures = {
            "calls": args.rows,
            "batch": args.batch,
            "insert_calls_per_s": round(args.rows / insert_s),
            "insert_rows_per_s": round(stored_rows / insert_s),  # calls + legs + events
            "number_hits": catalogue.count(number=number),
            "search_number_ms": median_ms(lambda: catalogue.search(number=number)),
            "search_number_suffix_ms": median_ms(lambda: catalogue.search(number=number[-6:])),
            "day_hits": catalogue.count(since=day, until=day),
            "search_date_range_ms": median_ms(lambda: catalogue.search(since=day, until=day)),
            "search_date_range_number_ms": median_ms(
                lambda: catalogue.search(since=day, until=day, number=number[-6:])
            ),
            "search_unselective_number_ms": median_ms(lambda: catalogue.search(number="+3526", limit=100)),
            "search_text_ms": median_ms(lambda: catalogue.search(text="chloé mul", limit=100)),
            "search_words_queue_ms": median_ms(
                lambda: catalogue.search(
                    spec=CallFilter(text="alice support", direction="inbound"), limit=100
                )
            ),
            "search_supervisor_scope_ms": median_ms(
                lambda: catalogue.search(spec=CallFilter(text="chloé", scope=supervisor.scope_condition("c")))
            ),
            "search_supervisor_number_ms": median_ms(
                lambda: catalogue.search(
                    spec=CallFilter(number=number, scope=supervisor.scope_condition("c"))
                )
            ),
            "count_day_ms": median_ms(lambda: catalogue.count(since=day, until=day)),
            "get_call_ms": median_ms(lambda: catalogue.get_call(args.rows // 2)),
        }
        catalogue.close()
        figures["db_mib"] = round((Path(tmp) / "catalogue.db").stat().st_size / 2**20, 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
