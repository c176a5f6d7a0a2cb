"""A bounded FIFO queue that can be closed, waking every reader and writer.

``asyncio.Queue`` gains ``shutdown()`` only in Python 3.13; subscriptions need it on 3.11.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from warpmesh.errors import Closed

T = TypeVar("T")


class QueueClosed(Closed):
    """The queue was closed: ``put`` fails at once, ``get`` fails once the queue is drained."""


class ClosableQueue(Generic[T]):
    """Bounded FIFO with backpressure: ``put`` waits while the queue holds ``maxsize`` items."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def put_nowait(self, item: T) -> bool:
        """Append if there is room; return False when full. Raises :class:`QueueClosed`."""
        if self._closed:
            raise QueueClosed
        if len(self._items) >= self.maxsize:
            return False
        self._items.append(item)
        self._wake(self._getters)
        return True

    async def put(self, item: T) -> None:
        while not self.put_nowait(item):
            fut = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                fut.cancel()
                # Pass our wake-up on so a cancelled writer does not strand the next one.
                if not self.full():
                    self._wake(self._putters)
                raise

    def get_nowait(self) -> T:
        """Pop the oldest item. Raises ``asyncio.QueueEmpty`` or, when closed and drained, QueueClosed."""
        if self._items:
            item = self._items.popleft()
            self._wake(self._putters)
            return item
        if self._closed:
            raise QueueClosed
        raise asyncio.QueueEmpty

    async def get(self) -> T:
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                pass
            fut = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                fut.cancel()
                if self._items:
                    self._wake(self._getters)
                raise

    def close(self) -> None:
        """Refuse further puts; readers drain what is left, then get :class:`QueueClosed`."""
        if self._closed:
            return
        self._closed = True
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)
