"""Compact footprints (one node, its alpha slot) must declare exactly what explicit sets declare.

Every check builds the same footprint twice: through the normal helpers (compact while it fits) and
with the compact form refused from the start (``_spill()`` before any declaration: the explicit sets the
engine always used), and requires identical sets, guard answers, admission, slots and tick hashes.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.engine import (
    AtomPayload,
    Engine,
    Footprint,
    FootprintViolation,
    GraphStore,
    GraphView,
    NodeId,
    NodeRecord,
    TickDelta,
    make_node_id,
    make_type_id,
    make_warp_id,
)
from warpmesh.engine.footprint import compact_batch, union_footprints
from warpmesh.engine.guard import GuardedView, check_write
from warpmesh.engine.ops import DeleteNode, SetAttachment, UpsertNode
from warpmesh.engine.patch import slots_from_compact, slots_from_union

W = make_warp_id("w")
W2 = make_warp_id("w2")
NODES = [make_node_id(f"n{i}") for i in range(4)]
DECLS = ["read_node", "write_node", "read_alpha", "write_alpha", "read_edge", "write_beta", "port_in"]
SETS = ("n_read", "n_write", "e_read", "e_write", "a_read", "a_write", "b_in", "b_out")

decl = st.tuples(st.sampled_from(DECLS), st.integers(0, 3), st.sampled_from([None, W, W2]))


def build(decls: list[tuple[str, int, bytes | None]], compact: bool) -> Footprint:
    fp = Footprint(W)
    if not compact:
        fp._spill()  # the explicit sets from the first declaration: the general form
    for name, i, warp in decls:
        if name == "port_in":
            fp.port_in(NODES[i], 7, warp)
        else:
            getattr(fp, name)(NODES[i], warp)
    return fp


def sets_of(fp: Footprint) -> tuple:
    return tuple(frozenset(getattr(fp, name)) for name in SETS)


@settings(max_examples=300, deadline=None)
@given(st.lists(decl, max_size=5))
def test_compact_and_explicit_footprints_declare_the_same(decls: list) -> None:
    a, b = build(decls, True), build(decls, False)
    for w in (W, W2):
        for n in NODES:
            assert a.reads_or_writes_node(w, n) == b.reads_or_writes_node(w, n)
            assert a.writes_node(w, n) == b.writes_node(w, n)
            assert a.reads_or_writes_alpha(w, n) == b.reads_or_writes_alpha(w, n)
            assert a.writes_attachment((1, w, n, 1)) == b.writes_attachment((1, w, n, 1))
    assert sets_of(a) == sets_of(b)  # (reading the public sets spills ``a``)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(decl, min_size=1, max_size=3), min_size=1, max_size=6))
def test_batch_admission_and_slots_match_the_union(batch: list) -> None:
    compact = [build(d, True) for d in batch]
    explicit = [build(d, False) for d in batch]
    order = sorted(NODES)
    cb = compact_batch(compact)
    union, free = union_footprints(explicit)
    if cb is not None:
        assert cb.conflict_free() == free
        if free:
            assert slots_from_compact(cb, lambda w: order) == slots_from_union(union, lambda w: order)
            assert slots_from_compact(cb) == slots_from_union(union)
    assert union_footprints(compact) == (union, free)


def test_single_node_footprints_are_compact() -> None:
    assert build([("read_node", 0, None), ("write_alpha", 0, W), ("read_alpha", 0, None)], True)._shape > 0
    assert build([("read_node", 0, None), ("write_alpha", 1, None)], True)._shape < 0
    assert build([("read_node", 0, None), ("read_edge", 0, None)], True)._shape < 0


def test_guard_gives_the_same_answers_on_both_forms() -> None:
    store = GraphStore(W)
    for n in NODES:
        store.insert_node(n, NodeRecord(make_type_id("t")))
        store.set_node_attachment(n, AtomPayload(make_type_id("a"), b"x"))
    for decls in ([], [("read_node", 0, None), ("write_alpha", 0, None)], [("read_alpha", 0, None)],
                  [("read_node", 0, W2), ("write_alpha", 0, None)], [("write_node", 1, None)]):
        outcomes = []
        for compact in (True, False):
            fp = build(decls, compact)
            view = GuardedView(store, fp)
            got = []
            for n in NODES[:2]:
                for read in (view.node_attachment, view.node, view.has_node, view.edge, view.edge_attachment):
                    try:
                        got.append(read(n))
                    except FootprintViolation:
                        got.append("refused")
                for op in (SetAttachment((1, W, n, 1), None), UpsertNode(W, n, NodeRecord(b"t" * 32)),
                           DeleteNode(W, n)):
                    try:
                        check_write(op, fp, W, False)  # type: ignore[arg-type]
                        got.append("ok")
                    except FootprintViolation:
                        got.append("refused")
                delta = TickDelta()
                delta._warp, delta._fp = W, fp  # type: ignore[assignment]
                try:
                    delta.set_node_attachment(n, None)
                    got.append("ok")
                except FootprintViolation:
                    got.append("refused")
            outcomes.append(got)
        assert outcomes[0] == outcomes[1]


MOTION = make_type_id("payload/motion")
_motion = struct.Struct("<2q")


def _matches(view: GraphView, scope: NodeId) -> bool:
    return view.node_attachment(scope) is not None


def _execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    x, v = _motion.unpack(view.node_attachment(scope)[1])  # type: ignore[index]
    delta.set_node_attachment(scope, AtomPayload(MOTION, _motion.pack(x + v, v)))


def _engine(compact: bool, **options: object) -> tuple[Engine, list[NodeId]]:
    store = GraphStore(b"")  # type: ignore[arg-type]
    ids = [make_node_id(f"e{i}") for i in range(3000)]
    for i, n in enumerate(ids):
        store.insert_node(n, NodeRecord(make_type_id("entity")))
        store.set_node_attachment(n, AtomPayload(MOTION, _motion.pack(i, i % 3)))
    engine = Engine(store, ids[0], **options)  # type: ignore[arg-type]

    def own(view: GraphView, scope: NodeId) -> Footprint:
        fp = Footprint(view.warp_id)
        if not compact:
            fp._spill()
        return fp.read_node(scope).read_alpha(scope).write_alpha(scope)

    def reader(view: GraphView, scope: NodeId) -> Footprint:  # conflicts with ``own`` on the same node
        fp = Footprint(view.warp_id)
        if not compact:
            fp._spill()
        return fp.read_alpha(scope)

    assert (own(engine.view(), ids[0])._shape > 0) == compact
    engine.register_rule("own", _matches, _execute, own)
    engine.register_rule("reader", _matches, lambda v, s, d: None, reader)
    return engine, ids


@pytest.mark.parametrize("options", [{}, {"workers": 4}, {"footprint_guard": False}, {"radix_threshold": None}])
def test_ticks_with_compact_footprints_hash_byte_for_byte_like_explicit_ones(options: dict) -> None:
    runs = []
    for compact in (True, False):
        engine, ids = _engine(compact, **options)
        out = []
        for t in range(3):
            tx = engine.begin()
            for n in ids[t::2]:
                engine.apply(tx, "own", n)
            if t == 1:  # a tick with conflicts: the reader of a node another rewrite writes is rejected
                for n in ids[1:40:3]:
                    engine.apply(tx, "reader", n)
            out.append(engine.commit_with_receipt(tx))
        engine.replay()
        runs.append(out)
    assert runs[0] == runs[1]
    assert any(r.rejected() for _, r, _ in runs[0])
