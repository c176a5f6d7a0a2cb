"""Durable Quilters (warpmesh.quilt.store): restore, acks only after the disk, refusal, disk errors, power cuts."""

from __future__ import annotations

import asyncio
import errno
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from warpmesh.crdt import LWWRegister, ORMap, encode
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.quilt import Quilter, QuilterConfig, QuilterCore, QuiltKind
from warpmesh.quilt.codec import CRDT_CODEC
from warpmesh.quilt.store import DB_NAME, DataDirError, MemoryMedium, NodeStore
from warpmesh.sim import run_virtual
from warpmesh.wire import decode_frame, encode_frame, pack

FAST = QuilterConfig(anti_entropy_interval=0.2, resend_after=0.1, evict_after=5.0, bootstrap_timeout=1.0)


def _board(seam: Any, store: NodeStore | None, seed: int = 0) -> Quilter[ORMap]:
    inc = store.incarnation if store is not None and store.incarnation is not None else seam.incarnation
    return Quilter(seam, ORMap(LWWRegister), stream=f"{seam.self_id}@{inc}", config=FAST,
                   rng=random.Random(seed), store=None if store is None else store.board("jobs"))


def _put(q: Quilter[ORMap], key: str, value: Any) -> None:
    r = q.core.stream
    q.mutate(lambda m: m.update(r, key, lambda cur: cur.set(r, value)))


def _bytes(q: Quilter[ORMap]) -> bytes:
    return pack(encode(q.state))


# -- the core's ack hook ---------------------------------------------------------------------------
def _acks(core: QuilterCore[Any]) -> list[list[Any]]:
    return [decode_frame(f).body for _, f in core.take_outbox() if decode_frame(f).kind == QuiltKind.ACK]


def test_core_holds_acks_until_the_state_they_cover_is_persisted() -> None:
    core: QuilterCore[ORMap] = QuilterCore("b", "b@1", ORMap(LWWRegister), CRDT_CODEC)
    core.hold_acks = True
    core.roster_changed({"a", "b"}, 0.0)
    core.take_outbox()
    delta = ORMap(LWWRegister).update("a@1", "k", lambda r: r.set("a@1", 1))
    core.receive("a", encode_frame(QuiltKind.DELTA, ["a@1", 1, CRDT_CODEC.encode(delta)]), 0.1)
    owed_at = core.version
    core.flush(0.2)
    assert _acks(core) == []  # not on disk yet: no promise
    core.persisted(owed_at - 1)
    core.flush(0.3)
    assert _acks(core) == []
    assert core.has_pending is False
    core.persisted(owed_at)
    assert core.has_pending  # the runtime flushes again
    core.flush(0.4)
    assert _acks(core) == [["a@1", 1]]
    core.flush(0.5)
    assert _acks(core) == []  # sent once


def test_core_without_store_acks_at_once() -> None:
    core: QuilterCore[ORMap] = QuilterCore("b", "b@1", ORMap(LWWRegister), CRDT_CODEC)
    core.roster_changed({"a", "b"}, 0.0)
    delta = ORMap(LWWRegister).update("a@1", "k", lambda r: r.set("a@1", 1))
    core.receive("a", encode_frame(QuiltKind.DELTA, ["a@1", 1, CRDT_CODEC.encode(delta)]), 0.1)
    core.flush(0.2)
    assert _acks(core) == [["a@1", 1]]


