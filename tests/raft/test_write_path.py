"""The single-write path: what must be durable where before a write is answered, and what costs
no fsync at all.

* a commit index change alone is never written (it is a hint; it rides on the next write);
* a follower acknowledges entries only once they are durable on its disk;
* a leader answers a proposal as soon as a majority holds it durably, even while its own write is
  still in flight (thesis §10.2.1), and never before a majority holds it;
* small writes (a follower's appends; a leader's too unless configured off) run on the event loop
  (no hop to the I/O thread and back) while small writes are fast, on the thread while they are slow;
* ``SqliteRaftStorage.begin_write``: the staged part is not durable, the returned call makes it so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from warpmesh.net.memory import MemoryFabric
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import RaftError
from warpmesh.raft.messages import AppendResponse, decode
from warpmesh.raft.runtime import RaftNode
from warpmesh.raft.storage import InMemoryRaftStorage, SqliteRaftStorage, StorageBatch
from warpmesh.raft.testing import ScriptedCluster
from warpmesh.raft.transport import SeamRaftTransport
from warpmesh.raft.types import Entry, HardState, Role

CFG = RaftConfig(election_timeout_min=0.3, election_timeout_max=0.6, heartbeat_interval=0.05)
#: Every write on the I/O thread: the tests that stall a node's disk must not stall the shared loop.
THREAD_CFG = dataclasses.replace(CFG, inline_write_entries=0)


# -- the core: the commit hint ----------------------------------------------------------------
def test_a_commit_alone_costs_no_write_and_rides_on_the_next_one() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    c.run(0.2)
    writes = {n.id: n.storage.writes for n in c.live()}
    c.propose(ld.id, b"a")
    c.run(1.0)  # heartbeats carry the commit to every follower
    idx = ld.c.commit
    assert all(n.commands() == [b"a"] and n.c.commit == idx for n in c.live())
    # One write per node: the entry. Learning that it committed costs no fsync.
    assert {n.id: n.storage.writes - writes[n.id] for n in c.live()} == {n.id: 1 for n in c.live()}
    c.propose(ld.id, b"b")
    c.run(0.2)
    assert all(n.storage.hard_state().commit >= idx for n in c.live())  # the hint rode along


def test_a_restarted_node_relearns_commits_its_hint_missed() -> None:
    c = ScriptedCluster(3)
    ld = c.wait_leader()
    for i in range(5):
        c.propose(ld.id, bytes([i]))
    c.run(0.3)
    f = next(n for n in c.live() if n is not ld)
    assert f.storage.hard_state().commit < f.c.commit  # the last commits were never written
    c.crash(f.id)
    c.restart(f.id)
    c.run(0.5)
    assert f.c.commit == ld.c.commit and [e.data for e in f.applied[-5:]] == [bytes([i]) for i in range(5)]


# -- the runtime: gated storage on a real loop --------------------------------------------------
class GatedStorage(InMemoryRaftStorage):
    """In-memory storage whose entry writes wait for ``gate`` (the runtime runs them on its worker
    thread), recording the last durable index."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.durable = 0
        #: The thread that wrote each batch of entries, and ``slow`` seconds to sleep in the next one.
        self.threads: list[str] = []
        self.slow = 0.0

    def write(self, batch: StorageBatch) -> None:
        if batch.entries:
            assert self.gate.wait(20), "gate never opened"
            self.threads.append(threading.current_thread().name)
            if self.slow:
                time.sleep(self.slow)
                self.slow = 0.0
        super().write(batch)
        if batch.entries:
            self.durable = batch.entries[-1].index


class RecordingTransport(SeamRaftTransport):
    """Records, for every AppendResponse sent, the index it acknowledges and what was durable."""

    def __init__(self, seam: SeamRaftTransport, storage: GatedStorage) -> None:
        super().__init__(seam.seam, owned_mux=seam._mux)
        self.storage = storage
        self.acks: list[tuple[int, int]] = []

    async def send(self, peer: str, data: bytes) -> bool:
        m = decode(data, self.self_id, peer)
        if isinstance(m, AppendResponse) and not m.reject:
            self.acks.append((m.index, self.storage.durable))
        return await super().send(peer, data)


