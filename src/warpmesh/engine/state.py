"""The multi-instance state (``WarpState``) and its state root (Echo ``snapshot.rs``, reference §2.2).

A ``WarpState`` holds one :class:`~warpmesh.engine.graph.GraphStore` per warp instance plus each
instance's metadata: its root node and the attachment slot (its *parent*) whose ``Descend`` portal leads
into it. The state root hashes only what is reachable from the engine's root node, following edges and
portals, so unreachable garbage never changes the hash.
"""

from __future__ import annotations

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

    __slots__ = ("instances", "stores")

    def __init__(self) -> None:
        self.stores: dict[WarpId, GraphStore] = {}
        self.instances: dict[WarpId, WarpInstance] = {}

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


def state_root_bytes(state: WarpState, root_warp: WarpId, root_node: NodeId, profile: HashProfile = ECHO) -> bytes:
    """The canonical byte stream the state root hashes (exposed so benchmarks can time BLAKE3 alone)."""
    reach = reachable_nodes(state, root_warp, root_node)
    parts: list[bytes] = [profile.state_root_prefix, root_warp, root_node]
    for warp in sorted(reach):
        inst = state.instances.get(warp)
        store = state.stores.get(warp)
        if inst is None or store is None:
            continue
        seen = reach[warp]
        parts.append(inst.warp_id + inst.root_node + encode_opt_attachment_key(inst.parent))
        ids = [n for n in store.sorted_node_ids() if n in seen]
        chunks = store._node_chunk
        for n in ids:
            if n not in chunks:
                store.node_chunk(n)
        parts.extend(map(chunks.__getitem__, ids))
        owners = [n for n in store.sorted_bucket_owners() if n in seen]
        bchunks = store._bucket_chunk
        for n in owners:
            if n not in bchunks:
                store.bucket_chunk(n)
        parts.extend(map(bchunks.__getitem__, owners))
    return b"".join(parts)


def compute_state_root(state: WarpState, root_warp: WarpId, root_node: NodeId, profile: HashProfile = ECHO) -> Hash:
    """Echo's ``compute_state_root(state, root)``: BLAKE3 of :func:`state_root_bytes`."""
    return Hash(blake3(state_root_bytes(state, root_warp, root_node, profile)).digest())
