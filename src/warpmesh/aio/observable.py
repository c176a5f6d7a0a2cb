"""``Observable``: a value that changes over time and can be awaited (like a StateFlow)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Observable(Generic[T]):
    """Holds a current value; readers can await a change or a predicate.

    Setting an equal value is a no-op, so readers only wake on real changes. Iteration with
    :meth:`updates` is conflated: a slow reader sees the latest value, not every intermediate one.
    """

    __slots__ = ("_value", "_version", "_waiters")

    def __init__(self, value: T) -> None:
        self._value = value
        self._version = 0
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def value(self) -> T:
        return self._value

    @property
    def version(self) -> int:
        """Increments on every change; lets a reader tell whether it missed an update."""
        return self._version

    def set(self, value: T) -> None:
        if value == self._value:
            return
        self._value = value
        self._version += 1
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def changed(self, since: int | None = None) -> T:
        """Wait until the version differs from ``since`` (default: the current version)."""
        start = self._version if since is None else since
        while self._version == start:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            await fut
        return self._value

    async def wait_for(self, predicate: Callable[[T], bool], timeout: float | None = None) -> T:
        """Return the first value satisfying ``predicate`` (immediately if the current one does)."""

        async def _wait() -> T:
            while not predicate(self._value):
                await self.changed()
            return self._value

        if timeout is None:
            return await _wait()
        return await asyncio.wait_for(_wait(), timeout)

    async def updates(self) -> AsyncIterator[T]:
        """Yield the current value, then each new value (conflated) forever."""
        version = self._version
        yield self._value
        while True:
            await self.changed(version)
            version = self._version
            yield self._value

    def __repr__(self) -> str:
        return f"Observable({self._value!r})"
