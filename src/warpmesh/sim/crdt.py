"""CRDT convergence workload: every CRDT type replicated by Quilters over a faulty simulated mesh.

One seed decides everything: link faults, partitions, crashes and restarts, and a stream of random
mutations on random live peers for every type (counters, sets, registers, maps, HyperLogLog). Then
the network is healed and calmed and the run must quiesce with:

* every live replica of a type equal to every other (convergence);
* the converged value between the join of the deltas minted by incarnations that survived
  (nothing acknowledged-by-survival may be lost) and the join of every delta ever minted (nothing
  invented). Without crashes both bounds coincide: the value is exactly the join of all mutations.

A restarted peer comes back empty under a new incarnation, i.e. a new replica id, so it can never
mint a dot it minted before (the reference's lost-task bug).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import blake3

from warpmesh.crdt import (
    GCounter,
    GSet,
    HyperLogLog,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    digest,
    replica_id,
)
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.net.mux import MuxSeam
from warpmesh.quilt import Quilter, QuilterConfig
from warpmesh.sim.harness import SimReport
from warpmesh.sim.loop import run_virtual

Mutation = Callable[[Any, str, random.Random], Any]


def _keys(rng: random.Random) -> str:
    return f"k{rng.randrange(12)}"


@dataclass(frozen=True)
class CrdtKind:
    """One replicated type in the workload: how to make it and how to mutate it randomly."""

    name: str
    tag: int
    make: Callable[[], Any]
    mutate: Mutation


def _orset_mutation(s: ORSet, r: str, rng: random.Random) -> Any:
    e = rng.randrange(15)
    return s.remove(e) if rng.random() < 0.35 else s.add(r, e)


def _ormap_lww_mutation(m: ORMap, r: str, rng: random.Random) -> Any:
    k = _keys(rng)
    if rng.random() < 0.3:
        return m.remove(k)
    v = rng.randrange(1000)
    return m.update(r, k, lambda cur: cur.set(r, v))


def _ormap_counter_mutation(m: ORMap, r: str, rng: random.Random) -> Any:
    k = _keys(rng)
    if rng.random() < 0.2:
        return m.remove(k)
    n = rng.randrange(1, 5)
    return m.update(r, k, lambda cur: cur.inc(r, n))


KINDS: tuple[CrdtKind, ...] = (
    CrdtKind("gcounter", 0x11, GCounter, lambda s, r, rng: s.inc(r, rng.randrange(1, 10))),
    CrdtKind("pncounter", 0x12, PNCounter,
             lambda s, r, rng: s.inc(r, rng.randrange(1, 10)) if rng.random() < 0.6 else s.dec(r, rng.randrange(1, 10))),
    CrdtKind("gset", 0x13, GSet, lambda s, r, rng: s.add(rng.randrange(40))),
    CrdtKind("orset", 0x14, ORSet, _orset_mutation),
    CrdtKind("lww", 0x15, LWWRegister, lambda s, r, rng: s.set(r, rng.randrange(1000))),
    CrdtKind("mvregister", 0x16, MVRegister, lambda s, r, rng: s.write(r, rng.randrange(1000))),
    CrdtKind("ormap", 0x17, lambda: ORMap(LWWRegister), _ormap_lww_mutation),
    CrdtKind("ormap_counters", 0x18, lambda: ORMap(GCounter), _ormap_counter_mutation),
    CrdtKind("hll", 0x19, HyperLogLog, lambda s, r, rng: s.add(f"item-{rng.randrange(3000)}")),
)
KIND_NAMES = tuple(k.name for k in KINDS)


def leq(a: Any, b: Any) -> bool:
    """Lattice order: ``a ⊑ b`` iff ``a ⊔ b == b``."""
    joined = b.copy()
    joined.join(a)
    return joined == b


class _Peer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.incarnation = 0
        self.replica = ""
        self.mux: MuxSeam | None = None
        self.quilters: dict[str, Quilter[Any]] = {}


async def _boot(fabric: MemoryFabric, peer: _Peer, kinds: tuple[CrdtKind, ...], cfg: QuilterConfig,
                rng: random.Random) -> None:
    seam = fabric.join(peer.name)
    peer.incarnation = seam.incarnation
    peer.replica = replica_id(peer.name, seam.incarnation)
    peer.mux = MuxSeam(seam)
    peer.quilters = {}
    for kind in kinds:
        q = Quilter(peer.mux.channel(kind.tag), kind.make(), stream=peer.replica, config=cfg,
                    rng=random.Random(rng.getrandbits(32)))
        peer.quilters[kind.name] = await q.start()


async def _crash(fabric: MemoryFabric, peer: _Peer) -> None:
    fabric.crash(peer.name)  # abrupt: nothing is flushed
    for q in peer.quilters.values():
        await q.close()
    if peer.mux is not None:
        await peer.mux.close()
    peer.quilters = {}


def run_crdt(
    seed: int,
    *,
    peers: int = 5,
    ops: int = 120,
    types: str = "all",
    crashes: bool = True,
    partitions: bool = True,
    max_drop: float = 0.3,
) -> SimReport:
    """One seeded run of the CRDT convergence workload; see the module docstring."""
    params: dict[str, Any] = {"peers": peers, "ops": ops}
    if types != "all":
        params["types"] = types
    if not crashes:
        params["no_crashes"] = True
    if not partitions:
        params["no_partitions"] = True
    if max_drop != 0.3:
        params["max_drop"] = max_drop
    kinds = KINDS if types == "all" else tuple(k for k in KINDS if k.name in types.split(","))
    if not kinds:
        raise ValueError(f"no CRDT type in {types!r}; choose from {', '.join(KIND_NAMES)}")
    report = SimReport("crdt", seed, params)

    async def main() -> None:
        rng = random.Random(seed)
        faults = LinkFaults(
            drop=rng.uniform(0, max_drop), duplicate=rng.uniform(0, 0.2), reorder=rng.uniform(0, 0.3),
            delay=rng.uniform(0.0002, 0.005), jitter=rng.uniform(0, 0.01),
        )
        fabric = MemoryFabric(seed=rng.getrandbits(32), faults=faults)
        cfg = QuilterConfig(anti_entropy_interval=0.5, resend_after=0.2, evict_after=30.0)
        names = [f"p{i}" for i in range(peers)]
        nodes = {n: _Peer(n) for n in names}
        for n in names:
            await _boot(fabric, nodes[n], kinds, cfg, rng)
        # Oracles: every delta ever minted, and those minted by each incarnation.
        all_deltas = {k.name: k.make() for k in kinds}
        by_incarnation: dict[str, dict[str, Any]] = {}
        dead: set[str] = set()
        down: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        crash_events = partition_events = 0
        for _ in range(ops):
            now = loop.time()
            roll = rng.random()
            live = [n for n in names if n not in down]
            if crashes and roll < 0.03 and len(live) > 2:
                victim = rng.choice(live)
                dead.add(nodes[victim].replica)
                await _crash(fabric, nodes[victim])
                down[victim] = now + rng.uniform(0.5, 5.0)
                crash_events += 1
            elif partitions and roll < 0.06:
                side = set(rng.sample(names, rng.randrange(1, peers)))
                fabric.partition(side, set(names) - side, one_way=rng.random() < 0.3)
                partition_events += 1
            elif partitions and roll < 0.09:
                fabric.heal()
            for n, t in sorted(down.items()):
                if now >= t:
                    del down[n]
                    await _boot(fabric, nodes[n], kinds, cfg, rng)
            live = [n for n in names if n not in down]
            peer = nodes[rng.choice(live)]
            kind = rng.choice(kinds)
            delta = peer.quilters[kind.name].mutate(lambda s, kind=kind, r=peer.replica: kind.mutate(s, r, rng))  # type: ignore[misc]
            all_deltas[kind.name].join(delta)
            mine = by_incarnation.setdefault(peer.replica, {k.name: k.make() for k in kinds})
            mine[kind.name].join(delta)
            await asyncio.sleep(rng.expovariate(1 / 0.03))
        for n in sorted(down):
            await _boot(fabric, nodes[n], kinds, cfg, rng)
        fabric.calm()
        settle_start = loop.time()
        deadline = settle_start + 120.0

        def converged() -> bool:
            for kind in kinds:
                states = [nodes[n].quilters[kind.name].state for n in names]
                if any(s != states[0] for s in states[1:]):
                    return False
            return True

        while not converged() and loop.time() < deadline:
            await asyncio.sleep(0.25)
        report.metrics.update(
            settle_seconds=round(loop.time() - settle_start, 3),
            virtual_seconds=round(loop.time(), 3),
            crashes=crash_events,
            partitions=partition_events,
            frames_sent=fabric.stats["sent"],
            frames_dropped=fabric.stats["dropped_random"] + fabric.stats["dropped_partition"],
            bytes_sent=fabric.bytes_sent,
            full_states=sum(q.core.stats["states_out"] for p in nodes.values() for q in p.quilters.values()),
        )
        trace = blake3.blake3()
        for kind in kinds:
            states = {n: nodes[n].quilters[kind.name].state for n in names}
            first = states[names[0]]
            differing = [n for n in names if states[n] != first]
            if differing:
                report.failures.append(
                    f"{kind.name}: replicas did not converge within 120 virtual seconds "
                    f"({', '.join(differing)} differ from {names[0]})"
                )
                continue
            survivors = kind.make()
            for replica, deltas in sorted(by_incarnation.items()):
                if replica not in dead:
                    survivors.join(deltas[kind.name])
            if not leq(survivors, first):
                report.failures.append(f"{kind.name}: converged value lost mutations of live replicas")
            if not leq(first, all_deltas[kind.name]):
                report.failures.append(f"{kind.name}: converged value holds something nobody minted")
            if not dead and first != all_deltas[kind.name]:
                report.failures.append(f"{kind.name}: converged value differs from the join of all mutations")
            trace.update(digest(first))
        trace.update(repr(sorted(fabric.stats.items())).encode())
        report.trace = trace.hexdigest()[:16]
        for p in nodes.values():
            for q in p.quilters.values():
                await q.close()
            if p.mux is not None:
                await p.mux.close()
        await fabric.close()

    try:
        run_virtual(main())
    except Exception as err:  # a crash inside the run is this seed's failure, with its replay command
        report.failures.append(f"exception: {type(err).__name__}: {err}")
    return report
