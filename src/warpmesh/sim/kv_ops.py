"""KV cluster operations under simulation: grow, shrink, replace and leadership transfer.

The production runtime (RaftNode, KVServer with its operator requests, KVClient) runs on a
:class:`~warpmesh.sim.loop.VirtualTimeLoop` over a seeded faulty :class:`MemoryFabric` (drops,
duplicates, reordering), with a node crashed and restarted *during* the membership change. Clients
write and read throughout; at the end every client reads every key, the history must be
linearizable (so no acknowledged write was lost), the final configuration must be the one the
scenario asked for, and the final members must hold the same state.

* ``grow``: 3 voters -> 5 (two nodes join with ``join``, as ``kv serve --join`` does).
* ``shrink``: 5 -> 3 (``member remove``; the leader may be one of those removed).
* ``replace``: a voter is crashed for good, removed, and a new node joins in its place.
* ``transfer``: leadership is moved to a chosen voter and the old leader is stopped.

Replay one seed: ``warpmesh sim raft --runtime --scenario grow --seed N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from warpmesh.kv.client import KVClient, KVError
from warpmesh.kv.linearizability import History, check
from warpmesh.kv.protocol import KV_CHANNEL
from warpmesh.kv.server import AdminRefused, KVServer
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.net.mux import MuxSeam
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.runtime import RaftNode
from warpmesh.raft.transport import RAFT_CHANNEL, SeamRaftTransport
from warpmesh.sim.harness import SimReport
from warpmesh.sim.kv import OpMix, _Replica, _stop, client_load
from warpmesh.sim.loop import run_virtual

SCENARIOS = ("grow", "shrink", "replace", "transfer")
#: The op mix of the scenarios' clients: reads, writes and compare-and-sets.
_MIX: OpMix = (("get", 0.4), ("put", 0.85), ("cas", 1.0))


def run_kv_ops(seed: int, scenario: str, *, clients: int = 5, ops: int = 40, keys: int = 3,
               faults: bool = True) -> SimReport:
    """One seeded run of ``scenario``; see the module docstring."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}")
    params: dict[str, Any] = {"runtime": True, "scenario": scenario}
    for name, value, default in (("clients", clients, 5), ("ops", ops, 40), ("keys", keys, 3)):
        if value != default:
            params[name] = value
    if not faults:
        params["no_crashes"] = True
    report = SimReport("raft", seed, params)
    try:
        run_virtual(_Run(seed, scenario, clients, ops, keys, faults, report).main())
    except Exception as err:
        import traceback

        report.failures.append(f"exception: {err!r}\n{traceback.format_exc()}")
    return report


