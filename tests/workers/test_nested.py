"""Nested runs: run_many fan-out keeps order, deep chains never deadlock, depth is bounded."""

from __future__ import annotations

import struct

import pytest

from warpmesh.workers import FailureKind, IsolateHost, JobError, Runner, Store

from .conftest import wat_file


def chain_args(n: int, w: int) -> dict[str, bytes]:
    return {"n": struct.pack("<I", n), "w": struct.pack("<I", w), "i": b"top"}


def count(runner: Runner, n: int, w: int, salt: str = "") -> int:
    mid = runner.put_module(wat_file("chain"))
    res = runner.run(mid, chain_args(n, w), salt=salt)
    return struct.unpack("<I", runner.store.get_blob(res.ref.id))[0]


@pytest.mark.parametrize("parallelism, inline_limit", [(1, 24), (2, 24), (1, 4), (2, 2)])
def test_depth_32_chain_completes(store: Store, host: IsolateHost, parallelism: int, inline_limit: int) -> None:
    # With inline_limit below the depth, threads stop helping and hand children to (extra) pool
    # threads: the chain must still complete with one slot.
    with Runner(store, host, parallelism=parallelism, inline_limit=inline_limit) as runner:
        assert count(runner, 32, 1) == 33
        assert runner.executions == 33


def test_wide_and_deep_tree(runner: Runner) -> None:
    # 1 + 3 + 9 + 27 + 81 nodes; identical subtrees under different parents share one execution
    assert count(runner, 4, 3) == 121


def test_depth_limit_is_a_clean_failure(store: Store, host: IsolateHost) -> None:
    with Runner(store, host, max_depth=8) as runner:
        with pytest.raises(JobError) as info:
            count(runner, 20, 1)
        assert info.value.kind is FailureKind.TRAP  # the chain guest traps when a child fails
        assert count(runner, 5, 1, salt="ok") == 6  # and the runner keeps serving


def test_run_many_from_python_keeps_order(runner: Runner) -> None:
    runner.register_op("echo", lambda ctx: ctx.arg_bytes("v"))
    runner.register_op("boom", lambda ctx: 1 / 0)

    def fan(ctx):  # type: ignore[no-untyped-def]
        items = [("echo", {"v": str(i)}) if i % 5 else ("boom", {"v": str(i)}) for i in range(40)]
        results = ctx.run_many(items)
        return ",".join("E" if isinstance(r, JobError) else ctx.runner.store.get_blob(r.ref.id).decode()
                        for r in results)

    runner.register_op("fan", fan)
    out = runner.store.get_blob(runner.run("fan").ref.id).decode().split(",")
    assert out == ["E" if i % 5 == 0 else str(i) for i in range(40)]


def test_parent_waiting_on_children_holds_no_slot(store: Store, host: IsolateHost) -> None:
    # One slot, and every level waits on a child: impossible if waiting parents kept their slot.
    seen = []

    def level(ctx):  # type: ignore[no-untyped-def]
        n = int(ctx.arg_bytes("n"))
        seen.append(ctx.runner.pool.slots._value)  # free slots while this level runs
        if n == 0:
            return "0"
        return ctx.runner.store.get_blob(ctx.run("level", {"n": str(n - 1)}).ref.id) + b"+"

    with Runner(store, host, parallelism=1) as runner:
        runner.register_op("level", level)
        assert runner.store.get_blob(runner.run("level", {"n": "10"}).ref.id) == b"0" + b"+" * 10
    assert seen == [0] * 11


def test_one_slow_run_of_a_cheap_worker_does_not_spread_its_siblings(store: Store, host: IsolateHost) -> None:
    # A cheap job preempted once on a loaded machine looks costly for that one run: its siblings
    # must still run on the asking thread (spreading cheap jobs only makes threads fight the GIL).
    import threading
    import time

    threads: set[int] = set()

    def cheap(ctx):  # type: ignore[no-untyped-def]
        threads.add(threading.get_ident())
        if ctx.arg_bytes("v") == b"preempted":
            time.sleep(0.05)
        return ctx.arg_bytes("v")

    def fan(ctx):  # type: ignore[no-untyped-def]
        results = ctx.run_many([("cheap", {"v": str(i)}) for i in range(8)])
        return ",".join(ctx.runner.store.get_blob(r.ref.id).decode() for r in results)

    with Runner(store, host, parallelism=2) as runner:
        runner.register_op("cheap", cheap)
        runner.register_op("fan", fan)
        for v in ("a", "b", "preempted"):
            runner.run("cheap", {"v": v})
        from warpmesh.workers.request import OpWorker
        from warpmesh.workers.runner import SPREAD_MIN_S

        assert runner._cost[OpWorker("cheap")] < SPREAD_MIN_S  # still known cheap
        threads.clear()
        runner.run("fan")
        assert threads == {threading.get_ident()}


def test_the_top_level_api_is_refused_inside_a_job(runner: Runner) -> None:
    runner.register_op("leaf", lambda ctx: "x")
    runner.register_op("bad", lambda ctx: ctx.runner.run("leaf").ref)
    with pytest.raises(JobError) as info:
        runner.run("bad")
    assert info.value.kind is FailureKind.OP_FAILED and "ctx.run" in str(info.value)


def test_cheap_children_run_on_the_asking_thread_and_costly_ones_spread(store: Store, host: IsolateHost) -> None:
    # Under the GIL a thread hand-off costs more than a cheap job saves: once a worker is known to
    # be cheap, its siblings run one after another on the parent's thread. A costly worker (or one
    # not measured yet) is spread over the pool.
    import threading
    import time

    threads: dict[str, set[int]] = {"cheap": set(), "costly": set()}

    def cheap(ctx):  # type: ignore[no-untyped-def]
        threads["cheap"].add(threading.get_ident())
        return ctx.arg_bytes("v")

    def costly(ctx):  # type: ignore[no-untyped-def]
        threads["costly"].add(threading.get_ident())
        time.sleep(0.02)  # releases the GIL, as wasm compute does
        return ctx.arg_bytes("v")

    def fan(ctx):  # type: ignore[no-untyped-def]
        op = ctx.arg_bytes("op").decode()
        results = ctx.run_many([(op, {"v": str(i)}) for i in range(8)])
        return ",".join(ctx.runner.store.get_blob(r.ref.id).decode() for r in results)

    with Runner(store, host, parallelism=2) as runner:
        for op in ("cheap", "costly"):
            runner.register_op(op, cheap if op == "cheap" else costly)
        runner.register_op("fan", fan)
        runner.run("cheap", {"v": "warm"})  # measured once: cheap from now on
        threads["cheap"].clear()
        runner.run("fan", {"op": "cheap"})
        assert threads["cheap"] == {threading.get_ident()}
        runner.run("fan", {"op": "costly"}, salt="1")
        assert len(threads["costly"]) >= 2  # the caller helps, pool threads take the rest
