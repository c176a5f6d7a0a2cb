"""TurnSequencer: the same turns, in the same order, exactly once, on every peer."""

from __future__ import annotations

import asyncio

from tests.raft.test_runtime import CFG, Cluster, sim
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.turns import Committed, Reset, TurnSequencer
from warpmesh.raft.types import DedupKey


async def collect(seq: TurnSequencer, n: int, from_index: int = 1) -> list:  # type: ignore[type-arg]
    out = []
    async for ev in seq.events(from_index):
        out.append(ev)
        if sum(isinstance(e, Committed) for e in out) >= n:
            return out
    return out


def test_turns_are_ordered_identically_on_every_peer() -> None:
    async def body(c: Cluster) -> None:
        await c.leader()
        seqs = {i: TurnSequencer(n) for i, n in c.nodes.items()}
        turns = await asyncio.gather(*(seqs[c.ids[i % 3]].propose({"move": i}) for i in range(30)))
        assert len({t.index for t in turns}) == 30
        streams = [await collect(s, 30) for s in seqs.values()]
        actions = [[e.turn.action["move"] for e in st] for st in streams]
        assert actions[0] == actions[1] == actions[2] and sorted(actions[0]) == list(range(30))

    sim(body)


def test_a_retried_action_is_delivered_once() -> None:
    async def body(c: Cluster) -> None:
        await c.leader()
        a, b = (TurnSequencer(c.nodes[i]) for i in ("n1", "n2"))
        key = DedupKey("player-7", 1, 1)
        await a.propose("castle", key=key)
        await b.propose("castle", key=key)  # the player's client retried through another peer
        await a.propose("next")
        events = await collect(a, 2)
        assert [e.turn.action for e in events if isinstance(e, Committed)] == ["castle", "next"]

    sim(body)


def test_a_late_reader_below_the_snapshot_gets_a_reset_then_the_tail() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        seq = TurnSequencer(ld)
        for i in range(5):
            await seq.propose(i)
        events = await collect(seq, 5)
        last = events[-1].turn.index
        seq.publish_snapshot(last, b"board-after-5")
        await asyncio.sleep(0.05)
        await seq.propose(5)
        late = await collect(TurnSequencer(ld), 1)
        assert isinstance(late[0], Reset) and late[0].state == b"board-after-5"
        assert [e.turn.action for e in late[1:]] == [5]

    sim(body, cfg=RaftConfig(election_timeout_min=CFG.election_timeout_min,
                             election_timeout_max=CFG.election_timeout_max,
                             heartbeat_interval=CFG.heartbeat_interval, trailing_entries=0))


# -- the reference's TurnSequencerTest cases, and the generic/typed API --------------------------

import json  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import pytest  # noqa: E402

from warpmesh.raft.errors import RaftClosed, RaftError  # noqa: E402
from warpmesh.raft.turns import (  # noqa: E402
    SYSTEM_PREFIX,
    SnapshotFormatError,
    SystemRecord,
)
from warpmesh.wire.frame import pack  # noqa: E402

NO_TRAIL = RaftConfig(election_timeout_min=CFG.election_timeout_min, election_timeout_max=CFG.election_timeout_max,
                      heartbeat_interval=CFG.heartbeat_interval, trailing_entries=0)


@dataclass(frozen=True)
class Move:
    player: str
    cell: int


class MoveSerializer:
    def dumps(self, m: Move) -> bytes:
        return json.dumps([m.player, m.cell]).encode()

    def loads(self, data: bytes) -> Move:
        p, c = json.loads(data)
        return Move(p, c)


class Tally:
    """A toy system state: counts records."""

    def __init__(self, obj: object = None) -> None:
        self.n = int(obj or 0)  # type: ignore[call-overload]

    def apply(self, record: object) -> None:
        self.n += 1

    def to_obj(self) -> int:
        return self.n


async def events_until(seq: TurnSequencer, pred, from_index: int = 1) -> list:  # type: ignore[no-untyped-def,type-arg]
    out = []
    async for ev in seq.events(from_index):
        out.append(ev)
        if pred(ev):
            return out
    return out


def test_turn_numbers_are_one_based_and_contiguous_across_leader_changes() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        seq = TurnSequencer(ld)
        await seq.propose("a")
        await c.crash(ld.id)  # the next leader appends a no-op: a Raft index, not a turn
        ld2 = await c.leader()
        await TurnSequencer(ld2).propose("b")
        await TurnSequencer(ld2).propose("c")
        evs = await collect(TurnSequencer(ld2), 3)
        assert [e.turn.turn for e in evs] == [1, 2, 3]
        assert [e.turn.action for e in evs] == ["a", "b", "c"]
        assert evs[2].turn.index - evs[0].turn.index > 2  # indexes have gaps, turns do not

    sim(body)


