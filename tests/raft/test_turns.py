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
