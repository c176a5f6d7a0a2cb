"""Scheduler: the LSD radix drain equals the comparison drain; last-wins enqueue; nonce restarts per drain."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.engine import Footprint
from warpmesh.engine.scheduler import SMALL_SORT_THRESHOLD, PendingRewrite, PendingTx, radix_order, sort_order


class _Rule:
    name = "r"


def _pr(scope_hash: bytes, compact: int, nonce: int) -> PendingRewrite:
    return PendingRewrite(_Rule(), compact, scope_hash, b"w", b"s", Footprint(b"w"), nonce)  # type: ignore[arg-type]


# Scope hashes that share long prefixes exercise every 16-bit pass, not just the last one.
prefixed_hash = st.tuples(st.sampled_from([b"", b"\x00" * 16, b"\xab" * 30, b"\x01\x02" * 8]),
                          st.binary(min_size=32, max_size=32)).map(lambda t: (t[0] + t[1])[:32])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(prefixed_hash, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=80))
def test_radix_order_equals_comparison_order(rows: list[tuple[bytes, int, int]]) -> None:
    items = [_pr(*r) for r in rows]
    assert [id(p) for p in radix_order(items)] == [id(p) for p in sort_order(items)]


def test_radix_order_on_a_large_batch_with_ties_is_stable() -> None:
    import random

    rng = random.Random(5)
    rows = [(rng.randbytes(2) + bytes(30), rng.randrange(3), rng.randrange(2)) for _ in range(3000)]
    items = [_pr(*r) for r in rows]
    assert [id(p) for p in radix_order(items)] == [id(p) for p in sort_order(items)]


def test_enqueue_is_last_wins_and_drain_resets() -> None:
    tx = PendingTx()
    a1, b, a2 = _pr(b"\x02" * 32, 0, 0), _pr(b"\x01" * 32, 0, 0), _pr(b"\x02" * 32, 0, 0)
    queued = [tx.enqueue(p) for p in (a1, b, a2)]  # the records as queued, each with its nonce
    assert len(tx) == 2
    drained = tx.drain()
    assert drained == [queued[1], queued[2]] and drained[1].rule is a2.rule  # a2 replaced a1
    assert (drained[1].nonce, drained[0].nonce) == (2, 1)
    assert len(tx) == 0
    c = _pr(b"\x03" * 32, 0, 0)
    assert tx.enqueue(c).nonce == 0


def test_drain_switches_to_radix_above_threshold() -> None:
    import random

    rng = random.Random(1)
    tx = PendingTx()
    items = [_pr(rng.randbytes(32), rng.randrange(4), 0) for _ in range(SMALL_SORT_THRESHOLD + 50)]
    queued = [tx.enqueue(p) for p in items]
    drained = tx.drain()
    assert drained == sort_order(queued)  # records rebuilt from the columns: equal field by field
