"""Warp scheduling workload: a mesh of WarpNodes shares jobs through churn, under one seed.

Phases:

1. **steady** - the mesh forms and settles; the first third of the jobs is enqueued from random
   peers. Membership does not change, so every job must run exactly once (zero duplicates).
2. **churn** - the rest is enqueued while peers join, leave gracefully, crash, restart, and the
   network partitions and heals, over seeded lossy links.
3. **quiesce** - everything heals; every live peer's results board must hold exactly one correct
   answer per job, and every queue must be empty.

Invariants: zero lost jobs, zero wrong answers, zero duplicates in the steady phase. The duplicate
rate under churn, ``(executions - distinct tasks) / executions``, is reported, not bounded: it is the
price of leaderlessness the results board absorbs.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import blake3

from warpmesh.liveness import HeartbeatConfig
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.quilt import QuilterConfig
from warpmesh.sim.harness import SimReport
from warpmesh.sim.loop import run_virtual
from warpmesh.warp import ClaimStrategy, NotReplicated, OpRegistry, WarpConfig, WarpNode
from warpmesh.warp.core import decode_result
from warpmesh.warp.route import cell_for

SIM_CONFIG = WarpConfig(
    # Virtual time is free: a wider coalescing window means fewer frames to simulate.
    coalesce_delay=0.01,
    counter_flush=0.2,  # counters are not checked here; fewer counter frames to simulate
    counter_flush_busy=0.2,  # the same busy or idle: the simulated peers' jobs are trivial
    settle_window=0.2,
    reclaim_interval=0.5,
    replicate_timeout=1.0,
    heartbeat=HeartbeatConfig(interval=0.5, timeout=2.0, lost_after=10.0),  # probing (the default)
    quilter=QuilterConfig(anti_entropy_interval=1.0, resend_after=0.25, evict_after=20.0),
)
#: Frames fall due on a 0.25 ms grid (links delay 0.5-3 ms plus jitter): at 64 peers this turns about
#: 1.2 million loop steps of one delivery each into a few hundred thousand.
FABRIC_QUANTUM = 0.00025

_BOARDS = {0x01: "queue", 0x02: "results", 0x03: "intents", 0x04: "counters", 0x05: "members"}
_QUILT_KINDS = {1: "delta", 2: "ack", 3: "resend_request", 4: "digest", 5: "full_state", 6: "frontier", 7: "summary",
                8: "difference"}
_STEAL_TAG, _ROUTE_TAG, _HEARTBEAT_TAG = 0x06, 0x08, 0x10


def traffic_kind(data: bytes) -> str:
    """Name what a mux payload on a Warp mesh is, as ``board.kind`` (e.g. ``results.full_state``).

    The first byte is the mux tag; a Quilter frame's second byte after it is its kind (the first is the
    protocol version). Steal frames are ``warp.control``, heartbeats ``liveness.heartbeat``.
    """
    tag = data[0] if data else -1
    board = _BOARDS.get(tag)
    if board is not None:
        kind = _QUILT_KINDS.get(data[2], "other") if len(data) > 2 else "other"
        return f"{board}.{kind}"
    if tag == _STEAL_TAG:
        return "warp.control"
    if tag == _ROUTE_TAG:
        return "warp.route"
    if tag == _HEARTBEAT_TAG:
        return "liveness.heartbeat"
    return "other"


def bytes_by_kind(fine: Counter[str]) -> dict[str, int]:
    """Fold ``board.kind`` byte counts into the kinds the scale work reasons about."""
    out: Counter[str] = Counter()
    for key, n in fine.items():
        out[key.rpartition(".")[2]] += n
    return dict(sorted(out.items()))


def job_answer(x: int) -> int:
    """The known function every job computes (so every answer can be checked)."""
    return (x * x + 7) % 1_000_003


@dataclass
class _Exec:
    peer: str
    task: str
    phase: str
    at: float = 0.0


class _Mesh:
    def __init__(self, fabric: MemoryFabric, cfg: WarpConfig, log: list[_Exec], cells: int = 0) -> None:
        self.fabric = fabric
        self.cfg = cfg
        #: With cells: peer ``p<i>`` is of cell ``c<i mod cells>`` (a restart keeps its cell).
        self.cells = cells
        self._cell_names = tuple(f"c{i}" for i in range(cells))
        self.log = log
        self.phase = "steady"
        self.nodes: dict[str, WarpNode] = {}
        self.events: list[tuple[float, str, str]] = []
        #: With ``ack_answers``: every answer the client has read (task -> it was correct).
        self.ack_answers = False
        self.seen: dict[str, bool] = {}
        self.acked = 0

    async def acker(self, every: float = 0.25) -> None:
        """The client of ``--ack-answers``: read every answer as it lands, check it, acknowledge it.

        An answer is acknowledged (removed from the board) once no live peer still queues its task,
        so it can never be run again for want of an answer; boards then hold only answers in flight.
        """
        loop = asyncio.get_running_loop()
        acked_at: dict[str, float] = {}  # one ack per answer (again only if it is still around later)
        # Answer bytes already checked, per task: each copy is checked once, not on every round
        # (a copy is the same bytes on every peer; a duplicate run's answer is other bytes).
        checked: dict[str, set[bytes]] = {}
        while True:
            await asyncio.sleep(every)
            now = loop.time()
            nodes = [self.nodes[n] for n in sorted(self.nodes)]
            holder: dict[str, WarpNode] = {}  # task -> the first peer (by name) that holds an answer
            for node in nodes:
                board = node.results_board.state
                for task in sorted(board.keys()):
                    reg = board.get(task)
                    raw = reg.value if reg is not None and isinstance(reg.value, bytes) else None
                    if raw is None:
                        continue
                    done = checked.setdefault(task, set())
                    if raw not in done:
                        res = node.results.get(task)
                        if res is None:
                            continue
                        done.add(raw)
                        x = int(task.rpartition("-")[2])
                        ok = res.ok and res.value == job_answer(x)
                        self.seen[task] = self.seen.get(task, True) and ok
                    holder.setdefault(task, node)
            # Acks in the order the peers were read (as one pass per peer would make them); whether
            # any live peer still queues the task is asked once per task, not once per holder.
            for task, node in holder.items():
                if now - acked_at.get(task, float("-inf")) >= 5.0 and all(
                        task not in other.queue.state for other in nodes):
                    acked_at[task] = now
                    node.ack(task)
                    self.acked += 1

    def cell_of(self, peer: str) -> str | None:
        return f"c{int(peer[1:]) % self.cells}" if self.cells else None

    def task_cell(self, task: str) -> str | None:
        """The cell that queues ``task`` (what every peer's router computes)."""
        return cell_for(task, self._cell_names) if self.cells else None

    def cell_nodes(self) -> dict[str | None, list[WarpNode]]:
        """The live nodes of each cell, in name order."""
        out: dict[str | None, list[WarpNode]] = {}
        for name in sorted(self.nodes):
            out.setdefault(self.cell_of(name), []).append(self.nodes[name])
        return out

    def registry(self, peer: str) -> OpRegistry:
        reg = OpRegistry()

        def compute(x: int) -> int:
            self.log.append(_Exec(peer, f"job-{x}", self.phase, asyncio.get_running_loop().time()))
            return job_answer(x)

        reg.register("sim.compute", compute, mode="inline")
        return reg

    async def up(self, name: str) -> WarpNode:
        cfg = self.cfg if not self.cells else replace(self.cfg, cell=self.cell_of(name), cells=self._cell_names)
        node = WarpNode(self.fabric.join(name), registry=self.registry(name), config=cfg)
        self.nodes[name] = await node.start()
        return node

    async def crash(self, name: str) -> None:
        self.events.append((asyncio.get_running_loop().time(), "crash", name))
        node = self.nodes.pop(name)
        self.fabric.crash(name)
        await node.close()

    async def leave(self, name: str) -> None:
        self.events.append((asyncio.get_running_loop().time(), "leave", name))
        node = self.nodes.pop(name)
        await node.close()
        await self.fabric.seam(name).close()


def run_warp(
    seed: int,
    *,
    peers: int = 8,
    jobs: int = 1000,
    churn: bool = True,
    strategy: str = "intent",
    ack_answers: bool = False,
    cell_size: int | None = None,
    on_progress: Callable[[int, int, str, float], None] | None = None,
) -> SimReport:
    """One seeded run of the Warp workload; see the module docstring.

    ``on_progress(enqueued, jobs, phase, virtual_seconds)`` is called as the run moves on (after the
    steady phase, every 1% of the churn phase's jobs, at quiescence); it must not touch the mesh.
    """
    params: dict[str, Any] = {"peers": peers, "jobs": jobs}
    if not churn:
        params["no_churn"] = True
    if strategy != "intent":
        params["strategy"] = strategy
    if ack_answers:
        params["ack_answers"] = True
    cells = -(-peers // cell_size) if cell_size and cell_size < peers else 0
    if cells:
        params["cell_size"] = cell_size
    report = SimReport("warp", seed, params)
    log: list[_Exec] = []

    async def main() -> None:
        rng = random.Random(seed)
        faults = LinkFaults(drop=rng.uniform(0, 0.05), duplicate=rng.uniform(0, 0.05),
                            reorder=rng.uniform(0, 0.1), delay=rng.uniform(0.0005, 0.003),
                            jitter=rng.uniform(0, 0.003))
        frames: Counter[str] = Counter()

        def classify(data: bytes) -> str:
            kind = traffic_kind(data)
            frames[kind] += 1
            return kind

        fabric = MemoryFabric(seed=rng.getrandbits(32), faults=faults, classify=classify,
                              quantum=FABRIC_QUANTUM)
        cfg = replace(SIM_CONFIG, strategy=ClaimStrategy(strategy))
        mesh = _Mesh(fabric, cfg, log, cells)
        mesh.ack_answers = ack_answers
        loop = asyncio.get_running_loop()
        names = [f"p{i}" for i in range(peers)]
        for n in names:
            await mesh.up(n)

        async def settled(timeout: float) -> bool:
            deadline = loop.time() + timeout
            while loop.time() < deadline:
                live = set(mesh.nodes)
                if all(node.workers == {n for n in live if mesh.cell_of(n) == mesh.cell_of(name)}
                       and not node._contested() for name, node in mesh.nodes.items()):
                    return True
                await asyncio.sleep(0.1)
            return False

        if not await settled(30.0):
            report.failures.append("the initial mesh never settled")
            return
        acker = loop.create_task(mesh.acker()) if ack_answers else None
        order = list(range(1, jobs + 1))
        steady_jobs = order[: jobs // 3]
        churn_jobs = order[jobs // 3:]

        # Phase 1: steady membership.
        for x in steady_jobs:
            # Burst-enqueue most jobs; await replication now and then (an acknowledged enqueue).
            node = rng.choice(list(mesh.nodes.values()))
            if rng.random() < 0.1:
                await node.enqueue(f"job-{x}", "sim.compute", x)
            else:
                node.enqueue_nowait(f"job-{x}", "sim.compute", x)
        await _all_answered(mesh, [f"job-{x}" for x in steady_jobs], 60.0)
        if on_progress is not None:
            on_progress(len(steady_jobs), jobs, "steady", loop.time())
        step = max(1, len(churn_jobs) // 100)
        steady_runs = Counter(e.task for e in log if e.phase == "steady")
        steady_dups = sum(n - 1 for n in steady_runs.values())

        # Phase 2: churn.
        mesh.phase = "churn"
        down: dict[str, float] = {}
        heal_at: float | None = None
        next_id = peers
        events: Counter[str] = Counter()
        for i, x in enumerate(churn_jobs):
            live = sorted(mesh.nodes)
            # Like a client, retry the same run through another peer until one acknowledges it.
            run = None
            give_up = loop.time() + 60.0
            while True:
                enq = rng.choice([mesh.nodes[n] for n in sorted(mesh.nodes)])
                try:
                    await enq.enqueue(f"job-{x}", "sim.compute", x, run=run)
                    break
                except NotReplicated as err:
                    run = err.run
                    events["not_replicated"] += 1
                    if loop.time() > give_up:
                        report.failures.append(f"job-{x}: no majority acknowledged its enqueue within 60 s")
                        break
                    await asyncio.sleep(0.2)
                    if heal_at is not None and loop.time() >= heal_at:
                        fabric.heal()
                        heal_at = None
                        events["heal"] += 1
            if churn and i % 25 == 0:
                roll = rng.random()
                now = loop.time()
                if roll < 0.2 and len(live) > 3:
                    victim = rng.choice(live)
                    await mesh.crash(victim)
                    down[victim] = now + rng.uniform(0.5, 3.0)
                    events["crash"] += 1
                elif roll < 0.35 and len(live) > 3:
                    victim = rng.choice(live)
                    await mesh.leave(victim)
                    down[victim] = now + rng.uniform(0.5, 3.0)
                    events["leave"] += 1
                elif roll < 0.5 and len(live) + len(down) < peers + 2:
                    await mesh.up(f"p{next_id}")
                    next_id += 1
                    events["join"] += 1
                elif roll < 0.65 and heal_at is None:
                    side = set(rng.sample(live, rng.randrange(1, max(2, len(live) // 2))))
                    fabric.partition(side, set(live) - side, one_way=rng.random() < 0.2)
                    heal_at = now + rng.uniform(0.5, 4.0)  # partitions end, as real ones do
                    events["partition"] += 1
            if heal_at is not None and loop.time() >= heal_at:
                fabric.heal()
                heal_at = None
                events["heal"] += 1
            for n, t in sorted(down.items()):
                if loop.time() >= t:
                    del down[n]
                    await mesh.up(n)
            await asyncio.sleep(rng.uniform(0, 0.004))
            if on_progress is not None and (i + 1) % step == 0:
                on_progress(len(steady_jobs) + i + 1, jobs, "churn", loop.time())

        # Phase 3: heal and quiesce.
        mesh.phase = "quiesce"
        if on_progress is not None:
            on_progress(jobs, jobs, "quiesce", loop.time())
        for n in sorted(down):
            await mesh.up(n)
        fabric.calm()
        all_tasks = [f"job-{x}" for x in order]
        answered = await _all_answered(mesh, all_tasks, 120.0)
        for _ in range(200):  # queues drain shortly after the last answer lands
            if all(node.queue_depth == 0 for node in mesh.nodes.values()):
                break
            await asyncio.sleep(0.1)

        def converged() -> bool:
            # state_digest() is cached per state version: cheap while nothing changes. Per cell.
            return all(len({board(node).core.state_digest() for node in nodes}) == 1
                       for nodes in mesh.cell_nodes().values()
                       for board in (lambda n: n.results_board, lambda n: n.queue))

        for _ in range(120):  # boards converge (a duplicate's two answers settle to one; cleanups reach every queue)
            if converged():
                break
            await asyncio.sleep(0.5)
        if cells and not ack_answers:
            # Every live peer that forwarded a task got its answer back (pushed, or fetched after a
            # lost push or a crashed acceptor). (With --ack-answers the reader may remove an
            # answer from its cell before the submitter fetched it.)
            for _ in range(40):
                if not any(node.router.waiting for node in mesh.nodes.values()):
                    break
                await asyncio.sleep(0.25)
        if ack_answers:
            # The reader acknowledges an answer only once no queue holds its task; a queue entry
            # repaired away in the last moments leaves its answer for the reader's next rounds.
            for _ in range(60):
                if converged() and all(not node.results for node in mesh.nodes.values()):
                    break
                await asyncio.sleep(0.5)
        lost = wrong = 0
        if ack_answers:
            # The client read (and checked) every answer once; boards hold only unread ones.
            lost = sum(1 for x in order if f"job-{x}" not in mesh.seen)
            wrong = sum(1 for ok in mesh.seen.values() if not ok)
            report.metrics["answers_acked"] = mesh.acked
            report.metrics["answers_left_on_boards"] = max(len(node.results) for node in mesh.nodes.values())
        else:
            for name, node in mesh.nodes.items():
                for x in order:
                    if mesh.task_cell(f"job-{x}") != mesh.cell_of(name):
                        continue  # another cell queues and answers it
                    res = node.results_board.state.get(f"job-{x}")
                    res = decode_result(res) if res is not None else None
                    if res is None:
                        lost += 1
                    elif not res.ok or res.value != job_answer(x):
                        wrong += 1
        per_cell = {cell: {node.results_board.core.state_digest() for node in nodes}
                    for cell, nodes in mesh.cell_nodes().items()}
        boards = {b"".join(sorted(digests)) for digests in per_cell.values() if len(digests) == 1}
        runs = Counter(e.task for e in log)
        executions = sum(runs.values())
        churn_execs = sum(1 for e in log if e.phase != "steady")
        churn_tasks = len({e.task for e in log if e.phase != "steady"})
        if cells:
            routed = Counter[str]()
            for node in mesh.nodes.values():
                routed.update(node.router.stats)
            report.metrics["cells"] = cells
            report.metrics["routing"] = dict(sorted(routed.items()))  # the live peers' tallies
        report.metrics.update(
            executions=executions,
            distinct=len(runs),
            steady_duplicates=steady_dups,
            churn_duplicates=churn_execs - churn_tasks,
            churn_duplicate_rate=round((churn_execs - churn_tasks) / churn_execs, 4) if churn_execs else 0.0,
            lost=lost,
            wrong=wrong,
            live_peers=len(mesh.nodes),
            churn_events=dict(sorted(events.items())),
            virtual_seconds=round(loop.time(), 2),
            bytes_sent=fabric.bytes_sent,
            bytes_per_job=round(fabric.bytes_sent / max(1, len(order))),
            bytes_by_kind=bytes_by_kind(fabric.bytes_by_kind),
            bytes_by_board_kind=dict(sorted(fabric.bytes_by_kind.items())),
            frames_by_kind=bytes_by_kind(frames),
            frames_by_board_kind=dict(sorted(frames.items())),
            # Whole boards on the wire: full states, and differences as big as a board (bootstraps).
            full_states_sent=sum(n for k, n in frames.items() if k.endswith(".full_state")),
        )
        if not answered:
            report.failures.append("some jobs were not answered on every live peer within 120 virtual seconds")
            report.metrics["stuck"] = _diagnose(mesh, [f"job-{x}" for x in order])
        if lost:
            report.failures.append(f"{lost} answers missing across live peers' boards")
        if wrong:
            report.failures.append(f"{wrong} wrong answers")
        if steady_dups:
            report.failures.append(f"{steady_dups} duplicate executions at steady membership")
        if any(len(digests) != 1 for digests in per_cell.values()):
            report.failures.append("live peers' results boards differ after quiescence")
        unreturned = {n: sorted(node.router.waiting)[:3] for n, node in sorted(mesh.nodes.items())
                      if node.router.waiting}
        if cells and not ack_answers and unreturned:
            report.failures.append(f"forwarded tasks whose answer never reached their submitter, e.g. {unreturned}")
        stuck_queued = sorted({t for node in mesh.nodes.values() for t in node.queue.state.keys()})
        if stuck_queued:
            holders = {n: sorted(node.queue.state.keys())[:3] for n, node in sorted(mesh.nodes.items())
                       if node.queue_depth}
            report.failures.append(f"{len(stuck_queued)} task(s) still queued after quiescence, e.g. {holders}")
        trace = blake3.blake3()
        for e in log:
            trace.update(f"{e.peer}/{e.task}/{e.phase};".encode())
        trace.update(b"".join(sorted(boards)))
        report.trace = trace.hexdigest()[:16]
        if acker is not None:
            if acker.done() and acker.exception() is not None:
                report.failures.append(f"the answer reader failed: {acker.exception()!r}")
            acker.cancel()
        for name in sorted(mesh.nodes):
            await mesh.nodes[name].close()
        await fabric.close()

    try:
        run_virtual(main())
    except Exception as err:
        report.failures.append(f"exception: {type(err).__name__}: {err}")
    return report


async def _all_answered(mesh: _Mesh, tasks: list[str], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if mesh.ack_answers:
            if all(t in mesh.seen for t in tasks):
                return True
        elif all(all(t in node.results_board.state for t in tasks if mesh.task_cell(t) == mesh.cell_of(name))
                 for name, node in list(mesh.nodes.items())):
            return True
        await asyncio.sleep(0.1)
    return False


def _diagnose(mesh: _Mesh, tasks: list[str], limit: int = 3) -> list[dict[str, Any]]:
    """For the first unanswered tasks: what every live peer believes about them."""
    out = []
    for t in tasks:
        if all(t in node.results for node in mesh.nodes.values()):
            continue
        views = {}
        for name, node in sorted(mesh.nodes.items()):
            desc = node._descriptor(t)
            views[name] = {
                "queued": desc is not None,
                "answered": t in node.results,
                "owner": node.ring.owner(t),
                "workers": len(node.workers),
                "claimed": node._claimed.get(t) is not None,
                "standby": node._standby.get(t) is not None,
                "claimants": sorted(node._claimants(desc.run)) if desc is not None else None,
                "contested": node._contested(),
            }
        execs = [(e.peer, round(e.at, 2)) for e in mesh.log if e.task == t]
        holders = sorted(n for n, node in mesh.nodes.items() if t in node.results)
        boards = {n: (node.results_board.core.frontier(), dict(node.results_board.core._mismatch),
                      node.results_board.core.stats["states_in"], node.results_board.core.stats["digest_match"],
                      node.results_board.core.peers)
                  for n, node in sorted(mesh.nodes.items())}
        out.append({"task": t, "holders": holders, "boards": boards, "executed": execs, "events": [(round(a, 2), b, c) for a, b, c in mesh.events],
                    "views": views})
        if len(out) >= limit:
            break
    return out
