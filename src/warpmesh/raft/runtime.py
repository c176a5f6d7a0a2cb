"""``RaftNode``: the asyncio runtime that binds :class:`RaftCore` to a transport, storage and clock.

The engine (:meth:`RaftNode._pump`) runs inline wherever work appears (an API call, a frame, a
timer, a finished write): it takes a :class:`~warpmesh.raft.core.Ready` batch, sends what may go
early, persists the rest in one durable write (group commit: everything that arrives meanwhile rides
on the next write; only the commit and its fsync run on a worker thread, except small batches,
which the loop writes itself while small writes are fast), and when that write is
done sends what depended on it, hands committed entries to subscribers and resolves API futures.
While a leader's write is in flight, entries that a majority of followers already hold are answered
at once. Frames are decoded, validated and stepped inside the transport's delivery (undecodable or
hostile frames are counted and dropped). A frame goes to the transport inline when nothing is
queued ahead of it; otherwise through one bounded outbox per peer, so a slow peer never stalls the
engine; a full outbox drops frames, which Raft treats as loss and repairs.

Time is ``asyncio.get_running_loop().time()``, so the same runtime runs on a real loop and,
deterministically, on :class:`warpmesh.sim.loop.VirtualTimeLoop`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import random
import time
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from warpmesh.aio.observable import Observable
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.aio.tuning import tune_gc_for_server  # noqa: F401  (re-exported: kv serve uses it)
from warpmesh.net.seam import SeamClosed, Subscription
from warpmesh.observe import bus as observe_bus
from warpmesh.raft.config import COMMIT_LATENCY_BUCKETS, RaftConfig
from warpmesh.raft.core import Completion, RaftCore, Ready
from warpmesh.raft.errors import (
    Busy,
    LeadershipLost,
    NotLeader,
    RaftClosed,
    RaftError,
)
from warpmesh.raft.membership import Membership
from warpmesh.raft.messages import BadMessage, decode, encode
from warpmesh.raft.storage import RaftStorage, SqliteRaftStorage, StorageBatch
from warpmesh.raft.transport import RaftTransport
from warpmesh.raft.types import DedupKey, EntryKind, Role, Snapshot
from warpmesh.wire.frame import FrameError

log = logging.getLogger("warpmesh.raft")

#: Frames queued per peer before new ones are dropped (Raft repairs the loss). Deep enough for a
#: full pipelining window plus heartbeats and snapshot chunks.
OUTBOX_FRAMES = 2048
#: Bytes reserved in each frame for the header and fields around entries/chunks.
FRAME_OVERHEAD = 4096
#: asyncio runs a timer once ``loop.time()`` is within the clock resolution of its deadline, so a
#: timer may fire a hair *before* the core's deadline. A deadline this close counts as due.
TIMER_SLACK = 1e-6
#: Weight of the newest write in the running average of small writes' durations that decides
#: whether a follower writes on the loop (see ``RaftConfig.inline_write_slow``). One very slow
#: write (4x the limit or more) sends writes to the I/O thread at once; a lone outlier of a few
#: milliseconds, which a shared disk shows every second or so, does not; once writes on the thread
#: are fast again the average falls and they come back (no fixed back-off: a fixed 5 s one was
#: tripped by the slow first writes of a fresh database and kept a whole benchmark on the thread).
INLINE_WEIGHT = 0.25


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("timed out"))


async def wait_future(fut: asyncio.Future[Any], timeout: float | None) -> Any:
    """``await fut`` with a timeout, for a future owned by the caller alone. Unlike
    ``asyncio.wait_for`` it creates no task (one timer handle instead): on the hot path of every
    proposal and request that halves the event loop's work."""
    if timeout is None:
        return await fut
    handle = asyncio.get_running_loop().call_later(max(0.0, timeout), _expire, fut)
    try:
        return await fut
    finally:
        handle.cancel()


