"""``RaftTransport``: how a :class:`~warpmesh.raft.runtime.RaftNode` reaches its peers.

A transport sends opaque frames to a peer, best effort (a frame may be lost; Raft retries), and
delivers ``(sender, frame)`` pairs where the sender is the *authenticated* peer id: the core credits
votes and acknowledgements to it, so a transport must never let one peer speak for another.

:class:`SeamRaftTransport` adapts any :class:`~warpmesh.net.seam.Seam` (the in-memory fabric, the
TCP mesh, or a :class:`~warpmesh.net.mux.MuxSeam` channel). Implement :class:`RaftTransport`
directly to run Raft over something else.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable

from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import PeerUnreachable, Seam, SeamClosed, Subscription

#: Default MuxSeam channel of Raft (0x20-0x2F are reserved for Raft in docs/architecture.md).
RAFT_CHANNEL = 0x20


class RaftTransport(abc.ABC):
    """Frames to and from peers. ``send`` may drop; ``subscribe`` yields authenticated senders."""

    self_id: str
    #: Largest frame ``send`` accepts.
    max_payload: int

    @abc.abstractmethod
    async def send(self, peer: str, data: bytes) -> bool:
        """Send ``data`` to ``peer``; returns False if it was dropped (peer unreachable)."""

    @abc.abstractmethod
    def subscribe(self) -> Subscription:
        """The stream of incoming ``(sender, frame)``."""

    def add_handler(self, handler: Callable[[str, bytes], None]) -> Callable[[], None] | None:
        """Optionally call ``handler(sender, frame)`` for each incoming frame, inside delivery
        (no queue, no task hop); returns the call that removes it. None (the default) means
        "not supported": the node then reads :meth:`subscribe` instead."""
        return None

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the transport owns."""


class SeamRaftTransport(RaftTransport):
    """Raft over a seam. ``seam`` is used as is: pass a MuxSeam channel (see :meth:`over`) when other
    protocols share the same mesh."""

    def __init__(self, seam: Seam, *, owned_mux: MuxSeam | None = None) -> None:
        self.seam = seam
        self.self_id = seam.self_id
        self.max_payload = seam.max_payload
        self._mux = owned_mux
        self.dropped = 0
        self.oversize = 0

    @classmethod
    def over(cls, seam: Seam | MuxSeam, tag: int = RAFT_CHANNEL) -> SeamRaftTransport:
        """Raft on channel ``tag`` of ``seam`` (wrapping it in a MuxSeam if it is a plain seam)."""
        if not 0x20 <= tag <= 0x2F:
            raise ValueError(f"Raft channel tags are 0x20-0x2F, got {tag:#x}")
        if isinstance(seam, MuxSeam):
            return cls(seam.channel(tag))
        mux = MuxSeam(seam)
        return cls(mux.channel(tag), owned_mux=mux)

    async def send(self, peer: str, data: bytes) -> bool:
        try:
            await self.seam.send_to(peer, data)
            return True
        except (PeerUnreachable, SeamClosed):
            # A missing peer is a partition to Raft: it retries when the peer is back.
            self.dropped += 1
            return False
        except ValueError:
            # Over the transport's frame limit (the runtime sizes batches below it; a peer-side
            # limit could still differ): dropped and counted, never raised into the engine.
            self.oversize += 1
            return False

    def subscribe(self) -> Subscription:
        return self.seam.subscribe()

    def add_handler(self, handler: Callable[[str, bytes], None]) -> Callable[[], None] | None:
        try:
            return self.seam.add_handler(handler)
        except AttributeError:  # a Seam without an IncomingHub: subscribe instead
            return None

    async def close(self) -> None:
        if self._mux is not None:
            with contextlib.suppress(Exception):
                await self._mux.close()
