"""The batched commit path gives exactly what the one-rewrite-at-a-time path gives.

A tick decides admission for the whole batch when no two footprints conflict, applies a closing run of
node-atom writes in bulk, re-encodes many changed nodes at once and regathers the state-root stream
instead of patching it. Each shortcut is checked here against the plain path it replaces.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.engine.workload import entity, make_engine
from warpmesh.engine import (
    AtomPayload,
    Descend,
    Engine,
    Footprint,
    NodeRecord,
    SetAttachment,
    WarpState,
    compute_state_root,
    make_node_id,
    make_type_id,
    make_warp_id,
    node_alpha,
)
from warpmesh.engine.errors import InvalidOperation, UnknownRule
from warpmesh.engine.footprint import ActiveFootprints, union_footprints
from warpmesh.engine.graph import GraphStore
from warpmesh.engine.patch import apply_ops, canonical_ops
from warpmesh.engine.scheduler import PendingRewrite, PendingTx

W = make_warp_id("w")
IDS = [make_node_id(f"x{i}") for i in range(6)]
ATOM = make_type_id("atom")

# A footprint over a tiny universe, so conflicts (and non-conflicts) are both common.
_item = st.sampled_from(IDS[:4])
_footprint = st.builds(
    lambda nr, nw, er, ew, ar, aw, pi, po: _build(nr, nw, er, ew, ar, aw, pi, po),
    *[st.lists(_item, max_size=2) for _ in range(6)],
    st.lists(st.integers(0, 2), max_size=1), st.lists(st.integers(0, 2), max_size=1),
)


def _build(nr: list, nw: list, er: list, ew: list, ar: list, aw: list, pi: list, po: list) -> Footprint:
    fp = Footprint(W)
    for n in nr:
        fp.read_node(n)
    for n in nw:
        fp.write_node(n)
    for e in er:
        fp.read_edge(e)
    for e in ew:
        fp.write_edge(e)
    for n in ar:
        fp.read_alpha(n)
    for n in aw:
        fp.write_alpha(n)
    for p in pi:
        fp.port_in(IDS[0], p)
    for p in po:
        fp.port_out(IDS[0], p)
    return fp


@settings(max_examples=300, deadline=None)
@given(st.lists(_footprint, max_size=6))
def test_batch_admission_agrees_with_sequential_reserve(fps: list[Footprint]) -> None:
    """union_footprints says "no conflict" exactly when reserving one by one admits every footprint."""
    union, free = union_footprints(fps)
    active = ActiveFootprints()
    assert free == all([active.try_reserve(fp) for fp in fps])
    for name in union._fields:
        assert getattr(union, name) == set().union(*[getattr(fp, name) for fp in fps])


def _atoms_store(n: int) -> GraphStore:
    store = GraphStore(W)
    for i, node in enumerate(IDS[:n]):
        store.insert_node(node, NodeRecord(ATOM))
        if i % 2:
            store.set_node_attachment(node, AtomPayload(ATOM, bytes([i])))
    return store


_atom_write = st.tuples(st.sampled_from(IDS), st.one_of(
    st.builds(AtomPayload, st.just(ATOM), st.binary(max_size=2)), st.none(), st.just(Descend(W))))


@settings(max_examples=300, deadline=None)
@given(st.lists(_atom_write, max_size=6), st.integers(3, 6), st.booleans())
@example([(IDS[1], AtomPayload(ATOM, b"")), (IDS[2], AtomPayload(ATOM, b"x"))], 6, True)
def test_bulk_attachment_apply_equals_op_by_op(writes: list, n_nodes: int, portal: bool) -> None:
    """apply_ops(canonical=True) leaves the same state, diff and errors as applying op by op."""
    ops = canonical_ops([SetAttachment(node_alpha(W, node), value) for node, value in writes])

    def run(canonical: bool) -> object:
        store = _atoms_store(n_nodes)
        state = WarpState.from_root_store(store, IDS[0])
        if portal:  # IDS[1] holds the portal into a child instance: overwriting it orphans the child
            child = make_warp_id("child")
            state.instances[child] = state.instances[W]._replace(warp_id=child, parent=node_alpha(W, IDS[1]))
            store.set_node_attachment(IDS[1], Descend(child))
        try:
            diff = apply_ops(state, ops, canonical=canonical).effective_ops()
        except InvalidOperation as e:
            diff = [str(e)]  # type: ignore[list-item]
        return diff, dict(store.node_attachments), compute_state_root(state, W, IDS[0])

    assert run(True) == run(False)


def test_large_attachment_ticks_keep_the_state_root_of_a_fresh_hash() -> None:
    """Ticks rewriting most, some and none of the nodes' atoms: the incremental state root equals a
    from-scratch one, and no-op writes leave the patch."""
    engine = make_engine(300)
    for tick, every in enumerate((1, 1, 3, 50, 1)):
        tx = engine.begin()
        for i in range(0, 300, every):
            engine.apply(tx, "test/counter", entity(i))
        snap, _, patch = engine.commit_with_receipt(tx)
        fresh = engine.state.clone()
        for store in fresh.stores.values():
            store.drop_hash_caches()
        root = engine.root_key
        assert snap.state_root == compute_state_root(fresh, root[0], root[1]), tick
        assert len(patch.ops) == len(range(0, 300, every))
    # A tick that writes atoms equal to the current ones changes nothing: no ops in the patch.
    store = engine.state.stores[engine.root_key[0]]
    tx = engine.begin()
    same = {entity(i): store.node_attachments[entity(i)] for i in range(100)}
    engine.register_rule("test/same", lambda v, s: True, lambda v, s, d: d.set_node_attachment(s, same[s]),
                         lambda v, s: Footprint(v.warp_id).write_alpha(s))
    for node in same:
        engine.apply(tx, "test/same", node)
    _, _, patch = engine.commit_with_receipt(tx)
    assert patch.ops == ()
    engine.replay()


class _Rule:
    name = "r"


def test_rules_sharing_a_scope_hash_stay_apart_and_each_is_last_wins() -> None:
    """The pending index is keyed by scope hash; a second rule under the same hash is still its own entry."""
    tx = PendingTx()

    def pr(compact: int) -> PendingRewrite:
        return PendingRewrite(_Rule(), compact, b"\x07" * 32, W, IDS[0], Footprint(W))

    a1, b1, a2, b2, c = pr(1), pr(0), pr(1), pr(0), pr(2)
    for p in (a1, b1, a2, b2, c):
        tx.enqueue(p)
    assert len(tx) == 3
    assert [p.rule for p in tx.drain()] == [b2.rule, a2.rule, c.rule]


def test_run_tick_is_begin_apply_commit_in_one_bulk_section() -> None:
    """run_tick commits what begin/apply/commit commits, with matching inside the bulk section too, and
    aborts (recording nothing) when an apply raises."""
    import gc

    from warpmesh import bulk
    from warpmesh.aio.tuning import GcPause

    work = [("test/counter", entity(i)) for i in (3, 1, 2)] + [("test/spawn", entity(0))]
    seen: list[bool] = []

    def with_probe(engine: Engine) -> Engine:  # a rule that never matches and records the GC state
        engine.register_rule("probe", lambda v, s: seen.append(gc.isenabled()) or False,
                             lambda v, s, d: None, lambda v, s: Footprint(v.warp_id))
        return engine

    plain = with_probe(make_engine(4))
    tx = plain.begin()
    for name, scope in work:
        plain.apply(tx, name, scope)
    expected = plain.commit_with_receipt(tx)

    previous = bulk.set_guard(GcPause)
    try:
        engine = with_probe(make_engine(4))
        assert engine.run_tick([*work, ("probe", entity(0))]) == expected
        assert seen == [False] and gc.isenabled()  # the collector paused while matching, restored after
        with pytest.raises(UnknownRule):
            engine.run_tick([("test/counter", entity(0)), ("no/such/rule", entity(1))])
        assert engine._live == {} and len(engine.history) == 1 and gc.isenabled()
    finally:
        bulk.set_guard(previous)


@settings(max_examples=150, deadline=None)
@given(st.sets(st.sampled_from(IDS), min_size=1), st.sets(st.sampled_from(IDS)), st.sets(st.sampled_from(IDS)),
       st.booleans())
def test_slot_and_merge_order_from_a_stores_node_order_equals_sorting(
        reads: set, writes: set, in_store: set, other_warp: bool) -> None:
    """Taking a tick's ids in order from the store's sorted node ids (ordered_ids) gives what sorting
    gives, also when some ids are not in the store (then it sorts)."""
    from warpmesh.engine.execution import merge_deltas
    from warpmesh.engine.patch import slots_from_union

    fps = []
    for n in reads:
        fps.append(Footprint(W).read_node(n).write_alpha(n))
    for n in writes:
        fps.append(Footprint(make_warp_id("v") if other_warp else W).write_node(n).write_alpha(n))
    order = sorted(in_store)
    union = union_footprints(fps)[0]
    assert slots_from_union(union, lambda w: order if w == W else None) == slots_from_union(union)
    ops = [SetAttachment(node_alpha(W, n), AtomPayload(ATOM, n[:4])) for n in reads]
    assert merge_deltas([(ops, [(i, 0) for i in range(len(ops))])], lambda w: order) == sorted(
        ops, key=lambda op: op.sort_key())
