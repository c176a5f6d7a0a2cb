"""Consistent-hash ring: which live peer owns a task, computed identically on every peer.

Positions are the first 8 bytes of BLAKE3 (domain-separated) read as an unsigned 64-bit integer:
a strong hash, so no adversarial or accidental clustering, and no platform or hash-seed dependence
(the reference hashes Java's 32-bit ``String.hashCode`` through fmix32, and its ``abs`` of
``Int.MIN_VALUE`` stays negative). Each peer gets ``vnodes`` virtual nodes (150 by default). Ties in
position are broken by peer id, so the ring is a pure function of (peers, vnodes, seed).

A lookup walks clockwise from the task's position to the first virtual node whose peer the
predicate accepts; skipping ineligible peers this way gives the same answer as a ring built over the
eligible subset, so ``owner(t, eligible=...)`` and ``successor(t, excluding=...)`` need no rebuild.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable
from functools import lru_cache
from itertools import chain

import blake3

DEFAULT_VNODES = 150

_VNODE_DOMAIN = b"warpmesh.ring.vnode\x00"
_TASK_DOMAIN = b"warpmesh.ring.task\x00"


def _position(domain: bytes, data: bytes) -> int:
    return int.from_bytes(blake3.blake3(domain + data).digest(8), "big")


@lru_cache(maxsize=4096)
def _peer_points(peer: str, vnodes: int, seed: int) -> tuple[tuple[int, str], ...]:
    """One peer's virtual-node positions, sorted; cached, so rebuilding a ring after churn is a merge."""
    salt = _VNODE_DOMAIN + seed.to_bytes(8, "big", signed=True)
    return tuple(sorted((_position(salt, f"{peer}\x00{v}".encode()), peer) for v in range(vnodes)))


@lru_cache(maxsize=64)
def _task_salt(seed: int) -> bytes:
    return _TASK_DOMAIN + seed.to_bytes(8, "big", signed=True)


def task_position(task_id: str, seed: int = 0) -> int:
    """Where ``task_id`` sits on the ring (unsigned 64-bit)."""
    return _position(_task_salt(seed), task_id.encode())


def _accept_any(_: str) -> bool:
    return True


def ring_for(peers: frozenset[str], *, vnodes: int = DEFAULT_VNODES, seed: int = 0) -> TaskRing:
    """The ring over ``peers``, shared with every caller that asks for the same worker set.

    Rings are immutable, so one is built per distinct (peers, vnodes, seed) among the recently used
    ones: a membership that flaps back to a set seen before, or many peers of one process (the
    simulator) with the same view, reuse it instead of rebuilding ``len(peers) x vnodes`` points.
    """
    return _cached_ring(frozenset(peers), vnodes, seed)


