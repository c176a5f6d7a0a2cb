"""Value types shared by the Raft core, storage and runtime: entries, snapshots, hard state.

Pure data (no I/O). Indexes are 1-based and contiguous; index 0 / term 0 is the empty log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple, TypeAlias

from warpmesh.raft.membership import Membership

NodeId: TypeAlias = str

#: Largest term or index accepted from the wire or from storage. Leaves headroom below 2**63 so
#: arithmetic on it never overflows a signed 64-bit column (SQLite INTEGER) or a msgpack int64.
MAX_TERM = 2**62
MAX_INDEX = 2**62


class EntryKind(IntEnum):
    """What a log entry carries. Only ``NORMAL`` entries reach the application as commands."""

    NORMAL = 0
    #: The empty entry a new leader appends to commit its predecessors' entries (Raft §5.4.2).
    NOOP = 1
    #: A membership configuration (``data`` is :meth:`Membership.encode`), dissertation §4.
    CONFIG = 2


class DedupKey(NamedTuple):
    """Identifies one client request across retries (dissertation §6.3).

    ``client`` names the session, ``seq`` the request within it, and ``floor`` is the lowest
    sequence number the client still awaits: every ``seq < floor`` was acknowledged to the client, so
    the state machine may forget its cached result.
    """

    client: str
    seq: int
    floor: int = 1


class Entry(NamedTuple):
    """One log entry. ``client``/``seq``/``floor`` form the optional :class:`DedupKey`."""

    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: the log's own word
    term: int
    kind: int = EntryKind.NORMAL
    data: bytes = b""
    client: str | None = None
    seq: int = 0
    floor: int = 0

    @property
    def key(self) -> DedupKey | None:
        if self.client is None:
            return None
        return DedupKey(self.client, self.seq, self.floor)

    @property
    def size(self) -> int:
        """Approximate encoded size in bytes (used for byte budgets, not exact)."""
        return len(self.data) + (len(self.client) if self.client else 0) + 24


class HardState(NamedTuple):
    """What must be durable before a node speaks: term, vote, and (as a restart hint) commit."""

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Position and configuration covered by a snapshot."""

    index: int
    term: int
    membership: Membership


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine snapshot through ``meta.index`` (the application's bytes in ``data``)."""

    meta: SnapshotMeta
    data: bytes = field(repr=False)

    @property
    def index(self) -> int:
        return self.meta.index

    @property
    def term(self) -> int:
        return self.meta.term


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3
    LEARNER = 4

    def __str__(self) -> str:
        return self.name.lower().replace("_", "-")
