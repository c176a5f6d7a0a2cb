"""History: replay reproduces every recorded hash (ingested intents included); fork continues identically."""

from __future__ import annotations

import dataclasses

import pytest

from tests.engine.workload import entity, make_engine, run
from warpmesh.engine import AtomPayload, ReplayMismatch, make_node_id, make_type_id, replay_history

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
