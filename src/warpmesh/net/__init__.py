"""The mesh: transport-independent ``Seam`` (one peer's view of the session) and its transports.

* :mod:`warpmesh.net.seam` - the ``Seam`` contract, subscriptions with per-subscriber backpressure.
* :mod:`warpmesh.net.mux` - ``MuxSeam``: independent 1-byte-tagged logical channels over one seam.
* :mod:`warpmesh.net.memory` - an in-memory fabric with seeded faults, for tests and simulation.
* :mod:`warpmesh.net.tcp` - the real TCP mesh with an authenticated handshake and roster gossip.
* :mod:`warpmesh.net.handshake` - the mesh handshake as a pure state machine.

Every export loads on first use, so importing the pure ``warpmesh.net.handshake`` does not start
asyncio (see docs/architecture.md).
"""

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports

if TYPE_CHECKING:
    from warpmesh.net.mux import ChannelSeam, MuxSeam
    from warpmesh.net.seam import (
        DEFAULT_SUBSCRIPTION_SIZE,
        IncomingHub,
        PeerId,
        PeerUnreachable,
        Seam,
        SeamClosed,
        Subscription,
    )

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "ChannelSeam": "warpmesh.net.mux",
        "MuxSeam": "warpmesh.net.mux",
        "DEFAULT_SUBSCRIPTION_SIZE": "warpmesh.net.seam",
        "IncomingHub": "warpmesh.net.seam",
        "PeerId": "warpmesh.net.seam",
        "PeerUnreachable": "warpmesh.net.seam",
        "Seam": "warpmesh.net.seam",
        "SeamClosed": "warpmesh.net.seam",
        "Subscription": "warpmesh.net.seam",
    },
)

__all__ = [
    "DEFAULT_SUBSCRIPTION_SIZE",
    "ChannelSeam",
    "IncomingHub",
    "MuxSeam",
    "PeerId",
    "PeerUnreachable",
    "Seam",
    "SeamClosed",
    "Subscription",
]
