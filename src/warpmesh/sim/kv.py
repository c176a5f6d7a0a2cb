"""The KV store under simulation: the production runtime (RaftNode, KVServer, KVClient) on a
:class:`~warpmesh.sim.loop.VirtualTimeLoop` over a seeded faulty :class:`MemoryFabric`.

Clients run concurrent get/put/cas/delete on a few keys while nodes crash and restart (their
in-memory storage survives, like a disk) and the network partitions, drops, duplicates and reorders.
Every operation is recorded with its virtual call and return times; at the end the faults heal,
every client reads every key, and the whole history must be linearizable (which also proves that no
acknowledged write was lost), with every write applied at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from warpmesh.kv.client import KVClient, KVError
from warpmesh.kv.linearizability import History, check
from warpmesh.kv.protocol import KV_CHANNEL
from warpmesh.kv.server import KVServer
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.net.mux import MuxSeam
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.runtime import RaftNode
from warpmesh.raft.storage import InMemoryRaftStorage
from warpmesh.raft.transport import RAFT_CHANNEL, SeamRaftTransport
from warpmesh.sim.harness import SimReport
from warpmesh.sim.loop import run_virtual


class _Replica:
    def __init__(self, nid: str) -> None:
        self.id = nid
        self.storage = InMemoryRaftStorage()
        self.node: RaftNode | None = None
        self.server: KVServer | None = None


async def _start(fabric: MemoryFabric, r: _Replica, ids: list[str], cfg: RaftConfig, seed: int,
                 snapshot_every: int) -> None:
    seam = fabric.join(r.id) if r.id not in fabric.live else fabric.seam(r.id)
    mux = MuxSeam(seam)
    r.node = RaftNode(r.id, SeamRaftTransport(mux.channel(RAFT_CHANNEL)), r.storage, voters=ids,
                      config=cfg, seed=seed)
    await r.node.start()
    r.server = await KVServer(r.node, mux.channel(KV_CHANNEL), snapshot_every=snapshot_every,
                              request_timeout=1.0).start()


async def _stop(fabric: MemoryFabric, r: _Replica) -> None:
    fabric.crash(r.id)
    if r.server is not None:
        await r.server.close()
    if r.node is not None:
        await r.node.close()
    r.node = r.server = None


#: A client's op mix as cumulative bounds: each op is the first whose bound exceeds a uniform draw.
OpMix = tuple[tuple[str, float], ...]
#: The mix of the KV sweep: gets, puts, compare-and-sets and deletes.
KV_MIX: OpMix = (("get", 0.35), ("put", 0.7), ("cas", 0.9), ("del", 1.0))


async def client_load(kv: KVClient, hist: History, crng: random.Random, *, index: int, ops: int,
                      keyspace: list[str], clients: int, mix: OpMix, pause: float) -> None:
    """Client ``index``'s seeded random workload: ``ops`` operations drawn from ``mix`` on random keys of
    ``keyspace``, each recorded in ``hist`` with its virtual call and return times (an error is an op of
    unknown outcome), with an exponential pause of mean ``pause`` seconds after each.

    Written values are ``"{index}-{n}"`` (``"...c"`` for a compare-and-set), unique per client and op, so
    the linearizability check can tell every write apart; a compare-and-set expects nothing or a value
    some client may have written. ``crng`` alone decides the stream, so a seed replays it exactly.
    """
    loop = asyncio.get_running_loop()
    for n in range(ops):
        key = crng.choice(keyspace)
        r = crng.random()
        op = next(name for name, bound in mix if r < bound)
        if op == "get":
            o = hist.invoke(kv.client_id, "get", key, at=loop.time())
            try:
                hist.ok(o, await kv.get(key), at=loop.time())
            except KVError:
                hist.unknown(o)
        elif op == "put":
            v = f"{index}-{n}".encode()
            o = hist.invoke(kv.client_id, "put", key, v, at=loop.time())
            try:
                await kv.put(key, v)
                hist.ok(o, True, at=loop.time())
            except KVError:
                hist.unknown(o)
        elif op == "cas":
            exp = crng.choice([None, f"{crng.randrange(clients)}-{crng.randrange(max(1, n))}".encode()])
            new = f"{index}-{n}c".encode()
            o = hist.invoke(kv.client_id, "cas", key, exp, new, at=loop.time())
            try:
                ok, _ = await kv.cas(key, exp, new)
                hist.ok(o, ok, at=loop.time())
            except KVError:
                hist.unknown(o)
        else:
            o = hist.invoke(kv.client_id, "del", key, at=loop.time())
            try:
                hist.ok(o, await kv.delete(key), at=loop.time())
            except KVError:
                hist.unknown(o)
        await asyncio.sleep(crng.expovariate(1 / pause))


def run_kv(seed: int, *, nodes: int = 3, clients: int = 5, ops: int = 40, keys: int = 3,
           crashes: bool = True, partitions: bool = True) -> SimReport:
    """One seeded run; see the module docstring. Returns a :class:`SimReport`."""
    params: dict[str, Any] = {"runtime": True}
    for name, value, default in (("nodes", nodes, 3), ("clients", clients, 5), ("ops", ops, 40),
                                 ("keys", keys, 3)):
        if value != default:
            params[name] = value
    if not crashes:
        params["no_crashes"] = True
    if not partitions:
        params["no_partitions"] = True
    report = SimReport("raft", seed, params)
    try:
        run_virtual(_run(seed, nodes, clients, ops, keys, crashes, partitions, report))
    except Exception as err:
        import traceback

        report.failures.append(f"exception: {err!r}\n{traceback.format_exc()}")
    return report


async def _run(seed: int, n_nodes: int, n_clients: int, n_ops: int, n_keys: int, crashes: bool,
               partitions: bool, report: SimReport) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    faults = LinkFaults(delay=0.0005, jitter=rng.choice((0.0, 0.002)),
                        drop=rng.choice((0.0, 0.0, 0.02, 0.05)), duplicate=rng.choice((0.0, 0.02)),
                        reorder=rng.choice((0.0, 0.01)))
    fabric = MemoryFabric(seed=rng.getrandbits(32), faults=faults)
    cfg = RaftConfig(election_timeout_min=0.15, election_timeout_max=0.3, heartbeat_interval=0.03,
                     trailing_entries=rng.choice((0, 10, 100)),
                     snapshot_chunk_bytes=rng.choice((512, 65536)), lease_read=rng.random() < 0.3)
    snapshot_every = rng.choice((0, 7, 50))
    ids = [f"n{i + 1}" for i in range(n_nodes)]
    reps = {i: _Replica(i) for i in ids}
    for i in ids:
        await _start(fabric, reps[i], ids, cfg, rng.getrandbits(32), snapshot_every)
    hist = History()
    keyspace = [f"k{i}" for i in range(n_keys)]
    kvs = []
    for c in range(n_clients):
        seam = fabric.join(f"c{c}")
        kvs.append(await KVClient(seam=seam, timeout=6.0, attempt_timeout=0.4, seed=rng.getrandbits(32),
                                  client_id=f"c{c}").connect())
    stop = asyncio.Event()

    async def client(i: int, kv: KVClient) -> None:
        await client_load(kv, hist, random.Random(rng.getrandbits(32)), index=i, ops=n_ops, keyspace=keyspace,
                          clients=n_clients, mix=KV_MIX, pause=0.003)

    async def chaos() -> None:
        down: set[str] = set()
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            r = rng.random()
            if crashes and r < 0.35:
                up = [i for i in ids if i not in down]
                if len(up) > 0:
                    victim = rng.choice(up)
                    await _stop(fabric, reps[victim])
                    down.add(victim)
                    report.metrics["crashes"] = report.metrics.get("crashes", 0) + 1
            elif crashes and r < 0.6 and down:
                back = rng.choice(sorted(down))
                down.discard(back)
                await _start(fabric, reps[back], ids, cfg, rng.getrandbits(32), snapshot_every)
            elif partitions and r < 0.8:
                side = {i for i in ids if rng.random() < 0.5}
                fabric.partition(side, set(ids) - side)
                report.metrics["partitions"] = report.metrics.get("partitions", 0) + 1
            else:
                fabric.heal()
        fabric.heal()
        for i in sorted(down):
            await _start(fabric, reps[i], ids, cfg, rng.getrandbits(32), snapshot_every)

    chaos_task = loop.create_task(chaos())
    await asyncio.gather(*(client(i, kv) for i, kv in enumerate(kvs)))
    stop.set()
    await chaos_task
    fabric.calm()
    # Final reads by every client of every key: a lost acknowledged write shows up here.
    for kv in kvs:
        for key in keyspace:
            o = hist.invoke(kv.client_id, "get", key, at=loop.time())
            try:
                hist.ok(o, await kv.get(key), at=loop.time())
            except KVError as err:
                report.failures.append(f"liveness: final read of {key} by {kv.client_id} failed after "
                                       f"healing: {err}")
                hist.unknown(o)
    res = check(hist)
    report.metrics.update(ops=len(hist.ops), check_steps=res.steps,
                          unknown=sum(1 for o in hist.ops if not o.known),
                          retries=sum(kv.retries for kv in kvs))
    if not res.ok:
        report.failures.append(f"linearizability: {res.detail}")
    # Exactly-once: the replicas agree, and no write was applied twice (the session tables saw to it).
    states = {i: sorted(reps[i].server.kv.data.items()) for i in ids if reps[i].server is not None}  # type: ignore[union-attr]
    await asyncio.sleep(1.0)
    states = {i: sorted(reps[i].server.kv.data.items()) for i in ids if reps[i].server is not None}  # type: ignore[union-attr]
    if len({repr(s) for s in states.values()}) > 1:
        report.failures.append("state-machine safety: replicas differ after quiescence")
    for kv in kvs:
        await kv.close()
    for i in ids:
        with contextlib.suppress(Exception):
            await _stop(fabric, reps[i])
    await fabric.close()