# -- restore -----------------------------------------------------------------------------------------
def test_restarted_boards_are_byte_for_byte_equal(tmp_path: Path) -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=3)
        names = ["a", "b", "c"]
        stores = {n: NodeStore.open(tmp_path / n, n) for n in names}
        qs = {}
        for i, n in enumerate(names):
            seam = fabric.join(n)
            stores[n].claim_incarnation(default=seam.incarnation)
            qs[n] = await _board(seam, stores[n], i).start()
        for i in range(300):
            n = names[i % 3]
            _put(qs[n], f"k{i % 120}", i)
            if i % 50 == 0:
                qs[n].mutate(lambda m, i=i: m.remove(f"k{(i + 7) % 120}"))
            if i % 25 == 0:
                await asyncio.sleep(0.01)
        assert await qs["a"].replicated(majority=True, timeout=5)
        await asyncio.wait_for(_settled(qs), 10)
        before = {n: _bytes(q) for n, q in qs.items()}
        frontiers = {n: q.core.frontier() for n, q in qs.items()}
        for q in qs.values():
            await q.close()
        await fabric.close()
        fabric = MemoryFabric(seed=4)
        for n in names:
            store = NodeStore.open(tmp_path / n, n)
            assert store.stored_incarnation >= 1
            seam = fabric.join(n)
            assert store.claim_incarnation(default=seam.incarnation) > store.stored_incarnation
            q = _board(seam, store)
            assert _bytes(q) == before[n]  # restored in the constructor, before any frame
            old = {s: u for s, u in frontiers[n].items() if u > 0}
            assert {s: u for s, u in q.core.frontier().items() if s in old} == old
            store.disk.close()
        await fabric.close()

    asyncio.run(main())


async def _settled(qs: dict[str, Quilter[ORMap]]) -> None:
    while len({_bytes(q) for q in qs.values()}) > 1:
        await asyncio.sleep(0.02)


def test_group_commit_many_deltas_per_sync(tmp_path: Path) -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=5)
        store = NodeStore.open(tmp_path / "a", "a")
        seam = fabric.join("a")
        store.claim_incarnation(default=seam.incarnation)
        q = await _board(seam, store).start()
        for i in range(2000):
            _put(q, f"k{i}", i)
            if i % 10 == 0:
                await asyncio.sleep(0)
        assert await q.replicated(timeout=5)
        assert store.commits < 300  # 2000 mutations, far fewer syncs
        await q.close()
        fabric.crash("a")
        again = NodeStore.open(tmp_path / "a", "a")
        assert len(_board(fabric.join("a"), again).state) == 2000
        again.disk.close()
        await fabric.close()

    asyncio.run(main())


def test_a_local_write_counts_for_its_own_majority_only_once_on_disk() -> None:
    async def main() -> None:
        medium = MemoryMedium(sync_delay=0.05)
        fabric = MemoryFabric(seed=1)
        seam = fabric.join("a")
        store = NodeStore(medium.disk("a"), "a")
        store.claim_incarnation(default=seam.incarnation)
        q = await _board(seam, store).start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        _put(q, "k", 1)
        assert await q.replicated(timeout=1)  # alone: a majority of one, itself - on disk
        assert loop.time() - t0 >= 0.05
        image = medium.images["a"].boards["jobs"]
        assert image.journal or image.snapshot
        await q.close()
        await fabric.close()

    run_virtual(main())


def test_a_local_batch_is_journaled_as_the_bytes_the_peers_get() -> None:
    """One encoding per local batch: the journal record holds the very wire form sent to the peers,
    and a commit that comes before the pump's coalescing delay cuts the batch itself (still covered)."""
    from warpmesh.wire import unpack

    async def main() -> None:
        medium = MemoryMedium()
        fabric = MemoryFabric(seed=2)
        seam = fabric.join("a")
        other = fabric.join("b")
        store = NodeStore(medium.disk("a"), "a")
        store.claim_incarnation(default=seam.incarnation)
        q = Quilter(seam, ORMap(LWWRegister), stream=f"a@{store.incarnation}", config=FAST,
                    rng=random.Random(0), store=store.board("jobs"), coalesce_delay=5.0)
        encoded: list[Any] = []
        codec = q.core.codec

        class Counting:  # the board's codec, counting encodings
            def __getattr__(self, name: str) -> Any:
                return getattr(codec, name)

            def encode(self, state: Any) -> Any:
                encoded.append(state)
                return codec.encode(state)

        q.core.codec = Counting()  # type: ignore[assignment]
        await q.start()
        got: list[Any] = []
        other.add_handler(lambda sender, data: got.append(decode_frame(data)))
        _put(q, "k", 1)
        assert await store.commit()  # long before the pump's 5 s coalescing: the commit cut the batch
        journal = medium.images["a"].boards["jobs"].journal
        assert len(journal) == 1
        [wire] = unpack(journal[0])
        assert q.core.persisted_version == q.core.version
        await asyncio.sleep(6)  # the pump sends the cut batch when its coalescing delay ends
        deltas = [f.body for f in got if f.kind == QuiltKind.DELTA]
        assert deltas and all(d == [q.core.stream, 1, wire] for d in deltas)  # (and resends of it)
        assert len(encoded) == 1  # once, for the peers and the disk
        await q.close()
        await fabric.close()

    run_virtual(main())


