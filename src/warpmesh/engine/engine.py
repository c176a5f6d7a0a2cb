"""The engine: rules, transactions, commits, tick history, replay and fork (Echo ``engine_impl.rs``).

A tick goes ``begin`` → ``apply``* → ``commit``. Nothing touches the graph before ``commit``: matching and
footprints read it, the scheduler orders and admits rewrites, the executors write ops into deltas, the
merge puts the ops in canonical order, and only then is the state changed, diffed into the tick's patch
and hashed (reference §2.6). ``abort`` therefore has nothing to undo.

Mutations made between ticks (ingested intents, ``insert_node`` ...) are recorded with the next tick as
its ``pre_ops``, so a history replays to the same state roots (Echo's ``jump_to_tick`` re-applies patches
only and loses them).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import chain, compress, repeat
from operator import attrgetter, ne
from typing import Any, NamedTuple, Protocol

from blake3 import blake3

from warpmesh.bulk import bulk
from warpmesh.engine.attachment import AtomPayload, AttachmentKey, AttachmentValue, node_alpha
from warpmesh.engine.errors import (
    DuplicateRuleId,
    DuplicateRuleName,
    InternalCorruption,
    MergeConflict,
    ReplayMismatch,
    UnknownRule,
    UnknownTx,
    UnknownWarp,
    WriteToNewWarp,
)
from warpmesh.engine.execution import (
    AtomRun,
    ExecItem,
    MergeFailure,
    TickDelta,
    assign_units,
    merge_deltas,
    merge_tick_deltas,
    partition_units,
    run_batch,
    run_delta,
)
from warpmesh.engine.footprint import (
    ActiveFootprints,
    Footprint,
    FootprintUnion,
    compact_batch,
    footprints_conflict,
    union_footprints,
)
from warpmesh.engine.graph import EdgeRecord, GraphStore, GraphView, NodeRecord
from warpmesh.engine.guard import footprint_slice
from warpmesh.engine.hashing import (
    POLICY_ID_NO_POLICY_V0,
    HashProfile,
    commit_hash_v2,
    digest_len0_u64,
    get_profile,
    rule_pack_id,
)
from warpmesh.engine.ident import (
    EdgeId,
    Hash,
    NodeId,
    NodeKey,
    TypeId,
    WarpId,
    compute_intent_id,
    hash_bytes,
    make_edge_id,
    make_node_id,
    make_rule_id,
    make_type_id,
    make_warp_id,
    pending_edge_id,
)
from warpmesh.engine.ops import OpenPortal, SetAttachment, UpsertEdge, UpsertNode, WarpOp
from warpmesh.engine.patch import (
    STATUS_COMMITTED,
    SlotSet,
    TickPatch,
    apply_ops,
    encode_atom_ops,
    slots_from_compact,
    slots_from_union,
)
from warpmesh.engine.scheduler import SMALL_SORT_THRESHOLD, PendingRewrite, PendingTx
from warpmesh.engine.state import WarpState, compute_state_root

__all__ = [
    "Accepted",
    "ApplyResult",
    "Consumed",
    "Disposition",
    "Duplicate",
    "Engine",
    "EngineBuilder",
    "NoPending",
    "ReceiptEntry",
    "RewriteRule",
    "ShardExecutor",
    "Snapshot",
    "TickReceipt",
    "TickRecord",
    "replay_history",
]

MatchFn = Callable[[GraphView, NodeId], bool]
ExecuteFn = Callable[[GraphView, NodeId, TickDelta], None]
FootprintFn = Callable[[GraphView, NodeId], Footprint]

_u64 = struct.Struct("<Q").pack
_tnew = tuple.__new__  # builds named tuples without their Python-level __new__ (hot loops only)
_rule_id = attrgetter("rule_id")
_rule_name = attrgetter("name")
_executor_of = attrgetter("executor")
_system_of = attrgetter("system")

# Structural ids used by ingest_intent (reference §1, "Structural ids created by ingest_intent").
SIM_NODE = make_node_id("sim")
INBOX_NODE = make_node_id("sim/inbox")
SIM_TYPE = make_type_id("sim")
INBOX_TYPE = make_type_id("sim/inbox")
EVENT_TYPE = make_type_id("sim/inbox/event")
INTENT_ATOM_TYPE = make_type_id("intent")
ROOT_SIM_EDGE = make_edge_id("edge:root/sim")
SIM_INBOX_EDGE = make_edge_id("edge:sim/inbox")
EDGE_SIM_TYPE = make_type_id("edge:sim")
EDGE_INBOX_TYPE = make_type_id("edge:inbox")
PENDING_EDGE_TYPE = make_type_id("edge:pending")


@dataclass(frozen=True, slots=True)
class RewriteRule:
    """A rewrite rule: where it applies (``matcher``), what it touches (``footprint``), what it does.

    ``matcher(view, scope) -> bool`` and ``footprint(view, scope) -> Footprint`` run at ``apply`` time on
    the current graph; ``executor(view, scope, delta)`` runs at commit on the pre-tick graph and emits ops
    into ``delta``. ``rule_id`` defaults to ``make_type_id("rule:" + name)``. Only ``system`` rules may
    create, delete or open warp instances. To run on a process pool, ``executor`` must be picklable (a
    module-level function).
    """

    name: str
    matcher: MatchFn
    executor: ExecuteFn
    footprint: FootprintFn
    rule_id: bytes = b""
    system: bool = False

    def __post_init__(self) -> None:
        if not self.rule_id:
            object.__setattr__(self, "rule_id", make_rule_id(self.name))
        if len(self.rule_id) != 32:
            raise ValueError(f"rule {self.name!r}: rule_id must be 32 bytes")


class ApplyResult(IntEnum):
    """Outcome of :meth:`Engine.apply`."""

    NO_MATCH = 0
    APPLIED = 1


@dataclass(frozen=True, slots=True)
class Accepted:
    """The intent was new: its event node and pending edge now exist."""

    intent_id: Hash


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The intent had been ingested before; nothing changed."""

    intent_id: Hash


