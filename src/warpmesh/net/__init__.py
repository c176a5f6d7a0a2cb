"""The mesh: transport-independent ``Seam`` (one peer's view of the session) and its transports.

* :mod:`warpmesh.net.seam` - the ``Seam`` contract, subscriptions with per-subscriber backpressure.
* :mod:`warpmesh.net.mux` - ``MuxSeam``: independent 1-byte-tagged logical channels over one seam.
* :mod:`warpmesh.net.memory` - an in-memory fabric with seeded faults, for tests and simulation.
* :mod:`warpmesh.net.tcp` - the real TCP mesh with an authenticated handshake and roster gossip.
"""

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
