"""History: replay reproduces every recorded hash (ingested intents included); fork continues identically."""

from __future__ import annotations

import dataclasses

import pytest

from tests.engine.workload import LINK, ROOT, child_of, entity, is_entity, link_of, make_engine, run
from warpmesh.engine import (
    AtomPayload,
    DeleteNode,
    EdgeRecord,
    Footprint,
    GraphView,
    NodeId,
    NodeNotIsolated,
    ReplayMismatch,
    RewriteRule,
    SlotSet,
    TickDelta,
    TickPatch,
    UpsertEdge,
    compute_state_root,
    make_node_id,
    make_type_id,
    replay_history,
)

TICKS = [
    [("test/spawn", i) for i in range(6)],
    [("test/counter", i) for i in range(6)] + [("test/hub", 2), ("test/hub", 4)],
    [("test/prune", i) for i in range(0, 6, 2)],
    [("test/counter", 1), ("test/spawn", 0)],
]


def test_replay_reproduces_all_hashes_including_out_of_tick_mutations() -> None:
    engine = make_engine(6)
    engine.ingest_intent(b"before any tick")
    run(engine, TICKS[:2])
    engine.ingest_intent(b"between ticks")
    engine.insert_node(make_node_id("loose"), make_type_id("loose"))  # unreachable: no hash change
    engine.set_node_attachment(entity(3), AtomPayload(make_type_id("note"), b"hi"))
    run(engine, TICKS[2:])
    state = engine.replay()
    assert state.stores[engine.root_key.warp_id].nodes == engine.state.stores[engine.root_key.warp_id].nodes
    assert engine.history[2].pre_ops  # the out-of-tick writes travel with the next tick
    assert engine.history[1].pre_ops == ()
    # Replaying only the patches (Echo's jump_to_tick) would lose the ingested intents:
    stripped = [dataclasses.replace(r, pre_ops=()) for r in engine.history]
    with pytest.raises(ReplayMismatch, match="tick 0: state_root"):
        replay_history(engine._initial, engine.root_key, stripped, engine.profile)


def test_replay_detects_tampering() -> None:
    engine = make_engine(6)
    run(engine, TICKS)
    records = list(engine.history)
    bad = dataclasses.replace(records[2].snapshot, patch_digest=bytes(32))
    records[2] = dataclasses.replace(records[2], snapshot=bad)
    with pytest.raises(ReplayMismatch) as info:
        replay_history(engine._initial, engine.root_key, records, engine.profile)
    assert info.value.tick == 2 and info.value.field == "patch_digest"
    records = list(engine.history)
    records[3] = dataclasses.replace(records[3], patch=dataclasses.replace(records[3].patch, ops=()))
    with pytest.raises(ReplayMismatch, match="tick 3"):
        replay_history(engine._initial, engine.root_key, records, engine.profile)
    with pytest.raises(ReplayMismatch) as wrong_profile:
        replay_history(engine._initial, engine.root_key, engine.history, "seed")
    assert wrong_profile.value.tick == 0 and wrong_profile.value.field == "state_root"


def test_fork_carries_the_prefix_and_continues_identically() -> None:
    """checkpoint_fork: a fork at tick k has ticks 0..=k and then evolves exactly like the original."""
    original = make_engine(6, workers=2)
    run(original, TICKS[:2])
    fork = original.fork(1)
    assert fork.history == original.history
    assert fork.last_snapshot == original.last_snapshot
    assert fork.state_root() == original.state_root()
    a = run(original, TICKS[2:])
    b = run(fork, TICKS[2:])
    assert a == b
    fork.replay()


def test_fork_at_an_earlier_tick_diverges_from_there() -> None:
    engine = make_engine(6)
    full = run(engine, TICKS)
    fork = engine.fork(0)
    assert len(fork.history) == 1
    assert run(fork, TICKS[1:]) == full[1:]
    assert run(fork, [[("test/counter", 5)]]) != full[-1:]
    with pytest.raises(IndexError):
        engine.fork(len(TICKS))


def test_seed_profile_history_replays_under_seed() -> None:
    engine = make_engine(6, profile="seed")
    run(engine, TICKS)
    engine.replay()
    assert engine.history[-1].snapshot.hash != make_engine(6).snapshot().hash


# repoint: move the scope's link edge off its child onto the world root, then delete the child
def _repoint_fp(view: GraphView, scope: NodeId) -> Footprint:
    c, e = child_of(scope), link_of(scope)
    return (Footprint(view.warp_id).read_node(scope).write_node(scope).write_node(c).read_edge(e)
            .write_edge(e).write_beta(e).write_alpha(c))


def _repoint_exec(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    e = link_of(scope)
    delta.delete_edge(scope, e)  # (sort kind 4: before the DeleteNode, so the tick itself applies)
    delta.upsert_edge(e, scope, ROOT, LINK)
    delta.delete_node(child_of(scope))


def test_a_patch_that_repoints_an_edge_off_a_node_it_deletes_replays() -> None:
    """The diff of such a tick is Echo's: the edge kept its source, so it is one UpsertEdge (no
    DeleteEdge), and it sorts after the DeleteNode of its old target. Applied op by op in key order,
    that DeleteNode meets a node still holding the edge; playback must still reach the tick's state."""
    engine = make_engine(3)
    engine.register_rule(RewriteRule("test/repoint", is_entity, _repoint_exec, _repoint_fp))
    run(engine, [[("test/spawn", i) for i in range(3)], [("test/repoint", 1)]])
    patch = engine.history[-1].patch
    assert [type(op) for op in patch.ops] == [DeleteNode, UpsertEdge]
    state = engine.replay()  # raised NodeNotIsolated before the fix
    w = engine.root_key.warp_id
    assert state.stores[w].nodes == engine.state.stores[w].nodes
    assert state.stores[w].edge(link_of(entity(1))) == EdgeRecord(link_of(entity(1)), entity(1), ROOT, LINK)
    fork = engine.fork(1)
    assert fork.state_root() == engine.state_root()
    replica = engine.replay(0)
    patch.apply_to(replica)
    assert compute_state_root(replica, w, engine.root_key.local_id) == engine.state_root()


def test_patch_playback_still_refuses_deleting_a_node_that_keeps_its_edges() -> None:
    """Deferring a blocked DeleteNode is only for edges the same patch moves away: a node that still
    has an edge once the patch's edge ops ran is refused, and the state is left as it was."""
    engine = make_engine(3)
    run(engine, [[("test/spawn", i) for i in range(3)]])
    state = engine.state.clone()
    w = engine.root_key.warp_id
    root_before = compute_state_root(state, w, ROOT)
    bogus = TickPatch(0, bytes(32), 1, SlotSet(), SlotSet(), (DeleteNode(w, child_of(entity(0))),))
    with pytest.raises(NodeNotIsolated):
        bogus.apply_to(state)
    assert compute_state_root(state, w, ROOT) == root_before
