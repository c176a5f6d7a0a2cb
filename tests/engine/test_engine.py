"""Engine API: transactions, rules, receipts and conflicts, the footprint guard, merge conflicts, rollback."""

from __future__ import annotations

import pytest

from tests.engine.workload import (
    CHILD,
    COUNTER,
    ENTITY,
    HUB,
    HUB_TYPE,
    ROOT,
    child_of,
    entity,
    is_entity,
    link_of,
    make_engine,
)
from warpmesh.engine import (
    ApplyResult,
    AtomPayload,
    CrossWarpEmission,
    DeleteEdge,
    DeleteNode,
    Disposition,
    DuplicateRuleId,
    DuplicateRuleName,
    EdgeRecord,
    Engine,
    Footprint,
    FootprintViolation,
    GraphStore,
    GraphView,
    MergeConflict,
    NodeKey,
    NodeNotIsolated,
    NodeRecord,
    ReceiptEntry,
    RewriteRule,
    SetAttachment,
    TickReceipt,
    UnknownRule,
    UnknownTx,
    UpsertEdge,
    make_node_id,
    make_rule_id,
    make_type_id,
    make_warp_id,
    node_alpha,
    scope_hash,
)
from warpmesh.engine.execution import MergeFailure, merge_deltas


def test_tx_ids_count_from_one_and_die_after_commit_or_abort() -> None:
    engine = make_engine(2)
    tx1, tx2 = engine.begin(), engine.begin()
    assert (tx1, tx2) == (1, 2)
    engine.commit(tx1)
    with pytest.raises(UnknownTx):
        engine.apply(tx1, "test/counter", entity(0))
    with pytest.raises(UnknownTx):
        engine.commit(tx1)
    engine.abort(tx2)
    with pytest.raises(UnknownTx):
        engine.commit(tx2)
    with pytest.raises(UnknownTx):
        engine.apply(0, "test/counter", entity(0))


def test_tx_counter_wraps_skipping_zero() -> None:
    engine = make_engine(1)
    engine._tx_counter = 2**64 - 1
    assert engine.begin() == 1


def test_abort_leaves_no_trace() -> None:
    engine = make_engine(3)
    before = engine.state_root()
    tx = engine.begin()
    assert engine.apply(tx, "test/spawn", entity(1)) is ApplyResult.APPLIED
    engine.abort(tx)
    assert engine.state_root() == before and engine.history == ()


def test_unknown_and_duplicate_rules() -> None:
    engine = make_engine(1)
    with pytest.raises(UnknownRule):
        engine.apply(engine.begin(), "nope", entity(0))
    with pytest.raises(DuplicateRuleName):
        engine.register_rule("test/counter", is_entity, lambda v, s, d: None, lambda v, s: Footprint(v.warp_id))
    with pytest.raises(DuplicateRuleId):
        engine.register_rule("other", is_entity, lambda v, s, d: None, lambda v, s: Footprint(v.warp_id),
                             rule_id=make_rule_id("test/counter"))


def test_no_match_enqueues_nothing() -> None:
    engine = make_engine(1)
    tx = engine.begin()
    assert engine.apply(tx, "test/prune", entity(0)) is ApplyResult.NO_MATCH  # no child link yet
    _, receipt, patch = engine.commit_with_receipt(tx)
    assert receipt.entries == () and patch.ops == ()


def test_apply_twice_is_last_wins_one_rewrite() -> None:
    engine = make_engine(1)
    tx = engine.begin()
    engine.apply(tx, "test/counter", entity(0))
    engine.apply(tx, "test/counter", entity(0))
    _, receipt, _ = engine.commit_with_receipt(tx)
    assert len(receipt.entries) == 1
    assert engine.node_attachment(entity(0)) == AtomPayload(COUNTER, (1).to_bytes(8, "little"))


def test_receipt_entries_follow_scope_hash_order() -> None:
    engine = make_engine(20)
    tx = engine.begin()
    for i in reversed(range(20)):
        engine.apply(tx, "test/counter", entity(i))
    _, receipt, _ = engine.commit_with_receipt(tx)
    hashes = [e.scope_hash for e in receipt.entries]
    assert hashes == sorted(hashes)
    warp = engine.root_key.warp_id
    assert set(hashes) == {scope_hash(make_rule_id("test/counter"), warp, entity(i)) for i in range(20)}


# ------------------------------------------------------------------------------------ conflicts / receipts
W = make_type_id("test/w")