class TaskRing:
    """An immutable ring over a set of peers.

    A ring may share its sorted points with a larger ring built over a superset of its peers
    (:func:`ring_for` does this): lookups then skip the other peers' points, which answers exactly
    as a ring built over this ring's own peers would (positions depend only on the peer), and a
    membership change costs no rebuild.
    """

    __slots__ = ("_owners", "_peers", "_positions", "_shared", "seed", "vnodes")

    def __init__(self, peers: Iterable[str], *, vnodes: int = DEFAULT_VNODES, seed: int = 0) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be >= 1")
        self.vnodes = vnodes
        self.seed = seed
        self._peers = frozenset(peers)
        # Sorting the concatenated per-peer runs is a C-level merge (timsort finds the runs); the
        # order is the same as heapq.merge's: by position, ties broken by peer id.
        points = sorted(chain.from_iterable(_peer_points(peer, vnodes, seed) for peer in self._peers))
        self._positions = [p for p, _ in points]
        self._owners = [peer for _, peer in points]
        self._shared = False  # every point belongs to one of self._peers

    def restricted(self, peers: Iterable[str]) -> TaskRing:
        """The ring over ``peers`` (a subset of this ring's), sharing this ring's points: O(1)."""
        subset = frozenset(peers)
        if not subset <= self._peers:
            raise ValueError(f"{sorted(subset - self._peers)} are not on this ring")
        ring = TaskRing.__new__(TaskRing)
        ring.vnodes, ring.seed = self.vnodes, self.seed
        ring._peers = subset
        ring._positions, ring._owners = self._positions, self._owners
        ring._shared = self._shared or subset != self._peers
        return ring

    @property
    def peers(self) -> frozenset[str]:
        return self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TaskRing) and self._peers == other._peers
                and self.vnodes == other.vnodes and self.seed == other.seed)

    def __hash__(self) -> int:
        return hash((self._peers, self.vnodes, self.seed))

    def __repr__(self) -> str:
        return f"TaskRing({sorted(self._peers)}, vnodes={self.vnodes})"

    def _walk(self, task_id: str, accept: Callable[[str], bool]) -> str | None:
        owners = self._owners
        n = len(owners)
        peers = self._peers
        if n == 0 or not peers:
            return None
        shared = self._shared
        start = bisect_left(self._positions, task_position(task_id, self.seed))
        seen: set[str] = set()
        for i in range(n):
            peer = owners[(start + i) % n]
            if peer in seen or (shared and peer not in peers):
                continue
            if accept(peer):
                return peer
            seen.add(peer)
            if len(seen) == len(peers):
                return None
        return None

    def owner(self, task_id: str, eligible: Collection[str] | None = None) -> str | None:
        """The peer that owns ``task_id`` (among ``eligible`` if given); None on an empty ring."""
        if eligible is None:
            owners = self._owners
            if not self._shared and owners:
                # Every point is one of ours: the first point clockwise owns the task. Each peer
                # asks this once per queued task, so the walk's machinery is skipped.
                i = bisect_left(self._positions, task_position(task_id, self.seed))
                return owners[i if i < len(owners) else 0]
            return self._walk(task_id, _accept_any)
        return self._walk(task_id, eligible.__contains__)

    def successor(self, task_id: str, excluding: Collection[str]) -> str | None:
        """The first peer clockwise from ``task_id`` that is not in ``excluding``."""
        return self._walk(task_id, lambda p: p not in excluding)

    def preference_list(self, task_id: str, n: int) -> list[str]:
        """The first ``n`` distinct peers clockwise from ``task_id`` (owner first)."""
        out: list[str] = []

        def take(peer: str) -> bool:
            if peer not in out:
                out.append(peer)
            return len(out) >= n

        self._walk(task_id, take)
        return out

    def shares(self) -> dict[str, float]:
        """Fraction of the hash space each peer owns (for ``warpmesh status``)."""
        if not self._peers or not self._positions:
            return {}
        points = list(zip(self._positions, self._owners))
        if self._shared:
            points = [(pos, peer) for pos, peer in points if peer in self._peers]
        span = 1 << 64
        share: dict[str, int] = dict.fromkeys(self._peers, 0)
        prev = points[-1][0] - span
        for pos, peer in points:
            share[peer] += pos - prev
            prev = pos
        return {p: share[p] / span for p in sorted(share)}


#: Recently built rings whose points later rings share (newest last).
_BASES: list[TaskRing] = []
_MAX_BASES = 8


@lru_cache(maxsize=512)
def _cached_ring(peers: frozenset[str], vnodes: int, seed: int) -> TaskRing:
    # A ring over a subset of a recent ring's peers shares its points (no rebuild), as long as the
    # subset holds at least half of them (so a lookup skips at most about as many points as it uses).
    if not peers:
        return TaskRing(peers, vnodes=vnodes, seed=seed)
    for base in reversed(_BASES):
        if (base.vnodes == vnodes and base.seed == seed and peers <= base.peers
                and 2 * len(peers) >= len(base.peers)):
            return base if peers == base.peers else base.restricted(peers)
    # Build a new base. Include the newest base's peers when that stays within twice ours: a peer
    # that comes back after a crash or partition then finds its points already on the base.
    members = peers
    for base in reversed(_BASES):
        if base.vnodes == vnodes and base.seed == seed:
            union = peers | base.peers
            if len(union) <= 2 * len(peers):
                members = union
            break
    base = TaskRing(members, vnodes=vnodes, seed=seed)
    _BASES.append(base)
    del _BASES[:-_MAX_BASES]
    return base if members == peers else base.restricted(peers)