async def _cluster(fabric: MemoryFabric, cfg: RaftConfig) -> tuple[
        dict[str, RaftNode], dict[str, GatedStorage], dict[str, RecordingTransport]]:
    ids = ["a", "b", "c"]
    st = {i: GatedStorage() for i in ids}
    tr = {i: RecordingTransport(SeamRaftTransport.over(fabric.join(i)), st[i]) for i in ids}
    nodes = {i: await RaftNode(i, tr[i], st[i], voters=ids, config=cfg, seed=n,
                               offload_io=True).start() for n, i in enumerate(ids)}
    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while not any(n.role.value == Role.LEADER and n.commit_index.value >= 1 for n in nodes.values()):
        assert loop.time() < end, "no leader"
        await asyncio.sleep(0.01)
    return nodes, st, tr


def _run(body, cfg: RaftConfig = CFG) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        fabric = MemoryFabric(seed=5)
        nodes, st, tr = await _cluster(fabric, cfg)
        try:
            await body(nodes, st, tr)
        finally:
            for s in st.values():
                s.gate.set()
            for n in nodes.values():
                await n.close()
            await fabric.close()

    asyncio.run(main())


def _leader(nodes: dict[str, RaftNode]) -> RaftNode:
    return next(n for n in nodes.values() if n.role.value == Role.LEADER)


def test_followers_acknowledge_only_what_is_durable() -> None:
    async def body(nodes, st, tr) -> None:  # type: ignore[no-untyped-def]
        ld = _leader(nodes)
        for i in range(20):
            await ld.propose(bytes([i]), timeout=10)
        await asyncio.gather(*(ld.propose(bytes([i]), timeout=10) for i in range(50)))
        acks = [a for nid, t in tr.items() if nid != ld.id for a in t.acks]
        assert len(acks) >= 10
        early = [(idx, durable) for idx, durable in acks if idx > durable]
        assert not early, f"acknowledged before durable: {early[:5]}"
        # Every answered proposal is in the commit-latency histogram (what /metrics exports).
        assert sum(ld.commit_latency) == 70 and 0 < ld.commit_latency_sum < 70 * 10

    _run(body)


def test_leader_answers_once_the_followers_hold_it_while_its_own_write_is_in_flight() -> None:
    async def body(nodes, st, tr) -> None:  # type: ignore[no-untyped-def]
        ld = _leader(nodes)
        await ld.propose(b"warm", timeout=10)
        st[ld.id].gate.clear()  # the leader's own disk stalls
        index, _term = await ld.propose(b"x", timeout=5)
        followers = [s for nid, s in st.items() if nid != ld.id]
        assert st[ld.id].durable < index  # answered without the leader's own fsync...
        assert all(s.durable >= index for s in followers)  # ...because both followers hold it
        st[ld.id].gate.set()

    _run(body, THREAD_CFG)


def test_leader_never_answers_before_a_majority_holds_the_entry() -> None:
    async def body(nodes, st, tr) -> None:  # type: ignore[no-untyped-def]
        ld = _leader(nodes)
        await ld.propose(b"warm", timeout=10)
        f1, f2 = (nid for nid in nodes if nid != ld.id)
        st[ld.id].gate.clear()
        st[f1].gate.clear()  # only f2's disk works: one of three
        task = asyncio.ensure_future(ld.propose(b"x", timeout=10))
        await asyncio.sleep(0.5)
        assert not task.done()
        st[f1].gate.set()  # now two of three hold it
        index, _term = await asyncio.wait_for(task, 5)
        assert st[f1].durable >= index and st[f2].durable >= index
        st[ld.id].gate.set()

    _run(body, THREAD_CFG)


async def _all_hold(st: dict[str, GatedStorage], index: int) -> None:
    """Wait until every node holds ``index`` (a majority without some node may have answered)."""
    end = asyncio.get_running_loop().time() + 10
    while any(s.durable < index for s in st.values()):
        assert asyncio.get_running_loop().time() < end, {nid: s.durable for nid, s in st.items()}
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("leader_inline", [True, False])
def test_small_writes_run_on_the_loop_and_the_leaders_as_configured(leader_inline: bool) -> None:
    async def body(nodes, st, tr) -> None:  # type: ignore[no-untyped-def]
        ld = _leader(nodes)
        for s in st.values():
            s.threads.clear()
        for i in range(5):
            last, _term = await ld.propose(bytes([i]), timeout=10)
        await _all_hold(st, last)
        here = threading.current_thread().name
        for nid, s in st.items():
            assert s.threads, nid
            if nid == ld.id and not leader_inline:
                assert all(t.startswith(f"raft-{nid}-io") for t in s.threads), s.threads
            else:
                assert set(s.threads) == {here}, (nid, s.threads)
                assert nodes[nid].stats["inline_writes"] >= 5

    _run(body, dataclasses.replace(CFG, inline_write_leader=leader_inline))


