"""The event-loop process pool: answers, errors with the worker's traceback, deaths, and kills
that stop exactly one call."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from warpmesh.aio.procpool import ProcessPool, RemoteTraceback, WorkerDied
from warpmesh.errors import Closed

from . import pool_ops


def run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def test_calls_answer_and_errors_carry_the_workers_traceback() -> None:
    async def main() -> None:
        with ProcessPool(2) as pool:
            assert await asyncio.gather(*(pool.run(pool_ops.square, i) for i in range(20))) == [
                i * i for i in range(20)]
            with pytest.raises(ValueError, match="no good") as info:
                await pool.run(pool_ops.fail, "no good")
            assert isinstance(info.value.__cause__, RemoteTraceback)
            assert "pool_ops.py" in str(info.value.__cause__) and "in fail" in str(info.value.__cause__)
            assert pool.started <= 2  # workers are reused, not started per call

    run(main)


def test_what_cannot_travel_fails_the_call_not_the_pool() -> None:
    async def main() -> None:
        with ProcessPool(1) as pool:
            with pytest.raises(Exception, match=r"(?i)pickle|attribute"):
                await pool.run(lambda: 1)  # a lambda cannot be sent to a worker
            with pytest.raises(RuntimeError, match="cannot be sent back"):
                await pool.run(pool_ops.unpicklable_result)
            # Raised in the worker, they would stop the event loop or the program here.
            with pytest.raises(RuntimeError, match="KeyboardInterrupt"):
                await pool.run(pool_ops.interrupt)
            with pytest.raises(SystemExit):
                await pool.run(pool_ops.sys_exit)
            assert await pool.run(pool_ops.square, 3) == 9
            assert pool.started == 1  # none of that cost the worker its life

    run(main)


def test_a_worker_that_dies_fails_its_call_with_the_exit_status_and_is_replaced() -> None:
    async def main() -> None:
        with ProcessPool(1) as pool:
            first = await pool.run(pool_ops.pid)
            with pytest.raises(WorkerDied, match="exit code 7") as info:
                await pool.run(pool_ops.exit_with, 7)
            assert info.value.exitcode == 7
            second = await pool.run(pool_ops.pid)
            assert second != first and pool.started == 2

    run(main)


def test_killing_a_running_call_kills_its_process_only() -> None:
    async def main() -> None:
        with ProcessPool(2) as pool:
            pool.start_workers()
            long = pool.submit(pool_ops.nap, (60.0,))
            short = pool.submit(pool_ops.nap, (1.0,))
            waiting = pool.submit(pool_ops.square, (5,))
            await asyncio.sleep(0.5)
            assert long.started and short.started and not waiting.started and pool.busy == 2
            t0 = time.monotonic()
            long.kill()
            with pytest.raises(asyncio.CancelledError):
                await long.result()
            # The sibling finishes its first and only run; the waiting call takes the freed slot
            # in a new process.
            assert await waiting.result() == 25
            short_pid = await short.result()
            assert time.monotonic() - t0 < 1.0
            assert pool.started == 3 and short_pid in {w.proc.pid for w in pool._workers}

    run(main)


def test_killing_a_waiting_call_drops_it_and_close_leaves_no_process() -> None:
    async def main() -> None:
        pool = ProcessPool(1)
        busy = pool.submit(pool_ops.nap, (30.0,))
        queued = pool.submit(pool_ops.square, (2,))
        await asyncio.sleep(0.3)
        queued.kill()
        with pytest.raises(asyncio.CancelledError):
            await queued.result()
        procs = [w.proc for w in pool._workers]
        assert len(procs) == 1 and busy.started
        pool.close()
        with pytest.raises(asyncio.CancelledError):
            await busy.result()
        assert all(p.exitcode is not None for p in procs)  # killed and reaped: no zombie
        with pytest.raises(Closed, match="closed"):
            pool.submit(pool_ops.square, (1,))

    run(main)


def test_workers_ignore_ctrl_c_meant_for_the_parent() -> None:
    import signal

    async def main() -> None:
        with ProcessPool(1) as pool:
            # Once the worker runs (a Ctrl-C while it is still starting up kills it, as it would
            # any process that has not yet set its handlers: the pool reports WorkerDied then).
            await pool.submit(pool_ops.pid, ()).result()
            call = pool.submit(pool_ops.nap, (0.5,))
            await asyncio.sleep(0.2)
            for w in pool._workers:
                os.kill(w.proc.pid, signal.SIGINT)
            assert isinstance(await call.result(), int)

    run(main)
