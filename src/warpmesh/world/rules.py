"""The world's rules (pure): entities that move in Q32.32 fixed point, driven by intents.

A world is an :class:`~warpmesh.engine.Engine` whose root node ``world-root`` has an ``input`` node and
one node per entity. Each entity's alpha attachment is the motion payload of Echo's DIND kernel
(``TYPEID_PAYLOAD_MOTION_V2``: six little-endian i64, position then velocity, Q32.32).

A tick (:func:`run_tick`) writes the tick number and every intent ordered into it onto the input node
(an out-of-tick write, so the intents are part of the tick's record and of its state root), then applies:

* ``world/spawn`` on the input node, if an intent spawns an entity that does not exist yet;
* ``world/step`` on every entity: add the tick's pushes to its velocity, then ``pos += vel``.

All steps read the input node and write only their own entity, so they never conflict and run on any
number of workers with the same result. Intents are ``[op, name, a, b, c(, d, e, f)]`` msgpack lists;
a malformed intent is ignored by every replica alike (the rules are deterministic).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from warpmesh.engine import (
    AtomPayload,
    Engine,
    Footprint,
    GraphStore,
    GraphView,
    NodeId,
    NodeRecord,
    RewriteRule,
    Snapshot,
    TickDelta,
    make_edge_id,
    make_node_id,
    make_type_id,
)
from warpmesh.engine.graph import EdgeRecord
from warpmesh.engine.ident import NodeKey
from warpmesh.engine.state import WarpState
from warpmesh.examples.dind.motion import (
    ONE,
    WORLD_ROOT,
    WORLD_TYPE,
    advance,
    has_motion,
    motion_of,
    motion_payload,
    wrap_i64,
)
from warpmesh.wire.frame import pack, unpack

__all__ = [
    "ENTITY_TYPE",
    "INPUT",
    "ONE",
    "OP_PUSH",
    "OP_SPAWN",
    "WORLD_ROOT",
    "build_world_engine",
    "entity_id",
    "entity_motion",
    "push",
    "register_world_rules",
    "run_tick",
    "spawn",
]

OP_SPAWN = 1
OP_PUSH = 2

INPUT = make_node_id("world/input")
INPUT_TYPE = make_type_id("world/input")
INPUT_EDGE = make_edge_id("edge:world/input")
INPUT_EDGE_TYPE = make_type_id("edge:input")
ENTITY_TYPE = make_type_id("world/entity")
ENTITY_EDGE_TYPE = make_type_id("edge:entity")

_I64 = 1 << 63


def entity_id(name: str) -> NodeId:
    """The node id of entity ``name``."""
    return make_node_id("world/entity:" + name)


def _entity_edge(name: str) -> bytes:
    return make_edge_id("edge:world/entity:" + name)


def spawn(name: str, pos: tuple[int, int, int] = (0, 0, 0), vel: tuple[int, int, int] = (0, 0, 0)) -> bytes:
    """An intent creating entity ``name`` (whole units; ignored if it exists)."""
    return pack([OP_SPAWN, name, *(p * ONE for p in pos), *(v * ONE for v in vel)])


def push(name: str, dv: tuple[int, int, int]) -> bytes:
    """An intent adding ``dv`` (whole units per tick) to the velocity of entity ``name``."""
    return pack([OP_PUSH, name, *(d * ONE for d in dv)])


def _ok_ints(vals: list[Any]) -> bool:
    return all(type(v) is int and -_I64 <= v < _I64 for v in vals)


@lru_cache(maxsize=8)
def _parse_input(data: bytes) -> tuple[dict[bytes, tuple[str, tuple[int, ...]]], dict[bytes, tuple[int, int, int]]]:
    """(spawns by entity id, summed pushes by entity id) of one tick's input (cached per tick)."""
    spawns: dict[bytes, tuple[str, tuple[int, ...]]] = {}
    pushes: dict[bytes, tuple[int, int, int]] = {}
    try:
        _tick, intents = unpack(data)
    except Exception:
        return spawns, pushes
    for raw in intents if type(intents) is list else ():
        try:
            it = unpack(raw)
        except Exception:
            continue
        if type(it) is not list or len(it) < 2 or type(it[1]) is not str:
            continue
        op, name, args = it[0], it[1], it[2:]
        if not _ok_ints(args):
            continue
        eid = entity_id(name)
        if op == OP_SPAWN and len(args) == 6:
            spawns.setdefault(eid, (name, tuple(args)))  # the first spawn of a name wins
        elif op == OP_PUSH and len(args) == 3:
            old = pushes.get(eid, (0, 0, 0))
            pushes[eid] = (wrap_i64(old[0] + args[0]), wrap_i64(old[1] + args[1]), wrap_i64(old[2] + args[2]))
    return spawns, pushes


