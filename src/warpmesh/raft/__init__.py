"""Raft consensus: a pure protocol core, durable storage, an asyncio runtime and a simulator.

* :mod:`warpmesh.raft.core` - ``RaftCore``, the deterministic state machine (Step/Ready design).
* :mod:`warpmesh.raft.storage` - ``RaftStorage``, ``InMemoryRaftStorage``, ``SqliteRaftStorage``.
* :mod:`warpmesh.raft.sessions` - ``SessionTable`` for exactly-once apply.
* :mod:`warpmesh.raft.testing` - ``ScriptedCluster`` for scenario tests.
* :mod:`warpmesh.sim.raft` - the seeded simulator and its invariant checkers.

See docs/raft.md.
"""

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import (
    Busy,
    CatchUpTimeout,
    CorruptState,
    LeadershipLost,
    MembershipChangeInProgress,
    NotLeader,
    PayloadTooLarge,
    RaftClosed,
    RaftError,
    SessionExpired,
    TransferFailed,
)
from warpmesh.raft.membership import Membership
from warpmesh.raft.sessions import SessionTable, Verdict
from warpmesh.raft.types import DedupKey, Entry, EntryKind, HardState, Role, Snapshot, SnapshotMeta

if TYPE_CHECKING:
    from warpmesh.raft.storage import InMemoryRaftStorage, RaftStorage, SqliteRaftStorage, StorageBatch

# Storage is a runtime (SQLite): it loads on first use so importing the core stays pure.
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        name: "warpmesh.raft.storage"
        for name in ("InMemoryRaftStorage", "RaftStorage", "SqliteRaftStorage", "StorageBatch")
    },
)

__all__ = [
    "Busy",
    "CatchUpTimeout",
    "CorruptState",
    "DedupKey",
    "Entry",
    "EntryKind",
    "HardState",
    "InMemoryRaftStorage",
    "LeadershipLost",
    "Membership",
    "MembershipChangeInProgress",
    "NotLeader",
    "PayloadTooLarge",
    "RaftClosed",
    "RaftConfig",
    "RaftError",
    "RaftStorage",
    "Role",
    "SessionExpired",
    "SessionTable",
    "Snapshot",
    "SnapshotMeta",
    "SqliteRaftStorage",
    "StorageBatch",
    "TransferFailed",
    "Verdict",
]
