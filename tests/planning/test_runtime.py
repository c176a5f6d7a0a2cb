"""IncrementalResult and ConvergentExecution (seed 000, "Results that converge"; reference
IncrementalExecutionTest scenarios), and drafts run in process on a LocalBackend."""

from __future__ import annotations

import asyncio
import threading

import pytest

from warpmesh.crdt import GCounter, GSet
from warpmesh.planning import ConvergentExecution, IncrementalResult, LocalBackend, WarpStats
from warpmesh.planning.examples import THOUSAND_DOCS_OPS, THREE_BRANCH_OPS, thousand_docs, three_branch
from warpmesh.planning.interpret import evaluate


def of(**slots: int) -> GCounter:
    return GCounter(slots)


def test_seed_contributions_join() -> None:
    result = IncrementalResult(GCounter())
    result.contribute(of(alice=3))
    result.contribute(of(bob=2))
    assert result.state.value == 5


def test_state_only_grows_and_ignores_order_and_duplicates() -> None:
    r = IncrementalResult(GCounter())
    seen = []
    for i in range(1, 6):
        r.contribute(of(**{f"r{i}": i}))
        seen.append(r.state.value)
    assert seen == sorted(seen) and seen[-1] == 15
    a, b = IncrementalResult(GCounter()), IncrementalResult(GCounter())
    deltas = [of(x=3), of(y=5), of(x=2)]
    for d in deltas:
        a.contribute(d)
    for d in [*reversed(deltas), *deltas]:
        b.contribute(d)
    assert a.state == b.state and a.state.value == 8
    snap = a.state
    a.contribute(of(z=1))
    assert snap.value == 8  # a snapshot is not changed by later contributions


def test_await_threshold_resumes_at_the_first_state_that_satisfies_it() -> None:
    async def main() -> None:
        r = IncrementalResult(GCounter())
        r.contribute(of(a=2))
        waiter = asyncio.ensure_future(r.await_threshold(lambda s: s.value >= 3))
        await asyncio.sleep(0)
        assert not waiter.done()  # 2 < 3: still suspended
        r.contribute(of(b=1))
        r.contribute(of(c=10))
        crossed = await waiter
        assert crossed.value == 3  # the crossing state, not a later one
        assert crossed.value <= r.state.value
        again = await r.await_threshold(lambda s: s.value >= 3)  # already holds: at once
        assert again.value == 13

    asyncio.run(main())


def test_contribute_is_thread_safe() -> None:
    async def main() -> None:
        r = IncrementalResult(GCounter())
        waiter = asyncio.ensure_future(r.await_threshold(lambda s: s.value >= 4000))

        def work(name: str) -> None:
            for i in range(1, 1001):
                r.contribute(of(**{name: i}))

        threads = [threading.Thread(target=work, args=(f"t{k}",)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (await asyncio.wait_for(waiter, 5)).value == 4000

    asyncio.run(main())


def test_convergent_execution_submit_drains_into_the_result() -> None:
    async def main() -> None:
        ex = ConvergentExecution(three_branch(), LocalBackend(THREE_BRANCH_OPS))
        ex.submit(GSet(["x"]))
        ex.submit(GSet(["y"]))
        await ex.flush()
        assert set(ex.result.state) == {"x", "y"}
        await ex.close()

    asyncio.run(main())


def test_convergent_execution_interprets_the_draft() -> None:
    async def main() -> None:
        unplanned_backend, planned_backend = LocalBackend(THREE_BRANCH_OPS), LocalBackend(THREE_BRANCH_OPS)
        d = three_branch()
        ex_u = ConvergentExecution(d, unplanned_backend)
        ex_p = ConvergentExecution(d.plan(), planned_backend)
        ru, rp = await ex_u.run(), await ex_p.run()
        assert (ru.rounds, rp.rounds) == (4, 2)
        assert (unplanned_backend.proposals, planned_backend.proposals) == (4, 2)
        assert ex_u.result.state == ex_p.result.state
        assert len(ex_u.result.state) == 20 + 10 + 30
        ref = evaluate(d, THREE_BRANCH_OPS)
        assert {k: sorted(v) for k, v in ru.outputs.items()} == {k: sorted(v) for k, v in ref.items()}
        assert "embroider.c,embroider.d,map.m,source.c" in ru.outputs
        assert ru.outputs["embroider.c,embroider.d,map.m,source.c"][0] == "c0:m"

    asyncio.run(main())


def test_execution_feeds_the_statistics_that_plan_uses() -> None:
    async def main() -> None:
        backend = LocalBackend(THOUSAND_DOCS_OPS)
        d = thousand_docs()
        first = await ConvergentExecution(d, backend).run()
        assert first.coordinated_elements == 1000
        stats = backend.stats
        assert 950 <= stats.estimated_cardinality("src") <= 1050
        assert stats.estimated_cardinality("filter.above-threshold") == 50
        planned = d.plan(stats)
        second = await ConvergentExecution(planned, backend).run()
        assert second.coordinated_elements == 50
        assert sorted(second.outputs.values()) == sorted(first.outputs.values())

    asyncio.run(main())


def test_sources_given_at_submission_and_chunking() -> None:
    async def main() -> None:
        ex = ConvergentExecution(thousand_docs(), LocalBackend(THOUSAND_DOCS_OPS), chunk_size=100)
        report = await ex.run({"src": [f"doc_{i}" for i in range(1, 201)]})
        assert report.free_jobs == 4  # map.score and the filter each see 200 elements: 2 chunks each
        assert sum(len(v) for v in report.outputs.values()) == 10

    asyncio.run(main())


def test_stats_are_what_the_empty_constructor_makes() -> None:
    assert LocalBackend({}).stats == WarpStats.empty()


def test_a_failing_op_stops_the_run_with_an_execution_error_naming_the_stage() -> None:
    from warpmesh.errors import WarpmeshError
    from warpmesh.planning.runtime import ExecutionError

    def boom(x: str) -> str:
        raise KeyError(x)

    async def main() -> None:
        ops = {**THREE_BRANCH_OPS, "map.m": boom}
        with pytest.raises(ExecutionError, match=r"MAP\(map.m\) \(node 6\) failed: KeyError") as exc:
            await ConvergentExecution(three_branch(), LocalBackend(ops)).run()
        assert isinstance(exc.value, WarpmeshError)

    asyncio.run(main())


def test_an_execution_runs_once() -> None:
    from warpmesh.planning.runtime import ExecutionError

    async def main() -> None:
        ex = ConvergentExecution(three_branch(), LocalBackend(THREE_BRANCH_OPS))
        await ex.run()
        with pytest.raises(ExecutionError, match="already ran"):
            await ex.run()

    asyncio.run(main())