def test_turn_numbers_and_system_state_survive_a_snapshot() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        seq = TurnSequencer(ld, system=Tally)
        await seq.propose_system(["seat", "x", "player"])
        for i in range(3):
            await seq.propose(i)
        evs = await collect(seq, 3)
        assert seq.turn == 3
        seq.publish_snapshot(evs[-1].turn.index, b"s")
        await asyncio.sleep(0.05)
        await seq.propose(3)
        late = await collect(TurnSequencer(ld, system=Tally), 1)
        assert isinstance(late[0], Reset) and late[0].turn == 3 and late[0].system.n == 1
        assert late[1].turn.turn == 4 and late[1].turn.action == 3

    sim(body, cfg=NO_TRAIL)


def test_a_typed_serializer_round_trips_actions() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        seq: TurnSequencer[Move] = TurnSequencer(ld, MoveSerializer())
        m = Move("alice", 5)
        turn = await seq.propose(m)
        assert turn.action is m
        evs = await collect(TurnSequencer(c.nodes["n2"], MoveSerializer()), 1)
        assert evs[0].turn.action == Move("alice", 5)

    sim(body)


def test_a_serialized_action_may_not_use_the_system_prefix() -> None:
    class Evil:
        def dumps(self, a: object) -> bytes:
            return SYSTEM_PREFIX + b"x"

        def loads(self, data: bytes) -> object:
            return data

    async def body(c: Cluster) -> None:
        ld = await c.leader()
        with pytest.raises(ValueError, match="0xC1"):
            await TurnSequencer(ld, Evil()).propose("x")  # type: ignore[arg-type]

    sim(body)


def test_propose_on_a_follower_is_forwarded_and_ordered_with_the_leaders() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        follower = next(n for n in c.nodes.values() if n is not ld)
        a, b = TurnSequencer(ld), TurnSequencer(follower)
        t1 = await b.propose("from-follower")
        t2 = await a.propose("from-leader")
        assert t1.index < t2.index
        evs = await collect(TurnSequencer(follower), 2)
        assert [e.turn.action for e in evs] == ["from-follower", "from-leader"]

    sim(body)


def test_events_from_an_index_skip_earlier_turns() -> None:
    # A reader starting mid-log has not seen the proposers' first requests: their turns must still
    # be delivered (they used to be dropped as "expired" sessions, and the reader hung).
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        seq = TurnSequencer(ld)
        turns = [await seq.propose(i) for i in range(4)]
        evs = await asyncio.wait_for(collect(seq, 2, from_index=turns[2].index), 5)
        assert [e.turn.action for e in evs] == [2, 3]

    sim(body)


def test_client_ids_never_repeat_across_instances() -> None:
    # The old id(self)-based client id repeated as soon as an instance was freed, so a restarted
    # sequencer's first turn was swallowed as a duplicate of its predecessor's.
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        ids = set()
        for _ in range(200):
            ids.add(TurnSequencer(ld).client_id)  # each instance is freed at once
        assert len(ids) == 200
        await TurnSequencer(ld).propose("first")
        await TurnSequencer(ld).propose("second")  # seq 1 of a new instance: must not be deduped
        evs = await collect(TurnSequencer(ld), 2)
        assert [e.turn.action for e in evs] == ["first", "second"]

    sim(body)


def test_an_explicit_client_id_names_the_keys() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        t = await TurnSequencer(ld, client_id="durable-7").propose(1)
        assert t.key == DedupKey("durable-7", 1, 1)
        # A restarted process with the same durable id replays its request: applied once.
        await TurnSequencer(ld, client_id="durable-7").propose(1, key=t.key)
        await TurnSequencer(ld).propose(2)
        evs = await collect(TurnSequencer(ld), 2)
        assert [e.turn.action for e in evs] == [1, 2]

    sim(body)


def test_a_proposal_on_a_cut_off_leader_fails_and_applies_at_most_once() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        c.fabric.isolate(ld.id)
        with pytest.raises((RaftError, TimeoutError)):
            await TurnSequencer(ld).propose("lost?", timeout=1.0)
        c.fabric.heal()
        ld2 = await c.leader()
        await TurnSequencer(ld2).propose("after")
        evs = await events_until(TurnSequencer(ld2), lambda e: isinstance(e, Committed) and e.turn.action == "after")
        actions = [e.turn.action for e in evs if isinstance(e, Committed)]
        assert actions.count("lost?") <= 1 and actions[-1] == "after"

    sim(body)


