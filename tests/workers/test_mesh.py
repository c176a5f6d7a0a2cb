"""Isolate workers on the mesh: modules by hash from peers (verified first), a mesh-wide memo.

Peers are WarpNodes with a WorkerMesh each, on the memory fabric under virtual time; the jobs run
for real (wasmtime) on runner threads.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.warp.harness import FAST
from warpmesh.crdt import LWWRegister
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.quilt import QuilterConfig
from warpmesh.sim import run_virtual
from warpmesh.warp import OpRegistry, WarpNode
from warpmesh.wire.frame import pack
from warpmesh.workers import IsolateHost, Kind, Ref, Store, StoreError, blob_id
from warpmesh.workers.fold import import_dir, make_fixture_tree, python_fold
from warpmesh.workers.guests import guest_bytes
from warpmesh.workers.mesh import MEMO_TAG, OBJECTS_TAG, WASM_RUN_OP, MeshConfig, WorkerMesh, wasm_task
from warpmesh.workers.meshwire import CHUNK, GET, MemoEntry, ProtocolError, decode_message, parse_task

from .conftest import wat_file

#: Virtual seconds to wait for a job's answer. Generous on purpose: virtual time keeps running while a
#: runner thread executes a guest (the loop jumps from timer to timer meanwhile), so a slow, loaded
#: machine stretches a job over many virtual seconds. Only a broken test ever waits this long.
WAIT = 3600.0

MESH_FAST = MeshConfig(
    request_timeout=0.5, standby_retry=1.0,
    quilter=QuilterConfig(anti_entropy_interval=0.2, resend_after=0.1, evict_after=10.0),
)


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def chain_args(n: int, w: int, i: int = 0) -> dict[str, Any]:
    return {"n": u32(n), "w": u32(w), "i": u32(i)}  # i as the guest encodes a child index


def chain_nodes(n: int, w: int) -> int:
    """What chain(n, w) outputs: the node count of a w-ary tree of depth n."""
    return sum(w**k for k in range(n + 1))


def chain_requests(n: int, w: int) -> int:
    """Distinct requests of chain(n, w): identical subtrees (same n, same child index) are one."""
    return 1 + n * w


@dataclass
class Peer:
    name: str
    node: WarpNode
    wm: WorkerMesh
    store: Store


class Cluster:
    """WarpNodes with a WorkerMesh each, on one memory fabric (one shared isolate host)."""

    def __init__(self, tmp: Path, host: IsolateHost, fabric: MemoryFabric) -> None:
        self.tmp = tmp
        self.host = host
        self.fabric = fabric
        self.peers: dict[str, Peer] = {}

    async def add(self, name: str, config: MeshConfig = MESH_FAST) -> Peer:
        seam = self.fabric.join(name)
        node = WarpNode(seam, registry=OpRegistry(), config=FAST)
        store = Store(self.tmp / name)
        wm = WorkerMesh.for_node(node, store, host=self.host, parallelism=2, config=config)
        await wm.start()
        await node.start()
        self.peers[name] = Peer(name, node, wm, store)
        return self.peers[name]

    def __getitem__(self, name: str) -> Peer:
        return self.peers[name]

    async def close(self) -> None:
        for p in self.peers.values():
            await p.node.close()
            await p.wm.close()
        await self.fabric.close()
        for p in self.peers.values():
            p.store.close()
        # Nothing any of them started is left running.
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def cluster(tmp: Path, host: IsolateHost, names: str, *, max_payload: int | None = None,
                  config: MeshConfig = MESH_FAST) -> Cluster:
    kw = {} if max_payload is None else {"max_payload": max_payload}
    c = Cluster(tmp, host, MemoryFabric(seed=7, faults=LinkFaults(delay=0.002), **kw))
    for n in names:
        await c.add(n, config)
    await asyncio.sleep(1.0)
    return c


@pytest.fixture(scope="module")
def chain_wasm() -> bytes:
    return wat_file("chain")


def test_a_module_is_fetched_from_its_only_holder_verified_and_then_held(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AB")
        a, b = c["A"], c["B"]
        mid = a.wm.put_module(chain_wasm)
        assert not b.store.has(mid)
        await b.node.enqueue("t1", WASM_RUN_OP, wasm_task(mid, chain_args(2, 2)), pin="B")
        res = await b.node.outcome("t1", timeout=WAIT)
        assert res.ok, res.error
        assert res.value["value"] == u32(chain_nodes(2, 2)) and res.value["by"] == "B"
        assert res.value["source"] == "run" and res.value["clean"] is True
        assert b.store.get_blob(mid) == chain_wasm  # verified and stored
        assert b.wm.stats["outcome_ok"] == 1 and b.wm.stats["outcome_bad"] == 0
        # the same job with its fields as keyword arguments (the calling convention)
        await b.node.enqueue("t1-kw", WASM_RUN_OP, pin="B", **wasm_task(mid, chain_args(2, 2)))
        assert (await b.node.result("t1-kw", timeout=WAIT))["value"] == u32(chain_nodes(2, 2))
        assert a.wm.stats["served_objects"] == 1
        assert b.wm.runner.executions == chain_requests(2, 2)
        # B now holds the module and says so: a third peer could fetch it from either.
        await asyncio.sleep(1.0)
        assert a.wm.manifest.holders(Ref(Kind.BLOB, mid)) == ["B"]
        await c.close()

    run_virtual(main())


def test_a_tampering_holder_is_refused_and_every_waiter_gets_the_honest_bytes(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "ATB")
        a, t, b = c["A"], c["T"], c["B"]
        mid = a.wm.put_module(chain_wasm)
        t.wm.put_module(chain_wasm)
        original = t.wm.exchange._serve_read

        def tampered(ref: Ref) -> bytes | None:
            data = original(ref)
            return None if data is None else data[:-1] + bytes([data[-1] ^ 1])

        t.wm.exchange._serve_read = tampered  # type: ignore[method-assign]
        await asyncio.sleep(1.0)
        ref = Ref(Kind.BLOB, mid)
        assert b.wm.exchange.candidates(ref) and set(b.wm.exchange.candidates(ref)) == {"A", "T"}
        b.wm.exchange.hint(mid, "T")  # make sure the tampering peer is asked first
        tasks = [f"job-{i}" for i in range(6)]
        for i, task in enumerate(tasks):
            await b.node.enqueue(task, WASM_RUN_OP, wasm_task(mid, chain_args(1, 2, i)), pin="B")
        for task in tasks:
            res = await b.node.outcome(task, timeout=WAIT)
            assert res.ok, res.error
            assert res.value["value"] == u32(chain_nodes(1, 2))
        assert b.store.get_blob(mid) == chain_wasm
        assert b.wm.stats["fetches"] == 1  # single flight: one fetch for six jobs
        assert b.wm.stats["outcome_bad"] == 1 and b.wm.stats["outcome_ok"] == 1
        assert b.wm.exchange.suspects["T"] == 1
        assert b.node.local_stats["failures"] == 0
        # From now on the tampering peer is asked last.
        b.wm.exchange.hint(mid, "T")
        assert b.wm.exchange.candidates(ref)[-1] == "T"
        await c.close()

    run_virtual(main())


def test_many_jobs_needing_one_module_fetch_it_once(tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AB")
        a, b = c["A"], c["B"]
        mid = a.wm.put_module(chain_wasm)
        await asyncio.sleep(0.5)
        tasks = [f"job-{i}" for i in range(12)]
        for i, task in enumerate(tasks):
            b.node.enqueue_local(task, WASM_RUN_OP, wasm_task(mid, chain_args(0, 1, i)))
        for task in tasks:
            assert (await b.node.outcome(task, timeout=WAIT)).ok
        assert a.wm.stats["served_requests"] == 1
        assert b.wm.stats["fetches"] == 1 and b.wm.stats["fetches_joined"] >= 1
        await c.close()

    run_virtual(main())


def test_no_holder_means_standby_and_the_job_runs_once_a_holder_appears(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        # A long retry period: only the manifest wake-up can bring the job back quickly.
        config = replace(MESH_FAST, standby_retry=600.0)
        c = await cluster(tmp_path, host, "AB", config=config)
        a, b = c["A"], c["B"]
        mid = blob_id(chain_wasm)
        await b.node.enqueue("t1", WASM_RUN_OP, wasm_task(mid, chain_args(1, 3)), pin="B")
        await asyncio.sleep(5.0)
        assert "t1" not in b.node.results  # neither answered nor failed
        assert b.wm.stats["standbys"] == 1 and b.wm.stats["fetches_no_holder"] == 1
        assert b.node.local_stats["failures"] == 0 and b.node.queue_depth == 1
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        a.wm.put_module(chain_wasm)  # a holder appears
        # B is woken by the manifest (not by the 600 s retry timer) and fetches at once; no thread
        # is involved up to here, so virtual time measures this exactly.
        while b.wm.stats["outcome_ok"] == 0:
            await asyncio.sleep(0.01)
        assert loop.time() - t0 < 5.0
        res = await b.node.outcome("t1", timeout=WAIT)
        assert res.ok and res.value["value"] == u32(chain_nodes(1, 3))
        await c.close()

    run_virtual(main())


def test_a_result_computed_on_one_peer_is_a_hit_on_another_nested_runs_included(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AB")
        a, b = c["A"], c["B"]
        mid = a.wm.put_module(chain_wasm)
        await a.node.enqueue("first", WASM_RUN_OP, wasm_task(mid, chain_args(2, 2)), pin="A")
        first = await a.node.outcome("first", timeout=WAIT)
        assert first.ok and first.value["source"] == "run"
        assert a.wm.runner.executions == chain_requests(2, 2)
        # Every clean result (5 of them, nested ones included) reaches B's memo board.
        for _ in range(100):
            if b.wm.results.entries() >= chain_requests(2, 2):
                break
            await asyncio.sleep(0.1)
        assert b.wm.results.entries() == chain_requests(2, 2)
        await b.node.enqueue("again", WASM_RUN_OP, wasm_task(mid, chain_args(2, 2)), pin="B")
        again = await b.node.outcome("again", timeout=WAIT)
        assert again.ok and again.value["source"] == "memo"
        assert again.value["key"] == first.value["key"] and again.value["result"] == first.value["result"]
        assert b.wm.runner.executions == 0  # the guest ran once, mesh-wide
        # A larger request whose first child is A's whole run: B executes only its root and the
        # second child; every grandchild is a hit on A's nested results.
        await b.node.enqueue("bigger", WASM_RUN_OP, wasm_task(mid, chain_args(3, 2, 9)), pin="B")
        bigger = await b.node.outcome("bigger", timeout=WAIT)
        assert bigger.ok and bigger.value["value"] == u32(chain_nodes(3, 2))
        assert b.wm.runner.executions == 2
        assert a.wm.runner.executions == chain_requests(2, 2)
        await c.close()

    run_virtual(main())


def test_a_memo_entry_with_forged_inline_bytes_is_ignored(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AB")
        a, b = c["A"], c["B"]
        mid = a.wm.put_module(chain_wasm)
        # A publishes a wrong answer for the request, with bytes that do not match the ref it names.
        key = a.wm.runner.request(mid, chain_args(1, 1)).key
        forged = MemoEntry(Ref(Kind.BLOB, blob_id(u32(99))), 4, "A", u32(42)).to_wire()
        r = a.wm.replica
        a.wm.results.board.mutate(lambda m: m.update(r, key, lambda reg: reg.set(r, forged)))
        await asyncio.sleep(1.0)
        await b.node.enqueue("t", WASM_RUN_OP, wasm_task(mid, chain_args(1, 1)), pin="B")
        res = await b.node.outcome("t", timeout=WAIT)
        assert res.ok and res.value["value"] == u32(2) and res.value["source"] == "run"
        assert b.wm.stats["bad_inline_results"] >= 1
        await c.close()

    run_virtual(main())


def test_a_module_that_does_not_compile_fails_terminally(tmp_path: Path, host: IsolateHost) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AB")
        a, b = c["A"], c["B"]
        mid = a.wm.put_module(b"\x00asm\x01\x00\x00\x00 this is not a module")
        await b.node.enqueue("t", WASM_RUN_OP, wasm_task(mid, {}), pin="B")
        res = await b.node.outcome("t", timeout=WAIT)
        assert not res.ok and "module_rejected" in (res.error or "") and res.attempts == 1
        await c.close()

    run_virtual(main())


def _with_custom_section(wasm: bytes, payload_len: int) -> bytes:
    """``wasm`` plus a custom section (ignored by engines) that makes it ``payload_len`` bytes longer."""
    name = b"padding"
    body = bytes([len(name)]) + name + bytes(i % 251 for i in range(payload_len))
    size, leb = len(body), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        leb.append(byte | (0x80 if size else 0))
        if not size:
            break
    return wasm + b"\x00" + bytes(leb) + body


@pytest.mark.parametrize("serve_cache", [MESH_FAST.serve_cache_bytes, 64 * 1024], ids=["cached", "from-file"])
def test_a_module_larger_than_a_frame_is_pulled_in_ranges(tmp_path: Path, host: IsolateHost, chain_wasm: bytes,
                                                         serve_cache: int) -> None:
    async def main() -> None:
        config = replace(MESH_FAST, serve_cache_bytes=serve_cache)
        c = await cluster(tmp_path, host, "AB", max_payload=16 * 1024, config=config)
        a, b = c["A"], c["B"]
        big = _with_custom_section(chain_wasm, 200_000)
        mid = a.wm.put_module(big)
        await b.node.enqueue("t", WASM_RUN_OP, wasm_task(mid, chain_args(1, 2)), pin="B")
        res = await b.node.outcome("t", timeout=WAIT)
        assert res.ok, res.error
        assert b.store.get_blob(mid) == big
        assert a.wm.stats["served_requests"] >= len(big) // (16 * 1024)  # one GET, then the ranges
        await c.close()

    run_virtual(main())


def test_a_tampered_range_fails_the_whole_object_and_the_next_holder_serves(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "ATB", max_payload=16 * 1024)
        a, t, b = c["A"], c["T"], c["B"]
        big = _with_custom_section(chain_wasm, 100_000)
        mid = a.wm.put_module(big)
        t.wm.put_module(big)
        original = t.wm.exchange._serve_range

        def tampered(ref: Ref, offset: int, n: int) -> tuple[int, bytes] | None:
            got = original(ref, offset, n)
            if got is None or offset < 50_000 or offset - n >= 50_000:
                return got
            size, data = got  # one range, somewhere in the middle, has one bit flipped
            return size, data[:10] + bytes([data[10] ^ 4]) + data[11:]

        t.wm.exchange._serve_range = tampered  # type: ignore[method-assign]
        await asyncio.sleep(1.0)
        b.wm.exchange.hint(mid, "T")
        await b.node.enqueue("t", WASM_RUN_OP, wasm_task(mid, chain_args(1, 2)), pin="B")
        res = await b.node.outcome("t", timeout=WAIT)
        assert res.ok, res.error
        assert b.store.get_blob(mid) == big
        assert b.wm.stats["outcome_bad"] == 1 and b.wm.stats["outcome_ok"] == 1
        await c.close()

    run_virtual(main())


def test_fold_over_a_shared_tree_on_another_peer(tmp_path: Path, host: IsolateHost) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AB")
        a, b = c["A"], c["B"]
        src = make_fixture_tree(tmp_path / "fixture", depth=2, dirs=2, files=3)
        tree = import_dir(a.store, src)
        fold_id = a.wm.put_module(guest_bytes("fold"))
        post_id = a.wm.put_module(guest_bytes("filecount"))
        a.wm.share(tree)
        task = wasm_task(fold_id, refs={"in": tree, "post": Ref(Kind.BLOB, post_id)})
        await b.node.enqueue("fold", WASM_RUN_OP, task, pin="B")
        res = await b.node.outcome("fold", timeout=WAIT)
        assert res.ok, res.error
        files, size = struct.unpack("<QQ", res.value["value"])
        expected = python_fold(src).total
        assert (files, size) == (expected.files, expected.bytes)
        # The tree's closure came in a few batched requests, not one per object.
        objects = b.wm.stats["fetched_objects"]
        assert objects >= 20 and a.wm.stats["served_requests"] <= 10
        await c.close()

    run_virtual(main())


def test_a_holder_that_does_not_answer_times_out_and_the_next_one_serves(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "ASB")
        a, s, b = c["A"], c["S"], c["B"]
        mid = a.wm.put_module(chain_wasm)
        s.wm.put_module(chain_wasm)
        await asyncio.sleep(0.5)
        c.fabric.partition({"B"}, {"S"}, one_way=True)  # B's requests to S vanish
        b.wm.exchange.hint(mid, "S")  # and S is asked first
        t0 = asyncio.get_running_loop().time()
        await b.node.enqueue("t", WASM_RUN_OP, wasm_task(mid, chain_args(1, 2)), pin="B")
        res = await b.node.outcome("t", timeout=WAIT)
        assert res.ok
        assert b.wm.stats["outcome_unreachable"] == 1 and b.wm.stats["outcome_ok"] == 1
        assert a.wm.stats["served_requests"] == 1 and s.wm.stats["served_requests"] == 0
        assert asyncio.get_running_loop().time() - t0 >= MESH_FAST.request_timeout
        c.fabric.heal()
        await c.close()

    run_virtual(main())


def test_a_result_too_large_to_inline_is_fetched_from_its_publisher(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        # No inline results: every board hit goes through the runner's fetch seam (a runner thread
        # waiting on the event loop) to the peer that published it.
        c = await cluster(tmp_path, host, "AB", config=replace(MESH_FAST, inline_result_bytes=0))
        a, b = c["A"], c["B"]
        mid = a.wm.put_module(chain_wasm)
        await a.node.enqueue("first", WASM_RUN_OP, wasm_task(mid, chain_args(1, 2)), pin="A")
        first = await a.node.outcome("first", timeout=WAIT)
        assert first.ok
        await asyncio.sleep(1.0)
        b.wm.put_module(chain_wasm)  # B has the module, not the result
        assert not b.store.has(bytes.fromhex(first.value["result"]))
        res = await b.wm.run(mid, chain_args(1, 2))
        assert res.source == "memo" and res.ref.id.hex() == first.value["result"]
        assert b.store.get_blob(res.ref.id) == u32(chain_nodes(1, 2))
        assert b.wm.runner.executions == 0 and b.wm.stats["outcome_ok"] == 1
        await c.close()

    run_virtual(main())


def test_over_real_tcp_sockets(tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    """Two peers on loopback TCP: the module crosses the wire, and the result is a hit back home."""
    from tests.net.tcp_helpers import chain, close_all, converged, run
    from warpmesh.net.mux import MuxSeam

    async def main() -> None:
        ms = await chain("ab")
        await converged(ms)
        stores = [Store(tmp_path / m.self_id) for m in ms]
        wms = [await WorkerMesh(MuxSeam(m), st, host=host, parallelism=2, config=MESH_FAST).start()
               for m, st in zip(ms, stores, strict=True)]
        try:
            a, b = wms
            mid = a.put_module(chain_wasm)
            for _ in range(200):
                if a.manifest.key(Ref(Kind.BLOB, mid)) in b.manifest.board.state:
                    break
                await asyncio.sleep(0.05)
            res = await b.run(mid, chain_args(2, 3))
            assert res.source == "run" and b.store.get_blob(res.ref.id) == u32(chain_nodes(2, 3))
            assert b.stats["outcome_ok"] == 1 and b.store.get_blob(mid) == chain_wasm
            for _ in range(200):
                if a.results.entries() >= chain_requests(2, 3):
                    break
                await asyncio.sleep(0.05)
            again = await a.run(mid, chain_args(2, 3))
            assert again.source == "memo" and again.ref == res.ref and a.runner.executions == 0
        finally:
            for wm in wms:
                await wm.close()
            await close_all(ms)
            for st in stores:
                st.close()

    run(main())


def test_a_holder_that_lost_the_object_says_so_retracts_and_the_next_holder_serves(
        tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AGB")
        a, g, b = c["A"], c["G"], c["B"]
        mid = a.wm.put_module(chain_wasm)
        g.wm.put_module(chain_wasm)
        g.store.gc(grace_seconds=-1)  # G garbage-collects the module but still advertises it
        assert not g.store.has(mid)
        await asyncio.sleep(1.0)
        ref = Ref(Kind.BLOB, mid)
        assert b.wm.manifest.holders(ref) == ["A", "G"]
        b.wm.exchange.hint(mid, "G")
        assert await b.wm.fetch(ref)
        assert b.wm.stats["outcome_missing"] == 1 and b.wm.stats["outcome_ok"] == 1
        await asyncio.sleep(1.0)
        assert "G" not in a.wm.manifest.holders(ref)  # G retracted itself everywhere
        await c.close()

    run_virtual(main())


def test_each_peer_advertises_a_bounded_number_of_roots(tmp_path: Path, host: IsolateHost) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AB", config=replace(MESH_FAST, max_advertised=2))
        a, b = c["A"], c["B"]
        refs = [Ref(Kind.BLOB, a.store.put_blob(f"object {i}".encode())) for i in range(3)]
        for r in refs:
            a.wm.share(r)
        await asyncio.sleep(1.0)
        assert [b.wm.manifest.holders(r) for r in refs] == [[], ["A"], ["A"]]  # the oldest is retracted
        with pytest.raises(StoreError):
            a.wm.share(Ref(Kind.BLOB, blob_id(b"not stored")))
        await c.close()

    run_virtual(main())


def test_the_registry_form_on_a_shared_mux(tmp_path: Path, host: IsolateHost, chain_wasm: bytes) -> None:
    """Without for_node: the WorkerMesh's registry on a WarpNode that shares its MuxSeam."""
    from warpmesh.net.mux import MuxSeam

    async def main() -> None:
        fabric = MemoryFabric(seed=3, faults=LinkFaults(delay=0.002))
        peers = []
        for name in "AB":
            mux = MuxSeam(fabric.join(name))
            store = Store(tmp_path / name)
            wm = WorkerMesh(mux, store, host=host, parallelism=2, config=MESH_FAST)
            node = WarpNode(mux.parent, registry=wm.registry, mux=mux, config=FAST)
            wm.bind(node)
            await wm.start()
            await node.start()
            peers.append((node, wm, store))
        await asyncio.sleep(1.0)
        (na, wa, _), (_, wb, _) = peers
        mid = wa.put_module(chain_wasm)
        await na.enqueue("t", WASM_RUN_OP, wasm_task(mid, chain_args(1, 2)), pin="B")
        res = await na.outcome("t", timeout=WAIT)
        assert res.ok and res.value["by"] == "B" and wb.stats["outcome_ok"] == 1
        with Store(tmp_path / "late") as late, pytest.raises(RuntimeError, match=r"before node\.start"):
            WorkerMesh.for_node(na, late)
        for node, wm, store in peers:
            await node.close()
            await wm.close()
            await node.mux.close()
            store.close()
        await fabric.close()
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    run_virtual(main())


