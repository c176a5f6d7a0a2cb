"""Replicated worlds: every peer runs the same engine, intents and ticks ordered by Raft, agreement
proven by commit hashes published in the log, divergence detected within a tick and repaired from the
majority's snapshot. See docs/world.md.

Core modules (pure): :mod:`~warpmesh.world.codec`, :mod:`~warpmesh.world.rules`,
:mod:`~warpmesh.world.agreement`, :mod:`~warpmesh.world.diff`, :mod:`~warpmesh.world.replica`.
Runtime: :mod:`warpmesh.world.runtime` (:class:`World` over a :class:`~warpmesh.raft.runtime.RaftNode`),
imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from warpmesh.world.agreement import Agreement, Event, Hashes
from warpmesh.world.codec import WorldCodecError, WorldSnapshot
from warpmesh.world.diff import diff_states
from warpmesh.world.replica import Replica, SnapshotMismatch
from warpmesh.world.rules import build_world_engine, push, run_tick, spawn

if TYPE_CHECKING:
    from warpmesh.world.runtime import World, WorldError

__all__ = [
    "Agreement",
    "Event",
    "Hashes",
    "Replica",
    "SnapshotMismatch",
    "World",
    "WorldCodecError",
    "WorldError",
    "WorldSnapshot",
    "build_world_engine",
    "diff_states",
    "push",
    "run_tick",
    "spawn",
]


def __getattr__(name: str) -> Any:
    if name in ("World", "WorldError"):
        from warpmesh.world import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'warpmesh.world' has no attribute {name!r}")
