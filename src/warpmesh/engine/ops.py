"""Graph operations (Echo ``WarpOp``), their canonical sort key and their patch-digest encoding.

Every op has a 97-byte sort key ``kind u8 ‖ warp ‖ a ‖ b`` (Echo's ``WarpOpKey``; reference §2.5). Comparing
the key bytes is exactly the derived ``Ord`` of Echo's struct, so a plain ``sorted`` orders ops
canonically. Note the kinds of the *sort key* differ from the tags of the *digest encoding*.

Ops are immutable named tuples. Two ops of different kinds never share a key, so comparing two ops found
under the same key compares like with like.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from warpmesh.engine.attachment import (
    AttachmentKey,
    AttachmentValue,
    encode_attachment_key,
    encode_opt_attachment_key,
    encode_opt_attachment_value,
)
from warpmesh.engine.graph import EdgeRecord, NodeRecord
from warpmesh.engine.ident import EdgeId, NodeId, WarpId

__all__ = [
    "DeleteEdge",
    "DeleteNode",
    "DeleteWarpInstance",
    "OpenPortal",
    "SetAttachment",
    "UpsertEdge",
    "UpsertNode",
    "UpsertWarpInstance",
    "WarpOp",
    "attachment_key_slot",
]

_u64 = struct.Struct("<Q").pack
_Z32 = bytes(32)
_Z30 = bytes(30)


def attachment_key_slot(key: AttachmentKey) -> tuple[bytes, bytes]:
    """The ``(a, b)`` key fields of an attachment-addressed op: ``([owner, plane, 0×30], owner_id)``."""
    return bytes((key[0], key[3])) + _Z30, key[2]


class OpenPortal(NamedTuple):
    """Create (``init_root`` given) or adopt (``init_root`` None) the child instance, and point ``key`` at it."""

    key: AttachmentKey
    child_warp: WarpId
    child_root: NodeId
    init_root: NodeRecord | None

    def sort_key(self) -> bytes:
        k = self.key
        return b"\x01" + k[1] + bytes((k[0], k[3])) + _Z30 + k[2]

    def encode(self) -> bytes:
        init = b"\x00" if self.init_root is None else b"\x01" + self.init_root[0]
        return b"\x08" + encode_attachment_key(self.key) + self.child_warp + self.child_root + init


class UpsertWarpInstance(NamedTuple):
    """Create or update a warp instance's metadata (its store is created empty if missing)."""

    warp_id: WarpId
    root_node: NodeId
    parent: AttachmentKey | None

    def sort_key(self) -> bytes:
        return b"\x02" + self.warp_id + self.warp_id + _Z32

    def encode(self) -> bytes:
        return b"\x01" + self.warp_id + self.root_node + encode_opt_attachment_key(self.parent)


class DeleteWarpInstance(NamedTuple):
    """Remove a warp instance and its store."""

    warp_id: WarpId

    def sort_key(self) -> bytes:
        return b"\x03" + self.warp_id + self.warp_id + _Z32

    def encode(self) -> bytes:
        return b"\x02" + self.warp_id


class DeleteEdge(NamedTuple):
    """Delete edge ``edge_id`` whose source is exactly ``from_``."""

    warp_id: WarpId
    from_: NodeId
    edge_id: EdgeId

    def sort_key(self) -> bytes:
        return b"\x04" + self.warp_id + self.from_ + self.edge_id

    def encode(self) -> bytes:
        return b"\x06" + self.warp_id + self.from_ + self.edge_id


class DeleteNode(NamedTuple):
    """Delete an isolated node (and its alpha attachment)."""

    warp_id: WarpId
    node: NodeId

    def sort_key(self) -> bytes:
        return b"\x05" + self.warp_id + self.node + _Z32

    def encode(self) -> bytes:
        return b"\x04" + self.warp_id + self.node


class UpsertNode(NamedTuple):
    """Insert or replace a node's record (its attachment is untouched)."""

    warp_id: WarpId
    node: NodeId
    record: NodeRecord

    def sort_key(self) -> bytes:
        return b"\x06" + self.warp_id + self.node + _Z32

    def encode(self) -> bytes:
        return b"\x03" + self.warp_id + self.node + self.record[0]


class UpsertEdge(NamedTuple):
    """Insert or replace an edge by id."""

    warp_id: WarpId
    record: EdgeRecord

    def sort_key(self) -> bytes:
        r = self.record
        return b"\x07" + self.warp_id + r[1] + r[0]

    def encode(self) -> bytes:
        r = self.record
        # Field order (warp, from, id, to, ty) differs from the state root's on purpose: it is Echo's.
        return b"\x05" + self.warp_id + r[1] + r[0] + r[2] + r[3]


class SetAttachment(NamedTuple):
    """Set (or clear, with ``value`` None) the attachment in slot ``key``."""

    key: AttachmentKey
    value: AttachmentValue | None

    def sort_key(self) -> bytes:
        k = self.key
        return b"\x08" + k[1] + bytes((k[0], k[3])) + _Z30 + k[2]

    def encode(self) -> bytes:
        return b"\x07" + encode_attachment_key(self.key) + encode_opt_attachment_value(self.value)


WarpOp = OpenPortal | UpsertWarpInstance | DeleteWarpInstance | DeleteEdge | DeleteNode | UpsertNode | UpsertEdge | SetAttachment
