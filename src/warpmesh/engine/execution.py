"""Executing admitted rewrites over 256 virtual shards, and the canonical merge (reference §5).

Admitted rewrites are grouped into work units, one per non-empty ``(warp, shard_of(scope))`` in that
order. Workers claim units; each worker collects its ops in one :class:`TickDelta`, tagging every op with
its origin ``(match_ix, op_ix)``: the rewrite's index in canonical order and the op's index within that
rewrite. Which worker ran what, and in which order, is invisible after :func:`merge_deltas`: it sorts all
ops by ``(op key, origin)``, keeps one copy of identical ops under a key, and refuses divergent ones.

Every executor reads the pre-tick graph: nothing is applied until the merge is done.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from operator import itemgetter, methodcaller
from typing import Any

from warpmesh.engine.attachment import NODE, PLANE_ALPHA, AttachmentKey, AttachmentValue
from warpmesh.engine.footprint import COMPACT_ALPHA_WRITE, Footprint
from warpmesh.engine.graph import EdgeRecord, GraphStore, GraphView, NodeRecord, ordered_ids
from warpmesh.engine.guard import GuardedView, check_write
from warpmesh.engine.ident import NUM_SHARDS, EdgeId, NodeId, TypeId, WarpId
from warpmesh.engine.ops import (
    DeleteEdge,
    DeleteNode,
    OpenPortal,
    SetAttachment,
    UpsertEdge,
    UpsertNode,
    WarpOp,
)
from warpmesh.errors import WarpmeshError

_tnew = tuple.__new__  # builds named tuples without their Python-level __new__ (hot paths only)

__all__ = [
    "ExecItem",
    "MergeFailure",
    "TickDelta",
    "assign_units",
    "merge_deltas",
    "partition_units",
    "run_batch",
]

ExecItem = tuple[int, Callable[..., Any], GraphStore, bytes, Footprint | None, bool]
"""``(match_ix, executor, store_or_slice, scope_local_id, footprint_for_guard_or_None, system_rule)``."""


class TickDelta:
    """The op sink executors write into; one per worker per tick.

    ``len(delta)`` is the number of ops this worker's delta holds so far, across every rewrite it ran. It
    depends on how rewrites were spread over workers, so a deterministic rule must not read it; Echo's
    seed-era DIND ``toast`` rule did, which is why the seed profile is replayed with one worker.
    """

    __slots__ = ("_fp", "_match_ix", "_op_ix", "_system", "_warp", "ops", "origins")

    def __init__(self) -> None:
        self.ops: list[WarpOp] = []
        self.origins: list[tuple[int, int]] = []
        self._match_ix = 0
        self._op_ix = 0
        self._warp: WarpId = WarpId(b"")
        self._fp: Footprint | None = None
        self._system = False

    def __len__(self) -> int:
        return len(self.ops)

    @property
    def warp_id(self) -> WarpId:
        """The warp of the rewrite currently executing (default target of the helpers)."""
        return self._warp

    def emit(self, op: WarpOp) -> None:
        """Record one op (checked against the footprint when the guard is on)."""
        if self._fp is not None:
            check_write(op, self._fp, self._warp, self._system)
        self.ops.append(op)
        ix = self._op_ix
        self.origins.append((self._match_ix, ix))
        self._op_ix = ix + 1

    # Convenience constructors targeting the current rewrite's warp.
    def upsert_node(self, node: NodeId, ty: TypeId) -> None:
        """Create or replace ``node`` with type ``ty``."""
        self.emit(UpsertNode(self._warp, node, NodeRecord(ty)))

    def delete_node(self, node: NodeId) -> None:
        """Delete an isolated ``node``."""
        self.emit(DeleteNode(self._warp, node))

    def upsert_edge(self, edge: EdgeId, from_: NodeId, to: NodeId, ty: TypeId) -> None:
        """Create or replace the edge ``edge``: ``from_ → to`` of type ``ty``."""
        self.emit(UpsertEdge(self._warp, EdgeRecord(edge, from_, to, ty)))

    def delete_edge(self, from_: NodeId, edge: EdgeId) -> None:
        """Delete ``edge`` (whose source is ``from_``)."""
        self.emit(DeleteEdge(self._warp, from_, edge))

    def set_node_attachment(self, node: NodeId, value: AttachmentValue | None) -> None:
        """Set or clear ``node``'s alpha attachment."""
        key = _tnew(AttachmentKey, (NODE, self._warp, node, PLANE_ALPHA))
        fp = self._fp
        # The compact footprint of the rewrite's own node declaring its alpha written, inline (see Footprint).
        if fp is not None and not (fp._one == node and fp._shape & COMPACT_ALPHA_WRITE and fp._cw == self._warp) \
                and not fp.writes_attachment(key):
            check_write(_tnew(SetAttachment, (key, value)), fp, self._warp, self._system)  # raises
        # emit(), inlined for the most common op (its guard check is the line above)
        self.ops.append(_tnew(SetAttachment, (key, value)))
        ix = self._op_ix
        self.origins.append((self._match_ix, ix))
        self._op_ix = ix + 1

    def set_attachment(self, key: AttachmentKey, value: AttachmentValue | None) -> None:
        """Set or clear any attachment slot."""
        self.emit(SetAttachment(key, value))

    def open_portal(self, key: AttachmentKey, child_warp: WarpId, child_root: NodeId,
                    init_root: NodeRecord | None) -> None:
        """System rules only: create (``init_root``) or adopt a child instance behind slot ``key``."""
        self.emit(OpenPortal(key, child_warp, child_root, init_root))


