"""Difference repair gives exactly what a full-state join gives, and costs the difference."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.crdt import LWWRegister, ORMap, ORSet, decode, encode
from warpmesh.crdt.difference import Difference, Summary, difference_for, retirements, summarize
from warpmesh.wire.frame import pack


def _reg(replica: str, value: int) -> LWWRegister:
    reg = LWWRegister()
    reg.set(replica, value, value)
    return reg


def _diverge(seed: int, n_ops: int, keys: int = 40) -> tuple[list[ORMap], random.Random]:
    """Three replicas that mutate, exchange some deltas (lossy) and drift apart."""
    rng = random.Random(seed)
    reps: list[ORMap] = [ORMap(LWWRegister) for _ in range(3)]
    for _ in range(n_ops):
        i = rng.randrange(3)
        me = reps[i]
        if rng.random() < 0.7 or not me._ds.store:
            delta = me.put(f"r{i}", f"k{rng.randrange(keys)}", _reg(f"r{i}", rng.randrange(1000)))
        else:
            delta = me.remove(rng.choice(sorted(me._ds.store)))
        for j in range(3):
            if j != i and rng.random() < 0.5:
                reps[j].join(delta.copy())
    return reps, rng


def _repair(a: ORMap, b: ORMap) -> tuple[ORMap, int]:
    """A repaired from B through the wire forms; returns the new A and the bytes B sent."""
    asked = summarize(a)
    summary = Summary.from_wire(decode_roundtrip(asked.to_wire()))
    diff = difference_for(b, summary)
    wire = diff.to_wire(encode)
    delta, ctx, bits, alive = Difference.from_wire(decode_roundtrip(wire), decode)
    out = a.copy()
    out.join(delta)
    out.join(retirements(out, asked.ctx, ctx, bits, alive))
    return out, len(pack(wire))


def decode_roundtrip(wire: object) -> object:
    import ormsgpack

    return ormsgpack.unpackb(pack(wire))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 120))
def test_a_difference_joins_to_exactly_the_full_state_join(seed: int, n_ops: int) -> None:
    reps, _ = _diverge(seed, n_ops)
    for a, b in [(reps[0], reps[1]), (reps[1], reps[2]), (reps[2], reps[0])]:
        want = a.copy()
        want.join(b.copy())
        got, _ = _repair(a, b)
        assert encode(got) == encode(want)


def test_removals_the_asker_missed_are_carried_by_bucket_lists() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    for k in range(500):
        b.join(a.put("ra", f"k{k}", _reg("ra", k)))
    b.remove("k7")
    b.remove("k300")
    got, sent = _repair(a, b)
    want = a.copy()
    want.join(b.copy())
    assert encode(got) == encode(want) and "k7" not in got._ds.store and "k300" not in got._ds.store
    assert sent < len(pack(encode(b))) / 4  # two removals cost a couple of buckets, not the state


def test_a_small_difference_costs_far_less_than_the_state() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    for k in range(5_000):
        delta = a.put("ra", f"task-{k}", _reg("ra", k))
        b.join(delta)
    for k in range(20):  # 20 answers A missed
        b.put("rb", f"new-{k}", _reg("rb", k))
    got, sent = _repair(a, b)
    full = len(pack(encode(b)))
    want = a.copy()
    want.join(b.copy())
    assert encode(got) == encode(want)
    summary_bytes = len(pack(summarize(a).to_wire()))
    assert sent + summary_bytes < full / 10, (sent, summary_bytes, full)


def test_equal_states_have_an_empty_difference() -> None:
    reps, _ = _diverge(5, 80)
    a = reps[0]
    b = a.copy()
    diff = difference_for(b, summarize(a))
    assert diff.is_empty() and not diff.we_lack


def test_the_answerer_knows_when_it_lacks_something_too() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    a.put("ra", "x", _reg("ra", 1))
    assert difference_for(b, summarize(a)).we_lack
    assert not difference_for(a, summarize(b)).we_lack


def test_orsets_repair_too() -> None:
    a, b = ORSet(), ORSet()
    for k in range(100):
        b.join(a.add("ra", k))
    b.remove(3)
    b.add("rb", "new")
    asked = summarize(a)
    diff = difference_for(b, asked)
    out = a.copy()
    out.join(diff.delta)
    out.join(retirements(out, asked.ctx, diff.ctx, diff.bits, diff.alive))
    want = a.copy()
    want.join(b.copy())
    assert encode(out) == encode(want)
