"""``VirtualTimeLoop``: asyncio with a virtual clock, for deterministic simulation.

The loop's ``time()`` is virtual. Whenever the loop would sleep until its next timer, the clock jumps
there instead, so a simulated hour of heartbeats and timeouts runs in milliseconds and, given the
same inputs and seed, runs the same way every time. Ready callbacks run in FIFO order as in any
asyncio loop; nothing here reads the wall clock.

Rules for code under simulation: take time from ``loop.time()`` (never ``time.time()``), randomness
from a seeded ``random.Random`` passed in, iterate sets of peers in sorted order, and do not use
threads or real sockets (a stalled loop with no timers raises :class:`SimulationStalled`). Work
handed to an executor (``run_in_executor``, ``asyncio.to_thread``: thread- and process-mode ops) is
tolerated: while any is running the clock holds, waiting up to ``stall_timeout`` real seconds per
step for it to answer, so a thread's result lands at about the virtual time it was started.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import Any, TypeVar, TypeVarTuple, Unpack

from warpmesh.errors import WarpmeshError

T = TypeVar("T")
_Ts = TypeVarTuple("_Ts")


#: Loop steps between polls of the real selector while callbacks or timers are pending.
_POLL_EVERY = 64


class SimulationStalled(WarpmeshError, RuntimeError):
    """Every task is waiting and no timer is pending: the simulated system can never progress."""


class _VirtualSelector(selectors.BaseSelector):
    """Wraps the real selector (the loop's self-pipe lives there) and advances virtual time."""

    def __init__(self, loop: VirtualTimeLoop, stall_timeout: float) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()
        self._stall_timeout = stall_timeout
        self._polls = 0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        # Only the loop's self-pipe is registered (a signal, or another thread's call_soon_threadsafe).
        # Before virtual time moves it is always polled (a thread's result must land before the
        # clock runs on); while callbacks are ready (timeout 0, no time passes) only every
        # _POLL_EVERY steps.
        self._polls += 1
        if timeout != 0 or self._polls >= _POLL_EVERY:
            self._polls = 0
            events = self._real.select(0)
            if events:
                return events
        if timeout is None:
            # Nothing ready and no timer: only another thread could wake us (call_soon_threadsafe).
            events = self._real.select(self._stall_timeout)
            if not events:
                raise SimulationStalled(
                    f"no runnable task and no pending timer at virtual t={self._loop.time():.6f}s"
                )
            return events
        if timeout > 0:
            if self._loop._in_executor:
                # A thread or pool process is working for the simulation: the clock holds until it
                # answers (on the self-pipe), as a real clock would barely move meanwhile. Without
                # this a whole virtual timeout could pass before the worker was even scheduled.
                events = self._real.select(self._stall_timeout)
                if events:
                    return events
            self._loop._advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.get_key(fileobj)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on virtual time. ``time()`` starts at ``start`` and only jumps forward."""

    def __init__(self, start: float = 0.0, *, stall_timeout: float = 5.0) -> None:
        self._vnow = float(start)
        self._in_executor = 0  # run_in_executor calls not answered yet
        super().__init__(selector=_VirtualSelector(self, stall_timeout))

    def run_in_executor(self, executor: Executor | None, func: Callable[[Unpack[_Ts]], T],
                        *args: *_Ts) -> asyncio.Future[T]:
        """As asyncio's, but virtual time holds while the work runs (see the module docstring)."""
        fut = super().run_in_executor(executor, func, *args)
        self._in_executor += 1
        fut.add_done_callback(self._executor_done)
        return fut

    def _executor_done(self, _fut: asyncio.Future[Any]) -> None:
        self._in_executor -= 1

    def time(self) -> float:
        return self._vnow

    def _advance(self, dt: float) -> None:
        self._vnow += dt

    def advance(self, dt: float) -> None:
        """Move the clock forward by ``dt`` seconds without running anything (for manual tests)."""
        if dt < 0:
            raise ValueError("virtual time never runs backwards")
        self._vnow += dt


def run_virtual(coro: Coroutine[Any, Any, T], *, start: float = 0.0, debug: bool = False) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualTimeLoop` and close the loop."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start), debug=debug) as runner:
        return runner.run(coro)
