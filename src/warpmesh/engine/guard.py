"""The footprint guard: executors may touch only what their rule declared (Echo ``footprint_guard.rs``).

:class:`GuardedView` is a :class:`~warpmesh.engine.graph.GraphView` that refuses reads outside the
footprint; :func:`check_write` refuses emitted ops outside the write sets. :func:`footprint_slice` copies
exactly the readable part of a store, which is what a rewrite ships to another process: running an
executor against its slice is indistinguishable from running it against the guarded full store.
"""

from __future__ import annotations

from collections.abc import Iterator

from warpmesh.engine.attachment import EDGE, NODE, PLANE_ALPHA, PLANE_BETA, AttachmentValue
from warpmesh.engine.errors import CrossWarpEmission, FootprintViolation
from warpmesh.engine.footprint import COMPACT_ALPHA_READ, COMPACT_ALPHA_WRITE, Footprint
from warpmesh.engine.graph import EdgeRecord, GraphStore, GraphView, NodeRecord
from warpmesh.engine.ident import EdgeId, NodeId
from warpmesh.engine.ops import (
    DeleteEdge,
    DeleteNode,
    DeleteWarpInstance,
    OpenPortal,
    SetAttachment,
    UpsertEdge,
    UpsertNode,
    UpsertWarpInstance,
    WarpOp,
)

__all__ = ["GuardedView", "check_write", "footprint_slice"]


class GuardedView(GraphView):
    """A read-only view that raises :class:`FootprintViolation` on undeclared reads.

    Allowed: ``node``/``has_node``/``edges_from``/``edges_to`` of declared nodes (read or write),
    ``node_attachment`` of declared alpha slots, ``edge`` of declared edges, ``edge_attachment`` of declared
    beta slots. Whole-graph scans are refused: they cannot be declared.
    """

    __slots__ = ("_fp", "_w")

    def __init__(self, store: GraphStore, footprint: Footprint) -> None:
        self._s = store
        self._fp = footprint
        self._w = store.warp_id

    # The checks read the footprint's private sets or its compact form (see Footprint): its public sets
    # would turn a compact footprint into explicit sets. Edge and beta checks need the sets (a fresh or
    # compact footprint declares no edge, so putting it in sets changes no answer).
    def _node_ok(self, node_id: bytes) -> None:
        if not self._fp.reads_or_writes_node(self._w, node_id):
            raise FootprintViolation(f"read of undeclared node {node_id.hex()}")

    def node(self, node_id: NodeId) -> NodeRecord | None:
        self._node_ok(node_id)
        return self._s.nodes.get(node_id)

    def has_node(self, node_id: NodeId) -> bool:
        self._node_ok(node_id)
        return node_id in self._s.nodes

    def node_attachment(self, node_id: NodeId) -> AttachmentValue | None:
        fp = self._fp
        # The compact footprint of the rewrite's own node, inline (a fresh one's zero shape stops the test
        # before ``_one``, which it does not have; in sets ``_one`` is None).
        if fp._shape & (COMPACT_ALPHA_READ | COMPACT_ALPHA_WRITE) and fp._one == node_id and fp._cw == self._w:
            return self._s.node_attachments.get(node_id)
        if fp.reads_or_writes_alpha(self._w, node_id):
            return self._s.node_attachments.get(node_id)
        raise FootprintViolation(f"read of undeclared alpha attachment of {node_id.hex()}")

    def edge(self, edge_id: EdgeId) -> EdgeRecord | None:
        k = (self._w, edge_id)
        self._fp._spill()
        if k not in self._fp._e_read and k not in self._fp._e_write:
            raise FootprintViolation(f"read of undeclared edge {edge_id.hex()}")
        return super().edge(edge_id)

    def edge_attachment(self, edge_id: EdgeId) -> AttachmentValue | None:
        k = (EDGE, self._w, edge_id, PLANE_BETA)
        self._fp._spill()
        if k not in self._fp._a_read and k not in self._fp._a_write:
            raise FootprintViolation(f"read of undeclared beta attachment of {edge_id.hex()}")
        return self._s.edge_attachments.get(edge_id)

    def edges_from(self, node_id: NodeId) -> Iterator[EdgeRecord]:
        self._node_ok(node_id)
        return super().edges_from(node_id)

    def edges_to(self, node_id: NodeId) -> Iterator[EdgeRecord]:
        self._node_ok(node_id)
        return super().edges_to(node_id)

    def nodes(self) -> Iterator[tuple[NodeId, NodeRecord]]:
        raise FootprintViolation("executors may not scan the whole graph; declare the nodes they read")

    def node_count(self) -> int:
        raise FootprintViolation("executors may not scan the whole graph; declare the nodes they read")

    def edge_count(self) -> int:
        raise FootprintViolation("executors may not scan the whole graph; declare the nodes they read")


