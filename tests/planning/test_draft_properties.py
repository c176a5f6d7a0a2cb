"""Property tests over random drafts (multi-branch and already-planned ones included)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.planning.strategies import canonical, drafts, make_ops, stats
from warpmesh.planning import Draft, WarpStats
from warpmesh.planning.interpret import evaluate

OPS = make_ops()
SETTINGS = settings(max_examples=150, deadline=None)


def unique_ids(d: Draft) -> bool:
    ids = [n.id for n in d.nodes]
    return len(ids) == len(set(ids))


@SETTINGS
@given(drafts())
def test_optimize_is_idempotent_equivalent_and_never_worse(d: Draft) -> None:
    o = d.optimize()
    assert o.optimize() == o
    assert d.is_equivalent_to(o) and o.is_equivalent_to(d)
    assert unique_ids(o)
    assert o.coordination_cost() <= d.coordination_cost()


@SETTINGS
@given(drafts(), stats(), st.sampled_from((None, 1, 2, 3)))
def test_plan_is_idempotent_equivalent_and_never_worse(d: Draft, s: WarpStats, cap: int | None) -> None:
    p = d.plan(s, max_coupling=cap)
    assert p.plan(s, max_coupling=cap) == p
    assert d.is_equivalent_to(p)
    assert unique_ids(p)
    before = d.coordination_cost(s)
    if cap is None or cap >= before.coupling:
        assert p.coordination_cost(s) <= before
    if cap is not None:
        assert p.coordination_cost(s).coupling <= cap


@SETTINGS
@given(drafts(), drafts())
def test_combine_keeps_ids_unique(a: Draft, b: Draft) -> None:
    c = a.plan().combine(b.plan()).combine(a)
    assert unique_ids(c)
    assert unique_ids(c.plan())


@SETTINGS
@given(drafts(), stats(), st.sampled_from((None, 2)))
def test_planned_result_equals_unplanned_in_process(d: Draft, s: WarpStats, cap: int | None) -> None:
    p = d.plan(s, max_coupling=cap)
    assert canonical(evaluate(p, OPS)) == canonical(evaluate(d, OPS))
