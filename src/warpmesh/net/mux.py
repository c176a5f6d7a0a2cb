"""``MuxSeam``: independent logical channels over one seam, tagged with one leading byte.

Each channel is itself a :class:`~warpmesh.net.seam.Seam` with the parent's identity and roster.
A handler on the parent routes each frame by its tag into the channel's own
:class:`~warpmesh.net.seam.IncomingHub`, so every subscriber keeps its own bounded queue. Frames with
an unknown tag, or for a channel nobody subscribes to, are counted in ``unrouted``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable

from warpmesh.net.seam import (
    DEFAULT_SUBSCRIPTION_SIZE,
    Handler,
    IncomingHub,
    PeerId,
    Seam,
    Subscription,
)


class ChannelSeam(Seam):
    """One tagged channel of a :class:`MuxSeam`."""

    def __init__(self, mux: MuxSeam, tag: int) -> None:
        self._mux = mux
        self.tag = tag
        self._prefix = bytes((tag,))
        self.hub = IncomingHub()
        self.self_id = mux.parent.self_id
        self.roster = mux.parent.roster
        self.max_payload = mux.parent.max_payload - 1

    async def send_to(self, peer: PeerId, data: bytes) -> None:
        if self._mux.on_send is not None:
            self._mux.on_send(peer)
        await self._mux.parent.send_to(peer, self._prefix + data)

    async def broadcast(self, data: bytes) -> None:
        if self._mux.on_send is not None:
            self._mux.on_send(None)
        await self._mux.parent.broadcast(self._prefix + data)

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        sub = self.hub.subscribe(maxsize)
        self._mux._ensure_routing()
        return sub

    def add_handler(self, handler: Handler) -> Callable[[], None]:
        remove = self.hub.add_handler(handler)
        self._mux._ensure_routing()
        return remove

    @property
    def closed(self) -> bool:
        return self._mux.parent.closed or self._mux.closed

    async def close(self) -> None:
        """Close this channel only; the parent seam and sibling channels go on."""
        self.hub.close()
        self._mux._channels.pop(self.tag, None)


class MuxSeam:
    """Multiplex 1-byte-tagged channels over ``parent``. Create channels before traffic arrives.

    Routing runs as a handler inside the parent's delivery (no task, no queue of its own); each
    channel then hands the frame to its own handlers and bounded subscriptions, so backpressure
    from a full channel subscriber still reaches the link.
    """

    def __init__(self, parent: Seam) -> None:
        self.parent = parent
        self._channels: dict[int, ChannelSeam] = {}
        self._remove_route: Callable[[], None] | None = None
        self.closed = False
        #: Frames dropped because no channel (or no subscriber) claimed them, by tag.
        self.unrouted: Counter[int] = Counter()
        #: Called with the destination (None: broadcast) of every frame a channel sends; liveness
        #: uses it to skip heartbeats to peers that just heard from us anyway.
        self.on_send: Callable[[PeerId | None], None] | None = None

    def channel(self, tag: int) -> ChannelSeam:
        """The channel for ``tag`` (0..255), created on first use."""
        if not 0 <= tag <= 0xFF:
            raise ValueError(f"channel tag {tag} must be in 0..255")
        ch = self._channels.get(tag)
        if ch is None:
            ch = self._channels[tag] = ChannelSeam(self, tag)
        return ch

    def _ensure_routing(self) -> None:
        if self._remove_route is None and not self.closed:
            self._remove_route = self.parent.add_handler(self._route)

    def _route(self, sender: PeerId, data: bytes) -> Awaitable[None] | None:
        if not data:
            self.unrouted[-1] += 1
            return None
        ch = self._channels.get(data[0])
        if ch is None or ch.hub.subscribers == 0:
            self.unrouted[data[0]] += 1
            return None
        return ch.hub.deliver_nowait(sender, data[1:])

    async def close(self) -> None:
        """Stop routing and end every channel's subscriptions (the parent seam stays open)."""
        self.closed = True
        if self._remove_route is not None:
            self._remove_route()
            self._remove_route = None
        for ch in list(self._channels.values()):
            ch.hub.close()
