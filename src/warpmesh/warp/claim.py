"""Claiming: who runs a task, decided locally from replicated data (pure, no I/O).

``ClaimStrategy.RING``: the ring owner runs the task; the results board absorbs the rare duplicate
of a churn window. ``ClaimStrategy.INTENT`` (the default, the seed's "dibs"): the owner also notes
its claim on a replicated intent register. When ownership may be contested, claimants wait out a
settle window and then exactly one proceeds: the *ring owner among the live claimants* (the first
claimant clockwise from the task), which every peer computes identically from the converged
register. The reference let the lowest peer id win, so a stale claimant kept work that had moved.

Ownership "may be contested" whenever peers' views of the worker set may differ: a change in our
own view within the settle window, a live worker whose published view differs from ours or who has
not published one yet, or a rival claimant already visible. In the steady state none holds, so the
owner runs at once with no pause.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

from warpmesh.warp.model import TaskDescriptor
from warpmesh.warp.ring import TaskRing


class ClaimStrategy(enum.Enum):
    """How a peer decides to run a task it owns."""

    INTENT = "intent"
    RING = "ring"


class Decision(enum.Enum):
    SKIP = "skip"  # not ours
    RUN = "run"  # run now
    SETTLE = "settle"  # announce, wait the settle window, then ask :func:`winner`


@dataclass(frozen=True, slots=True)
class ClaimView:
    """What a peer knows when it decides: its ring over live eligible workers, and contention."""

    self_id: str
    ring: TaskRing
    contested: bool
    strategy: ClaimStrategy = ClaimStrategy.INTENT


def owner(task_id: str, desc: TaskDescriptor, view: ClaimView, eligible: Collection[str] | None = None) -> str | None:
    """The peer that should run ``task_id``: its pin if pinned, else the ring owner (among ``eligible``)."""
    if desc.pin is not None:
        return desc.pin
    return view.ring.owner(task_id, eligible)


def decide(
    task_id: str,
    desc: TaskDescriptor,
    view: ClaimView,
    claimants: Collection[str] = (),
    eligible: Collection[str] | None = None,
    ring_owner: str | None = None,
) -> Decision:
    """Whether this peer should run ``task_id`` now, settle first, or leave it alone.

    ``ring_owner``: ``view.ring.owner(task_id, eligible)`` if the caller knows it already (a
    peer remembers it per task; None: computed here)."""
    me = view.self_id
    if desc.pin is not None:
        return Decision.RUN if desc.pin == me else Decision.SKIP  # pins never re-home
    mine = (ring_owner if ring_owner is not None else owner(task_id, desc, view, eligible)) == me
    if view.strategy is ClaimStrategy.RING:
        return Decision.RUN if mine else Decision.SKIP
    binding = me in claimants  # a claim once made stands until the winner rule settles it
    if not mine and not binding:
        return Decision.SKIP
    rivals = any(c != me for c in claimants)
    if mine and not rivals and not view.contested:
        return Decision.RUN
    return Decision.SETTLE


@lru_cache(maxsize=4096)
def _ring_over(peers: frozenset[str], vnodes: int, seed: int) -> TaskRing:
    return TaskRing(peers, vnodes=vnodes, seed=seed)


def winner(task_id: str, claimants: Collection[str], live: Collection[str], *, vnodes: int, seed: int = 0) -> str | None:
    """The claimant that runs a contested task: the ring owner among live claimants."""
    candidates = frozenset(c for c in claimants if c in live)
    if not candidates:
        return None
    return _ring_over(candidates, vnodes, seed).owner(task_id)
