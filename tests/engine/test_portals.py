"""Warp instances and portals: OpenPortal in patches, reachability through Descend, warp-scoped footprints."""

from __future__ import annotations

import pytest

from warpmesh.engine import (
    AtomPayload,
    Descend,
    Engine,
    Footprint,
    GraphStore,
    GraphView,
    NodeRecord,
    OpenPortal,
    RewriteRule,
    TickDelta,
    WriteToNewWarp,
    make_node_id,
    make_type_id,
    make_warp_id,
    node_alpha,
)

ROOT = make_node_id("root")
HOST = make_node_id("host")
CHILD_WARP = make_warp_id("child")
CHILD_ROOT = make_node_id("child-root")
T = make_type_id("t")
NOTE = make_type_id("note")


def open_fp(view: GraphView, scope: bytes) -> Footprint:
    return Footprint(view.warp_id).read_node(scope).write_alpha(scope)  # type: ignore[arg-type]


def open_exec(view: GraphView, scope: bytes, delta: TickDelta) -> None:
    delta.open_portal(node_alpha(delta.warp_id, scope), CHILD_WARP, CHILD_ROOT, NodeRecord(T))  # type: ignore[arg-type]


def note_fp(view: GraphView, scope: bytes) -> Footprint:
    return Footprint(view.warp_id).read_node(scope).write_alpha(scope)  # type: ignore[arg-type]


def note_exec(view: GraphView, scope: bytes, delta: TickDelta) -> None:
    delta.set_node_attachment(scope, AtomPayload(NOTE, view.warp_id[:4]))  # type: ignore[arg-type]


def engine(guard: bool = True) -> Engine:
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(T))
    e = Engine(store, ROOT, footprint_guard=guard)
    e.insert_node(HOST, T)
    from warpmesh.engine import make_edge_id

    e.insert_edge(make_edge_id("root-host"), ROOT, HOST, T)
    e.register_rule(RewriteRule("sys/open", lambda v, s: True, open_exec, open_fp, system=True))
    e.register_rule(RewriteRule("note", lambda v, s: v.has_node(s), note_exec, note_fp))
    return e


def test_open_portal_is_one_op_and_the_child_warp_is_hashed() -> None:
    e = engine()
    root_before = e.state_root()
    tx = e.begin()
    e.apply(tx, "sys/open", HOST)
    _, _, patch = e.commit_with_receipt(tx)
    assert [type(op) for op in patch.ops] == [OpenPortal]  # root UpsertNode and SetAttachment are folded in
    assert patch.ops[0].init_root == NodeRecord(T)
    assert e.node_attachment(HOST) == Descend(CHILD_WARP)
    assert e.state.instances[CHILD_WARP].parent == node_alpha(e.root_key.warp_id, HOST)
    r1 = e.state_root()
    assert r1 != root_before
    # A write inside the child warp, reached only through the portal, changes the root state root.
    tx = e.begin()
    e.apply_in_warp(tx, CHILD_WARP, "note", CHILD_ROOT)
    e.commit(tx)
    assert e.state_root() != r1
    assert e.node_attachment(CHILD_ROOT, CHILD_WARP) == AtomPayload(NOTE, CHILD_WARP[:4])
    e.replay()


def test_same_local_id_in_two_warps_never_conflicts() -> None:
    """parallel_footprint_warp_scoping: footprints are warp-scoped."""
    e = engine()
    tx = e.begin()
    e.apply(tx, "sys/open", HOST)
    e.commit(tx)
    e.insert_node(CHILD_ROOT, T)  # the same local id, in the root warp
    tx = e.begin()
    e.apply(tx, "note", CHILD_ROOT)
    e.apply_in_warp(tx, CHILD_WARP, "note", CHILD_ROOT)
    _, receipt, patch = e.commit_with_receipt(tx)
    assert {entry.disposition.name for entry in receipt.entries} == {"APPLIED"}
    assert len(patch.ops) == 2


def test_no_same_tick_writes_into_a_freshly_opened_warp() -> None:
    e = engine(guard=False)  # with the guard on, the cross-warp write is refused even earlier
    e.register_rule(RewriteRule("sneak", lambda v, s: True, sneak_exec, sneak_fp, system=True))
    tx = e.begin()
    e.apply(tx, "sys/open", HOST)
    e.apply(tx, "sneak", ROOT)
    before = e.state_root()
    with pytest.raises(WriteToNewWarp):
        e.commit(tx)
    assert e.state_root() == before and CHILD_WARP not in e.state.instances


def sneak_fp(view: GraphView, scope: bytes) -> Footprint:
    return Footprint(view.warp_id).write_node(make_node_id("x"), CHILD_WARP)


def sneak_exec(view: GraphView, scope: bytes, delta: TickDelta) -> None:
    from warpmesh.engine import UpsertNode

    delta.emit(UpsertNode(CHILD_WARP, make_node_id("x"), NodeRecord(T)))


def test_descent_stack_joins_attachment_reads() -> None:
    e = engine()
    tx = e.begin()
    e.apply(tx, "sys/open", HOST)
    e.commit(tx)
    # A rewrite inside the child conflicts with re-pointing the portal it descended through.
    tx = e.begin()
    e.apply(tx, "sys/open", HOST)
    e.apply_in_warp(tx, CHILD_WARP, "note", CHILD_ROOT, descent_stack=[node_alpha(e.root_key.warp_id, HOST)])
    _, receipt, _ = e.commit_with_receipt(tx)
    assert sorted(entry.disposition.name for entry in receipt.entries) == ["APPLIED", "FOOTPRINT_CONFLICT"]