# -- pure parts ------------------------------------------------------------------------------------


def test_the_objects_protocol_refuses_malformed_frames() -> None:
    rid = bytes(32)
    assert decode_message(pack([GET, 5, 1000, [[1, rid]]]), 8) == [GET, 5, 1000, [Ref(Kind.BLOB, rid)]]
    assert decode_message(pack([CHUNK, 5, 10, 0, b"abc"]), 8)[4] == b"abc"
    bad = [b"", b"\xc1", pack("x"), pack([GET]), pack([GET, 1, 10, []]), pack([GET, 1, 10, [[3, rid]]]),
           pack([GET, 1, 10, [[1, b"short"]]]), pack([GET, 1, 10, [[1, rid]] * 9]), pack([9, 1]),
           pack([CHUNK, 1, -2, 0, b""]), pack([GET, True, 10, [[1, rid]]])]
    for frame in bad:
        with pytest.raises(ProtocolError):
            decode_message(frame, 8)


def test_garbage_on_the_objects_channel_is_counted_not_fatal(tmp_path: Path, host: IsolateHost,
                                                             chain_wasm: bytes) -> None:
    async def main() -> None:
        c = await cluster(tmp_path, host, "AB")
        a, b = c["A"], c["B"]
        for junk in (b"\x00garbage", pack([GET, 1, 10, [[7, b"x"]]]), pack([CHUNK, 999, 3, 0, b"abc"])):
            await b.node.mux.channel(OBJECTS_TAG).send_to("A", junk)
        await b.node.mux.channel(MEMO_TAG).send_to("A", b"\xffnot a quilt frame")
        await asyncio.sleep(0.5)
        assert a.wm.stats["malformed"] == 2 and a.wm.stats["stray_replies"] == 1
        mid = a.wm.put_module(chain_wasm)  # A still serves
        await b.node.enqueue("t", WASM_RUN_OP, wasm_task(mid, chain_args(0, 1)), pin="B")
        assert (await b.node.outcome("t", timeout=WAIT)).ok
        await c.close()

    run_virtual(main())


