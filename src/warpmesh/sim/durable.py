"""Whole-mesh power cuts in the simulator: durable Warp peers lose power at a seeded moment of the
ack/fsync path, restart on their (simulated) disks, and every acknowledged job is still answered.

A :class:`~warpmesh.quilt.store.MemoryMedium` is each peer's disk: what was synced survives the
cut, what was only written does not. A memory-only client enqueues jobs (each ``enqueue`` returns
once a majority of the peers holds the job on disk) and watches answers. The cut falls at a seeded
step (``collected``, ``written`` - somewhere inside the fsync -, ``synced`` or ``released``) of a
seeded commit of a seeded peer; every peer and the client die at that instant. Then all peers
restart on their disks and a new client checks:

* zero lost: every job whose enqueue returned is answered;
* zero wrong: every answer is the job's known value;
* nothing shown disappears: every answer to an acknowledged job the client saw before the cut is
  still there, unchanged (it may have been computed again, if it had not reached a disk: the same
  value, as ops are deterministic). A job whose enqueue had not returned may vanish with its answer.

Duplicates (a job run again after the cut because its answer had not reached a disk) are reported.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.quilt.store import MemoryMedium, NodeStore
from warpmesh.sim.harness import SimReport
from warpmesh.sim.loop import run_virtual
from warpmesh.sim.warp import SIM_CONFIG, job_answer
from warpmesh.warp import NotReplicated, OpRegistry, WarpNode

#: Deltas (and so acks) leave sooner than a slow disk syncs, so an ack sent early would be caught.
DURABLE_SIM_CONFIG = replace(SIM_CONFIG, coalesce_delay=0.001)

#: The steps of one commit a cut can fall on.
STEPS = ("collected", "written", "synced", "released")


def run_power_cut(seed: int, *, peers: int = 3, jobs: int = 60) -> SimReport:
    """One seeded whole-mesh power cut of durable Warp peers; see the module docstring."""
    report = SimReport("power-cut", seed, {"peers": peers, "jobs": jobs})
    rng = random.Random(seed)
    step = STEPS[seed % len(STEPS)]
    names = [f"p{i}" for i in range(peers)]
    victim = rng.choice(names)
    at_commit = rng.randrange(3, 300)
    executions: list[str] = []

    def registry() -> OpRegistry:
        reg = OpRegistry()

        def compute(x: int) -> int:
            executions.append(f"job-{x}")
            return job_answer(x)

        reg.register("sim.compute", compute, mode="inline")
        return reg

    async def main() -> None:
        loop = asyncio.get_running_loop()
        medium = MemoryMedium(sync_delay=rng.uniform(0.002, 0.02))
        fabric = MemoryFabric(seed=rng.getrandbits(32), faults=LinkFaults(
            drop=rng.uniform(0, 0.03), reorder=rng.uniform(0, 0.1), delay=rng.uniform(0.0005, 0.002),
            jitter=rng.uniform(0, 0.002)))
        nodes: dict[str, WarpNode] = {}
        cut = asyncio.Event()
        cut_info: dict[str, Any] = {}

        async def up(n: str) -> WarpNode:
            store = NodeStore(medium.disk(n), n)
            node = WarpNode(fabric.join(n), registry=registry(), config=DURABLE_SIM_CONFIG, data_dir=store)
            nodes[n] = await node.start()
            return node

        for n in names:
            await up(n)
        client = await WarpNode(fabric.join("client"), registry=OpRegistry(), config=DURABLE_SIM_CONFIG,
                                role="client").start()
        shown: dict[str, Any] = {}
        acked: list[int] = []

        def power_cut() -> None:
            if cut.is_set():
                return
            medium.power_cut()  # unsynced writes are gone, and nothing more is written
            for n in [*names, "client"]:
                fabric.crash(n)  # nothing more is sent
            for t, res in client.results.items():
                shown[t] = res.value
            cut_info.update(at=round(loop.time(), 4), answers_in=len(shown))
            cut.set()

        seen = {"n": 0}

        def hook(what: str) -> None:
            if what != step or cut.is_set():
                return
            seen["n"] += 1
            if seen["n"] == at_commit:
                if what == "written":
                    loop.call_later(rng.uniform(0, medium.sync_delay), power_cut)
                else:
                    power_cut()

        victim_store = nodes[victim].store
        assert victim_store is not None
        victim_store.step_hook = hook

        async def submit() -> None:
            for x in range(1, jobs + 1):
                if cut.is_set():
                    return
                try:
                    await client.enqueue(f"job-{x}", "sim.compute", x)
                except (NotReplicated, Exception):  # the cut may fall inside an enqueue
                    if cut.is_set():
                        return
                    continue
                if not cut.is_set():
                    acked.append(x)
                await asyncio.sleep(rng.uniform(0, 0.01))

        submitter = loop.create_task(submit())
        try:
            await asyncio.wait_for(cut.wait(), 120)
        except TimeoutError:
            power_cut()  # the seeded commit never came: cut now
        submitter.cancel()
        await asyncio.gather(submitter, return_exceptions=True)
        for node in [*nodes.values(), client]:
            await node.close()
        nodes.clear()
        before = len(executions)
        for n in names:
            await up(n)
        want = [f"job-{x}" for x in acked]
        deadline = loop.time() + 180
        while loop.time() < deadline:
            if all(all(t in node.results for t in want) for node in nodes.values()):
                break
            await asyncio.sleep(0.2)
        ref = nodes[names[0]]
        lost = [t for t in want if t not in ref.results]
        wrong = [t for t, r in ref.results.items() if not r.ok or r.value != job_answer(int(t.split("-")[1]))]
        acked_ids = set(want)
        gone = [t for t, v in shown.items() if t not in ref.results or ref.results[t].value != v]
        # A job whose enqueue never returned may vanish with its answer (nobody was promised it).
        vanished = [t for t in gone if t in acked_ids]
        if lost:
            report.failures.append(f"{len(lost)} acknowledged jobs lost in a power cut at {step}: {lost[:5]}")
        if wrong:
            report.failures.append(f"{len(wrong)} wrong answers: {wrong[:5]}")
        if vanished:
            report.failures.append(f"{len(vanished)} answers shown before the cut disappeared: {vanished[:5]}")
        report.metrics.update(step=step, victim=victim, commit=at_commit, acked=len(acked), **cut_info,
                              executions=len(executions), rerun_after_cut=len(executions) - before,
                              duplicates=len(executions) - len(set(executions)), syncs=medium.syncs,
                              unacknowledged_vanished=len(gone) - len(vanished))
        for node in nodes.values():
            await node.close()
        await fabric.close()

    try:
        run_virtual(main())
    except Exception as err:  # this seed's failure, with its replay command
        report.failures.append(f"{type(err).__name__}: {err}")
    return report