def footprint_slice(store: GraphStore, fp: Footprint) -> GraphStore:
    """A new store holding exactly what a :class:`GuardedView` with ``fp`` may read from ``store``."""
    w = store.warp_id
    s = GraphStore(w)
    nodes = {n for ww, n in fp.n_read | fp.n_write if ww == w}
    for n in nodes:
        rec = store.nodes.get(n)
        if rec is not None:
            s.nodes[n] = rec
        bucket = store.edges_from.get(n)
        if bucket:
            for rec_e in bucket.values():
                s.upsert_edge(rec_e)
        incoming = store.edges_to.get(n)
        if incoming:
            for eid in incoming:
                s.upsert_edge(store.edges_from[store.edge_index[eid]][eid])
    for ww, e in fp.e_read | fp.e_write:
        if ww == w:
            rec_e = store.edge(e)
            if rec_e is not None:
                s.upsert_edge(rec_e)
    for owner, ww, local, _plane in fp.a_read | fp.a_write:
        if ww != w:
            continue
        if owner == NODE:
            v = store.node_attachments.get(local)
            if v is not None:
                s.node_attachments[local] = v
        else:
            v = store.edge_attachments.get(local)
            if v is not None:
                s.edge_attachments[local] = v
    return s


def check_write(op: WarpOp, fp: Footprint, warp: bytes, system: bool) -> None:
    """Refuse ``op`` unless the footprint declares its targets (Echo's write rules, reference §5)."""
    t = type(op)
    if t is SetAttachment:
        key = op.key
        if key[1] != warp:
            raise CrossWarpEmission(f"attachment op into warp {key[1].hex()} from a rewrite in {warp.hex()}")
        if not fp.writes_attachment(key):
            raise FootprintViolation(f"SetAttachment of undeclared slot {key[2].hex()}")
    elif t is UpsertNode or t is DeleteNode:
        if op.warp_id != warp:
            raise CrossWarpEmission(f"op into warp {op.warp_id.hex()} from a rewrite in {warp.hex()}")
        if not fp.writes_node(warp, op.node):
            raise FootprintViolation(f"{t.__name__} of undeclared node {op.node.hex()}")
        if t is DeleteNode and not fp.writes_attachment((NODE, warp, op.node, PLANE_ALPHA)):
            raise FootprintViolation(f"DeleteNode {op.node.hex()} must declare its alpha attachment written")
    elif t is UpsertEdge or t is DeleteEdge:
        if op.warp_id != warp:
            raise CrossWarpEmission(f"op into warp {op.warp_id.hex()} from a rewrite in {warp.hex()}")
        eid, src = (op.record[0], op.record[1]) if t is UpsertEdge else (op.edge_id, op.from_)
        fp._spill()  # edges are only ever declared in sets
        if not fp.writes_node(warp, src):
            raise FootprintViolation(f"{t.__name__} {eid.hex()}: source node {src.hex()} not declared written")
        if (warp, eid) not in fp._e_write:
            raise FootprintViolation(f"{t.__name__} of undeclared edge {eid.hex()}")
        if t is DeleteEdge and (EDGE, warp, eid, PLANE_BETA) not in fp._a_write:
            raise FootprintViolation(f"DeleteEdge {eid.hex()} must declare its beta attachment written")
    elif t is OpenPortal or t is UpsertWarpInstance or t is DeleteWarpInstance:
        if not system:
            raise FootprintViolation(f"{t.__name__} is reserved for system rules")
        if t is OpenPortal:
            if op.key[1] != warp:
                raise CrossWarpEmission("OpenPortal owner must live in the rewrite's warp")
            if not fp.writes_attachment(tuple(op.key)):
                raise FootprintViolation("OpenPortal must declare its owner slot written")