# -- refusal -----------------------------------------------------------------------------------------
def test_foreign_corrupt_and_other_nodes_directories_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataDirError, match="not a warpmesh node data directory"):
        NodeStore.open(other, "a")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / DB_NAME).write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(DataDirError, match="not a readable warpmesh node store"):
        NodeStore.open(junk, "a")
    NodeStore.open(tmp_path / "b", "b").disk.close()
    with pytest.raises(DataDirError, match="belongs to node 'b'"):
        NodeStore.open(tmp_path / "b", "a")
    alien = tmp_path / "alien"
    alien.mkdir()
    db = sqlite3.connect(alien / DB_NAME)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(DataDirError, match="unexpected tables"):
        NodeStore.open(alien, "a")


def test_a_corrupt_record_refuses_the_whole_directory(tmp_path: Path) -> None:
    async def write() -> None:
        store = NodeStore.open(tmp_path / "a", "a")
        fabric = MemoryFabric(seed=1)
        seam = fabric.join("a")
        store.claim_incarnation(default=seam.incarnation)
        q = await _board(seam, store).start()
        for i in range(50):
            _put(q, f"k{i}", i)
            await asyncio.sleep(0)
        await q.close()
        await fabric.close()

    asyncio.run(write())
    db = sqlite3.connect(tmp_path / "a" / DB_NAME)
    rid, delta = db.execute("SELECT id, delta FROM journal ORDER BY id DESC LIMIT 1").fetchone()
    db.execute("UPDATE journal SET delta = ? WHERE id = ?", (delta[:-1] + bytes([delta[-1] ^ 1]), rid))
    db.commit()
    db.close()
    with pytest.raises(DataDirError, match="corrupt"):
        NodeStore.open(tmp_path / "a", "a")


def test_incarnation_comes_from_the_directory_and_an_explicit_lower_one_is_refused(tmp_path: Path) -> None:
    s = NodeStore.open(tmp_path / "a", "a")
    assert s.claim_incarnation(default=5) == 5
    s.disk.close()
    s = NodeStore.open(tmp_path / "a", "a")
    assert s.claim_incarnation(default=3) == 6  # always above the stored one
    s.disk.close()
    s = NodeStore.open(tmp_path / "a", "a")
    with pytest.raises(DataDirError, match="not above 6"):
        s.claim_incarnation(6)
    assert s.claim_incarnation(100) == 100
    s.disk.close()


# -- disk errors ------------------------------------------------------------------------------------
def test_a_disk_error_stops_acknowledging() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=2)
        medium = MemoryMedium()
        qs = {}
        stores = {}
        for i, n in enumerate(["a", "b", "c"]):
            seam = fabric.join(n)
            stores[n] = NodeStore(medium.disk(n), n)
            stores[n].claim_incarnation(default=seam.incarnation)
            qs[n] = await _board(seam, stores[n], i).start()
        _put(qs["a"], "before", 1)
        assert await qs["a"].replicated(majority=True, timeout=2)
        acks_before = {n: qs[n].core.stats["out_ack"] for n in "bc"}
        medium.fail = OSError(errno.ENOSPC, "No space left on device")
        _put(qs["a"], "after", 2)
        assert not await qs["a"].replicated(count=1, timeout=2)  # nobody can promise it any more
        await qs["b"].wait_for(lambda s: "after" in s, timeout=2)  # it still spreads, unacknowledged
        assert {n: qs[n].core.stats["out_ack"] for n in "bc"} == acks_before
        assert all(isinstance(s.failed, OSError) for s in stores.values())
        for q in qs.values():
            await q.close()
        await fabric.close()

    run_virtual(main())


