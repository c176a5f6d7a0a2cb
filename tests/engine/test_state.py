"""State root, DIND hash and patch diff properties (snapshot_reachability_tests, parallel_determinism t1_1)."""

from __future__ import annotations

import random

from hypothesis import event, given, settings
from hypothesis import strategies as st

from warpmesh.engine import (
    ECHO,
    SEED,
    AtomPayload,
    DeleteEdge,
    DeleteNode,
    EdgeRecord,
    GraphStore,
    NodeRecord,
    SetAttachment,
    UpsertEdge,
    UpsertNode,
    WarpState,
    compute_state_root,
    edge_beta,
    make_edge_id,
    make_node_id,
    make_type_id,
    make_warp_id,
    node_alpha,
)
from warpmesh.engine.errors import InvalidOperation
from warpmesh.engine.ops import WarpOp
from warpmesh.engine.patch import TickApplier, apply_ops, canonical_ops
from warpmesh.engine.state import state_root_bytes

W = make_warp_id("w")
ROOT = make_node_id("n0")
T = [make_type_id(f"t{i}") for i in range(3)]
NODES = [make_node_id(f"n{i}") for i in range(8)]
EDGES = [make_edge_id(f"e{i}") for i in range(8)]


def build(nodes: dict, alphas: dict, edges: dict, betas: dict, order: random.Random | None = None) -> GraphStore:
    """A fresh store (no caches) with the given contents, inserted in a shuffled order."""
    s = GraphStore(W)  # type: ignore[arg-type]
    n_items = list(nodes.items())
    e_items = list(edges.values())
    if order is not None:
        order.shuffle(n_items)
        order.shuffle(e_items)
    for n, rec in n_items:
        s.insert_node(n, rec)
    for rec in e_items:
        s.upsert_edge(rec)
    for n, v in alphas.items():
        s.set_node_attachment(n, v)
    for e, v in betas.items():
        s.set_edge_attachment(e, v)
    return s


def contents(s: GraphStore) -> tuple:
    edges = {eid: s.edges_from[src][eid] for eid, src in s.edge_index.items()}
    return dict(s.nodes), dict(s.node_attachments), edges, dict(s.edge_attachments)


def random_op(data: st.DataObject, s: GraphStore) -> WarpOp:
    """One op that is valid against the current store."""
    kinds = ["upsert_node", "upsert_edge", "alpha"]
    if s.edge_index:
        kinds += ["delete_edge", "beta"]
    isolated = [n for n in s.nodes if n != ROOT and not s.edges_from.get(n) and not s.edges_to.get(n)]
    if isolated:
        kinds.append("delete_node")
    kind = data.draw(st.sampled_from(kinds))
    atom = st.one_of(st.none(), st.builds(AtomPayload, st.sampled_from(T), st.binary(max_size=6)))
    if kind == "upsert_node":
        return UpsertNode(W, data.draw(st.sampled_from(NODES)), NodeRecord(data.draw(st.sampled_from(T))))
    if kind == "upsert_edge":
        rec = EdgeRecord(data.draw(st.sampled_from(EDGES)), data.draw(st.sampled_from(NODES)),
                         data.draw(st.sampled_from(NODES)), data.draw(st.sampled_from(T)))
        return UpsertEdge(W, rec)
    if kind == "alpha":
        if not s.nodes:
            return UpsertNode(W, ROOT, NodeRecord(T[0]))
        return SetAttachment(node_alpha(W, data.draw(st.sampled_from(sorted(s.nodes)))), data.draw(atom))
    if kind == "delete_edge":
        eid = data.draw(st.sampled_from(sorted(s.edge_index)))
        return DeleteEdge(W, s.edge_index[eid], eid)
    if kind == "beta":
        return SetAttachment(edge_beta(W, data.draw(st.sampled_from(sorted(s.edge_index)))), data.draw(atom))
    return DeleteNode(W, data.draw(st.sampled_from(sorted(isolated))))


def reference_diff(before: tuple, after: tuple) -> list[WarpOp]:
    """Echo's ``diff_state`` over whole single-warp stores, written out naively (plus our one deviation:
    a moved edge restates its beta attachment, so the patch replays)."""
    bn, ba, be, bb = before
    an, aa, ae, ab = after
    ops: list[WarpOp] = []
    ops += [DeleteNode(W, n) for n in bn if n not in an]
    ops += [UpsertNode(W, n, r) for n, r in an.items() if bn.get(n) != r]
    ops += [SetAttachment(node_alpha(W, n), aa.get(n)) for n in an if aa.get(n) != (ba.get(n) if n in bn else None)]
    for eid, rec in be.items():
        if eid not in ae:
            ops.append(DeleteEdge(W, rec.from_, eid))
    moved = set()
    for eid, rec in ae.items():
        old = be.get(eid)
        if old != rec:
            if old is not None and old.from_ != rec.from_:
                ops.append(DeleteEdge(W, old.from_, eid))
                moved.add(eid)
            ops.append(UpsertEdge(W, rec))
    for e in ae:
        before_beta = bb.get(e) if e in be and e not in moved else None  # see TickApplier.effective_ops
        if ab.get(e) != before_beta:
            ops.append(SetAttachment(edge_beta(W, e), ab.get(e)))
    return sorted(ops, key=lambda op: op.sort_key())


