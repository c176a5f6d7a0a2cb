"""``RaftObserver``: the dashboard's feed for a process that runs a Raft node and no Warp peer (a runtime).

``warpmesh kv serve --http`` serves the same page and ``/metrics`` as a Warp peer, fed by this:
the Raft node's leader and term changes, its commit progress and its commit-latency histogram
(from the process's event bus), and, as the board's "peers", the cluster's members with their
role; on the leader, a member that has not answered within the election timeout shows as
``suspected``. It exposes what :class:`~warpmesh.observe.http.DashboardServer` reads from an
:class:`~warpmesh.observe.Observer`: ``self_id``, ``watch()``, ``refresh()`` and ``node.now()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from warpmesh.observe import bus
from warpmesh.observe.board import Board
from warpmesh.observe.hub import Event

__all__ = ["RaftObserver"]


class RaftObserver:
    """Feeds a :class:`Board` from one Raft node; see the module docstring.

    ``live``: the members the leader heard from recently (``None`` on a follower, which does not
    know); every member is shown live then.
    """

    def __init__(self, raft: Any, *, live: Callable[[], set[str] | None] | None = None) -> None:
        self.raft = raft
        self.self_id = str(raft.id)
        self.node = self  # what DashboardServer reads the clock from
        self.board: Board | None = None
        self._live = live
        self._remove: Callable[[], None] | None = None

    def now(self) -> float:
        """The loop's clock (the same one the Raft node runs on)."""
        return asyncio.get_running_loop().time()

    def watch(self, board: Board | None = None) -> Board:
        """Start folding this process's Raft (and isolate) events into a board; returns it."""
        if self.board is None:
            self.board = board or Board()
            self._remove = bus.add_sink(self._on_event)
            core = getattr(self.raft, "core", None)
            if core is not None:
                bus.publish_raft(self.raft, core)  # the current leader/term, before any change
        return self.board

    def _on_event(self, kind: str, node: str | None, detail: Mapping[str, Any]) -> None:
        if self.board is not None:
            self.board.apply(Event(kind=kind, at=self.now(), node=node or self.self_id, job=None, peer=node,
                                   detail=dict(detail)))

    def status(self) -> dict[str, Any]:
        """A Warp-status-shaped snapshot: the members as the board's peers."""
        m = self.raft.membership.value
        voters = {str(v) for v in m.all_voters}
        learners = {str(v) for v in m.learners}
        live = self._live() if self._live is not None else None
        members = sorted(voters | learners)
        health = {p: "ok" if live is None or p in live or p == self.self_id else "unresponsive" for p in members}
        return {"node": self.self_id, "roster": members, "live_workers": [], "health": health,
                "peers": [{"peer": p, "role": "voter" if p in voters else "learner"} for p in members]}

    def refresh(self) -> None:
        """Bring the board up to date (the page asks before reading)."""
        board = self.board
        if board is None:
            return
        core = getattr(self.raft, "core", None)
        if core is not None:
            bus.publish_raft(self.raft, core)  # commit progress, throttled by the bus itself
        now = self.now()
        board.observe_status(self.status(), now)
        board.tick(now)

    async def close(self) -> None:
        """Stop following the bus."""
        if self._remove is not None:
            self._remove()
            self._remove = None