class _Run:
    def __init__(self, seed: int, scenario: str, clients: int, ops: int, keys: int, faults: bool,
                 report: SimReport) -> None:
        self.rng = random.Random(seed)
        self.scenario = scenario
        self.n_clients, self.n_ops, self.n_keys = clients, ops, keys
        self.faults = faults
        self.report = report
        rng = self.rng
        lf = LinkFaults(delay=0.0005, jitter=rng.choice((0.0, 0.002)),
                        drop=rng.choice((0.0, 0.02, 0.05)) if faults else 0.0,
                        duplicate=rng.choice((0.0, 0.02)) if faults else 0.0,
                        reorder=rng.choice((0.0, 0.01)) if faults else 0.0)
        self.fabric = MemoryFabric(seed=rng.getrandbits(32), faults=lf)
        self.cfg = RaftConfig(election_timeout_min=0.15, election_timeout_max=0.3, heartbeat_interval=0.03,
                              trailing_entries=rng.choice((0, 10, 100)), catchup_timeout=3.0,
                              snapshot_chunk_bytes=rng.choice((512, 65536)))
        self.snapshot_every = rng.choice((0, 7, 50))
        self.reps: dict[str, _Replica] = {}
        self.hist = History()

    async def start(self, nid: str, voters: list[str]) -> None:
        r = self.reps.setdefault(nid, _Replica(nid))
        fabric = self.fabric
        seam = fabric.join(nid) if nid not in fabric.live else fabric.seam(nid)
        mux = MuxSeam(seam)
        r.node = RaftNode(nid, SeamRaftTransport(mux.channel(RAFT_CHANNEL)), r.storage, voters=voters,
                          config=self.cfg, seed=self.rng.getrandbits(32))
        await r.node.start()
        r.server = await KVServer(r.node, mux.channel(KV_CHANNEL), snapshot_every=self.snapshot_every,
                                  request_timeout=1.0).start()

    async def join(self, nid: str) -> None:
        """``kv serve --join``: start with no configuration and ask the cluster to add us."""
        await self.start(nid, [])
        server = self.reps[nid].server
        assert server is not None
        await server.ask("join", nid, f"sim:{nid}", {"token": f"tok-{nid}"}, timeout=30.0)

    async def crash(self, nid: str) -> None:
        await _stop(self.fabric, self.reps[nid])

    async def load(self, i: int, kv: KVClient, keyspace: list[str]) -> None:
        await client_load(kv, self.hist, random.Random(self.rng.getrandbits(32)), index=i, ops=self.n_ops,
                          keyspace=keyspace, clients=self.n_clients, mix=_MIX, pause=0.02)

    async def wait_members(self, admin: KVClient, voters: set[str], learners: set[str] | frozenset[str] = frozenset(),
                           timeout: float = 30.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: dict[str, Any] = {}
        while loop.time() < deadline:
            with contextlib.suppress(KVError):
                last = await admin.member_list()
                got_v = {m["id"] for m in last["members"] if m["role"] == "voter"}
                got_l = {m["id"] for m in last["members"] if m["role"] == "learner"}
                if got_v == voters and got_l == set(learners):
                    return last
            await asyncio.sleep(0.2)
        raise AssertionError(f"configuration did not reach voters={sorted(voters)} within {timeout}s; "
                             f"last member list: {last}")

    async def admin_retry(self, call: Any, *args: Any, timeout: float = 20.0) -> Any:
        """An operator retries a refused change (e.g. "another change in flight", or a quorum
        refusal while a crashed node restarts) until it is accepted."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await call(*args)
            except KVError:
                if loop.time() >= deadline:
                    raise
                await asyncio.sleep(0.3)

    async def main(self) -> None:
        rng, loop, sc = self.rng, asyncio.get_running_loop(), self.scenario
        n0 = 5 if sc == "shrink" else 3
        ids = [f"n{i + 1}" for i in range(n0)]
        for nid in ids:
            await self.start(nid, ids)
        keyspace = [f"k{i}" for i in range(self.n_keys)]
        kvs = []
        for c in range(self.n_clients):
            kvs.append(await KVClient(seam=self.fabric.join(f"c{c}"), timeout=8.0, attempt_timeout=0.4,
                                      seed=rng.getrandbits(32), client_id=f"c{c}").connect())
        admin = await KVClient(seam=self.fabric.join("admin"), timeout=15.0, attempt_timeout=0.5,
                               seed=rng.getrandbits(32), client_id="admin").connect()
        admin.admin_attempt_timeout = 3.0
        load = [loop.create_task(self.load(i, kv, keyspace)) for i, kv in enumerate(kvs)]
        await asyncio.sleep(rng.uniform(0.2, 0.6))
        want_v: set[str] = set(ids)
        gone: set[str] = set()

        async def bystander_crash(spare: set[str]) -> None:
            # A crash during the membership change: one node that stays a voter, down for a while.
            if not self.faults or rng.random() < 0.3:
                return
            victim = rng.choice(sorted(spare))
            await asyncio.sleep(rng.uniform(0.0, 0.4))
            await self.crash(victim)
            self.report.metrics["crashes"] = self.report.metrics.get("crashes", 0) + 1
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            await self.start(victim, ids)

        if sc == "grow":
            crash = loop.create_task(bystander_crash(set(ids)))
            await self.join("n4")
            await self.join("n5")
            await crash
            want_v = set(ids) | {"n4", "n5"}
        elif sc == "shrink":
            victims = rng.sample(ids, 2)
            crash = loop.create_task(bystander_crash(set(ids) - set(victims)))
            for v in victims:
                await self.admin_retry(admin.member_remove, v)
            await crash
            want_v = set(ids) - set(victims)
            gone = set(victims)
        elif sc == "replace":
            dead = rng.choice(ids)
            await self.crash(dead)
            await asyncio.sleep(rng.uniform(0.1, 0.8))
            await self.admin_retry(admin.member_remove, dead)
            await self.join("n4")
            want_v = (set(ids) - {dead}) | {"n4"}
            gone = {dead}
        else:  # transfer
            before = (await self.admin_retry(admin.member_list))["leader"]
            target = rng.choice(sorted(set(ids) - {before}))
            r = await self.admin_retry(admin.transfer_leader, target)
            if r["leader"] != target:
                self.report.failures.append(f"transfer: asked for {target}, got {r}")
            await self.crash(before)
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            await self.start(before, ids)
        await self.wait_members(admin, want_v)
        await asyncio.gather(*load)
        for nid in sorted(gone):
            rep = self.reps[nid]
            if rep.server is not None:
                # A removed node that stayed up learns it (and `kv serve` would exit 1).
                assert rep.server.removed is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(rep.server.removed), 5.0)
                if not rep.server.removed.done():
                    self.report.failures.append(f"removal: {nid} was removed but never noticed")
                await self.crash(nid)
        self.fabric.calm()
        # Final reads of every key by every client: a lost acknowledged write shows up here.
        for kv in kvs:
            for key in keyspace:
                o = self.hist.invoke(kv.client_id, "get", key, at=loop.time())
                try:
                    self.hist.ok(o, await kv.get(key), at=loop.time())
                except KVError as err:
                    self.report.failures.append(f"liveness: final read of {key} failed: {err}")
                    self.hist.unknown(o)
        res = check(self.hist)
        self.report.metrics.update(ops=len(self.hist.ops), check_steps=res.steps,
                                   unknown=sum(1 for o in self.hist.ops if not o.known))
        if not res.ok:
            self.report.failures.append(f"linearizability: {res.detail}")
        await asyncio.sleep(1.0)
        states = {n: sorted(self.reps[n].server.kv.data.items())  # type: ignore[union-attr]
                  for n in sorted(want_v) if self.reps[n].server is not None}
        if len({repr(s) for s in states.values()}) > 1:
            self.report.failures.append("state-machine safety: final members differ after quiescence")
        if len(states) != len(want_v):
            self.report.failures.append(f"liveness: members down at the end: {sorted(want_v - set(states))}")
        for kv in [*kvs, admin]:
            await kv.close()
        for nid in list(self.reps):
            with contextlib.suppress(Exception):
                await self.crash(nid)
        await self.fabric.close()


__all__ = ["SCENARIOS", "AdminRefused", "run_kv_ops"]
