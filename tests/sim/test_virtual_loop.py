"""The virtual-time loop jumps to the next timer, keeps order, and reports a stalled system."""

from __future__ import annotations

import asyncio
import time

import pytest

from warpmesh.sim import SimulationStalled, run_virtual


def test_an_hour_of_sleeps_runs_instantly_and_in_order() -> None:
    order: list[tuple[float, str]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        order.append((asyncio.get_running_loop().time(), name))

    async def main() -> float:
        await asyncio.gather(sleeper("c", 3600), sleeper("a", 1), sleeper("b", 60))
        return asyncio.get_running_loop().time()

    started = time.perf_counter()
    end = run_virtual(main())
    assert time.perf_counter() - started < 2
    assert [n for _, n in order] == ["a", "b", "c"]
    assert end == pytest.approx(3600)


def test_waiting_forever_is_reported_as_a_stall() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(SimulationStalled):
        from warpmesh.sim.loop import VirtualTimeLoop

        loop = VirtualTimeLoop(stall_timeout=0.05)
        try:
            loop.run_until_complete(main())
        finally:
            loop.close()


def test_timeouts_fire_on_virtual_time() -> None:
    async def main() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 5)
        assert asyncio.get_running_loop().time() == pytest.approx(5)

    run_virtual(main())


def test_the_clock_holds_while_a_thread_works_for_the_simulation() -> None:
    # A thread-mode job's answer must land at about the virtual time it started, however long the
    # thread takes in real time; meanwhile a busy timer chain (heartbeats, ticks) must not run the
    # clock past the caller's timeout before the thread is even scheduled.
    async def main() -> tuple[float, float, int]:
        loop = asyncio.get_running_loop()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        t = loop.create_task(ticker())
        start = loop.time()
        value = await asyncio.wait_for(asyncio.to_thread(lambda: time.sleep(0.05) or 7), timeout=1.0)
        took = loop.time() - start
        t.cancel()
        return took, value, ticks

    took, value, ticks = run_virtual(main())
    assert value == 7
    assert took < 0.01 and ticks < 10, (took, ticks)
