"""Client sessions for exactly-once apply with bounded memory (Raft dissertation §6.3).

A proposal may reach the log more than once: a follower re-forwards it under the same
:class:`~warpmesh.raft.types.DedupKey` when the leader changes, and a client retries through another
node. The state machine owns a :class:`SessionTable` (it is part of the snapshot) and consults it for
every keyed entry, in log order, so every replica reaches the same verdict:

* ``APPLY`` - first time this ``(client, seq)`` is seen: apply it, then :meth:`SessionTable.record`
  the result.
* ``DUPLICATE`` - applied before: skip it and answer with the cached result.
* ``STALE`` - below the client's ``floor``: the client already has the answer; skip silently.
* ``EXPIRED`` - the session was evicted and this is not a brand-new client (``floor > 1``): skip
  and tell the client its session expired, rather than risk applying a request twice.

Memory is bounded twice: at most ``max_sessions`` clients (least recently active evicted first,
where "recent" is log order, so eviction is deterministic), and at most ``max_results`` cached
results per client (a client that never advances its floor loses its oldest results first).

The one residual risk, documented: a client whose *very first* requests (``floor == 1``) are still
being retried after more than ``max_sessions`` other clients became active could see one of them
applied twice. Every later request of a client carries ``floor > 1`` and is protected.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import IntEnum
from typing import Any

from warpmesh.raft.types import DedupKey


class Verdict(IntEnum):
    APPLY = 0
    DUPLICATE = 1
    STALE = 2
    EXPIRED = 3


class _Session:
    __slots__ = ("floor", "results")

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.results: dict[int, Any] = {}


class SessionTable:
    """Deterministic dedup table; see the module docstring."""

    def __init__(self, max_sessions: int = 16_384, max_results: int = 4096) -> None:
        if max_sessions < 1 or max_results < 1:
            raise ValueError("max_sessions and max_results must be >= 1")
        self.max_sessions = max_sessions
        self.max_results = max_results
        self._sessions: OrderedDict[str, _Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def check(self, key: DedupKey) -> tuple[Verdict, Any]:
        """Verdict for ``key`` and, for a duplicate, the cached result. Raises the session's floor."""
        s = self._sessions.get(key.client)
        if s is None:
            return (Verdict.APPLY, None) if key.floor <= 1 else (Verdict.EXPIRED, None)
        self._sessions.move_to_end(key.client)
        if key.floor > s.floor:
            s.floor = key.floor
            for seq in [q for q in s.results if q < key.floor]:
                del s.results[seq]
        if key.seq < s.floor:
            return Verdict.STALE, None
        if key.seq in s.results:
            return Verdict.DUPLICATE, s.results[key.seq]
        return Verdict.APPLY, None

    def peek(self, client: str, seq: int) -> tuple[bool, Any]:
        """``(True, result)`` if ``(client, seq)`` was applied and its result is still held. Read-only:
        unlike :meth:`check` it changes nothing (safe to call outside the apply order)."""
        s = self._sessions.get(client)
        if s is None or seq not in s.results:
            return False, None
        return True, s.results[seq]

    def record(self, key: DedupKey, result: Any) -> None:
        """Remember ``result`` for ``key`` (call after applying an ``APPLY`` verdict)."""
        s = self._sessions.get(key.client)
        if s is None:
            s = self._sessions[key.client] = _Session(key.floor)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        else:
            self._sessions.move_to_end(key.client)
        s.results[key.seq] = result
        if len(s.results) > self.max_results:
            lowest = min(s.results)
            del s.results[lowest]
            s.floor = max(s.floor, lowest + 1)

    def close_session(self, client: str) -> None:
        """Forget a client (it promised to send nothing more under this id)."""
        self._sessions.pop(client, None)

    # -- snapshots -------------------------------------------------------------------------------
    def to_obj(self) -> list[Any]:
        """A msgpack-able form that preserves eviction order."""
        return [self.max_sessions, self.max_results,
                [[c, s.floor, sorted(s.results.items())] for c, s in self._sessions.items()]]

    @staticmethod
    def from_obj(obj: Any) -> SessionTable:
        if not isinstance(obj, (list, tuple)) or len(obj) != 3:
            raise ValueError("malformed session table")
        t = SessionTable(int(obj[0]), int(obj[1]))
        for c, floor, results in obj[2]:
            s = _Session(int(floor))
            s.results = {int(q): r for q, r in results}
            t._sessions[str(c)] = s
        return t
