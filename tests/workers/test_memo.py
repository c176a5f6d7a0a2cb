"""Memoization, single-flight, failures not cached, and cycle detection."""

from __future__ import annotations

import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from warpmesh.workers import FailureKind, IsolateHost, JobContext, JobError, Runner, Store

from .conftest import wat_file


def wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.005)


def test_twenty_concurrent_identical_requests_run_once(runner: Runner) -> None:
    calls = []
    release = threading.Event()

    def slow(ctx: JobContext) -> bytes:
        calls.append(1)
        assert release.wait(30)
        return b"done:" + ctx.arg_bytes("x")

    runner.register_op("slow", slow)
    req = runner.request("slow", {"x": "1"})
    with ThreadPoolExecutor(20) as ex:
        futures = [ex.submit(runner.run_request, req) for _ in range(20)]
        wait_for(lambda: (f := runner.flights.get(req.key)) is not None and f.waiters == 19)
        release.set()
        results = [f.result() for f in futures]
    assert len(calls) == 1
    assert {r.ref for r in results} == {results[0].ref}
    assert sorted(r.source for r in results) == ["flight"] * 19 + ["run"]
    assert runner.run_request(req).source == "memo"
    assert len(calls) == 1


def test_concurrent_identical_wasm_requests_execute_once(runner: Runner) -> None:
    chain = runner.put_module(wat_file("chain"))
    args = {"n": struct.pack("<I", 3), "w": struct.pack("<I", 2), "i": b""}
    with ThreadPoolExecutor(20) as ex:
        results = list(ex.map(lambda _: runner.run(chain, args), range(20)))
    assert {struct.unpack("<I", runner.store.get_blob(r.ref.id))[0] for r in results} == {15}
    assert sum(r.source == "run" for r in results) == 1
    # one execution per distinct request in the tree: chain(n, 2, i) for n = 3..0 and i in {"", 0, 1}
    assert runner.executions == 1 + 2 + 2 + 2


def test_memo_survives_a_restart(tmp_path: Path, host: IsolateHost) -> None:
    calls = []

    def op(ctx: JobContext) -> str:
        calls.append(1)
        return "v"

    with Store(tmp_path / "s") as store, Runner(store, host) as r1:
        r1.register_op("op", op)
        first = r1.run("op", {"a": "1"})
    with Store(tmp_path / "s") as store, Runner(store, host) as r2:
        r2.register_op("op", op)
        again = r2.run("op", {"a": "1"})
    assert again.source == "memo" and again.ref == first.ref and len(calls) == 1


def test_failures_are_not_cached(runner: Runner) -> None:
    calls = []

    def flaky(ctx: JobContext) -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("transient")
        return "fine"

    runner.register_op("flaky", flaky)
    with pytest.raises(JobError) as info:
        runner.run("flaky")
    assert info.value.kind is FailureKind.OP_FAILED and "transient" in str(info.value)
    assert runner.run("flaky").source == "run"
    assert runner.run("flaky").source == "memo"
    assert len(calls) == 2


def test_a_result_that_swallowed_a_nested_failure_is_not_memoized(runner: Runner) -> None:
    calls = {"inner": 0, "outer": 0, "top": 0}

    def inner(ctx: JobContext) -> str:
        calls["inner"] += 1
        raise RuntimeError("inner failed")

    def outer(ctx: JobContext) -> str:
        calls["outer"] += 1
        (res,) = ctx.run_many([("inner", None)])
        return "swallowed" if isinstance(res, JobError) else "ok"

    def top(ctx: JobContext) -> str:
        calls["top"] += 1
        return ctx.run("outer").ref.hex

    for name, fn in (("inner", inner), ("outer", outer), ("top", top)):
        runner.register_op(name, fn)
    a = runner.run("top")
    b = runner.run("top")
    assert not a.clean and not b.clean and a.ref == b.ref
    assert calls == {"inner": 2, "outer": 2, "top": 2}


def test_unhashable_arguments_are_errors(runner: Runner) -> None:
    from warpmesh.workers import CanonicalError

    for bad in (1.5, True, None, [1, 2], {1, 2}, object(), lambda: 0):
        with pytest.raises(CanonicalError) as info:
            runner.request("op", {"cfg": {"inner": bad}})
        assert "args.cfg.inner" in str(info.value)


def test_a_guest_running_itself_fails_fast_naming_the_cycle(runner: Runner) -> None:
    mid = runner.put_module(wat_file("selfrun"))
    res = runner.run(mid, {"x": "1"})
    msg = runner.store.get_blob(res.ref.id).decode()
    assert msg.startswith("job_failed: cycle: request runs itself: ")
    short_key = res.key.hex()[:12]
    assert msg.count(short_key) == 2 and msg.count(f"wasm:{mid.hex()[:12]}") == 2
    assert not res.clean  # it saw a nested failure: not memoized
    assert runner.run(mid, {"x": "1"}).source == "run"


def test_two_op_cycle_names_every_step(runner: Runner) -> None:
    runner.register_op("ping", lambda ctx: ctx.run("pong", {"v": ctx.arg_bytes("v")}).ref)
    runner.register_op("pong", lambda ctx: ctx.run("ping", {"v": ctx.arg_bytes("v")}).ref)
    with pytest.raises(JobError) as info:
        runner.run("ping", {"v": "1"})
    # the innermost failure is the cycle; each level re-raises it
    assert info.value.kind is FailureKind.CYCLE
    text = str(info.value)
    assert text.count("op:ping@1") == 2 and text.count("op:pong@1") == 1