def test_system_records_are_not_turns_and_carry_a_state_copy() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        seq = TurnSequencer(ld, system=Tally)
        await seq.propose_system("r1")
        await seq.propose("t1")
        await seq.propose_system("r2")
        await seq.propose("t2")
        evs = await collect(TurnSequencer(c.nodes["n3"], system=Tally), 2)
        recs = [e for e in evs if isinstance(e, SystemRecord)]
        assert [r.record for r in recs] == ["r1", "r2"] and [r.state.n for r in recs] == [1, 2]
        assert [e.turn.turn for e in evs if isinstance(e, Committed)] == [1, 2]

    sim(body)


def test_a_snapshot_not_written_by_the_sequencer_is_refused_clearly() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        seq = TurnSequencer(ld)
        t = await seq.propose(1)
        await collect(seq, 1)
        ld.publish_snapshot(t.index, pack("not a sequencer snapshot"))
        await asyncio.sleep(0.05)
        await seq.propose(2)
        with pytest.raises(SnapshotFormatError):
            await collect(TurnSequencer(ld), 1)

    sim(body, cfg=NO_TRAIL)


def test_events_end_when_the_node_closes() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        n3 = c.nodes["n3"]
        seq = TurnSequencer(n3)
        it = seq.events()
        task = asyncio.ensure_future(collect(seq, 5))
        await asyncio.sleep(0.1)
        await c.crash("n3")
        assert (await asyncio.wait_for(task, 2.0)) == []
        with pytest.raises(RaftClosed):
            await TurnSequencer(n3).propose(1)
        await it.aclose()
        assert ld is not None

    sim(body)


def test_concurrent_proposals_from_every_node_each_apply_once() -> None:
    async def body(c: Cluster) -> None:
        await c.leader()
        seqs = [TurnSequencer(n) for n in c.nodes.values()]
        done = await asyncio.gather(*(seqs[i % 3].propose(i) for i in range(60)))
        evs = await collect(TurnSequencer(c.nodes["n2"]), 60)
        assert sorted(e.turn.action for e in evs) == list(range(60))
        assert {t.index for t in done} == {e.turn.index for e in evs}

    sim(body)


def test_a_restarted_follower_behind_compaction_resets_then_continues() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        victim = next(i for i in c.ids if i != ld.id)
        await c.crash(victim)
        seq = TurnSequencer(ld)
        for i in range(5):
            await seq.propose(i)
        evs = await collect(seq, 5)
        seq.publish_snapshot(evs[-1].turn.index, b"after-5")
        await asyncio.sleep(0.05)
        await c.start(victim)
        await seq.propose(5)
        again = await collect(TurnSequencer(c.nodes[victim]), 1)
        assert isinstance(again[0], Reset) and again[0].state == b"after-5" and again[0].turn == 5
        assert again[-1].turn.action == 5 and again[-1].turn.turn == 6

    sim(body, cfg=NO_TRAIL)


def test_the_same_key_through_two_peers_at_once_is_one_turn() -> None:
    async def body(c: Cluster) -> None:
        await c.leader()
        key = DedupKey("p", 1, 1)
        await asyncio.gather(TurnSequencer(c.nodes["n1"]).propose("m", key=key),
                             TurnSequencer(c.nodes["n2"]).propose("m", key=key))
        await TurnSequencer(c.nodes["n3"]).propose("z")
        evs = await collect(TurnSequencer(c.nodes["n3"]), 2)
        assert [e.turn.action for e in evs] == ["m", "z"] and [e.turn.turn for e in evs] == [1, 2]

    sim(body)


def test_a_stale_retry_below_the_clients_floor_is_not_applied() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        seq = TurnSequencer(ld)
        await seq.propose("one", key=DedupKey("cl", 1, 1))
        await seq.propose("two", key=DedupKey("cl", 2, 2))  # the client acknowledged seq 1
        await seq.propose("one", key=DedupKey("cl", 1, 1))  # a very late duplicate of seq 1
        await seq.propose("three", key=DedupKey("cl", 3, 3))
        evs = await collect(seq, 3)
        assert [e.turn.action for e in evs] == ["one", "two", "three"]

    sim(body)
