"""``SubsetSeam``: a seam restricted to some of its parent's peers.

It sends only to the peers it allows and delivers only what they send; its roster is the parent's
roster cut to them (self always included). A Warp cell's boards run on one each (see docs/warp.md,
"Cells"): a board replicated on a subset seam is replicated among those peers only, and a frame
from any other peer - a peer of another cell, or one whose cell is not known yet - never reaches it.
Who is allowed is set by the owner (:meth:`allow`), not learned from the traffic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from warpmesh.aio.observable import Observable
from warpmesh.net.seam import (
    DEFAULT_SUBSCRIPTION_SIZE,
    Handler,
    IncomingHub,
    PeerId,
    PeerUnreachable,
    Seam,
    Subscription,
)


class SubsetSeam(Seam):
    """``parent`` cut to the peers :meth:`allow` names."""

    def __init__(self, parent: Seam, allowed: Iterable[PeerId] = ()) -> None:
        self.parent = parent
        self.self_id = parent.self_id
        self.max_payload = parent.max_payload
        self.hub = IncomingHub()
        self._allowed = frozenset(allowed) - {self.self_id}
        self.roster: Observable[frozenset[PeerId]] = Observable(self._cut(parent.roster.value))
        #: Frames dropped because their sender is not allowed.
        self.refused = 0
        self._closed = False
        self._remove: Callable[[], None] | None = None

    def _cut(self, roster: frozenset[PeerId]) -> frozenset[PeerId]:
        return (roster & self._allowed) | {self.self_id}

    @property
    def allowed(self) -> frozenset[PeerId]:
        """The peers (besides self) this seam talks to."""
        return self._allowed

    def allow(self, peers: Iterable[PeerId], roster: frozenset[PeerId] | None = None) -> None:
        """Talk to ``peers`` from now on; the roster becomes ``roster`` (default: the parent's) cut
        to them. Call it again whenever either changes."""
        self._allowed = frozenset(peers) - {self.self_id}
        self.roster.set(self._cut(self.parent.roster.value if roster is None else roster))

    def _on_frame(self, sender: PeerId, data: bytes) -> Awaitable[None] | None:
        if sender not in self._allowed:
            self.refused += 1
            return None
        return self.hub.deliver_nowait(sender, data)

    def _route(self) -> None:
        if self._remove is None and not self._closed:
            self._remove = self.parent.add_handler(self._on_frame)

    def add_handler(self, handler: Handler) -> Callable[[], None]:
        remove = self.hub.add_handler(handler)
        self._route()
        return remove

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        sub = self.hub.subscribe(maxsize)
        self._route()
        return sub

    async def send_to(self, peer: PeerId, data: bytes) -> None:
        if peer not in self._allowed:
            raise PeerUnreachable(peer)
        await self.parent.send_to(peer, data)

    async def broadcast(self, data: bytes) -> None:
        for peer in sorted(self.roster.value):
            if peer == self.self_id:
                continue
            try:
                await self.parent.send_to(peer, data)
            except PeerUnreachable:
                continue

    @property
    def closed(self) -> bool:
        return self._closed or self.parent.closed

    async def close(self) -> None:
        """Stop delivering (the parent seam goes on)."""
        self._closed = True
        if self._remove is not None:
            self._remove()
            self._remove = None
        self.hub.close()