def partition_units(items: Sequence[tuple[int, bytes, bytes]]) -> list[list[int]]:
    """Group ``(match_ix, warp, scope)`` into units per ``(warp, shard)``, in that order.

    Returns the units as lists of match indices, each in canonical order.
    """
    units: dict[tuple[bytes, int], list[int]] = {}
    for match_ix, warp, scope in items:
        units.setdefault((warp, scope[0]), []).append(match_ix)  # scope[0] == shard_of(scope)
    return [units[k] for k in sorted(units)]


def assign_units(n_units: int, workers: int, claim_rng: random.Random | None = None) -> list[list[int]]:
    """Which units each worker runs, in claim order.

    Echo's workers race on an atomic counter, so the assignment is arbitrary; round-robin here, or a
    seeded random claim sequence when ``claim_rng`` is given (tests use it to stand in for the race).
    The worker count is clamped to 1..256 and capped at the number of units.
    """
    w = max(1, min(workers, NUM_SHARDS, n_units or 1))
    plan: list[list[int]] = [[] for _ in range(w)]
    for u in range(n_units):
        plan[claim_rng.randrange(w) if claim_rng is not None else u % w].append(u)
    return plan


def run_batch(batch: Iterable[ExecItem]) -> tuple[list[WarpOp], list[tuple[int, int]]]:
    """Run a sequence of rewrites into one fresh delta. Module-level so a process pool can call it."""
    delta = TickDelta()
    plain: dict[int, GraphView] = {}
    # One guarded view per store, re-aimed at each rewrite's footprint (a view is only valid during its
    # executor's call): building one per rewrite was a Python-level constructor per candidate.
    guarded: GuardedView | None = None
    for match_ix, executor, store, scope, fp, system in batch:
        delta._match_ix = match_ix
        delta._op_ix = 0
        delta._warp = store.warp_id
        delta._fp = fp
        delta._system = system
        view: GraphView
        if fp is None:
            view = plain.get(id(store))  # type: ignore[assignment]
            if view is None:
                view = plain[id(store)] = GraphView(store)
        elif guarded is not None and guarded._s is store:
            guarded._fp = fp
            view = guarded
        else:
            view = guarded = GuardedView(store, fp)
        executor(view, scope, delta)
    return delta.ops, delta.origins


class MergeFailure(WarpmeshError):
    """Internal: divergent ops under one key (the engine turns it into ``MergeConflict``)."""

    def __init__(self, key: bytes, writers: list[tuple[tuple[int, int], WarpOp]]) -> None:
        super().__init__(key)
        self.key = key
        self.writers = writers


