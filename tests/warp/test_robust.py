"""One bad job never stops a node (issue 9): unencodable or oversized results, undecodable
arguments, dying pool processes, remote tracebacks, cancel and deadlines, the calling convention."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from warpmesh.net.memory import MemoryFabric
from warpmesh.sim import run_virtual
from warpmesh.warp import OpRegistry, TaskDescriptor, TaskFailed, WarpConfig, WarpNode, current_job
from warpmesh.warp.model import MAX_TRACEBACK
from warpmesh.wire.frame import pack

from .harness import FAST

SET_MESSAGE = ("result of weird.set is not encodable: set; return lists, dicts, str, bytes, numbers, bool or "
               "None, or register a codec")


async def _solo(reg: OpRegistry, config: WarpConfig = FAST, **kw: Any) -> tuple[MemoryFabric, WarpNode]:
    fabric = MemoryFabric(seed=1)
    node = await WarpNode(fabric.join("solo"), registry=reg, config=config, **kw).start()
    return fabric, node


async def _stop(fabric: MemoryFabric, *nodes: WarpNode) -> None:
    for node in nodes:
        await node.close()
    await fabric.close()


@pytest.mark.parametrize("mode", ["inline", "thread", "async"])
def test_unencodable_result_fails_clearly_and_the_node_keeps_serving(mode: str) -> None:
    reg = OpRegistry()
    if mode == "async":
        async def weird(x: Any = None) -> Any:
            return {1, 2, 3}
        reg.register("weird.set", weird)
    else:
        reg.register("weird.set", lambda x=None: {1, 2, 3}, mode=mode)  # type: ignore[arg-type]
    reg.register("ok", lambda x: x + 1, mode="inline")

    async def main() -> None:
        fabric, node = await _solo(reg)
        await node.enqueue("w", "weird.set")
        res = await node.outcome("w", timeout=5)
        assert not res.ok and res.error == SET_MESSAGE
        await node.enqueue("next", "ok", 41)
        assert await node.result("next", timeout=5) == 42
        assert node.local_stats["failures"] == 1
        await _stop(fabric, node)

    run_virtual(main())


def test_nested_unencodable_value_is_named() -> None:
    reg = OpRegistry()
    reg.register("nested", lambda: {"a": [1, object()]}, mode="inline")

    async def main() -> None:
        fabric, node = await _solo(reg)
        await node.enqueue("n", "nested")
        res = await node.outcome("n", timeout=5)
        assert res.error is not None and "not encodable: object;" in res.error
        await _stop(fabric, node)

    run_virtual(main())


def test_oversized_result_fails_with_the_limit() -> None:
    reg = OpRegistry()
    reg.register("big", lambda: b"x" * (4 * 2**20 + 1), mode="inline")
    reg.register("ok", lambda: "fine", mode="inline")

    async def main() -> None:
        fabric, node = await _solo(reg)
        await node.enqueue("big", "big")
        res = await node.outcome("big", timeout=5)
        assert not res.ok and "over the 4 MiB limit" in (res.error or "")
        await node.enqueue("ok", "ok")
        assert await node.result("ok", timeout=5) == "fine"
        await _stop(fabric, node)

    run_virtual(main())


def test_undecodable_arguments_fail_the_run_instead_of_sitting_in_the_queue() -> None:
    reg = OpRegistry()
    reg.register("op", lambda *a: a, mode="inline")

    async def main() -> None:
        fabric, node = await _solo(reg)
        for task, packed in (("garbage", b"\xc1"), ("shape", pack({"not": "a list"}))):
            desc = TaskDescriptor(op="op", run=f"r-{task}", enqueued_by="x", packed_args=packed)
            wire, rep = pack(desc.to_wire()), node.replica
            node.queue.mutate(lambda m, t=task, w=wire, r=rep: m.update(r, t, lambda cur: cur.set(r, w)))
            res = await node.outcome(task, timeout=5)
            assert not res.ok and "arguments of op cannot be decoded" in (res.error or "")
        await node.enqueue("fine", "op", 1, 2)
        assert await node.result("fine", timeout=5) == [1, 2]
        await _stop(fabric, node)

    run_virtual(main())


def test_unencodable_arguments_are_refused_at_enqueue() -> None:
    async def main() -> None:
        fabric, node = await _solo(OpRegistry())
        with pytest.raises(TypeError, match="arguments of op cannot be encoded"):
            node.enqueue_nowait("t", "op", {1, 2})
        assert node.queue_depth == 0
        await _stop(fabric, node)

    run_virtual(main())


def test_calling_convention_args_kwargs_result_and_outcome() -> None:
    reg = OpRegistry()
    reg.register("add", lambda a, b, scale=1: (a + b) * scale, mode="inline")

    async def echo_kw(**kw: Any) -> Any:
        return kw

    reg.register("kw", echo_kw)

    async def main() -> None:
        fabric, node = await _solo(reg)
        await node.enqueue("a", "add", 2, 3)
        await node.enqueue("b", "add", 2, 3, scale=10)
        # the reserved names are pin, run and deadline; everything else reaches the op
        await node.enqueue("c", "kw", task_id="x", op="y")
        assert await node.result("a", timeout=5) == 5
        assert await node.result("b", timeout=5) == 50
        assert await node.result("c", timeout=5) == {"task_id": "x", "op": "y"}
        rec = await node.outcome("b", timeout=5)
        assert rec.ok and rec.value == 50 and rec.by == "solo"
        await _stop(fabric, node)

    run_virtual(main())


def _long() -> None:
    raise ValueError("x" * 20_000 + " deep trouble")


def test_failure_carries_a_capped_remote_traceback_and_raises_task_failed() -> None:
    reg = OpRegistry()

    def explode(x: int) -> None:
        raise ValueError(f"bad value {x}")

    reg.register("explode", explode, mode="inline")
    reg.register("deep", _long, mode="inline")

    async def main() -> None:
        fabric, node = await _solo(reg)
        await node.enqueue("e", "explode", 7)
        rec = await node.outcome("e", timeout=5)
        assert rec.error == "ValueError: bad value 7"
        assert rec.traceback is not None and "in explode" in rec.traceback and "raise ValueError" in rec.traceback
        with pytest.raises(TaskFailed) as info:
            await node.result("e", timeout=5)
        assert info.value.error == "ValueError: bad value 7" and info.value.traceback == rec.traceback
        assert "in explode" in str(info.value) and "ValueError: bad value 7" in str(info.value)
        await node.enqueue("d", "deep")
        deep = await node.outcome("d", timeout=5)
        assert deep.traceback is not None and len(deep.traceback.encode()) <= MAX_TRACEBACK
        assert "bytes cut" in deep.traceback and deep.traceback.rstrip().endswith("x deep trouble")
        assert deep.error is not None and len(deep.error) < 1100 and "characters cut" in deep.error
        await _stop(fabric, node)

    run_virtual(main())


def test_an_op_calling_sys_exit_fails_its_job_only() -> None:
    import sys

    reg = OpRegistry()
    reg.register("quit", lambda: sys.exit(3), mode="inline")
    reg.register("ok", lambda: 1, mode="inline")

    async def main() -> None:
        fabric, node = await _solo(reg)
        await node.enqueue("q", "quit")
        assert (await node.outcome("q", timeout=5)).error == "SystemExit: 3"
        await node.enqueue("ok", "ok")
        assert await node.result("ok", timeout=5) == 1
        await _stop(fabric, node)

    run_virtual(main())


def test_cancel_interrupts_an_async_job_and_removes_a_queued_one() -> None:
    reg = OpRegistry()
    seen: list[str] = []

    async def slow(x: int) -> int:
        try:
            await asyncio.sleep(1000)
        except asyncio.CancelledError:
            job = current_job()
            seen.append(f"cancelled {job.task if job else '?'}")
            raise
        return x

    reg.register("slow", slow)

    async def main() -> None:
        fabric = MemoryFabric(seed=2)
        a = await WarpNode(fabric.join("a"), registry=reg, config=FAST).start()
        b = await WarpNode(fabric.join("b"), registry=OpRegistry(), config=FAST).start()  # serves nothing
        await asyncio.sleep(1.0)
        await b.enqueue("run", "slow", 1)
        await asyncio.sleep(0.5)
        assert a._jobs, "the job should be running on a"
        assert b.cancel("run") == "cancelled"  # from the other peer: travels on the results board
        rec = await a.outcome("run", timeout=5)
        assert not rec.ok and rec.cancelled
        with pytest.raises(TaskFailed) as info:
            await a.result("run", timeout=5)
        assert info.value.cancelled
        for _ in range(40):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen == ["cancelled run"]
        # a job nobody can run stays queued until cancelled, and then leaves the queue
        b.enqueue_nowait("stuck", "missing.op")
        await asyncio.sleep(0.5)
        assert a.cancel("stuck") == "cancelled"
        assert a.cancel("stuck") == "done" and a.cancel("never-heard-of") == "unknown"
        for _ in range(100):
            if "stuck" not in a.queue.state and "stuck" not in b.queue.state and "run" not in a.queue.state:
                break
            await asyncio.sleep(0.1)
        assert "stuck" not in a.queue.state and "stuck" not in b.queue.state and "run" not in a.queue.state
        await _stop(fabric, a, b)

    run_virtual(main())


def test_deadline_cancels_a_running_job_and_one_that_starts_too_late() -> None:
    reg = OpRegistry()

    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept"

    reg.register("slow", slow)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        fabric, node = await _solo(reg, wall_clock=loop.time)
        await node.enqueue("late", "slow", 100.0, deadline=1.0)
        await node.enqueue("quick", "slow", 0.1, deadline=5.0)
        rec = await node.outcome("late", timeout=5)
        assert rec.cancelled and rec.error == "deadline passed while running"
        assert await node.result("quick", timeout=5) == "slept"
        with pytest.raises(ValueError, match="deadline"):
            node.enqueue_nowait("bad", "slow", 1, deadline=-1)
        await _stop(fabric, node)

    run_virtual(main())


def test_a_cancelled_thread_job_is_told_and_its_result_discarded() -> None:
    reg = OpRegistry()
    told = threading.Event()

    def patient() -> str:
        job = current_job()
        assert job is not None
        if job.wait_cancelled(10):
            told.set()
        return "too late"

    reg.register("patient", patient, mode="thread")

    async def main() -> None:
        fabric, node = await _solo(reg)
        await node.enqueue("p", "patient")
        for _ in range(100):
            if node._jobs:
                break
            await asyncio.sleep(0.01)
        assert node.cancel("p") == "cancelled"
        await asyncio.to_thread(told.wait, 5)
        await asyncio.sleep(0.2)
        rec = await node.outcome("p", timeout=5)
        assert told.is_set() and rec.cancelled and rec.value is None
        await _stop(fabric, node)

    asyncio.run(main())


def test_a_dying_pool_process_is_replaced_and_only_its_job_fails() -> None:
    from . import robust_ops

    reg = OpRegistry()
    reg.register("crash", robust_ops.crash, mode="process")
    reg.register("square", robust_ops.square, mode="process")
    from dataclasses import replace

    config = replace(FAST, process_workers=1, max_attempts=2, retry_backoff=0.01)

    async def main() -> None:
        fabric, node = await _solo(reg, config=config)
        await node.enqueue("boom", "crash", 1)
        rec = await node.outcome("boom", timeout=60)
        assert not rec.ok and rec.attempts == 2 and "worker process running crash died" in (rec.error or "")
        for i in range(3):
            await node.enqueue(f"sq{i}", "square", i)
        assert [await node.result(f"sq{i}", timeout=60) for i in range(3)] == [0, 1, 4]
        await _stop(fabric, node)

    asyncio.run(main())


def test_process_ops_defined_in_a_scripts_main_work_and_interactive_ones_are_told_how_to_fix(tmp_path: Any) -> None:
    import subprocess
    import sys

    script = '''"""A script serving a process op defined in its own __main__."""
import asyncio

from warpmesh.net.memory import MemoryFabric
from warpmesh.warp import OpRegistry, WarpNode

reg = OpRegistry()


def cube(x):
    return x ** 3


reg.register("cube", cube, mode="process")


async def main():
    fabric = MemoryFabric(seed=1)
    node = await WarpNode(fabric.join("solo"), registry=reg).start()
    await node.enqueue("c", "cube", 3)
    print(await node.result("c", timeout=60))
    await node.close()
    await fabric.close()


if __name__ == "__main__":
    asyncio.run(main())
'''
    path = tmp_path / "script.py"
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "27", out.stderr
    code = ("from warpmesh.warp import OpRegistry\ndef f(x): return x\n"
            "OpRegistry().register('f', f, mode='process')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "put it in a module" in out.stderr


def test_a_dead_peer_leaves_the_members_board_after_lost_after() -> None:
    from .harness import eventually, make_mesh

    async def main() -> None:
        mesh = await make_mesh(["a", "b", "c"])
        await eventually(lambda: all("c" in n.member_info() for n in mesh.nodes.values()), what="c known")
        await mesh.crash("c")
        await asyncio.sleep(1.0)
        assert "c" in mesh.nodes["a"].member_info()  # not before the failure detector gives it up
        await eventually(lambda: all("c" not in n.member_info() for n in mesh.nodes.values()), timeout=10,
                         what="c forgotten")
        assert set(mesh.nodes["a"].member_info()) == {"a", "b"}
        await mesh.close()

    run_virtual(main())


def test_cancelling_a_process_job_kills_its_process_only_and_the_sibling_runs_on() -> None:
    from dataclasses import replace

    from . import robust_ops

    reg = OpRegistry()
    reg.register("nap", robust_ops.nap, mode="process")
    config = replace(FAST, process_workers=2, max_attempts=1)

    async def main() -> None:
        fabric, node = await _solo(reg, config=config)
        loop = asyncio.get_running_loop()
        await node.enqueue("long", "nap", 60.0)
        await node.enqueue("short", "nap", 2.0)
        for _ in range(200):
            if len(node._jobs) == 2 and all(j.call is not None and j.call.started for j in node._jobs.values()):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # both running in their worker processes
        pool = node._process_pool
        assert pool is not None and pool.busy == 2
        started = loop.time()
        assert node.cancel("long") == "cancelled"
        rec = await node.outcome("long", timeout=10)
        assert rec.cancelled and loop.time() - started < 5
        # The sibling was not touched: it answers from its first and only run, within its own 2 s
        # (a pool that cannot tell its processes apart killed both and ran the short nap again).
        short = await node.outcome("short", timeout=60)
        assert short.ok and short.value == "rested" and short.attempts == 1
        assert loop.time() - started < 2.0
        assert node.counter("retries") == 0
        assert not node._jobs  # the cancelled run was really stopped, not left to finish
        await _stop(fabric, node)

    asyncio.run(main())


def test_job_context_cancel_reaches_a_waiter_whichever_comes_first() -> None:
    import threading

    from warpmesh.warp.context import JobContext

    early = JobContext("t", "r", "op")
    early.cancel("before the wait")
    assert early.cancelled and early.wait_cancelled(0.01) and early.reason == "before the wait"
    late = JobContext("t", "r", "op")
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(late.wait_cancelled(10)))
    waiter.start()
    while late._cancel is None:  # the waiter has made its event
        threading.Event().wait(0.001)
    late.cancel("while waiting")
    waiter.join(10)
    assert woke == [True] and not JobContext("t", "r", "op").wait_cancelled(0.01)
