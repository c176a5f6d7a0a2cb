"""Cluster membership and quorum math (Raft dissertation §4; etcd's ``quorum``/``confchange``).

A :class:`Membership` is either *simple* (one voter set) or *joint* (C_old,new: ``old_voters`` set).
Every decision that needs "a majority" (commit, election, CheckQuorum, reads, leases) goes through
:func:`majority_index` / :func:`vote_outcome` applied to each voter set, and a joint configuration
requires the majority of **both** sets (§4.3).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from warpmesh.wire.frame import FrameError, pack, unpack

#: Above any index: the "majority index" of an empty voter set, so ``min`` over the sets of a joint
#: configuration ignores an empty half (etcd does the same).
_INF = 1 << 63


class VoteOutcome(IntEnum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority_index(voters: Collection[str], value: Callable[[str], int]) -> int:
    """Largest ``x`` such that a majority of ``voters`` have ``value(v) >= x``."""
    n = len(voters)
    if n == 0:
        return _INF
    if n == 1:
        for v in voters:
            return value(v)
    vals = sorted((value(v) for v in voters), reverse=True)
    return vals[n // 2]


def vote_outcome(voters: Collection[str], votes: Mapping[str, bool]) -> VoteOutcome:
    """Tally ``votes`` (True = granted) against one voter set."""
    if not voters:
        return VoteOutcome.WON
    granted = rejected = 0
    for v in voters:
        r = votes.get(v)
        if r is True:
            granted += 1
        elif r is False:
            rejected += 1
    q = len(voters) // 2 + 1
    if granted >= q:
        return VoteOutcome.WON
    if granted + (len(voters) - granted - rejected) < q:
        return VoteOutcome.LOST
    return VoteOutcome.PENDING


@dataclass(frozen=True, slots=True)
class Membership:
    """Voters and learners; ``old_voters`` is set while in the joint configuration C_old,new."""

    voters: frozenset[str]
    learners: frozenset[str] = frozenset()
    old_voters: frozenset[str] | None = None

    @staticmethod
    def of(voters: Iterable[str], learners: Iterable[str] = ()) -> Membership:
        """A simple configuration. A node listed as both voter and learner is a voter."""
        v = frozenset(voters)
        return Membership(v, frozenset(learners) - v)

    @property
    def joint(self) -> bool:
        return self.old_voters is not None

    @property
    def all_voters(self) -> frozenset[str]:
        """Voters of either half (the election and CheckQuorum targets)."""
        return self.voters if self.old_voters is None else self.voters | self.old_voters

    @property
    def members(self) -> frozenset[str]:
        """Everyone the leader replicates to (voters of both halves and learners)."""
        return self.all_voters | self.learners

    def is_voter(self, node: str) -> bool:
        return node in self.voters or (self.old_voters is not None and node in self.old_voters)

    def is_learner(self, node: str) -> bool:
        return node in self.learners and not self.is_voter(node)

    def _sets(self) -> tuple[frozenset[str], ...]:
        return (self.voters,) if self.old_voters is None else (self.voters, self.old_voters)

    def committed_index(self, match: Callable[[str], int]) -> int:
        """Highest index replicated on a majority of every voter set (§4.3 joint rule)."""
        if not self.voters and not self.old_voters:
            return 0
        return min(majority_index(s, match) for s in self._sets())

    def vote_outcome(self, votes: Mapping[str, bool]) -> VoteOutcome:
        results = [vote_outcome(s, votes) for s in self._sets()]
        if not self.voters and not self.old_voters:
            return VoteOutcome.LOST
        if all(r == VoteOutcome.WON for r in results):
            return VoteOutcome.WON
        if any(r == VoteOutcome.LOST for r in results):
            return VoteOutcome.LOST
        return VoteOutcome.PENDING

    def has_quorum(self, active: Collection[str]) -> bool:
        """True when ``active`` contains a majority of every voter set."""
        if not self.voters and not self.old_voters:
            return False
        return self.vote_outcome({v: True for v in active}) == VoteOutcome.WON

    def self_is_quorum(self, node: str) -> bool:
        """True when ``node`` alone is a majority of every voter set (single-voter fast paths)."""
        return self.has_quorum((node,))

    # -- encoding ------------------------------------------------------------------------------
    def encode(self) -> list[Any]:
        return [
            sorted(self.voters),
            sorted(self.learners),
            None if self.old_voters is None else sorted(self.old_voters),
        ]

    @staticmethod
    def decode(obj: Any) -> Membership:
        """Inverse of :meth:`encode`; raises ``ValueError`` on anything malformed."""
        if not isinstance(obj, (list, tuple)) or len(obj) != 3:
            raise ValueError("membership must be [voters, learners, old_voters]")

        def ids(x: Any) -> frozenset[str]:
            if not isinstance(x, (list, tuple)) or len(x) > 4096:
                raise ValueError("membership id list malformed")
            if not all(isinstance(i, str) and 0 < len(i) <= 256 for i in x):
                raise ValueError("membership ids must be non-empty strings")
            out = frozenset(x)
            if len(out) != len(x):
                raise ValueError("membership ids must be distinct")
            return out

        voters, learners = ids(obj[0]), ids(obj[1])
        old = None if obj[2] is None else ids(obj[2])
        if voters & learners:
            raise ValueError("a node cannot be both voter and learner")
        return Membership(voters, learners, old)

    def to_bytes(self) -> bytes:
        """The payload of a CONFIG log entry."""
        return pack(self.encode())

    @staticmethod
    def from_bytes(data: bytes) -> Membership:
        """Inverse of :meth:`to_bytes`; raises ``ValueError`` on malformed input."""
        try:
            obj = unpack(data)
        except FrameError as err:
            raise ValueError(str(err)) from None
        return Membership.decode(obj)

    def describe(self) -> str:
        v = ",".join(sorted(self.voters))
        s = f"voters={{{v}}}"
        if self.old_voters is not None:
            s = f"joint(old={{{','.join(sorted(self.old_voters))}}}, new={{{v}}})"
        if self.learners:
            s += f" learners={{{','.join(sorted(self.learners))}}}"
        return s
