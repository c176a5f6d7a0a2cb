"""Results never depend on worker count, shard claim order, apply order or the drain algorithm."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.engine.workload import RULES, make_engine, run

ticks_strategy = st.integers(2, 40).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(
            st.lists(st.tuples(st.sampled_from(RULES), st.integers(0, n - 1)), max_size=60),
            min_size=1,
            max_size=4,
        ),
    )
)


@settings(max_examples=40, deadline=None)
@given(ticks_strategy, st.integers(0, 2**32))
def test_worker_count_invariance(case: tuple[int, list], seed: int) -> None:
    """1, 2, 4 and 8 workers, with scrambled shard claims, give identical commits, receipts and patches."""
    n, ticks = case
    baseline = run(make_engine(n, workers=1), ticks)
    for workers in (2, 4, 8):
        engine = make_engine(n, workers=workers, claim_rng=random.Random(seed + workers))
        assert run(engine, ticks) == baseline, workers
        engine.replay()  # and the recorded history replays to the same hashes


@settings(max_examples=30, deadline=None)
@given(ticks_strategy, st.integers(0, 2**32))
def test_apply_order_invariance(case: tuple[int, list], seed: int) -> None:
    """Calling apply in any order inside a tick yields the same tick (the drain order is canonical)."""
    n, ticks = case
    assert run(make_engine(n), ticks, random.Random(seed)) == run(make_engine(n), ticks)


@settings(max_examples=15, deadline=None)
@given(ticks_strategy)
def test_radix_and_comparison_drains_commit_identically(case: tuple[int, list]) -> None:
    n, ticks = case
    assert run(make_engine(n, radix_threshold=0), ticks) == run(make_engine(n, radix_threshold=None), ticks)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=24), min_size=1, max_size=25, unique=True), st.randoms())
def test_ingestion_order_invariance(intents: list[bytes], rnd: random.Random) -> None:
    """Independent intents ingested in any order are handled into the same hash chain."""

    def handle(order: list[bytes]) -> list[bytes]:
        engine = make_engine(3)
        for payload in order:
            engine.ingest_intent(payload)
        chain = []
        while engine.pending_intent_count():
            tx = engine.begin()
            engine.dispatch_next_intent(tx)
            chain.append(engine.commit(tx).hash)
        assert engine.pending_intent_count() == 0
        engine.replay()
        return chain

    shuffled = list(intents)
    rnd.shuffle(shuffled)
    assert handle(shuffled) == handle(intents)


def test_guard_off_changes_nothing_for_honest_rules() -> None:
    ticks = [[("test/spawn", i) for i in range(10)], [("test/prune", i) for i in range(0, 10, 2)]]
    assert run(make_engine(10, footprint_guard=False), ticks) == run(make_engine(10), ticks)


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(ticks_strategy, st.integers(0, 2**32))
def test_worker_count_invariance_sweep(case: tuple[int, list], seed: int) -> None:
    n, ticks = case
    baseline = run(make_engine(n, workers=1), ticks)
    for workers in (2, 3, 4, 8, 16, 256):
        assert run(make_engine(n, workers=workers, claim_rng=random.Random(seed)), ticks) == baseline


def test_large_tick_uses_radix_and_matches_comparison() -> None:
    """Above 1,024 candidates the default drain is the radix sort; the tick equals a comparison drain."""
    ticks = [[("test/counter", i) for i in range(1500)] + [("test/hub", i) for i in range(0, 1500, 7)]]
    a = run(make_engine(1500), ticks)
    b = run(make_engine(1500, radix_threshold=None), ticks)
    assert a == b
    blocked_by = a[0][-2]
    assert len(blocked_by) == 1500 + 215  # every candidate has a receipt entry
    assert sum(1 for b in blocked_by if b) == 214  # one hub writer wins, the other 214 are rejected