def _input_of(view: GraphView) -> bytes:
    att = view.node_attachment(INPUT)
    return att.data if type(att) is AtomPayload and att.type_id == INPUT_TYPE else b""


def _new_spawns(view: GraphView) -> list[tuple[bytes, str, tuple[int, ...]]]:
    spawns, _ = _parse_input(_input_of(view))
    return [(eid, name, args) for eid, (name, args) in sorted(spawns.items()) if not view.has_node(eid)]  # type: ignore[arg-type]


def spawn_matches(view: GraphView, scope: NodeId) -> bool:
    return scope == INPUT and bool(_new_spawns(view))


def spawn_footprint(view: GraphView, scope: NodeId) -> Footprint:
    fp = Footprint(view.warp_id).read_node(scope).read_alpha(scope).write_node(WORLD_ROOT)
    for eid, name, _ in _new_spawns(view):
        fp = fp.write_node(eid).write_edge(_entity_edge(name)).write_alpha(eid)  # type: ignore[arg-type]
    return fp


def spawn_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    for eid, name, args in _new_spawns(view):
        delta.upsert_node(eid, ENTITY_TYPE)  # type: ignore[arg-type]
        delta.upsert_edge(_entity_edge(name), WORLD_ROOT, eid, ENTITY_EDGE_TYPE)  # type: ignore[arg-type]
        delta.set_node_attachment(eid, motion_payload(args))  # type: ignore[arg-type]


def step_footprint(view: GraphView, scope: NodeId) -> Footprint:
    return (Footprint(view.warp_id).read_node(INPUT).read_alpha(INPUT)
            .read_node(scope).read_alpha(scope).write_alpha(scope))


def step_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    m = motion_of(view, scope)
    if m is None:
        return
    dv = _parse_input(_input_of(view))[1].get(scope)
    delta.set_node_attachment(scope, motion_payload(advance(m) if dv is None else advance(m, dv)))


def register_world_rules(engine: Engine) -> Engine:
    """Register the world's rules (in a fixed order, so the rule pack is the same everywhere)."""
    engine.register_rule(RewriteRule("world/spawn", spawn_matches, spawn_execute, spawn_footprint))
    engine.register_rule(RewriteRule("world/step", has_motion, step_execute, step_footprint))
    return engine


def initial_state() -> tuple[WarpState, NodeKey]:
    """The empty world: its root and input node."""
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(WORLD_ROOT, NodeRecord(WORLD_TYPE))
    store.insert_node(INPUT, NodeRecord(INPUT_TYPE))
    store.upsert_edge(EdgeRecord(INPUT_EDGE, WORLD_ROOT, INPUT, INPUT_EDGE_TYPE))
    engine = Engine(store, WORLD_ROOT)
    return engine.state, engine.root_key


def build_world_engine(workers: int = 1, *, restore: tuple[WarpState, Snapshot | None] | None = None) -> Engine:
    """A world engine with ``workers`` shard workers: empty, or resumed from ``restore`` = (state, last)."""
    if restore is None:
        state, root = initial_state()
        engine = Engine.from_state(state, root, workers=workers)
    else:
        state, last = restore
        root = NodeKey(next(w for w, i in state.instances.items() if i.parent is None), WORLD_ROOT)
        engine = Engine.resume_after(state, root, last, workers=workers)
    return register_world_rules(engine)


def run_tick(engine: Engine, tick: int, intents: list[bytes]) -> Snapshot:
    """Commit tick ``tick`` with ``intents`` (in their committed order); returns its snapshot."""
    engine.set_node_attachment(INPUT, AtomPayload(INPUT_TYPE, pack([tick, list(intents)])))
    tx = engine.begin()
    engine.apply(tx, "world/spawn", INPUT)
    view = engine.view()
    for edge in list(view.edges_from(WORLD_ROOT)):
        if edge.ty == ENTITY_EDGE_TYPE:
            engine.apply(tx, "world/step", edge.to)
    return engine.commit(tx)


def entity_motion(engine: Engine, name: str) -> tuple[int, ...] | None:
    """(x, y, z, vx, vy, vz) of entity ``name`` in Q32.32, or None."""
    return motion_of(engine.view(), entity_id(name))