def _writes(*labels: str):  # type: ignore[no-untyped-def]
    def fp(view: GraphView, scope: bytes) -> Footprint:
        f = Footprint(view.warp_id).read_node(scope)  # type: ignore[arg-type]
        for label in labels:
            f.write_node(make_node_id(label))
        return f

    return fp


def _noop(view: GraphView, scope: bytes, delta: object) -> None:
    return None


def _conflict_engine() -> Engine:
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(ENTITY))
    engine = Engine(store, ROOT)
    engine.register_rule("wa", lambda v, s: True, _noop, _writes("A"))
    engine.register_rule("wb", lambda v, s: True, _noop, _writes("B"))
    engine.register_rule("wab", lambda v, s: True, _noop, _writes("A", "B"))
    return engine


def test_rejected_rewrite_names_every_blocker() -> None:
    """tick_receipt_tests: a rewrite conflicting with two admitted ones lists both, ascending."""
    engine = _conflict_engine()
    warp = engine.root_key.warp_id
    # Find scopes whose canonical order puts wa and wb before wab.
    sa, sb = make_node_id("sa"), make_node_id("sb")
    ha, hb = scope_hash(make_rule_id("wa"), warp, sa), scope_hash(make_rule_id("wb"), warp, sb)
    k = 0
    while scope_hash(make_rule_id("wab"), warp, make_node_id(f"sc{k}")) < max(ha, hb):
        k += 1
    sc = make_node_id(f"sc{k}")
    tx = engine.begin()
    for name, scope in (("wab", sc), ("wb", sb), ("wa", sa)):
        engine.apply(tx, name, scope)
    _, receipt, patch = engine.commit_with_receipt(tx)
    names = [e.rule_name for e in receipt.entries]
    assert names[2] == "wab"
    assert [e.disposition for e in receipt.entries] == [Disposition.APPLIED, Disposition.APPLIED,
                                                         Disposition.FOOTPRINT_CONFLICT]
    assert receipt.blocked_by == ((), (), (0, 1))
    assert [(e.rule_name, b) for e, b in receipt.rejected()] == [("wab", (0, 1))]
    # Rejected rewrites contribute no slots.
    written = {n for _, n in patch.out_slots.nodes}
    assert written == {make_node_id("A"), make_node_id("B")}


def test_read_read_never_conflicts_but_read_write_does() -> None:
    engine = make_engine(4)
    tx = engine.begin()
    for i in range(4):
        engine.apply(tx, "test/hub", entity(i))  # all write HUB
    _, receipt, _ = engine.commit_with_receipt(tx)
    applied = [e for e in receipt.entries if e.disposition == Disposition.APPLIED]
    assert len(applied) == 1
    assert all(b == (0,) for _, b in receipt.rejected())
    # counters on distinct entities only read their own scope: all admitted
    tx = engine.begin()
    for i in range(4):
        engine.apply(tx, "test/counter", entity(i))
    _, receipt, _ = engine.commit_with_receipt(tx)
    assert all(e.disposition == Disposition.APPLIED for e in receipt.entries)


def test_ports_conflict_on_any_overlap() -> None:
    """reserve_gate: two rewrites touching the same port conflict, even input/input."""
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(ENTITY))
    engine = Engine(store, ROOT)
    port_node = make_node_id("p")
    engine.register_rule("in1", lambda v, s: True, _noop, lambda v, s: Footprint(v.warp_id).port_in(port_node, 1))
    engine.register_rule("in2", lambda v, s: True, _noop, lambda v, s: Footprint(v.warp_id).port_in(port_node, 1))
    engine.register_rule("other", lambda v, s: True, _noop,
                         lambda v, s: Footprint(v.warp_id).port_out(port_node, 2))
    tx = engine.begin()
    for name in ("in1", "in2", "other"):
        engine.apply(tx, name, ROOT)
    _, receipt, patch = engine.commit_with_receipt(tx)
    disp = {e.rule_name: e.disposition for e in receipt.entries}
    assert sorted(disp.values()) == [Disposition.APPLIED, Disposition.APPLIED, Disposition.FOOTPRINT_CONFLICT]
    assert disp["other"] == Disposition.APPLIED
    assert len(patch.in_slots.ports) == 2 and len(patch.out_slots.ports) == 1


def test_receipt_and_snapshot_digests_agree() -> None:
    engine = make_engine(3)
    tx = engine.begin()
    for i in range(3):
        engine.apply(tx, "test/hub", entity(i))
    snap, receipt, patch = engine.commit_with_receipt(tx)
    assert snap.decision_digest == receipt.digest()
    assert snap.patch_digest == patch.digest(engine.profile)
    assert snap.parents == ()
    snap2 = engine.commit(engine.begin())
    assert snap2.parents == (snap.hash,)