def state_of(store: GraphStore) -> WarpState:
    return WarpState.from_root_store(store, ROOT)


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_tick_diff_equals_whole_state_diff_and_rolls_back(data: st.DataObject) -> None:
    store = GraphStore(W)  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(T[0]))
    state = state_of(store)
    for _ in range(data.draw(st.integers(0, 25))):  # history before the tick
        apply_ops(state, [random_op(data, store)])
    compute_state_root(state, W, ROOT)  # warm the caches, as a running engine would have them
    before = contents(store)
    root_before = compute_state_root(state, W, ROOT)
    # Draw a tick's ops against a scratch copy (so each is plausible), then apply them as a tick does:
    # in canonical key order, last write wins per key.
    scratch = build(*before)
    batch = []
    for _ in range(data.draw(st.integers(1, 25))):
        op = random_op(data, scratch)
        apply_ops(state_of(scratch), [op])
        batch.append(op)
    applier = TickApplier(state)
    try:
        for op in canonical_ops(batch):
            applier.apply(op)
    except InvalidOperation:
        # The key order can make a batch invalid (e.g. an attachment on a node deleted earlier in key
        # order); the tick then fails and must leave no trace.
        event("tick refused")
        applier.rollback()
        assert contents(store) == before
        assert compute_state_root(state, W, ROOT) == root_before
        return
    event("tick applied")
    after = contents(store)
    ops = applier.effective_ops()
    assert ops == reference_diff(before, after)
    # The diff replays: applying it to a fresh copy of `before` reproduces `after`.
    replica = build(*before)
    apply_ops(state_of(replica), ops, playback=True)
    assert contents(replica) == after
    # Cached incremental state root == a from-scratch one, in any insertion order.
    fresh = state_of(build(*after, order=random.Random(data.draw(st.integers(0, 99)))))
    for prof in (ECHO, SEED):
        assert compute_state_root(state, W, ROOT, prof) == compute_state_root(fresh, W, ROOT, prof)
        assert (store.canonical_state_hash_bytes(prof.dind_state_prefix)
                == fresh.stores[W].canonical_state_hash_bytes(prof.dind_state_prefix))
    # Rollback restores `before` exactly, including the hash caches.
    applier.rollback()
    assert contents(store) == before
    assert compute_state_root(state, W, ROOT) == root_before
    assert compute_state_root(state_of(build(*before)), W, ROOT) == root_before


def _chain(n: int) -> GraphStore:
    s = GraphStore(W)  # type: ignore[arg-type]
    prev = ROOT
    s.insert_node(ROOT, NodeRecord(T[0]))
    for i in range(1, n):
        node = make_node_id(f"c{i}")
        s.insert_node(node, NodeRecord(T[1]))
        s.upsert_edge(EdgeRecord(make_edge_id(f"c{i}"), prev, node, T[2]))
        prev = node
    return s


def test_unreachable_nodes_do_not_affect_hash() -> None:
    s = _chain(5)
    state = state_of(s)
    root = compute_state_root(state, W, ROOT)
    s.insert_node(make_node_id("island"), NodeRecord(T[0]))
    s.upsert_edge(EdgeRecord(make_edge_id("island-loop"), make_node_id("island"), make_node_id("c2"), T[2]))
    assert compute_state_root(state, W, ROOT) == root  # an edge *into* the reachable set changes nothing
    # ...but the DIND hash covers the whole store
    assert s.canonical_state_hash_bytes(b"") != _chain(5).canonical_state_hash_bytes(b"")


def test_reachable_edges_and_attachments_affect_hash() -> None:
    s = _chain(5)
    state = state_of(s)
    root = compute_state_root(state, W, ROOT)
    s.set_edge_attachment(make_edge_id("c3"), AtomPayload(T[0], b"x"))
    r2 = compute_state_root(state, W, ROOT)
    assert r2 != root
    s.set_node_attachment(make_node_id("c4"), AtomPayload(T[0], b""))
    assert compute_state_root(state, W, ROOT) != r2
    s.set_node_attachment(make_node_id("c4"), None)
    assert compute_state_root(state, W, ROOT) == r2


def test_state_root_bytes_layout_of_a_single_node() -> None:
    s = GraphStore(W)  # type: ignore[arg-type]
    s.insert_node(ROOT, NodeRecord(T[0]))
    got = state_root_bytes(state_of(s), W, ROOT, ECHO)
    assert got == b"echo:state_root:v1\x00" + W + ROOT + W + ROOT + b"\x00" + ROOT + T[0] + b"\x00"
    assert state_root_bytes(state_of(s), W, ROOT, SEED) == got[len(b"echo:state_root:v1\x00"):]


def test_empty_buckets_never_linger() -> None:
    s = _chain(3)
    s.delete_edge(ROOT, make_edge_id("c1"))
    assert ROOT not in s.edges_from
    assert s.sorted_bucket_owners() == sorted(s.edges_from)
