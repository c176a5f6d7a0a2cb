"""The multi-instance state (``WarpState``) and its state root (Echo ``snapshot.rs``, reference §2.2).

A ``WarpState`` holds one :class:`~warpmesh.engine.graph.GraphStore` per warp instance plus each
instance's metadata: its root node and the attachment slot (its *parent*) whose ``Descend`` portal leads
into it. The state root hashes only what is reachable from the engine's root node, following edges and
portals, so unreachable garbage never changes the hash.
"""

from __future__ import annotations

from itertools import accumulate
from typing import NamedTuple

from blake3 import blake3

from warpmesh.engine.attachment import AttachmentKey, encode_opt_attachment_key
from warpmesh.engine.graph import GraphStore
from warpmesh.engine.hashing import ECHO, HashProfile
from warpmesh.engine.ident import Hash, NodeId, WarpId

__all__ = ["WarpInstance", "WarpState", "compute_state_root", "reachable_nodes", "state_root_bytes"]


class WarpInstance(NamedTuple):
    """Metadata of one warp instance: its id, root node and parent portal slot (None for the root warp)."""

    warp_id: WarpId
    root_node: NodeId
    parent: AttachmentKey | None


class WarpState:
    """All warp instances of an engine: ``instances`` metadata and their ``stores``."""

    __slots__ = ("_plan", "instances", "stores")

    def __init__(self) -> None:
        self.stores: dict[WarpId, GraphStore] = {}
        self.instances: dict[WarpId, WarpInstance] = {}
        # The state root's traversal, kept until topology, node sets or instances change.
        self._plan: tuple[tuple, list[_Segment]] | None = None

    @classmethod
    def from_root_store(cls, store: GraphStore, root_node: NodeId) -> WarpState:
        """A state whose only instance is ``store`` (keeping its warp id) rooted at ``root_node``."""
        state = cls()
        state.stores[store.warp_id] = store
        state.instances[store.warp_id] = WarpInstance(store.warp_id, root_node, None)
        return state

    def store(self, warp_id: WarpId) -> GraphStore | None:
        """The store of ``warp_id``, or None."""
        return self.stores.get(warp_id)

    def clone(self) -> WarpState:
        """An independent deep copy of every store."""
        c = WarpState()
        c.stores = {w: s.clone() for w, s in self.stores.items()}
        c.instances = dict(self.instances)
        return c


def reachable_nodes(state: WarpState, root_warp: WarpId, root_node: NodeId) -> dict[WarpId, set[NodeId]]:
    """Node ids reachable from the root per warp, following out-edges and ``Descend`` portals.

    The sets may name ids without a record (an edge may point at a missing node); callers intersect with
    the store. The root warp is always present.
    """
    reach: dict[WarpId, set[NodeId]] = {root_warp: set()}
    work: list[tuple[WarpId, NodeId]] = [(root_warp, root_node)]
    stores = state.stores
    instances = state.instances
    while work:
        warp, start = work.pop()
        seen = reach.setdefault(warp, set())
        if start in seen:
            continue
        seen.add(start)
        store = stores.get(warp)
        if store is None:
            continue
        edges_from = store.edges_from
        d_nodes = store._descend_nodes
        d_edges = store._descend_edges
        atts = store.node_attachments
        eatts = store.edge_attachments
        stack = [start]
        pop = stack.pop
        push = stack.append
        add = seen.add
        while stack:
            cur = pop()
            if d_nodes and cur in d_nodes:
                child = atts[cur][0]
                inst = instances.get(child)
                if inst is not None:
                    reach.setdefault(child, set())
                    work.append((child, inst.root_node))
            bucket = edges_from.get(cur)
            if bucket is None:
                continue
            for rec in bucket.values():
                t = rec[2]
                if t not in seen:
                    add(t)
                    push(t)
                if d_edges and rec[0] in d_edges:
                    child = eatts[rec[0]][0]
                    inst = instances.get(child)
                    if inst is not None:
                        reach.setdefault(child, set())
                        work.append((child, inst.root_node))
    return reach


