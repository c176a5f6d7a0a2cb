"""Errors reported by the Raft core and runtime. Each says what the caller can do next."""

from __future__ import annotations

# One PayloadTooLarge for the whole package (a command over max_entry_bytes, a frame over a mesh limit).
from warpmesh.errors import Closed, PayloadTooLarge, WarpmeshError

__all__ = [
    "Busy",
    "CatchUpTimeout",
    "CorruptState",
    "LeadershipLost",
    "MembershipChangeInProgress",
    "NotLeader",
    "PayloadTooLarge",
    "RaftClosed",
    "RaftError",
    "SessionExpired",
    "TransferFailed",
]


class RaftError(WarpmeshError):
    """Base class of every Raft error."""


class NotLeader(RaftError):
    """The operation needs the leader and this node is not it. ``leader`` is a hint (may be None)."""

    def __init__(self, leader: str | None = None, detail: str = "") -> None:
        hint = f"; the leader is probably {leader!r}" if leader else "; no leader is known yet"
        super().__init__(f"this node is not the leader{hint}{(' (' + detail + ')') if detail else ''}")
        self.leader = leader


class LeadershipLost(RaftError):
    """The leader stepped down before the operation finished; its outcome is unknown. Retry it."""


class MembershipChangeInProgress(RaftError):
    """Another membership change (or a leadership transfer) is in flight; retry after it finishes."""


class CatchUpTimeout(RaftError):
    """A new voter did not catch up with the leader's log in time, so it was not promoted."""


class TransferFailed(RaftError):
    """A leadership transfer did not complete (timed out, cancelled, or someone else won)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"leadership transfer failed: {reason}")
        self.reason = reason


class Busy(RaftError):
    """Too much work is queued (uncommitted bytes or pending proposals); retry a little later."""


class SessionExpired(RaftError):
    """The client's dedup session was evicted; the request was not applied. Start a new session."""


class RaftClosed(RaftError, Closed):
    """The node is closed."""


class CorruptState(RaftError):
    """Durable state failed validation on load; the node refuses to start on it."""