@dataclass(frozen=True, slots=True)
class CommittedEntry:
    """An application command, committed at ``index``."""

    index: int
    term: int
    data: bytes
    key: DedupKey | None = None


@dataclass(frozen=True, slots=True)
class CommittedInternal:
    """A no-op or configuration entry: carries no command, but lets an applied index pass it."""

    index: int
    membership: Membership | None = None


@dataclass(frozen=True, slots=True)
class CommittedInstall:
    """Reset the state machine to this snapshot; entries after ``snapshot.index`` follow."""

    snapshot: Snapshot

    @property
    def index(self) -> int:
        return self.snapshot.index


Committed = CommittedEntry | CommittedInternal | CommittedInstall


class _Outbox:
    __slots__ = ("busy", "dropped", "frames", "peer", "stalled", "task", "wake")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.frames: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.dropped = 0
        #: True while the outbox task owns sending to this peer (frames go behind it, in order).
        self.busy = False
        #: A send started inline that had to wait, and what it waits on: the task finishes it.
        self.stalled: tuple[Coroutine[Any, Any, bool], Any] | None = None


async def _finish_send(coro: Coroutine[Any, Any, bool], waiting: Any) -> bool:
    """Run a send that suspended on its first step to the end, as a Task would have: wait for
    what it waits on, then resume it (``Future.__await__`` then returns or raises the result).
    Our own cancellation (the node closing) closes the send."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                waiting._asyncio_future_blocking = False
                await asyncio.wait((waiting,))
            try:
                waiting = coro.send(None)
            except StopIteration as done:
                return bool(done.value)
            except BaseException:  # the transport's own failure (ours would surface in the wait)
                return False
    finally:
        coro.close()


class RaftNode:
    """One Raft peer over ``transport`` and ``storage`` (both owned by the node from ``start``).

    ``voters``/``learners`` are the bootstrap configuration, used only while the storage holds no
    snapshot (every member must be started with the same one). A node joining an existing cluster
    starts with ``voters=()`` and is added by the leader with :meth:`change_membership`.
    """

    def __init__(
        self,
        node_id: str,
        transport: RaftTransport,
        storage: RaftStorage,
        *,
        voters: Iterable[str] = (),
        learners: Iterable[str] = (),
        config: RaftConfig | None = None,
        seed: int | None = None,
        offload_io: bool | None = None,
    ) -> None:
        if transport.self_id != node_id:
            raise ValueError(f"transport is for {transport.self_id!r}, not {node_id!r}")
        self.id = node_id
        self.transport = transport
        self.storage = storage
        cfg = config or RaftConfig()
        room = max(1024, transport.max_payload - FRAME_OVERHEAD)
        # Never build a frame the transport cannot carry.
        self.config = dataclasses.replace(
            cfg, max_entry_bytes=min(cfg.max_entry_bytes, room),
            max_append_bytes=min(cfg.max_append_bytes, room),
            snapshot_chunk_bytes=min(cfg.snapshot_chunk_bytes, room))
        self.bootstrap = Membership.of(voters, learners)
        self._rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
        # SQLite fsyncs block; run them on a worker thread so decoding and stepping continue meanwhile.
        self._offload = isinstance(storage, SqliteRaftStorage) if offload_io is None else offload_io
        self._executor: ThreadPoolExecutor | None = None
        self.core: RaftCore | None = None
        self.role: Observable[Role] = Observable(Role.FOLLOWER)
        self.leader: Observable[str | None] = Observable(None)
        self.membership: Observable[Membership] = Observable(self.bootstrap)
        self.commit_index: Observable[int] = Observable(0)
        #: Highest index handed to ``committed`` subscribers (entries are readable up to here).
        self.applied_index: Observable[int] = Observable(0)
        self.term: Observable[int] = Observable(0)
        self.stats: Counter[str] = Counter()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        self._futures: dict[tuple[str, Any], list[asyncio.Future[Any]]] = {}
        self._outboxes: dict[str, _Outbox] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._started = False
        self._rid = 0
        self._room = asyncio.Event()
        self._room.set()
        self._cursors: dict[int, int] = {}
        self.max_apply_lag = 200_000
        #: Proposals committed, by how long ``propose`` took (bucket ``i``: at most
        #: ``COMMIT_LATENCY_BUCKETS[i]`` seconds), and their total seconds.
        self.commit_latency = [0] * len(COMMIT_LATENCY_BUCKETS)
        self.commit_latency_sum = 0.0
        #: The Ready whose durable write runs on the worker thread (None: no write in flight).
        self._inflight: Ready | None = None
        self._pumping = False
        self._again = False
        self._dead = False
        #: Why the engine stopped (a bug or a failed disk write); None while it runs.
        self.crash: BaseException | None = None
        self._crashed = asyncio.Event()
        self._commit_early = False
        self._early_scheduled = False
        #: Running average of the seconds a small write took, wherever it ran (``INLINE_WEIGHT``).
        self._write_avg = 0.0
        #: perf_counter() when the write in flight on the I/O thread was submitted, if it is small.
        self._write_started: float | None = None
        self._sub: Subscription | None = None
        self._unhandle: Callable[[], None] | None = None
        self._max_frame = 0

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> RaftNode:
        """Load durable state (validating it) and start the engine."""
        if self._started:
            return self
        self._started = True
        loop = asyncio.get_running_loop()
        if self._offload:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"raft-{self.id}-io")
            st = await loop.run_in_executor(self._executor, self.storage.load)
        else:
            st = self.storage.load()
        self.core = RaftCore(
            self.id, bootstrap=self.bootstrap, now=loop.time(), rng=random.Random(self._rng.getrandbits(64)),
            config=self.config, hard_state=st.hard_state, entries=st.entries, snapshot=st.snapshot,
        )
        self.applied_index.set(self.core.log.applied)
        self._publish()
        self._progress: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        # Step frames inside the transport's delivery where it can (one task hop less per message
        # on the write path); else read a subscription on a task of our own.
        self._max_frame = self.transport.max_payload + 16
        self._unhandle = self.transport.add_handler(self._on_frame)
        if self._unhandle is None:
            self._sub = self.transport.subscribe()
            self._tasks.append(loop.create_task(self._receive(), name=f"raft-{self.id}-recv"))
        self._pump()
        return self

    async def __aenter__(self) -> RaftNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop the node: every pending call fails with :class:`RaftClosed`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._unhandle is not None:
            self._unhandle()
        elif self._sub is not None:
            with contextlib.suppress(Exception):
                self._sub.close()
        tasks = self._tasks + [o.task for o in self._outboxes.values() if o.task is not None]
        await cancel_and_wait(tasks)
        for futs in self._futures.values():
            for f in futs:
                if not f.done():
                    f.set_exception(RaftClosed(f"raft node {self.id} is closed"))
        self._futures.clear()
        self._notify()  # wake iterators so they can end
        with contextlib.suppress(Exception):
            await self.transport.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self.storage.close()

    def _core(self) -> RaftCore:
        if self._closed:
            raise RaftClosed(f"raft node {self.id} is closed")
        if self.core is None:
            raise RaftError("RaftNode.start() has not been called")
        return self.core

    def _kick(self) -> None:
        self._pump()

    def _schedule_early(self) -> None:
        if not self._early_scheduled:
            # A write is in flight: replicate new entries now instead of after it (the leader's
            # disk write and the followers' run in parallel, thesis §10.2.1). call_soon batches
            # every proposal of this loop iteration into one append per follower.
            self._early_scheduled = True
            self._loop.call_soon(self._flush_early)

    def _flush_early(self) -> None:
        self._early_scheduled = False
        core = self.core
        if core is None or self._closed:
            return
        for m in core.take_early():
            self._send(m.to, encode(m))
        if self._commit_early and core.role == Role.LEADER:
            # The followers' acknowledgements may have committed entries while our own write is
            # still in flight: answer now (a majority holds them durably), not after our fsync.
            committed, completions = core.take_committed()
            if committed:
                self.applied_index.set(core.log.applied)
                self.commit_index.set(core.commit)
                self._notify()
            for c in completions:
                self._resolve(c)

    def _notify(self) -> None:
        """Wake every committed-stream reader (new entries, an install, or close)."""
        fut = self._progress
        self._progress = asyncio.get_running_loop().create_future()
        if not fut.done():
            fut.set_result(None)

    # -- API ------------------------------------------------------------------------------------
    async def propose(self, command: bytes, *, key: DedupKey | None = None,
                      timeout: float | None = None) -> tuple[int, int]:
        """Replicate ``command``; returns ``(index, term)`` once it committed. Any node may propose
        (followers forward; a forward lost with a failed leader is retried under the same key).
        On timeout the outcome is unknown (it may still commit)."""
        loop = asyncio.get_running_loop()
        called = loop.time()
        deadline = None if timeout is None else called + timeout
        if not self._room.is_set() or self._cursors:
            await self._wait_room(deadline)
        while True:
            core = self._core()
            try:
                k = core.propose(command if type(command) is bytes else bytes(command), loop.time(), key)
                break
            except Busy:
                self.stats["propose_busy"] += 1
                await self._sleep_until_progress(deadline)
        fk = ("propose", (k.client, k.seq))
        fut = self._future(fk)
        self._kick()
        try:
            done = await self._await(fut, deadline)
        except BaseException:
            if self._drop_future(fk, fut) and self.core is not None:
                self.core.abandon_proposal(k)
            raise
        took = loop.time() - called
        self.commit_latency_sum += took
        self.commit_latency[bisect_left(COMMIT_LATENCY_BUCKETS, took)] += 1
        return done  # type: ignore[no-any-return]

    async def read_index(self, *, timeout: float | None = None) -> int:
        """A linearizable read index (dissertation §6.4): once this node has applied it, a local read
        reflects every write acknowledged before this call. Works on any node; retried across
        leader changes until ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            core = self._core()
            self._rid += 1
            rid = self._rid
            fk = ("read", rid)
            fut = self._future(fk)
            core.read_index(rid, loop.time())
            self._kick()
            try:
                return await self._await(fut, deadline)
            except (NotLeader, LeadershipLost, Busy):
                await self._sleep_until_progress(deadline)
            except BaseException:
                if self._drop_future(fk, fut) and self.core is not None:
                    self.core.abandon_read(rid)
                raise

    async def await_read(self, applied: Observable[int] | None = None, *,
                         timeout: float | None = None) -> int:
        """:meth:`read_index`, then wait until ``applied`` (the caller's state machine; default
        :attr:`applied_index`) reaches it. Returns the read index."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        idx = await self.read_index(timeout=timeout)
        obs = applied or self.applied_index
        remaining = None if deadline is None else max(0.0, deadline - loop.time())
        await obs.wait_for(lambda v: v >= idx, remaining)
        return idx

    async def change_membership(self, voters: Iterable[str], learners: Iterable[str] = (), *,
                                timeout: float | None = 60.0) -> Membership:
        """Change the configuration (leader only; raises :class:`NotLeader` with a hint otherwise).
        New voters join as learners first and must catch up; voter changes use joint consensus."""
        loop = asyncio.get_running_loop()
        self._rid += 1
        rid = ("m", self._rid)
        fk = ("membership", rid)
        fut = self._future(fk)
        self._core().change_membership(rid, set(voters), set(learners), loop.time())
        self._kick()
        try:
            return await self._await(fut, None if timeout is None else loop.time() + timeout)
        except BaseException:
            self._drop_future(fk, fut)
            raise

    async def transfer_leadership(self, target: str, *, timeout: float | None = None) -> None:
        """Hand leadership to ``target`` (leader only). Raises :class:`TransferFailed` on timeout,
        cancellation, or if another node wins."""
        loop = asyncio.get_running_loop()
        self._rid += 1
        rid = ("t", self._rid)
        fk = ("transfer", rid)
        fut = self._future(fk)
        self._core().transfer_leadership(rid, target, loop.time())
        self._kick()
        try:
            await self._await(fut, None if timeout is None else loop.time() + timeout)
        except BaseException:
            self._drop_future(fk, fut)
            raise

    def cancel_transfer(self) -> None:
        self._core().cancel_transfer(asyncio.get_running_loop().time())
        self._kick()

    def publish_snapshot(self, index: int, data: bytes) -> bool:
        """The application's state through ``index`` (at most :attr:`applied_index`): the log before
        it is discarded (keeping ``trailing_entries``) and lagging peers catch up from it."""
        ok = self._core().publish_snapshot(index, data, asyncio.get_running_loop().time())
        self._kick()
        return ok

    @property
    def snapshot(self) -> Snapshot | None:
        return self.core.snapshot if self.core is not None else None

    @property
    def config_change_pending(self) -> bool:
        """True while a membership change is under way on this node (in flight, joint, or its
        configuration entry not yet committed); see :attr:`RaftCore.config_change_pending`.
        False before :meth:`start`."""
        return self.core.config_change_pending if self.core is not None else False

    @property
    def compaction_floor(self) -> int:
        return self.core.log.snap_index if self.core is not None else 0

    def committed(self) -> AsyncIterator[Committed]:
        """Committed entries from now on (entries already applied are not replayed)."""
        return self.committed_from(self.applied_index.value + 1)

    async def committed_from(self, index: int) -> AsyncIterator[Committed]:
        """Every committed entry from ``index`` on, in order, then live ones. If ``index`` is below
        the compaction floor the stream starts with :class:`CommittedInstall`. Slow readers keep
        their place (they lag; :meth:`propose` on this node waits if one lags too far)."""
        core = self._core()
        cursor = max(1, index)
        token = id(object())
        self._cursors[token] = cursor
        try:
            while not self._closed:
                core = self._core()
                log = core.log
                hi = log.applied
                if cursor < log.offset and cursor <= log.snap_index and core.snapshot is not None:
                    snap = core.snapshot
                    cursor = snap.index + 1
                    self._advance_cursor(token, cursor)
                    yield CommittedInstall(snap)
                    continue
                if cursor <= hi:
                    batch = log.slice(cursor, min(hi, cursor + 255) + 1)
                    for e in batch:
                        if e.kind == EntryKind.NORMAL:
                            item: Committed = CommittedEntry(e.index, e.term, e.data, e.key)
                        elif e.kind == EntryKind.CONFIG:
                            item = CommittedInternal(e.index, Membership.from_bytes(e.data))
                        else:
                            item = CommittedInternal(e.index)
                        cursor = e.index + 1
                        self._advance_cursor(token, cursor)
                        yield item
                        if core is not self.core or self._installs_changed(core, cursor):
                            break
                    continue
                await self._progress
        finally:
            self._cursors.pop(token, None)
            self._open_room()

    def _installs_changed(self, core: RaftCore, cursor: int) -> bool:
        # A snapshot install replaced the log under us: re-evaluate from the top of the loop.
        return cursor < core.log.offset

    def _advance_cursor(self, token: int, cursor: int) -> None:
        self._cursors[token] = cursor
        if not self._room.is_set():
            self._open_room()

    def _open_room(self) -> None:
        core = self.core
        if core is None or not self._cursors:
            self._room.set()
            return
        lag = core.log.applied - min(self._cursors.values())
        if lag <= self.max_apply_lag:
            self._room.set()

    async def _wait_room(self, deadline: float | None) -> None:
        """Backpressure: a subscriber far behind the committed stream slows local proposals."""
        core = self._core()
        if self._cursors and core.log.applied - min(self._cursors.values()) > self.max_apply_lag:
            self._room.clear()
            self.stats["propose_waits_for_consumer"] += 1
            loop = asyncio.get_running_loop()
            t = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait_for(self._room.wait(), t)

    # -- plumbing -------------------------------------------------------------------------------
    def _drop_future(self, k: tuple[str, Any], fut: asyncio.Future[Any]) -> bool:
        """Forget a caller's future; True if no other caller waits on the same key."""
        futs = self._futures.get(k)
        if futs is None:
            return False
        if fut in futs:
            futs.remove(fut)
        if not futs:
            del self._futures[k]
            return True
        return False

    def _future(self, k: tuple[str, Any]) -> asyncio.Future[Any]:
        fut = asyncio.get_running_loop().create_future()
        self._futures.setdefault(k, []).append(fut)
        return fut

    async def _await(self, fut: asyncio.Future[Any], deadline: float | None) -> Any:
        if deadline is None:
            return await fut
        return await wait_future(fut, deadline - asyncio.get_running_loop().time())

    async def _sleep_until_progress(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        pause = self.config.heartbeat_interval
        if deadline is not None:
            if loop.time() >= deadline:
                raise TimeoutError("timed out")
            pause = min(pause, deadline - loop.time())
        await asyncio.sleep(pause)
        self._core()

    def _publish(self) -> None:
        core = self.core
        assert core is not None
        if observe_bus.sinks:  # a dashboard in this process: leader changes and commit progress
            observe_bus.publish_raft(self, core)
        if core.leader != self.leader.value or core.term != self.term.value:
            # Rare (elections), and what an operator reading a node's log after an outage needs.
            log.info("raft %s: term %d, leader %s, this node %s", self.id, core.term, core.leader,
                     core.role.name.lower())
        self.role.set(core.role)
        self.leader.set(core.leader)
        self.membership.set(core.membership)
        self.commit_index.set(core.commit)
        self.term.set(core.term)

    def _resolve(self, c: Completion) -> None:
        k = (c.kind, (c.id.client, c.id.seq) if c.kind == "propose" else c.id)
        futs = self._futures.pop(k, None)
        if not futs:
            return
        for f in futs:
            if f.done():
                continue
            if c.error is not None:
                f.set_exception(c.error)
            else:
                f.set_result(c.value)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        core = self.core
        assert core is not None
        d = core.next_deadline()
        if d == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = d
        if d != float("inf"):
            self._timer = loop.call_at(d, self._on_timer)

    def _on_timer(self) -> None:
        # Forget the fired deadline, so the next _arm_timer arms again even for the same value.
        self._timer = None
        self._timer_at = float("nan")
        self._pump()

    def _pump(self) -> None:
        """Run Ready batches until the core is idle or a durable write is in flight.

        Called inline wherever work appears (an API call, a stepped frame, a timer, a finished
        write), so the first event after a quiet spell is handled at once, with no task hop. Group
        commit is unchanged: whatever arrives while a write is in flight accumulates in the core
        and goes out in the next Ready, when that write is done."""
        if self._inflight is not None:
            self._schedule_early()
            return
        if self._pumping:
            self._again = True  # called from inside the pump: it goes round once more
            return
        core = self.core
        if core is None or self._closed or self._dead:
            return
        self._pumping = True
        loop = self._loop
        try:
            now = loop.time()
            due = core.next_deadline()
            if now + TIMER_SLACK >= due:
                # A timer that fired early (within the clock resolution) still counts: skipping
                # the tick here used to leave the engine asleep with no timer armed, so a lone
                # leader whose appends were lost never retried (a membership change hung).
                core.tick(max(now, due))
            self._again = False
            while not self._closed:
                rd = core.ready()
                if rd is None:
                    if not self._again:
                        break
                    self._again = False
                    continue
                for m in rd.early_messages:
                    self._send(m.to, encode(m))
                if rd.must_persist:
                    batch = StorageBatch(rd.snapshot, rd.log_reset, rd.compact_through, rd.entries,
                                         rd.hard_state)
                    if self._executor is None:
                        self.storage.write(batch)
                    elif self._write_here(rd, core.role):
                        started = time.perf_counter()
                        self.storage.write(batch)
                        self.stats["inline_writes"] += 1
                        self._write_took(time.perf_counter() - started)
                    else:
                        self._write_started = time.perf_counter() if self._small(rd) else None
                        self._inflight = rd
                        # Not while a snapshot install waits for this write: its entries follow it.
                        self._commit_early = rd.install is None and rd.snapshot is None and not rd.log_reset
                        self._start_write(batch)
                        return
                    self.stats["writes"] += 1
                    self.stats["entries_written"] += len(rd.entries)
                self._finish(rd)
            self._publish()
            self._arm_timer(loop)
        except Exception as err:  # a bug: fail loudly rather than hang callers
            self._crash(err)
        finally:
            self._pumping = False

    def _small(self, rd: Ready) -> bool:
        """A batch small and plain enough for the loop to write it (its duration feeds the average)."""
        return (len(rd.entries) <= self.config.inline_write_entries and rd.snapshot is None
                and not rd.log_reset and not rd.compact_through)

    def _write_here(self, rd: Ready, role: Role) -> bool:
        """Whether the loop writes ``rd`` itself rather than the I/O thread: a small batch while
        small writes are fast. A follower's acknowledgement waits for exactly this write, so the
        hop to the thread and back only adds two wake-ups; a one-entry commit holds the loop for
        about one fsync. A leader sent its appends already (early messages go before the write), so
        its fsync runs while the followers' do and, having started first, usually ends first; the
        hop to the thread had made it the slowest of the three (see
        ``RaftConfig.inline_write_leader`` for a leader whose disk is slower than its followers')."""
        return (self.config.inline_write_entries > 0 and self._small(rd)
                and (role != Role.LEADER or self.config.inline_write_leader)
                and self._write_avg <= self.config.inline_write_slow)

    def _write_took(self, seconds: float) -> None:
        was_fast = self._write_avg <= self.config.inline_write_slow
        self._write_avg += INLINE_WEIGHT * (seconds - self._write_avg)
        if was_fast and self._write_avg > self.config.inline_write_slow:
            self.stats["inline_write_backoffs"] += 1

    def _start_write(self, batch: StorageBatch) -> None:
        # Only the durable part (the commit and its fsync) runs on the worker thread; its end is
        # reported straight into the loop (no future-then-task hop).
        assert self._executor is not None
        if self._closed or self._dead:
            return
        try:
            finish = self.storage.begin_write(batch)
        except Exception as err:
            self._crash(err)
            return
        self._executor.submit(finish).add_done_callback(self._write_returned)

    def _write_returned(self, done: concurrent.futures.Future[None]) -> None:
        """On the worker thread: hand the finished write to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is gone: the node was closed
            self._loop.call_soon_threadsafe(self._write_done, done)

    def _write_done(self, done: concurrent.futures.Future[None]) -> None:
        rd = self._inflight
        self._inflight = None
        self._commit_early = False
        if rd is None or self._closed or self._dead:
            return
        err = done.exception()
        if err is not None:
            self._crash(err)
            return
        self.stats["writes"] += 1
        self.stats["entries_written"] += len(rd.entries)
        if self._write_started is not None:  # with both hops: a slow disk shows all the same
            self._write_took(time.perf_counter() - self._write_started)
            self._write_started = None
        try:
            self._finish(rd)
        except Exception as exc:
            self._crash(exc)
            return
        self._pump()

    def _finish(self, rd: Ready) -> None:
        """What follows ``rd``'s durable write: acknowledgements, applying, answering callers."""
        core = self.core
        assert core is not None
        for m in rd.messages:
            self._send(m.to, encode(m))
        core.advance(rd, self._loop.time())
        if rd.committed or rd.install is not None:
            self.applied_index.set(core.log.applied)
            self._notify()
        for c in rd.completions:
            self._resolve(c)

    async def wait_crashed(self) -> BaseException:
        """Wait until the engine stops on an internal error or a failed durable write, and return
        it. A node in that state takes no further part in Raft (it neither votes nor acknowledges),
        so a host process should stop and be restarted rather than linger as a silent member."""
        await self._crashed.wait()
        assert self.crash is not None
        return self.crash

    def _crash(self, err: BaseException) -> None:
        self._dead = True
        if self.crash is None:
            self.crash = err
        self._crashed.set()
        self.stats["engine_crashed"] += 1
        log.error("raft %s: engine crashed: %r", self.id, err, exc_info=err)
        for futs in self._futures.values():
            for f in futs:
                if not f.done():
                    f.set_exception(RaftError(f"raft engine of {self.id} crashed: {err!r}"))
        self._futures.clear()

    def _send(self, peer: str, frame: bytes) -> None:
        box = self._outboxes.get(peer)
        if box is None:
            box = self._outboxes[peer] = _Outbox(peer)
            box.task = asyncio.get_running_loop().create_task(self._sender(box), name=f"raft-{self.id}->{peer}")
        if not box.busy and not box.frames:
            # Nothing queued ahead: start the send right here. A transport with room (the usual
            # case) takes the frame without suspending, which saves a task hop per message on the
            # write path (the send used to wait for the outbox task's turn, after our own disk
            # write was submitted). A send that must wait is finished by the outbox task.
            coro = self.transport.send(peer, frame)
            try:
                waiting = coro.send(None)
            except StopIteration as done:
                if not done.value:
                    self.stats["send_dropped"] += 1
                return
            except Exception:  # a transport bug: Raft treats it as a lost frame
                self.stats["send_errors"] += 1
                log.exception("raft %s: sending to %s failed", self.id, peer)
                return
            box.stalled = (coro, waiting)
            box.busy = True
            box.wake.set()
            return
        if len(box.frames) >= OUTBOX_FRAMES:
            box.dropped += 1
            self.stats["outbox_dropped"] += 1
            return
        box.frames.append(frame)
        box.busy = True
        box.wake.set()

    async def _sender(self, box: _Outbox) -> None:
        transport = self.transport
        try:
            while not self._closed:
                await box.wake.wait()
                box.wake.clear()
                stalled, box.stalled = box.stalled, None
                if stalled is not None and not await _finish_send(*stalled):
                    self.stats["send_dropped"] += 1
                while box.frames:
                    data = box.frames.popleft()
                    if not await transport.send(box.peer, data):
                        self.stats["send_dropped"] += 1
                box.busy = False
        finally:
            if box.stalled is not None:
                box.stalled[0].close()

    async def _receive(self) -> None:
        sub = self._sub
        assert sub is not None
        while not self._closed:
            try:
                sender, data = await sub.get()
            except SeamClosed:
                return
            self._on_frame(sender, data)

    def _on_frame(self, sender: str, data: bytes) -> None:
        """Decode, validate and step one frame (undecodable or hostile ones are counted, dropped)."""
        core = self.core
        if core is None or self._closed:
            return
        try:
            m = decode(data, sender, self.id, max_size=self._max_frame)
        except (FrameError, BadMessage) as err:
            gate = getattr(err, "gate", None) or getattr(err, "reason", "invalid")
            self.stats[f"refused:{gate}"] += 1
            return
        try:
            core.step(m, asyncio.get_running_loop().time())
        except Exception:  # a bug, not the peer's fault: keep serving, but loudly
            self.stats["step_errors"] += 1
            log.exception("raft %s: stepping %s from %s failed", self.id, type(m).__name__, sender)
            return
        self.stats["received"] += 1
        self._kick()