def test_an_all_applied_receipt_builds_its_entries_on_demand_and_equals_the_eager_one() -> None:
    """A conflict-free tick keeps its receipt as columns of atoms (which the cyclic GC untracks) and builds
    the same ReceiptEntry records, NodeKey scopes included, when they are read."""
    import gc

    engine = make_engine(4)
    tx = engine.begin()
    for i in (2, 0, 3):
        engine.apply(tx, "test/counter", entity(i))
    snap, receipt, _ = engine.commit_with_receipt(tx)
    for _ in range(4):  # each pass untracks one more level of nesting (tuples of tuples of atoms)
        gc.collect()
    assert not gc.is_tracked(receipt._rows)  # nothing a full collection has to walk again
    rule = engine.rules[engine._by_name["test/counter"]]
    w = engine.root_key.warp_id
    eager = TickReceipt(tx, tuple(sorted(
        (ReceiptEntry(rule.rule_id, rule.name, scope_hash(rule.rule_id, w, entity(i)), NodeKey(w, entity(i)),
                      Disposition.APPLIED) for i in (0, 2, 3)), key=lambda e: e.scope_hash)), ((),) * 3)
    assert receipt == eager and hash(receipt) == hash(eager) and repr(receipt) == repr(eager)
    assert all(type(e.scope) is NodeKey for e in receipt.entries)
    assert receipt.digest() == snap.decision_digest and receipt.rejected() == []
    with pytest.raises(AttributeError):
        receipt.tx = 9  # type: ignore[misc]


def test_snapshot_does_not_advance_history() -> None:
    engine = make_engine(2)
    s1 = engine.snapshot()
    assert engine.snapshot() == s1 and engine.history == ()
    committed = engine.commit(engine.begin())
    assert committed.state_root == s1.state_root  # same state, and an empty tick's patch
    assert committed.hash == s1.hash


# ------------------------------------------------------------------------------------ guard
def _engine_with(rule: RewriteRule, **opts: object) -> Engine:
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(ENTITY))
    store.insert_node(HUB, NodeRecord(HUB_TYPE))
    engine = Engine(store, ROOT, **opts)  # type: ignore[arg-type]
    engine.register_rule(rule)
    return engine


def _run_one(engine: Engine, name: str) -> None:
    tx = engine.begin()
    engine.apply(tx, name, ROOT)
    engine.commit(tx)


def test_guard_refuses_undeclared_read() -> None:
    def peek(view: GraphView, scope: bytes, delta: object) -> None:
        view.node(HUB)  # type: ignore[arg-type]

    engine = _engine_with(RewriteRule("peek", lambda v, s: True, peek, lambda v, s: Footprint(v.warp_id).read_node(s)))
    before = engine.state_root()
    with pytest.raises(FootprintViolation, match="undeclared node"):
        _run_one(engine, "peek")
    assert engine.state_root() == before and engine.history == ()
    loose = _engine_with(RewriteRule("peek", lambda v, s: True, peek, lambda v, s: Footprint(v.warp_id)),
                         footprint_guard=False)
    _run_one(loose, "peek")


@pytest.mark.parametrize(
    ("emit", "declare", "error"),
    [
        (lambda d: d.upsert_node(HUB, HUB_TYPE), lambda f: f, FootprintViolation),
        (lambda d: d.delete_node(HUB), lambda f: f.write_node(HUB), FootprintViolation),  # alpha not declared
        (lambda d: d.set_node_attachment(HUB, None), lambda f: f.write_node(HUB), FootprintViolation),
        (lambda d: d.upsert_edge(link_of(ROOT), ROOT, HUB, HUB_TYPE), lambda f: f.write_edge(link_of(ROOT)),
         FootprintViolation),  # source node not declared written
        (lambda d: d.emit(DeleteNode(make_warp_id("elsewhere"), HUB)), lambda f: f, CrossWarpEmission),
        (lambda d: d.open_portal(node_alpha(d.warp_id, ROOT), make_warp_id("child"), ROOT, NodeRecord(ENTITY)),
         lambda f: f.write_alpha(ROOT), FootprintViolation),  # portals are for system rules
    ],
)
def test_guard_refuses_undeclared_writes(emit, declare, error) -> None:  # type: ignore[no-untyped-def]
    def execute(view: GraphView, scope: bytes, delta) -> None:  # type: ignore[no-untyped-def]
        emit(delta)

    engine = _engine_with(RewriteRule("w", lambda v, s: True, execute,
                                      lambda v, s: declare(Footprint(v.warp_id).read_node(s))))
    with pytest.raises(error):
        _run_one(engine, "w")


