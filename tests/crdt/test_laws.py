"""Lattice and codec laws, property-tested for every CRDT type.

Join is commutative, associative and idempotent with bottom as identity; a mutator's delta joined
into the prior state gives the mutated state; deltas join like the mutations they came from; the
wire form round-trips and is canonical (equal states ⇔ equal digests); copies are independent;
``from_wire`` refuses garbage with ``CrdtDecodeError`` and nothing else.

Each law family runs a modest number of examples in the default suite; ``./run soak`` runs the same
checks with many more (the ``slow`` variants at the bottom).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warpmesh.crdt import Crdt, CrdtDecodeError, decode, digest, encode, encoded_bytes, registered_types
from warpmesh.wire import pack, unpack

from .strategies import SPECS, TypeSpec, msgpack_values, states, universes

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOAK = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
per_type = pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)


def joined(a: Crdt, *others: Crdt) -> Crdt:
    out = a.copy()
    for o in others:
        out.join(o.copy())
    return out


# --- the checks ------------------------------------------------------------------------------------


def check_semilattice(spec: TypeSpec, data: st.DataObject) -> None:
    a, b, c = data.draw(states(spec, 3))
    # commutative (also byte-for-byte)
    assert joined(a, b) == joined(b, a), "join is not commutative"
    assert encoded_bytes(joined(a, b)) == encoded_bytes(joined(b, a))
    # associative
    assert joined(joined(a, b), c) == joined(a, joined(b, c)), "join is not associative"
    # idempotent, also in place with itself
    assert joined(a, a) == a, "join is not idempotent"
    same = a.copy()
    same.join(same)
    assert same == a
    # bottom is the identity, and only bottom is bottom
    assert joined(a, spec.bottom()) == a and joined(spec.bottom(), a) == a
    assert spec.bottom().is_bottom()
    assert a.is_bottom() == (a == spec.bottom())
    # an upper bound: x ≤ y ⇔ x ⊔ y == y
    ab = joined(a, b)
    assert joined(a, ab) == ab and joined(b, ab) == ab


def check_delta_laws(spec: TypeSpec, data: st.DataObject) -> None:
    # 1. s_before ⊔ delta == s_after, for every mutation of a random history.
    u = data.draw(universes(spec))
    for before, delta, after in u.mutations:
        assert type(delta) is type(before)
        assert joined(before, delta) == after, ("delta law", u.history)
    # 2. Delta groups: for consecutive mutations on s, s ⊔ (d1 ⊔ d2 ⊔ ...) == the mutated state.
    (s,) = data.draw(states(spec, 1))
    work, group = s.copy(), spec.bottom()
    for step in data.draw(st.lists(spec.ops("a@1"), min_size=1, max_size=4)):
        group.join(step.apply(work))
    assert joined(s, group) == work, "delta group law"
    # 3. Replicas that only mutate: their deltas, in any order with repeats, rebuild each state,
    #    and the join of all deltas equals the join of all states.
    u = data.draw(universes(spec, exchange=False))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    every_delta = []
    for i, ds in enumerate(u.deltas):
        shuffled = [d.copy() for d in ds] + [d.copy() for d in ds[: rng.randint(0, len(ds))]]
        rng.shuffle(shuffled)
        every_delta.extend(shuffled)
        assert joined(spec.bottom(), *shuffled) == u.states[i], ("deltas rebuild the state", u.history)
    rng.shuffle(every_delta)
    assert joined(spec.bottom(), *every_delta) == joined(spec.bottom(), *u.states), u.history


def _mutate_tree(v: Any, rng: random.Random, replacement: Any) -> Any:
    """Replace one random node of a msgpack tree (only arrays are descended)."""
    if isinstance(v, list) and v and rng.random() < 0.8:
        i = rng.randrange(len(v))
        out = list(v)
        out[i] = _mutate_tree(v[i], rng, replacement)
        return out
    return replacement


def check_codec_and_copies(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = data.draw(states(spec, 2))
    # round trip, canonical bytes, digest ⇔ equality
    for x in (a, b):
        back = decode(unpack(encoded_bytes(x)))
        assert back == x and type(back) is type(x)
        assert encoded_bytes(back) == encoded_bytes(x)
        assert type(x).from_wire(x.to_wire()) == x
    assert (a == b) == (digest(a) == digest(b))
    assert len(digest(a)) == 16
    # copies are independent both ways, and join never aliases its argument
    frozen_a, frozen_b = encoded_bytes(a), encoded_bytes(b)
    c = a.copy()
    c.join(b)
    for step in data.draw(st.lists(spec.ops("c@1"), max_size=3)):
        step.apply(c)
    assert encoded_bytes(a) == frozen_a and encoded_bytes(b) == frozen_b
    c = a.copy()
    frozen_c = encoded_bytes(c)
    a.join(b)
    for step in data.draw(st.lists(spec.ops("c@1"), max_size=3)):
        step.apply(a)
    assert encoded_bytes(c) == frozen_c and encoded_bytes(b) == frozen_b
    # a corrupted encoding is refused with CrdtDecodeError, or else is a fully valid state
    wire = unpack(encoded_bytes(b))
    junk = data.draw(msgpack_values)
    bad = _mutate_tree(wire, random.Random(data.draw(st.integers(0, 2**32))), junk)
    try:
        x = decode(bad)
    except CrdtDecodeError:
        return
    assert isinstance(x, Crdt)
    assert decode(unpack(encoded_bytes(x))) == x
    assert joined(x, x) == x


# --- default suite ---------------------------------------------------------------------------------


@per_type
@FAST
@given(data=st.data())
def test_join_is_a_semilattice(spec: TypeSpec, data: st.DataObject) -> None:
    check_semilattice(spec, data)


@per_type
@FAST
@given(data=st.data())
def test_deltas_join_like_the_mutations(spec: TypeSpec, data: st.DataObject) -> None:
    check_delta_laws(spec, data)


@per_type
@FAST
@given(data=st.data())
def test_codec_round_trips_canonically_and_copies_are_independent(spec: TypeSpec, data: st.DataObject) -> None:
    check_codec_and_copies(spec, data)


@settings(max_examples=300, deadline=None)
@given(tag=st.sampled_from(sorted(registered_types())) | st.integers(-5, 200), body=msgpack_values)
def test_decode_of_random_msgpack_raises_only_crdt_decode_error(tag: int, body: Any) -> None:
    for data in ([tag, body], body):
        try:
            x = decode(data)
        except CrdtDecodeError:
            continue
        assert decode(unpack(encoded_bytes(x))) == x


@settings(max_examples=200, deadline=None)
@given(body=msgpack_values)
def test_every_from_wire_refuses_random_msgpack(body: Any) -> None:
    for cls in registered_types().values():
        try:
            x = cls.from_wire(body)
        except CrdtDecodeError:
            continue
        assert cls.from_wire(x.to_wire()) == x


def test_decode_rejects_unknown_tags_and_shapes() -> None:
    for bad in (None, [], [1], [1, 2, 3], ["1", []], [999, []], [True, []], [1.0, []], b"\x01", {"a": 1}):
        with pytest.raises(CrdtDecodeError):
            decode(bad)


def test_type_tags_are_unique_and_pinned() -> None:
    # Tags are wire protocol: changing one breaks every peer. Pin them.
    names = {tag: cls.__name__ for tag, cls in registered_types().items()}
    assert names == {
        1: "GCounter",
        2: "PNCounter",
        3: "GSet",
        4: "ORSet",
        5: "LWWRegister",
        6: "MVRegister",
        7: "ORMap",
        8: "HyperLogLog",
    }
    assert pack(encode(registered_types()[3]())) == b"\x92\x03\x90"


# --- soak (./run soak) -----------------------------------------------------------------------------


@pytest.mark.slow
@per_type
@SOAK
@given(data=st.data())
def test_soak_join_is_a_semilattice(spec: TypeSpec, data: st.DataObject) -> None:
    check_semilattice(spec, data)


@pytest.mark.slow
@per_type
@SOAK
@given(data=st.data())
def test_soak_deltas_join_like_the_mutations(spec: TypeSpec, data: st.DataObject) -> None:
    check_delta_laws(spec, data)


@pytest.mark.slow
@per_type
@SOAK
@given(data=st.data())
def test_soak_codec_round_trips_canonically_and_copies_are_independent(spec: TypeSpec, data: st.DataObject) -> None:
    check_codec_and_copies(spec, data)


@pytest.mark.slow
@settings(max_examples=20_000, deadline=None)
@given(tag=st.sampled_from(sorted(registered_types())) | st.integers(-5, 200), body=msgpack_values)
def test_soak_decode_of_random_msgpack(tag: int, body: Any) -> None:
    test_decode_of_random_msgpack_raises_only_crdt_decode_error.hypothesis.inner_test(tag, body)  # type: ignore[attr-defined]
