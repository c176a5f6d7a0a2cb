"""Replicated worlds under simulation: the production ``World`` + ``RaftNode`` on a virtual clock over
a seeded faulty :class:`MemoryFabric` (loss, duplicates, reordering), with crashes and restarts.

Peers run the engine with different worker counts (1 or 4). One peer (``p1`` ... chosen by the seed)
corrupts one tick locally when ``diverge`` is on. Invariants checked:

* agreement: at every committed tick, every peer's commit hash equals every other's - except the
  injected peer's hashes from its corrupted tick until its repair;
* detection: each injected divergence is declared by the agreement *at the tick it was injected*, on
  every replica that saw the verdict, and the diverged peer is then repaired;
* convergence: at the end every peer reports the same commit hash for the last tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from typing import Any

from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.net.mux import MuxSeam
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.runtime import RaftNode
from warpmesh.raft.storage import InMemoryRaftStorage
from warpmesh.raft.transport import SeamRaftTransport
from warpmesh.sim.harness import SimReport
from warpmesh.sim.loop import run_virtual
from warpmesh.world.rules import push, spawn
from warpmesh.world.runtime import WORLD_FETCH_CHANNEL, WORLD_RAFT_CHANNEL, World

__all__ = ["run_world"]

ENTITIES = 6


class _Peer:
    def __init__(self, pid: str, workers: int) -> None:
        self.id = pid
        self.workers = workers
        self.storage = InMemoryRaftStorage()
        self.node: RaftNode | None = None
        self.world: World | None = None
        self.tasks: list[asyncio.Task[Any]] = []


def agreement_bytes(payload: bytes) -> int:
    """Bytes of hash agreement in one payload on the world's Raft channel: REPORTS/RESTORED entries
    in AppendEntries and Forward frames (each entry's own encoding; the frame's shared header is not
    counted). Used by bench/world.py to measure agreement traffic."""
    from warpmesh.raft.messages import AppendEntries, Forward, decode
    from warpmesh.wire.frame import pack

    if not payload or payload[0] != WORLD_RAFT_CHANNEL:
        return 0
    try:
        msg = decode(payload[1:], "a", "b")
    except Exception:
        return 0
    total = 0
    if isinstance(msg, AppendEntries):
        for e in msg.entries:
            if e.data[:2] in (b"\x93\x05", b"\x93\x04"):  # msgpack [5|4, ...]: REPORTS / RESTORED
                total += len(pack(list(e[1:]))) + 2
    elif isinstance(msg, Forward):
        for item in msg.items:
            if item[0][:2] in (b"\x93\x05", b"\x93\x04"):
                total += len(pack(list(item))) + 2
    return total


def run_world(seed: int, *, peers: int = 3, ticks: int = 30, crashes: bool = True, diverge: bool = True,
              lossy: bool = True, entities: int = ENTITIES, measure: bool = False) -> SimReport:
    """One seeded run; see the module docstring."""
    params: dict[str, Any] = {}
    for name, value, default in (("peers", peers, 3), ("ticks", ticks, 30), ("entities", entities, ENTITIES)):
        if value != default:
            params[name] = value
    for name, value in (("no_crashes", not crashes), ("no_diverge", not diverge), ("no_loss", not lossy)):
        if value:
            params[name] = True
    report = SimReport("world", seed, params)
    try:
        run_virtual(_run(seed, peers, ticks, crashes, diverge, lossy, report, entities, measure))
    except Exception as err:
        import traceback

        report.failures.append(f"exception: {err!r}\n{traceback.format_exc()}")
    return report


async def _run(seed: int, n: int, ticks: int, crashes: bool, diverge: bool, lossy: bool,
               report: SimReport, n_entities: int = ENTITIES, measure: bool = False) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    faults = LinkFaults(delay=0.0005, jitter=rng.choice((0.0, 0.002)))
    if lossy:
        faults = LinkFaults(delay=0.0005, jitter=rng.choice((0.0, 0.002)), drop=rng.choice((0.0, 0.02, 0.05)),
                            duplicate=rng.choice((0.0, 0.02)), reorder=rng.choice((0.0, 0.01)))
    agreed_bytes = [0]

    def classify(payload: bytes) -> str:
        n = agreement_bytes(payload)
        agreed_bytes[0] += n
        return "agreement" if n else "other"

    fabric = MemoryFabric(seed=rng.getrandbits(32), faults=faults, classify=classify if measure else None)
    cfg = RaftConfig(election_timeout_min=0.15, election_timeout_max=0.3, heartbeat_interval=0.03,
                     trailing_entries=rng.choice((0, 20, 200)))
    snapshot_every = rng.choice((4, 8, 16))
    interval = rng.choice((0.01, 0.05))  # spreads the ticks over enough virtual time for crashes
    ids = [f"p{i + 1}" for i in range(n)]
    peers = {pid: _Peer(pid, rng.choice((1, 4))) for pid in ids}
    bad = rng.choice(ids) if diverge else None
    bad_tick = rng.randrange(3, max(4, ticks - 8)) if diverge else None
    hashes: dict[str, dict[int, list[bytes]]] = {pid: {} for pid in ids}
    events: list[tuple[str, dict[str, Any]]] = []
    stop = asyncio.Event()

    async def start(p: _Peer, first: bool) -> None:
        seam = fabric.join(p.id) if p.id not in fabric.live else fabric.seam(p.id)
        mux = MuxSeam(seam)
        p.node = RaftNode(p.id, SeamRaftTransport(mux.channel(WORLD_RAFT_CHANNEL)), p.storage, voters=ids,
                          config=cfg, seed=rng.getrandbits(32))
        await p.node.start()
        corrupt = [bad_tick] if first and p.id == bad and bad_tick is not None else []

        def on_tick(t: int, snap: Any, pid: str = p.id) -> None:
            hashes[pid].setdefault(t, []).append(snap.hash)

        def on_event(ev: dict[str, Any], pid: str = p.id) -> None:
            events.append((pid, ev))

        p.world = await World(p.node, mux.channel(WORLD_FETCH_CHANNEL), ids, workers=p.workers,
                              snapshot_every=snapshot_every, corrupt_at=corrupt, on_tick=on_tick,
                              on_event=on_event).start()
        p.tasks = [loop.create_task(p.world.run_ticker(None, grace=0.05, interval=interval)),
                   loop.create_task(workload(p, random.Random(rng.getrandbits(32))))]

    async def halt(p: _Peer) -> None:
        fabric.crash(p.id)
        await cancel_and_wait(p.tasks)
        if p.world is not None:
            await p.world.close()
        if p.node is not None:
            await p.node.close()
        p.world = p.node = None

    async def workload(p: _Peer, prng: random.Random) -> None:
        if p.id == ids[0]:
            with contextlib.suppress(Exception):
                await p.world.submit([spawn(f"e{i}", (i, 0, 0), (0, 1, 0)) for i in range(n_entities)])  # type: ignore[union-attr]
        seen = 0
        while not stop.is_set() and p.world is not None:
            with contextlib.suppress(TimeoutError):
                await p.world.tick.wait_for(lambda v, s=seen: v > s, 1.0)  # type: ignore[misc]
            seen = p.world.tick.value
            batch = [push(f"e{prng.randrange(n_entities)}", (prng.randrange(-2, 3), prng.randrange(-2, 3), 0))
                     for _ in range(prng.randrange(0, 4))]
            if batch:
                with contextlib.suppress(Exception):
                    await p.world.submit(batch, timeout=1.0)

    async def chaos() -> None:
        down: str | None = None
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            if down is None and rng.random() < 0.5:
                victim = rng.choice([i for i in ids if i != bad])
                await halt(peers[victim])
                down = victim
                report.metrics["crashes"] = report.metrics.get("crashes", 0) + 1
            elif down is not None:
                await start(peers[down], False)
                down = None
        if down is not None:
            await start(peers[down], False)

    for pid in ids:
        await start(peers[pid], True)
    chaos_task = loop.create_task(chaos()) if crashes else None
    deadline = loop.time() + 60 + ticks
    while loop.time() < deadline:
        # Ticks go on past the target until every repair is proven (a repair is proven by a later tick).
        if all(p.world is not None and p.world.tick.value >= ticks and p.world.replica.status == "ok"
               and getattr(p.world.replica.agreement.peers.get(bad or ""), "status", "ok") == "ok"
               for p in peers.values()):
            break
        await asyncio.sleep(0.1)
    stop.set()
    if chaos_task is not None:
        await chaos_task
    fabric.calm()
    for p in peers.values():
        p.tasks[0].cancel()  # the tickers: the world stops at its newest tick
    await asyncio.sleep(0.5)
    final = max(p.world.tick.value for p in peers.values() if p.world is not None)
    # Let every live peer reach the last tick and its reports land.
    end = loop.time() + 20
    while loop.time() < end and not all(p.world is not None and p.world.tick.value >= final
                                        and p.world.replica.agreement.decided(final) is not None
                                        for p in peers.values()):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    if measure:
        report.metrics["agreement_bytes"] = agreed_bytes[0]
        report.metrics["wire_bytes"] = fabric.bytes_sent
    report.metrics["fetched_bytes"] = sum(p.world.stats["fetched_bytes"] for p in peers.values()
                                          if p.world is not None)
    _check(report, ids, peers, hashes, events, bad, bad_tick, final)
    for p in peers.values():
        with contextlib.suppress(Exception):
            await halt(p)
    await fabric.close()


def _check(report: SimReport, ids: list[str], peers: dict[str, _Peer], hashes: dict[str, dict[int, list[bytes]]],
           events: list[tuple[str, dict[str, Any]]], bad: str | None, bad_tick: int | None, ticks: int) -> None:
    f = report.failures
    repaired_at = next((ev["tick"] for pid, ev in events if ev["event"] == "repaired" and ev["peer"] == bad), None)
    for t in range(1, ticks + 1):
        good = {h for pid in ids if pid != bad for h in hashes[pid].get(t, [])}
        if len(good) > 1:
            f.append(f"agreement: healthy peers computed {len(good)} different commit hashes for tick {t}")
        if bad is not None and bad_tick is not None and t < bad_tick and set(hashes[bad].get(t, [])) - good:
            f.append(f"agreement: {bad} differs at tick {t}, before any injection")
    if bad is not None:
        det = [ev for pid, ev in events if ev["event"] == "diverged" and ev["peer"] == bad]
        if not det:
            f.append(f"detection: divergence injected into {bad} at tick {bad_tick} was never declared")
        elif any(ev["tick"] != bad_tick for ev in det):
            f.append(f"detection: declared at tick(s) {sorted({ev['tick'] for ev in det})}, injected at {bad_tick}")
        if repaired_at is None:
            f.append(f"repair: {bad} never repaired after its divergence at tick {bad_tick}")
        wrong = [ev for pid, ev in events if ev["event"] == "diverged" and ev["peer"] != bad]
        if wrong:
            f.append(f"detection: healthy peers declared diverged: {wrong[:3]}")
        detected = {p.world.replica.agreement.detected for p in peers.values() if p.world is not None}
        report.metrics["detected"] = sorted(detected)
    # A peer may have reached the end by installing a snapshot (no on_tick then): ask its engine.
    last = {pid: p.world.replica.engine.last_snapshot.hash for pid, p in peers.items()  # type: ignore[union-attr]
            if p.world is not None and p.world.tick.value == ticks and p.world.replica.engine.last_snapshot}
    if len(last) < len(ids):
        f.append(f"liveness: only {sorted(last)} reached tick {ticks}")
    if len(set(last.values())) > 1:
        f.append(f"convergence: peers end with different commit hashes at tick {ticks}")
    report.metrics.update(ticks=ticks, injected=(bad, bad_tick), repaired_at=repaired_at,
                          workers={pid: peers[pid].workers for pid in ids})
    h = hashlib.blake2b(digest_size=16)
    for pid in ids:
        for t in sorted(hashes[pid]):
            h.update(hashes[pid][t][-1])
    report.trace = h.hexdigest()
