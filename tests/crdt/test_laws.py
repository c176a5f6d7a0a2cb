"""Lattice and codec laws, property-tested for every CRDT type.

Join is commutative, associative and idempotent; a mutator's delta joined into the prior state
gives the mutated state; deltas join like the mutations they came from; the wire form round-trips
and is canonical (equal states ⇔ equal digests); ``from_wire`` refuses garbage with
``CrdtDecodeError`` only.
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

LAWS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
per_type = pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)


def joined(a: Crdt, *others: Crdt) -> Crdt:
    out = a.copy()
    for o in others:
        out.join(o.copy())
    return out


@per_type
@LAWS
@given(data=st.data())
def test_join_is_commutative(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = data.draw(states(spec, 2))
    assert joined(a, b) == joined(b, a)
    assert encoded_bytes(joined(a, b)) == encoded_bytes(joined(b, a))


@per_type
@LAWS
@given(data=st.data())
def test_join_is_associative(spec: TypeSpec, data: st.DataObject) -> None:
    a, b, c = data.draw(states(spec, 3))
    assert joined(joined(a, b), c) == joined(a, joined(b, c))


@per_type
@LAWS
@given(data=st.data())
def test_join_is_idempotent_and_bottom_is_identity(spec: TypeSpec, data: st.DataObject) -> None:
    (a,) = data.draw(states(spec, 1))
    assert joined(a, a) == a
    same = a.copy()
    same.join(same)  # joining with itself in place
    assert same == a
    assert joined(a, spec.bottom()) == a
    assert joined(spec.bottom(), a) == a
    assert spec.bottom().is_bottom()
    assert a.is_bottom() == (a == spec.bottom())


@per_type
@LAWS
@given(data=st.data())
def test_join_is_an_upper_bound(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = data.draw(states(spec, 2))
    ab = joined(a, b)
    # x ≤ y ⇔ x ⊔ y == y
    assert joined(a, ab) == ab
    assert joined(b, ab) == ab


@per_type
@LAWS
@given(data=st.data())
def test_delta_joined_into_prior_state_gives_mutated_state(spec: TypeSpec, data: st.DataObject) -> None:
    u = data.draw(universes(spec))
    for before, delta, after in u.mutations:
        assert type(delta) is type(before)
        assert joined(before, delta) == after, u.history


@per_type
@LAWS
@given(data=st.data())
def test_deltas_join_like_the_mutations(spec: TypeSpec, data: st.DataObject) -> None:
    """Replicas that only mutate: each one's deltas, joined in any order with repeats, rebuild its
    state; the join of all replicas' deltas equals the join of their states.
    """
    u = data.draw(universes(spec, exchange=False))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    every_delta = []
    for i, ds in enumerate(u.deltas):
        shuffled = [d.copy() for d in ds] + [d.copy() for d in ds[: rng.randint(0, len(ds))]]
        rng.shuffle(shuffled)
        every_delta.extend(shuffled)
        assert joined(spec.bottom(), *shuffled) == u.states[i], u.history
    rng.shuffle(every_delta)
    assert joined(spec.bottom(), *every_delta) == joined(spec.bottom(), *u.states), u.history


@per_type
@LAWS
@given(data=st.data())
def test_delta_group_law(spec: TypeSpec, data: st.DataObject) -> None:
    """For consecutive mutations m1, m2 on s: s ⊔ (d1 ⊔ d2) == m2(m1(s)) (delta groups, Almeida §4)."""
    (s,) = data.draw(states(spec, 1))
    steps = data.draw(st.lists(spec.ops("a@1"), min_size=1, max_size=4))
    work = s.copy()
    group = spec.bottom()
    for step in steps:
        group.join(step.apply(work))
    assert joined(s, group) == work


@per_type
@LAWS
@given(data=st.data())
def test_decode_encode_round_trip_and_digest_is_equality(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = data.draw(states(spec, 2))
    for x in (a, b):
        back = decode(unpack(encoded_bytes(x)))
        assert back == x
        assert type(back) is type(x)
        assert encoded_bytes(back) == encoded_bytes(x)
        assert type(x).from_wire(x.to_wire()) == x
    assert (a == b) == (digest(a) == digest(b))
    assert len(digest(a)) == 16


@per_type
@LAWS
@given(data=st.data())
def test_copy_is_independent(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = data.draw(states(spec, 2))
    frozen = encoded_bytes(a)
    c = a.copy()
    c.join(b)
    for step in data.draw(st.lists(spec.ops("c@1"), max_size=3)):
        step.apply(c)
    assert encoded_bytes(a) == frozen
    # ...and the other way round: mutating the original leaves an earlier copy alone.
    c = a.copy()
    frozen_c = encoded_bytes(c)
    a.join(b)
    for step in data.draw(st.lists(spec.ops("c@1"), max_size=3)):
        step.apply(a)
    assert encoded_bytes(c) == frozen_c


@per_type
@LAWS
@given(data=st.data())
def test_join_does_not_alias_the_argument(spec: TypeSpec, data: st.DataObject) -> None:
    a, b = data.draw(states(spec, 2))
    frozen_b = encoded_bytes(b)
    a.join(b)
    for step in data.draw(st.lists(spec.ops("c@1"), max_size=3)):
        step.apply(a)
    assert encoded_bytes(b) == frozen_b


def _mutate_tree(v: Any, rng: random.Random, replacement: Any) -> Any:
    """Replace one random node of a msgpack tree (lists only are descended)."""
    if isinstance(v, list) and v and rng.random() < 0.8:
        i = rng.randrange(len(v))
        out = list(v)
        out[i] = _mutate_tree(v[i], rng, replacement)
        return out
    return replacement


@per_type
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), junk=msgpack_values, seed=st.integers(0, 2**32))
def test_from_wire_refuses_corrupted_encodings_with_crdt_decode_error(
    spec: TypeSpec, data: st.DataObject, junk: Any, seed: int
) -> None:
    (a,) = data.draw(states(spec, 1))
    wire = unpack(encoded_bytes(a))
    bad = _mutate_tree(wire, random.Random(seed), junk)
    try:
        x = decode(bad)
    except CrdtDecodeError:
        return
    # Accepted: it must be a fully valid state that re-encodes canonically and obeys the laws.
    assert isinstance(x, Crdt)
    again = decode(unpack(encoded_bytes(x)))
    assert again == x
    assert joined(x, x) == x


@settings(max_examples=300, deadline=None)
@given(tag=st.sampled_from(sorted(registered_types())) | st.integers(-5, 200), body=msgpack_values)
def test_decode_of_random_msgpack_raises_only_crdt_decode_error(tag: int, body: Any) -> None:
    for data in ([tag, body], body):
        try:
            x = decode(data)
        except CrdtDecodeError:
            continue
        assert decode(unpack(encoded_bytes(x))) == x


@settings(max_examples=300, deadline=None)
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
