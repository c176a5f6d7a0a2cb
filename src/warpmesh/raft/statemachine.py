"""``ReplicatedStateMachine``: a deterministic state machine on a :class:`RaftNode`, exactly once.

The application supplies a :class:`StateMachine` (``apply``, ``snapshot``, ``restore``). This class
runs the apply loop over :meth:`RaftNode.committed_from`, consults a :class:`SessionTable` for every
keyed command (a command re-sent under the same key after a leader change is applied once, and the
retry gets the original result), publishes snapshots every ``snapshot_every`` entries (the state
machine's bytes *and* the session table, so dedup survives compaction and restarts), and offers:

* :meth:`execute` - propose a command and return the result of applying it (on this node);
* :meth:`read` - a linearizable read: ``read_index``, wait until applied, run a query locally.

Results are computed locally: every node applies the same commands in the same order, so the
proposer's own replica gives the answer (and the caller reads its own write right after).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from warpmesh.aio.observable import Observable
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.raft.errors import RaftClosed, SessionExpired
from warpmesh.raft.runtime import (
    CommittedEntry,
    CommittedInstall,
    CommittedInternal,
    RaftNode,
    wait_future,
)
from warpmesh.raft.sessions import SessionTable, Verdict
from warpmesh.raft.types import DedupKey
from warpmesh.wire.frame import pack, unpack

T = TypeVar("T")


class StateMachine(Protocol):
    """A deterministic state machine: the same commands in the same order give the same state."""

    def apply(self, command: bytes, index: int) -> Any:
        """Apply one command; the return value (msgpack-able) is the command's result."""

    def snapshot(self) -> bytes:
        """The whole state as bytes."""

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot`."""


class ReplicatedStateMachine:
    """Runs ``sm`` on ``node``; see the module docstring. Call :meth:`start` after ``node.start()``."""

    def __init__(self, node: RaftNode, sm: StateMachine, *, snapshot_every: int = 10_000,
                 max_sessions: int = 16_384, max_results: int = 4096, seed: int | None = None) -> None:
        self.node = node
        self.sm = sm
        self.snapshot_every = snapshot_every
        self.sessions = SessionTable(max_sessions, max_results)
        #: Highest log index applied to ``sm``.
        self.applied: Observable[int] = Observable(0)
        self._rng = random.Random(seed)
        self._client = self._new_client()
        self._seq = 0
        self._outstanding: dict[int, None] = {}
        self._waiters: dict[tuple[str, int], list[asyncio.Future[Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        #: (index, tiebreak, future): resolved once ``applied`` reaches index. A heap, so a burst of
        #: concurrent callers costs O(log n) each instead of waking every waiter on every entry.
        self._index_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._tiebreak = itertools.count()
        self._last_snapshot = 0
        self.failed: BaseException | None = None

    def _new_client(self) -> str:
        return f"{self.node.id}/sm/{self._rng.getrandbits(64):016x}"

    async def start(self) -> ReplicatedStateMachine:
        if self._task is None:
            snap = self.node.snapshot
            start = 1
            if snap is not None:
                self._install(snap.data, snap.index)
                start = snap.index + 1
            self._task = asyncio.get_running_loop().create_task(self._run(start), name=f"rsm-{self.node.id}")
        return self

    async def close(self) -> None:
        await cancel_and_wait([self._task])
        for futs in self._waiters.values():
            for f in futs:
                if not f.done():
                    f.set_exception(RaftClosed("state machine closed"))
        self._waiters.clear()

    # -- API ------------------------------------------------------------------------------------
    def next_key(self) -> DedupKey:
        """A fresh key of this replica's own session (for :meth:`execute` without a client key)."""
        self._seq += 1
        self._outstanding[self._seq] = None
        floor = next(iter(self._outstanding))
        return DedupKey(self._client, self._seq, floor)

    async def execute(self, command: bytes, *, key: DedupKey | None = None,
                      timeout: float | None = None) -> Any:
        """Replicate ``command`` and return its result. With a client ``key`` (client, seq, floor),
        retries of the same request - through this node or any other - are applied once and all
        get the original result. Raises :class:`SessionExpired` if the client's session was
        evicted (the command was not applied)."""
        own = key is None
        if key is None:
            key = self.next_key()
        k = (key.client, key.seq)
        fut = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(k, []).append(fut)
        try:
            idx, _ = await self.node.propose(command, key=key, timeout=timeout)
            # The key committed at idx (possibly an earlier copy: then no new entry reaches the
            # apply loop, and the answer is the cached result once idx has been applied here).
            if not fut.done():
                await self.wait_applied(idx, timeout=timeout)
            if not fut.done():
                found, result = self.sessions.peek(key.client, key.seq)
                if found:
                    return result
                return await wait_future(fut, timeout)
            return fut.result()
        except BaseException:
            if own and not fut.done():
                # Outcome unknown: the floor of this session must not pass it; use a new session.
                self._client = self._new_client()
                self._outstanding = {}
                self._seq = 0
            raise
        finally:
            if own:
                self._outstanding.pop(key.seq, None)
            futs = self._waiters.get(k)
            if futs is not None:
                if fut in futs:
                    futs.remove(fut)
                if not futs:
                    del self._waiters[k]

    async def read(self, query: Callable[[Any], T], *, timeout: float | None = None) -> T:
        """Linearizable read: the result reflects every write acknowledged before the call."""
        idx = await self.node.read_index(timeout=timeout)
        await self.wait_applied(idx, timeout=timeout)
        return query(self.sm)

    async def wait_applied(self, index: int, *, timeout: float | None = None) -> None:
        """Wait until this replica has applied ``index``."""
        if self.applied.value >= index:
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._index_waiters, (index, next(self._tiebreak), fut))
        await wait_future(fut, timeout)

    def _set_applied(self, index: int) -> None:
        self.applied.set(index)
        w = self._index_waiters
        while w and w[0][0] <= index:
            f = heapq.heappop(w)[2]
            if not f.done():
                f.set_result(None)

    # -- the apply loop ---------------------------------------------------------------------------
    def _install(self, data: bytes, index: int) -> None:
        sm_bytes, sessions = unpack(data)
        self.sm.restore(sm_bytes)
        self.sessions = SessionTable.from_obj(sessions)
        self._last_snapshot = index
        self._set_applied(index)

    async def _run(self, start: int) -> None:
        try:
            async for item in self.node.committed_from(start):
                if isinstance(item, CommittedEntry):
                    self._apply(item)
                elif isinstance(item, CommittedInstall):
                    self._install(item.snapshot.data, item.snapshot.index)
                    # Waiters for keys inside the snapshot: their results are in the session table.
                    for (client, seq), futs in list(self._waiters.items()):
                        found, result = self.sessions.peek(client, seq)
                        if found:
                            self._wake(futs, result)
                            self._waiters.pop((client, seq), None)
                    continue
                elif isinstance(item, CommittedInternal):
                    self._set_applied(item.index)
                if self.snapshot_every and item.index - self._last_snapshot >= self.snapshot_every:
                    self._snapshot(item.index)
        except RaftClosed:
            return
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # a state machine bug: surface it to every waiter
            self.failed = err
            for futs in self._waiters.values():
                for f in futs:
                    if not f.done():
                        f.set_exception(err)
            raise

    def _apply(self, e: CommittedEntry) -> None:
        result: Any = None
        error: BaseException | None = None
        if e.key is None:
            result = self.sm.apply(e.data, e.index)
        else:
            verdict, cached = self.sessions.check(e.key)
            if verdict == Verdict.APPLY:
                result = self.sm.apply(e.data, e.index)
                self.sessions.record(e.key, result)
            elif verdict == Verdict.DUPLICATE:
                result = cached
            elif verdict == Verdict.EXPIRED:
                error = SessionExpired(f"session of client {e.key.client!r} expired; the request was "
                                       "not applied (start a new session)")
            else:
                result = cached
        self._set_applied(e.index)
        if e.key is not None:
            futs = self._waiters.pop((e.key.client, e.key.seq), None)
            if futs:
                if error is not None:
                    for f in futs:
                        if not f.done():
                            f.set_exception(error)
                else:
                    self._wake(futs, result)

    @staticmethod
    def _wake(futs: list[asyncio.Future[Any]], result: Any) -> None:
        for f in futs:
            if not f.done():
                f.set_result(result)

    def _snapshot(self, index: int) -> None:
        data = pack([self.sm.snapshot(), self.sessions.to_obj()])
        if self.node.publish_snapshot(index, data):
            self._last_snapshot = index
