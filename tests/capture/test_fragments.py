"""capture.frames.fragments.Reassembler: order, duplicates, overlaps, bounds and timeouts."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.frames.fragments import MAX_DATAGRAM, Reassembled, Reassembler

NS = 1_000_000_000
DATA = bytes(range(256)) * 10  # 2560 bytes


def pieces(data: bytes, size: int) -> list[tuple[int, bool, bytes]]:
    """(offset, more, bytes) fragments of ``size`` bytes (a multiple of 8)."""
    return [
        (start, start + size < len(data), data[start : start + size]) for start in range(0, len(data), size)
    ]


def feed(
    r: Reassembler, frags: list[tuple[int, bool, bytes]], key: Hashable = "k", ts: int = 0, proto: int = 17
) -> list[Reassembled]:
    out = []
    for offset, more, chunk in frags:
        got = r.add(key, offset, more, chunk, proto, ts)
        if got is not None:
            out.append(got)
    return out


def test_in_order() -> None:
    r = Reassembler()
    assert feed(r, pieces(DATA, 1000)) == [Reassembled(17, DATA)]
    assert r.counters == Counter(ip_fragment_pending=2, reassembled=1)
    assert r.pending == 0 and r.pending_bytes == 0


@settings(max_examples=200, deadline=None)
@given(size=st.sampled_from([8, 64, 512, 1480]), seed=st.randoms(use_true_random=False))
def test_any_order_gives_the_same_datagram(size: int, seed: random.Random) -> None:
    frags = pieces(DATA, size)
    seed.shuffle(frags)
    r = Reassembler()
    assert feed(r, frags) == [Reassembled(17, DATA)]
    assert r.pending == 0 and r.pending_bytes == 0


def test_protocol_comes_from_the_first_fragment() -> None:
    r = Reassembler()
    frags = pieces(DATA, 1024)
    r.add("k", *frags[2][:2], frags[2][2], 99, 0)
    r.add("k", *frags[0][:2], frags[0][2], 6, 0)
    assert r.add("k", *frags[1][:2], frags[1][2], 99, 0) == Reassembled(6, DATA)


def test_keys_are_independent() -> None:
    r = Reassembler()
    a, b = pieces(DATA, 1024), pieces(DATA[::-1], 1024)
    out = (
        feed(r, [a[0]], key=1) + feed(r, [b[0], b[1]], key=2) + feed(r, a[1:], key=1) + feed(r, b[2:], key=2)
    )
    assert out == [Reassembled(17, DATA), Reassembled(17, DATA[::-1])]


def test_exact_duplicate_is_ignored() -> None:
    r = Reassembler()
    frags = pieces(DATA, 1024)
    assert feed(r, [frags[0], frags[0], frags[2], frags[2], frags[1]]) == [Reassembled(17, DATA)]
    assert r.counters["fragment_duplicate"] == 2


@pytest.mark.parametrize(
    "overlap",
    [
        (512, True, DATA[512:1536]),  # straddles the first and second fragments
        (0, True, DATA[:512]),  # same start, different length
        (1016, True, DATA[1016:1032]),
    ],  # eight bytes into the next fragment
)
def test_overlap_drops_the_datagram(overlap: tuple[int, bool, bytes]) -> None:
    r = Reassembler()
    frags = pieces(DATA, 1024)
    assert feed(r, [frags[0], frags[1], overlap]) == []
    assert r.counters["fragment_overlap"] == 1 and r.pending == 0 and r.pending_bytes == 0
    # What comes later starts a new datagram, which these fragments alone cannot complete.
    assert feed(r, [frags[2]]) == []
    assert r.pending == 1


def test_same_place_different_bytes_counts_as_duplicate_and_first_copy_wins() -> None:
    # As Linux does: a fragment at exactly the place of one held is a duplicate, not compared.
    r = Reassembler()
    frags = pieces(DATA, 1024)
    evil = (1024, True, b"X" * 1024)
    assert feed(r, [frags[0], frags[1], evil, frags[2]]) == [Reassembled(17, DATA)]
    assert r.counters["fragment_duplicate"] == 1


def test_partial_overlap_that_would_change_the_payload_is_not_recorded() -> None:
    r = Reassembler()
    frags = pieces(DATA, 1024)
    evil = (1536, True, b"X" * 1024)
    assert feed(r, [frags[0], frags[1], evil, frags[2]]) == []


@pytest.mark.parametrize(
    "bad",
    [
        (0, True, DATA[:100]),  # not a multiple of 8 but more follow
        (8, True, b""),  # empty non-last fragment
        (MAX_DATAGRAM - 8, False, DATA[:16]),  # ends past 65535
        (-8, True, DATA[:8]),
    ],
)
def test_invalid_fragments_are_counted(bad: tuple[int, bool, bytes]) -> None:
    r = Reassembler()
    assert feed(r, [bad]) == []
    assert r.counters == Counter(fragment_bad=1) and r.pending == 0


def test_conflicting_last_fragments_drop_the_datagram() -> None:
    r = Reassembler()
    frags = pieces(DATA, 1024)
    assert feed(r, [frags[0], frags[2], (2048, False, DATA[2048:2100])]) == []
    assert r.counters["fragment_bad"] == 1 and r.pending == 0
    assert feed(r, [frags[0], (1024, True, DATA[1024:2048]), (1024, False, DATA[1024:1032])]) == []
    assert r.counters["fragment_bad"] == 2  # last fragment ends before data already held


def test_fragment_past_the_known_end_drops_the_datagram() -> None:
    r = Reassembler()
    frags = pieces(DATA, 1024)
    assert feed(r, [frags[2], (4096, True, DATA[:8])]) == []
    assert r.counters["fragment_bad"] == 1


def test_timeout_uses_capture_time_only() -> None:
    r = Reassembler(timeout_ns=30 * NS)
    frags = pieces(DATA, 1024)
    r.add("old", *frags[0][:2], frags[0][2], 17, 0)
    r.add("new", *frags[0][:2], frags[0][2], 17, 10 * NS)
    # Exactly 30 s later the first datagram may still complete.
    assert feed(r, frags[1:], key="old", ts=30 * NS) == [Reassembled(17, DATA)]
    r.add("old2", *frags[0][:2], frags[0][2], 17, 31 * NS)
    r.expire(40 * NS + 1)
    assert r.counters["fragment_timeout"] == 1 and r.pending == 1
    assert feed(r, frags[1:], key="new", ts=41 * NS) == []  # too late: starts over, never completes


def test_max_pending_evicts_oldest_first() -> None:
    r = Reassembler(max_pending=3)
    frags = pieces(DATA, 1024)
    for k in range(5):
        r.add(k, *frags[0][:2], frags[0][2], 17, k)
    assert r.pending == 3 and r.counters["fragment_evicted"] == 2
    assert feed(r, frags[1:], key=0) == []  # evicted
    assert feed(r, frags[1:], key=4) == [Reassembled(17, DATA)]


def test_max_bytes_evicts_oldest_first() -> None:
    r = Reassembler(max_bytes=3000)
    frags = pieces(DATA, 1024)
    for k in range(4):
        r.add(k, *frags[0][:2], frags[0][2], 17, k)
    assert r.pending_bytes <= 3000 and r.pending == 2 and r.counters["fragment_evicted"] == 2
    assert feed(r, frags[1:], key=3) == [Reassembled(17, DATA)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 7), st.integers(0, 80), st.booleans(), st.integers(0, 64), st.integers(0, 100)
        ),
        max_size=60,
    )
)
def test_bounds_hold_under_random_fragments(ops: list[tuple[int, int, bool, int, int]]) -> None:
    r = Reassembler(max_pending=4, max_bytes=2000, timeout_ns=50)
    ts = 0
    for key, offset8, more, size8, step in ops:
        ts += step
        got = r.add(key, offset8 * 8, more, bytes(size8 * 8), 17, ts)
        assert r.pending <= 4 and 0 <= r.pending_bytes <= 2000
        if got is not None:
            assert len(got.payload) <= MAX_DATAGRAM
    r.clear()
    assert r.pending == 0 and r.pending_bytes == 0


def test_clear_counts_incomplete() -> None:
    r = Reassembler()
    feed(r, pieces(DATA, 1024)[:1], key=1)
    feed(r, pieces(DATA, 1024)[:2], key=2)
    r.clear()
    assert r.counters["fragment_incomplete"] == 2 and r.pending == 0