def test_cross_thread_waits_cycle_fails_instead_of_deadlocking(runner: Runner) -> None:
    # x and y start concurrently, then each asks for the other; neither is on the other's stack, so
    # only the waits-for check between flights can see the cycle.
    barrier = threading.Barrier(2, timeout=30)

    def x(ctx: JobContext) -> str:
        barrier.wait()
        return ctx.run("y").ref.hex

    def y(ctx: JobContext) -> str:
        barrier.wait()
        time.sleep(0.05)  # let x register its wait first (the check holds either way round)
        return ctx.run("x").ref.hex

    runner.register_op("x", x)
    runner.register_op("y", y)
    with ThreadPoolExecutor(2) as ex:
        fx = ex.submit(runner.run, "x")
        fy = ex.submit(runner.run, "y")
        errors = []
        for f in (fx, fy):
            try:
                f.result(timeout=60)
            except JobError as exc:
                errors.append(exc)
    assert errors and all(e.kind is FailureKind.CYCLE for e in errors)
    assert any("wait on each other" in str(e) and "op:x@1" in str(e) and "op:y@1" in str(e) for e in errors)


def test_missing_module_is_fetched_and_verified_before_use(tmp_path: Path, host: IsolateHost) -> None:
    from warpmesh.workers import Kind, Ref, blob_id

    from .conftest import wat

    wasm = wat(r"""(module
      (import "warpmesh_abi_v1" "call" (func $call (param i32 i32 i32) (result i32)))
      (memory (export "memory") 1) (data (i32.const 0) "\03peer")
      (func (export "warpmesh_run") (drop (call $call (i32.const 8) (i32.const 0) (i32.const 5)))))""")
    mid = blob_id(wasm)
    asked: list[Ref] = []
    tampered = bytearray(wasm)
    tampered[-1] ^= 0xFF

    with Store(tmp_path / "bad") as store, Runner(store, host, fetch=lambda ref: asked.append(ref) or bytes(tampered)) as r:
        with pytest.raises(JobError) as info:
            r.run(mid)
        assert info.value.kind is FailureKind.WORKER_NOT_FOUND
        assert asked == [Ref(Kind.BLOB, mid)] and not store.has(mid)  # refused before anything used it
    with Store(tmp_path / "good") as store, Runner(store, host, fetch=lambda ref: wasm) as r:
        res = r.run(mid)
        assert store.get_blob(res.ref.id) == b"peer" and store.get_blob(mid) == wasm


class _Board:
    """A stand-in for a shared results board: a dict other runners can see."""

    def __init__(self) -> None:
        self.entries: dict[bytes, object] = {}

    def lookup(self, key: bytes):  # type: ignore[no-untyped-def]
        return self.entries.get(key)

    def lookup_many(self, keys: list[bytes]):  # type: ignore[no-untyped-def]
        return {k: self.entries[k] for k in keys if k in self.entries}

    def publish(self, key: bytes, ref) -> None:  # type: ignore[no-untyped-def]
        self.entries[key] = ref


def test_a_shared_results_backend_makes_a_result_a_hit_elsewhere(tmp_path: Path, host: IsolateHost) -> None:
    board = _Board()
    objects: dict[bytes, bytes] = {}
    calls = []

    def op(ctx: JobContext) -> str:
        calls.append(1)
        return "computed once"

    with Store(tmp_path / "a") as sa, Runner(sa, host, results=board) as a:
        a.register_op("op", op)
        first = a.run("op", {"x": "1"})
        objects[first.ref.id] = sa.get_blob(first.ref.id)
    with Store(tmp_path / "b") as sb, Runner(sb, host, results=board, fetch=lambda ref: objects.get(ref.id)) as b:
        b.register_op("op", op)
        again = b.run("op", {"x": "1"})
        assert again.source == "memo" and sb.get_blob(again.ref.id) == b"computed once"
    assert len(calls) == 1


def test_a_dashboard_sees_runs_in_flight_and_memo_lookups(runner: Runner) -> None:
    import asyncio

    from warpmesh.observe import bus
    from warpmesh.observe.board import Board
    from warpmesh.observe.hub import Event

    release = threading.Event()

    def slow(ctx: JobContext) -> bytes:
        assert release.wait(30)
        return b"ok"

    runner.register_op("slow-seen", slow)

    async def main() -> tuple[list[int], list[str]]:
        board, kinds, running = Board(), [], []
        remove = bus.add_sink(lambda kind, node, detail: (kinds.append(kind), board.apply(
            Event(kind=kind, at=0.0, node=node, job=None, peer=None, detail=dict(detail)))))
        try:
            loop = asyncio.get_running_loop()
            run = loop.run_in_executor(None, runner.run, "slow-seen")
            while board.isolates_running == 0:
                await asyncio.sleep(0.005)
            running.append(board.isolates_running)  # the run is in flight
            release.set()
            assert (await run).source == "run"
            await asyncio.sleep(0.05)
            running.append(board.isolates_running)  # and done
            assert (await loop.run_in_executor(None, runner.run, "slow-seen")).source == "memo"
            await asyncio.sleep(0.05)
        finally:
            remove()
        return running, kinds

    running, kinds = asyncio.run(main())
    assert running == [1, 0]
    assert kinds == ["memo_miss", "isolate_started", "isolate_finished", "memo_hit"]