@dataclass(frozen=True, slots=True)
class NoPending:
    """``dispatch_next_intent`` found no pending intent."""


@dataclass(frozen=True, slots=True)
class Consumed:
    """``dispatch_next_intent`` enqueued the handling of ``intent_id``."""

    intent_id: Hash
    handler_matched: bool


class Disposition(IntEnum):
    """Receipt codes (Echo ``TickReceiptDisposition``)."""

    APPLIED = 1
    FOOTPRINT_CONFLICT = 2


_NO_MATCH = ApplyResult.NO_MATCH
_APPLIED = ApplyResult.APPLIED
_CODE = {Disposition.APPLIED: b"\x01", Disposition.FOOTPRINT_CONFLICT: b"\x02"}


class ReceiptEntry(NamedTuple):
    """One drained candidate and what happened to it."""

    rule_id: bytes
    rule_name: str
    scope_hash: Hash
    scope: NodeKey
    disposition: Disposition


class TickReceipt:
    """Per-candidate outcome of a tick, in canonical order (immutable).

    ``blocked_by[i]`` lists, ascending, the indices of earlier *applied* entries whose footprints conflict
    with rejected entry ``i`` (empty for applied entries). Rejected rewrites are dropped, not retried: a
    retry is a new causal act (a new ``apply`` in a later tick).

    A tick where every candidate was applied keeps its entries as columns of bytes and plain tuples, and
    builds the :class:`ReceiptEntry` records on first access: a history holds a receipt per tick, and
    thousands of named tuples per tick would stay tracked by the cyclic collector for good (it only
    untracks exact tuples of atoms), making every full collection slower as the history grows.
    """

    __slots__ = ("_entries", "_rows", "blocked_by", "tx")

    tx: int
    blocked_by: tuple[tuple[int, ...], ...]
    _entries: tuple[ReceiptEntry, ...] | None
    _rows: tuple[tuple[bytes, ...], tuple[str, ...], tuple[Hash, ...], tuple[bytes, ...], tuple[bytes, ...]] | None

    def __init__(self, tx: int, entries: tuple[ReceiptEntry, ...],
                 blocked_by: tuple[tuple[int, ...], ...]) -> None:
        _set = object.__setattr__
        _set(self, "tx", tx)
        _set(self, "_entries", tuple(entries))
        _set(self, "_rows", None)
        _set(self, "blocked_by", blocked_by)

    @classmethod
    def all_applied(cls, tx: int, rule_ids: Sequence[bytes], rule_names: Sequence[str],
                    scope_hashes: Sequence[Hash], warps: Sequence[bytes], locals_: Sequence[bytes]) -> TickReceipt:
        """The receipt of a tick that applied every candidate, from its columns (in canonical order)."""
        receipt = cls.__new__(cls)
        _set = object.__setattr__
        _set(receipt, "tx", tx)
        _set(receipt, "_entries", None)
        _set(receipt, "_rows", (tuple(rule_ids), tuple(rule_names), tuple(scope_hashes), tuple(warps),
                                tuple(locals_)))
        _set(receipt, "blocked_by", ((),) * len(rule_ids))
        return receipt

    @property
    def entries(self) -> tuple[ReceiptEntry, ...]:
        """One :class:`ReceiptEntry` per drained candidate, in canonical order."""
        entries: tuple[ReceiptEntry, ...] | None = self._entries
        if entries is None:
            assert self._rows is not None
            ids, names, hashes, warps, locals_ = self._rows
            entries = tuple(map(_tnew, repeat(ReceiptEntry), zip(
                ids, names, hashes, map(_tnew, repeat(NodeKey), zip(warps, locals_)), repeat(Disposition.APPLIED))))
            object.__setattr__(self, "_entries", entries)
            object.__setattr__(self, "_rows", None)
        return entries

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"TickReceipt is immutable (cannot set {name!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TickReceipt):
            return NotImplemented
        return (self.tx, self.blocked_by, self.entries) == (other.tx, other.blocked_by, other.entries)

    def __hash__(self) -> int:
        return hash((self.tx, self.entries, self.blocked_by))

    def __repr__(self) -> str:
        return f"TickReceipt(tx={self.tx}, entries={self.entries!r}, blocked_by={self.blocked_by!r})"

    def digest(self) -> Hash:
        """``u16le(2) ‖ u64le(n) ‖ (rule_id ‖ scope_hash ‖ warp ‖ local ‖ code u8)*`` (``blocked_by`` excluded)."""
        if not self.entries:
            return digest_len0_u64()
        parts = [b"\x02\x00", _u64(len(self.entries))]
        for e in self.entries:
            parts += (e[0], e[2], e[3][0], e[3][1], _CODE[e[4]])
        return hash_bytes(b"".join(parts))

    def rejected(self) -> list[tuple[ReceiptEntry, tuple[int, ...]]]:
        """Rejected entries with their blockers."""
        return [(e, b) for e, b in zip(self.entries, self.blocked_by)
                if e.disposition != Disposition.APPLIED]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A committed tick's identity. ``hash`` (commit id v2) covers parents, state root, patch digest and
    policy; the plan, decision and rewrites digests are diagnostics."""

    root: NodeKey
    hash: Hash
    state_root: Hash
    parents: tuple[Hash, ...]
    plan_digest: Hash
    decision_digest: Hash
    rewrites_digest: Hash
    patch_digest: Hash
    policy_id: int
    tx: int


@dataclass(frozen=True, slots=True)
class TickRecord:
    """One entry of the tick history: the snapshot, receipt and patch, plus the out-of-tick mutations
    (``pre_ops``) applied since the previous tick."""

    snapshot: Snapshot
    receipt: TickReceipt
    patch: TickPatch
    pre_ops: tuple[WarpOp, ...]


class ShardExecutor(Protocol):
    """Runs batches of rewrites somewhere else (see :mod:`warpmesh.engine.parallel`).

    ``run(fn, batches)`` must return ``[fn(b) for b in batches]`` in order; where and how concurrently
    each call runs is up to the implementation. Batches carry footprint slices, not the whole graph, and
    ``fn`` is a module-level function, so both pickle.
    """

    def run(self, fn: Callable[[Any], Any], batches: list[Any]) -> list[Any]:
        """Return ``[fn(b) for b in batches]``."""
        ...


class Engine:
    """Deterministic graph-rewrite engine, hash-compatible with Echo's ``warp-core``.

    ``Engine(store, root_node)`` adopts ``store`` as the root warp instance (renamed
    ``make_warp_id("root")``, as Echo's ``Engine::new`` does). Options: ``workers`` (logical shard workers,
    1..256), ``profile`` (``"echo"`` or ``"seed"``), ``policy_id``, ``footprint_guard`` (refuse undeclared
    reads and writes; on by default), ``radix_threshold`` (drain with the LSD radix sort above this many
    candidates; None for always comparison sort), ``executor`` (a :class:`ShardExecutor` to run batches
    on, e.g. a process pool) and ``claim_rng`` (a seeded ``random.Random`` that scrambles which worker runs
    which shard, to show it does not matter). See :class:`EngineBuilder` for the fluent form.
    """

    def __init__(
        self,
        store: GraphStore,
        root_node: NodeId,
        *,
        workers: int = 1,
        profile: str | HashProfile = "echo",
        policy_id: int = POLICY_ID_NO_POLICY_V0,
        footprint_guard: bool = True,
        radix_threshold: int | None = SMALL_SORT_THRESHOLD,
        executor: ShardExecutor | None = None,
        claim_rng: random.Random | None = None,
        _state: WarpState | None = None,
        _root: NodeKey | None = None,
    ) -> None:
        if _state is not None and _root is not None:
            state, root = _state, _root
            inst = state.instances.get(root[0])
            if inst is None or inst.parent is not None or inst.root_node != root[1]:
                raise UnknownWarp("from_state: the root instance must exist, have no parent and this root node")
        else:
            warp = make_warp_id("root")
            store.warp_id = warp
            state = WarpState.from_root_store(store, root_node)
            root = NodeKey(warp, root_node)
        if not 1 <= workers <= 256:
            raise ValueError("workers must be in 1..256")
        self._state = state
        self._root = NodeKey(*root)
        self._initial = state.clone()
        self.profile: HashProfile = get_profile(profile)
        self.policy_id = policy_id
        self.workers = workers
        self.footprint_guard = footprint_guard
        self.radix_threshold = radix_threshold
        self.executor = executor
        self.claim_rng = claim_rng
        self._rules: list[RewriteRule] = []
        self._by_name: dict[str, int] = {}
        self._ids: set[bytes] = set()
        self._rule_pack: Hash | None = None
        self._tx_counter = 0
        self._live: dict[int, PendingTx] = {}
        self._history: list[TickRecord] = []
        self._journal: list[WarpOp] = []
        self._last: Snapshot | None = None
        self._views: dict[bytes, GraphView] = {}
        # One hasher reused for every scope hash (reset, update, digest): cheaper than a new BLAKE3 object
        # per candidate. Engines are single-threaded, and nothing runs between the three calls.
        self._scope_hasher = blake3()

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def builder(store: GraphStore, root_node: NodeId) -> EngineBuilder:
        """Fluent construction: ``Engine.builder(store, root).workers(4).profile("seed").build()``."""
        return EngineBuilder(store, root_node)

    @classmethod
    def from_state(cls, state: WarpState, root: NodeKey, **options: Any) -> Engine:
        """An engine over an existing multi-instance state (the root instance keeps its warp id)."""
        return cls(GraphStore(root[0]), root[1], _state=state, _root=root, **options)

    @classmethod
    def resume_after(cls, state: WarpState, root: NodeKey, last: Snapshot | None, **options: Any) -> Engine:
        """An engine over a restored ``state`` whose next commit chains onto ``last`` (the snapshot of
        the tick that produced ``state``), so a replica restored from a peer's snapshot computes the same
        commit hashes as the peer from there on. History starts empty; register the rules again."""
        engine = cls.from_state(state, root, **options)
        engine._last = last
        return engine

    # ------------------------------------------------------------------ rules
    def register_rule(
        self,
        rule: RewriteRule | str,
        matcher: MatchFn | None = None,
        executor: ExecuteFn | None = None,
        footprint: FootprintFn | None = None,
        *,
        rule_id: bytes = b"",
        system: bool = False,
    ) -> RewriteRule:
        """Register a rule (a :class:`RewriteRule`, or its fields). Its compact id is its registration index."""
        if not isinstance(rule, RewriteRule):
            if matcher is None or executor is None or footprint is None:
                raise TypeError("register_rule(name, matcher, executor, footprint)")
            rule = RewriteRule(rule, matcher, executor, footprint, rule_id, system)
        if rule.name in self._by_name:
            raise DuplicateRuleName(rule.name)
        if rule.rule_id in self._ids:
            raise DuplicateRuleId(f"{rule.name}: id {rule.rule_id.hex()} already registered")
        self._by_name[rule.name] = len(self._rules)
        self._rules.append(rule)
        self._ids.add(rule.rule_id)
        self._rule_pack = None
        return rule

    @property
    def rules(self) -> tuple[RewriteRule, ...]:
        """Registered rules in registration (compact id) order."""
        return tuple(self._rules)

    @property
    def rule_pack_id(self) -> Hash:
        """Digest of the sorted ids of all registered rules."""
        if self._rule_pack is None:
            self._rule_pack = rule_pack_id([r.rule_id for r in self._rules])
        return self._rule_pack

    # ------------------------------------------------------------------ state access
    @property
    def root_key(self) -> NodeKey:
        """The root node the state root is computed from."""
        return self._root

    @property
    def state(self) -> WarpState:
        """The live state. Treat it as read-only: mutate through the engine so history stays replayable."""
        return self._state

    def view(self, warp: WarpId | None = None) -> GraphView:
        """A read-only view of a warp instance (the root warp by default)."""
        store = self._state.stores.get(warp or self._root[0])
        if store is None:
            raise UnknownWarp((warp or b"").hex())
        return GraphView(store)

    def node(self, node: NodeId, warp: WarpId | None = None) -> NodeRecord | None:
        """A node's record in a warp (the root warp by default)."""
        return self.view(warp).node(node)

    def node_attachment(self, node: NodeId, warp: WarpId | None = None) -> AttachmentValue | None:
        """A node's alpha attachment."""
        return self.view(warp).node_attachment(node)

    def state_root(self) -> Hash:
        """The current state root."""
        return compute_state_root(self._state, self._root[0], self._root[1], self.profile)

    # ------------------------------------------------------------------ out-of-tick mutations
    def _mutate(self, ops: Iterable[WarpOp]) -> None:
        applier = apply_ops(self._state, ops)
        self._journal.extend(applier.effective_ops())

    def insert_node(self, node: NodeId, ty: TypeId, warp: WarpId | None = None) -> None:
        """Insert or replace a node outside any tick (recorded for replay, not part of a patch)."""
        self._mutate([UpsertNode(warp or self._root[0], node, NodeRecord(ty))])

    def insert_edge(self, edge: EdgeId, from_: NodeId, to: NodeId, ty: TypeId, warp: WarpId | None = None) -> None:
        """Insert or replace an edge outside any tick."""
        self._mutate([UpsertEdge(warp or self._root[0], EdgeRecord(edge, from_, to, ty))])

    def set_node_attachment(self, node: NodeId, value: AttachmentValue | None, warp: WarpId | None = None) -> None:
        """Set a node's alpha attachment outside any tick."""
        self._mutate([SetAttachment(node_alpha(warp or self._root[0], node), value)])

    def insert_node_with_attachment(self, node: NodeId, ty: TypeId, value: AttachmentValue | None,
                                    warp: WarpId | None = None) -> None:
        """Insert a node and set its alpha attachment outside any tick."""
        w = warp or self._root[0]
        self._mutate([UpsertNode(w, node, NodeRecord(ty)), SetAttachment(node_alpha(w, node), value)])

    # ------------------------------------------------------------------ inbox
    def ingest_intent(self, intent_bytes: bytes) -> Accepted | Duplicate:
        """Record an intent as an event node in the root warp's ``sim/inbox`` (reference §1).

        The event node's id is the intent id, so an intent ingested twice is detected by the node's
        existence and reported as :class:`Duplicate`.
        """
        intent_id = compute_intent_id(intent_bytes)
        warp, root = self._root
        ops: list[WarpOp] = [
            UpsertNode(warp, SIM_NODE, NodeRecord(SIM_TYPE)),
            UpsertNode(warp, INBOX_NODE, NodeRecord(INBOX_TYPE)),
            UpsertEdge(warp, EdgeRecord(ROOT_SIM_EDGE, root, SIM_NODE, EDGE_SIM_TYPE)),
            UpsertEdge(warp, EdgeRecord(SIM_INBOX_EDGE, SIM_NODE, INBOX_NODE, EDGE_INBOX_TYPE)),
        ]
        store = self._state.stores[warp]
        event = NodeId(intent_id)
        if event in store.nodes:
            self._mutate(ops)
            return Duplicate(intent_id)
        ops += [
            UpsertNode(warp, event, NodeRecord(EVENT_TYPE)),
            SetAttachment(node_alpha(warp, event), AtomPayload(INTENT_ATOM_TYPE, bytes(intent_bytes))),
            UpsertEdge(warp, EdgeRecord(pending_edge_id(INBOX_NODE, intent_id), INBOX_NODE, event,
                                        PENDING_EDGE_TYPE)),
        ]
        self._mutate(ops)
        return Accepted(intent_id)

    def pending_intents(self) -> list[NodeId]:
        """Event nodes with a pending edge, ascending by intent id."""
        bucket = self._state.stores[self._root[0]].edges_from.get(INBOX_NODE)
        if not bucket:
            return []
        return sorted(e.to for e in bucket.values() if e.ty == PENDING_EDGE_TYPE)

    def pending_intent_count(self) -> int:
        """Number of intents ingested and not yet acknowledged."""
        return len(self.pending_intents())

    def dispatch_next_intent(self, tx: int, handler_prefix: str = "cmd/") -> NoPending | Consumed:
        """Enqueue the handling of the pending intent with the smallest id.

        The first rule named ``handler_prefix…`` (in ascending ``(rule_id, name)`` order) whose matcher
        accepts the event node is applied to it, then ``sys/ack_pending``, which consumes the pending edge.
        """
        self._check_tx(tx)
        pending = self.pending_intents()
        if not pending:
            return NoPending()
        event = pending[0]
        view = self.view()
        matched = False
        handlers = sorted((r.rule_id, r.name) for r in self._rules if r.name.startswith(handler_prefix))
        for _, name in handlers:
            if self._rules[self._by_name[name]].matcher(view, event):
                self.apply(tx, name, event)
                matched = True
                break
        self.apply(tx, "sys/ack_pending", event)
        return Consumed(Hash(event), matched)

    # ------------------------------------------------------------------ transactions
    def begin(self) -> int:
        """Open a transaction; ids count up from 1 and skip 0 on wrap-around."""
        self._tx_counter = (self._tx_counter + 1) & 0xFFFF_FFFF_FFFF_FFFF
        if self._tx_counter == 0:
            self._tx_counter = 1
        self._live[self._tx_counter] = PendingTx()
        return self._tx_counter

    def _check_tx(self, tx: int) -> PendingTx:
        pending = self._live.get(tx)
        if pending is None:
            raise UnknownTx(f"transaction {tx} is not open")
        return pending

    def apply(self, tx: int, rule_name: str, scope: NodeId) -> ApplyResult:
        """Match ``rule_name`` at ``scope`` in the root warp and enqueue it (see :meth:`apply_in_warp`)."""
        # apply_in_warp() for the root warp, inlined: it runs once per candidate of every tick.
        pending = self._live.get(tx)
        ix = self._by_name.get(rule_name)
        warp = self._root[0]
        view = self._views.get(warp)
        if pending is None or ix is None or view is None or view._s is not self._state.stores.get(warp):
            return self.apply_in_warp(tx, warp, rule_name, scope)  # raises, or caches the view
        rule = self._rules[ix]
        if not rule.matcher(view, scope):
            return _NO_MATCH
        h = self._scope_hasher  # scope_hash(), inlined
        h.reset()
        h.update(rule.rule_id + warp + scope)
        pending.add(rule, ix, h.digest(), warp, scope, rule.footprint(view, scope))
        return _APPLIED

    def apply_in_warp(self, tx: int, warp: WarpId, rule_name: str, scope: NodeId,
                      descent_stack: Sequence[AttachmentKey] = ()) -> ApplyResult:
        """Run the matcher on the current graph; if it accepts, compute the footprint and enqueue.

        Enqueuing the same rule at the same scope again in one transaction replaces the earlier entry.
        ``descent_stack`` lists the portal slots traversed to reach ``warp``; they join the footprint's
        attachment reads, so a rewrite conflicts with anything re-pointing a portal it came through.
        """
        # The per-rewrite hot path of a tick: one call per candidate, so lookups are kept to a minimum.
        pending = self._live.get(tx)
        if pending is None:
            raise UnknownTx(f"transaction {tx} is not open")
        ix = self._by_name.get(rule_name)
        if ix is None:
            raise UnknownRule(rule_name)
        view = self._views.get(warp)
        store = self._state.stores.get(warp)
        if view is None or view._s is not store:
            if store is None:
                raise UnknownWarp(warp.hex())
            view = self._views[warp] = GraphView(store)
        rule = self._rules[ix]
        if not rule.matcher(view, scope):
            return _NO_MATCH
        fp = rule.footprint(view, scope)
        for key in descent_stack:
            fp.read_attachment(key)
        h = self._scope_hasher  # scope_hash(), inlined: once per apply
        h.reset()
        h.update(rule.rule_id + warp + scope)
        pending.add(rule, ix, h.digest(), warp, scope, fp)
        return _APPLIED

    def run_tick(self, applies: Iterable[tuple[str, NodeId]]) -> tuple[Snapshot, TickReceipt, TickPatch]:
        """One whole tick: ``begin``, ``apply(tx, rule, scope)`` for each pair, ``commit_with_receipt``.

        The whole tick, matching included, is then one bulk section (see :mod:`warpmesh.bulk`), where
        ``commit`` alone covers only its own part: a tick's candidates (footprints, pending rewrites)
        are thousands of containers that live until the commit, and the generational collections
        they trigger while they are being built re-walk the engine's whole history. If an apply
        raises, the transaction is aborted and the error re-raised.
        """
        with bulk():
            tx = self.begin()
            try:
                self._apply_all(self._live[tx], applies)
            except BaseException:
                self.abort(tx)
                raise
            return self.commit_with_receipt(tx)

    def _apply_all(self, pending: PendingTx, applies: Iterable[tuple[str, NodeId]]) -> None:
        """:meth:`apply` for each pair, as one loop: the lookups every apply repeats are done once."""
        warp = self._root[0]
        store = self._state.stores[warp]
        view = self._views.get(warp)
        if view is None or view._s is not store:
            view = self._views[warp] = GraphView(store)
        by_name = self._by_name
        rules = self._rules
        add = pending.add
        h = self._scope_hasher
        reset, update, digest = h.reset, h.update, h.digest
        for rule_name, scope in applies:
            ix = by_name.get(rule_name)
            if ix is None:
                raise UnknownRule(rule_name)
            rule = rules[ix]
            if rule.matcher(view, scope):
                reset()
                update(rule.rule_id + warp + scope)
                add(rule, ix, digest(), warp, scope, rule.footprint(view, scope))

    def abort(self, tx: int) -> None:
        """Drop a transaction and its pending rewrites (nothing was mutated, so nothing to undo)."""
        self._live.pop(tx, None)

    def commit(self, tx: int) -> Snapshot:
        """Commit a transaction; see :meth:`commit_with_receipt`."""
        return self.commit_with_receipt(tx)[0]

    def commit_with_receipt(self, tx: int) -> tuple[Snapshot, TickReceipt, TickPatch]:
        """Drain, reserve, execute, merge, apply, diff and hash one tick (reference §2.6).

        Raises :class:`MergeConflict` (divergent writes, naming the writers), a
        :class:`~warpmesh.engine.errors.FootprintViolation` or an
        :class:`~warpmesh.engine.errors.InvalidOperation`; the state is then unchanged, the transaction
        closed and nothing recorded.
        """
        pending = self._check_tx(tx)
        del self._live[tx]
        # A tick allocates tens of thousands of short-lived containers (footprint sets, ops, receipt
        # entries); generational collections triggered by them would walk the whole graph's records and
        # cost up to half the commit. The engine creates no reference cycles, so the tick is a bulk
        # section: a runtime that installed a guard (warpmesh.aio.tuning.GcPause) pauses the collector.
        with bulk():
            return self._commit(tx, pending)

    def _commit(self, tx: int, pending: PendingTx) -> tuple[Snapshot, TickReceipt, TickPatch]:
        pack = self.rule_pack_id
        drained = pending.drain_columns(self.radix_threshold)
        rules, scope_hashes, warps, locals_, fps = (drained.rules, drained.scope_hashes, drained.warps,
                                                   drained.locals_, drained.footprints)
        n = len(rules)
        rule_ids = list(map(_rule_id, rules))

        # The digests' byte streams are joined from the columns. scope_hash ‖ rule_id per candidate: with one
        # rule (the usual tick) its id separates the hashes, so one join builds the whole stream.
        if n and rule_ids.count(rule_ids[0]) == n:
            plan_digest = _digest(_u64(n), (rule_ids[0].join(scope_hashes), rule_ids[0]))
        else:
            plan_digest = _digest(_u64(n), chain.from_iterable(zip(scope_hashes, rule_ids)))
        # The usual tick's footprints are compact (see Footprint): admission and slots come from their
        # columns, with no set built per footprint.
        batch = compact_batch(fps)
        union: FootprintUnion | None = None
        if batch is not None and batch.conflict_free():
            conflict_free = True
        else:
            union, conflict_free = union_footprints(fps)
        if conflict_free:
            # No two candidates conflict, so reserving them in order admits all (see union_footprints).
            receipt = TickReceipt.all_applied(tx, rule_ids, list(map(_rule_name, rules)), scope_hashes,
                                              warps, locals_)
            # rule_id ‖ scope_hash ‖ warp ‖ local per rewrite; the receipt's stream is the same rows each
            # followed by its code (01). The rows are built once and joined twice (measured ~4x faster than
            # joining the fields themselves: one large join over four times as many parts is the slow part).
            rows = list(map(b"".join, zip(rule_ids, scope_hashes, warps, locals_)))
            rewrites_digest = _digest(_u64(n), rows)
            decision_digest = _digest(b"\x02\x00" + _u64(n), (b"\x01".join(rows), b"\x01")) if n else digest_len0_u64()
        else:
            accepted, receipt = self._reserve(tx, drained.records())
            union = union_footprints([pr.footprint for pr in accepted])[0]
            rewrites_digest = _digest(_u64(len(accepted)), chain.from_iterable(
                (pr.rule.rule_id, pr.scope_hash, pr.scope[0], pr.scope[1]) for pr in accepted))
            decision_digest = receipt.digest()
            rules = [pr.rule for pr in accepted]
            warps = [pr.warp for pr in accepted]
            locals_ = [pr.local for pr in accepted]
            fps = [pr.footprint for pr in accepted]
        if union is not None:
            in_slots, out_slots = slots_from_union(union, self._node_order)
        else:
            assert batch is not None
            in_slots, out_slots = slots_from_compact(batch, self._node_order)

        merged = self._execute(rules, warps, locals_, fps)
        ops_encoding: bytes | None = None
        ops: list[WarpOp] | None = None
        if isinstance(merged, AtomRun):
            # A tick of node-atom writes in one warp, still as columns: applied in bulk, as apply_ops'
            # canonical path does for the same ops (set_node_atoms refuses what does not qualify, then
            # nothing changed), its diff and digest encoding taken from the columns.
            run = merged
            store = self._state.stores.get(WarpId(run.warp))
            before = store.set_node_atoms(run.nodes, run.values) if store is not None else None
            if before is None:
                merged = run.ops()
            else:
                changed = list(map(ne, run.values, before))
                nodes, values = list(compress(run.nodes, changed)), list(compress(run.values, changed))
                ops = run.ops(nodes, values)
                ops_encoding = encode_atom_ops(run.warp, nodes, values)
        if ops is None:
            assert not isinstance(merged, AtomRun)
            ops = apply_ops(self._state, merged, canonical=True).effective_ops()

        patch = TickPatch(self.policy_id, pack, STATUS_COMMITTED, in_slots, out_slots, tuple(ops))
        patch_digest = patch.digest(self.profile, ops_encoding)
        state_root = self.state_root()
        parents = (self._last.hash,) if self._last is not None else ()
        commit = commit_hash_v2(self.profile, state_root, list(parents), patch_digest, self.policy_id)
        snap = Snapshot(self._root, commit, state_root, parents, plan_digest, decision_digest, rewrites_digest,
                        patch_digest, self.policy_id, tx)
        self._history.append(TickRecord(snap, receipt, patch, tuple(self._journal)))
        self._journal = []
        self._last = snap
        return snap, receipt, patch

    def _node_order(self, warp: bytes) -> list[NodeId] | None:
        """A warp's node ids ascending if its store has them cached (the state root keeps them), so a
        tick naming many of its nodes orders them by filtering instead of sorting."""
        store = self._state.stores.get(WarpId(warp))
        return store.cached_node_order() if store is not None else None

    @staticmethod
    def _reserve(tx: int, drained: list[PendingRewrite]) -> tuple[list[PendingRewrite], TickReceipt]:
        """Admit candidates one by one in canonical order (Echo's reserve), attributing each rejection."""
        active = ActiveFootprints()
        entries: list[ReceiptEntry] = []
        blocked: list[tuple[int, ...]] = []
        accepted: list[PendingRewrite] = []
        applied_ix: list[int] = []
        for i, pr in enumerate(drained):
            rule = pr.rule
            if active.try_reserve(pr.footprint):
                accepted.append(pr)
                applied_ix.append(i)
                blocked.append(())
                disp = Disposition.APPLIED
            else:
                fp = pr.footprint
                blockers = tuple(j for j in applied_ix if footprints_conflict(drained[j].footprint, fp))
                if not blockers:
                    raise InternalCorruption(f"{rule.name}: rejected but no admitted footprint conflicts")
                blocked.append(blockers)
                disp = Disposition.FOOTPRINT_CONFLICT
            entries.append(_tnew(ReceiptEntry, (rule.rule_id, rule.name, pr.scope_hash, _tnew(NodeKey, pr.scope),
                                                disp)))
        return accepted, TickReceipt(tx, tuple(entries), tuple(blocked))

    def _execute(self, rules: list[RewriteRule], warps: list[bytes], locals_: list[bytes],
                 fps: list[Footprint]) -> list[WarpOp] | AtomRun:
        """Run the admitted rewrites (given as columns, in canonical order) over shards and merge their
        deltas canonically: the merged ops, or the same ops as an :class:`AtomRun` when they only set
        node atoms of one warp (deltas run here keep those as columns; see TickDelta)."""
        if not rules:
            return []
        stores = self._state.stores
        guard = self.footprint_guard
        remote = self.executor is not None
        items: list[ExecItem]
        results: list[tuple[list[WarpOp], list[tuple[int, int]]]] = []
        deltas: list[TickDelta] = []
        if remote:
            items = [(i, rule.executor, footprint_slice(stores[WarpId(w)], fp), local, fp, rule.system)
                     for i, (rule, w, local, fp) in enumerate(zip(rules, warps, locals_, fps))]
        else:
            columns: Iterable[ExecItem] = zip(
                range(len(rules)), map(_executor_of, rules), map(stores.__getitem__, warps), locals_,
                fps if guard else repeat(None), map(_system_of, rules))
            if self.workers == 1:
                # One worker runs everything in canonical order (Echo's serial path), the items streamed
                # from the columns: zip recycles its tuple, so no per-rewrite item is built and kept.
                deltas = [run_delta(columns)]
                items = []
            else:
                items = list(columns)
        if remote or self.workers > 1:
            units = partition_units(list(zip(range(len(rules)), warps, locals_)))
            plan = assign_units(len(units), self.workers, self.claim_rng)
            batches = [[items[m] for u in claimed for m in units[u]] for claimed in plan]
            if remote:
                assert self.executor is not None
                results = self.executor.run(run_batch, batches)
            else:
                deltas = [run_delta(b) for b in batches]
        merged: list[WarpOp] | AtomRun
        try:
            merged = merge_deltas(results, self._node_order) if remote else merge_tick_deltas(deltas, self._node_order)
        except MergeFailure as failure:
            writers = [(rules[o[0]].name, NodeKey(warps[o[0]], locals_[o[0]]), op) for o, op in failure.writers]
            raise MergeConflict(failure.key, writers) from None
        if isinstance(merged, AtomRun):
            return merged  # no OpenPortal among them
        new_warps: set[bytes] = set()
        if OpenPortal in set(map(type, merged)):  # (one C-level pass over the ops when there is none)
            new_warps = {op.child_warp for op in merged if type(op) is OpenPortal and op.init_root is not None}
        if new_warps:
            for op in merged:
                if type(op) is not OpenPortal and _op_warp(op) in new_warps:
                    raise WriteToNewWarp(f"{type(op).__name__} writes into warp {_op_warp(op).hex()} "
                                         "created by OpenPortal in the same tick")
        return merged

    def snapshot(self) -> Snapshot:
        """A commit-shaped hash of the current state with an empty patch; does not advance the history."""
        patch = TickPatch(self.policy_id, self.rule_pack_id, STATUS_COMMITTED, SlotSet(), SlotSet(), ())
        patch_digest = patch.digest(self.profile)
        state_root = self.state_root()
        parents = (self._last.hash,) if self._last is not None else ()
        commit = commit_hash_v2(self.profile, state_root, list(parents), patch_digest, self.policy_id)
        d0 = digest_len0_u64()
        return Snapshot(self._root, commit, state_root, parents, d0, d0, d0, patch_digest, self.policy_id, 0)

    # ------------------------------------------------------------------ history, replay, fork
    @property
    def history(self) -> tuple[TickRecord, ...]:
        """Every committed tick, oldest first."""
        return tuple(self._history)

    @property
    def last_snapshot(self) -> Snapshot | None:
        """The most recent commit, or None before the first."""
        return self._last

    def replay(self, upto: int | None = None) -> WarpState:
        """Rebuild the state from the initial state by re-applying ticks ``0..=upto`` (all by default),
        checking every state root, patch digest and commit hash; raises :class:`ReplayMismatch`."""
        records = self._history if upto is None else self._history[: upto + 1]
        return replay_history(self._initial, self._root, records, self.profile)

    def fork(self, tick: int) -> Engine:
        """A new engine whose state and history are this engine's right after ``tick`` (0-based).

        The fork shares the rules and options; committing the same work on both yields the same hashes.
        """
        if not 0 <= tick < len(self._history):
            raise IndexError(f"tick {tick} not in history of {len(self._history)} ticks")
        state = self.replay(tick)
        child = Engine.from_state(
            state, self._root, workers=self.workers, profile=self.profile, policy_id=self.policy_id,
            footprint_guard=self.footprint_guard, radix_threshold=self.radix_threshold, executor=self.executor,
            claim_rng=self.claim_rng,
        )
        child._initial = self._initial.clone()
        for rule in self._rules:
            child.register_rule(rule)
        child._history = list(self._history[: tick + 1])
        child._last = child._history[-1].snapshot
        return child


