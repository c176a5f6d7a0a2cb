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
from typing import Any, NamedTuple, cast

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
    "AtomRun",
    "ExecItem",
    "MergeFailure",
    "TickDelta",
    "assign_units",
    "merge_deltas",
    "merge_tick_deltas",
    "partition_units",
    "run_batch",
    "run_delta",
]

ExecItem = tuple[int, Callable[..., Any], GraphStore, bytes, Footprint | None, bool]
"""``(match_ix, executor, store_or_slice, scope_local_id, footprint_for_guard_or_None, system_rule)``."""


class TickDelta:
    """The op sink executors write into; one per worker per tick.

    ``len(delta)`` is the number of ops this worker's delta holds so far, across every rewrite it ran. It
    depends on how rewrites were spread over workers, so a deterministic rule must not read it; Echo's
    seed-era DIND ``toast`` rule did, which is why the seed profile is replayed with one worker.

    While every op a delta received sets a node's alpha attachment in one warp (the usual tick), it keeps
    them as columns (``_atoms``: node, value, match_ix, op_ix per op) and builds no key, op or origin
    tuple per write; the commit merges and applies such deltas from the columns (:func:`merge_tick_deltas`).
    Any other op, or a read of ``ops``/``origins``, first turns the columns into the ops and origins they
    stand for (:meth:`_flush`), in the same order.
    """

    __slots__ = ("_atoms", "_awarp", "_fp", "_match_ix", "_op_ix", "_ops", "_origins", "_system", "_warp")

    def __init__(self) -> None:
        self._ops: list[WarpOp] = []
        self._origins: list[tuple[int, int]] = []
        self._atoms: list[Any] | None = []  # None once flushed: ops and origins are then the only record
        self._awarp: bytes | None = None  # the warp of every op in _atoms
        self._match_ix = 0
        self._op_ix = 0
        self._warp: WarpId = WarpId(b"")
        self._fp: Footprint | None = None
        self._system = False

    def __len__(self) -> int:
        atoms = self._atoms
        return len(self._ops) + (len(atoms) // 4 if atoms else 0)

    @property
    def ops(self) -> list[WarpOp]:
        """The ops emitted so far, in emission order."""
        self._flush()
        return self._ops

    @property
    def origins(self) -> list[tuple[int, int]]:
        """``(match_ix, op_ix)`` of each op of :attr:`ops`."""
        self._flush()
        return self._origins

    def _flush(self) -> None:
        """Turn the node-atom columns into ops and origins (they hold every op so far); columns end here."""
        atoms = self._atoms
        if atoms is None:
            return
        self._atoms = None
        if atoms:
            keys = map(_tnew, repeat(AttachmentKey), zip(repeat(NODE), repeat(self._awarp), atoms[0::4],
                                                         repeat(PLANE_ALPHA)))
            self._ops += map(_tnew, repeat(SetAttachment), zip(keys, atoms[1::4]))
            self._origins += zip(atoms[2::4], atoms[3::4])

    def atom_columns(self) -> tuple[bytes | None, list[NodeId], list[AttachmentValue | None]] | None:
        """``(warp, nodes, values)`` of the ops so far if the delta still keeps them as node-atom columns
        (warp None: no op yet), else None."""
        atoms = self._atoms
        if atoms is None:
            return None
        return self._awarp, atoms[0::4], atoms[1::4]

    @property
    def warp_id(self) -> WarpId:
        """The warp of the rewrite currently executing (default target of the helpers)."""
        return self._warp

    def emit(self, op: WarpOp) -> None:
        """Record one op (checked against the footprint when the guard is on)."""
        if self._fp is not None:
            check_write(op, self._fp, self._warp, self._system)
        if self._atoms is not None:
            self._flush()
        self._ops.append(op)
        ix = self._op_ix
        self._origins.append((self._match_ix, ix))
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
        fp = self._fp
        warp = self._warp
        # The compact footprint of the rewrite's own node declaring its alpha written, inline (see Footprint).
        if fp is not None and not (fp._shape & COMPACT_ALPHA_WRITE and fp._one == node and fp._cw == warp):
            key = _tnew(AttachmentKey, (NODE, warp, node, PLANE_ALPHA))
            if not fp.writes_attachment(key):
                check_write(_tnew(SetAttachment, (key, value)), fp, warp, self._system)  # raises
        ix = self._op_ix
        self._op_ix = ix + 1
        atoms = self._atoms
        if atoms is not None:
            if self._awarp == warp:
                atoms += (node, value, self._match_ix, ix)  # the columns (see the class docstring)
                return
            if not atoms:
                self._awarp = warp
                atoms += (node, value, self._match_ix, ix)
                return
            self._flush()
        # emit(), inlined for the most common op (its guard check is above)
        self._ops.append(_tnew(SetAttachment, (_tnew(AttachmentKey, (NODE, warp, node, PLANE_ALPHA)), value)))
        self._origins.append((self._match_ix, ix))

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
    """Run a sequence of rewrites into one fresh delta; its ops and their origins. Module-level so a
    process pool can call it."""
    delta = run_delta(batch)
    return delta.ops, delta.origins


def run_delta(batch: Iterable[ExecItem]) -> TickDelta:
    """:func:`run_batch`, returning the delta itself (which may still hold its ops as columns)."""
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
    return delta


class MergeFailure(WarpmeshError):
    """Internal: divergent ops under one key (the engine turns it into ``MergeConflict``)."""

    def __init__(self, key: bytes, writers: list[tuple[tuple[int, int], WarpOp]]) -> None:
        super().__init__(key)
        self.key = key
        self.writers = writers


class AtomRun(NamedTuple):
    """A merged tick that only sets node atoms in one warp: distinct ``nodes`` ascending, ``values`` beside
    them (see :func:`merge_tick_deltas`)."""

    warp: bytes
    nodes: list[NodeId]
    values: list[AttachmentValue | None]

    def ops(self, nodes: Iterable[bytes] | None = None,
            values: Iterable[AttachmentValue | None] | None = None) -> list[WarpOp]:
        """The ``SetAttachment`` ops of the run (or of ``nodes``/``values`` in its warp), in order."""
        nodes = self.nodes if nodes is None else nodes
        values = self.values if values is None else values
        keys = map(_tnew, repeat(AttachmentKey), zip(repeat(NODE), repeat(self.warp), nodes, repeat(PLANE_ALPHA)))
        return list(map(_tnew, repeat(SetAttachment), zip(keys, values)))


def merge_tick_deltas(deltas: Sequence[TickDelta],
                      node_order: Callable[[bytes], Sequence[bytes] | None] | None = None) -> list[WarpOp] | AtomRun:
    """:func:`merge_deltas` of these deltas; an :class:`AtomRun` (the same ops, as columns) when every
    delta still holds node-atom columns of one warp and no node is written twice (the usual tick)."""
    warps: set[bytes] = set()
    nodes: list[NodeId] = []
    values: list[AttachmentValue | None] = []
    for delta in deltas:
        cols = delta.atom_columns()
        if cols is None:
            break
        if cols[0] is not None:
            warps.add(cols[0])
            nodes += cols[1]
            values += cols[2]
    else:
        if len(warps) == 1 and nodes:
            warp = warps.pop()
            by_node = dict(zip(nodes, values))
            if len(by_node) == len(nodes):
                # As merge_deltas' node-atom path: the keys differ only in the node id, which orders them.
                ids = cast(list[NodeId], ordered_ids(by_node.keys(), node_order(warp) if node_order else None))
                return AtomRun(warp, ids, list(map(by_node.__getitem__, ids)))
    return merge_deltas([(d.ops, d.origins) for d in deltas], node_order)


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
