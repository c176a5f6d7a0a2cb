"""Hypothesis strategies: reachable states of every CRDT type, built by replaying random histories.

A *universe* is a few replicas (each with its own replica id, as the identity rule demands) that
mutate their own state and now and then absorb another replica's state or one of its deltas. Every
state and delta in one universe is consistent with every other, which is what the lattice laws
quantify over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from warpmesh.crdt import (
    Crdt,
    GCounter,
    GSet,
    HyperLogLog,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
)

REPLICAS = ["a@1", "b@1", "c@1"]

# Values Python conflates (1 == 1.0 == True, 0.0 == -0.0) are distinct elements on the wire.
ELEMENTS = st.sampled_from(
    ["x", "y", "z", "task-1", "", "ü", 1, True, 1.0, 0.0, -0.0, None, b"x", (1, "a"), ((),), 2**64 - 1, -(2**63)]
)
VALUES = ELEMENTS


@dataclass
class Step:
    """One mutation: ``apply(state) -> delta``; ``label`` for failure messages."""

    label: str
    apply: Callable[[Any], Crdt]

    def __repr__(self) -> str:
        return self.label


def _gcounter_ops(r: str) -> st.SearchStrategy[Step]:
    return st.integers(0, 5).map(lambda n: Step(f"inc({r},{n})", lambda s: s.inc(r, n)))


def _pncounter_ops(r: str) -> st.SearchStrategy[Step]:
    return st.one_of(
        st.integers(0, 5).map(lambda n: Step(f"inc({r},{n})", lambda s: s.inc(r, n))),
        st.integers(0, 5).map(lambda n: Step(f"dec({r},{n})", lambda s: s.dec(r, n))),
    )


def _gset_ops(r: str) -> st.SearchStrategy[Step]:
    return ELEMENTS.map(lambda e: Step(f"add({e!r})", lambda s: s.add(e)))


def _orset_ops(r: str) -> st.SearchStrategy[Step]:
    return st.one_of(
        ELEMENTS.map(lambda e: Step(f"add({r},{e!r})", lambda s: s.add(r, e))),
        ELEMENTS.map(lambda e: Step(f"remove({e!r})", lambda s: s.remove(e))),
        st.lists(ELEMENTS, max_size=3).map(lambda es: Step(f"remove_all({es!r})", lambda s: s.remove_all(es))),
    )


def _lww_ops(r: str) -> st.SearchStrategy[Step]:
    return st.tuples(VALUES, st.none() | st.integers(0, 4)).map(
        lambda vt: Step(f"set({r},{vt[0]!r},ts={vt[1]})", lambda s: s.set(r, vt[0], vt[1]))
    )


def _mv_ops(r: str) -> st.SearchStrategy[Step]:
    return VALUES.map(lambda v: Step(f"write({r},{v!r})", lambda s: s.write(r, v)))


def _hll_ops(r: str) -> st.SearchStrategy[Step]:
    return st.one_of(ELEMENTS, st.integers(0, 10**6)).map(lambda e: Step(f"add({e!r})", lambda s: s.add(e)))


KEYS = st.sampled_from(["k1", "k2", 3, b"k", ("t", 1)])


def _ormap_ops(value_op: Callable[[str], st.SearchStrategy[Step]]) -> Callable[[str], st.SearchStrategy[Step]]:
    def ops(r: str) -> st.SearchStrategy[Step]:
        def upd(kv: tuple[Any, Step]) -> Step:
            k, inner = kv
            return Step(f"update({r},{k!r},{inner.label})", lambda s: s.update(r, k, inner.apply))

        def put(kv: tuple[Any, Step]) -> Step:
            k, inner = kv

            def go(s: ORMap[Any]) -> Crdt:
                v = s.value_type()
                inner.apply(v)
                return s.put(r, k, v)

            return Step(f"put({r},{k!r},{inner.label})", go)

        return st.one_of(
            st.tuples(KEYS, value_op(r)).map(upd),
            st.tuples(KEYS, value_op(r)).map(put),
            KEYS.map(lambda k: Step(f"remove({k!r})", lambda s: s.remove(k))),
            st.lists(KEYS, max_size=2).map(lambda ks: Step(f"remove_all({ks!r})", lambda s: s.remove_all(ks))),
        )

    return ops


@dataclass(frozen=True)
class TypeSpec:
    name: str
    bottom: Callable[[], Crdt]
    ops: Callable[[str], st.SearchStrategy[Step]]

    def __repr__(self) -> str:
        return self.name


SPECS = [
    TypeSpec("GCounter", GCounter, _gcounter_ops),
    TypeSpec("PNCounter", PNCounter, _pncounter_ops),
    TypeSpec("GSet", GSet, _gset_ops),
    TypeSpec("ORSet", ORSet, _orset_ops),
    TypeSpec("LWWRegister", LWWRegister, _lww_ops),
    TypeSpec("MVRegister", MVRegister, _mv_ops),
    TypeSpec("HyperLogLog", lambda: HyperLogLog(4), _hll_ops),
    TypeSpec("ORMap[LWW]", lambda: ORMap(LWWRegister), _ormap_ops(_lww_ops)),
    TypeSpec("ORMap[GSet]", lambda: ORMap(GSet), _ormap_ops(_gset_ops)),
    TypeSpec("ORMap[GCounter]", lambda: ORMap(GCounter), _ormap_ops(_gcounter_ops)),
    TypeSpec("ORMap[MVRegister]", lambda: ORMap(MVRegister), _ormap_ops(_mv_ops)),
    TypeSpec("ORMap[HyperLogLog]", lambda: ORMap(HyperLogLog), _ormap_ops(_hll_ops)),
]
SPECS_BY_NAME = {s.name: s for s in SPECS}


@dataclass
class Universe:
    """Replica states after a random history, and every (before, delta, after) it produced."""

    states: list[Crdt]
    mutations: list[tuple[Crdt, Crdt, Crdt]] = field(default_factory=list)
    deltas: list[list[Crdt]] = field(default_factory=list)  # per replica, in order
    history: list[str] = field(default_factory=list)


@st.composite
def universes(
    draw: st.DrawFn, spec: TypeSpec, max_steps: int = 12, replicas: int = 3, exchange: bool = True
) -> Universe:
    n = draw(st.integers(1, replicas))
    states = [spec.bottom() for _ in range(n)]
    u = Universe(states=states, deltas=[[] for _ in range(n)])
    for _ in range(draw(st.integers(0, max_steps))):
        kind = draw(st.sampled_from(["op", "op", "op", "join", "delta"])) if exchange else "op"
        i = draw(st.integers(0, n - 1))
        if kind == "op":
            step = draw(spec.ops(REPLICAS[i]))
            before = states[i].copy()
            delta = step.apply(states[i])
            u.mutations.append((before, delta, states[i].copy()))
            u.deltas[i].append(delta)
            u.history.append(f"{REPLICAS[i]}.{step.label}")
        elif kind == "join":
            j = draw(st.integers(0, n - 1))
            states[i].join(states[j].copy())
            u.history.append(f"{REPLICAS[i]} <- state {REPLICAS[j]}")
        else:
            j = draw(st.integers(0, n - 1))
            if u.deltas[j]:
                d = draw(st.sampled_from(u.deltas[j]))
                states[i].join(d.copy())
                u.history.append(f"{REPLICAS[i]} <- a delta of {REPLICAS[j]}")
    return u


@st.composite
def states(draw: st.DrawFn, spec: TypeSpec, count: int) -> list[Crdt]:
    """``count`` states from one universe (replica states, deltas or earlier snapshots)."""
    u = draw(universes(spec))
    pool: list[Crdt] = [s.copy() for s in u.states]
    for before, delta, after in u.mutations:
        pool.extend((before, delta, after))
    return [draw(st.sampled_from(pool)).copy() for _ in range(count)]


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.floats(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=25,
)
