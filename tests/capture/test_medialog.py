"""The tracker's data structures: the media log (split per leg, ending legs taken out in one pass) and
the correlator's binding tables (sorted mirror plus overlay)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.capture.model.media import RtpPackets
from callrec.capture.streams.correlate import NO_LEG, BindingTable
from callrec.capture.streams.medialog import MediaLog


def test_media_log_splits_per_leg_in_arrival_order() -> None:
    def chunk(seqs: list[int]) -> RtpPackets:
        n = len(seqs)
        z = np.array(seqs, dtype=np.int64)
        payload = np.repeat(z.astype(np.uint8), 4)
        return RtpPackets(z, z, z, z, z, np.zeros(n, bool), payload, np.arange(n) * 4, np.full(n, 4))

    log = MediaLog()
    log.append(np.array([1, 2, 1]), chunk([10, 20, 11]))
    log.append(np.array([2, 1]), chunk([21, 12]))
    assert log.count == 5
    assert [p.seq.tolist() for p in log.take(1)] == [[10, 11], [12]]
    pieces = dict(log.split())
    assert pieces[1].seq.tolist() == [10, 11, 12] and pieces[2].seq.tolist() == [20, 21]
    assert pieces[2].payload_bytes(1) == bytes([21]) * 4
    assert log.count == 0 and log.split() == []


@given(
    st.lists(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 64)), min_size=1, max_size=12), max_size=8),
    st.sets(st.integers(0, 6)),
)
@settings(max_examples=200, deadline=None)
def test_media_log_takes_ending_legs_without_disturbing_the_rest(
    chunks: list[list[tuple[int, int]]], ending: set[int]
) -> None:
    """take_legs gives each ending leg what take gives, in arrival order; a later split still gives
    every other leg exactly its packets (the ending legs' rows are dropped with them in the tracker)."""

    def make(rows: list[tuple[int, int]], base: int) -> tuple[np.ndarray, RtpPackets]:
        legs = np.array([leg for leg, _ in rows], dtype=np.int64)
        sizes = np.array([size for _, size in rows], dtype=np.int64)
        seq = base + np.arange(len(rows), dtype=np.int64)
        offsets = np.concatenate(([0], np.cumsum(sizes)[:-1]))
        payload = np.concatenate(
            [np.full(n, (base + i) % 251, np.uint8) for i, n in enumerate(sizes.tolist())]
        )
        packets = RtpPackets(seq, seq, seq, legs, seq, seq % 2 == 0, payload, offsets, sizes)
        return legs, packets

    def expected(leg: int) -> list[tuple[int, bytes]]:
        out = []
        for legs, packets in made:
            for i in np.flatnonzero(legs == leg).tolist():
                out.append((int(packets.seq[i]), packets.payload_bytes(i)))
        return out

    log, made = MediaLog(), []
    for n, rows in enumerate(chunks):
        made.append(make(rows, 1000 * n))
        log.append(*made[-1])
    taken = log.take_legs(ending)
    assert set(taken) == {leg for leg in ending if expected(leg)}
    for leg, got in taken.items():
        assert listing(got) == expected(leg)
        assert got.payload.shape[0] == sum(len(b) for _, b in expected(leg))  # compact: no other leg's bytes
    for leg, packets in log.split():
        assert listing(packets) == expected(leg)


def listing(packets: RtpPackets) -> list[tuple[int, bytes]]:
    return [(int(packets.seq[i]), packets.payload_bytes(i)) for i in range(len(packets))]


@given(
    st.lists(
        st.tuples(st.sampled_from(["bind", "unbind", "lookup"]), st.integers(0, 40), st.integers(0, 5)),
        max_size=900,
    )
)
@settings(max_examples=60, deadline=None)
def test_binding_table_answers_like_its_dict(ops: list[tuple[str, int, int]]) -> None:
    """Through mirror rebuilds and the overlay of recent changes, a lookup is what the dict says."""
    table, truth = BindingTable(), {}
    probe = np.arange(45, dtype=np.uint64)
    for op, key, leg in ops:
        if op == "bind":
            table.bind(key, leg)
            truth[key] = leg
        elif op == "unbind":
            table.unbind(key, leg)
            if truth.get(key) == leg:
                del truth[key]
        else:
            assert table.lookup(probe).tolist() == [truth.get(k, NO_LEG) for k in range(45)]
    assert table.lookup(probe).tolist() == [truth.get(k, NO_LEG) for k in range(45)]