def test_guarded_view_refuses_whole_graph_scans() -> None:
    def scan(view: GraphView, scope: bytes, delta: object) -> None:
        list(view.nodes())

    engine = _engine_with(RewriteRule("scan", lambda v, s: True, scan, lambda v, s: Footprint(v.warp_id)))
    with pytest.raises(FootprintViolation, match="scan"):
        _run_one(engine, "scan")


def test_graph_view_has_no_way_to_mutate() -> None:
    view = make_engine(1).view()
    assert not any(hasattr(view, m) for m in ("insert_node", "upsert_edge", "delete_node", "set_node_attachment"))
    with pytest.raises(AttributeError):
        view.nodes_dict = {}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------ merge
def test_merge_keeps_identical_duplicates_once() -> None:
    op = SetAttachment(node_alpha(b"w" * 32, HUB),
                       AtomPayload(HUB_TYPE, b"x"))
    up = UpsertEdge(b"w" * 32, EdgeRecord(link_of(ROOT), ROOT, HUB, HUB_TYPE))
    a = ([op, up], [(3, 0), (3, 1)])
    b = ([op], [(1, 0)])
    assert merge_deltas([a, b]) == merge_deltas([b, a]) == [up, op]


def test_merge_refuses_divergent_writes_naming_all_writers() -> None:
    alpha = node_alpha(b"w" * 32, HUB)
    x, y = SetAttachment(alpha, AtomPayload(HUB_TYPE, b"x")), SetAttachment(alpha, AtomPayload(HUB_TYPE, b"y"))
    with pytest.raises(MergeFailure) as info:
        merge_deltas([([y], [(5, 0)]), ([x], [(2, 0)]), ([x], [(9, 1)])])
    assert [o for o, _ in info.value.writers] == [(2, 0), (5, 0), (9, 1)]
    assert info.value.key == x.sort_key()


def _liar(value: bytes):  # type: ignore[no-untyped-def]
    def execute(view: GraphView, scope: bytes, delta) -> None:  # type: ignore[no-untyped-def]
        delta.upsert_node(HUB, HUB_TYPE)
        delta.set_node_attachment(HUB, AtomPayload(HUB_TYPE, value or scope[:4]))

    return execute


def test_engine_merge_conflict_names_writers_and_changes_nothing() -> None:
    """parallel_merge_tripwire: an under-declared footprint explodes at the merge, not silently."""
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(ENTITY))
    engine = Engine(store, ROOT, footprint_guard=False, workers=4)
    engine.register_rule("liar/a", lambda v, s: True, _liar(b""), lambda v, s: Footprint(v.warp_id).read_node(s))
    before = engine.state_root()
    tx = engine.begin()
    engine.apply(tx, "liar/a", ROOT)
    engine.apply(tx, "liar/a", HUB)
    with pytest.raises(MergeConflict) as info:
        engine.commit(tx)
    assert [w[0] for w in info.value.writers] == ["liar/a", "liar/a"]
    assert {w[1].local_id for w in info.value.writers} == {ROOT, HUB}
    assert engine.state_root() == before and engine.history == ()
    with pytest.raises(UnknownTx):
        engine.commit(tx)


def test_engine_merge_dedupes_identical_writes() -> None:
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(ROOT, NodeRecord(ENTITY))
    engine = Engine(store, ROOT, footprint_guard=False, workers=2)
    engine.register_rule("same", lambda v, s: True, _liar(b"same"), lambda v, s: Footprint(v.warp_id).read_node(s))
    tx = engine.begin()
    engine.apply(tx, "same", ROOT)
    engine.apply(tx, "same", HUB)
    _, _, patch = engine.commit_with_receipt(tx)
    assert [type(op).__name__ for op in patch.ops] == ["UpsertNode", "SetAttachment"]


# ------------------------------------------------------------------------------------ diff / rollback
def test_patch_ops_are_the_state_diff_not_the_emitted_ops() -> None:
    """No-op writes vanish; spawning then re-spawning only records the first time."""
    engine = make_engine(2)
    tx = engine.begin()
    engine.apply(tx, "test/spawn", entity(0))
    _, _, patch = engine.commit_with_receipt(tx)
    assert [type(op).__name__ for op in patch.ops] == ["UpsertNode", "UpsertEdge", "SetAttachment"]
    tx = engine.begin()
    engine.apply(tx, "test/spawn", entity(0))
    _, _, patch = engine.commit_with_receipt(tx)
    assert patch.ops == ()
    assert engine.node(child_of(entity(0))) == NodeRecord(CHILD)


