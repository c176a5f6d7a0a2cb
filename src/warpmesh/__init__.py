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

__version__ = "0.1.0"

# A library logs; the application decides where logs go (no last-resort printing to stderr).
_logging.getLogger("warpmesh").addHandler(_logging.NullHandler())

#: Wire protocol version carried in every frame's first byte and in the mesh handshake.
PROTOCOL_VERSION = 1

__all__ = ["PROTOCOL_VERSION", "__version__"]
