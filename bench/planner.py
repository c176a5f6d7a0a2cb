"""The coordination planner on a live mesh: the seed's 1,000-doc query over 3 peers, unplanned vs
planned, measured in the same run (interleaved repeats; medians).

Three :class:`~warpmesh.planning.PlanningNode` peers (WarpNode + RaftNode + statistics Quilter) run
on one asyncio loop over the in-memory fabric (no faults) or, with ``--tcp``, over loopback TCP. The
first, unmeasured run of the unplanned draft feeds the statistics; the plan is made from them. Each
repeat then runs the unplanned and the planned draft once (alternating which goes first) and counts
the embroider proposals each added to the committed Raft log. The seed's three-branch query is run
the same way for its proposal counts (4 vs 2).

Prints one JSON line: our figure (planned) beside the peer's (the unplanned draft) and the ratio.

    python bench/planner.py [--repeats 7] [--tcp]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from warpmesh.planning import PlanningNode
from warpmesh.planning.examples import THOUSAND_DOCS_OPS, THREE_BRANCH_OPS, thousand_docs, three_branch

IDS = ["p1", "p2", "p3"]


async def _mesh(ops: dict[str, Any], tcp: bool) -> tuple[list[PlanningNode], Any]:
    seams: list[Any] = []
    if tcp:
        from warpmesh.net.tcp import TcpMesh

        first = TcpMesh(IDS[0], incarnation=1)
        await first.start()
        assert first.address is not None
        seams.append(first)
        for i in IDS[1:]:
            m = TcpMesh(i, join=[first.address], incarnation=1)
            await m.start()
            seams.append(m)
        fabric = None
    else:
        from warpmesh.net.memory import MemoryFabric

        fabric = MemoryFabric(seed=1)
        seams = [fabric.join(i) for i in IDS]
    nodes = [await PlanningNode(s, ops, voters=IDS, seed=k).start() for k, s in enumerate(seams)]
    while not all(n.warp.workers == frozenset(IDS) for n in nodes) or not nodes[0].raft.leader.value:
        await asyncio.sleep(0.01)
    return nodes, (fabric, seams)


async def _close(nodes: list[PlanningNode], extra: Any) -> None:
    fabric, seams = extra
    for n in nodes:
        await n.close()
    if fabric is not None:
        await fabric.close()
    else:
        for s in seams:
            await s.close()


async def _timed(node: PlanningNode, draft: Any) -> tuple[float, int, Any]:
    before = node.embroider_proposals
    t = time.perf_counter()
    ex, _ = await node.execute(draft)
    return time.perf_counter() - t, node.embroider_proposals - before, ex.result.state


async def bench(repeats: int, tcp: bool) -> dict[str, Any]:
    nodes, extra = await _mesh(THOUSAND_DOCS_OPS, tcp)
    try:
        coord = nodes[0]
        d = thousand_docs()
        await coord.execute(d)  # warm-up; feeds the statistics
        stats = (await coord.sync_stats()).copy()  # what the planner used (later runs add to it)
        planned = d.plan(stats)
        times: dict[str, list[float]] = {"unplanned": [], "planned": []}
        props: dict[str, set[int]] = {"unplanned": set(), "planned": set()}
        states = []
        for r in range(repeats):
            order = [("unplanned", d), ("planned", planned)]
            for name, draft in (order if r % 2 == 0 else order[::-1]):
                dt, p, state = await _timed(coord, draft)
                times[name].append(dt)
                props[name].add(p)
                states.append(state)
        cost_u, cost_p = d.coordination_cost(stats), planned.coordination_cost(stats)
    finally:
        await _close(nodes, extra)
    nodes, extra = await _mesh(THREE_BRANCH_OPS, tcp)
    try:
        tb = three_branch()
        _, p3u, s3u = await _timed(nodes[0], tb)
        _, p3p, s3p = await _timed(nodes[0], tb.plan())
    finally:
        await _close(nodes, extra)
    med_u, med_p = statistics.median(times["unplanned"]), statistics.median(times["planned"])
    return {
        "bench": "planner", "query": "1000 docs: src -> map.score -> embroider.rank -> filter", "peers": 3,
        "transport": "tcp" if tcp else "memory", "repeats": repeats,
        "planned_s": round(med_p, 4), "unplanned_s": round(med_u, 4), "ratio": round(med_p / med_u, 3),
        "planned_spread_s": [round(min(times["planned"]), 4), round(max(times["planned"]), 4)],
        "unplanned_spread_s": [round(min(times["unplanned"]), 4), round(max(times["unplanned"]), 4)],
        "raft_proposals_planned": sorted(props["planned"]), "raft_proposals_unplanned": sorted(props["unplanned"]),
        "coordinated_volume_planned": cost_p.coordinated_volume,
        "coordinated_volume_unplanned": cost_u.coordinated_volume,
        "results_equal": all(s == states[0] for s in states),
        "three_branch_proposals_planned": p3p, "three_branch_proposals_unplanned": p3u,
        "three_branch_results_equal": s3u == s3p,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--tcp", action="store_true", help="Loopback TCP instead of the in-memory fabric.")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(bench(args.repeats, args.tcp)), sort_keys=True))


if __name__ == "__main__":
    main()
