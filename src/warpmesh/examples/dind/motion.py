"""The root of Echo's DIND world, its motion payload and its one rule, ``pos += vel`` (a pure core).

``TYPEID_PAYLOAD_MOTION_V2`` is six little-endian i64 in Q32.32 fixed point: position, then velocity.
The DIND kernel (:mod:`warpmesh.examples.dind.kernel`) moves its entities with :func:`advance`, and so
do replicated worlds (:mod:`warpmesh.world.rules`), which first add the tick's pushes to the velocity.
Arithmetic wraps at 64 bits, like Rust's ``wrapping_add`` in Echo, so golden hashes match.
"""

from __future__ import annotations

import struct

from warpmesh.engine import AtomPayload, Footprint, GraphView, NodeId, make_node_id, make_type_id
from warpmesh.examples.dind.typeids import TYPEID_PAYLOAD_MOTION_V2

__all__ = ["MOTION", "ONE", "WORLD_ROOT", "WORLD_TYPE", "advance", "has_motion", "motion_of", "motion_payload", "own_motion_footprint",
           "wrap_i64"]

#: The root node of the DIND kernel's world; replicated worlds (:mod:`warpmesh.world.rules`) use the same.
WORLD_ROOT = make_node_id("world-root")
WORLD_TYPE = make_type_id("world")
ONE = 1 << 32  # Q32.32 fixed point
#: The payload layout: x, y, z, vx, vy, vz.
MOTION = struct.Struct("<6q")
_I64 = 1 << 63
_ZERO = (0, 0, 0)


def wrap_i64(v: int) -> int:
    """``v`` wrapped into the signed 64-bit range."""
    return ((v + _I64) % (1 << 64)) - _I64


def motion_of(view: GraphView, node: NodeId) -> tuple[int, ...] | None:
    """The motion payload of ``node``'s alpha attachment, or ``None`` if it carries none."""
    att = view.node_attachment(node)
    if type(att) is not AtomPayload or att.type_id != TYPEID_PAYLOAD_MOTION_V2 or len(att.data) != 48:
        return None
    return MOTION.unpack(att.data)


def has_motion(view: GraphView, scope: NodeId) -> bool:
    """Matcher: ``scope`` carries a motion payload."""
    return motion_of(view, scope) is not None


def own_motion_footprint(view: GraphView, scope: NodeId) -> Footprint:
    """Footprint of a rule that reads and rewrites only ``scope``'s own motion."""
    return Footprint(view.warp_id).read_node(scope).read_alpha(scope).write_alpha(scope)


def motion_payload(m: tuple[int, ...]) -> AtomPayload:
    """The attachment holding motion ``m`` (six ints)."""
    return AtomPayload(TYPEID_PAYLOAD_MOTION_V2, MOTION.pack(*m))


def advance(m: tuple[int, ...], dv: tuple[int, int, int] = _ZERO) -> tuple[int, ...]:
    """One step of motion ``m``: add ``dv`` to the velocity, then ``pos += vel`` (both wrapping i64)."""
    x, y, z, vx, vy, vz = m
    if dv is not _ZERO:
        vx, vy, vz = wrap_i64(vx + dv[0]), wrap_i64(vy + dv[1]), wrap_i64(vz + dv[2])
    return (wrap_i64(x + vx), wrap_i64(y + vy), wrap_i64(z + vz), vx, vy, vz)