# -- power cuts over many seeds ----------------------------------------------------------------------
STEPS = ("collected", "written", "synced", "released")


class _Cut(Exception):
    pass


def _power_cut_run(seed: int) -> dict[str, int]:
    """3 durable replicas and a memory-only client. The client's puts each return once a majority of
    the replicas acknowledged them; the power goes out (every replica and the client) at a seeded step
    of a seeded commit of a seeded replica; the replicas restart from their disks: every put that
    returned must be on every board once they converge."""
    rng = random.Random(seed)
    names = ["a", "b", "c"]
    step = STEPS[seed % len(STEPS)]
    victim = rng.choice(names)
    at_commit = rng.randrange(2, 30)

    async def main() -> dict[str, int]:
        medium = MemoryMedium(sync_delay=0.005)
        fabric = MemoryFabric(seed=seed, faults=LinkFaults(drop=0.05, reorder=0.2, jitter=0.002))
        cut = asyncio.Event()
        qs: dict[str, Quilter[ORMap]] = {}
        stores: dict[str, NodeStore] = {}

        def start(n: str, i: int) -> Quilter[ORMap]:
            seam = fabric.join(n)
            store = stores[n] = NodeStore(medium.disk(n), n)
            store.claim_incarnation(default=seam.incarnation)
            return _board(seam, store, seed * 10 + i)

        for i, n in enumerate(names):
            qs[n] = await start(n, i).start()
        client = await _board(fabric.join("w"), None, seed).start()
        seen = {"n": 0}

        def power_cut() -> None:
            if not cut.is_set():
                medium.power_cut()  # nothing unsynced survives, nothing more is written
                for n in [*names, "w"]:
                    fabric.crash(n)  # and nothing more is sent
                cut.set()

        def hook(what: str) -> None:
            if what == step and not cut.is_set():
                seen["n"] += 1
                if seen["n"] == at_commit:
                    if what == "written":  # somewhere inside the fsync
                        asyncio.get_running_loop().call_later(rng.uniform(0, medium.sync_delay), power_cut)
                    else:
                        power_cut()

        stores[victim].step_hook = hook
        acked: list[str] = []

        async def writer() -> None:
            i = 0
            while not cut.is_set():
                key = f"w-{i}"
                _put(client, key, i)
                if await client.replicated(majority=True, timeout=1.0) and not cut.is_set():
                    acked.append(key)
                i += 1
                await asyncio.sleep(rng.uniform(0, 0.003))

        task = asyncio.create_task(writer())
        await asyncio.wait_for(cut.wait(), 60)
        await task
        for q in [*qs.values(), client]:
            await q.close()
        for i, n in enumerate(names):
            qs[n] = await start(n, i + 3).start()
        await asyncio.wait_for(_settled(qs), 60)
        lost = [k for k in acked if k not in qs["a"].state]
        assert not lost, f"seed {seed}: acknowledged puts lost in a power cut at {step}: {lost[:5]}"
        for q in qs.values():
            await q.close()
        await fabric.close()
        return {"acked": len(acked), "commits": medium.syncs}

    return run_virtual(main())


@pytest.mark.parametrize("seed", range(24))
def test_power_cut_at_every_step_of_the_ack_path_loses_nothing_acknowledged(seed: int) -> None:
    out = _power_cut_run(seed)
    assert out["commits"] > 0


@pytest.mark.slow
def test_power_cut_many_seeds() -> None:
    for seed in range(24, 224):
        _power_cut_run(seed)
