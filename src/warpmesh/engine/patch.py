"""Tick patches: slots, ops, the patch digest, and applying ops with an undo log (reference §2.5–§2.6).

A patch records what a tick did: the *in* slots it read, the *out* slots it wrote (both derived from the
declared footprints of the accepted rewrites) and the ops that changed the state. Echo derives the ops by
diffing the whole state before and after the tick; :class:`TickApplier` gets the identical list by
diffing only the keys the tick touched (it remembers each key's value before its first change), which
is the same diff because untouched keys cannot differ. The same memory undoes a tick that fails halfway.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from operator import itemgetter, methodcaller, ne
from typing import Any, NamedTuple

from blake3 import blake3

from warpmesh.engine.attachment import (
    EDGE,
    NODE,
    PLANE_ALPHA,
    PLANE_BETA,
    AtomPayload,
    AttachmentKey,
    AttachmentValue,
    Descend,
)
from warpmesh.engine.errors import InvalidOperation
from warpmesh.engine.footprint import CompactBatch, FootprintUnion, union_footprints
from warpmesh.engine.graph import EdgeRecord, GraphStore, NodeRecord, ordered_ids
from warpmesh.engine.hashing import ECHO, HashProfile
from warpmesh.engine.ident import Hash, WarpId
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
from warpmesh.engine.state import WarpInstance, WarpState

__all__ = [
    "STATUS_ABORTED",
    "STATUS_COMMITTED",
    "SlotSet",
    "TickApplier",
    "TickPatch",
    "apply_ops",
    "canonical_ops",
    "encode_atom_ops",
    "slots_from_compact",
    "slots_of",
]

_u64 = struct.Struct("<Q").pack
_tnew = tuple.__new__  # builds named tuples without their Python-level __new__ (hot loops only)

STATUS_COMMITTED = 1
STATUS_ABORTED = 2


class SlotSet(NamedTuple):
    """The slots of one side (in or out) of a patch, each kind sorted and unique.

    ``nodes``/``edges`` hold ``(warp, id)``, ``attachments`` hold ``(owner, warp, id, plane)`` and ``ports``
    hold ``(warp, port_key)``. Kinds appear in Echo's ``SlotId`` tag order: node, edge, attachment, port.
    """

    nodes: tuple[tuple[bytes, bytes], ...] = ()
    edges: tuple[tuple[bytes, bytes], ...] = ()
    attachments: tuple[tuple[int, bytes, bytes, int], ...] = ()
    ports: tuple[tuple[bytes, int], ...] = ()

    @classmethod
    def of(cls, nodes: Iterable = (), edges: Iterable = (), attachments: Iterable = (),
           ports: Iterable = ()) -> SlotSet:
        """Canonicalise: sort and deduplicate each kind."""
        return cls(*(tuple(sorted(x if isinstance(x, set | frozenset) else set(x)))
                     for x in (nodes, edges, attachments, ports)))

    def size(self) -> int:
        """Number of slots."""
        return len(self.nodes) + len(self.edges) + len(self.attachments) + len(self.ports)

    def encode(self, profile: HashProfile) -> bytes:
        """``u64le(n) ‖ slots…`` with Node ``01‖warp‖id``, Edge ``02‖warp‖id``, Attachment ``03‖attkey``,
        Port ``04‖[warp]‖u64le(key)`` (the warp only in the echo profile)."""
        return b"".join(self.encode_parts(profile, {}))

    def encode_parts(self, profile: HashProfile, memo: dict[tuple[int, Any], bytes]) -> list[bytes]:
        """:meth:`encode` as a list of parts; ``memo`` (by ``id`` of a kind's tuple) lets the out side
        reuse what the in side encoded (out ⊆ in, and a kind equal on both sides is the same tuple)."""
        if profile.port_slot_has_warp:
            ports = [b"\x04" + w + _u64(p) for w, p in self.ports]
        else:
            # The seed revision keyed ports by the bare u64, so ports differing only by warp merge.
            ports = [b"\x04" + _u64(p) for p in sorted({p for _, p in self.ports})]
        n = len(self.nodes) + len(self.edges) + len(self.attachments) + len(ports)
        # Each kind is one separator-join over the (warp, id) pairs: no per-slot Python bytes objects.
        parts = [_u64(n)]
        for kind, encode in ((self.nodes, _node_slots), (self.edges, _edge_slots),
                             (self.attachments, _encode_attachment_slots)):
            if kind:
                enc = memo.get((id(kind), encode))
                if enc is None:
                    enc = memo[(id(kind), encode)] = encode(kind)
                parts.append(enc)
        parts += ports
        return parts


def _tagged(tag: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    """``tag ‖ a ‖ b`` for every pair, concatenated."""
    if not pairs:
        return b""
    firsts = set(map(_first, pairs))
    if len(firsts) == 1:
        # One warp: ``tag ‖ warp`` is a separator between the ids, so one join covers the whole kind.
        sep: bytes = tag + firsts.pop()
        return sep + sep.join(map(_second, pairs))
    return tag + tag.join(map(b"".join, pairs))


def _node_slots(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    return _tagged(b"\x01", pairs)


def _edge_slots(pairs: Sequence[tuple[bytes, bytes]]) -> bytes:
    return _tagged(b"\x02", pairs)


_warp_local = itemgetter(1, 2)


def _encode_attachment_slots(atts: tuple[tuple[int, bytes, bytes, int], ...]) -> bytes:
    """``03 ‖ owner ‖ plane ‖ warp ‖ id`` per slot; one join when every slot is a node's alpha plane."""
    if not atts:
        return b""
    if set(map(_owner_of, atts)) == {NODE} and set(map(_plane_of, atts)) == {PLANE_ALPHA}:
        warps = set(map(_warp_of, atts))
        if len(warps) == 1:
            sep: bytes = b"\x03\x01\x01" + warps.pop()  # a separator between the ids, as in _tagged
            return sep + sep.join(map(_local_of, atts))
        return _tagged(b"\x03\x01\x01", list(map(_warp_local, atts)))
    return b"".join([b"\x03" + bytes((o, pl)) + w + i for o, w, i, pl in atts])


EMPTY_SLOTS = SlotSet()


def slots_of(footprints: Iterable[Any]) -> tuple[SlotSet, SlotSet]:
    """In and out slots of the admitted footprints (reference §2.6 step 2).

    n_read→in; n_write→in+out; likewise edges and attachments; b_in→in; b_out→in+out.
    """
    return slots_from_union(union_footprints(list(footprints))[0])


NodeOrder = Callable[[bytes], Sequence[bytes] | None]
"""``node_order(warp)``: that warp's node ids ascending (a store keeps them; see :func:`~warpmesh.engine.graph.ordered_ids`), or None."""


def slots_from_union(u: FootprintUnion, node_order: NodeOrder | None = None) -> tuple[SlotSet, SlotSet]:
    """:func:`slots_of`, from the footprints' union (the commit has it from admission already).

    ``node_order`` lets a tick that names many of a warp's nodes take their order from the store's
    sorted node ids instead of sorting them again (same result)."""
    ins = SlotSet(
        _sorted_pairs(u.n_read | u.n_write, node_order),
        _sorted_pairs(u.e_read | u.e_write) if u.e_read or u.e_write else (),
        _sorted_attachment_slots(u.a_read | u.a_write, node_order),
        tuple(sorted(u.b_in | u.b_out)) if u.b_in or u.b_out else (),
    )
    # out ⊆ in: filter the sorted in-lists instead of sorting again.
    writes: tuple[set[Any], ...] = (u.n_write, u.e_write, u.a_write, u.b_out)
    outs = SlotSet(*[
        have if len(w) == len(have) else tuple(filter(w.__contains__, have)) for have, w in zip(ins, writes)
    ])
    return ins, outs


def slots_from_compact(batch: CompactBatch, node_order: NodeOrder | None = None) -> tuple[SlotSet, SlotSet]:
    """:func:`slots_from_union` of a batch of compact footprints, from its columns (same result).

    Every footprint of the batch declares the same node and alpha entries about its own node, so each
    kind of slot is the batch's distinct nodes in order, sorted once; a kind both sides hold is the
    same tuple on both (as :func:`slots_from_union` does)."""
    w = batch.warp
    order = node_order(w) if node_order is not None else None
    ids = ordered_ids(set(batch.locals_), order)
    nodes = tuple(zip(repeat(w), ids)) if batch.reads_or_writes_nodes else ()
    atts = tuple(zip(repeat(NODE), repeat(w), ids, repeat(PLANE_ALPHA))) if batch.reads_or_writes_alpha else ()
    ins = SlotSet(nodes, (), atts, ())
    outs = SlotSet(nodes if batch.writes_nodes else (), (), atts if batch.writes_alpha else (), ())
    return ins, outs


def _sorted_pairs(pairs: set[tuple[bytes, bytes]], node_order: NodeOrder | None = None) -> tuple[tuple[bytes, bytes], ...]:
    """``tuple(sorted(pairs))``; by the id alone when all pairs share one warp (its order from
    ``node_order`` when it helps), or keyed by the joined bytes when every warp id has one length (the
    same order: a fixed-length first field compares like a prefix); either compares faster than tuples."""
    warps = set(map(_first, pairs))
    if len(warps) == 1:
        w = next(iter(warps))
        order = node_order(w) if node_order is not None else None
        if order is not None:
            return tuple(zip(repeat(w), ordered_ids(set(map(_second, pairs)), order)))
        return tuple(sorted(pairs, key=_second))
    if len(set(map(len, warps))) == 1:
        return tuple(sorted(pairs, key=b"".join))
    return tuple(sorted(pairs))


def _sorted_attachment_slots(keys: set[tuple[int, bytes, bytes, int]],
                             node_order: NodeOrder | None = None) -> tuple[tuple[int, bytes, bytes, int], ...]:
    """``tuple(sorted(keys))``; by the owner id alone when owner, warp and plane are all the same (node
    alpha slots of one warp take their order from ``node_order`` when it helps)."""
    owners, warps, planes = set(map(_owner_of, keys)), set(map(_warp_of, keys)), set(map(_plane_of, keys))
    if len(owners) == 1 and len(warps) == 1 and len(planes) == 1:
        owner, w, plane = owners.pop(), warps.pop(), planes.pop()
        order = node_order(w) if node_order is not None and owner == NODE else None
        if order is not None:
            return tuple(zip(repeat(owner), repeat(w), ordered_ids(set(map(_local_of, keys)), order),
                             repeat(plane)))
        return tuple(sorted(keys, key=_local_of))
    return tuple(sorted(keys))


def canonical_ops(ops: Iterable[WarpOp]) -> list[WarpOp]:
    """Sort ops by key; for equal keys the last one wins (Echo's ``WarpTickPatchV1::new``)."""
    by_key: dict[bytes, WarpOp] = {}
    for op in ops:
        by_key[op.sort_key()] = op
    return [by_key[k] for k in sorted(by_key)]


@dataclass(frozen=True, slots=True)
class TickPatch:
    """One tick's patch (Echo ``WarpTickPatchV1``). :meth:`new` canonicalises arbitrary input."""

    policy_id: int
    rule_pack_id: bytes
    status: int
    in_slots: SlotSet
    out_slots: SlotSet
    ops: tuple[WarpOp, ...]

    @classmethod
    def new(cls, policy_id: int, rule_pack_id: bytes, status: int, in_slots: SlotSet = EMPTY_SLOTS,
            out_slots: SlotSet = EMPTY_SLOTS, ops: Iterable[WarpOp] = ()) -> TickPatch:
        """Canonicalise: slots sorted and deduplicated, ops sorted by key with last-wins on equal keys."""
        return cls(policy_id, rule_pack_id, status, SlotSet.of(*in_slots), SlotSet.of(*out_slots),
                   tuple(canonical_ops(ops)))

    def digest(self, profile: HashProfile = ECHO, ops_encoding: bytes | None = None) -> Hash:
        """``compute_patch_digest_v2``: prefix ‖ u16le(2) ‖ u32le(policy) ‖ rule_pack ‖ status ‖ in ‖ out ‖ ops.

        ``ops_encoding``, if given, must be the ops' encoding (what :func:`_encode_ops` joins); the commit
        passes the one it built from its columns (:func:`encode_atom_ops`)."""
        ops = self.ops
        h = blake3(b"".join((profile.patch_digest_prefix, b"\x02\x00", struct.pack("<I", self.policy_id),
                             self.rule_pack_id, bytes((self.status,)))))
        memo: dict[tuple[int, Any], bytes] = {}
        for part in self.in_slots.encode_parts(profile, memo):
            h.update(part)
        for part in self.out_slots.encode_parts(profile, memo):
            h.update(part)
        h.update(_u64(len(ops)))
        h.update(b"".join(_encode_ops(ops)) if ops_encoding is None else ops_encoding)
        return Hash(h.digest())

    def apply_to(self, state: WarpState) -> None:
        """Apply the ops to ``state`` (as a recorded diff, see :func:`apply_ops`'s ``playback``); on failure
        the state is restored and the error re-raised."""
        apply_ops(state, self.ops, playback=True)


_SET_ATT_PREFIX = {(NODE, PLANE_ALPHA): b"\x07\x01\x01", (EDGE, PLANE_BETA): b"\x07\x02\x02"}


def _encode_ops(ops: Sequence[WarpOp]) -> list[bytes]:
    """Digest encodings of ``ops``; the common ``SetAttachment`` of an atom is encoded inline.

    Ops in key order end with their ``SetAttachment`` ops (the greatest sort kind); when those are all
    node atoms they are encoded by one C-level join over their fields.
    """
    out: list[bytes] = []
    types = list(map(type, ops))
    try:
        first = types.index(SetAttachment)
    except ValueError:
        first = len(ops)
    tail = ops[first:]
    if tail and types.count(SetAttachment) == len(tail):
        keys = list(map(_key_of, tail))
        values = list(map(_value_of, tail))
        if (set(map(_owner_of, keys)) == {NODE} and set(map(_plane_of, keys)) == {PLANE_ALPHA}
                and set(map(type, values)) == {AtomPayload}):
            out += map(_op_encode, ops[:first])
            out.append(_encode_atom_ops(map(_warp_of, keys), map(_local_of, keys), values))
            return out
    for op in ops:
        if type(op) is SetAttachment:
            key, value = op
            prefix = _SET_ATT_PREFIX.get((key[0], key[3]))
            if prefix is not None and type(value) is AtomPayload:
                out += (prefix, key[1], key[2], b"\x01\x01", value[0], _u64(len(value[1])), value[1])
                continue
        out.append(op.encode())
    return out


def encode_atom_ops(warp: bytes, nodes: Sequence[bytes], values: Sequence[Any]) -> bytes:
    """The digest encoding of ``SetAttachment`` ops setting node ``nodes[i]``'s atom (warp ``warp``) to
    ``values[i]`` (each an :class:`AtomPayload`): what :func:`_encode_ops` builds for the same ops."""
    return _encode_atom_ops(repeat(warp), nodes, values)


def _encode_atom_ops(warps: Iterable[bytes], nodes: Iterable[bytes], values: Sequence[Any]) -> bytes:
    """``07 01 01 ‖ warp ‖ node ‖ 01 01 ‖ atom type ‖ u64le(len) ‖ data`` per op, in one C-level join."""
    data = list(map(_value_of, values))
    return b"".join(map(b"".join, zip(repeat(b"\x07\x01\x01"), warps, nodes, repeat(b"\x01\x01"),
                                      map(_key_of, values), map(_u64, map(len, data)), data)))


def apply_ops(state: WarpState, ops: Iterable[WarpOp], canonical: bool = False,
              playback: bool = False) -> TickApplier:
    """Apply ops with undo tracking; roll back and re-raise if any op fails.

    ``canonical`` promises that ``ops`` is sorted by op key with no key twice (a merged tick): the
    run of node-atom ``SetAttachment`` ops that then ends the list is applied in bulk.

    ``playback`` applies a recorded diff (a patch's ops, a tick's ``pre_ops``): a ``DeleteNode`` whose
    node still has incident edges at its place in key order is retried after every other op. A diff
    states an edge that kept its source but changed its target as one ``UpsertEdge``, which sorts after
    the ``DeleteNode`` of its old target (Echo's own ``diff_state`` does the same), so in key order the
    node is deleted while the edge still points at it. The retry keeps the isolation check: a node still
    holding an edge once the other ops ran is refused as before.
    """
    applier = TickApplier(state)
    try:
        if canonical:
            applier.apply_canonical(list(ops))
        elif playback:
            blocked: list[DeleteNode] = []
            for op in ops:
                if type(op) is DeleteNode and applier.blocks_delete(op):
                    blocked.append(op)
                else:
                    applier.apply(op)
            for op in blocked:
                applier.apply(op)
        else:
            for op in ops:
                applier.apply(op)
        if applier.portal_touched:
            applier.check_portal_invariants()
    except BaseException:
        applier.rollback()
        raise
    return applier


class TickApplier:
    """Applies ops to a :class:`WarpState`, remembering each touched key's value before the tick.

    After the ops ran, :meth:`effective_ops` is Echo's ``diff_state(before, after)`` and :meth:`rollback`
    restores ``before`` exactly.
    """

    __slots__ = ("_alpha", "_alpha_bulk", "_beta", "_bulk", "_edges", "_instances", "_nodes", "portal_touched",
                 "state")

    def __init__(self, state: WarpState) -> None:
        self.state = state
        self._nodes: dict[tuple[bytes, bytes], NodeRecord | None] = {}
        self._alpha: dict[tuple[bytes, bytes], AttachmentValue | None] = {}
        self._edges: dict[tuple[bytes, bytes], EdgeRecord | None] = {}
        self._beta: dict[tuple[bytes, bytes], AttachmentValue | None] = {}
        self._instances: dict[bytes, tuple[WarpInstance | None, GraphStore | None]] = {}
        self.portal_touched = False
        # (ops, values before) when the applier's only work was one bulk run of node-atom writes.
        self._bulk: tuple[list[WarpOp], list[AttachmentValue | None]] | None = None
        # (warp, node ids, values before) of a bulk run not yet entered into _alpha (see _settle).
        self._alpha_bulk: tuple[bytes, list[bytes], list[AttachmentValue | None]] | None = None

    def _settle(self) -> None:
        """Enter a pending bulk run's before-values into ``_alpha`` (first writer wins, as op by op).

        A tick that is one bulk run never needs them (its diff comes from ``_bulk``), so they are
        only built when something else reads or extends the undo log.
        """
        pending = self._alpha_bulk
        if pending is None:
            return
        self._alpha_bulk = None
        w, nodes, before = pending
        alpha = self._alpha
        for k, v in zip(zip(repeat(w), nodes), before):
            alpha.setdefault(k, v)

    # ------------------------------------------------------------------ apply
    def _store(self, warp: WarpId) -> GraphStore:
        store = self.state.stores.get(warp)
        if store is None:
            raise InvalidOperation(f"op targets unknown warp {warp.hex()}")
        return store

    def apply_canonical(self, ops: list[WarpOp]) -> None:
        """Apply ops sorted by key with unique keys (see :func:`apply_ops`).

        ``SetAttachment`` has the greatest sort kind, so such ops form the tail of the list, grouped by
        warp. A tail of node-alpha atom writes into one warp is applied with
        :meth:`GraphStore.set_node_atoms`, and when it was the whole tick :meth:`effective_ops` is
        just the ops whose value changed, already in order.
        """
        try:
            first = list(map(type, ops)).index(SetAttachment)
        except ValueError:
            first = len(ops)
        for op in ops[:first]:
            self.apply(op)
        tail = ops[first:]
        if not tail:
            return
        keys = list(map(_key_of, tail))
        warps = set(map(_warp_of, keys))
        store = self.state.stores.get(next(iter(warps))) if len(warps) == 1 else None
        before = None
        if (store is not None and set(map(type, keys)) == {AttachmentKey}
                and set(map(_owner_of, keys)) == {NODE} and set(map(_plane_of, keys)) == {PLANE_ALPHA}):
            nodes = list(map(_local_of, keys))
            before = store.set_node_atoms(nodes, list(map(_value_of, tail)))
        if before is None:
            for op in tail:
                self.apply(op)
            return
        self._alpha_bulk = (store.warp_id, nodes, before)  # type: ignore[union-attr]
        if first == 0:
            self._bulk = (tail, before)

    def apply(self, op: WarpOp) -> None:
        """Apply one op (HEAD semantics of ``apply_to_state``)."""
        self._bulk = None
        if self._alpha_bulk is not None:
            self._settle()
        t = type(op)
        if t is SetAttachment:
            key, value = op
            if key[0] == NODE and type(value) is not Descend:
                # Fast path for the most common op: a node's atom.
                store = self.state.stores.get(key[1])
                if store is not None and key[3] == PLANE_ALPHA:
                    k = (key[1], key[2])
                    atts = store.node_attachments
                    before = atts.get(key[2])
                    if k not in self._alpha:
                        self._alpha[k] = before
                    store.set_node_attachment(key[2], value)
                    if type(before) is Descend:
                        self.portal_touched = True
                    return
            self._set_attachment(key, value)
        elif t is UpsertNode:
            store = self._store(op.warp_id)
            k = (op.warp_id, op.node)
            if k not in self._nodes:
                self._nodes[k] = store.nodes.get(op.node)
            store.insert_node(op.node, op.record)
        elif t is UpsertEdge:
            store = self._store(op.warp_id)
            rec = op.record
            k = (op.warp_id, rec[0])
            if k not in self._edges:
                self._edges[k] = store.edge(rec[0])
            store.upsert_edge(rec)
        elif t is DeleteEdge:
            store = self._store(op.warp_id)
            k = (op.warp_id, op.edge_id)
            if k not in self._edges:
                self._edges[k] = store.edge(op.edge_id)
            if k not in self._beta:
                self._beta[k] = store.edge_attachments.get(op.edge_id)
            store.delete_edge(op.from_, op.edge_id)
        elif t is DeleteNode:
            store = self._store(op.warp_id)
            k = (op.warp_id, op.node)
            if k not in self._nodes:
                self._nodes[k] = store.nodes.get(op.node)
            if k not in self._alpha:
                self._alpha[k] = store.node_attachments.get(op.node)
            store.delete_node(op.node)
        elif t is OpenPortal:
            self._open_portal(op)
        elif t is UpsertWarpInstance:
            self._track_instance(op.warp_id)
            self.portal_touched = True
            st = self.state
            if op.warp_id not in st.stores:
                st.stores[op.warp_id] = GraphStore(op.warp_id)
            st.instances[op.warp_id] = WarpInstance(op.warp_id, op.root_node, op.parent)
        elif t is DeleteWarpInstance:
            st = self.state
            if op.warp_id not in st.instances:
                raise InvalidOperation(f"DeleteWarpInstance of unknown warp {op.warp_id.hex()}")
            self._track_instance(op.warp_id)
            self.portal_touched = True
            del st.instances[op.warp_id]
            st.stores.pop(op.warp_id, None)
        else:  # pragma: no cover - the union is closed
            raise InvalidOperation(f"unknown op {op!r}")

    def blocks_delete(self, op: DeleteNode) -> bool:
        """Whether ``op`` would be refused now only because its node still has incident edges."""
        store = self.state.stores.get(op.warp_id)
        node = op.node
        return (store is not None and node in store.nodes
                and bool(store.edges_from.get(node) or store.edges_to.get(node)))

    def _track_instance(self, warp: bytes) -> None:
        if warp not in self._instances:
            st = self.state
            self._instances[warp] = (st.instances.get(warp), st.stores.get(warp))

    def _set_attachment(self, key: AttachmentKey, value: AttachmentValue | None) -> None:
        owner, warp, local, plane = key
        store = self._store(warp)
        k = (warp, local)
        if owner == NODE and plane == PLANE_ALPHA:
            if k not in self._alpha:
                self._alpha[k] = store.node_attachments.get(local)
            before = store.node_attachments.get(local)
            store.set_node_attachment(local, value)
        elif owner == EDGE and plane == PLANE_BETA:
            if k not in self._beta:
                self._beta[k] = store.edge_attachments.get(local)
            before = store.edge_attachments.get(local)
            store.set_edge_attachment(local, value)
        else:
            raise InvalidOperation(f"invalid attachment plane {plane} for owner kind {owner}")
        if type(value) is Descend or type(before) is Descend:
            self.portal_touched = True

    def _open_portal(self, op: OpenPortal) -> None:
        st = self.state
        self.portal_touched = True
        self._track_instance(op.child_warp)
        existing = st.instances.get(op.child_warp)
        if op.init_root is None:
            if existing is None:
                raise InvalidOperation(f"OpenPortal(RequireExisting) into unknown warp {op.child_warp.hex()}")
            if existing.root_node != op.child_root:
                raise InvalidOperation(f"OpenPortal root mismatch for warp {op.child_warp.hex()}")
            st.instances[op.child_warp] = WarpInstance(op.child_warp, op.child_root, op.key)
        else:
            if existing is not None and (existing.root_node != op.child_root or existing.parent != op.key):
                raise InvalidOperation(f"OpenPortal(Empty) over a different instance {op.child_warp.hex()}")
            if existing is None:
                st.instances[op.child_warp] = WarpInstance(op.child_warp, op.child_root, op.key)
                st.stores[op.child_warp] = GraphStore(op.child_warp)
            store = st.stores[op.child_warp]
            k = (op.child_warp, op.child_root)
            if k not in self._nodes:
                self._nodes[k] = store.nodes.get(op.child_root)
            store.insert_node(op.child_root, op.init_root)
        self._set_attachment(op.key, Descend(op.child_warp))

    def check_portal_invariants(self) -> None:
        """No orphan instance (parent slot must hold ``Descend(it)``) and no dangling portal."""
        st = self.state
        for warp, inst in st.instances.items():
            p = inst.parent
            if p is None:
                continue
            store = st.stores.get(p[1])
            holder = None
            if store is not None:
                holder = (store.node_attachments if p[0] == NODE else store.edge_attachments).get(p[2])
            if holder != Descend(warp):
                raise InvalidOperation(f"orphan warp instance {warp.hex()}: its parent slot no longer descends")
        for store in st.stores.values():
            for nid in store._descend_nodes:
                if store.node_attachments[nid][0] not in st.instances:
                    raise InvalidOperation(f"dangling portal on node {nid.hex()}")
            for eid in store._descend_edges:
                if store.edge_attachments[eid][0] not in st.instances:
                    raise InvalidOperation(f"dangling portal on edge {eid.hex()}")

    # ------------------------------------------------------------------ diff / undo
    def effective_ops(self) -> list[WarpOp]:
        """Echo's ``diff_state(before, after)``, computed over the touched keys, sorted by op key."""
        if self._bulk is not None:
            # Only distinct node-atom writes in key order: the diff is each write that changed its value.
            ops, before = self._bulk
            return list(compress(ops, map(ne, map(_value_of, ops), before)))
        self._settle()
        st = self.state
        out: list[WarpOp] = []
        suppressed_nodes: set[tuple[bytes, bytes]] = set()
        suppressed_atts: set[tuple] = set()
        for warp in sorted(self._instances):
            before = self._instances[warp][0]
            after = st.instances.get(warp)
            if after is None:
                if before is not None:
                    out.append(DeleteWarpInstance(WarpId(warp)))
                continue
            if before is None and after.parent is not None:
                p = after.parent
                pstore = st.stores.get(p[1])
                holder = None
                if pstore is not None:
                    holder = (pstore.node_attachments if p[0] == NODE else pstore.edge_attachments).get(p[2])
                root_rec = st.stores[warp].nodes.get(after.root_node)
                if holder == Descend(warp) and root_rec is not None:
                    out.append(OpenPortal(p, after.warp_id, after.root_node, root_rec))
                    suppressed_nodes.add((warp, after.root_node))
                    suppressed_atts.add(tuple(p))
                    continue
            if before != after:
                out.append(UpsertWarpInstance(after.warp_id, after.root_node, after.parent))
        stores = st.stores
        for k, rec_b in self._nodes.items():
            store = stores.get(k[0])
            if store is None:
                continue
            rec_a = store.nodes.get(k[1])
            if rec_a is None:
                if rec_b is not None:
                    out.append(DeleteNode(k[0], k[1]))
            elif rec_a != rec_b and k not in suppressed_nodes:
                out.append(UpsertNode(k[0], k[1], rec_a))
        alpha = self._alpha
        alpha_keys = alpha.keys() | self._nodes.keys() if self._nodes else alpha.keys()
        for k in alpha_keys:
            w, n = k
            store = stores.get(w)
            if store is None or n not in store.nodes:
                continue
            after_v = store.node_attachments.get(n)
            if after_v != alpha.get(k, after_v):
                key = _tnew(AttachmentKey, (NODE, w, n, PLANE_ALPHA))
                if not suppressed_atts or key not in suppressed_atts:
                    out.append(_tnew(SetAttachment, (key, after_v)))
        moved: set[tuple[bytes, bytes]] = set()
        for k, rec_b in self._edges.items():
            store = stores.get(k[0])
            if store is None:
                continue
            rec_a = store.edge(k[1])
            if rec_a is None:
                if rec_b is not None:
                    out.append(DeleteEdge(k[0], rec_b[1], k[1]))
            elif rec_a != rec_b:
                if rec_b is not None and rec_b[1] != rec_a[1]:
                    out.append(DeleteEdge(k[0], rec_b[1], k[1]))
                    moved.add(k)
                out.append(UpsertEdge(k[0], rec_a))
        for k in set(self._beta) | set(self._edges):
            store = stores.get(k[0])
            if store is None or k[1] not in store.edge_index:
                continue
            after_v = store.edge_attachments.get(k[1])
            before_v = self._beta.get(k, after_v)
            if k in moved:
                # On replay the DeleteEdge emitted for a moved edge drops its beta attachment, so
                # what the patch must say is measured against "no attachment": a surviving value is
                # restated (a deliberate deviation: Echo emits nothing and its own playback loses
                # it), a cleared one needs nothing (as in Echo).
                before_v = None
            if after_v != before_v:
                key = AttachmentKey(EDGE, k[0], k[1], PLANE_BETA)
                if tuple(key) not in suppressed_atts:
                    out.append(SetAttachment(key, after_v))
        out.sort(key=_sort_key)
        return out

    def rollback(self) -> None:
        """Restore every touched key to its value before the first op."""
        self._settle()
        st = self.state
        created = [w for w, (inst, _) in self._instances.items() if inst is None]
        for w in created:
            st.instances.pop(w, None)
            st.stores.pop(w, None)
        for w, (inst, store) in self._instances.items():
            if inst is not None:
                st.instances[w] = inst
                if store is not None:
                    st.stores[w] = store
        stores = st.stores
        # Edges created this tick go first (a created node is removed below without isolation checks).
        for (w, eid), rec in self._edges.items():
            store = stores.get(w)
            if rec is None and store is not None and eid in store.edge_index:
                store.delete_edge(store.edge_index[eid], eid)
        for (w, nid), rec in self._nodes.items():
            store = stores.get(w)
            if store is None:
                continue
            if rec is None:
                if nid in store.nodes:
                    store._drop_node(nid)
            else:
                store.insert_node(nid, rec)
        for (w, _eid), rec in self._edges.items():
            store = stores.get(w)
            if store is not None and rec is not None:
                store.upsert_edge(rec)
        for (w, nid), value in self._alpha.items():
            store = stores.get(w)
            if store is not None and nid in store.nodes:
                store.set_node_attachment(nid, value)
        for (w, eid), value in self._beta.items():
            store = stores.get(w)
            if store is not None and eid in store.edge_index:
                store.set_edge_attachment(eid, value)


_sort_key = methodcaller("sort_key")
_key_of = itemgetter(0)
_value_of = itemgetter(1)
_warp_of = itemgetter(1)
_local_of = itemgetter(2)
_owner_of = itemgetter(0)
_plane_of = itemgetter(3)
_first = itemgetter(0)
_second = itemgetter(1)
_op_encode = methodcaller("encode")
