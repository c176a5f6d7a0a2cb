"""``Seam``: one peer's symmetric view of a mesh session, independent of the transport.

A seam has an identity (``self_id``), an observable ``roster`` of live peers (self included), sends
(``send_to``, ``broadcast``) and any number of *subscriptions* to incoming ``(sender, data)`` pairs.

Unlike the reference (one shared 256-frame buffer that drops the oldest frame when any reader is
slow), every subscriber has its own bounded queue and delivery *waits* for room: a slow reader slows
the link down (TCP flow control does the rest) instead of losing frames. A subscriber that stops
reading must close its subscription.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeAlias

from warpmesh.aio.observable import Observable
from warpmesh.aio.queue import ClosableQueue, QueueClosed
from warpmesh.errors import Closed, Unavailable

PeerId: TypeAlias = str

#: A synchronous frame handler: called with ``(sender, data)`` inside delivery. It may return an
#: awaitable, which delivery awaits (that is how a handler applies backpressure), or None.
Handler: TypeAlias = Callable[[PeerId, bytes], "Awaitable[None] | None"]

log = logging.getLogger("warpmesh.net")

#: Frames buffered per subscriber before delivery waits. Deep enough to absorb a burst of deltas
#: from a busy peer without stalling the link; shallow enough to bound memory per subscriber.
DEFAULT_SUBSCRIPTION_SIZE = 4096


def boot_incarnation() -> int:
    """A fresh incarnation for this boot: microseconds since the epoch.

    Higher on every restart as long as the wall clock does not step back; a node that persists a boot
    counter can pass that instead. The one place warpmesh derives an incarnation from the clock.
    """
    return time.time_ns() // 1000


def seam_incarnation(seam: object) -> int:
    """The incarnation of the peer behind ``seam``: the transport's own (TCP mesh, memory fabric) if it
    has one, else a fresh :func:`boot_incarnation`. Components that name replicas (``node@incarnation``)
    use it so every unit on one seam agrees on the incarnation."""
    inc = getattr(seam, "incarnation", None)
    return int(inc) if inc else boot_incarnation()


class SeamClosed(Closed):
    """The seam (or subscription) is closed."""


class PeerUnreachable(Unavailable):
    """``send_to`` named a peer that is not in the roster (not connected)."""

    def __init__(self, peer: PeerId) -> None:
        super().__init__(f"peer {peer!r} is not connected")
        self.peer = peer


class Subscription(AsyncIterator[tuple[PeerId, bytes]]):
    """One subscriber's bounded, ordered stream of ``(sender, data)``; ends when closed."""

    def __init__(self, hub: IncomingHub, maxsize: int) -> None:
        self._hub = hub
        self._queue: ClosableQueue[tuple[PeerId, bytes]] = ClosableQueue(maxsize)

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._queue.closed

    async def get(self) -> tuple[PeerId, bytes]:
        """Next ``(sender, data)``; raises :class:`SeamClosed` once closed and drained."""
        try:
            return await self._queue.get()
        except QueueClosed:
            raise SeamClosed from None

    def get_nowait(self) -> tuple[PeerId, bytes] | None:
        """Next item if one is buffered, else None. Raises :class:`SeamClosed` once closed and drained."""
        try:
            return self._queue.get_nowait()
        except QueueClosed:
            raise SeamClosed from None
        except Exception:  # asyncio.QueueEmpty
            return None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> tuple[PeerId, bytes]:
        try:
            return await self._queue.get()
        except QueueClosed:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving; buffered items can still be drained."""
        self._queue.close()
        self._hub._discard(self)


class IncomingHub:
    """Fans incoming frames out to every handler and subscription, with backpressure.

    *Handlers* run synchronously inside delivery, in registration order: the zero-copy, zero-task
    path the mesh's own layers use (mux routing, failure detection, anti-entropy). A handler that
    raises is logged and counted in ``handler_errors``; it never breaks the link that delivered.
    *Subscriptions* are independent bounded queues; delivery waits for room in each.
    """

    def __init__(self) -> None:
        self._subs: list[Subscription] = []
        self._handlers: list[Handler] = []
        self._closed = False
        #: Frames that arrived while nobody was subscribed (counted, never silent).
        self.unsubscribed_drops = 0
        self.delivered = 0
        self.handler_errors = 0

    def add_handler(self, handler: Handler) -> Callable[[], None]:
        """Register ``handler``; returns a function that removes it."""
        self._handlers.append(handler)

        def remove() -> None:
            if handler in self._handlers:
                self._handlers.remove(handler)

        return remove

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        sub = Subscription(self, maxsize)
        if self._closed:
            sub._queue.close()
        else:
            self._subs.append(sub)
        return sub

    def _discard(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs) + len(self._handlers)

    async def deliver(self, sender: PeerId, data: bytes) -> None:
        """Hand ``(sender, data)`` to every handler and subscriber, waiting while any is full."""
        pending = self.deliver_nowait(sender, data)
        if pending is not None:
            await pending

    def deliver_nowait(self, sender: PeerId, data: bytes) -> Awaitable[None] | None:
        """Deliver at once where nothing has to wait; else return an awaitable that finishes it.

        The caller must await that before delivering the next frame of the same link, so frames
        stay in order and backpressure reaches the link.
        """
        handlers = self._handlers
        for i in range(len(handlers)):
            pending = self._call(handlers[i], sender, data)
            if pending is not None:
                return self._finish(pending, tuple(handlers[i + 1:]), 0, sender, data)
        subs = self._subs
        if not subs:
            if handlers:
                self.delivered += 1
            else:
                self.unsubscribed_drops += 1
            return None
        item = (sender, data)
        for j in range(len(subs)):
            q = subs[j]._queue
            if not q.closed and not q.put_nowait(item):
                return self._finish(None, (), j, sender, data)
        self.delivered += 1
        return None

    def _call(self, handler: Handler, sender: PeerId, data: bytes) -> Awaitable[None] | None:
        try:
            return handler(sender, data)
        except Exception:
            self.handler_errors += 1
            log.exception("frame handler %r failed on a frame from %s", handler, sender)
            return None

    async def _finish(self, pending: Awaitable[None] | None, handlers: tuple[Handler, ...], first_sub: int,
                      sender: PeerId, data: bytes) -> None:
        try:
            if pending is not None:
                await pending
        except Exception:
            self.handler_errors += 1
            log.exception("frame handler failed on a frame from %s", sender)
        for handler in handlers:
            more = self._call(handler, sender, data)
            if more is not None:
                try:
                    await more
                except Exception:
                    self.handler_errors += 1
                    log.exception("frame handler %r failed on a frame from %s", handler, sender)
        item = (sender, data)
        for sub in tuple(self._subs)[first_sub:]:
            q = sub._queue
            if q.closed:
                continue
            if not q.put_nowait(item):
                try:
                    await q.put(item)
                except QueueClosed:
                    continue
        self.delivered += 1

    def close(self) -> None:
        self._closed = True
        for sub in self._subs:
            sub._queue.close()
        self._subs.clear()
        self._handlers.clear()


class Seam(abc.ABC):
    """One peer's view of a mesh session. Implementations: memory fabric, TCP mesh, mux channels."""

    #: This peer's id, unique in the mesh.
    self_id: PeerId
    #: Live peers, self included. Transport-level: a peer is here while its link is up.
    roster: Observable[frozenset[PeerId]]
    #: Largest ``data`` accepted by ``send_to``/``broadcast``.
    max_payload: int
    #: Where incoming frames are delivered (subscriptions and handlers hang off it).
    hub: IncomingHub

    @abc.abstractmethod
    async def send_to(self, peer: PeerId, data: bytes) -> None:
        """Send to one peer (waits while the link is congested). Raises :class:`PeerUnreachable`."""

    async def broadcast(self, data: bytes) -> None:
        """Send to every roster peer except self; best effort (unreachable peers are skipped)."""
        for peer in sorted(self.roster.value):
            if peer == self.self_id:
                continue
            try:
                await self.send_to(peer, data)
            except PeerUnreachable:
                continue

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        """A new, independent stream of incoming ``(sender, data)``."""
        return self.hub.subscribe(maxsize)

    def incoming(self) -> Subscription:
        """Shorthand for :meth:`subscribe` with the default queue size."""
        return self.subscribe()

    def add_handler(self, handler: Handler) -> Callable[[], None]:
        """Run ``handler(sender, data)`` synchronously for every incoming frame (see IncomingHub).

        For the mesh's own layers: no queue and no task per frame. Returns a remover.
        """
        return self.hub.add_handler(handler)

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    @abc.abstractmethod
    async def close(self) -> None:
        """Leave the mesh; subscriptions end after their buffered frames."""

    def peers(self) -> frozenset[PeerId]:
        """The roster without self."""
        return self.roster.value - {self.self_id}
