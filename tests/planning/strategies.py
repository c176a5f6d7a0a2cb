"""Hypothesis strategies for random drafts, statistics and op tables whose semantics make every
rewrite exact: maps tag an element, filters read only the source value, embroiders sort."""

from __future__ import annotations

import zlib
from typing import Any

from hypothesis import strategies as st

from warpmesh.planning import Draft, Warp, WarpStats

SOURCES = ("s1", "s2", "s3")
MAPS = ("m1", "m2", "m3")
FILTERS = ("f1", "f2", "f3")
EMBROIDERS = ("e1", "e2", "e3")

step = st.one_of(
    st.tuples(st.just("map"), st.sampled_from(MAPS)),
    st.tuples(st.just("filter"), st.sampled_from(FILTERS)),
    st.tuples(st.just("embroider"), st.sampled_from(EMBROIDERS)),
)


@st.composite
def branches(draw: st.DrawFn) -> Draft:
    d = Warp.shuttle(draw(st.sampled_from(SOURCES)))
    for kind, op in draw(st.lists(step, max_size=6)):
        d = getattr(d, kind)(op)
    return d


@st.composite
def drafts(draw: st.DrawFn) -> Draft:
    """1-4 branches combined; some prefixes are optimized or planned first (already-planned inputs)."""
    d = draw(branches())
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(("plain", "plain", "optimize", "plan", "consolidate")))
        if how == "optimize":
            d = d.optimize()
        elif how == "plan":
            d = d.plan(WarpStats(), max_coupling=draw(st.sampled_from((None, 1, 2))))
        elif how == "consolidate":
            d = d.consolidate_embroideries()
        d = d.combine(draw(branches()))
    return d


@st.composite
def stats(draw: st.DrawFn) -> WarpStats:
    s = WarpStats()
    for op in SOURCES + FILTERS:
        for i in range(draw(st.sampled_from((0, 5, 40, 200)))):
            s.observe(op, i)
    return s


def _h(op: str) -> int:
    return zlib.crc32(op.encode())


def make_ops() -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for s in SOURCES:
        ops[s] = (lambda s=s: [[s, i, []] for i in range(12 + _h(s) % 9)])
    for m in MAPS:
        ops[m] = (lambda x, m=m: [x[0], x[1], [*x[2], m]])
    for f in FILTERS:
        k = 2 + _h(f) % 3
        ops[f] = (lambda x, k=k: x[1] % k != 0)
    for e in EMBROIDERS:
        ops[e] = (lambda batch: sorted(batch, key=repr))
    return ops


def canonical(result: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {k: sorted(repr(x) for x in v) for k, v in result.items()}
