"""Node-atom columns (TickDelta → merge_tick_deltas → AtomRun → commit) give exactly the general path's ops.

A delta keeps its node-atom writes as columns until anything else arrives; the commit then merges, applies,
diffs and encodes them from the columns. Every test compares with the general path: the ops and origins
a delta flushes, :func:`merge_deltas` over them, and whole ticks committed with the columns disabled.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.engine import (
    AtomPayload,
    AttachmentKey,
    Engine,
    Footprint,
    GraphStore,
    GraphView,
    NodeId,
    NodeRecord,
    TickDelta,
    make_node_id,
    make_type_id,
    make_warp_id,
)
from warpmesh.engine import engine as engine_module
from warpmesh.engine.execution import AtomRun, merge_deltas, merge_tick_deltas
from warpmesh.engine.ops import SetAttachment, UpsertNode
from warpmesh.engine.patch import _encode_ops, encode_atom_ops

W, W2 = make_warp_id("w"), make_warp_id("w2")
NODES = [make_node_id(f"n{i}") for i in range(6)]
T = make_type_id("t")

# One emission: (kind, node index, value index or None, warp)
emission = st.tuples(st.sampled_from(["atom", "atom", "atom", "upsert"]), st.integers(0, 5),
                     st.one_of(st.none(), st.integers(0, 2)), st.sampled_from([W, W, W2]))


def _value(i: int | None) -> AtomPayload | None:
    return None if i is None else AtomPayload(T, bytes([i]) * 3)


def _fill(delta: TickDelta, rewrites: list[list[tuple]], first_match: int) -> list[tuple]:
    """Emit ``rewrites`` (one list of emissions per rewrite) and return the ops the old delta recorded."""
    expected = []
    for m, emissions in enumerate(rewrites, first_match):
        delta._match_ix, delta._op_ix = m, 0
        for ix, (kind, n, v, warp) in enumerate(emissions):
            delta._warp = warp
            if kind == "atom":
                delta.set_node_attachment(NODES[n], _value(v))
                op = SetAttachment(AttachmentKey(1, warp, NODES[n], 1), _value(v))
            else:
                delta.upsert_node(NODES[n], T)
                op = UpsertNode(warp, NODES[n], NodeRecord(T))
            expected.append((op, (m, ix)))
    return expected


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.lists(emission, max_size=3), max_size=4), min_size=1, max_size=3))
def test_deltas_and_their_merge_equal_the_general_path(batches: list) -> None:
    deltas, expected = [], []
    for b, rewrites in enumerate(batches):
        delta = TickDelta()
        expected.append(_fill(delta, rewrites, 10 * b))
        deltas.append(delta)
    order = sorted(NODES)
    try:
        got = merge_tick_deltas(deltas, lambda w: order)
    except Exception as exc:  # divergent writes: the general merge must refuse them the same way
        with pytest.raises(type(exc)):
            merge_deltas([([o for o, _ in e], [g for _, g in e]) for e in expected], lambda w: order)
        return
    for delta, e in zip(deltas, expected):
        assert len(delta) == len(e)
        assert delta.ops == [o for o, _ in e] and delta.origins == [g for _, g in e]
    assert (got.ops() if isinstance(got, AtomRun) else got) == merge_deltas(
        [([o for o, _ in e], [g for _, g in e]) for e in expected], lambda w: order)


def test_the_columns_are_used_for_a_plain_atom_tick_and_left_for_anything_else() -> None:
    delta = TickDelta()
    _fill(delta, [[("atom", 0, 1, W)], [("atom", 1, 2, W)]], 0)
    assert delta.atom_columns() is not None
    assert isinstance(merge_tick_deltas([delta]), AtomRun)
    _fill(delta, [[("upsert", 2, None, W)]], 2)
    assert delta.atom_columns() is None


def test_atom_encoding_equals_the_op_encoding() -> None:
    nodes = sorted(NODES)
    values = [AtomPayload(T, bytes(range(i))) for i in range(len(nodes))]
    ops = AtomRun(W, nodes, values).ops()  # type: ignore[arg-type]
    assert encode_atom_ops(W, nodes, values) == b"".join(_encode_ops(ops))


_pair = struct.Struct("<2q")
MOTION = make_type_id("payload/motion")


def _matches(view: GraphView, scope: NodeId) -> bool:
    return view.node_attachment(scope) is not None


def _step(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    x, v = _pair.unpack(view.node_attachment(scope)[1])  # type: ignore[index]
    delta.set_node_attachment(scope, AtomPayload(MOTION, _pair.pack(x + v, v)))


def _clear(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    delta.set_node_attachment(scope, None)


def _own(view: GraphView, scope: NodeId) -> Footprint:
    return Footprint(view.warp_id).read_node(scope).read_alpha(scope).write_alpha(scope)


def _engine(**options: object) -> tuple[Engine, list[NodeId]]:
    store = GraphStore(b"")  # type: ignore[arg-type]
    ids = [make_node_id(f"e{i}") for i in range(2500)]
    for i, n in enumerate(ids):
        store.insert_node(n, NodeRecord(make_type_id("entity")))
        store.set_node_attachment(n, AtomPayload(MOTION, _pair.pack(i, i % 3)))  # v == 0: no change
    engine = Engine(store, ids[0], **options)  # type: ignore[arg-type]
    engine.register_rule("step", _matches, _step, _own)
    engine.register_rule("clear", _matches, _clear, _own)
    return engine, ids


def _ticks(engine: Engine, ids: list[NodeId]) -> list:
    rng = random.Random(3)
    out = []
    for t in range(4):
        tx = engine.begin()
        for n in rng.sample(ids, 1500):
            engine.apply(tx, "step", n)
        if t == 2:  # a tick clearing some atoms: None values take the general apply
            for n in ids[:30]:
                engine.apply(tx, "clear", n)
        out.append(engine.commit_with_receipt(tx))
    engine.replay()  # recomputes every patch digest from the recorded ops
    return out


@pytest.mark.parametrize("options", [{}, {"workers": 4}, {"footprint_guard": False}])
def test_ticks_through_the_columns_equal_the_general_path(options: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _ticks(*_engine(**options))
    monkeypatch.setattr(engine_module, "merge_tick_deltas",
                        lambda deltas, order: merge_deltas([(d.ops, d.origins) for d in deltas], order))
    general = _ticks(*_engine(**options))
    assert fast == general
    assert any(len(p.ops) < 1500 for _, _, p in fast)  # unchanged atoms left out of the diff


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


@pytest.mark.parametrize("mixed", [False, True])
def test_plan_rewrites_and_decision_digests_follow_their_definitions(mixed: bool) -> None:
    """The commit joins these streams from its columns (one rule: a separator join); each must equal
    BLAKE3 of the fields written out one by one, in the receipt's (canonical) order."""
    from blake3 import blake3

    engine, ids = _engine()
    tx = engine.begin()
    for i, n in enumerate(ids[:1200]):
        engine.apply(tx, "clear" if mixed and i % 3 == 0 else "step", n)
    snap, receipt, _ = engine.commit_with_receipt(tx)
    entries = receipt.entries
    assert len({e.rule_id for e in entries}) == (2 if mixed else 1)
    plan = blake3(_u64(len(entries)) + b"".join(e.scope_hash + e.rule_id for e in entries)).digest()
    rewrites = blake3(_u64(len(entries)) + b"".join(
        e.rule_id + e.scope_hash + e.scope[0] + e.scope[1] for e in entries)).digest()
    assert (snap.plan_digest, snap.rewrites_digest, snap.decision_digest) == (plan, rewrites, receipt.digest())
