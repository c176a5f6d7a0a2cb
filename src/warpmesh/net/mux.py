"""``MuxSeam``: independent logical channels over one seam, tagged with one leading byte.

Each channel is itself a :class:`~warpmesh.net.seam.Seam` with the parent's identity and roster.
One pump task reads the parent once and routes each frame by its tag into the channel's own
:class:`~warpmesh.net.seam.IncomingHub`, so every subscriber keeps its own bounded queue. Frames with
an unknown tag, or for a channel nobody subscribes to, are counted in ``unrouted``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from warpmesh.net.seam import (
    DEFAULT_SUBSCRIPTION_SIZE,
    IncomingHub,
    PeerId,
    Seam,
    SeamClosed,
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
        await self._mux.parent.send_to(peer, self._prefix + data)

    async def broadcast(self, data: bytes) -> None:
        await self._mux.parent.broadcast(self._prefix + data)

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        sub = self.hub.subscribe(maxsize)
        self._mux._ensure_pump()
        return sub

    @property
    def closed(self) -> bool:
        return self._mux.parent.closed or self._mux.closed

    async def close(self) -> None:
        """Close this channel only; the parent seam and sibling channels go on."""
        self.hub.close()
        self._mux._channels.pop(self.tag, None)


class MuxSeam:
    """Multiplex 1-byte-tagged channels over ``parent``. Create channels before traffic arrives."""

    def __init__(self, parent: Seam) -> None:
        self.parent = parent
        self._channels: dict[int, ChannelSeam] = {}
        self._pump: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self.closed = False
        #: Frames dropped because no channel (or no subscriber) claimed them, by tag.
        self.unrouted: Counter[int] = Counter()

    def channel(self, tag: int) -> ChannelSeam:
        """The channel for ``tag`` (0..255), created on first use."""
        if not 0 <= tag <= 0xFF:
            raise ValueError(f"channel tag {tag} must be in 0..255")
        ch = self._channels.get(tag)
        if ch is None:
            ch = self._channels[tag] = ChannelSeam(self, tag)
        return ch

    def _ensure_pump(self) -> None:
        if self._pump is None and not self.closed:
            self._sub = self.parent.subscribe()
            self._pump = asyncio.get_running_loop().create_task(self._run(self._sub))

    async def _run(self, sub: Subscription) -> None:
        try:
            while True:
                try:
                    sender, data = await sub.get()
                except SeamClosed:
                    break
                if not data:
                    self.unrouted[-1] += 1
                    continue
                ch = self._channels.get(data[0])
                if ch is None or ch.hub.subscribers == 0:
                    self.unrouted[data[0]] += 1
                    continue
                await ch.hub.deliver(sender, data[1:])
        finally:
            for ch in list(self._channels.values()):
                ch.hub.close()

    async def close(self) -> None:
        """Stop routing and end every channel's subscriptions (the parent seam stays open)."""
        self.closed = True
        if self._sub is not None:
            self._sub.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        for ch in list(self._channels.values()):
            ch.hub.close()
