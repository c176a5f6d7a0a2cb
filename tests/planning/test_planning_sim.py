"""Drafts over the simulated mesh (production PlanningNode on the virtual loop, lossy links): the
planned draft's result equals the unplanned one's and the single-process reference, Raft proposals
are counted from the committed log, statistics converge; also with a peer crashing mid-run."""

from __future__ import annotations

import pytest

from warpmesh.sim.planning import run_planning

CHUNKS = 4
PER_CHUNK = 16  # 64 random drafts over random data


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_drafts_planned_equal_unplanned_over_lossy_links(chunk: int) -> None:
    failures = []
    for seed in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK):
        r = run_planning(seed)
        if not r.ok:
            failures.append(f"seed {seed}: {r.failures} -- replay: {r.replay}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("seed", range(24))
def test_a_peer_crashing_mid_run_loses_and_duplicates_nothing(seed: int) -> None:
    r = run_planning(seed, crash=True)
    assert r.ok, f"{r.failures} -- replay: {r.replay}"
    assert r.metrics["crashed"] is not None


def test_three_branch_query_commits_four_then_two_proposals() -> None:
    r = run_planning(7, query="three-branch")
    assert r.ok, r.failures
    assert (r.metrics["rounds_unplanned"], r.metrics["rounds_planned"]) == (4, 2)
    assert r.metrics["entries"] == 6  # 4 + 2 in the committed log, no duplicates


def test_thousand_docs_planned_from_gossiped_stats_seals_fifty() -> None:
    r = run_planning(3, query="thousand-docs", crash=True)
    assert r.ok, r.failures
    assert r.metrics["coordinated_elements_unplanned"] == 1000
    assert r.metrics["coordinated_elements_planned"] == 50
    assert r.metrics["free_jobs_unplanned"] < 1000  # batched, never one job per element


def test_a_seed_replays_exactly() -> None:
    a, b = run_planning(11, crash=True), run_planning(11, crash=True)
    assert a.trace == b.trace and a.metrics == b.metrics
    assert a.replay == "warpmesh sim planning --seed 11 --crash"


@pytest.mark.slow
def test_long_sweep() -> None:
    for seed in range(300):
        for crash in (False, True):
            r = run_planning(seed, crash=crash, peers=3 + seed % 3)
            assert r.ok, f"{r.failures} -- replay: {r.replay}"


def test_an_embroider_committed_twice_is_applied_once() -> None:
    import asyncio

    from warpmesh.net.memory import MemoryFabric
    from warpmesh.planning import PlanningNode
    from warpmesh.planning.examples import THREE_BRANCH_OPS
    from warpmesh.sim.loop import run_virtual
    from warpmesh.sim.planning import SIM_RAFT, SIM_WARP
    from warpmesh.wire.frame import pack

    async def main() -> None:
        fabric = MemoryFabric(seed=5)
        ids = ["p0", "p1", "p2"]
        nodes = [await PlanningNode(fabric.join(i), THREE_BRANCH_OPS, voters=ids, warp_config=SIM_WARP,
                                    raft_config=SIM_RAFT, seed=k).start() for k, i in enumerate(ids)]
        while not nodes[0].raft.leader.value:
            await asyncio.sleep(0.05)
        command = pack(["embroider", "x1", 3, [["embroider.a", ["a2", "a1"]]]])
        await nodes[0].raft.propose(command)
        await nodes[1].raft.propose(command)  # a retry that committed too
        out = await nodes[2].commit("x1", 3, [("embroider.a", ["a2", "a1"])])
        assert out == [["a1", "a2"]]
        while any(n.embroider_entries < 2 for n in nodes):
            await asyncio.sleep(0.05)
        assert [n.embroider_proposals for n in nodes] == [1, 1, 1]
        assert [n.embroider_entries for n in nodes] == [2, 2, 2]
        for n in nodes:
            await n.close()
        await fabric.close()

    run_virtual(asyncio.wait_for(main(), 60))


def test_a_failing_op_on_the_mesh_fails_the_run_with_a_clear_error() -> None:
    import asyncio

    from warpmesh.net.memory import MemoryFabric
    from warpmesh.planning import PlanningNode
    from warpmesh.planning.examples import THOUSAND_DOCS_OPS, thousand_docs
    from warpmesh.planning.runtime import ExecutionError
    from warpmesh.sim.loop import run_virtual
    from warpmesh.sim.planning import SIM_RAFT, SIM_WARP

    def bad_score(x: str) -> str:
        if x == "doc_500":
            raise ValueError("unscorable")
        return x

    async def main() -> None:
        fabric = MemoryFabric(seed=9)
        ids = ["p0", "p1", "p2"]
        ops = {**THOUSAND_DOCS_OPS, "map.score": bad_score}
        nodes = [await PlanningNode(fabric.join(i), ops, voters=ids, warp_config=SIM_WARP, raft_config=SIM_RAFT,
                                    seed=k).start() for k, i in enumerate(ids)]
        while not all(n.warp.workers == frozenset(ids) for n in nodes):
            await asyncio.sleep(0.05)
        with pytest.raises(ExecutionError, match="unscorable"):
            await nodes[1].execute(thousand_docs())
        for n in nodes:
            await n.close()
        await fabric.close()

    run_virtual(asyncio.wait_for(main(), 60))
