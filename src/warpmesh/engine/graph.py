"""``GraphStore`` (one warp instance's nodes, edges and attachments) and the read-only ``GraphView``.

Edges are indexed four ways, so every direction of traversal is one dict lookup (tour §1, step [6]):
``edge_index`` (edge → source), ``edge_to_index`` (edge → target), ``edges_from`` (source → its edges) and
``edges_to`` (target → the ids of edges arriving there).

The store also keeps what the state root needs between ticks, because most of a graph does not change
from one tick to the next: the canonical byte chunk of every node and of every out-edge bucket, and the
sorted order of node ids and bucket owners. A mutation drops only the chunks it touches; hashing then
re-encodes those few and joins the rest. None of this changes a single hashed byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from collections.abc import Set as AbstractSet
from itertools import repeat
from operator import itemgetter
from typing import NamedTuple

from warpmesh.engine.attachment import AtomPayload, AttachmentValue, Descend, encode_opt_attachment_value
from warpmesh.engine.errors import InvalidOperation, NodeNotIsolated
from warpmesh.engine.ident import EdgeId, NodeId, TypeId, WarpId

__all__ = ["EdgeRecord", "GraphStore", "GraphView", "NodeRecord", "ordered_ids"]

_u64 = struct.Struct("<Q").pack
_ONE = _u64(1)
_first = itemgetter(0)
_second = itemgetter(1)


class NodeRecord(NamedTuple):
    """A node's record: its type. (The node's data lives in its alpha attachment.)"""

    ty: TypeId


class EdgeRecord(NamedTuple):
    """A directed, typed edge ``from_ → to``."""

    id: EdgeId
    from_: NodeId
    to: NodeId
    ty: TypeId


class GraphStore:
    """The nodes, edges and attachments of one warp instance."""

    __slots__ = (
        "_bucket_chunk",
        "_descend_edges",
        "_descend_nodes",
        "_dirty_buckets",
        "_dirty_nodes",
        "_from_order",
        "_from_order_new",
        "_from_order_removed",
        "_node_chunk",
        "_node_order",
        "_node_order_new",
        "_node_order_removed",
        "_nodeset_version",
        "_refresh_count",
        "_topo_version",
        "edge_attachments",
        "edge_index",
        "edge_to_index",
        "edges_from",
        "edges_to",
        "node_attachments",
        "nodes",
        "warp_id",
    )

    def __init__(self, warp_id: WarpId) -> None:
        self.warp_id: WarpId = warp_id
        self.nodes: dict[NodeId, NodeRecord] = {}
        self.node_attachments: dict[NodeId, AttachmentValue] = {}
        self.edges_from: dict[NodeId, dict[EdgeId, EdgeRecord]] = {}
        self.edges_to: dict[NodeId, dict[EdgeId, None]] = {}
        self.edge_index: dict[EdgeId, NodeId] = {}
        self.edge_to_index: dict[EdgeId, NodeId] = {}
        self.edge_attachments: dict[EdgeId, AttachmentValue] = {}
        # Owners currently holding a Descend portal (reachability must follow them).
        self._descend_nodes: set[NodeId] = set()
        self._descend_edges: set[EdgeId] = set()
        # Hashing caches (see module docstring). Invariant: every node has a chunk or is in
        # _dirty_nodes; every bucket owner has a chunk or is in _dirty_buckets.
        self._node_chunk: dict[NodeId, bytes] = {}
        self._bucket_chunk: dict[NodeId, bytes] = {}
        self._dirty_nodes: set[NodeId] = set()
        self._dirty_buckets: set[NodeId] = set()
        # Bumped when reachability could change (edges added, removed or re-pointed; portals) and
        # when the node set changes; the state root caches its traversal against them.
        self._topo_version = 0
        self._nodeset_version = 0
        self._refresh_count = 0
        self._node_order: list[NodeId] | None = None
        self._node_order_new: list[NodeId] = []
        self._node_order_removed = False
        self._from_order: list[NodeId] | None = None
        self._from_order_new: list[NodeId] = []
        self._from_order_removed = False

    # ------------------------------------------------------------------ reads
    def node(self, node_id: NodeId) -> NodeRecord | None:
        """The record of ``node_id``, or None."""
        return self.nodes.get(node_id)

    def node_attachment(self, node_id: NodeId) -> AttachmentValue | None:
        """The alpha attachment of ``node_id``, or None."""
        return self.node_attachments.get(node_id)

    def edge(self, edge_id: EdgeId) -> EdgeRecord | None:
        """The record of ``edge_id``, or None."""
        source = self.edge_index.get(edge_id)
        if source is None:
            return None
        return self.edges_from[source][edge_id]

    def edge_attachment(self, edge_id: EdgeId) -> AttachmentValue | None:
        """The beta attachment of ``edge_id``, or None."""
        return self.edge_attachments.get(edge_id)

    def clone(self) -> GraphStore:
        """An independent copy (records are immutable, so copying the containers suffices)."""
        c = GraphStore(self.warp_id)
        c.nodes = dict(self.nodes)
        c.node_attachments = dict(self.node_attachments)
        c.edges_from = {k: dict(v) for k, v in self.edges_from.items()}
        c.edges_to = {k: dict(v) for k, v in self.edges_to.items()}
        c.edge_index = dict(self.edge_index)
        c.edge_to_index = dict(self.edge_to_index)
        c.edge_attachments = dict(self.edge_attachments)
        c._descend_nodes = set(self._descend_nodes)
        c._descend_edges = set(self._descend_edges)
        c._node_chunk = dict(self._node_chunk)
        c._bucket_chunk = dict(self._bucket_chunk)
        c._dirty_nodes = set(self._dirty_nodes)
        c._dirty_buckets = set(self._dirty_buckets)
        c._refresh_count = self._refresh_count
        if self._node_order is not None and not self._node_order_new and not self._node_order_removed:
            c._node_order = list(self._node_order)
        if self._from_order is not None and not self._from_order_new and not self._from_order_removed:
            c._from_order = list(self._from_order)
        return c

    # ------------------------------------------------------------------ writes
    def insert_node(self, node_id: NodeId, record: NodeRecord) -> None:
        """Insert or replace a node's record; its attachment is left untouched."""
        old = self.nodes.get(node_id)
        if old is None:
            self._node_order_new.append(node_id)
            self._nodeset_version += 1
        elif old == record:
            return
        self.nodes[node_id] = record
        self._dirty_nodes.add(node_id)

    def set_node_attachment(self, node_id: NodeId, value: AttachmentValue | None) -> None:
        """Set (or clear, with None) the alpha attachment of an existing node."""
        if node_id not in self.nodes:
            raise InvalidOperation(f"attachment on missing node {node_id.hex()}")
        if value is None:
            if self.node_attachments.pop(node_id, None) is None:
                return
        else:
            self.node_attachments[node_id] = value
        self._dirty_nodes.add(node_id)
        if type(value) is Descend:
            self._descend_nodes.add(node_id)
            self._topo_version += 1
        elif node_id in self._descend_nodes:
            self._descend_nodes.discard(node_id)
            self._topo_version += 1

    def set_node_atoms(self, node_ids: list[NodeId],
                       values: Sequence[AttachmentValue | None]) -> list[AttachmentValue | None] | None:
        """Set many nodes' alpha atoms at once; return the previous values, or None (nothing changed)
        if the batch does not qualify: ids must be distinct existing nodes none of which holds a portal,
        and every value must be an :class:`AtomPayload`. Equivalent to ``set_node_attachment`` per pair."""
        ids = set(node_ids)
        if (len(ids) != len(node_ids) or not ids <= self.nodes.keys() or not self._descend_nodes.isdisjoint(ids)
                or set(map(type, values)) != {AtomPayload}):
            return None
        atts = self.node_attachments
        before = list(map(atts.get, node_ids))
        atts.update(zip(node_ids, values))
        self._dirty_nodes |= ids
        return before

    def delete_node(self, node_id: NodeId) -> None:
        """Delete an isolated node and its alpha attachment (Echo HEAD: incident edges must go first)."""
        if node_id not in self.nodes:
            raise InvalidOperation(f"DeleteNode of missing node {node_id.hex()}")
        if self.edges_from.get(node_id) or self.edges_to.get(node_id):
            raise NodeNotIsolated(f"node {node_id.hex()} still has incident edges")
        self._drop_node(node_id)

    def _drop_node(self, node_id: NodeId) -> None:
        """Remove a node and its alpha attachment without the isolation check (rollback uses it)."""
        del self.nodes[node_id]
        self.node_attachments.pop(node_id, None)
        if node_id in self._descend_nodes:
            self._descend_nodes.discard(node_id)
            self._topo_version += 1
        self._node_chunk.pop(node_id, None)
        self._dirty_nodes.discard(node_id)
        self._node_order_removed = True
        self._nodeset_version += 1

    def upsert_edge(self, record: EdgeRecord) -> None:
        """Insert or replace an edge by id, moving it between buckets if its source or target changed."""
        eid = record.id
        source = record.from_
        old_source = self.edge_index.get(eid)
        if old_source is not None:
            old = self.edges_from[old_source][eid]
            if old == record:
                return
            if old_source != source:
                self._remove_from_bucket(old_source, eid)
            if old.to != record.to:
                self._remove_from_to_bucket(old.to, eid)
            if old_source != source or old.to != record.to:
                self._topo_version += 1
        else:
            self._topo_version += 1
        bucket = self.edges_from.get(source)
        if bucket is None:
            bucket = self.edges_from[source] = {}
            self._from_order_new.append(source)
        bucket[eid] = record
        self.edges_to.setdefault(record.to, {})[eid] = None
        self.edge_index[eid] = source
        self.edge_to_index[eid] = record.to
        self._dirty_buckets.add(source)

    def delete_edge(self, source: NodeId, edge_id: EdgeId) -> EdgeRecord:
        """Delete an edge whose source must be exactly ``source``; drops its beta attachment."""
        if self.edge_index.get(edge_id) != source:
            raise InvalidOperation(f"DeleteEdge {edge_id.hex()}: no such edge from {source.hex()}")
        record = self.edges_from[source][edge_id]
        self._remove_from_bucket(source, edge_id)
        self._remove_from_to_bucket(record.to, edge_id)
        del self.edge_index[edge_id]
        del self.edge_to_index[edge_id]
        self.edge_attachments.pop(edge_id, None)
        self._descend_edges.discard(edge_id)
        self._topo_version += 1
        return record

    def set_edge_attachment(self, edge_id: EdgeId, value: AttachmentValue | None) -> None:
        """Set (or clear) the beta attachment of an existing edge."""
        source = self.edge_index.get(edge_id)
        if source is None:
            raise InvalidOperation(f"attachment on missing edge {edge_id.hex()}")
        if value is None:
            if self.edge_attachments.pop(edge_id, None) is None:
                return
        else:
            self.edge_attachments[edge_id] = value
        self._dirty_buckets.add(source)
        if type(value) is Descend:
            self._descend_edges.add(edge_id)
            self._topo_version += 1
        elif edge_id in self._descend_edges:
            self._descend_edges.discard(edge_id)
            self._topo_version += 1

    def _remove_from_bucket(self, source: NodeId, edge_id: EdgeId) -> None:
        bucket = self.edges_from[source]
        del bucket[edge_id]
        if not bucket:
            # Echo never keeps an empty bucket: a node without out-edges adds nothing to the hash.
            del self.edges_from[source]
            self._from_order_removed = True
        self._dirty_buckets.add(source)

    def _remove_from_to_bucket(self, target: NodeId, edge_id: EdgeId) -> None:
        bucket = self.edges_to[target]
        del bucket[edge_id]
        if not bucket:
            del self.edges_to[target]

    # ------------------------------------------------------------------ canonical encoding
    def drop_hash_caches(self) -> None:
        """Forget every cached chunk and order (benchmarks use it to time a from-scratch hash)."""
        self._node_chunk.clear()
        self._bucket_chunk.clear()
        self._dirty_nodes = set(self.nodes)
        self._dirty_buckets = set(self.edges_from)
        self._node_order = None
        self._from_order = None
        self._node_order_new = []
        self._from_order_new = []

    def sorted_node_ids(self) -> list[NodeId]:
        """All node ids ascending (cached; new ids are merged in, which timsort does in linear time)."""
        order = self._node_order
        if order is None or self._node_order_removed:
            order = sorted(self.nodes)
        elif self._node_order_new:
            order = order + sorted(set(self._node_order_new))
            order.sort()
        else:
            return order
        self._node_order = order
        self._node_order_new = []
        self._node_order_removed = False
        return order

    def cached_node_order(self) -> list[NodeId] | None:
        """:meth:`sorted_node_ids` if it is cached and current (no sorting done here), else None."""
        if self._node_order_new or self._node_order_removed:
            return None
        return self._node_order

    def sorted_bucket_owners(self) -> list[NodeId]:
        """Ids of nodes with at least one out-edge, ascending (cached like :meth:`sorted_node_ids`)."""
        order = self._from_order
        if order is None or self._from_order_removed:
            order = sorted(self.edges_from)
        elif self._from_order_new:
            order = order + sorted(set(self._from_order_new))
            order.sort()
        else:
            return order
        self._from_order = order
        self._from_order_new = []
        self._from_order_removed = False
        return order

    def refresh_chunks(self) -> tuple[set[NodeId], set[NodeId]]:
        """Re-encode the state-root chunks of every node and bucket changed since the last refresh.

        Returns the refreshed node ids and bucket owners (callers holding ordered chunk lists patch
        those positions); ``_refresh_count`` counts refreshes that changed anything.
        """
        dirty_nodes, dirty_buckets = self._dirty_nodes, self._dirty_buckets
        if dirty_nodes or dirty_buckets:
            self._refresh_count += 1
        if dirty_nodes:
            nodes = self.nodes
            atts = self.node_attachments
            chunks = self._node_chunk
            join = b"".join
            bulk = len(dirty_nodes) > 64 and self._refresh_atom_nodes(dirty_nodes)
            for n in () if bulk else dirty_nodes:
                rec = nodes.get(n)
                if rec is None:
                    chunks.pop(n, None)
                    continue
                a = atts.get(n)
                if a is None:
                    chunks[n] = n + rec[0] + b"\x00"
                elif type(a) is AtomPayload:
                    d = a[1]
                    chunks[n] = join((n, rec[0], b"\x01\x01", a[0], _u64(len(d)), d))
                else:
                    chunks[n] = n + rec[0] + b"\x01\x02" + a[0]
            self._dirty_nodes = set()
        if dirty_buckets:
            edges_from = self.edges_from
            eatts = self.edge_attachments
            bchunks = self._bucket_chunk
            join = b"".join
            enc = encode_opt_attachment_value
            for src in dirty_buckets:
                bucket = edges_from.get(src)
                if not bucket:
                    bchunks.pop(src, None)
                    continue
                if len(bucket) == 1:
                    for eid, rec in bucket.items():
                        a = eatts.get(eid)
                        bchunks[src] = join((src, _ONE, eid, rec[3], rec[2], b"\x00" if a is None else enc(a)))
                    continue
                parts = [src, _u64(len(bucket))]
                for eid in sorted(bucket):
                    rec = bucket[eid]
                    a = eatts.get(eid)
                    parts += (eid, rec[3], rec[2], b"\x00" if a is None else enc(a))
                bchunks[src] = join(parts)
            self._dirty_buckets = set()
        return dirty_nodes, dirty_buckets

    def _refresh_atom_nodes(self, dirty: set[NodeId]) -> bool:
        """Re-encode dirty nodes in one C-level pass if every one exists and holds an atom (a tick of
        attachment writes); False, with nothing done, otherwise."""
        ids = list(dirty)
        recs = list(map(self.nodes.get, ids))
        values = list(map(self.node_attachments.get, ids))
        if None in recs or set(map(type, values)) != {AtomPayload}:
            return False
        data = list(map(_second, values))
        # node ‖ ty ‖ 01 01 ‖ atom type ‖ u64le(len) ‖ bytes, as in the per-node loop below
        self._node_chunk.update(zip(ids, map(b"".join, zip(
            ids, map(_first, recs), repeat(b"\x01\x01"), map(_first, values), map(_u64, map(len, data)), data))))
        return True

    def node_chunk(self, node_id: NodeId) -> bytes:
        """``node_id ‖ ty ‖ attval?(alpha)``: this node's part of the state root stream."""
        self.refresh_chunks()
        return self._node_chunk[node_id]

    def bucket_chunk(self, source: NodeId) -> bytes:
        """``from ‖ u64le(n) ‖ (id ‖ ty ‖ to ‖ attval?(beta))*`` over the bucket sorted by edge id."""
        self.refresh_chunks()
        return self._bucket_chunk[source]

    def canonical_state_hash_bytes(self, prefix: bytes) -> bytes:
        """The byte stream of Echo's ``GraphStore::canonical_state_hash`` (reference §2.3).

        The whole store: no reachability, no root, no warp id; edges sorted globally by id.
        """
        parts = [prefix, _u64(len(self.nodes))]
        atts = self.node_attachments
        for nid in self.sorted_node_ids():
            parts.append(b"N\x00" + nid + self.nodes[nid][0] + _dind_att(atts.get(nid)))
        parts.append(_u64(len(self.edge_index)))
        eatts = self.edge_attachments
        index = self.edge_index
        edges_from = self.edges_from
        for eid in sorted(index):
            rec = edges_from[index[eid]][eid]
            parts.append(b"E\x00" + eid + rec[1] + rec[2] + rec[3] + _dind_att(eatts.get(eid)))
        return b"".join(parts)