class _Segment:
    """One reachable warp's part of the state-root stream, kept between hashes.

    ``node_chunks``/``bucket_chunks`` are the store's chunks in canonical order and ``node_buf`` /
    ``bucket_buf`` their concatenation. A hash patches only the positions the store reports as
    refreshed: a chunk that kept its length (an attachment rewritten in place, the common case) is
    overwritten inside the buffer, anything else rebuilds that buffer. If the store was refreshed by
    someone else in between, everything is regathered.
    """

    __slots__ = ("bucket_buf", "bucket_chunks", "bucket_off", "bucket_pos", "header", "ids", "node_buf",
                 "node_chunks", "node_off", "node_pos", "owners", "refresh_count", "store")

    def __init__(self, header: bytes, store: GraphStore, ids: list[NodeId], owners: list[NodeId]) -> None:
        self.header = header
        self.store = store
        self.ids = ids
        self.owners = owners
        # Positions are built on the first patch: a segment rebuilt because the topology changed often
        # never needs them.
        self.node_pos: dict[NodeId, int] | None = None
        self.bucket_pos: dict[NodeId, int] | None = None
        store.refresh_chunks()
        self._regather()

    def _regather(self) -> None:
        store = self.store
        self.node_chunks = list(map(store._node_chunk.__getitem__, self.ids))
        self.bucket_chunks = list(map(store._bucket_chunk.__getitem__, self.owners))
        self.node_buf, self.node_off = _concat(self.node_chunks)
        self.bucket_buf, self.bucket_off = _concat(self.bucket_chunks)
        self.refresh_count = store._refresh_count

    def update(self) -> None:
        store = self.store
        if store._refresh_count != self.refresh_count:
            store.refresh_chunks()
            self._regather()
            return
        nodes, buckets = store.refresh_chunks()
        if len(nodes) * 8 > len(self.ids):
            # Much changed (a tick that rewrote most nodes): one C-level regather beats patching.
            self.node_chunks = list(map(store._node_chunk.__getitem__, self.ids))
            self.node_buf, self.node_off = _concat(self.node_chunks)
            nodes = set()
        if len(buckets) * 8 > len(self.owners):
            self.bucket_chunks = list(map(store._bucket_chunk.__getitem__, self.owners))
            self.bucket_buf, self.bucket_off = _concat(self.bucket_chunks)
            buckets = set()
        if nodes:
            if self.node_pos is None:
                self.node_pos = dict(zip(self.ids, range(len(self.ids))))
            if self.node_off is None:
                self.node_off = _offsets(self.node_chunks)
            if _patch(nodes, store._node_chunk, self.node_pos, self.node_chunks, self.node_buf, self.node_off):
                self.node_buf, self.node_off = _concat(self.node_chunks)
        if buckets:
            if self.bucket_pos is None:
                self.bucket_pos = dict(zip(self.owners, range(len(self.owners))))
            if self.bucket_off is None:
                self.bucket_off = _offsets(self.bucket_chunks)
            if _patch(buckets, store._bucket_chunk, self.bucket_pos, self.bucket_chunks, self.bucket_buf,
                      self.bucket_off):
                self.bucket_buf, self.bucket_off = _concat(self.bucket_chunks)
        self.refresh_count = store._refresh_count


def _concat(chunks: list[bytes]) -> tuple[bytearray, None]:
    """The joined buffer; its chunk offsets are computed when a patch first needs them (:func:`_offsets`)."""
    return bytearray(b"".join(chunks)), None


def _offsets(chunks: list[bytes]) -> list[int]:
    return [0, *accumulate(map(len, chunks))]


def _patch(changed: set[NodeId], chunks: dict[NodeId, bytes], pos: dict[NodeId, int], out: list[bytes],
           buf: bytearray, off: list[int]) -> bool:
    """Write changed chunks into ``out`` and, where lengths allow, into ``buf``; True if ``buf`` needs a rebuild."""
    rebuild = False
    for n in changed:
        i = pos.get(n)
        if i is None:
            continue
        c = chunks[n]
        if not rebuild:
            if len(c) == len(out[i]):
                o = off[i]
                buf[o:o + len(c)] = c
            else:
                rebuild = True
        out[i] = c
    return rebuild


def _root_plan(state: WarpState, root_warp: WarpId, root_node: NodeId) -> list[_Segment]:
    """Per reachable warp, ascending, its :class:`_Segment`. Cached on the state until an edge, portal,
    node set or instance changes (attachment and record changes only patch chunks)."""
    key = (
        root_warp,
        root_node,
        tuple((w, id(s), s._topo_version, s._nodeset_version) for w, s in state.stores.items()),
        tuple(state.instances.items()),
    )
    cached = state._plan
    if cached is not None and cached[0] == key:
        return cached[1]
    reach = reachable_nodes(state, root_warp, root_node)
    plan = []
    for warp in sorted(reach):
        inst = state.instances.get(warp)
        store = state.stores.get(warp)
        if inst is None or store is None:
            continue
        seen = reach[warp]
        order = store.sorted_node_ids()
        ids = order if len(seen) >= len(order) and seen.issuperset(order) else [n for n in order if n in seen]
        owners = [n for n in store.sorted_bucket_owners() if n in seen]
        header = inst.warp_id + inst.root_node + encode_opt_attachment_key(inst.parent)
        plan.append(_Segment(header, store, ids, owners))
    state._plan = (key, plan)
    return plan


def state_root_bytes(state: WarpState, root_warp: WarpId, root_node: NodeId, profile: HashProfile = ECHO) -> bytes:
    """The canonical byte stream the state root hashes (exposed so benchmarks can time BLAKE3 alone)."""
    parts: list[bytes | bytearray] = [profile.state_root_prefix, root_warp, root_node]
    for seg in _root_plan(state, root_warp, root_node):
        seg.update()
        parts += (seg.header, seg.node_buf, seg.bucket_buf)
    return b"".join(parts)


def compute_state_root(state: WarpState, root_warp: WarpId, root_node: NodeId, profile: HashProfile = ECHO) -> Hash:
    """Echo's ``compute_state_root(state, root)``: BLAKE3 of :func:`state_root_bytes`, fed piecewise."""
    h = blake3(profile.state_root_prefix + root_warp + root_node)
    for seg in _root_plan(state, root_warp, root_node):
        seg.update()
        h.update(seg.header)
        h.update(seg.node_buf)
        h.update(seg.bucket_buf)
    return Hash(h.digest())
