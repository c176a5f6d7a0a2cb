"""The causal core: dot contexts stay compacted and canonical, and behave as the set of dots they cover."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.crdt import CrdtDecodeError, Dot, DotContext
from warpmesh.wire import pack, unpack

dots = st.builds(Dot, st.sampled_from(["a@1", "b@1", "c@2", "ü@3"]), st.integers(1, 12))


def ctx_of(ds: list[Dot]) -> DotContext:
    c = DotContext()
    for d in ds:
        c.add(d)
    return c


@settings(max_examples=100, deadline=None)
@given(ds=st.lists(dots, max_size=30), seed=st.integers(0, 2**32))
def test_insertion_order_does_not_change_the_context(ds: list[Dot], seed: int) -> None:
    shuffled = list(ds)
    random.Random(seed).shuffle(shuffled)
    a, b = ctx_of(ds), ctx_of(shuffled)
    assert a == b
    assert pack(a.to_wire()) == pack(b.to_wire())


@settings(max_examples=100, deadline=None)
@given(ds=st.lists(dots, max_size=30))
def test_context_is_the_set_of_its_dots_and_compacted(ds: list[Dot]) -> None:
    c = ctx_of(ds)
    model = set(ds)
    assert set(c.iter_dots()) == model
    assert c.size() == len(model)
    for r in ["a@1", "b@1", "c@2", "ü@3"]:
        for s in range(1, 15):
            assert c.contains((r, s)) == ((r, s) in model)
    # Compacted: the vector is the longest contiguous prefix; the cloud is the rest.
    for r, n in c.vv.items():
        assert n >= 1
        assert all((r, s) in model for s in range(1, n + 1))
        assert (r, n + 1) not in model
    for d in c.cloud:
        assert d.seq > c.max_seq(d.replica) + 1
    before = c.to_wire()
    c.compact()
    assert c.to_wire() == before


@settings(max_examples=100, deadline=None)
@given(x=st.lists(dots, max_size=25), y=st.lists(dots, max_size=25))
def test_join_is_union(x: list[Dot], y: list[Dot]) -> None:
    a, b = ctx_of(x), ctx_of(y)
    a.join(b)
    assert a == ctx_of(x + y)
    assert set(a.iter_dots()) == set(x) | set(y)


@settings(max_examples=100, deadline=None)
@given(ds=st.lists(dots, max_size=25))
def test_next_dot_is_never_a_seen_dot(ds: list[Dot]) -> None:
    c = ctx_of(ds)
    for r in ["a@1", "b@1", "z@9"]:
        d = c.next_dot(r)
        assert not c.contains(d)
        assert d == Dot(r, c.max_seq(r) + 1)


@settings(max_examples=100, deadline=None)
@given(ds=st.lists(dots, max_size=25))
def test_wire_round_trip(ds: list[Dot]) -> None:
    c = ctx_of(ds)
    back = DotContext.from_wire(unpack(pack(c.to_wire())))
    assert back == c
    assert back.size() == c.size()


def test_wire_layout_groups_dots_by_replica() -> None:
    c = ctx_of([Dot("b@1", 1), Dot("b@1", 2), Dot("b@1", 5), Dot("a@1", 3)])
    assert c.to_wire() == [["a@1", 0, [3]], ["b@1", 2, [5]]]
    assert c.vv == {"b@1": 2}
    assert c.cloud == {Dot("a@1", 3), Dot("b@1", 5)}


def test_filling_a_gap_moves_the_cloud_into_the_vector() -> None:
    c = ctx_of([Dot("a", 3), Dot("a", 4), Dot("a", 6), Dot("a", 1)])
    assert c.vv == {"a": 1} and c.cloud == {Dot("a", 3), Dot("a", 4), Dot("a", 6)}
    c.add(Dot("a", 2))
    assert c.vv == {"a": 4} and c.cloud == {Dot("a", 6)}
    big = DotContext({"a": 10})
    c.join(big)
    assert c.vv == {"a": 10} and c.cloud == frozenset()
    assert c.size() == 10


def test_join_with_a_long_vector_uses_the_cheaper_of_probe_and_scan() -> None:
    c = ctx_of([Dot("a", s) for s in range(5, 2000, 2)])  # a large cloud
    c.join(DotContext({"a": 10**6}))  # a huge range: scanning the cloud is cheaper than probing
    assert c.vv == {"a": 10**6} and not c.cloud and c.size() == 10**6
    d = ctx_of([Dot("a", 10), Dot("b", 4)])
    d.join(DotContext({"a": 3}))
    assert d.vv == {"a": 3} and d.cloud == {Dot("a", 10), Dot("b", 4)}


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"a": 1},
        [["a", 1]],
        [["a", 0, []]],  # an empty entry is not canonical
        [["a", 1, []], ["a", 2, []]],  # replica twice
        [["a", 2, [3]]],  # cloud dot contiguous with the vector
        [["a", 2, [2]]],  # cloud dot covered by the vector
        [["a", 0, [5, 4]]],  # not ascending
        [["a", 0, [4, 4]]],
        [["", 1, []]],
        [[1, 1, []]],
        [["a", -1, []]],
        [["a", 1, [0]]],
        [["a", 2**64, []]],
        [["a", True, []]],
    ],
)
def test_from_wire_refuses_malformed_contexts(bad: object) -> None:
    with pytest.raises(CrdtDecodeError):
        DotContext.from_wire(bad)


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        DotContext({"a": -1})
    with pytest.raises(TypeError):
        DotContext({"": 1})
    with pytest.raises(ValueError):
        DotContext().add(("a", 0))
    assert DotContext({"a": 0}).is_empty()


def _model_wire(model: set[tuple[str, int]]) -> list[list[object]]:
    """The canonical wire form computed from a plain set of dots (the specification)."""
    rows = []
    for r in sorted({r for r, _ in model}, key=pack):
        seqs = sorted(s for q, s in model if q == r)
        n = 0
        while n + 1 in seqs:
            n += 1
        rows.append([r, n, [s for s in seqs if s > n]])
    return rows


ranges = st.lists(st.tuples(st.sampled_from(["a@1", "b@1", "ü@3"]), st.integers(1, 60), st.integers(1, 25)),
                  max_size=12)


@settings(max_examples=150, deadline=None)
@given(x=ranges, y=ranges, singles=st.lists(dots, max_size=10))
def test_runs_of_dots_behave_as_the_set_of_their_dots(
    x: list[tuple[str, int, int]], y: list[tuple[str, int, int]], singles: list[Dot]
) -> None:
    """Contexts hold runs of dots; joining ranges in any order (overlapping, touching, filling the
    vector's gap) must give exactly the set semantics and the canonical wire form."""
    def build(rs: list[tuple[str, int, int]]) -> tuple[DotContext, set[tuple[str, int]]]:
        c, model = DotContext(), set()
        for r, lo, n in rs:
            part = set((r, s) for s in range(lo, lo + n))
            c.join(DotContext.from_wire(_model_wire(part)))
            model |= part
        return c, model

    a, ma = build(x)
    b, mb = build(y)
    for d in singles:
        assert a.add(d) == (tuple(d) not in ma)
        ma.add(tuple(d))
    assert set(a.iter_dots()) == ma and a.size() == len(ma)
    assert a.to_wire() == _model_wire(ma)
    assert DotContext.from_wire(a.to_wire()) == a
    # What b may have seen of a: at least every dot both hold.
    assert set(a.iter_dots_within(b)) >= ma & mb
    a.join(b)
    union = ma | mb
    assert set(a.iter_dots()) == union and a.size() == len(union)
    assert a.to_wire() == _model_wire(union)
    for r in ["a@1", "b@1", "ü@3"]:
        for s in range(1, 90):
            assert a.contains((r, s)) == ((r, s) in union)