def ordered_ids(ids: AbstractSet[bytes], order: Sequence[bytes] | None) -> list[bytes]:
    """``sorted(ids)``; taken from ``order`` (ascending, distinct ids) by one membership pass when ``ids``
    is a large part of it and all of ``ids`` are in it, which costs far less than comparing ids."""
    if order is not None and len(ids) * 4 >= len(order):
        out = list(filter(ids.__contains__, order))
        if len(out) == len(ids):
            return out
    return sorted(ids)


def _dind_att(value: AttachmentValue | None) -> bytes:
    if value is None:
        return b"\x00"
    if type(value) is AtomPayload:
        return b"\x01ATOM" + value[0] + _u64(len(value[1])) + value[1]
    return b"\x01DESC" + value[0]


class GraphView:
    """A read-only view of one :class:`GraphStore`: what matchers, footprints and executors receive.

    It exposes lookups and iteration only, and hands out immutable records, so code holding a view has
    no way to change the graph through it.
    """

    __slots__ = ("_s",)

    def __init__(self, store: GraphStore) -> None:
        self._s = store

    @property
    def warp_id(self) -> WarpId:
        """The warp instance this view reads."""
        return self._s.warp_id

    def node(self, node_id: NodeId) -> NodeRecord | None:
        """The record of ``node_id``, or None."""
        return self._s.nodes.get(node_id)

    def has_node(self, node_id: NodeId) -> bool:
        """Whether ``node_id`` exists."""
        return node_id in self._s.nodes

    def node_attachment(self, node_id: NodeId) -> AttachmentValue | None:
        """The alpha attachment of ``node_id``, or None."""
        return self._s.node_attachments.get(node_id)

    def edge(self, edge_id: EdgeId) -> EdgeRecord | None:
        """The record of ``edge_id``, or None."""
        return self._s.edge(edge_id)

    def edge_attachment(self, edge_id: EdgeId) -> AttachmentValue | None:
        """The beta attachment of ``edge_id``, or None."""
        return self._s.edge_attachments.get(edge_id)

    def edges_from(self, node_id: NodeId) -> Iterator[EdgeRecord]:
        """Edges leaving ``node_id`` (in insertion order; sort by ``id`` when order matters)."""
        bucket = self._s.edges_from.get(node_id)
        return iter(bucket.values()) if bucket else iter(())

    def edges_to(self, node_id: NodeId) -> Iterator[EdgeRecord]:
        """Edges arriving at ``node_id``."""
        s = self._s
        ids = s.edges_to.get(node_id)
        if not ids:
            return iter(())
        return (s.edges_from[s.edge_index[eid]][eid] for eid in ids)

    def nodes(self) -> Iterator[tuple[NodeId, NodeRecord]]:
        """All ``(node_id, record)`` pairs, in insertion order."""
        return iter(self._s.nodes.items())

    def node_count(self) -> int:
        """Number of nodes."""
        return len(self._s.nodes)

    def edge_count(self) -> int:
        """Number of edges."""
        return len(self._s.edge_index)

    def __repr__(self) -> str:
        return f"GraphView(warp={self._s.warp_id.hex()[:12]}, nodes={len(self._s.nodes)})"
