"""A port of Echo's DIND test kernel: the motion-demo rules (``echo-dind-tests``; reference §3.5).

Intents are ``EINT`` envelopes ingested into the engine's inbox; ``step`` dispatches the pending intent with
the smallest id to the first ``cmd/*`` rule whose matcher accepts it, acknowledges it, and advances the
bouncing ball. The kernel's state hash is the DIND ``canonical_state_hash`` of the root warp's store.

Every executor is a module-level function, so the kernel also runs on a process pool.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from warpmesh.engine import (
    ApplyResult,
    AtomPayload,
    Engine,
    Footprint,
    GraphStore,
    GraphView,
    NodeId,
    NodeRecord,
    NoPending,
    RewriteRule,
    ShardExecutor,
    TickDelta,
    make_edge_id,
    make_node_id,
    make_type_id,
)
from warpmesh.engine.hashing import get_profile
from warpmesh.engine.ident import Hash, hash_bytes
from warpmesh.engine.inbox import ack_pending_rule
from warpmesh.examples.dind.eintlog import unpack_intent
from warpmesh.examples.dind.motion import (
    ONE,
    WORLD_ROOT,
    WORLD_TYPE,
    advance,
    has_motion,
    motion_of,
    motion_payload,
    own_motion_footprint,
)
from warpmesh.examples.dind.typeids import (
    TYPEID_STATE_KV,
    TYPEID_STATE_NAV_OPEN,
    TYPEID_STATE_ROUTE_PATH,
    TYPEID_STATE_THEME,
    TYPEID_VIEW_OP_SHOWTOAST,
)

__all__ = [
    "BALL",
    "OP_DROP_BALL",
    "OP_PUT_KV",
    "OP_ROUTE_PUSH",
    "OP_SET_THEME",
    "OP_TOAST",
    "OP_TOGGLE_NAV",
    "WORLD_ROOT",
    "build_motion_demo_engine",
    "state_hash",
    "step",
]

# Intent op ids (``EINT`` op_id field).
OP_TOAST = 4255241313
OP_ROUTE_PUSH = 2216217860
OP_SET_THEME = 1822649880
OP_TOGGLE_NAV = 3272403183
OP_DROP_BALL = 778504871
OP_PUT_KV = 3000000001

BALL = make_node_id("ball")
ENTITY_TYPE = make_type_id("entity")
INTENT_TYPE = make_type_id("intent")

SIM = make_node_id("sim")
SIM_TYPE = make_type_id("sim")
SIM_STATE = make_node_id("sim/state")
SIM_STATE_TYPE = make_type_id("sim/state")
SIM_STATE_EDGE = make_edge_id("edge:sim/state")
SIM_STATE_EDGE_TYPE = make_type_id("edge:state")
SIM_VIEW = make_node_id("sim/view")
SIM_VIEW_TYPE = make_type_id("sim/view")
VIEW_OP_TYPE = make_type_id("sys/view/op")
VIEW_OP_EDGE_TYPE = make_type_id("edge:view/op")



_T = TypeVar("_T")


# ---------------------------------------------------------------------------------------------- decoding
def _intent(view: GraphView, scope: NodeId) -> tuple[int, bytes] | None:
    att = view.node_attachment(scope)
    if type(att) is not AtomPayload or att.type_id != INTENT_TYPE:
        return None
    return unpack_intent(att.data)


def _decoded(view: GraphView, scope: NodeId, decode: Callable[[bytes], _T | None]) -> _T | None:
    """The args of the intent at ``scope`` decoded by ``decode``; ``None`` without an intent or when the
    args do not decode."""
    got = _intent(view, scope)
    return decode(got[1]) if got else None


def _string(buf: bytes, off: int = 0) -> tuple[str, int] | None:
    """``u32le(len) ‖ utf8`` at ``off``; returns the string and the offset after it."""
    if len(buf) < off + 4:
        return None
    (n,) = struct.unpack_from("<I", buf, off)
    end = off + 4 + n
    if len(buf) < end:
        return None
    try:
        return buf[off + 4:end].decode("utf-8"), end
    except UnicodeDecodeError:
        return None


def _lp(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def _decode_route(vars_: bytes) -> str | None:
    got = _string(vars_)
    return got[0] if got is not None and got[1] == len(vars_) else None


def _decode_theme(vars_: bytes) -> int | None:
    if len(vars_) != 2:
        return None
    (mode,) = struct.unpack("<H", vars_)
    return mode if mode <= 2 else None


def _decode_toast(vars_: bytes) -> str | None:
    return _decode_route(vars_)


def _decode_kv(vars_: bytes) -> tuple[str, str] | None:
    key = _string(vars_)
    if key is None:
        return None
    val = _string(vars_, key[1])
    if val is None or val[1] != len(vars_):
        return None
    return key[0], val[0]


class OpMatcher:
    """Matches an event node whose intent is an ``EINT`` envelope with op id ``op_id`` (picklable)."""

    __slots__ = ("op_id",)

    def __init__(self, op_id: int) -> None:
        self.op_id = op_id

    def __call__(self, view: GraphView, scope: NodeId) -> bool:
        got = _intent(view, scope)
        return got is not None and got[0] == self.op_id

    def __repr__(self) -> str:
        return f"OpMatcher({self.op_id})"


# ---------------------------------------------------------------------------------------------- state rules
def _state_path_footprint(view: GraphView, scope: NodeId, path: str) -> Footprint:
    node = make_node_id(path)
    return (
        Footprint(view.warp_id)
        .read_node(scope).read_alpha(scope)
        .write_node(SIM).write_node(SIM_STATE).write_node(node)
        .write_edge(SIM_STATE_EDGE).write_edge(make_edge_id("edge:" + path))
        .write_alpha(node)
    )


def _emit_state(delta: TickDelta, path: str, leaf: str, node_type: bytes, edge_type_label: str,
                type_id: bytes, data: bytes) -> None:
    node = make_node_id(path)
    delta.upsert_node(SIM, SIM_TYPE)
    delta.upsert_node(SIM_STATE, SIM_STATE_TYPE)
    delta.upsert_edge(SIM_STATE_EDGE, SIM, SIM_STATE, SIM_STATE_EDGE_TYPE)
    delta.upsert_node(node, node_type)  # type: ignore[arg-type]
    delta.upsert_edge(make_edge_id("edge:" + path), SIM_STATE, node, make_type_id(edge_type_label))
    delta.set_node_attachment(node, AtomPayload(type_id, data))  # type: ignore[arg-type]


ROUTE_PATH = "sim/state/routePath"
THEME_PATH = "sim/state/theme"
NAV_PATH = "sim/state/navOpen"


def route_push_footprint(view: GraphView, scope: NodeId) -> Footprint:
    return _state_path_footprint(view, scope, ROUTE_PATH)


def route_push_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    path = _decoded(view, scope, _decode_route)
    if path is None:
        return
    _emit_state(delta, ROUTE_PATH, "routePath", make_type_id(ROUTE_PATH), "edge:routePath",
                TYPEID_STATE_ROUTE_PATH, _lp(path.encode()))


def set_theme_footprint(view: GraphView, scope: NodeId) -> Footprint:
    if _decoded(view, scope, _decode_theme) is None:
        # Echo's minimal_decode_footprint: undecodable args still match, read only the event.
        return Footprint(view.warp_id).read_node(scope).read_alpha(scope)
    return _state_path_footprint(view, scope, THEME_PATH)


def set_theme_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    mode = _decoded(view, scope, _decode_theme)
    if mode is None:
        return
    _emit_state(delta, THEME_PATH, "theme", make_type_id(THEME_PATH), "edge:theme", TYPEID_STATE_THEME,
                struct.pack("<H", mode))


def toggle_nav_footprint(view: GraphView, scope: NodeId) -> Footprint:
    return _state_path_footprint(view, scope, NAV_PATH).read_alpha(make_node_id(NAV_PATH))


def toggle_nav_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    current = view.node_attachment(make_node_id(NAV_PATH))
    is_open = type(current) is AtomPayload and current.data[:1] == b"\x01"
    _emit_state(delta, NAV_PATH, "navOpen", make_type_id(NAV_PATH), "edge:navOpen", TYPEID_STATE_NAV_OPEN,
                b"\x00" if is_open else b"\x01")


def put_kv_footprint(view: GraphView, scope: NodeId) -> Footprint:
    kv = _decoded(view, scope, _decode_kv)
    if kv is None:
        return Footprint(view.warp_id).read_node(scope).read_alpha(scope)
    return _state_path_footprint(view, scope, "sim/state/kv/" + kv[0])


def put_kv_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    kv = _decoded(view, scope, _decode_kv)
    if kv is None:
        return
    path = "sim/state/kv/" + kv[0]
    _emit_state(delta, path, "kv", make_type_id("sim/state/kv"), "edge:kv", TYPEID_STATE_KV,
                _lp(kv[1].encode()))


# ---------------------------------------------------------------------------------------------- toast
def toast_footprint(view: GraphView, scope: NodeId) -> Footprint:
    fp = Footprint(view.warp_id).read_node(scope).read_alpha(scope).write_node(SIM_VIEW)
    op = make_node_id("sim/view/op:" + scope.hex())
    return fp.write_node(op).write_edge(make_edge_id("edge:view/op:" + scope.hex())).write_alpha(op)


def _toast(view: GraphView, scope: NodeId, delta: TickDelta, label: str) -> None:
    msg = _decoded(view, scope, _decode_toast)
    if msg is None:
        return
    op = make_node_id("sim/view/op:" + label)
    delta.upsert_node(SIM_VIEW, SIM_VIEW_TYPE)
    delta.upsert_node(op, VIEW_OP_TYPE)
    delta.upsert_edge(make_edge_id("edge:view/op:" + label), SIM_VIEW, op, VIEW_OP_EDGE_TYPE)
    delta.set_node_attachment(op, AtomPayload(TYPEID_VIEW_OP_SHOWTOAST, msg.encode()))


def toast_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    _toast(view, scope, delta, scope.hex())


def toast_execute_seed(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    _toast(view, scope, delta, f"{len(delta):016}")


def toast_footprint_seed(view: GraphView, scope: NodeId) -> Footprint:
    # The seed-era label is only known at execution time, so the footprint cannot name the op node;
    # the seed profile therefore runs with the footprint guard off (as Echo's release builds did).
    return Footprint(view.warp_id).read_node(scope).read_alpha(scope).write_node(SIM_VIEW)


# ---------------------------------------------------------------------------------------------- ball
def drop_ball_footprint(view: GraphView, scope: NodeId) -> Footprint:
    return Footprint(view.warp_id).read_node(scope).read_alpha(scope).write_node(BALL).write_alpha(BALL)


def drop_ball_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    delta.upsert_node(BALL, ENTITY_TYPE)
    delta.set_node_attachment(BALL, motion_payload((0, 400 * ONE, 0, 0, -5 * ONE, 0)))


def ball_matches(view: GraphView, scope: NodeId) -> bool:
    m = motion_of(view, scope)
    return m is not None and (m[1] != 0 or m[3] != 0 or m[4] != 0 or m[5] != 0)


def ball_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    m = motion_of(view, scope)
    if m is None:
        return
    x, y, z, vx, vy, vz = m
    if y > 0:
        vy -= ONE
    y += vy
    if y <= 0:
        y = 0
        vx = vy = vz = 0
    delta.set_node_attachment(scope, motion_payload((x, y, z, vx, vy, vz)))


# ---------------------------------------------------------------------------------------------- motion
MOTION_RULE_ID = Hash(hash_bytes(b"rule:motion/update"))  # Echo's demo convention: blake3("rule:" ‖ name)


def motion_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    """``pos += vel`` in Q32.32 (wrapping i64, like Rust's ``wrapping_add``)."""
    m = motion_of(view, scope)
    if m is not None:
        delta.set_node_attachment(scope, motion_payload(advance(m)))


# ---------------------------------------------------------------------------------------------- engine
def build_motion_demo_engine(profile: str = "echo", workers: int = 1, executor: ShardExecutor | None = None) -> Engine:
    """Echo's ``build_motion_demo_engine`` with the harness's ``dind_ops`` feature (``cmd/put_kv``) on.

    Rules are registered in Echo's order, so compact ids and the rule pack match. The ``seed`` profile
    reproduces seed-era Echo: its toast labels view ops by a per-tick op counter, which is only defined
    for serial execution, so that profile always runs one worker with the footprint guard off.
    """
    prof = get_profile(profile)
    store = GraphStore(b"")  # type: ignore[arg-type]  # Engine renames it to make_warp_id("root")
    store.insert_node(WORLD_ROOT, NodeRecord(WORLD_TYPE))
    seed = prof.name == "seed"
    engine = Engine(store, WORLD_ROOT, profile=prof, workers=1 if seed else workers, footprint_guard=not seed,
                    executor=None if seed else executor)
    toast = (toast_footprint_seed, toast_execute_seed) if seed else (toast_footprint, toast_execute)
    rules = [
        RewriteRule("motion/update", has_motion, motion_execute, own_motion_footprint, MOTION_RULE_ID),
        RewriteRule("cmd/toast", OpMatcher(OP_TOAST), toast[1], toast[0]),
        RewriteRule("cmd/route_push", OpMatcher(OP_ROUTE_PUSH), route_push_execute, route_push_footprint),
        RewriteRule("cmd/set_theme", OpMatcher(OP_SET_THEME), set_theme_execute, set_theme_footprint),
        RewriteRule("cmd/toggle_nav", OpMatcher(OP_TOGGLE_NAV), toggle_nav_execute, toggle_nav_footprint),
        RewriteRule("cmd/drop_ball", OpMatcher(OP_DROP_BALL), drop_ball_execute, drop_ball_footprint),
        RewriteRule("physics/ball", ball_matches, ball_execute, own_motion_footprint),
        RewriteRule("cmd/put_kv", OpMatcher(OP_PUT_KV), put_kv_execute, put_kv_footprint),
        ack_pending_rule(),
    ]
    for rule in rules:
        engine.register_rule(rule)
    return engine


def step(engine: Engine) -> bool:
    """One kernel step: dispatch the next intent, advance the ball; commit if anything was enqueued.

    Returns whether a tick was committed.
    """
    tx = engine.begin()
    dispatched = engine.dispatch_next_intent(tx)
    ball = engine.apply(tx, "physics/ball", BALL)
    if isinstance(dispatched, NoPending) and ball is ApplyResult.NO_MATCH:
        engine.abort(tx)
        return False
    engine.commit(tx)
    return True


def state_hash(engine: Engine) -> Hash:
    """The DIND hash: ``canonical_state_hash`` of the root warp's store under the engine's profile."""
    store = engine.state.stores[engine.root_key.warp_id]
    return hash_bytes(store.canonical_state_hash_bytes(engine.profile.dind_state_prefix))
