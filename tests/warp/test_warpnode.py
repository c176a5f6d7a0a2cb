"""WarpNode scenarios (kuilt-warp §5.1-5.2, ported), plus what the reference lacks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from warpmesh.net.memory import MemoryFabric
from warpmesh.sim import run_virtual
from warpmesh.warp import ClaimStrategy, OpRegistry, TransientError, WarpNode

from .harness import FAST, ExecLog, Mesh, eventually, make_mesh, recording_registry

STRATEGIES = [ClaimStrategy.INTENT, ClaimStrategy.RING]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_three_node_mesh_converges_enqueued_tasks_onto_every_results_board(strategy: ClaimStrategy) -> None:
    async def main() -> None:
        mesh = await make_mesh(["peer-1", "peer-2", "peer-3"], strategy=strategy)
        tasks = [f"conv-task-{i}" for i in range(9)]
        for i, t in enumerate(tasks):
            await mesh.nodes[f"peer-{i % 3 + 1}"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        for node in mesh.nodes.values():
            assert node.results.task_ids == set(tasks)
            assert all(node.results[t].value == f"result-{t}" for t in tasks)
        assert sorted(t for _, t in mesh.log.runs) == sorted(tasks)
        await mesh.close()

    run_virtual(main())


def test_seed_example_executor_api() -> None:
    """The help page's form: give each peer an executor, enqueue task ids, boards converge."""

    async def main() -> None:
        fabric = MemoryFabric(seed=1)
        nodes = []
        for name in ("A", "B"):
            node = WarpNode(fabric.join(name), executor=lambda task_id: f"result-{task_id}", config=FAST)
            nodes.append(await node.start())
        await asyncio.sleep(1.0)
        tasks = [f"conv-task-{i}" for i in range(1, 9)]
        for t in tasks:
            await nodes[0].enqueue(t)
        for node in nodes:
            for t in tasks:
                assert (await node.outcome(t, timeout=10)).value == f"result-{t}"
        assert nodes[0].results.task_ids == nodes[1].results.task_ids == set(tasks)
        for node in nodes:
            await node.close()
        await fabric.close()

    run_virtual(main())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ring_owner_executes_its_task_exactly_once_after_roster_settles(strategy: ClaimStrategy) -> None:
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c", "d"], strategy=strategy)
        tasks = [f"t{i}" for i in range(40)]
        for t in tasks:
            await mesh.nodes["a"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        ring = mesh.nodes["a"].ring
        for t in tasks:
            assert mesh.log.executed_by(t) == [ring.owner(t)]
        assert all(n.counter("duplicates") == 0 for n in mesh.nodes.values())
        await mesh.close()

    run_virtual(main())


def test_survivor_picks_up_tasks_when_owner_is_partitioned() -> None:
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        ring = mesh.nodes["a"].ring
        tasks = [f"p{i}" for i in range(30)]
        owned_by_b = [t for t in tasks if ring.owner(t) == "b"]
        assert owned_by_b
        mesh.fabric.isolate("b")
        await asyncio.sleep(1.0)  # b becomes Unresponsive to a and c
        for t in tasks:
            await mesh.nodes["a"].enqueue(t, "echo", {"task": t})
        for t in tasks:
            await mesh.nodes["a"].outcome(t, timeout=10)
            await mesh.nodes["c"].outcome(t, timeout=10)
        for t in owned_by_b:
            assert "b" not in mesh.log.executed_by(t)
        await eventually(lambda: mesh.nodes["a"].counter("failovers") >= len(owned_by_b) > 0, what="failovers")
        mesh.fabric.heal()
        await mesh.nodes["b"].outcome(tasks[0], timeout=10)  # b catches up once the partition heals
        await mesh.close()

    run_virtual(main())


def test_returning_peer_gets_its_share_back() -> None:
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        mesh.fabric.isolate("c")
        await asyncio.sleep(1.0)
        assert "c" not in mesh.nodes["a"].workers
        mesh.fabric.heal()
        await mesh.nodes["a"].liveness.live.wait_for(lambda live: "c" in live, timeout=5)
        await asyncio.sleep(1.0)
        assert "c" in mesh.nodes["a"].workers
        tasks = [f"r{i}" for i in range(30)]
        for t in tasks:
            await mesh.nodes["a"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        assert any(peer == "c" for peer, _ in mesh.log.runs)
        await mesh.close()

    run_virtual(main())


def test_crashed_owner_tasks_run_on_successor() -> None:
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        await mesh.crash("c")
        tasks = [f"x{i}" for i in range(30)]
        for t in tasks:
            await mesh.nodes["a"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        assert {p for p, _ in mesh.log.runs} <= {"a", "b"}
        assert sorted(mesh.log.per_task().values()) == [1] * 30
        await mesh.close()

    run_virtual(main())


async def _contested_pair(strategy: ClaimStrategy) -> tuple[ExecLog, WarpNode, WarpNode, MemoryFabric, str]:
    """peer-1 sees a self-only roster, peer-2 the full one (cf. WarpContestedSettleTest): both claim."""
    from dataclasses import replace

    from warpmesh.aio import Observable
    from warpmesh.warp import TaskRing

    fabric = MemoryFabric(seed=4)
    log = ExecLog()
    cfg = replace(FAST, strategy=strategy)
    solo, full = Observable(frozenset({"peer-1"})), Observable(frozenset({"peer-1", "peer-2"}))
    p1 = await WarpNode(fabric.join("peer-1"), registry=recording_registry(log, "peer-1", delay=0.5), config=cfg,
                        roster=solo).start()
    p2 = await WarpNode(fabric.join("peer-2"), registry=recording_registry(log, "peer-2", delay=0.5), config=cfg,
                        roster=full).start()
    await asyncio.sleep(1.0)
    ring = TaskRing(["peer-1", "peer-2"])
    task = next(t for t in (f"contested-{i}" for i in range(100)) if ring.owner(t) == "peer-2")
    return log, p1, p2, fabric, task


def test_contested_claim_settles_to_one_winner_and_the_loser_stands_down() -> None:
    async def main() -> None:
        log, p1, p2, fabric, task = await _contested_pair(ClaimStrategy.INTENT)
        p2.enqueue_nowait(task, "echo", {"task": task})
        for node in (p1, p2):
            await node.outcome(task, timeout=10)
        await asyncio.sleep(2.0)
        # Both claimed; the ring owner among the claimants (peer-2), not the lowest id, ran it.
        assert log.executed_by(task) == ["peer-2"]
        assert p1.results[task] == p2.results[task]
        assert p1.counter("duplicates") == 0
        assert not p1._claimed and not p1._standby  # the loser's bookkeeping is gone with the task
        for n in (p1, p2):
            await n.close()
        await fabric.close()

    run_virtual(main())


def test_without_intents_a_contested_task_runs_twice_and_the_duplicate_is_counted_once() -> None:
    async def main() -> None:
        log, p1, p2, fabric, task = await _contested_pair(ClaimStrategy.RING)
        p2.enqueue_nowait(task, "echo", {"task": task})
        for node in (p1, p2):
            await node.outcome(task, timeout=10)
        await asyncio.sleep(2.0)
        assert sorted(log.executed_by(task)) == ["peer-1", "peer-2"]
        assert p1.results[task] == p2.results[task]  # the board still holds one answer
        await eventually(lambda: p1.counter("duplicates") == p2.counter("duplicates") == 1, what="duplicates")
        for n in (p1, p2):
            await n.close()
        await fabric.close()

    run_virtual(main())


def test_pinned_task_runs_only_on_its_pin_and_waits_while_the_pin_is_absent() -> None:
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        ring = mesh.nodes["a"].ring
        task = next(t for t in (f"pin{i}" for i in range(100)) if ring.owner(t) != "c")
        await mesh.nodes["a"].enqueue(task, "echo", {"task": task}, pin="c")
        await mesh.nodes["a"].outcome(task, timeout=10)
        assert mesh.log.executed_by(task) == ["c"]

        await mesh.crash("c")
        await mesh.nodes["a"].enqueue("later", "echo", {"task": "later"}, pin="c")
        await asyncio.sleep(3.0)
        assert mesh.log.executed_by("later") == []  # never re-homed
        await mesh.add("c")
        await mesh.nodes["a"].outcome("later", timeout=10)
        assert mesh.log.executed_by("later") == ["c"]

        run = mesh.nodes["b"].enqueue_local("local", "echo", {"task": "local"})
        assert (await mesh.nodes["a"].outcome("local", timeout=10, run=run)).by == "b"
        await mesh.close()

    run_virtual(main())


def test_terminal_failure_converges_as_a_failure_result_and_node_survives() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=5)
        calls: list[str] = []
        nodes = []
        for name in ("a", "b"):
            reg = OpRegistry()

            def boom(args: Any, name: str = name) -> Any:
                calls.append(name)
                raise RuntimeError(f"bad input {args}")

            reg.register("boom", boom, mode="inline")
            reg.register("ok", lambda args: args * 2, mode="inline")
            nodes.append(await WarpNode(fabric.join(name), registry=reg, config=FAST).start())
        await asyncio.sleep(1.0)
        await nodes[0].enqueue("bad", "boom", 7)
        for node in nodes:
            res = await node.outcome("bad", timeout=10)
            assert not res.ok and "RuntimeError: bad input 7" in (res.error or "")
        assert len(calls) == 1  # terminal: never retried
        await nodes[1].enqueue("good", "ok", 21)  # the node that raised still serves
        assert (await nodes[0].outcome("good", timeout=10)).value == 42
        await eventually(lambda: nodes[0].counter("failures") == 1, what="failures counter")
        for node in nodes:
            await node.close()
        await fabric.close()

    run_virtual(main())


def test_transient_failures_retry_with_backoff_up_to_the_limit() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=6)
        attempts: dict[str, int] = {}
        reg = OpRegistry()

        async def flaky(args: Any) -> Any:
            attempts[args["task"]] = attempts.get(args["task"], 0) + 1
            if attempts[args["task"]] < args["fail_times"] + 1:
                raise TransientError("try again")
            return "done"

        reg.register("flaky", flaky)
        node = await WarpNode(fabric.join("solo"), registry=reg, config=FAST).start()
        await asyncio.sleep(0.5)
        await node.enqueue("twice", "flaky", {"task": "twice", "fail_times": 2})
        await node.enqueue("never", "flaky", {"task": "never", "fail_times": 99})
        ok = await node.outcome("twice", timeout=10)
        assert ok.ok and ok.attempts == 3
        bad = await node.outcome("never", timeout=10)
        assert not bad.ok and bad.attempts == FAST.max_attempts
        await eventually(lambda: node.counter("retries") == 2 + (FAST.max_attempts - 1), what="retries")
        await node.close()
        await fabric.close()

    run_virtual(main())


def test_reenqueued_task_runs_again_and_replaces_the_answer() -> None:
    async def main() -> None:
        mesh = await make_mesh(["a", "b"])
        await mesh.nodes["a"].enqueue("again", "echo", {"task": "again", "v": 1})
        first = await mesh.nodes["b"].outcome("again", timeout=10)
        run2 = await mesh.nodes["b"].enqueue("again", "echo", {"task": "again", "v": 2})
        second = await mesh.nodes["a"].outcome("again", timeout=10, run=run2)
        assert second.run == run2 != first.run
        assert mesh.log.executed_by("again") and len(mesh.log.executed_by("again")) == 2
        await asyncio.sleep(1.0)
        assert mesh.nodes["a"].results["again"].run == run2
        await mesh.close()

    run_virtual(main())


def test_results_can_be_acknowledged_and_expire_and_bookkeeping_is_pruned() -> None:
    async def main() -> None:
        from dataclasses import replace

        mesh = await make_mesh(["a", "b"], config=replace(FAST, result_ttl=5.0))
        tasks = [f"e{i}" for i in range(20)]
        for t in tasks:
            await mesh.nodes["a"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        mesh.nodes["b"].ack("e0")
        await asyncio.sleep(1.0)
        assert "e0" not in mesh.nodes["a"].results
        await asyncio.sleep(6.0)
        for node in mesh.nodes.values():
            assert len(node.results) == 0  # expired everywhere
            assert node.queue_depth == 0
            assert not node._claimed and not node._standby
        await mesh.close()

    run_virtual(main())


def test_mesh_wide_counters_are_visible_from_any_peer() -> None:
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        tasks = [f"c{i}" for i in range(30)]
        for t in tasks:
            await mesh.nodes["a"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        await asyncio.sleep(1.0)
        for node in mesh.nodes.values():
            assert node.counter("executions") == 30
            assert sum(node.counters_by_peer("executions").values()) == 30
            assert node.counter("enqueued") == 30
        await mesh.close()

    run_virtual(main())


def test_deferred_task_is_picked_up_by_the_periodic_reclaim_without_a_nudge() -> None:
    """An owner that lacks the op stands by; once a peer that has it joins, it runs - no new enqueue."""

    async def main() -> None:
        fabric = MemoryFabric(seed=8)
        log = ExecLog()
        bare = await WarpNode(fabric.join("bare"), registry=OpRegistry(), config=FAST).start()
        await asyncio.sleep(0.5)
        await bare.enqueue("waiting", "echo", {"task": "waiting"})
        await asyncio.sleep(2.0)
        assert "waiting" not in bare.results
        able = await WarpNode(fabric.join("able"), registry=recording_registry(log, "able"), config=FAST).start()
        await bare.outcome("waiting", timeout=10)
        assert log.executed_by("waiting") == ["able"]
        await bare.close()
        await able.close()
        await fabric.close()

    run_virtual(main())


def test_injected_roster_source_drives_the_ring() -> None:
    async def main() -> None:
        from warpmesh.aio import Observable

        fabric = MemoryFabric(seed=9)
        log = ExecLog()
        roster = Observable(frozenset({"A"}))
        a = await WarpNode(fabric.join("A"), registry=recording_registry(log, "A"), config=FAST, roster=roster).start()
        b = await WarpNode(fabric.join("B"), registry=recording_registry(log, "B"), config=FAST, roster=roster).start()
        await asyncio.sleep(1.0)
        for i in range(4):
            await a.enqueue(f"solo{i}", "echo", {"task": f"solo{i}"})
        await a.wait_idle([f"solo{i}" for i in range(4)], timeout=10)
        assert {p for p, _ in log.runs} == {"A"}
        roster.set(frozenset({"A", "B"}))
        await asyncio.sleep(1.0)
        for i in range(20):
            await a.enqueue(f"duo{i}", "echo", {"task": f"duo{i}"})
        await a.wait_idle([f"duo{i}" for i in range(20)], timeout=10)
        assert {p for p, t in log.runs if t.startswith("duo")} == {"A", "B"}
        await a.close()
        await b.close()
        await fabric.close()

    run_virtual(main())


def test_client_role_enqueues_but_never_runs() -> None:
    async def main() -> None:
        mesh = await make_mesh(["w1", "w2"])
        client = await mesh.add("cli", role="client")
        await asyncio.sleep(1.0)
        assert "cli" not in mesh.nodes["w1"].workers
        tasks = [f"k{i}" for i in range(20)]
        for t in tasks:
            await client.enqueue(t, "echo", {"task": t})
        for t in tasks:
            await client.outcome(t, timeout=10)
        assert {p for p, _ in mesh.log.runs} <= {"w1", "w2"}
        await mesh.close()

    run_virtual(main())


def test_enqueue_raises_not_replicated_when_isolated_and_a_retry_with_the_same_run_runs_once() -> None:
    async def main() -> None:
        from warpmesh.warp import NotReplicated

        mesh = await make_mesh(["a", "b", "c"])
        mesh.fabric.isolate("a")
        await eventually(lambda: mesh.nodes["a"].liveness.live.value == {"a"}, what="a isolated")
        try:
            await mesh.nodes["a"].enqueue("retry-me", "echo", {"task": "retry-me"})
        except NotReplicated as err:
            run = err.run
            assert "queued only on this peer" in str(err)
        else:
            raise AssertionError("an isolated peer cannot confirm replication")
        assert mesh.nodes["a"].queue_depth == 1  # still queued locally
        assert await mesh.nodes["b"].enqueue("retry-me", "echo", {"task": "retry-me"}, run=run) == run
        await mesh.nodes["b"].outcome("retry-me", timeout=10, run=run)
        mesh.fabric.heal()
        await mesh.nodes["a"].outcome("retry-me", timeout=10, run=run)
        await asyncio.sleep(2.0)
        # Each side of the partition may run it once (availability); the shared run token means
        # one answer for one run, and no third execution after the heal.
        assert 1 <= len(mesh.log.executed_by("retry-me")) <= 2
        answers = {n.results["retry-me"] for n in mesh.nodes.values()}
        assert len(answers) == 1 and answers.pop().run == run
        await mesh.close()

    run_virtual(main())


def test_enqueue_on_a_mesh_of_one_returns_at_once() -> None:
    async def main() -> None:
        mesh = await make_mesh(["solo"])
        run = await mesh.nodes["solo"].enqueue("t", "echo", {"task": "t"})
        assert (await mesh.nodes["solo"].outcome("t", timeout=5)).run == run
        await mesh.close()

    run_virtual(main())


def test_owner_adopts_an_answer_whose_writer_died_before_dequeuing_it() -> None:
    """The writer of an answer crashed between its two writes, and its answer reached one peer only:
    the ring owner must not just dequeue (a second crash would lose the answer for good) but adopt
    it - write it again as its own update - and dequeue once a majority acked that."""
    from warpmesh.warp.model import OpResult
    from warpmesh.wire.frame import pack

    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        ring = mesh.nodes["a"].ring
        task = next(t for t in (f"adopt{i}" for i in range(100)) if ring.owner(t) == "b")
        # Pinned to a peer that never comes, so nobody runs it: only the ghost's answer exists.
        run = await mesh.nodes["a"].enqueue(task, "echo", {"task": task}, pin="ghost")
        await eventually(lambda: all(task in n.queue.state for n in mesh.nodes.values()), what="task queued")
        owner = mesh.nodes["b"]
        wire = pack(OpResult.success(run, "from-ghost", by="ghost").to_wire())
        owner.results_board.mutate(lambda m: m.update("ghost@1", task, lambda cur: cur.set("ghost@1", wire)))
        await eventually(lambda: all(task not in n.queue.state for n in mesh.nodes.values()), timeout=10,
                         what="task dequeued everywhere")
        for node in mesh.nodes.values():
            await eventually(lambda node=node: getattr(node.results_board.state.get(task), "replica", None)
                             == owner.replica,
                             what=f"{node.self_id} holds the adopted answer")
            assert node.results[task].value == "from-ghost" and node.results[task].run == run
        await eventually(lambda: mesh.nodes["a"].counter("adopted") == 1, what="adoption counted")
        assert mesh.log.executed_by(task) == []
        await mesh.close()

    run_virtual(main())


def test_an_answer_whose_writer_is_alive_is_left_for_the_writer_to_dequeue() -> None:
    """The owner leaves a live writer's answer alone (its dequeuer removes it once a majority holds
    it); it adopts nothing, so a busy mesh pays no second write per answer."""
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        tasks = [f"w{i}" for i in range(40)]
        for t in tasks:
            await mesh.nodes["a"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        await eventually(lambda: all(not n.queue.state.keys() for n in mesh.nodes.values()), timeout=10,
                         what="queues drained")
        await asyncio.sleep(1.0)
        assert all(n.counter("adopted") == 0 for n in mesh.nodes.values())
        await mesh.close()

    run_virtual(main())


def test_enqueue_many_queues_every_item_at_once_or_none_of_them() -> None:
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        a = mesh.nodes["a"]
        v0 = a.queue.core.version
        tasks = [f"many-{i}" for i in range(50)]
        runs = a.enqueue_many([(t, "echo", ({"task": t},)) for t in tasks])
        assert len(set(runs)) == 50 and all(t in a.queue.state for t in tasks)
        assert a.queue.core.version == v0 + 1  # one queue update for the whole batch
        with pytest.raises(TypeError, match="cannot be encoded"):
            a.enqueue_many([("ok-1", "echo", ({"task": "ok-1"},)), ("bad", "echo", (object(),))])
        assert "ok-1" not in a.queue.state and "bad" not in a.queue.state
        await mesh.await_results(tasks)
        for t, run in zip(tasks, runs):
            assert (await mesh.nodes["c"].outcome(t, timeout=10)).run == run
        assert sorted(mesh.log.per_task().values()) == [1] * 50
        await mesh.close()

    run_virtual(main())


def test_a_burst_of_inline_runs_writes_its_answers_as_one_update() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=3)
        log = ExecLog()
        node = await WarpNode(fabric.join("solo"), registry=recording_registry(log, "solo"), config=FAST).start()
        tasks = [f"burst-{i}" for i in range(200)]
        node.enqueue_many([(t, "echo", ({"task": t},)) for t in tasks])
        v0 = node.results_board.core.version
        await eventually(lambda: len(node.results) == 200, what="every answer")
        # 200 answers; the dispatcher yields every 5 ms at most, so a handful of updates, not 200.
        assert node.results_board.core.version - v0 <= 10
        assert all(node.results[t].value == f"result-{t}" for t in tasks)
        await eventually(lambda: node.queue_depth == 0, what="the queue emptied")
        assert sorted(log.per_task().values()) == [1] * 200
        await node.close()
        await fabric.close()

    run_virtual(main())


def test_an_acknowledged_answer_is_not_run_again_while_its_dequeue_is_on_its_way() -> None:
    """An ack removes a task's answer and its queue entry, on two boards that travel separately.

    A runner whose own dequeue is still batching sees the queue entry without an answer when the
    answer's removal arrives first: it must not run that run again (it ran it, and the answer is
    gone because someone read it)."""
    async def main() -> None:
        from dataclasses import replace

        mesh = await make_mesh(["a", "b"], config=replace(FAST, dequeue_batch=5.0))
        a, b = mesh.nodes["a"], mesh.nodes["b"]
        task = next(t for t in (f"k{i}" for i in range(100)) if b.core.ring.owner(t) == "b")
        await a.enqueue(task, "echo", {"task": task})
        await mesh.await_results([task])
        assert mesh.log.per_task() == {task: 1}
        # The ack's answer removal reaches b ahead of its queue removal; b's dequeue still waits.
        b.results_board.mutate(lambda m: m.remove(task))
        assert task in b.queue.state and task not in b.results
        b.core.claim_all(b.now())
        b._drain()
        await asyncio.sleep(1.0)
        assert mesh.log.per_task() == {task: 1}
        await mesh.close()

    run_virtual(main())


@pytest.mark.parametrize("linger", [0.1, 0.0])
def test_a_busy_peers_answers_leave_together_and_its_last_answer_at_once(linger: float) -> None:
    # b runs 12 jobs one after another (30 ms each): with answer_linger its answers share results
    # deltas (a CPU-bound peer sent each alone, to every peer, each acked); the last answer of the
    # spell is not held.
    async def main() -> None:
        from dataclasses import replace

        from warpmesh.net.memory import LinkFaults

        loop = asyncio.get_running_loop()
        ended: list[float] = []
        reg = OpRegistry()

        async def job(args: Any) -> Any:
            await asyncio.sleep(0.03)
            ended.append(loop.time())
            return args["task"]

        reg.register("job", job)
        cfg = replace(FAST, max_concurrency=1, answer_linger=linger)
        fabric = MemoryFabric(seed=11, faults=LinkFaults(delay=0.001))
        mesh = Mesh(fabric, ExecLog(), cfg)
        a = await mesh.add("a")
        b = await mesh.add("b", registry=reg)
        await mesh.settle(1.0)
        seen: dict[str, float] = {}
        a.add_result_listener(lambda keys: [seen.setdefault(k, loop.time()) for k in keys])
        before = b.results_board.core.stats["out_delta"]
        tasks = [f"j{i}" for i in range(12)]
        for t in tasks:
            await a.enqueue(t, "job", {"task": t}, pin="b")
        for t in tasks:
            assert (await a.outcome(t, timeout=10.0)).value == t
        deltas = b.results_board.core.stats["out_delta"] - before
        if linger:
            assert deltas <= 6, deltas  # 12 answers 30 ms apart, held up to 100 ms
        else:
            assert deltas >= 10, deltas
        assert len(ended) == 12 and max(seen.values()) - max(ended) < 0.02  # the last one: at once
        await mesh.close()

    run_virtual(main())


@pytest.mark.parametrize("busy", [1.0, 0.05])
def test_a_busy_peer_holds_its_counters_and_sends_them_when_it_falls_idle(busy: float) -> None:
    # b runs 12 jobs one after another (30 ms each, 0.36 s in all). While it is busy its counter
    # increments wait counter_flush_busy; once idle, what the spell counted leaves on the idle
    # schedule (counter_flush), not when the busy interval would have ended.
    async def main() -> None:
        from dataclasses import replace

        from warpmesh.net.memory import LinkFaults

        loop = asyncio.get_running_loop()
        reg = OpRegistry()

        async def job(args: Any) -> Any:
            await asyncio.sleep(0.03)
            return args["task"]

        reg.register("job", job)
        cfg = replace(FAST, max_concurrency=1, counter_flush=0.05, counter_flush_busy=busy)
        fabric = MemoryFabric(seed=11, faults=LinkFaults(delay=0.001))
        mesh = Mesh(fabric, ExecLog(), cfg)
        a = await mesh.add("a")
        b = await mesh.add("b", registry=reg)
        await mesh.settle(1.0)
        before = b.counters.core.stats["out_delta"]
        tasks = [f"j{i}" for i in range(12)]
        for t in tasks:
            await a.enqueue(t, "job", {"task": t}, pin="b")
        for t in tasks:
            await a.outcome(t, timeout=10.0)
        done = loop.time()
        while a.counter("executions") < 12:
            await asyncio.sleep(0.005)
        lag = loop.time() - done
        deltas = b.counters.core.stats["out_delta"] - before
        if busy > 0.5:
            assert deltas <= 2, deltas  # the whole busy spell in one flush (two if it straddles one)
        else:
            assert deltas >= 4, deltas  # one flush per 50 ms of the 0.36 s spell
        assert lag < 0.2, lag  # not the 1 s busy interval: flushed on falling idle
        await mesh.close()

    run_virtual(main())


def test_a_run_enqueued_again_after_its_answer_was_acknowledged_is_not_run_again_and_leaves() -> None:
    # A retry with the same run token (NotReplicated's advice, or a forwarded enqueue's late copy)
    # that lands after the answer was read and acknowledged: the run is done. Its new queue entry
    # must leave the queue - it used to stay there for ever, its runner remembering it had run it.
    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        a, b = mesh.nodes["a"], mesh.nodes["b"]
        run = await a.enqueue("once", "echo", {"task": "once"})
        assert await a.result("once", timeout=10.0) == "result-once"
        await eventually(lambda: all("once" not in n.queue.state for n in mesh.nodes.values()), 10.0, "dequeued")
        a.ack("once")
        await eventually(lambda: all("once" not in n.results_board.state for n in mesh.nodes.values()), 10.0,
                         "acknowledged everywhere")
        await b.enqueue("once", "echo", {"task": "once"}, run=run)  # the same run, again
        await eventually(lambda: all("once" not in n.queue.state for n in mesh.nodes.values()), 10.0,
                         "the repeated run left the queue")
        assert mesh.log.executed_by("once") and len(mesh.log.executed_by("once")) == 1
        await mesh.close()

    run_virtual(main())


def test_status_says_when_ownership_has_settled_after_a_join() -> None:
    """``status()["settled"]``: False while a peer's view changed less than a settle window ago
    (claims then settle before running), True once every reachable worker shows the same view."""

    async def main() -> tuple[bool, bool, bool, list[str]]:
        mesh = await make_mesh(["peer-1", "peer-2"])
        settled_before = all(n.status()["settled"] for n in mesh.nodes.values())
        await mesh.add("peer-3")
        await eventually(lambda: all(len(n.status()["live_workers"]) == 3 for n in mesh.nodes.values()),
                         what="every peer sees the newcomer")
        just_after = mesh.nodes["peer-1"].status()["settled"]
        await eventually(lambda: all(n.status()["settled"] for n in mesh.nodes.values()),
                         timeout=mesh.config.settle_window + 5, what="ownership settled everywhere")
        settled_after = all(n.status()["settled"] for n in mesh.nodes.values())
        workers = mesh.nodes["peer-3"].status()["live_workers"]
        await mesh.close()
        return settled_before, just_after, settled_after, workers

    before, just_after, after, workers = run_virtual(main())
    assert before and not just_after and after
    assert workers == ["peer-1", "peer-2", "peer-3"]