def merge_deltas(deltas: Sequence[tuple[Sequence[WarpOp], Sequence[tuple[int, int]]]],
                 node_order: Callable[[bytes], Sequence[bytes] | None] | None = None) -> list[WarpOp]:
    """The canonical merge: ops sorted by key; identical duplicates kept once; divergent ones refused.

    Origins must be unique (the engine numbers them per rewrite and op), so sorting never compares ops.
    ``node_order(warp)`` (a warp's node ids ascending, or None) can spare a tick of node-atom writes its
    sort (see :func:`warpmesh.engine.graph.ordered_ids`).
    """
    ops: list[WarpOp] = []
    for delta_ops, _ in deltas:
        ops += delta_ops
    atoms = _node_atom_locals(ops)
    if atoms is not None:
        # Node-alpha writes into one warp (the usual tick): their keys differ only in the node id, so
        # the node ids order them, and no per-op key bytes need building.
        warp, locals_ = atoms
        by_local = dict(zip(locals_, ops))
        if len(by_local) == len(ops):
            order = node_order(warp) if node_order is not None else None
            return list(map(by_local.__getitem__, ordered_ids(by_local.keys(), order)))
    by_key = dict(zip(sort_keys(ops), ops))
    if len(by_key) == len(ops):
        # No key twice (the usual tick): the order is the keys' order, with nothing to dedupe or refuse.
        return list(map(by_key.__getitem__, sorted(by_key)))
    flat: list[tuple[bytes, tuple[int, int], WarpOp]] = []
    for delta_ops, origins in deltas:
        flat.extend(zip(sort_keys(delta_ops), origins, delta_ops))
    flat.sort()  # by (key, origin); origins are unique, so ops themselves are never compared
    out: list[WarpOp] = []
    n = len(flat)
    i = 0
    while i < n:
        key, _, op = flat[i]
        j = i + 1
        while j < n and flat[j][0] == key:
            j += 1
        if j - i > 1:
            group = flat[i:j]
            if any(g[2] != op for g in group[1:]):
                raise MergeFailure(key, [(g[1], g[2]) for g in group])
        out.append(op)
        i = j
    return out


_Z30 = bytes(30)
_NODE_ALPHA_KEY = b"\x01\x01" + _Z30
_sort_key = methodcaller("sort_key")


def sort_keys(ops: Sequence[WarpOp]) -> list[bytes]:
    """``[op.sort_key() for op in ops]``; node-atom ``SetAttachment`` ops (most of a tick) by one C-level map."""
    types = set(map(type, ops))
    if types == {SetAttachment}:
        keys = list(map(_key_of, ops))
        if set(map(_owner_of, keys)) == {NODE} and set(map(_plane_of, keys)) == {PLANE_ALPHA}:
            # SetAttachment.sort_key(): 08 ‖ warp ‖ owner ‖ plane ‖ 0×30 ‖ owner id
            return list(map(b"".join, zip(repeat(b"\x08"), map(_warp_of, keys), repeat(_NODE_ALPHA_KEY),
                                          map(_local_of, keys))))
    return list(map(_sort_key, ops))


def _node_atom_locals(ops: Sequence[WarpOp]) -> tuple[bytes, list[bytes]] | None:
    """The warp and node ids of ``ops`` if every op is a ``SetAttachment`` of a node's alpha slot in one warp."""
    if not ops or set(map(type, ops)) != {SetAttachment}:
        return None
    keys = list(map(_key_of, ops))
    warps = set(map(_warp_of, keys))
    if len(warps) != 1 or set(map(_owner_of, keys)) != {NODE} or set(map(_plane_of, keys)) != {PLANE_ALPHA}:
        return None
    return warps.pop(), list(map(_local_of, keys))


_key_of = itemgetter(0)
_owner_of = itemgetter(0)
_warp_of = itemgetter(1)
_local_of = itemgetter(2)
_plane_of = itemgetter(3)