def test_a_lone_outlier_keeps_writes_on_the_loop() -> None:
    async def body(nodes, st, tr) -> None:  # type: ignore[no-untyped-def]
        ld = _leader(nodes)
        await ld.propose(b"warm", timeout=10)
        f = next(nid for nid in nodes if nid != ld.id)
        st[f].threads.clear()
        st[f].slow = 2 * CFG.inline_write_slow  # a shared disk's everyday hiccup
        for i in range(5):
            last, _term = await ld.propose(bytes([i]), timeout=10)
        await _all_hold(st, last)
        assert set(st[f].threads) == {threading.current_thread().name}, st[f].threads
        assert nodes[f].stats["inline_write_backoffs"] == 0

    _run(body)


def test_a_slow_write_on_the_loop_sends_the_next_ones_to_the_io_thread_until_writes_are_fast() -> None:
    async def body(nodes, st, tr) -> None:  # type: ignore[no-untyped-def]
        ld = _leader(nodes)
        await ld.propose(b"warm", timeout=10)
        f = next(nid for nid in nodes if nid != ld.id)
        st[f].threads.clear()
        st[f].slow = 10 * CFG.inline_write_slow  # this disk stalls once, badly
        for i in range(15):
            last, _term = await ld.propose(bytes([i]), timeout=10)
            await _all_hold(st, last)  # one write each
        threads = st[f].threads
        here = threading.current_thread().name
        io = [t != here for t in threads]
        # The slow write ran on the loop; the next ones on the thread, until the average of
        # (fast) writes there fell below the limit; then back on the loop.
        back = io.index(False, 1)  # the first write back on the loop
        assert not io[0] and back >= 3 and all(io[1:back]) and not any(io[back:]), threads
        assert nodes[f].stats["inline_write_backoffs"] == 1

    _run(body)


def test_inline_write_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="inline_write_entries"):
        RaftConfig(inline_write_entries=-1)
    with pytest.raises(ValueError, match="inline_write_slow"):
        RaftConfig(inline_write_slow=0)


# -- SqliteRaftStorage.begin_write -----------------------------------------------------------------
def _entries(lo: int, hi: int) -> list[Entry]:
    return [Entry(i, 1, 0, b"v%d" % i) for i in range(lo, hi + 1)]


