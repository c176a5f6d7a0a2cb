"""Drafts executed over a simulated mesh: the production :class:`PlanningNode` (WarpNode + RaftNode +
the statistics Quilter) on a :class:`~warpmesh.sim.loop.VirtualTimeLoop` over a seeded faulty
:class:`MemoryFabric` (loss, duplication, reordering, delay).

Each seed draws a random multi-branch draft over random data (or a named query), runs it unplanned, plans it from the
statistics the first run gossiped, runs the plan, and checks:

* both results equal the single-process reference (:func:`warpmesh.planning.interpret.evaluate`):
  nothing lost, nothing duplicated, whatever the network did;
* the committed Raft log holds exactly one embroider proposal per coordinated node executed (a
  ``BATCHED_EMBROIDER`` is one), on every live peer;
* every live peer applied the same embroider outputs;
* the statistics converge on every live peer (gossip on channel 0x51).

With ``--crash`` a peer other than the coordinator dies during the first run; its Warp tasks move
to the next owner and Raft keeps a majority.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

from warpmesh.liveness.core import HeartbeatConfig
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.planning.examples import (
    RANDOM_OPS,
    THOUSAND_DOCS_OPS,
    THREE_BRANCH_OPS,
    random_draft,
    thousand_docs,
    three_branch,
)
from warpmesh.planning.interpret import evaluate
from warpmesh.planning.model import Draft
from warpmesh.planning.runtime import PlanningNode
from warpmesh.quilt.core import QuilterConfig
from warpmesh.raft.config import RaftConfig
from warpmesh.sim.harness import SimReport
from warpmesh.sim.loop import run_virtual
from warpmesh.warp.node import WarpConfig

__all__ = ["QUERIES", "SIM_RAFT", "SIM_WARP", "run_planning"]

SIM_WARP = WarpConfig(
    coalesce_delay=0.005, counter_flush=0.2, settle_window=0.1, reclaim_interval=0.5, replicate_timeout=1.0,
    heartbeat=HeartbeatConfig(interval=0.25, timeout=1.0, lost_after=5.0),
    quilter=QuilterConfig(anti_entropy_interval=0.5, resend_after=0.25, evict_after=20.0),
)
SIM_RAFT = RaftConfig(election_timeout_min=0.15, election_timeout_max=0.3, heartbeat_interval=0.03)

QUERIES = ("random", "three-branch", "thousand-docs")


def _canonical(result: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {k: sorted(repr(x) for x in v) for k, v in result.items()}


def _query(name: str, rng: random.Random) -> tuple[Draft, dict[str, Any]]:
    if name == "three-branch":
        return three_branch(), THREE_BRANCH_OPS
    if name == "thousand-docs":
        return thousand_docs(), THOUSAND_DOCS_OPS
    return random_draft(rng), RANDOM_OPS


def run_planning(seed: int, *, peers: int = 3, query: str = "random", crash: bool = False,
                 chunk: int = 16) -> SimReport:
    """One seeded run (see the module docstring)."""
    params: dict[str, Any] = {}
    if peers != 3:
        params["peers"] = peers
    if query != "random":
        params["query"] = query
    if crash:
        params["crash"] = True
    if chunk != 16:
        params["chunk"] = chunk
    report = SimReport("planning", seed, params)

    async def main() -> None:
        rng = random.Random(seed)
        faults = LinkFaults(drop=rng.uniform(0, 0.05), duplicate=rng.uniform(0, 0.03),
                            reorder=rng.uniform(0, 0.1), delay=rng.uniform(0.0005, 0.003),
                            jitter=rng.uniform(0, 0.002))
        fabric = MemoryFabric(seed=rng.getrandbits(32), faults=faults)
        names = [f"p{i}" for i in range(peers)]
        draft, ops = _query(query, rng)
        nodes: dict[str, PlanningNode] = {}
        for n in names:
            nodes[n] = PlanningNode(fabric.join(n), ops, voters=names, warp_config=SIM_WARP,
                                    raft_config=SIM_RAFT, seed=rng.getrandbits(32), chunk_size=chunk)
            await nodes[n].start()
        loop = asyncio.get_running_loop()
        try:
            await _run(report, rng, fabric, nodes, draft, ops, crash, loop)
        finally:
            for node in nodes.values():
                await node.close()
            await fabric.close()

    try:
        run_virtual(asyncio.wait_for(main(), 600.0))
    except TimeoutError:
        report.failures.append("the run did not finish within 600 virtual seconds")
    return report


async def _run(report: SimReport, rng: random.Random, fabric: MemoryFabric, nodes: dict[str, PlanningNode],
               draft: Draft, ops: dict[str, Any], crash: bool, loop: asyncio.AbstractEventLoop) -> None:
    # Wait for a Raft leader and a settled Warp ring.
    deadline = loop.time() + 30.0
    while loop.time() < deadline:
        members = set(nodes)
        if (any(n.raft.leader.value for n in nodes.values())
                and all(n.warp.workers == members for n in nodes.values())):
            break
        await asyncio.sleep(0.05)
    else:
        report.failures.append("the mesh never settled (no leader or no common ring)")
        return
    names = sorted(nodes)
    coordinator = nodes[rng.choice(names)]
    # Random data for random drafts: each source yields a random sample (given at submission).
    sources = None
    if ops is RANDOM_OPS:
        sources = {op: [[op, i, []] for i in sorted(rng.sample(range(1000), rng.randint(0, 80)))]
                   for op in sorted({n.stage.op_id for n in draft.nodes if n.stage.is_source})}
    expected = _canonical(evaluate(draft, ops, sources))

    victim: str | None = None
    if crash:
        victim = rng.choice([n for n in names if n != coordinator.self_id])

        async def kill() -> None:
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            fabric.crash(victim)
            await nodes[victim].close()

        killer = loop.create_task(kill())
    ex1, r1 = await coordinator.execute(draft, sources)
    if crash:
        await killer
    got1 = _canonical(r1.outputs)
    if got1 != expected:
        report.failures.append(f"unplanned result differs from the reference: {_diff(expected, got1)}")

    planned = draft.plan(coordinator.stats)
    ex2, r2 = await coordinator.execute(planned, sources)
    got2 = _canonical(r2.outputs)
    if got2 != expected:
        report.failures.append(f"planned result differs from the reference: {_diff(expected, got2)}")
    if ex1.result.state != ex2.result.state:
        report.failures.append("the planned and unplanned IncrementalResult states differ")

    live = [n for n in names if n != victim]
    rounds = draft.coordination_cost().rounds + planned.coordination_cost().rounds
    deadline = loop.time() + 30.0
    while loop.time() < deadline:
        if all(nodes[n].embroider_proposals == rounds for n in live) and \
                len({repr(nodes[n].stats.to_wire()) for n in live}) == 1:
            break
        await asyncio.sleep(0.1)
    counts = {n: nodes[n].embroider_proposals for n in live}
    if any(c != rounds for c in counts.values()):
        report.failures.append(f"embroider proposals in the committed log {counts}, expected {rounds}")
    applied = {n: repr(sorted(nodes[n].applied.items())) for n in live}
    if len(set(applied.values())) != 1:
        report.failures.append("peers applied different embroider outputs")
    if len({repr(nodes[n].stats.to_wire()) for n in live}) != 1:
        report.failures.append("statistics did not converge on every live peer")
    report.metrics.update({
        "nodes": len(draft), "planned_nodes": len(planned),
        "rounds_unplanned": draft.coordination_cost().rounds, "rounds_planned": planned.coordination_cost().rounds,
        "free_jobs_unplanned": r1.free_jobs, "free_jobs_planned": r2.free_jobs,
        "coordinated_elements_unplanned": r1.coordinated_elements,
        "coordinated_elements_planned": r2.coordinated_elements,
        "entries": max(nodes[n].embroider_entries for n in live), "virtual_s": round(loop.time(), 3),
        "crashed": victim,
    })
    report.trace = hashlib.blake2b(repr((sorted(got1.items()), sorted(got2.items()), counts)).encode(),
                                   digest_size=8).hexdigest()


def _diff(want: dict[str, list[str]], got: dict[str, list[str]]) -> str:
    for k in sorted(set(want) | set(got)):
        w, g = want.get(k, []), got.get(k, [])
        if w != g:
            return f"sink {k}: {len(w)} expected, {len(g)} got"
    return "?"
