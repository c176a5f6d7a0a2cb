"""Small asyncio building blocks shared by the runtimes: observables, closable bounded queues,
shutdown of task groups."""

from warpmesh.aio.observable import Observable
from warpmesh.aio.queue import ClosableQueue, QueueClosed
from warpmesh.aio.tasks import cancel_and_wait

__all__ = ["ClosableQueue", "Observable", "QueueClosed", "cancel_and_wait"]