def _digest(head: bytes, parts: Iterable[bytes]) -> Hash:
    """BLAKE3 of ``head`` followed by ``parts`` (a tuple of parts is fed one by one: no join, no copy)."""
    h = blake3(head)
    if type(parts) is tuple:
        for part in parts:
            h.update(part)
    else:
        h.update(b"".join(parts))
    return Hash(h.digest())


def _op_warp(op: WarpOp) -> bytes:
    t = type(op)
    if t is SetAttachment:
        return op.key[1]  # type: ignore[union-attr]
    return op[0] if t is not OpenPortal else op.key[1]  # type: ignore[union-attr,return-value]


def replay_history(initial: WarpState, root: NodeKey, records: Sequence[TickRecord],
                   profile: str | HashProfile = "echo") -> WarpState:
    """Re-apply ``records`` to a copy of ``initial``, checking each tick's hashes; returns the final state."""
    prof = get_profile(profile)
    state = initial.clone()
    parent: Hash | None = None
    for t, rec in enumerate(records):
        if rec.pre_ops:
            apply_ops(state, rec.pre_ops, playback=True)
        apply_ops(state, rec.patch.ops, playback=True)
        snap = rec.snapshot
        state_root = compute_state_root(state, root[0], root[1], prof)
        if state_root != snap.state_root:
            raise ReplayMismatch(t, "state_root", snap.state_root, state_root)
        patch_digest = rec.patch.digest(prof)
        if patch_digest != snap.patch_digest:
            raise ReplayMismatch(t, "patch_digest", snap.patch_digest, patch_digest)
        parents = [parent] if parent is not None else []
        if list(snap.parents) != parents:
            raise ReplayMismatch(t, "parents", b"".join(snap.parents), b"".join(parents))
        commit = commit_hash_v2(prof, state_root, parents, patch_digest, snap.policy_id)
        if commit != snap.hash:
            raise ReplayMismatch(t, "commit", snap.hash, commit)
        parent = commit
    return state


