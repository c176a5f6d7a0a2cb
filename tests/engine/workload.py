"""Rules and a workload driver shared by the engine tests (module level, so they pickle for pools)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from blake3 import blake3

from warpmesh.engine import (
    AtomPayload,
    Engine,
    Footprint,
    GraphStore,
    GraphView,
    NodeId,
    NodeRecord,
    RewriteRule,
    TickDelta,
    make_edge_id,
    make_node_id,
    make_type_id,
)
from warpmesh.engine.inbox import ack_pending_rule

ROOT = make_node_id("world")
ROOT_TYPE = make_type_id("world")
ENTITY = make_type_id("test/entity")
CHILD = make_type_id("test/child")
COUNTER = make_type_id("test/counter")
LINK = make_type_id("edge:test/link")
OWNS = make_type_id("edge:test/owns")
HUB = make_node_id("test/hub")
HUB_TYPE = make_type_id("test/hub")


def entity(i: int) -> NodeId:
    return make_node_id(f"entity-{i}")


def child_of(scope: bytes) -> NodeId:
    return NodeId(blake3(b"child:" + scope).digest())


def link_of(scope: bytes) -> bytes:
    return make_edge_id(b"link:" + scope)


def is_entity(view: GraphView, scope: NodeId) -> bool:
    rec = view.node(scope)
    return rec is not None and rec.ty == ENTITY


# counter: increment the scope's own u64 (independent of every other scope)
def counter_fp(view: GraphView, scope: NodeId) -> Footprint:
    return Footprint(view.warp_id).read_node(scope).write_alpha(scope)


def counter_exec(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    att = view.node_attachment(scope)
    n = int.from_bytes(att.data, "little") if isinstance(att, AtomPayload) else 0
    delta.set_node_attachment(scope, AtomPayload(COUNTER, (n + 1).to_bytes(8, "little")))


# spawn: create a child node, link scope -> child, label the child
def spawn_fp(view: GraphView, scope: NodeId) -> Footprint:
    c = child_of(scope)
    return (Footprint(view.warp_id).read_node(scope).write_node(scope).write_node(c)
            .write_edge(link_of(scope)).write_alpha(c))


def spawn_exec(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    c = child_of(scope)
    delta.upsert_node(c, CHILD)
    delta.upsert_edge(link_of(scope), scope, c, LINK)
    delta.set_node_attachment(c, AtomPayload(COUNTER, scope[:8]))


# prune: remove the child and its link (if present)
def prune_match(view: GraphView, scope: NodeId) -> bool:
    return is_entity(view, scope) and view.edge(link_of(scope)) is not None


def prune_fp(view: GraphView, scope: NodeId) -> Footprint:
    c = child_of(scope)
    e = link_of(scope)
    return (Footprint(view.warp_id).read_node(scope).write_node(scope).write_node(c).read_edge(e)
            .write_edge(e).write_beta(e).write_alpha(c))


def prune_exec(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    delta.delete_edge(scope, link_of(scope))
    delta.delete_node(child_of(scope))


# hub: every scope wants to write the single hub node -> at most one admitted per tick
def hub_fp(view: GraphView, scope: NodeId) -> Footprint:
    return Footprint(view.warp_id).read_node(scope).write_node(HUB).write_alpha(HUB)


def hub_exec(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    delta.upsert_node(HUB, HUB_TYPE)
    delta.set_node_attachment(HUB, AtomPayload(HUB_TYPE, scope))


RULES = ("test/counter", "test/spawn", "test/prune", "test/hub")


def rules() -> list[RewriteRule]:
    return [
        RewriteRule("test/counter", is_entity, counter_exec, counter_fp),
        RewriteRule("test/spawn", is_entity, spawn_exec, spawn_fp),
        RewriteRule("test/prune", prune_match, prune_exec, prune_fp),
        RewriteRule("test/hub", is_entity, hub_exec, hub_fp),
    ]


def world(n_entities: int) -> GraphStore:
    """A root with ``n_entities`` entities, each reachable through an ``owns`` edge."""
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(ROOT_TYPE))
    from warpmesh.engine import EdgeRecord

    for i in range(n_entities):
        store.insert_node(entity(i), NodeRecord(ENTITY))
        store.upsert_edge(EdgeRecord(make_edge_id(f"owns-{i}"), ROOT, entity(i), OWNS))
    return store


def make_engine(n_entities: int, **options: object) -> Engine:
    engine = Engine(world(n_entities), ROOT, **options)  # type: ignore[arg-type]
    for r in rules():
        engine.register_rule(r)
    engine.register_rule(ack_pending_rule())
    return engine


Tick = Sequence[tuple[str, int]]


def run(engine: Engine, ticks: Sequence[Tick], order_rng: random.Random | None = None) -> list[tuple[bytes, ...]]:
    """Apply each tick's ``(rule, entity)`` list (optionally shuffled) and commit; return per-tick hashes."""
    out = []
    for tick in ticks:
        tx = engine.begin()
        applies = list(tick)
        if order_rng is not None:
            order_rng.shuffle(applies)
        for name, i in applies:
            engine.apply(tx, name, entity(i))
        snap, receipt, patch = engine.commit_with_receipt(tx)
        assert patch.digest(engine.profile) == snap.patch_digest
        out.append((snap.hash, snap.state_root, snap.patch_digest, snap.decision_digest, snap.plan_digest,
                    snap.rewrites_digest, receipt.blocked_by, patch.ops))
    return out