def test_wasm_task_round_trips_and_parse_task_names_what_is_wrong() -> None:
    mid = blob_id(b"m")
    tree = Ref(Kind.TREE, blob_id(b"t"))
    wire = wasm_task(mid.hex(), {"n": 3}, refs={"in": tree}, salt="s")
    task = parse_task(wire)
    assert task.module == mid and task.args == {"n": 3} and task.refs == {"in": tree} and task.salt == "s"
    cases: list[tuple[Any, str]] = [
        (None, "must be a map"),
        ({"module": "zz"}, "32-byte id"),
        ({"module": mid, "bogus": 1}, "unknown fields"),
        ({"module": mid, "args": {"x": 1}, "refs": {"x": [1, mid]}}, "both inline and by reference"),
        ({"module": mid, "refs": {"x": [3, mid]}}, "kind must be 1"),
        ({"module": mid, "limits": [0, 65536, 1.0]}, "fuel"),
        ({"module": mid, "salt": 5}, "salt"),
    ]
    for bad, why in cases:
        with pytest.raises(ValueError, match=why):
            parse_task(bad)


def test_memo_entries_from_the_wire_are_validated() -> None:
    good = MemoEntry(Ref(Kind.TREE, bytes(32)), 7, "A", None)
    assert MemoEntry.from_register(LWWRegister(1, "A@1", good.to_wire())) == good
    for junk in (b"x", pack([1, bytes(32), -1, "A", None]), pack([1, b"short", 1, "A", None]),
                 pack([1, bytes(32), 1, 5, None]), pack([1, bytes(32), 1, "A", 5])):
        assert MemoEntry.from_register(LWWRegister(1, "A@1", junk)) is None
    assert MemoEntry.from_register(None) is None