class EngineBuilder:
    """Fluent construction of an :class:`Engine` (Echo's ``EngineBuilder``)."""

    def __init__(self, store: GraphStore, root_node: NodeId) -> None:
        self._store = store
        self._root = root_node
        self._opts: dict[str, Any] = {}

    def workers(self, n: int) -> EngineBuilder:
        """Logical shard workers (1..256; results never depend on it)."""
        self._opts["workers"] = n
        return self

    def profile(self, profile: str | HashProfile) -> EngineBuilder:
        """Hash profile: ``"echo"`` (default) or ``"seed"``."""
        self._opts["profile"] = profile
        return self

    def policy_id(self, policy_id: int) -> EngineBuilder:
        """The u32 policy id committed into every hash."""
        self._opts["policy_id"] = policy_id
        return self

    def footprint_guard(self, on: bool) -> EngineBuilder:
        """Check executors' reads and writes against their footprints."""
        self._opts["footprint_guard"] = on
        return self

    def radix_threshold(self, n: int | None) -> EngineBuilder:
        """Drain with the radix sort above ``n`` candidates (None: always the comparison sort)."""
        self._opts["radix_threshold"] = n
        return self

    def executor(self, executor: ShardExecutor | None) -> EngineBuilder:
        """Run shard batches on an external executor (e.g. :class:`warpmesh.engine.parallel.PoolExecutor`)."""
        self._opts["executor"] = executor
        return self

    def claim_rng(self, rng: random.Random | None) -> EngineBuilder:
        """Scramble which worker claims which shard (tests)."""
        self._opts["claim_rng"] = rng
        return self

    def build(self) -> Engine:
        """Build the engine."""
        return Engine(self._store, self._root, **self._opts)

