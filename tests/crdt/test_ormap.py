"""ORMap semantics: per-replica contributions, add-wins keys, value types; kuilt ``ResultsTest`` and the
intent register ported."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.crdt import (
    CrdtDecodeError,
    Dot,
    GCounter,
    GSet,
    HyperLogLog,
    IncompatibleJoin,
    LWWRegister,
    ORMap,
    ORSet,
    decode,
    encode,
    encoded_bytes,
)
from warpmesh.crdt.causal import sync_digest
from warpmesh.wire import pack, unpack

A, B, C = "a@1", "b@1", "c@1"


def put_result(board: ORMap[LWWRegister], replica: str, task: str, result: object) -> ORMap[LWWRegister]:
    """How Warp writes a result: an LWW write one Lamport step past what the board shows."""
    return board.update(replica, task, lambda reg: reg.set(replica, result))


def sync(*maps: ORMap) -> None:
    total = ORMap(maps[0].value_type)
    for m in maps:
        total.join(m)
    for m in maps:
        m.join(total)


def test_contributions_from_several_replicas_are_kept_and_read_as_their_join() -> None:
    a, b = ORMap(GSet), ORMap(GSet)
    da = a.update(A, "task", lambda g: g.add(A))
    db = b.update(B, "task", lambda g: g.add(B))
    a.join(db)
    b.join(da)
    assert a == b
    assert a.get("task") == GSet([A, B])
    assert set(a.contributions("task")) == {Dot(A, 1), Dot(B, 1)}


def test_put_supersedes_only_the_putting_replicas_own_contributions() -> None:
    m = ORMap(GCounter)
    m.update(A, "k", lambda c: c.inc(A, 2))
    other = ORMap(GCounter)
    m.join(other.update(B, "k", lambda c: c.inc(B, 5)))
    d = m.update(A, "k", lambda c: c.inc(A, 1))
    assert set(m.contributions("k")) == {Dot(A, 2), Dot(B, 1)}
    assert m.get("k") == GCounter({A: 3, B: 5})
    # The delta retires A's old dot only, and its value already includes A's previous contribution.
    assert set(d.context.iter_dots()) == {(A, 1), (A, 2)}
    assert d.contributions("k") == {Dot(A, 2): GCounter({A: 3})}


def test_put_value_joins_with_own_previous_contribution() -> None:
    m = ORMap(GSet)
    m.put(A, "k", GSet(["x"]))
    d = m.put(A, "k", GSet(["y"]))
    assert m.get("k") == GSet(["x", "y"]) and d.get("k") == GSet(["x", "y"])


def test_remove_retires_observed_contributions_and_absent_remove_is_identity() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    b.join(put_result(a, A, "t", "r"))
    rm = b.remove("t")
    a.join(rm)
    assert "t" not in a and a == b
    before = a.copy()
    assert a.remove("nope").is_bottom() and a == before


def test_remove_and_concurrent_put_the_put_wins_with_only_its_contribution() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    b.join(put_result(a, A, "t", "v1"))
    rm = b.remove("t")
    put = put_result(a, A, "t", "v2")  # concurrent with the remove
    a.join(rm)
    b.join(put)
    assert a == b and a.get("t").value == "v2"
    assert set(a.contributions("t")) == {Dot(A, 2)}


def test_get_returns_a_copy() -> None:
    m = ORMap(GSet)
    m.update(A, "k", lambda g: g.add("x"))
    got = m.get("k")
    got.add("y")
    assert m.get("k") == GSet(["x"])
    assert m.get("absent") is None and m.get([1]) is None


def test_keys_items_values_in_canonical_order() -> None:
    a, b = ORMap(GCounter), ORMap(GCounter)
    keys = ["b", "a", 2, b"k", ("t", 1)]
    for k in keys:
        a.update(A, k, lambda c: c.inc(A))
    for k in reversed(keys):
        b.update(A, k, lambda c: c.inc(A))
    assert a.keys() == b.keys() and len(a) == 5
    assert [k for k, _ in a.items()] == a.keys() == list(a)
    assert all(v == GCounter({A: 1}) for v in a.values())
    assert a.keys() == sorted(keys, key=pack)


def test_value_type_is_enforced() -> None:
    m = ORMap(LWWRegister)
    with pytest.raises(TypeError):
        m.put(A, "k", GSet())
    with pytest.raises(TypeError):
        ORMap(int)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        ORMap(ORMap)  # type: ignore[type-var]
    with pytest.raises(IncompatibleJoin):
        m.join(ORMap(GSet))  # type: ignore[arg-type]
    with pytest.raises(IncompatibleJoin):
        m.join(ORSet())  # type: ignore[arg-type]


def test_from_wire_checks_every_value_tag_against_the_value_type() -> None:
    m = ORMap(LWWRegister)
    put_result(m, A, "t", "r")
    wire = unpack(encoded_bytes(m))
    wire[1][2][0][1][0][2] = encode(GSet(["x"]))  # a GSet smuggled into an LWW map
    with pytest.raises(CrdtDecodeError):
        decode(wire)
    wire = unpack(encoded_bytes(m))
    wire[1][0] = 99  # unknown value type
    with pytest.raises(CrdtDecodeError):
        decode(wire)
    wire = unpack(encoded_bytes(m))
    wire[1][0] = ORMap.TYPE_TAG
    with pytest.raises(CrdtDecodeError):
        decode(wire)


def test_an_empty_map_still_knows_its_value_type_on_the_wire() -> None:
    back = decode(encode(ORMap(HyperLogLog)))
    assert isinstance(back, ORMap) and back.value_type is HyperLogLog and back.is_bottom()


def test_incompatible_hll_precisions_are_refused_before_anything_changes() -> None:
    m = ORMap(HyperLogLog)
    m.update(A, "src", lambda h: h.add("doc"))
    before = encoded_bytes(m)
    with pytest.raises(IncompatibleJoin):
        m.put(B, "src", HyperLogLog(10))
    hostile = ORMap(HyperLogLog)
    hostile.put(B, "src", HyperLogLog(10))
    hostile.put(B, "other", HyperLogLog(14))
    with pytest.raises(IncompatibleJoin):
        m.join(hostile)
    assert encoded_bytes(m) == before
    # ...and a decoded map whose contributions at one key cannot be joined is refused outright.
    ctx = [[A, 1, []], [B, 1, []]]
    p14, p10 = [HyperLogLog.TYPE_TAG, [14, [0, 1]]], [HyperLogLog.TYPE_TAG, [10, [0, 1]]]
    ok = [ORMap.TYPE_TAG, [HyperLogLog.TYPE_TAG, ctx, [["src", [[0, 1, p14], [1, 1, p14]]]]]]
    assert decode(ok).get("src") == decode(p14)
    bad = [ORMap.TYPE_TAG, [HyperLogLog.TYPE_TAG, ctx, [["src", [[0, 1, p14], [1, 1, p10]]]]]]
    with pytest.raises(CrdtDecodeError):
        decode(bad)


# --- ResultsTest (kuilt-warp, ORMap<TaskId, LWWRegister<result>> board): ported scenarios -------------


def test_results_one_entry_per_task_even_if_two_peers_ran_it() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    put_result(a, A, "t1", "r-from-a")
    put_result(b, B, "t1", "r-from-b")
    sync(a, b)
    assert a.keys() == ["t1"] and len(a.contributions("t1")) == 2
    assert a.get("t1") == b.get("t1")


def test_results_tie_breaks_on_replica_id() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    put_result(a, A, "t1", "ra")
    put_result(b, B, "t1", "rb")
    sync(a, b)
    assert a.get("t1").value == "rb" and a.get("t1").replica == B


def test_results_later_write_that_saw_the_first_wins() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    b.join(put_result(b, B, "t1", "rb"))
    a.join(b)
    put_result(a, A, "t1", "ra-newer")  # timestamp 2 > 1, despite the smaller replica id
    sync(a, b)
    assert a.get("t1").value == "ra-newer"


def test_results_identical_duplicate_results_converge_to_one_value() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    put_result(a, A, "t1", b"\x00bytes")
    put_result(b, B, "t1", b"\x00bytes")
    sync(a, b)
    assert a.get("t1").value == b"\x00bytes" and a == b


def test_results_merge_commutative_idempotent_three_way() -> None:
    boards = [ORMap(LWWRegister) for _ in range(3)]
    for i, (board, r) in enumerate(zip(boards, (A, B, C))):
        for t in range(5):
            put_result(board, r, f"t{(t + i) % 6}", f"{r}:{t}")
    boards[2].join(boards[0])
    boards[2].remove("t1")
    merged = []
    for order in itertools.permutations(boards):
        m = ORMap(LWWRegister)
        for board in order + order[:1]:
            m.join(board)
        merged.append(m)
    assert all(m == merged[0] for m in merged)
    assert "t0" in merged[0]


def test_results_many_tasks_partition_and_heal() -> None:
    a, b = ORMap(LWWRegister), ORMap(LWWRegister)
    for t in range(100):
        put_result(a if t % 2 else b, A if t % 2 else B, f"t{t}", t)
    sync(a, b)
    assert len(a) == 100 and a == b
    assert [a.get(f"t{t}").value for t in range(100)] == list(range(100))


# --- the intent register: ORMap<TaskId, GSet<PeerId>> -------------------------------------------------


def test_intent_register_claimants_accumulate_and_completion_clears_the_entry() -> None:
    peers = {A: ORMap(GSet), B: ORMap(GSet), C: ORMap(GSet)}
    deltas = [m.put(r, "t1", GSet([r.split("@")[0]])) for r, m in peers.items() if r != C]
    for m in peers.values():
        for d in deltas:
            m.join(d)
    assert all(m.get("t1") == GSet(["a", "b"]) for m in peers.values())
    rm = peers[A].remove("t1")
    for m in peers.values():
        m.join(rm)
    assert all("t1" not in m for m in peers.values())


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["put", "remove", "keys", "copy", "join"]), st.integers(0, 120)), max_size=80
    )
)
def test_key_order_stays_canonical_through_any_mix_of_edits(ops: list[tuple[str, int]]) -> None:
    m: ORMap[GCounter] = ORMap(GCounter)
    other: ORMap[GCounter] = ORMap(GCounter)
    for i in range(100):
        m.update(A, f"k{i}", lambda c: c.inc(A))
    for op, i in ops:
        key = f"k{i}" if i % 3 else i  # mixed str and int keys
        if op == "put":
            m.update(A, key, lambda c: c.inc(A))
        elif op == "remove":
            m.remove(key)
        elif op == "keys":
            assert m.keys() == sorted(m.keys(), key=pack)
        elif op == "copy":
            had = "after-copy" in m
            snapshot = m.copy()
            m.update(A, "after-copy", lambda c: c.inc(A))
            assert ("after-copy" in snapshot.keys()) == had  # the copy's key order is its own
            if i % 2:
                m = snapshot
        else:
            other.update(B, key, lambda c: c.inc(B))
            m.join(other)
        expected = sorted((k for k in m._ds.store), key=lambda k: k if type(k) is bytes else pack(k))
        assert m._ds.sorted_keys() == expected


# --- batched updates, peek and the fast wire decoder (the Warp hot path) ------------------------------


@settings(max_examples=60, deadline=None)
@given(
    before=st.lists(st.tuples(st.sampled_from([A, B]), st.integers(0, 12), st.binary(max_size=6)), max_size=20),
    batch=st.lists(st.tuples(st.integers(0, 12), st.binary(max_size=6)), max_size=12, unique_by=lambda t: t[0]),
)
def test_update_many_is_one_update_per_key_with_the_deltas_joined(
    before: list[tuple[str, int, bytes]], batch: list[tuple[int, bytes]]
) -> None:
    one, many = ORMap(LWWRegister), ORMap(LWWRegister)
    for replica, k, v in before:
        for m in (one, many):
            put_result(m, replica, f"t{k}", v)
    joined: ORMap[LWWRegister] = ORMap(LWWRegister)
    for k, v in batch:
        joined.join(put_result(one, A, f"t{k}", v))
    delta = many.update_many(A, [(f"t{k}", lambda reg, v=v: reg.set(A, v)) for k, v in batch])
    assert many == one
    assert delta == joined
    # The delta carries the batch to a replica that saw only the state before it.
    replica = ORMap(LWWRegister)
    for r, k, v in before:
        put_result(replica, r, f"t{k}", v)
    replica.join(delta)
    assert replica == one


def test_update_many_changes_nothing_when_any_update_fails() -> None:
    m = ORMap(LWWRegister)
    put_result(m, A, "x", b"1")
    snapshot = m.copy()
    with pytest.raises(ValueError, match="appears twice"):
        m.update_many(A, [("y", lambda r: r.set(A, b"2")), ("y", lambda r: r.set(A, b"3"))])
    with pytest.raises(TypeError):
        m.update_many(A, [("y", lambda r: r.set(A, b"2")), ("x", lambda r: GSet().add("no"))])
    assert m == snapshot and "y" not in m


def test_peek_is_the_stored_value_until_the_key_is_rewritten() -> None:
    m = ORMap(LWWRegister)
    put_result(m, A, "t", b"1")
    first = m.peek("t")
    assert first is m.peek("t") and first == m.get("t")
    put_result(m, A, "t", b"2")
    assert m.peek("t") is not first and m.peek("t").value == b"2"
    other = ORMap(LWWRegister)
    put_result(other, B, "t", b"9")
    m.join(other)  # two contributions: peek reads their join, like get
    assert m.peek("t") == m.get("t") and m.peek("missing") is None


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([A, B, C]), st.sampled_from(["put", "remove"]),
                          st.one_of(st.integers(0, 9), st.text(max_size=3)), st.binary(max_size=4)), max_size=30))
def test_the_fast_decoder_builds_what_the_checked_one_builds(ops: list[tuple[str, str, object, bytes]]) -> None:
    from warpmesh.crdt.base import w_tagged, wire_element
    from warpmesh.crdt.causal import DotStore

    maps = {r: ORMap(LWWRegister) for r in (A, B, C)}
    deltas = []
    for r, op, key, v in ops:
        m = maps[r]
        deltas.append(put_result(m, r, key, v) if op == "put" else m.remove(key))
        if len(deltas) % 4 == 0:
            sync(*maps.values())
    for value in [*deltas, *maps.values()]:
        wire = unpack(pack(value.to_wire()))[1:]
        fast = DotStore._from_wire_fast(wire, wire_element, lambda v: w_tagged(v, LWWRegister, "value"))
        checked = DotStore._from_wire(wire, wire_element, lambda v: w_tagged(v, LWWRegister, "value"), "ORMap")
        assert fast is not None and fast == checked and fast.index == checked.index


def test_malformed_maps_still_get_the_checked_decoders_reasons() -> None:
    m = ORMap(LWWRegister)
    put_result(m, A, "t", b"1")
    tag, ctx, entries = unpack(pack(m.to_wire()))
    bad_dot = [tag, ctx, [["t", [[0, 99, entries[0][1][0][2]]]]]]  # a dot its own context has not seen
    with pytest.raises(CrdtDecodeError, match="has not seen"):
        ORMap.from_wire(bad_dot)
    twice = [tag, ctx, [entries[0], entries[0]]]
    with pytest.raises(CrdtDecodeError, match="appears twice"):
        ORMap.from_wire(twice)
    bad_value = [tag, ctx, [["t", [[0, 1, [5, [1, "", b"x"]]]]]]]  # empty replica id
    with pytest.raises(CrdtDecodeError, match="replica id"):
        ORMap.from_wire(bad_value)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([A, B, C]), st.sampled_from(["put", "remove"]), st.integers(0, 6),
                          st.binary(max_size=3)), max_size=25),
       st.lists(st.tuples(st.sampled_from([B, C]), st.integers(0, 6), st.binary(max_size=3)), max_size=12))
def test_absorb_is_join_and_adopts_the_deltas_values(
    ops: list[tuple[str, str, int, bytes]], incoming: list[tuple[str, int, bytes]]
) -> None:
    """A received delta is joined without copies: the same state as join, holding the delta's objects."""
    mine: ORMap[LWWRegister] = ORMap(LWWRegister)
    theirs: ORMap[LWWRegister] = ORMap(LWWRegister)
    for replica, op, k, v in ops:
        m = mine if replica == A else theirs
        if op == "put":
            put_result(m, replica, f"t{k}", v)
        else:
            m.remove(f"t{k}")
    delta: ORMap[LWWRegister] = ORMap(LWWRegister)
    for replica, k, v in incoming:
        delta.join(put_result(theirs, replica, f"t{k}", v))
    wire = encode(delta)
    expected = mine.copy()
    expected.join(decode(wire))
    received = decode(wire)
    assert isinstance(received, ORMap)
    adopted = {k: received.peek(k) for k in received.keys()}
    sync_digest(mine)  # from here on the digest is kept incrementally: absorb must keep it right
    mine.absorb(received)
    assert mine == expected
    assert sync_digest(mine) == sync_digest(expected.copy())
    fresh = [k for k in adopted if expected.contributions(k) and len(expected.contributions(k)) == 1
             and k not in {f"t{k2}" for r, op, k2, _ in ops}]
    for k in fresh:
        assert mine.peek(k) is adopted[k]  # adopted as is, not copied


@pytest.mark.parametrize("value", [[4, [1, "a@1", b"x"]], [5, "not a register"], [5, [1, "a@1"]], ["5", []], [5]])
def test_a_malformed_value_inside_a_map_is_a_decode_error(value: object) -> None:
    """Values are decoded by the value type's unguarded decoder inside the map's guard: a bad one
    is still refused as a CrdtDecodeError, never another exception."""
    m: ORMap[LWWRegister] = ORMap(LWWRegister)
    put_result(m, A, "t", b"ok")
    wire = m.to_wire()
    wire[2][0][1][0][2] = value
    with pytest.raises(CrdtDecodeError):
        ORMap.from_wire(wire)
