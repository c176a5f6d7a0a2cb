"""RaftNode, the asyncio runtime: on VirtualTimeLoop over MemoryFabric (deterministic), and once on
a real loop with SQLite storage."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import NotLeader, RaftClosed, TransferFailed
from warpmesh.raft.runtime import CommittedEntry, CommittedInstall, CommittedInternal, RaftNode
from warpmesh.raft.statemachine import ReplicatedStateMachine
from warpmesh.raft.storage import InMemoryRaftStorage, SqliteRaftStorage
from warpmesh.raft.transport import SeamRaftTransport
from warpmesh.raft.types import DedupKey, Role
from warpmesh.sim import run_virtual

CFG = RaftConfig(election_timeout_min=0.15, election_timeout_max=0.3, heartbeat_interval=0.03)


class Cluster:
    def __init__(self, fabric: MemoryFabric, ids: list[str], cfg: RaftConfig = CFG, voters: list[str] | None = None):
        self.fabric = fabric
        self.ids = ids
        self.cfg = cfg
        self.voters = voters if voters is not None else ids
        self.storage: dict[str, InMemoryRaftStorage] = defaultdict(InMemoryRaftStorage)
        self.nodes: dict[str, RaftNode] = {}

    async def start(self, nid: str, voters: list[str] | None = None) -> RaftNode:
        seam = self.fabric.join(nid)
        n = RaftNode(nid, SeamRaftTransport.over(seam), self.storage[nid],
                     voters=self.voters if voters is None else voters, config=self.cfg,
                     seed=sum(map(ord, nid)))
        self.nodes[nid] = await n.start()
        return n

    async def start_all(self) -> Cluster:
        for i in self.ids:
            await self.start(i)
        return self

    async def crash(self, nid: str) -> None:
        self.fabric.crash(nid)
        await self.nodes.pop(nid).close()

    async def leader(self, timeout: float = 5.0) -> RaftNode:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            leaders = [n for n in self.nodes.values() if n.role.value == Role.LEADER]
            if len(leaders) == 1 and leaders[0].commit_index.value >= 1:
                return leaders[0]
            await asyncio.sleep(0.01)
        raise AssertionError("no leader")

    async def close(self) -> None:
        for n in list(self.nodes.values()):
            await n.close()
        await self.fabric.close()


def sim(body: Callable[[Cluster], Awaitable[Any]], ids: list[str] | None = None, **kw: Any) -> Any:
    async def main() -> Any:
        c = await Cluster(MemoryFabric(seed=1, faults=LinkFaults(delay=0.001)), ids or ["n1", "n2", "n3"],
                          **kw).start_all()
        try:
            return await body(c)
        finally:
            await c.close()

    return run_virtual(main())


def test_three_nodes_elect_one_leader_and_every_node_sees_it() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        await asyncio.sleep(0.2)
        assert all(n.leader.value == ld.id for n in c.nodes.values())
        assert sum(n.role.value == Role.LEADER for n in c.nodes.values()) == 1

    sim(body)


def test_propose_on_any_node_and_read_the_same_committed_stream_everywhere() -> None:
    async def body(c: Cluster) -> None:
        await c.leader()
        results = await asyncio.gather(*(c.nodes[c.ids[i % 3]].propose(f"c{i}".encode(), timeout=5)
                                         for i in range(60)))
        assert sorted(i for i, _ in results) == sorted({i for i, _ in results})  # distinct indexes
        streams = []
        for n in c.nodes.values():
            got = []
            async for item in n.committed_from(1):
                if isinstance(item, CommittedEntry):
                    got.append(item.data)
                if item.index >= max(i for i, _ in results):
                    break
            streams.append(got)
        assert streams[0] == streams[1] == streams[2] and sorted(streams[0]) == sorted(
            f"c{i}".encode() for i in range(60))

    sim(body)


def test_committed_markers_let_an_applied_index_pass_noops_and_configs() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        items = []
        async for item in ld.committed_from(1):
            items.append(item)
            break
        assert isinstance(items[0], CommittedInternal) and items[0].index == 1

    sim(body)


def test_linearizable_reads_on_leader_and_follower() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        idx, _ = await ld.propose(b"w", timeout=5)
        f = next(n for n in c.nodes.values() if n is not ld)
        assert await f.read_index(timeout=5) >= idx
        assert await f.await_read(timeout=5) >= idx
        assert f.applied_index.value >= idx

    sim(body)


def test_a_proposal_on_a_follower_survives_a_leader_crash() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        c.fabric.partition({f.id}, {ld.id})  # its forward to the old leader is lost
        task = asyncio.create_task(f.propose(b"must-commit", timeout=10))
        await asyncio.sleep(0.05)
        await c.crash(ld.id)
        c.fabric.heal()
        idx, _ = await task
        assert idx > 0

    sim(body)


def test_membership_change_and_transfer_through_the_api() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        await c.start("n4", voters=[])
        m = await ld.change_membership(["n1", "n2", "n3", "n4"], timeout=10)
        assert m.voters == {"n1", "n2", "n3", "n4"}
        await ld.transfer_leadership("n4", timeout=5)
        await c.nodes["n4"].role.wait_for(lambda r: r == Role.LEADER, timeout=5)
        with pytest.raises(NotLeader):
            await ld.change_membership(["n1"], timeout=5)
        with pytest.raises(TransferFailed):
            await c.nodes["n4"].transfer_leadership("n9", timeout=5)

    sim(body)


def test_close_fails_pending_calls_and_is_idempotent() -> None:
    async def body(c: Cluster) -> None:
        await c.leader()
        f = c.nodes["n1"]
        c.fabric.isolate("n1")
        task = asyncio.create_task(f.propose(b"x"))
        await asyncio.sleep(0.05)
        await f.close()
        await f.close()
        with pytest.raises(RaftClosed):
            await task
        with pytest.raises(RaftClosed):
            await f.propose(b"y")
        del c.nodes["n1"]

    sim(body)


def test_undecodable_frames_are_counted_and_dropped() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        evil = c.fabric.join("evil")
        from warpmesh.net.mux import MuxSeam

        ch = MuxSeam(evil).channel(0x20)
        for junk in (b"", b"\x01", b"\x01\x05\xff\xff", b"\x01\x03\x93\xff\x00\x00", b"\x09\x01\x90"):
            await ch.send_to(ld.id, junk)
        await asyncio.sleep(0.1)
        refused = sum(v for k, v in ld.stats.items() if k.startswith("refused:"))
        assert refused == 5 and ld.role.value == Role.LEADER
        idx, _ = await ld.propose(b"still fine", timeout=5)
        assert idx > 0

    sim(body)


def test_a_restarted_node_recovers_from_its_storage_and_catches_up() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        for i in range(10):
            await ld.propose(bytes([i]), timeout=5)
        victim = next(i for i in c.ids if i != ld.id)
        await c.crash(victim)
        for i in range(10, 20):
            await ld.propose(bytes([i]), timeout=5)
        n = await c.start(victim)
        await n.applied_index.wait_for(lambda v: v >= ld.commit_index.value, timeout=5)
        data = [it.data async for it in _take(n.committed_from(1), ld.commit_index.value)
                if isinstance(it, CommittedEntry)]
        assert data == [bytes([i]) for i in range(20)]

    sim(body)


async def _take(it: Any, upto: int) -> Any:
    async for item in it:
        yield item
        if item.index >= upto:
            return


def test_committed_from_below_the_compaction_floor_starts_with_an_install() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        for i in range(10):
            await ld.propose(bytes([i]), timeout=5)
        ld.publish_snapshot(ld.applied_index.value, b"state")
        await asyncio.sleep(0.05)
        first = None
        async for item in ld.committed_from(1):
            first = item
            break
        assert isinstance(first, CommittedInstall) and first.snapshot.data == b"state"

    sim(body, cfg=RaftConfig(election_timeout_min=0.15, election_timeout_max=0.3,
                             heartbeat_interval=0.03, trailing_entries=0))


def test_a_slow_committed_consumer_backpressures_local_proposals() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        ld.max_apply_lag = 5
        it = ld.committed_from(1)
        await it.__anext__()  # registered, then never reads again
        for i in range(7):  # indexes 2..8: the reader (at 2) now lags by 6 > 5
            await ld.propose(bytes([i]), timeout=5)
        with pytest.raises(TimeoutError):
            await ld.propose(b"blocked", timeout=0.5)
        async for item in it:  # the consumer catches up...
            if item.index >= ld.commit_index.value:
                break
        assert (await ld.propose(b"flows again", timeout=5))[0] > 0  # ...and producers resume
        await it.aclose()

    sim(body)


def test_replicated_state_machine_applies_a_retried_request_once() -> None:
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def apply(self, command: bytes, index: int) -> int:
            self.n += int(command)
            return self.n

        def snapshot(self) -> bytes:
            return str(self.n).encode()

        def restore(self, data: bytes) -> None:
            self.n = int(data)

    async def body(c: Cluster) -> None:
        ld = await c.leader()
        rsms = {i: await ReplicatedStateMachine(n, Counter(), snapshot_every=3).start()
                for i, n in c.nodes.items()}
        f = next(i for i in c.ids if i != ld.id)
        key = DedupKey("client-1", 1, 1)
        r1 = await rsms[f].execute(b"5", key=key, timeout=5)
        r2 = await rsms[ld.id].execute(b"5", key=key, timeout=5)  # a retry through another node
        assert r1 == r2 == 5
        assert await rsms[f].execute(b"1", timeout=5) == 6
        assert await rsms[ld.id].read(lambda sm: sm.n, timeout=5) == 6
        await asyncio.sleep(0.1)
        assert all(r.sm.n == 6 for r in rsms.values())
        for r in rsms.values():
            await r.close()

    sim(body)


def test_on_a_real_loop_with_sqlite(tmp_path: Path) -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=3)
        ids = ["a", "b", "c"]
        nodes = []
        for i in ids:
            st = SqliteRaftStorage(tmp_path / f"{i}.sqlite", node_id=i)
            nodes.append(await RaftNode(i, SeamRaftTransport.over(fabric.join(i)), st, voters=ids,
                                        config=CFG).start())
        try:
            results = await asyncio.gather(*(nodes[k % 3].propose(b"x" * 100, timeout=20) for k in range(200)))
            assert len({i for i, _ in results}) == 200
            assert nodes[0].stats["writes"] < 200  # group commit: far fewer fsyncs than entries
        finally:
            for n in nodes:
                await n.close()
            await fabric.close()

    asyncio.run(main())


def test_a_cancelled_or_timed_out_call_is_forgotten_and_does_not_hang_others() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        c.fabric.isolate(f.id)
        task = asyncio.create_task(f.propose(b"cancel-me"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert f.core is not None and not f.core.pending  # abandoned in the core too
        with pytest.raises(TimeoutError):
            await f.read_index(timeout=0.2)
        assert not f.core.remote_reads
        c.fabric.heal()
        assert (await f.propose(b"after", timeout=5))[0] > 0

    sim(body)


def test_the_same_dedup_key_proposed_twice_concurrently_shares_one_outcome() -> None:
    async def body(c: Cluster) -> None:
        ld = await c.leader()
        key = DedupKey("c", 1, 1)
        a, b = await asyncio.gather(ld.propose(b"x", key=key, timeout=5), ld.propose(b"x", key=key, timeout=5))
        assert a == b
        entries = [e for e in ld.core.log.entries if e.client == "c"]  # type: ignore[union-attr]
        assert len(entries) == 1

    sim(body)
