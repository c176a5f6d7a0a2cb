"""Small asyncio building blocks shared by the runtimes: observables, closable bounded queues."""

from warpmesh.aio.observable import Observable
from warpmesh.aio.queue import ClosableQueue, QueueClosed

__all__ = ["ClosableQueue", "Observable", "QueueClosed"]