def test_a_staged_write_is_durable_only_once_finished(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    s = SqliteRaftStorage(path, node_id="n1")
    s.write(StorageBatch(entries=_entries(1, 2), hard_state=HardState(1, "n1", 0)))
    finish = s.begin_write(StorageBatch(entries=_entries(3, 3), hard_state=HardState(1, "n1", 2)))
    with pytest.raises(RuntimeError, match="staged"):
        s.write(StorageBatch(entries=_entries(3, 3)))
    # Before the commit another connection (what a crash would leave) sees only the first write.
    other = sqlite3.connect(path)
    assert [r[0] for r in other.execute("SELECT idx FROM log ORDER BY idx")] == [1, 2]
    assert other.execute("SELECT value FROM meta WHERE key = 'commit'").fetchone() == (0,)
    other.close()
    finish()
    assert s.last_index() == 3 and s.hard_state().commit == 2
    s.close()
    again = SqliteRaftStorage(path, node_id="n1")
    assert [e.index for e in again.entries()] == [1, 2, 3] and again.hard_state() == HardState(1, "n1", 2)
    again.close()


def test_a_large_batch_is_written_wholly_by_the_returned_call(tmp_path: Path) -> None:
    s = SqliteRaftStorage(tmp_path / "s.sqlite", node_id="n1")
    big = _entries(1, SqliteRaftStorage.STAGE_ENTRIES + 1)
    finish = s.begin_write(StorageBatch(entries=big))
    s.write(StorageBatch(hard_state=HardState(1, None, 0)))  # nothing staged: the storage is free
    finish()
    assert s.last_index() == len(big)
    s.close()


class StallingTransport(SeamRaftTransport):
    """Every third send waits a little before it reaches the seam (a link with no room)."""

    def __init__(self, inner: SeamRaftTransport) -> None:
        super().__init__(inner.seam, owned_mux=inner._mux)
        self.n = 0
        self.delivered: dict[str, list[bytes]] = {}

    async def send(self, peer: str, data: bytes) -> bool:
        self.n += 1
        if self.n % 3 == 0:
            await asyncio.sleep(0.002)
        self.delivered.setdefault(peer, []).append(data)
        return await super().send(peer, data)


def test_sends_that_must_wait_keep_every_peer_in_order_and_lose_nothing() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=7)
        ids = ["a", "b", "c"]
        tr = {i: StallingTransport(SeamRaftTransport.over(fabric.join(i))) for i in ids}
        nodes = {i: await RaftNode(i, tr[i], InMemoryRaftStorage(), voters=ids, config=CFG, seed=k).start()
                 for k, i in enumerate(ids)}
        sent: dict[str, dict[str, list[bytes]]] = {i: {} for i in ids}
        for i, n in nodes.items():
            orig = n._send

            def record(peer: str, frame: bytes, i: str = i, orig=orig) -> None:  # type: ignore[no-untyped-def]
                sent[i].setdefault(peer, []).append(frame)
                orig(peer, frame)

            n._send = record  # type: ignore[method-assign]
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while not any(n.role.value == Role.LEADER and n.commit_index.value >= 1 for n in nodes.values()):
                assert loop.time() < end, "no leader"
                await asyncio.sleep(0.01)
            ld = _leader(nodes)
            for k in range(10):
                await ld.propose(bytes([k]), timeout=10)
            await asyncio.gather(*(ld.propose(bytes([k]), timeout=10) for k in range(40)))

            def lagging() -> list[tuple[str, str]]:  # frames still queued (heartbeats keep coming)
                return [(i, peer) for i in ids for peer, frames in sent[i].items()
                        if len(frames) - len(tr[i].delivered.get(peer, [])) > 2]

            end = loop.time() + 10
            while lagging() and loop.time() < end:  # a loaded machine drains the outboxes slowly
                await asyncio.sleep(0.01)
            assert not lagging()
            for i in ids:
                for peer, frames in sent[i].items():
                    got = tr[i].delivered.get(peer, [])
                    assert got == frames[:len(got)], (i, peer)  # in order, nothing skipped
            assert all(n.stats["send_dropped"] == 0 for n in nodes.values())
        finally:
            for n in nodes.values():
                await n.close()
            await fabric.close()

    asyncio.run(main())


def test_a_failed_disk_write_stops_the_engine_and_says_so() -> None:
    """A node whose durable write fails must not linger as a silent member: its engine stops,
    ``wait_crashed`` hands the host the error (``kv serve`` then exits 1), pending callers fail."""
    class FailingStorage(GatedStorage):
        fail = False

        def write(self, batch: StorageBatch) -> None:
            if self.fail and batch.entries:
                raise OSError(28, "No space left on device")
            super().write(batch)

    async def main() -> None:
        fabric = MemoryFabric(seed=7)
        ids = ["a", "b", "c"]
        st = {i: FailingStorage() for i in ids}
        nodes = {i: await RaftNode(i, SeamRaftTransport.over(fabric.join(i)), st[i], voters=ids,
                                   config=THREAD_CFG, seed=n, offload_io=True).start()
                 for n, i in enumerate(ids)}
        try:
            loop = asyncio.get_running_loop()
            end = loop.time() + 10
            while not any(n.role.value == Role.LEADER for n in nodes.values()):
                assert loop.time() < end, "no leader"
                await asyncio.sleep(0.01)
            ld = _leader(nodes)
            await ld.propose(b"warm", timeout=10)
            crashed = loop.create_task(ld.wait_crashed())
            await asyncio.sleep(0.05)
            assert not crashed.done() and ld.crash is None
            st[ld.id].fail = True
            for nid, s in st.items():  # the followers must not commit it first (that would be fine)
                if nid != ld.id:
                    s.gate.clear()
            with pytest.raises(RaftError, match="crashed"):
                await ld.propose(b"x", timeout=5)
            err = await asyncio.wait_for(crashed, 5)
            assert isinstance(err, OSError) and ld.crash is err and ld.stats["engine_crashed"] == 1
        finally:
            for s in st.values():
                s.gate.set()
            for n in nodes.values():
                await n.close()
            await fabric.close()

    asyncio.run(main())
