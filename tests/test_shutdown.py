"""aio.cancel_and_wait: the one shutdown every runtime's close() uses."""

from __future__ import annotations

import asyncio

import pytest

from warpmesh.aio import cancel_and_wait


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _slow_to_stop(stopped: list[str]) -> None:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        await asyncio.sleep(0.01)  # cleans up before it lets go
        stopped.append("slow")
        raise


def test_every_task_is_finished_on_return() -> None:
    async def main() -> None:
        stopped: list[str] = []
        tasks = [asyncio.create_task(_forever()), asyncio.create_task(_slow_to_stop(stopped)), None]
        await asyncio.sleep(0)
        await cancel_and_wait(tasks)
        assert all(t.done() for t in tasks if t is not None)
        assert stopped == ["slow"]

    asyncio.run(main())


def test_expected_errors_are_dropped_and_others_raised_after_all_finished() -> None:
    class Expected(Exception):
        pass

    async def fails(exc: Exception) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise exc from None

    async def main() -> None:
        stopped: list[str] = []
        quiet = asyncio.create_task(fails(Expected()))
        await asyncio.sleep(0)
        await cancel_and_wait([quiet], swallow=(Expected,))
        loud = asyncio.create_task(fails(RuntimeError("bug")))
        slow = asyncio.create_task(_slow_to_stop(stopped))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="bug"):
            await cancel_and_wait([loud, slow], swallow=(Expected,))
        assert slow.done() and stopped == ["slow"]

    asyncio.run(main())


def test_a_cancelled_caller_still_waits_and_then_is_cancelled() -> None:
    async def main() -> None:
        stopped: list[str] = []
        child = asyncio.create_task(_slow_to_stop(stopped))
        await asyncio.sleep(0)
        closer = asyncio.create_task(cancel_and_wait([child]))
        await asyncio.sleep(0)
        closer.cancel()  # the owner is cancelled while its close() waits
        with pytest.raises(asyncio.CancelledError):
            await closer
        assert child.done() and stopped == ["slow"]  # the child was not abandoned half-stopped

    asyncio.run(main())
