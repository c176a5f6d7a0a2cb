"""Attachments: the data carried by nodes (alpha plane) and edges (beta plane).

An attachment value is either an :class:`AtomPayload` (typed opaque bytes) or a :class:`Descend` portal
into a child warp instance. Keys and values have one canonical byte encoding each (reference §2.1),
shared by the state root and the patch digest.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from warpmesh.engine.ident import EdgeId, NodeId, TypeId, WarpId

__all__ = [
    "EDGE",
    "NODE",
    "PLANE_ALPHA",
    "PLANE_BETA",
    "AtomPayload",
    "AttachmentKey",
    "AttachmentValue",
    "Descend",
    "edge_beta",
    "encode_attachment_key",
    "encode_opt_attachment_key",
    "encode_opt_attachment_value",
    "node_alpha",
]

NODE = 1  # owner tags (AttachmentKey::tag)
EDGE = 2
PLANE_ALPHA = 1
PLANE_BETA = 2

_u64 = struct.Struct("<Q").pack


class AtomPayload(NamedTuple):
    """Typed opaque bytes: ``type_id`` says how to read ``data``."""

    type_id: TypeId
    data: bytes


class Descend(NamedTuple):
    """A portal: the owner descends into the child warp instance ``warp_id``."""

    warp_id: WarpId


AttachmentValue = AtomPayload | Descend


class AttachmentKey(NamedTuple):
    """Which attachment slot: a node's alpha plane or an edge's beta plane, in a given warp.

    Field order is the derived ``Ord`` of Echo's key (owner kind, owner warp, owner id, plane); since only
    (node, alpha) and (edge, beta) are valid, comparing these tuples orders exactly like Echo.
    """

    owner_tag: int
    warp_id: WarpId
    local_id: bytes
    plane_tag: int

    @property
    def is_node(self) -> bool:
        """True for a node's alpha slot."""
        return self.owner_tag == NODE


def node_alpha(warp_id: WarpId, node: NodeId) -> AttachmentKey:
    """The alpha attachment slot of ``node`` in ``warp_id``."""
    return AttachmentKey(NODE, warp_id, node, PLANE_ALPHA)


def edge_beta(warp_id: WarpId, edge: EdgeId) -> AttachmentKey:
    """The beta attachment slot of ``edge`` in ``warp_id``."""
    return AttachmentKey(EDGE, warp_id, edge, PLANE_BETA)


def encode_attachment_key(key: tuple[int, bytes, bytes, int]) -> bytes:
    """``owner_tag u8 ‖ plane_tag u8 ‖ warp_id ‖ local_id``."""
    owner, warp, local, plane = key
    return bytes((owner, plane)) + warp + local


def encode_opt_attachment_key(key: tuple[int, bytes, bytes, int] | None) -> bytes:
    """``00`` for none, else ``01 ‖ attkey``."""
    if key is None:
        return b"\x00"
    return b"\x01" + encode_attachment_key(key)


def encode_opt_attachment_value(value: AttachmentValue | None) -> bytes:
    """``00`` for none; ``01 01 ‖ type_id ‖ u64le(len) ‖ bytes`` for an atom; ``01 02 ‖ warp`` for a portal."""
    if value is None:
        return b"\x00"
    if type(value) is AtomPayload:
        return b"\x01\x01" + value[0] + _u64(len(value[1])) + value[1]
    return b"\x01\x02" + value[0]
