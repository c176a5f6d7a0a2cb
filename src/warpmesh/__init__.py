"""warpmesh: leaderless distributed work for Python.

A roomful of machines shares a pile of jobs with no central scheduler: a replicated work queue and
results board (delta CRDTs), ownership by a consistent-hash ring over the live roster, Raft where
peers must agree on an order, a deterministic content-addressed graph-rewrite engine, and sandboxed
workers whose results are memoized by content hash.

The package is layered (see ``docs/architecture.md``): pure, deterministic cores (``wire``,
``crdt``, ``*.core`` modules) never import the asyncio runtimes that bind them to sockets, clocks
and disks; the simulator (``warpmesh.sim``) drives the same runtimes under a virtual clock.
"""

import logging as _logging
from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
from warpmesh.errors import Closed, DecodeError, PayloadTooLarge, Unavailable, WarpmeshError

__version__ = "0.1.0"

# A library logs; the application decides where logs go (no last-resort printing to stderr).
_logging.getLogger("warpmesh").addHandler(_logging.NullHandler())

#: Wire protocol version carried in every frame's first byte and in the mesh handshake.
PROTOCOL_VERSION = 1

if TYPE_CHECKING:
    from warpmesh.client import ConnectError, MeshClient, connect, content_task_id
    from warpmesh.kv.client import KVClient
    from warpmesh.net.memory import MemoryFabric
    from warpmesh.net.secret import InsecureAddressError, SecretError
    from warpmesh.peer import JoinError, Peer, open_node
    from warpmesh.warp.model import NotReplicated, OpResult, TaskFailed
    from warpmesh.warp.node import WarpConfig, WarpNode
    from warpmesh.warp.ops import OpRegistry, warp_op

# The front door, loaded on first use so `import warpmesh` stays light (docs/architecture.md).
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "ConnectError": "warpmesh.client",
        "MeshClient": "warpmesh.client",
        "connect": "warpmesh.client",
        "content_task_id": "warpmesh.client",
        "KVClient": "warpmesh.kv.client",
        "MemoryFabric": "warpmesh.net.memory",
        "InsecureAddressError": "warpmesh.net.secret",
        "SecretError": "warpmesh.net.secret",
        "JoinError": "warpmesh.peer",
        "Peer": "warpmesh.peer",
        "open_node": "warpmesh.peer",
        "NotReplicated": "warpmesh.warp.model",
        "OpResult": "warpmesh.warp.model",
        "TaskFailed": "warpmesh.warp.model",
        "WarpConfig": "warpmesh.warp.node",
        "WarpNode": "warpmesh.warp.node",
        "OpRegistry": "warpmesh.warp.ops",
        "warp_op": "warpmesh.warp.ops",
    },
)

__all__ = [
    "PROTOCOL_VERSION",
    "Closed",
    "ConnectError",
    "DecodeError",
    "InsecureAddressError",
    "JoinError",
    "KVClient",
    "MemoryFabric",
    "MeshClient",
    "NotReplicated",
    "OpRegistry",
    "OpResult",
    "PayloadTooLarge",
    "Peer",
    "SecretError",
    "TaskFailed",
    "Unavailable",
    "WarpConfig",
    "WarpNode",
    "WarpmeshError",
    "__version__",
    "connect",
    "content_task_id",
    "open_node",
    "warp_op",
]
