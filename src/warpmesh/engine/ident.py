"""Content-addressed identifiers (Echo ``ident.rs``, ``inbox.rs``, ``parallel/shard.rs``).

Every id is the raw 32-byte BLAKE3 digest of a domain prefix followed by a label; the prefix keeps a
node id from ever colliding with an edge, type or warp id made from the same label. The newtypes are
:func:`typing.NewType` over ``bytes``: zero runtime cost (an id *is* its 32 bytes, so ``sorted`` orders
them exactly like Rust's ``[u8; 32]`` ``Ord``), while a type checker refuses a ``NodeId`` where an
``EdgeId`` is expected.

Keys pair an id with the warp instance it lives in; they are plain tuples so that the hot paths (footprints,
reservation, slot sets) can build them without a Python-level constructor, and :class:`NodeKey` /
:class:`EdgeKey` compare and hash equal to the plain ``(warp_id, local_id)`` tuples they wrap.
"""

from __future__ import annotations

from typing import NamedTuple, NewType

from blake3 import blake3

__all__ = [
    "HASH_LEN",
    "NUM_SHARDS",
    "SHARD_MASK",
    "ZERO_HASH",
    "EdgeId",
    "EdgeKey",
    "Hash",
    "NodeId",
    "NodeKey",
    "TypeId",
    "WarpId",
    "compute_intent_id",
    "hash_bytes",
    "make_channel_id",
    "make_edge_id",
    "make_node_id",
    "make_rule_id",
    "make_type_id",
    "make_warp_id",
    "pack_port_key",
    "pending_edge_id",
    "scope_hash",
    "shard_of",
]

Hash = NewType("Hash", bytes)
"""A raw 32-byte BLAKE3 digest."""
NodeId = NewType("NodeId", bytes)
TypeId = NewType("TypeId", bytes)
EdgeId = NewType("EdgeId", bytes)
WarpId = NewType("WarpId", bytes)

HASH_LEN = 32
ZERO_HASH = Hash(bytes(32))
#: Frozen protocol constants (tour, appendix B): changing them breaks every recorded history.
NUM_SHARDS = 256
SHARD_MASK = 255


class NodeKey(NamedTuple):
    """A node addressed across warp instances; ordered warp first, like Echo's ``NodeKey``."""

    warp_id: WarpId
    local_id: NodeId


class EdgeKey(NamedTuple):
    """An edge addressed across warp instances; ordered warp first."""

    warp_id: WarpId
    local_id: EdgeId


def hash_bytes(data: bytes) -> Hash:
    """BLAKE3-256 of ``data``, raw 32 bytes."""
    return Hash(blake3(data).digest())


def _prefixed(prefix: bytes, label: str | bytes) -> bytes:
    raw = label.encode() if isinstance(label, str) else label
    return blake3(prefix + raw).digest()


def make_node_id(label: str | bytes) -> NodeId:
    """``blake3("node:" ‖ label)``."""
    return NodeId(_prefixed(b"node:", label))


def make_type_id(label: str | bytes) -> TypeId:
    """``blake3("type:" ‖ label)``."""
    return TypeId(_prefixed(b"type:", label))


def make_edge_id(label: str | bytes) -> EdgeId:
    """``blake3("edge:" ‖ label)``."""
    return EdgeId(_prefixed(b"edge:", label))


def make_warp_id(label: str | bytes) -> WarpId:
    """``blake3("warp:" ‖ label)``."""
    return WarpId(_prefixed(b"warp:", label))


def make_channel_id(label: str | bytes) -> TypeId:
    """``blake3("channel:" ‖ label)`` (materialization channels; a ``TypeId`` in Echo)."""
    return TypeId(_prefixed(b"channel:", label))


def make_rule_id(name: str) -> Hash:
    """The rule id convention of Echo's inbox and DIND rules: ``make_type_id("rule:" ‖ name)``.

    (Echo's demo ``motion/update`` rule uses the other convention, ``blake3("rule:" ‖ name)``; pass such
    an id explicitly when registering.)
    """
    return Hash(_prefixed(b"type:rule:", name))


def compute_intent_id(intent_bytes: bytes) -> Hash:
    """``blake3("intent:" ‖ bytes)``: the id of an ingested intent and of its event node."""
    return Hash(blake3(b"intent:" + intent_bytes).digest())


def pending_edge_id(inbox: NodeId, intent_id: Hash) -> EdgeId:
    """``blake3("edge:" ‖ "sim/inbox/pending:" ‖ inbox ‖ intent_id)`` (queue-membership edge)."""
    return EdgeId(blake3(b"edge:sim/inbox/pending:" + inbox + intent_id).digest())


def scope_hash(rule_id: bytes, warp_id: bytes, local_id: bytes) -> Hash:
    """``blake3(rule_id ‖ scope.warp_id ‖ scope.local_id)`` (no prefix): the scheduler's primary sort key."""
    return Hash(blake3(rule_id + warp_id + local_id).digest())


def shard_of(scope: bytes) -> int:
    """``LE_u64(scope[0..8]) & 255``: the virtual shard a rewrite at ``scope`` executes in (frozen).

    The low byte of a little-endian u64 is simply the first byte.
    """
    return scope[0]


def pack_port_key(node: bytes, port_id: int, dir_in: bool) -> int:
    """Echo's ``pack_port_key``: ``(lo32(node) << 32) | ((port_id & 0x3FFF_FFFF) << 2) | dir_in``.

    ``lo32(node)`` is the low 32 bits of the little-endian u64 in the node id's first 8 bytes; bit 1 is
    always 0.
    """
    lo = int.from_bytes(node[:4], "little")
    return (lo << 32) | ((port_id & 0x3FFF_FFFF) << 2) | (1 if dir_in else 0)
