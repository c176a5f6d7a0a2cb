"""Intent ingestion and the inbox rules (Echo inbox.rs / dispatch_inbox.rs scenarios)."""

from __future__ import annotations

import random

import pytest

from tests.engine.workload import make_engine
from warpmesh.engine import (
    Accepted,
    AtomPayload,
    Consumed,
    Duplicate,
    Engine,
    GraphStore,
    NodeKey,
    NodeRecord,
    NoPending,
    UnknownWarp,
    WarpState,
    compute_intent_id,
    make_node_id,
    make_type_id,
    make_warp_id,
    pending_edge_id,
)
from warpmesh.engine.engine import INBOX_NODE, PENDING_EDGE_TYPE
from warpmesh.engine.inbox import dispatch_inbox_rule


def test_ingest_is_idempotent_and_distinct_intents_get_distinct_events() -> None:
    engine = make_engine(1)
    a = engine.ingest_intent(b"a")
    assert isinstance(a, Accepted) and a.intent_id == compute_intent_id(b"a")
    assert engine.ingest_intent(b"a") == Duplicate(a.intent_id)
    b = engine.ingest_intent(b"b")
    assert b.intent_id != a.intent_id
    assert engine.pending_intent_count() == 2
    assert engine.node_attachment(a.intent_id) == AtomPayload(make_type_id("intent"), b"a")  # type: ignore[arg-type]


def test_ack_pending_consumes_one_event_edge_and_keeps_the_event() -> None:
    engine = make_engine(1)
    ids = sorted(engine.ingest_intent(p).intent_id for p in (b"x", b"y", b"z"))
    tx = engine.begin()
    consumed = engine.dispatch_next_intent(tx)
    assert consumed == Consumed(ids[0], False)  # the smallest intent id goes first; no cmd/* rule here
    _, receipt, patch = engine.commit_with_receipt(tx)
    assert [e.rule_name for e in receipt.entries] == ["sys/ack_pending"]
    assert [type(op).__name__ for op in patch.ops] == ["DeleteEdge"]
    assert engine.pending_intents() == ids[1:]
    assert engine.node(ids[0]) is not None  # the event node stays: a replayed intent is still a Duplicate
    assert engine.ingest_intent(b"x") == Duplicate(compute_intent_id(b"x"))
    while engine.pending_intent_count():
        tx = engine.begin()
        engine.dispatch_next_intent(tx)
        engine.commit(tx)
    tx = engine.begin()
    assert engine.dispatch_next_intent(tx) == NoPending()
    engine.abort(tx)


def test_dispatch_inbox_drains_every_pending_edge_at_once() -> None:
    engine = make_engine(1)
    engine.register_rule(dispatch_inbox_rule())
    payloads = [bytes([i]) * 3 for i in range(5)]
    random.Random(3).shuffle(payloads)
    events = [engine.ingest_intent(p).intent_id for p in payloads]
    tx = engine.begin()
    engine.apply(tx, "sys/dispatch_inbox", INBOX_NODE)
    _, _, patch = engine.commit_with_receipt(tx)
    assert engine.pending_intent_count() == 0
    assert all(engine.node(e) is not None for e in events)
    deleted = sorted(op.edge_id for op in patch.ops)
    assert deleted == sorted(pending_edge_id(INBOX_NODE, e) for e in events)
    assert not any(e.ty == PENDING_EDGE_TYPE for e in engine.view().edges_from(INBOX_NODE))
    engine.replay()


def test_from_state_checks_the_root_instance() -> None:
    w = make_warp_id("mine")
    store = GraphStore(w)
    root = make_node_id("r")
    store.insert_node(root, NodeRecord(make_type_id("t")))
    state = WarpState.from_root_store(store, root)
    engine = Engine.from_state(state, NodeKey(w, root))
    assert engine.root_key.warp_id == w  # from_state keeps the warp id
    with pytest.raises(UnknownWarp):
        Engine.from_state(state, NodeKey(w, make_node_id("other")))
    engine.register_rule(dispatch_inbox_rule())
    with pytest.raises(UnknownWarp):
        engine.apply_in_warp(engine.begin(), make_warp_id("nope"), "sys/dispatch_inbox", root)


def test_builder_sets_every_option() -> None:
    store = GraphStore(b"")  # type: ignore[arg-type]
    store.insert_node(make_node_id("r"), NodeRecord(make_type_id("t")))
    engine = (Engine.builder(store, make_node_id("r")).workers(8).profile("seed").policy_id(7)
              .footprint_guard(False).radix_threshold(None).claim_rng(random.Random(1)).executor(None).build())
    assert (engine.workers, engine.profile.name, engine.policy_id, engine.footprint_guard,
            engine.radix_threshold) == (8, "seed", 7, False, None)
    assert engine.commit(engine.begin()).policy_id == 7
    with pytest.raises(ValueError, match="workers"):
        Engine.builder(GraphStore(b""), make_node_id("r")).workers(0).build()  # type: ignore[arg-type]