def test_failed_apply_rolls_back_everything() -> None:
    """HEAD semantics: DeleteNode needs an isolated node; the tick fails and nothing sticks."""

    def bad(view: GraphView, scope: bytes, delta) -> None:  # type: ignore[no-untyped-def]
        delta.set_node_attachment(scope, AtomPayload(COUNTER, b"1"))
        delta.delete_node(scope)  # scope still has incident edges

    engine = make_engine(3)
    engine.register_rule("bad", is_entity, bad, lambda v, s: Footprint(v.warp_id).write_node(s).write_alpha(s))
    tx = engine.begin()
    engine.apply(tx, "test/spawn", entity(1))
    engine.apply(tx, "bad", entity(0))
    before = engine.state.clone()
    root_before = engine.state_root()
    with pytest.raises(NodeNotIsolated):
        engine.commit(tx)
    assert engine.state_root() == root_before and engine.history == ()
    store, ref = engine.state.stores[engine.root_key.warp_id], before.stores[engine.root_key.warp_id]
    assert store.nodes == ref.nodes and store.node_attachments == ref.node_attachments
    assert store.edges_from == ref.edges_from and store.edges_to == ref.edges_to
    assert store.edge_index == ref.edge_index and store.edge_to_index == ref.edge_to_index


def test_prune_deletes_edge_before_node() -> None:
    engine = make_engine(1)
    tx = engine.begin()
    engine.apply(tx, "test/spawn", entity(0))
    engine.commit(tx)
    tx = engine.begin()
    assert engine.apply(tx, "test/prune", entity(0)) is ApplyResult.APPLIED
    _, _, patch = engine.commit_with_receipt(tx)
    assert [type(op) for op in patch.ops] == [DeleteEdge, DeleteNode]
    assert engine.node(child_of(entity(0))) is None


def test_rule_id_defaults_to_type_id_convention() -> None:
    rule = RewriteRule("x/y", is_entity, _noop, lambda v, s: Footprint(v.warp_id))
    assert rule.rule_id == make_type_id("rule:x/y")
    with pytest.raises(ValueError, match="32 bytes"):
        RewriteRule("x/y", is_entity, _noop, lambda v, s: Footprint(v.warp_id), rule_id=b"short")


def test_counter_state_is_visible_to_readers() -> None:
    engine = make_engine(1)
    for _ in range(3):
        tx = engine.begin()
        engine.apply(tx, "test/counter", entity(0))
        engine.commit(tx)
    assert engine.node_attachment(entity(0)) == AtomPayload(COUNTER, (3).to_bytes(8, "little"))
    assert engine.view().node(ROOT) is not None


def test_commit_restores_the_callers_gc_state() -> None:
    import gc

    from warpmesh import bulk
    from warpmesh.aio.tuning import GcPause

    previous = bulk.set_guard(GcPause)  # as the engine CLI and the runtimes install it
    try:
        engine = make_engine(3)
        seen: list[bool] = []
        engine.register_rule("probe", is_entity, lambda v, s, d: seen.append(gc.isenabled()),
                             lambda v, s: Footprint(v.warp_id).read_node(s))
        tx = engine.begin()
        engine.apply(tx, "probe", entity(0))
        assert gc.isenabled()
        engine.commit(tx)
        assert seen == [False]  # paused inside the tick
        assert gc.isenabled()
        gc.disable()
        try:
            engine.commit(engine.begin())
            assert not gc.isenabled()
        finally:
            gc.enable()
        tx = engine.begin()
        engine.register_rule("boom", is_entity, _boom, lambda v, s: Footprint(v.warp_id).read_node(s))
        engine.apply(tx, "boom", entity(0))
        with pytest.raises(RuntimeError, match="boom"):
            engine.commit(tx)
        assert gc.isenabled()
    finally:
        bulk.set_guard(previous)


def test_commit_leaves_gc_alone_without_a_guard() -> None:
    """The engine is a pure core: with no runtime guard installed it never touches the collector."""
    import gc

    from warpmesh import bulk

    previous = bulk.set_guard(None)
    try:
        engine = make_engine(3)
        seen: list[bool] = []
        engine.register_rule("probe", is_entity, lambda v, s, d: seen.append(gc.isenabled()),
                             lambda v, s: Footprint(v.warp_id).read_node(s))
        tx = engine.begin()
        engine.apply(tx, "probe", entity(0))
        engine.commit(tx)
        assert seen == [True]
    finally:
        bulk.set_guard(previous)


def _boom(view: GraphView, scope: bytes, delta: object) -> None:
    raise RuntimeError("boom")
