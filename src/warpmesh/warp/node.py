"""``WarpNode``: the leaderless scheduler. A roomful of peers shares a pile of jobs, nobody in charge.

Every peer replicates four small CRDT boards over its seam (each a Quilter on a mux channel):

=========  ====  ================================================================================
board      tag   contents
=========  ====  ================================================================================
queue      0x01  ``ORMap[task_id, LWWRegister[TaskDescriptor]]``: work waiting to run
results    0x02  ``ORMap[task_id, LWWRegister[OpResult]]``: one answer per task (the safety net)
intents    0x03  ``ORMap[run, GSet[peer]]``: claims ("dibs") on a run
counters   0x04  ``ORMap[name, GCounter]``: mesh-wide executions, duplicates, failovers, ...
members    0x05  ``ORMap[node, LWWRegister]``: each peer's role, ops and view of the worker set
=========  ====  ================================================================================

Ownership is a consistent-hash ring over the live workers (the seam's roster, or an injected roster
source such as Raft membership, minus peers the failure detector finds unresponsive). Each peer runs
the tasks it owns; see :mod:`warpmesh.warp.claim` for how a contested claim settles to one runner.
No message is sent per task beyond the deltas of the boards themselves.

Improvements over the reference, each covered by tests:

* the results board is checked before running, so a task whose answer already replicated is not
  re-run after churn;
* settling happens whenever ownership may be contested (views differ, unknown peers, rivals), not
  only when the local ring just changed, and the ring owner among claimants wins;
* a jittered re-claim pass picks up deferred work (no "nudge" enqueue needed);
* a re-enqueued task id runs again (each enqueue is a new *run*); local bookkeeping is pruned as
  tasks leave the queue, and results can be acknowledged or expire;
* counters are CRDTs, so any peer reports the whole mesh's figures, and concurrent duplicates are
  counted once, by the run whose result lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import os
import random
import time
import traceback as _traceback
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import blake3

from warpmesh.aio.observable import Observable
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.crdt import GCounter, GSet, LWWRegister, ORMap, replica_id
from warpmesh.liveness import HeartbeatConfig, Liveness
from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import PeerId, Seam, seam_incarnation
from warpmesh.quilt import Quilter, QuilterConfig
from warpmesh.warp import events as ev
from warpmesh.warp import policy
from warpmesh.warp.claim import ClaimStrategy, ClaimView, Decision, decide, winner
from warpmesh.warp.context import JobContext, _reset, _set
from warpmesh.warp.events import WarpEvent
from warpmesh.warp.model import (
    EXECUTOR_OP,
    ArgsUndecodable,
    NotReplicated,
    OpResult,
    Standby,
    TaskDescriptor,
    TransientError,
)
from warpmesh.warp.ops import OpRegistry, OpSpec
from warpmesh.warp.ring import DEFAULT_VNODES, TaskRing
from warpmesh.warp.steal import (
    MAX_GRANT_BYTES,
    OpCosts,
    StealGrant,
    StealRequest,
    encode_grant,
    encode_request,
)
from warpmesh.warp.steal import decode as decode_steal
from warpmesh.wire.frame import FrameUndecodable, pack, unpack

if TYPE_CHECKING:
    from warpmesh.quilt.store import NodeStore

log = logging.getLogger("warpmesh.warp")

QUEUE_TAG, RESULTS_TAG, INTENTS_TAG, COUNTERS_TAG, MEMBERS_TAG, STEAL_TAG = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
#: Who runs what right now (``warpmesh jobs``): a request/reply channel, silent unless asked.
INSPECT_TAG = 0x07
#: Running jobs one inspect reply lists at most.
MAX_INSPECT_JOBS = 10_000

#: Counter names on the mesh-wide counters board.
COUNTER_NAMES = ("executions", "duplicates", "failovers", "retries", "failures", "enqueued", "adopted", "stolen")


@dataclass(frozen=True)
class WarpConfig:
    """Scheduler tuning. Times in seconds."""

    strategy: ClaimStrategy = ClaimStrategy.INTENT
    #: How long contested claimants wait before the winner rule decides.
    settle_window: float = 0.3
    vnodes: int = DEFAULT_VNODES
    ring_seed: int = 0
    #: Period (jittered ±20%) of the full re-claim pass that picks up anything deferred.
    reclaim_interval: float = 1.0
    #: Attempts per run for transient failures and for process ops whose worker process died
    #: (first try included), with exponential backoff.
    max_attempts: int = 3
    retry_backoff: float = 0.1
    #: Concurrent runs of async and thread ops on this peer.
    max_concurrency: int = 64
    thread_workers: int = 16
    #: Worker processes for ``mode="process"`` ops (default: the machine's cores).
    process_workers: int | None = None
    #: Results this peer wrote are removed after this long (None: keep until acknowledged).
    result_ttl: float | None = None
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    quilter: QuilterConfig = field(default_factory=QuilterConfig)
    #: Counter increments are batched and flushed to the counters board this often (a crashed peer
    #: loses at most its last batch).
    counter_flush: float = 0.02
    #: How long ``enqueue`` waits for another peer to hold a new task (see :class:`NotReplicated`).
    replicate_timeout: float = 5.0
    #: How long a graceful ``close`` waits for its boards to replicate before leaving.
    leave_timeout: float = 1.0
    #: How long board deltas wait to be joined with others before they are sent: under load, many
    #: jobs share one frame per board (0: flush at the end of every loop iteration).
    coalesce_delay: float = 0.002
    #: Work stealing (see :mod:`warpmesh.warp.steal`): an idle worker asks a backlogged peer for
    #: tasks it claimed and has not started, and gets up to half of that backlog. Owners grant only
    #: while their backlog is estimated to take longer than ``steal_min_backlog`` seconds, so jobs
    #: quicker than a round trip stay where the ring put them.
    steal: bool = True
    steal_min_backlog: float = 0.05
    #: First retry interval of an idle worker's requests (doubling up to 1 s while nothing comes);
    #: a request unanswered for ``steal_timeout`` is given up.
    steal_interval: float = 0.02
    steal_timeout: float = 0.5

    def __post_init__(self) -> None:
        if self.settle_window < 0 or self.reclaim_interval <= 0 or self.retry_backoff < 0:
            raise ValueError("settle_window, reclaim_interval and retry_backoff must be non-negative")
        if self.max_attempts < 1 or self.max_concurrency < 1:
            raise ValueError("max_attempts and max_concurrency must be >= 1")


class Results:
    """A read-only view of the results board: one :class:`OpResult` per task id."""

    def __init__(self, board: ORMap) -> None:
        self._board = board

    @property
    def task_ids(self) -> frozenset[str]:
        return frozenset(self._board.keys())

    def get(self, task_id: str) -> OpResult | None:
        return _decode_result(self._board.get(task_id))

    def __getitem__(self, task_id: str) -> OpResult:
        r = self.get(task_id)
        if r is None:
            raise KeyError(task_id)
        return r

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._board

    def __len__(self) -> int:
        return len(self._board)

    def __iter__(self) -> Iterator[str]:
        return iter(self._board.keys())

    def items(self) -> Iterator[tuple[str, OpResult]]:
        for k in self._board.keys():
            r = self.get(k)
            if r is not None:
                yield k, r


def _board_value(reg: LWWRegister | None) -> Any:
    """Board values travel as msgpack bytes inside an LWW register (decoded on read)."""
    if reg is None or reg.is_bottom() or not isinstance(reg.value, bytes):
        return None
    try:
        return unpack(reg.value)
    except FrameUndecodable:
        return None


def _decode_result(reg: LWWRegister | None) -> OpResult | None:
    wire = _board_value(reg)
    if wire is None:
        return None
    try:
        return OpResult.from_wire(wire)
    except ValueError:
        return None


def _view_digest(workers: Iterable[str]) -> str:
    return blake3.blake3("\x00".join(sorted(workers)).encode()).hexdigest()[:16]


class WarpNode:
    """One peer of the leaderless scheduler. See the module docstring.

    ``WarpNode(seam, registry=ops)`` with an :class:`~warpmesh.warp.ops.OpRegistry`, or, as in the
    seed, ``WarpNode(seam, executor=fn)`` where ``fn(task_id)`` computes a task's answer. Then
    ``await node.start()``, ``await node.enqueue(task_id, op, args)`` on any peer, and every peer's
    :attr:`results` converges to one answer per task.
    """

    def __init__(
        self,
        seam: Seam,
        *,
        registry: OpRegistry | None = None,
        executor: Callable[[str], Any] | None = None,
        strategy: ClaimStrategy | None = None,
        config: WarpConfig | None = None,
        roster: Observable[frozenset[PeerId]] | None = None,
        incarnation: int | None = None,
        role: str = "worker",
        rng: random.Random | None = None,
        clock: Callable[[], float] | None = None,
        mux: MuxSeam | None = None,
        wall_clock: Callable[[], float] | None = None,
        data_dir: str | os.PathLike[str] | NodeStore | None = None,
    ) -> None:
        if role not in ("worker", "client"):
            raise ValueError("role must be 'worker' or 'client'")
        cfg = config or WarpConfig()
        if strategy is not None and strategy is not cfg.strategy:
            from dataclasses import replace

            cfg = replace(cfg, strategy=strategy)
        self.config = cfg
        self.seam = seam
        self.self_id: PeerId = seam.self_id
        self.role = role
        self.registry = OpRegistry()
        if registry is None and executor is None:
            from warpmesh.warp.ops import default_registry

            registry = default_registry  # every @warp_op of this process
        if registry is not None:
            self.registry.update(registry)
        if executor is not None:
            mode = "async" if asyncio.iscoroutinefunction(executor) else "inline"
            self.registry.register(EXECUTOR_OP, executor, mode=mode)  # type: ignore[arg-type]
        #: Durable boards (``data_dir``: a directory or an open :class:`~warpmesh.quilt.store.NodeStore`),
        #: restored before the node talks; None keeps them in memory only. See docs/warp.md, "Durability".
        self.store: NodeStore | None = None
        if data_dir is not None:
            from warpmesh.quilt.store import NodeStore

            self.store = data_dir if isinstance(data_dir, NodeStore) else NodeStore.open(data_dir, self.self_id)
            # Always above the stored one: a restart never reuses its past incarnation's dots.
            incarnation = self.store.claim_incarnation(incarnation, default=seam_incarnation(seam))
        if incarnation is None:
            incarnation = seam_incarnation(seam)
        self.incarnation = int(incarnation)
        self.replica = replica_id(self.self_id, self.incarnation)
        self.rng = rng or random.Random(f"{self.replica}")
        self._clock = clock
        #: Wall-clock time (seconds since the epoch) for deadlines, which travel between peers.
        self.wall_clock: Callable[[], float] = wall_clock or time.time
        self._roster_source = roster
        # Share the application's mux if it has one: one reader of the seam, channels side by side.
        self._own_mux = mux is None
        self.mux = mux if mux is not None else MuxSeam(seam)
        qcfg = cfg.quilter

        def board(tag: int, state: Any) -> Quilter[Any]:
            return Quilter(self.mux.channel(tag), state, stream=self.replica, config=qcfg,
                           rng=random.Random(self.rng.getrandbits(32)), coalesce_delay=cfg.coalesce_delay,
                           store=None if self.store is None else self.store.board(f"warp-{tag}"))

        self.queue: Quilter[ORMap] = board(QUEUE_TAG, ORMap(LWWRegister))
        self.results_board: Quilter[ORMap] = board(RESULTS_TAG, ORMap(LWWRegister))
        self.intents: Quilter[ORMap] = board(INTENTS_TAG, ORMap(GSet))
        self.counters: Quilter[ORMap] = board(COUNTERS_TAG, ORMap(GCounter))
        self.members: Quilter[ORMap] = board(MEMBERS_TAG, ORMap(LWWRegister))
        self._boards = (self.queue, self.results_board, self.intents, self.counters, self.members)
        self.liveness = Liveness(self.mux, cfg.heartbeat)
        self.results = Results(self.results_board.state)

        # Local (unreplicated) bookkeeping; every map is pruned as tasks leave the queue.
        self._workers: frozenset[str] = frozenset()
        self._all_workers: frozenset[str] = frozenset()
        self._ring = TaskRing((), vnodes=cfg.vnodes, seed=cfg.ring_seed)
        self._ring_all = self._ring
        self._view = _view_digest(())
        self._view_changed_at = float("-inf")
        self._claimed: dict[str, str] = {}  # task -> run claimed here (settling, queued or running)
        self._standby: dict[str, str] = {}  # task -> run this peer stood down from
        self._deferred: dict[str, tuple[str, float]] = {}  # task -> (run, until): the op raised Standby
        self._executed: OrderedDict[str, str] = OrderedDict()  # task -> run executed here (recent)
        self._written: dict[str, tuple[str, float]] = {}  # task -> (run, when) of results written here
        self._member_cache: tuple[int, dict[str, dict[str, Any]]] = (-1, {})
        self._member_extra: dict[str, Any] = {}  # extra published fields (set_member_field)
        self._member_replicas: dict[str, str] = {}  # node id -> replica id of its newest incarnation
        self._result_listeners: list[Callable[[list[str]], None]] = []
        self._event_subscribers: list[Callable[[WarpEvent], None]] = []
        self._run_started: dict[tuple[str, str], float] = {}  # (task, run) -> start, only while observed
        self._seen_workers: set[str] = set()  # every worker ever in our live set (joined vs readmitted)
        self._pending_counts: dict[str, int] = {}
        self._to_consider: dict[str, None] = {}  # insertion-ordered set
        self._ready: deque[tuple[str, TaskDescriptor]] = deque()
        self._ready_event = asyncio.Event()
        self._dequeues: list[tuple[int, str, str]] = []  # (results seq, task, run) awaiting replication
        self._dequeue_event = asyncio.Event()
        self._dequeuing: set[tuple[str, str]] = set()
        self._run_seq = 0
        self._running = 0
        self._active: set[tuple[str, str]] = set()  # (task, run) executing off the loop right now
        self._jobs: dict[tuple[str, str], _Job] = {}  # (task, run) running here: context, interrupt handle
        self._absent_since: dict[str, float] = {}  # member node -> when it was first seen gone
        self._pool_gen = 0  # process pool generation (a rebuilt pool is a new one)
        self._pool_kills: set[int] = set()  # generations we killed on purpose (a cancel), not a crash
        self._tasks: list[asyncio.Task[Any]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        # Process-pool runs in flight: the pool's size plus one (so it never waits on IPC). The rest
        # waits in the ready queue rather than in the pool, within reach of work stealing.
        self._process_slots: asyncio.Semaphore | None = None
        self._thread_pool: ThreadPoolExecutor | None = None
        self._process_pool: Executor | None = None
        self._started = False
        self._closed = False
        #: Local tallies (the mesh-wide figures are on the counters board: :meth:`counter`).
        self.local_stats: Counter[str] = Counter(dict.fromkeys(COUNTER_NAMES, 0))

        # Work stealing (local, unreplicated; see warpmesh.warp.steal).
        self._steal_channel = self.mux.channel(STEAL_TAG)
        self._inspect_channel = self.mux.channel(INSPECT_TAG)
        self._remove_inspect_handler: Callable[[], None] | None = None
        self._inspect_seq = 0
        self._inspect_waiters: dict[int, tuple[set[str], dict[str, list[Any]], asyncio.Event]] = {}
        self._remove_steal_handler: Callable[[], None] | None = None
        self._costs = OpCosts()
        self._delegated: dict[str, tuple[str, str, int]] = {}  # task -> (run, thief, request seq): granted away
        self._thieves: dict[str, tuple[int, int]] = {}  # thief -> (incarnation, newest request seq seen)
        self._stolen: dict[str, tuple[str, str, float | None]] = {}  # task -> (run, owner, finished at): granted us
        self._steal_seq = 0
        self._steal_sent: dict[str, int] = {}  # owner -> seq of the newest request sent to it
        self._steal_pending: tuple[str, int, float] | None = None  # (owner, seq, sent at) awaiting a grant
        self._backlogs: dict[str, tuple[float, float]] = {}  # peer -> (backlog seconds, reported at)
        self._steal_wake = asyncio.Event()
        self._steal_backoff = cfg.steal_interval
        #: Work-stealing tallies of this peer (requests, grants, tasks in and out, take-backs, bad frames).
        self.steal_stats: Counter[str] = Counter(dict.fromkeys(
            ("requests_out", "requests_in", "grants_in", "tasks_in", "tasks_out", "taken_back", "late_grants",
             "bad_frames"), 0))

    # -- lifecycle --------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def start(self) -> WarpNode:
        if self._started:
            return self
        self._started = True
        for q in self._boards:
            await q.start()
        await self.liveness.start()
        self.queue.core.listener = self._on_queue_delta
        self.results_board.core.listener = self._on_results_delta
        self.members.core.listener = self._on_members_delta
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._dispatch(), name=f"warp-dispatch-{self.self_id}"),
            loop.create_task(self._watch_membership(), name=f"warp-members-{self.self_id}"),
            loop.create_task(self._housekeeping(), name=f"warp-housekeeping-{self.self_id}"),
            loop.create_task(self._dequeuer(), name=f"warp-dequeue-{self.self_id}"),
        ]
        self._remove_steal_handler = self._steal_channel.add_handler(self._on_steal)
        self._remove_inspect_handler = self._inspect_channel.add_handler(self._on_inspect)
        if self.role == "worker" and self.config.steal:
            self._tasks.append(loop.create_task(self._stealer(), name=f"warp-steal-{self.self_id}"))
        if self.role == "client":
            self._tasks.append(loop.create_task(self._introduce_to_new_peers(),
                                                name=f"warp-introduce-{self.self_id}"))
        self._refresh_membership(force_publish=True)
        if any(spec.mode == "process" for spec in self._specs()):
            self._pool_for("process")  # start worker processes now, not on the first job
        return self

    async def __aenter__(self) -> WarpNode:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop claiming, cancel runs in progress, flush what is pending, close the boards."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait([*self._tasks, *self._inflight])
        if self._remove_steal_handler is not None:
            self._remove_steal_handler()
        if self._remove_inspect_handler is not None:
            self._remove_inspect_handler()
        self._closed = False
        self._flush_counts()  # hand the last increments to the counters board before it flushes
        self._closed = True
        if self.role == "client" and self.replica in self.members.state:
            # A client leaves no trace on the members board (each CLI call is a new client).
            self.members.mutate(lambda m: m.remove(self.replica))
        # A graceful leave hands its state over: give every board a moment to replicate.
        for q in self._boards:
            with contextlib.suppress(Exception):
                await q.replicated(timeout=self.config.leave_timeout)
        await self.liveness.close()
        for q in self._boards:
            await q.close()
        if self._own_mux:
            await self.mux.close()
        for pool in (self._thread_pool, self._process_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def running_jobs(self) -> list[dict[str, Any]]:
        """Runs executing on this peer now: ``task``, ``run``, ``op``, ``since`` (wall clock), ``attempts``."""
        return [{"task": t, "run": r, "op": j.ctx.op, "since": j.since, "attempts": j.ctx.attempt}
                for (t, r), j in sorted(self._jobs.items())]

    async def inspect(self, peers: Iterable[str], timeout: float = 2.0) -> dict[str, list[dict[str, Any]]]:
        """Ask ``peers`` what they run right now (see :meth:`running_jobs`); peers that do not
        answer within ``timeout`` are left out."""
        self._inspect_seq += 1
        seq = self._inspect_seq
        waiting = {p for p in peers if p != self.self_id}
        got: dict[str, list[Any]] = {}
        done = asyncio.Event()
        self._inspect_waiters[seq] = (waiting, got, done)
        for peer in sorted(waiting):
            with contextlib.suppress(Exception):
                await self._inspect_channel.send_to(peer, pack({"q": seq}))
        try:
            if waiting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout)
        finally:
            self._inspect_waiters.pop(seq, None)
        out: dict[str, list[dict[str, Any]]] = {}
        for peer, rows in got.items():
            out[peer] = [{"task": r[0], "run": r[1], "op": r[2], "since": r[3], "attempts": r[4]} for r in rows]
        if self.self_id in peers:
            out[self.self_id] = self.running_jobs()
        return out

    def _on_inspect(self, sender: str, data: bytes) -> None:
        try:
            msg = unpack(data)
        except FrameUndecodable:
            return
        if not isinstance(msg, dict):
            return
        q, r = msg.get("q"), msg.get("r")
        if isinstance(q, int) and not self._closed:
            rows = [[j["task"], j["run"], j["op"], j["since"], j["attempts"]]
                    for j in self.running_jobs()[:MAX_INSPECT_JOBS]]

            async def reply() -> None:
                with contextlib.suppress(Exception):
                    await self._inspect_channel.send_to(sender, pack({"r": q, "jobs": rows}))

            t = asyncio.get_running_loop().create_task(reply())
            self._inflight.add(t)
            t.add_done_callback(self._inflight.discard)
        elif isinstance(r, int) and r in self._inspect_waiters:
            waiting, got, done = self._inspect_waiters[r]
            jobs = msg.get("jobs")
            if sender in waiting and isinstance(jobs, list):
                got[sender] = [row for row in jobs if isinstance(row, list) and len(row) == 5
                               and isinstance(row[0], str) and isinstance(row[1], str)]
                waiting.discard(sender)
                if not waiting:
                    done.set()

    def _specs(self) -> Iterator[OpSpec]:
        for name in self.registry.names():
            spec = self.registry.resolve(name)
            if spec is not None:
                yield spec

    # -- public API -------------------------------------------------------------------------
    async def enqueue(self, task_id: str, op: str | None = None, /, *args: Any, pin: PeerId | None = None,
                      run: str | None = None, deadline: float | None = None, **kwargs: Any) -> str:
        """Add a task to the shared queue (from any peer); returns its run token.

        ``op`` names a registered op, called as ``op(*args, **kwargs)`` by the peer that runs it
        (default op: the node's ``executor``, called with ``task_id``). ``pin``, ``run`` and
        ``deadline`` are reserved names, as in Dask's ``client.submit``. ``deadline`` is in
        seconds from now: when it passes, the run is cancelled (see :meth:`cancel`).
        Enqueuing an id again starts a new run that replaces the previous answer.

        Returns once a majority of the mesh holds the task, so it survives any minority of peers
        crashing (with ``data_dir`` peers: holds it on disk, so it survives every peer losing power
        at once); on a mesh of one it returns at once (with ``data_dir``: once on its disk). Raises :class:`NotReplicated` when no
        majority acknowledged it within ``WarpConfig.replicate_timeout`` (at once when too few
        peers are reachable, e.g. on the minority side of a partition); the task then stays queued
        here and replicates when it can. To retry through another peer without risking a second
        execution, pass the exception's ``run`` as ``run``: the same run token names the same run
        everywhere, and a run is answered once.
        """
        run = self.enqueue_nowait(task_id, op, *args, pin=pin, run=run, deadline=deadline, **kwargs)
        if not self.queue.core.peers and self.store is None:
            return run  # a mesh of one: nothing to replicate to (with a store: once on its disk)
        need = self.holders_needed()
        reachable = len(self.liveness.live.value - {self.self_id})
        if reachable < need:
            raise NotReplicated(task_id, run, f"only {reachable} other peer(s) reachable, a majority needs {need}")
        if not await self.queue.replicated(timeout=self.config.replicate_timeout, count=need):
            raise NotReplicated(task_id, run,
                                f"no majority acknowledged it within {self.config.replicate_timeout} s")
        return run

    def holders_needed(self) -> int:
        """Other peers that must hold a mutation of ours before it counts as replicated.

        A worker counts itself towards a majority of the mesh; a client does not, since it leaves
        soon after (``warpmesh submit``): it needs a majority of the other peers.
        """
        core = self.queue.core
        return core.majority_others() if self.role == "worker" else len(core.peers) // 2 + 1

    def enqueue_nowait(self, task_id: str, op: str | None = None, /, *args: Any, pin: PeerId | None = None,
                       run: str | None = None, deadline: float | None = None, **kwargs: Any) -> str:
        """Synchronous :meth:`enqueue`: queued here at once, replicated in the background.

        Raises ``TypeError`` when the arguments cannot be encoded (nothing is queued then).
        """
        if op is None:
            op, args = EXECUTOR_OP, (args or (task_id,))
        return self.enqueue_call(task_id, op, args, kwargs, pin=pin, run=run, deadline=deadline)

    def enqueue_call(self, task_id: str, op: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None,
                     *, pin: PeerId | None = None, run: str | None = None, deadline: float | None = None) -> str:
        """:meth:`enqueue_nowait` with the arguments given as a list and a dict (any keyword
        names, ``pin`` included): what ``warpmesh submit`` uses."""
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("task_id must be a non-empty string")
        args = tuple(args)
        if run is None:
            self._run_seq += 1
            run = f"{self.replica}:{self._run_seq}"
        elif not isinstance(run, str) or not run:
            raise ValueError("run must be a non-empty string (a token returned by an earlier enqueue)")
        if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, int | float)
                                     or not deadline > 0):
            raise ValueError("deadline must be a positive number of seconds")
        at = None if deadline is None else self.wall_clock() + float(deadline)
        desc = TaskDescriptor(op=op, args=tuple(args), run=run, pin=pin, enqueued_by=self.self_id,
                              kwargs=kwargs or None, deadline=at)
        try:
            desc = TaskDescriptor(op=op, run=run, pin=pin, enqueued_by=self.self_id, deadline=at,
                                  packed_args=desc.args_bytes())
        except (TypeError, ValueError, OverflowError) as err:
            raise TypeError(f"arguments of {op} cannot be encoded ({err}); pass lists, dicts, str, bytes, "
                            "numbers, bool or None (integers within 64 bits)") from None
        wire = pack(desc.to_wire())
        r = self.replica
        self.queue.mutate(lambda m: m.update(r, task_id, lambda cur: cur.set(r, wire)))
        self._count("enqueued")
        if self._event_subscribers:
            self._emit(ev.ENQUEUED, task_id, self.self_id, run=desc.run, op=op, pin=pin)
        # Considered in a batch at the end of this loop iteration: a loop of enqueues pays for the
        # claim view once, not once per task.
        if not self._to_consider:
            asyncio.get_running_loop().call_soon(self._consider_pending)
        self._to_consider[task_id] = None
        return desc.run

    def _consider_pending(self) -> None:
        pending, self._to_consider = self._to_consider, {}
        self._consider_many(pending)

    def enqueue_local(self, task_id: str, op: str | None = None, /, *args: Any, **kwargs: Any) -> str:
        """Enqueue a task pinned to this peer: it runs here and never re-homes."""
        return self.enqueue_nowait(task_id, op, *args, pin=self.self_id, **kwargs)

    async def outcome(self, task_id: str, timeout: float | None = None, *, run: str | None = None) -> OpResult:
        """Wait for the answer record of ``task_id`` (of ``run`` if given, else of its latest run)."""

        def ready() -> OpResult | None:
            res = self.results.get(task_id)
            if res is None:
                return None
            want = run
            if want is None:
                desc = self._descriptor(task_id)
                want = desc.run if desc is not None else res.run
            return res if res.run == want else None

        async def wait() -> OpResult:
            while (res := ready()) is None:
                await self.results_board.changes.changed()
            return res

        return await asyncio.wait_for(wait(), timeout) if timeout is not None else await wait()

    async def result(self, task_id: str, timeout: float | None = None, *, run: str | None = None) -> Any:
        """Wait for ``task_id``'s value; raise :class:`~warpmesh.warp.TaskFailed` (with the remote
        error and traceback) if its run failed or was cancelled. :meth:`outcome` gives the record."""
        return (await self.outcome(task_id, timeout, run=run)).unwrap(task_id)

    def cancel(self, task_id: str, *, reason: str = "cancelled") -> str:
        """Cancel ``task_id``'s current run: ``"cancelled"``, ``"done"`` (already answered) or ``"unknown"``.

        A queued run is removed; a running one is interrupted where its mode allows (process ops
        are killed, async ops cancelled; inline and thread ops are told through
        ``current_job().cancelled`` and their result is discarded). The answer records
        ``cancelled``. Takes effect on every peer as the results board replicates.
        """
        desc = self._descriptor(task_id)
        if desc is None:
            return "done" if task_id in self.results else "unknown"
        if self._result_run(task_id) == desc.run:
            return "done"
        self._write_cancel(task_id, desc, reason)
        return "cancelled"

    def _write_cancel(self, task_id: str, desc: TaskDescriptor, reason: str) -> None:
        result = OpResult.failure(desc.run, reason, by=self.self_id, attempts=1, cancelled=True, op=desc.op)
        wire, r = pack(result.to_wire()), self.replica
        self.results_board.mutate(lambda m: m.update(r, task_id, lambda cur: cur.set(r, wire)))
        self._interrupt(task_id, desc.run, reason)
        if self._claimed.get(task_id) == desc.run:
            self._claimed.pop(task_id, None)
        if self.role == "worker":
            self._dequeues.append((self.results_board.core.pending_seq, task_id, desc.run))
            self._dequeuing.add((task_id, desc.run))
            self._dequeue_event.set()

    async def wait_idle(self, task_ids: Iterable[str] | None = None, timeout: float | None = None) -> None:
        """Wait until the given tasks (default: everything queued here) have answers."""
        ids = list(task_ids) if task_ids is not None else list(self.queue.state.keys())
        for t in ids:
            await self.outcome(t, timeout=timeout)

    def ack(self, task_id: str) -> None:
        """Acknowledge (remove) a task's answer from the board on every peer."""
        run = self._result_run(task_id)
        if run is not None:
            # The answered run may still be queued somewhere (its dequeue waits for a majority): it
            # leaves with its answer, or a peer that sees the queue entry but no answer runs it again.
            self._remove_from_queue(task_id, run)
        self.results_board.mutate(lambda m: m.remove(task_id))
        self._written.pop(task_id, None)

    def add_result_listener(self, fn: Callable[[list[str]], None]) -> Callable[[], None]:
        """Call ``fn(task_ids)`` whenever answers for ``task_ids`` arrive from other peers.

        Called on the event loop, synchronously, right after the board changed (keep it cheap;
        ``task_ids`` may include tasks whose answer was removed). Returns a function that removes
        the listener. Used by ``warpmesh submit --wait`` to follow many tasks at O(1) per answer.
        """
        self._result_listeners.append(fn)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._result_listeners.remove(fn)

        return remove

    def subscribe_events(self, fn: Callable[[WarpEvent], None]) -> Callable[[], None]:
        """Call ``fn(event)`` for each :class:`~warpmesh.warp.events.WarpEvent` of this peer.

        Called synchronously on the event loop, in order, as the protocol steps (keep it cheap; an
        exception from ``fn`` is logged and does not stop the node). Returns a function that
        unsubscribes. With no subscriber, no event is even built.
        """
        self._event_subscribers.append(fn)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._event_subscribers.remove(fn)

        return unsubscribe

    def _publish_events(self, events: Iterable[WarpEvent]) -> None:
        for event in events:
            for fn in list(self._event_subscribers):
                try:
                    fn(event)
                except Exception:  # an observer's bug never stops the scheduler
                    log.exception("%s: event subscriber failed on %s", self.self_id, event.kind)

    def _emit(self, kind: str, job: str | None = None, peer: str | None = None, **detail: Any) -> None:
        # Callers guard with ``if self._event_subscribers`` so an unobserved node builds nothing.
        self._publish_events((WarpEvent(kind, self.now(), job, peer, detail),))

    async def sync_from(self, peer: PeerId, timeout: float | None = None) -> None:
        """Wait until every board here holds everything ``peer``'s boards held when it answered.

        A peer that just joined (``warpmesh results``/``status``) calls this before reading, so it
        never reports a half-received board. Pulls each board's state from ``peer`` at once (see
        :meth:`~warpmesh.quilt.Quilter.sync_with`) instead of waiting for anti-entropy rounds.
        Raises :class:`TimeoutError`.
        """
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(q.sync_with(peer) for q in self._boards))
        self._refresh_membership()

    def queued(self) -> Iterator[tuple[str, TaskDescriptor]]:
        """Every task on the shared queue with its descriptor (waiting, settling or running)."""
        for task_id in list(self.queue.state.keys()):
            desc = self._descriptor(task_id)
            if desc is not None:
                yield task_id, desc

    def claimants(self, run: str) -> frozenset[str]:
        """Peers that noted a claim on ``run`` on the intents board (``ClaimStrategy.INTENT``)."""
        return self._claimants(run)

    def member_info(self) -> dict[str, dict[str, Any]]:
        """Each node's newest entry on the members board: ``role``, ``ops`` and ``view``."""
        return dict(self._member_info())

    @property
    def view(self) -> str:
        """Digest of this peer's worker set, as published in its ``view`` on the members board."""
        return self._view

    def counter(self, name: str) -> int:
        """A mesh-wide counter (every peer's increments that have reached this peer)."""
        c = self.counters.state.get(name)
        return 0 if c is None else c.value

    def counters_by_peer(self, name: str) -> dict[str, int]:
        """A mesh-wide counter split by node (incarnations of one node are summed)."""
        c = self.counters.state.get(name)
        out: dict[str, int] = {}
        if c is None:
            return out
        for rid, n in c.slots.items():
            node = rid.rpartition("@")[0] or rid
            out[node] = out.get(node, 0) + n
        return out

    @property
    def queue_depth(self) -> int:
        return len(self.queue.state)

    @property
    def workers(self) -> frozenset[str]:
        """Live workers the ring is built over (self included when a worker)."""
        return self._workers

    @property
    def ring(self) -> TaskRing:
        return self._ring

    def status(self) -> dict[str, Any]:
        """A snapshot for ``warpmesh status``."""
        return {
            "node": self.self_id,
            "replica": self.replica,
            "role": self.role,
            "roster": sorted(self._roster()),
            "live_workers": sorted(self._workers),
            "health": {p: h.value for p, h in self.liveness.health.value.items()},
            "ring_shares": {p: round(s, 4) for p, s in self._ring.shares().items()},
            "queue_depth": self.queue_depth,
            "results": len(self.results),
            "running": self._running + len(self._ready),
            "counters": {n: self.counter(n) for n in COUNTER_NAMES},
            "executions_by_peer": self.counters_by_peer("executions"),
            "ops": self.registry.names(),
        }

    # -- membership -------------------------------------------------------------------------
    def _roster(self) -> frozenset[PeerId]:
        source = self._roster_source.value if self._roster_source is not None else self.seam.roster.value
        return frozenset(source)

    def _member_info(self) -> dict[str, dict[str, Any]]:
        """Node id -> the entry of its newest incarnation on the members board (cached per version)."""
        version = self.members.core.version
        if self._member_cache[0] == version:
            return self._member_cache[1]
        info: dict[str, dict[str, Any]] = {}
        newest: dict[str, int] = {}
        for rid in self.members.state.keys():
            node, _, inc = str(rid).rpartition("@")
            if not node or not inc.isdigit() or int(inc) < newest.get(node, -1):
                continue
            value = _board_value(self.members.state.get(rid))
            if isinstance(value, dict):
                info[node] = value
                newest[node] = int(inc)
        self._member_cache = (version, info)
        self._member_replicas = {node: f"{node}@{inc}" for node, inc in newest.items()}
        return info

    def _replica_live(self, replica: str) -> bool:
        """Whether ``replica`` (one incarnation of a peer) is the live, newest incarnation of a worker."""
        node = replica.rpartition("@")[0]
        if node not in self._workers:
            return False
        self._member_info()  # refreshes the newest-incarnation map
        return self._member_replicas.get(node) == replica

    def _forget_own_past_incarnations(self) -> None:
        stale = [rid for rid in self.members.state.keys()
                 if str(rid).rpartition("@")[0] == self.self_id and rid != self.replica]
        for rid in stale:
            self.members.mutate(lambda m, rid=rid: m.remove(rid))  # type: ignore[misc]

    def _refresh_membership(self, force_publish: bool = False) -> None:
        if self._closed:
            return
        info = self._member_info()
        roster = self._roster()
        live = self.liveness.live.value & roster  # in the roster (source) and heard from lately
        workers = {p for p in live if info.get(p, {}).get("role") == "worker"}
        if self.role == "worker" and (self._roster_source is None or self.self_id in roster):
            workers.add(self.self_id)
        workers_f = frozenset(workers)
        all_workers = frozenset(p for p, v in info.items() if v.get("role") == "worker") | (
            {self.self_id} if self.role == "worker" else set())
        if all_workers != self._all_workers:
            self._all_workers = all_workers
            self._ring_all = TaskRing(all_workers, vnodes=self.config.vnodes, seed=self.config.ring_seed)
        changed = workers_f != self._workers
        if changed and self._event_subscribers:
            self._emit_membership(self._workers, workers_f, roster)
        if changed:
            self._seen_workers.update(workers_f)
            self._workers = workers_f
            self._ring = TaskRing(workers_f, vnodes=self.config.vnodes, seed=self.config.ring_seed)
            self._view = _view_digest(workers_f)
            self._view_changed_at = self.now()
            self._standby.clear()  # a new ring may make a stood-down claimant the winner
        if changed or force_publish:
            self._publish_member()
        if changed:
            for task_id in [t for t, (_, thief, _) in self._delegated.items() if thief not in workers_f]:
                del self._delegated[task_id]  # its thief left: ours again (the re-claim below)
                self.steal_stats["taken_back"] += 1
            self._claim_all()

    def _emit_membership(self, old: frozenset[str], new: frozenset[str], roster: frozenset[str]) -> None:
        for peer in sorted(new - old):
            self._emit(ev.PEER_READMITTED if peer in self._seen_workers else ev.PEER_JOINED, peer=peer)
        for peer in sorted(old - new):
            self._emit(ev.PEER_SUSPECTED if peer in roster else ev.PEER_LOST, peer=peer)

    def _on_members_delta(self, _delta: ORMap | None) -> None:
        self._forget_own_past_incarnations()
        if self._started and not self._closed and self.replica not in self.members.state:
            self._publish_member()  # a peer forgot us while we were cut off (see _forget_lost_members)
        self._refresh_membership()

    def _forget_lost_members(self) -> None:
        """Remove the members-board entries of nodes gone (off the roster and silent) for longer
        than the failure detector's ``lost_after``, so ``warpmesh status`` stops listing them. A
        node that comes back publishes a new entry."""
        if self.role != "worker":
            return
        now = self.now()
        present = self._roster() | self.liveness.live.value | {self.self_id}
        info = self._member_info()
        for node in [n for n in self._absent_since if n not in info or n in present]:
            del self._absent_since[node]
        for node in info:
            if node in present:
                continue
            since = self._absent_since.setdefault(node, now)
            if now - since < self.config.heartbeat.lost_after:
                continue
            del self._absent_since[node]
            log.info("%s: forgetting %s, gone for over %.3g s", self.self_id, node, now - since)
            for rid in [r for r in self.members.state.keys() if str(r).rpartition("@")[0] == node]:
                self.members.mutate(lambda m, rid=rid: m.remove(rid))  # type: ignore[misc]

    def set_member_field(self, name: str, value: Any) -> None:
        """Publish an extra field (e.g. ``warm`` keys) in this peer's entry on the members board."""
        if name in ("role", "view", "ops"):
            raise ValueError(f"member field {name!r} is reserved")
        self._member_extra[name] = value
        if self._started and not self._closed:
            self._publish_member()

    def _publish_member(self) -> None:
        # Keyed by replica id: each incarnation owns its entry, so a restart never races its past.
        value = pack({**self._member_extra, "role": self.role, "view": self._view, "ops": self.registry.names()})
        r = self.replica
        self.members.mutate(lambda m: m.update(r, r, lambda cur: cur.set(r, value)))

    def _contested(self) -> bool:
        if self.now() - self._view_changed_at < self.config.settle_window:
            return True
        info = self._member_info()
        # Any reachable worker - in our ring or not (an injected roster source may leave it out) -
        # that sees a different worker set may believe it owns our tasks. A reachable peer that
        # has not published anything yet may be such a worker too.
        for peer in self.liveness.live.value | self._workers:
            if peer == self.self_id:
                continue
            entry = info.get(peer)
            if entry is None or (entry.get("role") == "worker" and entry.get("view") != self._view):
                return True
        return False

    async def _introduce_to_new_peers(self) -> None:
        # A client's entry (role "client") was published before most links were up, and a board
        # replicates earlier batches to a newcomer only through anti-entropy rounds. Until a worker
        # has the entry it counts the client as a possible worker and settles every claim, so
        # exchange the (small) members board with each new peer at once.
        known: frozenset[PeerId] = frozenset({self.self_id})
        async for roster in self.seam.roster.updates():
            for peer in sorted(roster - known):
                self.members.request_sync(peer)
            known = frozenset(roster)

    async def _watch_membership(self) -> None:
        # The roster source and the failure detector both change who is live.
        loop = asyncio.get_running_loop()

        async def follow(obs: Observable[Any]) -> None:
            async for _ in obs.updates():
                self._refresh_membership()

        sources = [self.liveness.live, self.seam.roster]
        if self._roster_source is not None:
            sources.append(self._roster_source)
        watchers = [loop.create_task(follow(o)) for o in sources]
        try:
            await asyncio.gather(*watchers)
        finally:
            for w in watchers:
                w.cancel()

    # -- claiming ---------------------------------------------------------------------------
    def _descriptor(self, task_id: str) -> TaskDescriptor | None:
        wire = _board_value(self.queue.state.get(task_id))
        if wire is None:
            return None
        try:
            return TaskDescriptor.from_wire(wire)
        except ValueError:
            log.warning("%s: ignoring malformed descriptor for task %r", self.self_id, task_id)
            return None

    def _result_run(self, task_id: str) -> str | None:
        wire = _board_value(self.results_board.state.get(task_id))
        run = wire.get("run") if isinstance(wire, dict) else None
        return run if isinstance(run, str) else None

    def _eligible(self, op: str) -> frozenset[str] | None:
        """Live workers that have ``op`` registered (None: all of them, the common case)."""
        info = self._member_info()
        holders = {p for p in self._workers if op in info.get(p, {}).get("ops", ())}
        if op in self.registry:
            holders.add(self.self_id)
        holders &= self._workers
        return None if holders == self._workers else frozenset(holders)

    def _claim_all(self) -> None:
        self._consider_many(self.queue.state.keys())

    def _consider(self, task_id: str) -> None:
        self._consider_many((task_id,))

    def _consider_many(self, task_ids: Iterable[str]) -> None:
        """Claim what is ours among ``task_ids``; the view and eligibility are computed once."""
        if self._closed or self.role != "worker":
            return
        strategy = self.config.strategy
        view = ClaimView(self.self_id, self._ring,
                         self._contested() if strategy is ClaimStrategy.INTENT else False, strategy)
        eligible_by_op: dict[str, frozenset[str] | None] = {}
        for task_id in task_ids:
            desc = self._descriptor(task_id)
            if desc is None:
                continue
            if desc.op not in eligible_by_op:
                eligible_by_op[desc.op] = self._eligible(desc.op)
            self._claim(task_id, desc, view, eligible_by_op[desc.op])

    def _claim(self, task_id: str, desc: TaskDescriptor, view: ClaimView,
               eligible: frozenset[str] | None) -> None:
        if self._result_run(task_id) == desc.run:
            # Answered already (whatever we thought of the task before): only cleanup remains.
            self._cleanup_done(task_id, desc)
            return
        if self._claimed.get(task_id) == desc.run or self._standby.get(task_id) == desc.run:
            return
        delegated = self._delegated.get(task_id)
        if delegated is not None:
            if delegated[0] == desc.run:
                return  # granted to a thief, who runs it (or we take it back)
            del self._delegated[task_id]  # a new run of the task: the old grant does not cover it
        deferred = self._deferred.get(task_id)
        if deferred is not None and deferred[0] == desc.run and self.now() < deferred[1]:
            return
        strategy = view.strategy
        claimants = self._claimants(desc.run) if strategy is ClaimStrategy.INTENT else frozenset()
        decision = decide(task_id, desc, view, claimants, eligible)
        if decision is Decision.SKIP:
            return
        self._claimed[task_id] = desc.run
        # The note matters only where a rival might claim while this run is in progress: when
        # ownership is contested, or when the op runs off the loop for a while. An uncontested
        # inline op finishes before any rival could look, so it skips the note (and its removal).
        noted = decision is Decision.SETTLE or self._op_mode(desc.op) != "inline"
        if desc.pin is None and strategy is ClaimStrategy.INTENT and noted:
            me, run = self.self_id, desc.run
            if me not in claimants:
                self.intents.mutate(lambda m: m.update(self.replica, run, lambda cur: cur.add(me)))
        if self._event_subscribers:
            if decision is Decision.RUN:
                self._emit(ev.CLAIMED, task_id, self.self_id, run=desc.run, op=desc.op)
            else:
                self._emit(ev.CONTESTED, task_id, self.self_id, run=desc.run, claimants=sorted(claimants | {self.self_id}))
        if decision is Decision.RUN:
            self._ready.append((task_id, desc))
            self._ready_event.set()
        else:
            asyncio.get_running_loop().call_later(self.config.settle_window, self._after_settle, task_id, desc.run)

    def _op_mode(self, op: str) -> str | None:
        spec = self.registry.resolve(op)
        return None if spec is None else spec.mode

    def _claimants(self, run: str) -> frozenset[str]:
        g = self.intents.state.get(run)
        return frozenset() if g is None else frozenset(g.elements)

    def _after_settle(self, task_id: str, run: str) -> None:
        if self._closed or self._claimed.get(task_id) != run:
            return
        desc = self._descriptor(task_id)
        if desc is None or desc.run != run or self._result_run(task_id) == run:
            self._claimed.pop(task_id, None)
            if desc is not None and desc.run == run:
                self._cleanup_done(task_id, desc)
            return
        claimants = self._claimants(run) | {self.self_id}
        # Every reachable claimant counts, even one outside our ring: it believes the task is its own.
        reachable = self.liveness.live.value | self._workers
        win = winner(task_id, claimants, reachable, vnodes=self.config.vnodes, seed=self.config.ring_seed)
        if self._event_subscribers:
            self._emit(ev.SETTLED, task_id, win, run=run, claimants=sorted(claimants), won=win == self.self_id)
        if win == self.self_id:
            self._ready.append((task_id, desc))
            self._ready_event.set()
        else:
            self._claimed.pop(task_id, None)
            self._standby[task_id] = run

    def _on_queue_delta(self, delta: ORMap | None) -> None:
        if delta is None:
            self._claim_all()
        else:
            self._consider_many(delta.keys())
        if self._idle():
            self._steal_wake.set()  # new work somewhere: a peer may have a backlog to share

    def _on_results_delta(self, delta: ORMap | None) -> None:
        keys = list(self.results_board.state.keys()) if delta is None else list(delta.keys())
        for task_id in keys:
            run = self._result_run(task_id)
            if run is None:
                continue
            # A concurrent duplicate: we ran this run too, and the other answer won the board.
            if self._executed.get(task_id) == run:
                res = self.results.get(task_id)
                if res is not None and res.by != self.self_id:
                    self._executed.pop(task_id, None)
                    self._count("duplicates")
            if self._claimed.get(task_id) == run and (task_id, run) not in self._active:
                # Settling or queued here but answered elsewhere: the dispatcher will skip it.
                self._claimed.pop(task_id, None)
            if (task_id, run) in self._jobs:
                res = self.results.get(task_id)
                if res is not None and res.cancelled:
                    self._interrupt(task_id, run, res.error or "cancelled")
        for fn in list(self._result_listeners):
            fn(keys)

    def _cleanup_done(self, task_id: str, desc: TaskDescriptor) -> None:
        """An answered task still queued: its writer, or else the ring owner (or the pinned peer),
        sees that it leaves the queue.

        It happens when the writer crashed or restarted before dequeuing, and when the entry came
        back after its dequeue (an enqueue retried with the same run token races the removal, and
        the queue's add wins).
        """
        reg = self.results_board.state.get(task_id)
        mine = reg is not None and reg.replica == self.replica
        if mine or self._ring.owner(task_id) == self.self_id or desc.pin == self.self_id:
            self._dequeue_answered(task_id, desc)

    def _dequeue_answered(self, task_id: str, desc: TaskDescriptor) -> None:
        """Remove an answered task from the queue - never before a majority holds its answer.

        The writer's own dequeuer ensures that while the writer lives, so its tasks are left to it.
        An answer whose writer crashed (or restarted, or left) before dequeuing may live on this
        peer alone - it came straight from the writer, who is gone - so this peer adopts it: it
        writes the same answer again as its own update and dequeues once a majority acked that.
        """
        if (task_id, desc.run) in self._dequeuing:
            return  # being dequeued, once a majority holds the answer
        reg = self.results_board.state.get(task_id)
        writer = (reg.replica if reg is not None else None) or ""
        if writer == self.replica:
            self._remove_from_queue(task_id, desc.run)  # ours, and our dequeuer saw it replicated
            return
        if self._replica_live(writer):
            return  # the writer's dequeuer removes it once a majority holds the answer
        wire, r = reg.value if reg is not None else None, self.replica
        self.results_board.mutate(lambda m: m.update(r, task_id, lambda cur: cur.set(r, wire)))
        self._count("adopted")
        if self._event_subscribers:
            self._emit(ev.ADOPTED, task_id, writer.rpartition("@")[0] or writer, run=desc.run)
        self._dequeues.append((self.results_board.core.pending_seq, task_id, desc.run))
        self._dequeuing.add((task_id, desc.run))
        self._dequeue_event.set()

    def _remove_from_queue(self, task_id: str, run: str) -> None:
        desc = self._descriptor(task_id)
        if desc is not None and desc.run == run:
            self.queue.mutate(lambda m: m.remove(task_id))
        if self.intents.state.get(run) is not None:
            self.intents.mutate(lambda m: m.remove(run))

    # -- work stealing (see warpmesh.warp.steal) --------------------------------------------
    def _process_workers(self) -> int:
        return self.config.process_workers or os.cpu_count() or 1

    def _process_slot(self) -> asyncio.Semaphore:
        if self._process_slots is None:
            self._process_slots = asyncio.Semaphore(self._process_workers() + 1)
        return self._process_slots

    def _idle(self) -> bool:
        # Room for more work: nothing waiting, and fewer runs than a process pool (if any) has workers.
        capacity = self._process_workers() if self._process_pool is not None else 1
        return not self._ready and self._running < capacity and not self._closed

    def _backlog_seconds(self) -> float:
        # An estimate, O(1): the ready queue's length times the mean cost of the op at its back
        # (the end grants are taken from). Mixed workloads make it rough, which is all it needs.
        if not self._ready:
            return 0.0
        return len(self._ready) * self._costs.estimate(self._ready[-1][1].op)

    def _send_steal(self, peer: str, data: bytes) -> None:
        async def send() -> None:
            with contextlib.suppress(Exception):
                await self._steal_channel.send_to(peer, data)

        t = asyncio.get_running_loop().create_task(send())
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)

    def _send_steal_request(self, owner: str, want: int) -> None:
        self._steal_seq += 1
        self._steal_sent[owner] = self._steal_seq
        held = [t for t, (_, o, _) in self._stolen.items() if o == owner]
        self.steal_stats["requests_out"] += 1
        self._send_steal(owner, encode_request(self._steal_seq, want, held, self.incarnation))

    def _steal_target(self) -> str | None:
        now = self.now()
        peers = sorted(p for p in self._workers if p != self.self_id)
        if not peers:
            return None
        fresh = [(b, p) for p, (b, at) in self._backlogs.items()
                 if p in peers and now - at < 1.0 and b >= self.config.steal_min_backlog]
        if fresh:
            return max(fresh)[1]
        return self.rng.choice(peers)  # nobody reported a backlog lately: ask around

    async def _stealer(self) -> None:
        cfg = self.config
        while True:
            await self._steal_wake.wait()
            self._steal_wake.clear()
            while self._idle() and self.queue.state.keys():
                pending = self._steal_pending
                if pending is None or self.now() - pending[2] >= cfg.steal_timeout:
                    if pending is not None:
                        self._steal_pending = None
                        self._steal_backoff = min(self._steal_backoff * 2, 1.0)
                    owner = self._steal_target()
                    if owner is None:
                        break
                    self._send_steal_request(owner, want=1_000)
                    self._steal_pending = (owner, self._steal_seq, self.now())
                await asyncio.sleep(self._steal_backoff)

    def _prune_steal_bookkeeping(self) -> None:
        now, queued = self.now(), self.queue.state
        for task_id, (run, _, _) in list(self._delegated.items()):
            if task_id not in queued or self._result_run(task_id) == run:
                del self._delegated[task_id]  # answered (or gone): nothing left to take back
        # A finished stolen task stays in `held` for a while: its owner must not take it back
        # before the answer has reached it.
        grace = max(5.0, 10 * self.config.steal_timeout)
        for task_id, (run, owner, finished) in list(self._stolen.items()):
            if finished is None:
                if self._result_run(task_id) == run and self._claimed.get(task_id) != run:
                    self._stolen[task_id] = (run, owner, now)  # answered elsewhere; never ran here
            elif now - finished >= grace and (task_id not in queued or self._result_run(task_id) == run):
                del self._stolen[task_id]
        for peer, (_, at) in list(self._backlogs.items()):
            if now - at > 10.0:
                del self._backlogs[peer]
        for thief in [t for t in self._thieves if t not in self._all_workers]:
            del self._thieves[thief]

    def _on_steal(self, sender: str, data: bytes) -> None:
        try:
            msg = decode_steal(data)
        except ValueError as err:
            self.steal_stats["bad_frames"] += 1
            log.debug("%s: refused a steal message from %s: %s", self.self_id, sender, err)
            return
        if self._closed or self.role != "worker":
            return
        if isinstance(msg, StealRequest):
            self._on_steal_request(sender, msg)
        else:
            self._on_steal_grant(sender, msg)

    def _on_steal_request(self, thief: str, req: StealRequest) -> None:
        known = self._thieves.get(thief)
        if known is not None and (req.incarnation, req.seq) <= known:
            return  # duplicated or overtaken by a newer request
        # A restarted thief: whatever its old incarnation held is ours again.
        restarted = known is not None and req.incarnation != known[0]
        self._thieves[thief] = (req.incarnation, req.seq)
        self.steal_stats["requests_in"] += 1
        for task_id, (_, th, seq) in list(self._delegated.items()):
            if th == thief and (restarted or (seq < req.seq and task_id not in req.held)):
                # Granted under an earlier request and never accepted (the grant was lost or late).
                del self._delegated[task_id]
                self.steal_stats["taken_back"] += 1
                self._consider(task_id)
        granted: list[tuple[str, bytes]] = []
        if req.want > 0 and thief in self._workers and self.config.steal:
            granted = self._grant(thief, req.seq, req.want)
        self._send_steal(thief, encode_grant(req.seq, granted, self._backlog_seconds()))

    def _grant(self, thief: str, seq: int, want: int) -> list[tuple[str, bytes]]:
        backlog = self._backlog_seconds()
        if backlog < self.config.steal_min_backlog:
            return []
        target, moved, size = backlog / 2, 0.0, 0
        granted: list[tuple[str, bytes]] = []
        kept: list[tuple[str, TaskDescriptor]] = []
        scanned = 0
        while self._ready and len(granted) < want and moved < target and scanned < want + 1_000:
            task_id, desc = self._ready.pop()
            scanned += 1
            if self._claimed.get(task_id) != desc.run:
                continue  # a stale entry: the dispatcher would skip it too
            reg = self.queue.state.get(task_id)
            raw = reg.value if reg is not None else None
            eligible = self._eligible(desc.op)
            if (desc.pin is not None or task_id in self._stolen or not isinstance(raw, bytes)
                    or (eligible is not None and thief not in eligible)):
                kept.append((task_id, desc))  # pinned, stolen already, or the thief lacks the op
                continue
            if granted and size + len(raw) > MAX_GRANT_BYTES:
                kept.append((task_id, desc))
                break
            granted.append((task_id, raw))
            size += len(raw)
            moved += self._costs.estimate(desc.op)
            self._claimed.pop(task_id, None)
            self._delegated[task_id] = (desc.run, thief, seq)
            if self._event_subscribers:
                self._emit(ev.STOLEN, task_id, thief, run=desc.run, direction="out")
        self._ready.extend(reversed(kept))
        self.steal_stats["tasks_out"] += len(granted)
        return granted

    def _on_steal_grant(self, owner: str, grant: StealGrant) -> None:
        self._backlogs[owner] = (grant.backlog, self.now())
        pending = self._steal_pending
        current = pending is not None and pending[0] == owner and pending[1] == grant.seq \
            and self._steal_sent.get(owner) == grant.seq
        if not current:
            fresh = [t for t, _ in grant.tasks if self._stolen.get(t, ("", ""))[1] != owner]
            if fresh:
                # A late grant (we gave up waiting, or asked again since): not run here. Tell the
                # owner at once, with a request that does not list them, so it takes them back.
                self.steal_stats["late_grants"] += 1
                self._send_steal_request(owner, want=0)
            return
        self._steal_pending = None
        self.steal_stats["grants_in"] += 1
        if not grant.tasks:
            self._steal_backoff = min(self._steal_backoff * 2, 1.0)
            return
        self._steal_backoff = self.config.steal_interval
        for task_id, raw in grant.tasks:
            try:
                desc = TaskDescriptor.from_wire(unpack(raw))
            except (FrameUndecodable, ValueError):
                continue  # left out of `held`: the owner takes it back
            if self._result_run(task_id) == desc.run:
                continue  # answered meanwhile: the owner takes it back and finds it answered
            self._stolen[task_id] = (desc.run, owner, None)
            if self._claimed.get(task_id) == desc.run:
                continue
            self._claimed[task_id] = desc.run
            self._ready.append((task_id, desc))
            self._count("stolen")
            self.steal_stats["tasks_in"] += 1
            if self._event_subscribers:
                self._emit(ev.STOLEN, task_id, owner, run=desc.run, direction="in")
        self._ready_event.set()


    # -- running ----------------------------------------------------------------------------
    def _pool_for(self, mode: str) -> Executor:
        if mode == "process":
            if self._process_pool is None:
                import multiprocessing

                workers = self._process_workers()
                self._process_pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            return self._process_pool
        if self._thread_pool is None:
            self._thread_pool = ThreadPoolExecutor(self.config.thread_workers, thread_name_prefix=f"warp-{self.self_id}")
        return self._thread_pool

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready_event.wait()
            self._ready_event.clear()
            budget_end = loop.time() + 0.005
            while self._ready:
                task_id, desc = self._ready.popleft()
                if self._claimed.get(task_id) != desc.run:
                    continue
                spec = self.registry.resolve(desc.op)
                if spec is None:
                    # We lack the op (another peer may have it): stand by instead of failing it.
                    self._claimed.pop(task_id, None)
                    self._stolen.pop(task_id, None)
                    self._standby[task_id] = desc.run
                    continue
                if spec.mode == "inline":
                    self._run_inline(task_id, desc, spec)
                    if loop.time() >= budget_end and self._ready:
                        # Yield so heartbeats and deltas keep flowing during long bursts.
                        self._ready_event.set()
                        await asyncio.sleep(0)
                        budget_end = loop.time() + 0.005
                else:
                    await self._sem.acquire()
                    if spec.mode == "process":
                        await self._process_slot().acquire()
                    t = loop.create_task(self._run_async(task_id, desc, spec))
                    self._inflight.add(t)
                    t.add_done_callback(self._inflight.discard)
            if self._idle():
                self._steal_wake.set()

    def _failed(self, desc: TaskDescriptor, err: BaseException, attempts: int) -> OpResult:
        """A terminal failure carrying the (capped) traceback of ``err``."""
        if isinstance(err, _OpExited) and err.__cause__ is not None:
            err = err.__cause__
        tb = "".join(_traceback.format_exception(err))
        return OpResult.failure(desc.run, policy.describe(err), by=self.self_id, attempts=attempts, traceback=tb)

    def _expired(self, task_id: str, desc: TaskDescriptor) -> bool:
        """Record a run whose deadline passed before it started as cancelled; True if so."""
        left = policy.deadline_left(desc.deadline, self.wall_clock())
        if left is None or left > 0:
            return False
        self._claimed.pop(task_id, None)
        if self._result_run(task_id) != desc.run:
            self._write_cancel(task_id, desc, f"deadline passed {-left:.3g} s before the run started")
        return True

    def _deadline_hit(self, task_id: str, desc: TaskDescriptor) -> None:
        if self._closed or (task_id, desc.run) not in self._jobs or self._result_run(task_id) == desc.run:
            return
        self._write_cancel(task_id, desc, "deadline passed while running")

    def _interrupt(self, task_id: str, run: str, reason: str) -> None:
        """Stop the run ``(task_id, run)`` if it is running here (see :meth:`cancel`)."""
        job = self._jobs.get((task_id, run))
        if job is None or job.ctx.cancelled:
            return
        job.ctx.cancel(reason)
        if job.inner is not None:
            job.inner.cancel()
        elif job.mode == "process" and job.gen is not None:
            # A pool process cannot be told apart from its siblings: the pool is killed and rebuilt,
            # and the other runs it held start again without using up an attempt.
            self._kill_pool(job.gen)

    def _kill_pool(self, gen: int) -> None:
        pool = self._process_pool
        if pool is None or gen != self._pool_gen:
            return
        self._pool_kills.add(gen)
        for proc in list(getattr(pool, "_processes", {}).values()):
            with contextlib.suppress(Exception):
                proc.kill()
        self._rebuild_pool(gen)

    def _rebuild_pool(self, gen: int) -> None:
        """Drop the process pool of generation ``gen`` (broken or killed); the next run starts a new one."""
        pool = self._process_pool
        if pool is None or gen != self._pool_gen:
            return  # already rebuilt by another run that saw the same break
        self._process_pool = None
        self._pool_gen += 1
        with contextlib.suppress(Exception):
            pool.shutdown(wait=False, cancel_futures=True)

    def _run_inline(self, task_id: str, desc: TaskDescriptor, spec: OpSpec) -> None:
        if desc.deadline is not None and self._expired(task_id, desc):
            return
        try:
            args, kwargs = desc.call_args()
        except ArgsUndecodable as err:
            self._complete(task_id, desc, OpResult.failure(desc.run, str(err), by=self.self_id))
            return
        ctx = JobContext(task_id, desc.run, desc.op)
        if self._event_subscribers:
            self._note_start(task_id, desc, "inline")
        attempts = 0
        while True:
            attempts += 1
            ctx.attempt = attempts
            started = self.now()
            token = _set(ctx)
            try:
                value = spec.fn(*args, **kwargs)
                self._costs.observe(desc.op, self.now() - started)
            except Standby as err:
                self._defer(task_id, desc, err)
                return
            except (KeyboardInterrupt, asyncio.CancelledError):
                raise
            except BaseException as err:  # SystemExit from an op too: one bad job never stops the node
                if isinstance(err, Exception) and self._retryable(err, spec) and attempts < self.config.max_attempts:
                    self._count("retries")
                    continue  # inline ops retry at once: backing off would block the loop
                self._complete(task_id, desc, self._failed(desc, err, attempts))
                return
            finally:
                _reset(token)
            if desc.deadline is not None and self._expired(task_id, desc):
                return  # it overran its deadline: the value is discarded
            self._complete(task_id, desc, OpResult.success(desc.run, value, by=self.self_id, attempts=attempts))
            return

    async def _run_async(self, task_id: str, desc: TaskDescriptor, spec: OpSpec) -> None:
        key = (task_id, desc.run)
        self._active.add(key)
        self._running += 1
        loop = asyncio.get_running_loop()
        job = _Job(JobContext(task_id, desc.run, desc.op), spec.mode, since=self.wall_clock())
        self._jobs[key] = job
        if self._event_subscribers:
            self._note_start(task_id, desc, spec.mode)
        timer: asyncio.TimerHandle | None = None
        try:
            if desc.deadline is not None:
                if self._expired(task_id, desc):
                    return
                left = policy.deadline_left(desc.deadline, self.wall_clock()) or 0.0
                timer = loop.call_later(left, self._deadline_hit, task_id, desc)
            try:
                args, kwargs = desc.call_args()
            except ArgsUndecodable as err:
                self._complete(task_id, desc, OpResult.failure(desc.run, str(err), by=self.self_id))
                return
            attempts = 0
            while True:
                attempts += 1
                job.ctx.attempt = attempts
                started = self.now()
                try:
                    value = await self._call(job, spec, args, kwargs)
                    self._costs.observe(desc.op, self.now() - started)
                except asyncio.CancelledError:
                    if job.ctx.cancelled and not self._closed and not _cancelling():
                        return  # cancelled by cancel() or the deadline: the answer says so already
                    raise
                except Standby as err:
                    self._defer(task_id, desc, err)
                    return
                except BrokenProcessPool as err:
                    gen = job.gen if job.gen is not None else -1
                    if job.ctx.cancelled:
                        return
                    if gen in self._pool_kills:
                        attempts -= 1  # a sibling's cancel killed the pool: this run was not at fault
                        continue
                    self._rebuild_pool(gen)
                    if attempts < self.config.max_attempts:
                        log.warning("%s: a worker process died running %r (attempt %d of %d); pool rebuilt, "
                                    "retrying", self.self_id, task_id, attempts, self.config.max_attempts)
                        self._count("retries")
                        await asyncio.sleep(policy.backoff(attempts, self.config.retry_backoff, self.rng))
                        if self._claimed.get(task_id) != desc.run:
                            return
                        continue
                    log.warning("%s: task %r failed: %s", self.self_id, task_id, policy.crash_message(desc.op, attempts))
                    self._complete(task_id, desc, OpResult.failure(
                        desc.run, policy.crash_message(desc.op, attempts), by=self.self_id, attempts=attempts,
                        traceback="".join(_traceback.format_exception(err))))
                    return
                except KeyboardInterrupt:
                    raise
                except BaseException as err:  # SystemExit too: one bad job never stops the node
                    if job.ctx.cancelled:
                        return
                    if (isinstance(err, Exception) and self._retryable(err, spec)
                            and attempts < self.config.max_attempts):
                        self._count("retries")
                        await asyncio.sleep(policy.backoff(attempts, self.config.retry_backoff, self.rng))
                        if self._claimed.get(task_id) != desc.run:
                            return
                        continue
                    self._complete(task_id, desc, self._failed(desc, err, attempts))
                    return
                if job.ctx.cancelled:
                    return  # a thread op that finished after its cancel: the value is discarded
                self._complete(task_id, desc, OpResult.success(desc.run, value, by=self.self_id, attempts=attempts))
                return
        finally:
            if timer is not None:
                timer.cancel()
            self._jobs.pop(key, None)
            self._active.discard(key)
            self._running -= 1
            self._sem.release()
            if spec.mode == "process":
                self._process_slot().release()
            if self._idle():
                self._steal_wake.set()

    async def _call(self, job: _Job, spec: OpSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One attempt of a non-inline op, interruptible as its mode allows."""
        loop = asyncio.get_running_loop()
        if spec.mode == "async":
            token = _set(job.ctx)  # the new task copies the context: the op sees its JobContext
            try:
                job.inner = loop.create_task(_guarded(spec.fn(*args, **kwargs)))
            finally:
                _reset(token)
            try:
                return await job.inner
            finally:
                job.inner = None
        if spec.mode == "thread":
            cv = contextvars.copy_context()
            cv.run(_set, job.ctx)
            return await loop.run_in_executor(self._pool_for("thread"),
                                              functools.partial(cv.run, spec.fn, *args, **kwargs))
        pool = self._pool_for("process")
        job.gen = self._pool_gen
        return await loop.run_in_executor(pool, functools.partial(spec.fn, *args, **kwargs))

    def _defer(self, task_id: str, desc: TaskDescriptor, err: Standby) -> None:
        """The op cannot run this task here yet: release the claim, no result, no attempt used."""
        if self._claimed.get(task_id) == desc.run:
            self._claimed.pop(task_id, None)
        self._stolen.pop(task_id, None)  # granted to us: left out of `held`, so its owner takes it back
        self._deferred[task_id] = (desc.run, self.now() + err.retry_after)
        log.info("%s: standing by on task %r for %.3gs: %s", self.self_id, task_id, err.retry_after, err)

    def wake_standby(self) -> None:
        """Consider every task an op stood by on (:class:`Standby`) again now, e.g. because the
        dependency it was missing has appeared."""
        if self._deferred and not self._closed:
            self._deferred.clear()
            self._claim_all()

    @staticmethod
    def _retryable(err: Exception, spec: OpSpec) -> bool:
        return isinstance(err, TransientError) or (bool(spec.retry_on) and isinstance(err, spec.retry_on))

    def _note_start(self, task_id: str, desc: TaskDescriptor, mode: str) -> None:
        now = self.now()
        self._run_started[(task_id, desc.run)] = now
        if len(self._run_started) > 100_000:  # runs that never completed here (deferred, cancelled)
            self._run_started.pop(next(iter(self._run_started)))
        self._emit(ev.STARTED, task_id, self.self_id, run=desc.run, op=desc.op, mode=mode)

    def _complete(self, task_id: str, desc: TaskDescriptor, result: OpResult) -> None:
        if self._closed:
            return
        if self._event_subscribers:
            t0 = self._run_started.pop((task_id, desc.run), None)
            detail: dict[str, Any] = {"run": desc.run, "attempts": result.attempts,
                                      "duration": None if t0 is None else self.now() - t0}
            if not result.ok:
                detail["error"] = result.error
            self._emit(ev.FINISHED if result.ok else ev.FAILED, task_id, self.self_id, **detail)
        self._claimed.pop(task_id, None)
        stolen = self._stolen.get(task_id)
        if stolen is not None and stolen[0] == desc.run:
            self._stolen[task_id] = (stolen[0], stolen[1], self.now())
        wire, ok = self._encode(task_id, desc, replace(result, op=desc.op))
        self._count("executions")
        if not ok:
            self._count("failures")
        if desc.pin is None and self._is_failover(task_id):
            self._count("failovers")
        if self._result_run(task_id) == desc.run:
            current = self.results.get(task_id)
            if current is None or not current.cancelled:
                self._count("duplicates")  # a late duplicate: the answer was already on the board
        else:
            r = self.replica
            self.results_board.mutate(lambda m: m.update(r, task_id, lambda cur: cur.set(r, wire)))
            self._executed[task_id] = desc.run
            if len(self._executed) > 100_000:
                self._executed.popitem(last=False)
            if self.config.result_ttl is not None:
                self._written[task_id] = (desc.run, self.now())
            # The task leaves the queue only once a majority holds its answer: the two are on
            # different boards, and crashes between them must never lose the task.
            self._dequeues.append((self.results_board.core.pending_seq, task_id, desc.run))
            self._dequeuing.add((task_id, desc.run))
            self._dequeue_event.set()
            return
        self._dequeue_answered(task_id, desc)

    def _encode(self, task_id: str, desc: TaskDescriptor, result: OpResult) -> tuple[bytes, bool]:
        """The packed answer; a value that cannot travel turns into a recorded failure (never an
        exception out of the completion path, which would wedge the dispatcher)."""
        why: str | None = None
        try:
            wire = pack(result.to_wire())
            if len(wire) <= policy.MAX_RESULT_BYTES:
                return wire, result.ok
            _, why = policy.encode_result(desc.op, result.value)
            if why is None:
                return wire, result.ok  # the value fits; only the envelope took it over
        except (TypeError, ValueError, OverflowError, RecursionError):
            _, why = policy.encode_result(desc.op, result.value)
        why = why or f"result of {desc.op} cannot travel"
        log.warning("%s: task %r failed: %s", self.self_id, task_id, why)
        return pack(OpResult.failure(desc.run, why, by=self.self_id, attempts=result.attempts,
                                     op=desc.op).to_wire()), False

    async def _dequeuer(self) -> None:
        while True:
            await self._dequeue_event.wait()
            self._dequeue_event.clear()
            if not self._dequeues:
                continue
            batch, self._dequeues = self._dequeues, []
            await self.results_board.replicated(max(seq for seq, _, _ in batch), majority=True)
            for _, task_id, run in batch:
                self._dequeuing.discard((task_id, run))
                if self._result_run(task_id) == run:
                    self._remove_from_queue(task_id, run)

    def _is_failover(self, task_id: str) -> bool:
        primary = self._ring_all.owner(task_id)
        return primary is not None and primary != self.self_id and primary not in self._workers

    def _count(self, name: str, n: int = 1) -> None:
        # Counters are statistics: increments are batched into one board update per name every
        # ``counter_flush`` seconds, so a busy peer does not ship a counters delta per job.
        self.local_stats[name] += n
        if not self._pending_counts and not self._closed:
            asyncio.get_running_loop().call_later(self.config.counter_flush, self._flush_counts)
        self._pending_counts[name] = self._pending_counts.get(name, 0) + n

    def _flush_counts(self) -> None:
        pending, self._pending_counts = self._pending_counts, {}
        if self._closed:
            return
        r = self.replica
        for name, n in sorted(pending.items()):
            self.counters.mutate(lambda m, name=name, n=n: m.update(r, name, lambda cur: cur.inc(r, n)))  # type: ignore[misc]

    # -- housekeeping -----------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.config.reclaim_interval * self.rng.uniform(0.8, 1.2))
            self._refresh_membership()
            self._forget_lost_members()
            queued = self.queue.state
            for task_id in [t for t in self._claimed if t not in queued]:
                stolen = self._stolen.get(task_id)
                if stolen is not None and stolen[2] is None:
                    continue  # granted to us before our replica of the queue has the task
                if not any(t == task_id for t, _ in self._active):
                    self._claimed.pop(task_id, None)
            self._prune_steal_bookkeeping()
            for task_id in [t for t in self._standby if t not in queued]:
                self._standby.pop(task_id, None)
            for task_id in [t for t in self._deferred if t not in queued]:
                self._deferred.pop(task_id, None)
            self._claim_all()
            ttl = self.config.result_ttl
            if ttl is not None:
                now = self.now()
                for task_id, (run, at) in list(self._written.items()):
                    if now - at >= ttl:
                        del self._written[task_id]
                        if self._result_run(task_id) == run:
                            self.results_board.mutate(lambda m, t=task_id: m.remove(t))  # type: ignore[misc]


@dataclass
class _Job:
    """A run in progress on this peer: its context and what interrupts it."""

    ctx: JobContext
    mode: str
    inner: asyncio.Task[Any] | None = None  # an async op's own task (cancelled to interrupt it)
    gen: int | None = None  # the process pool generation a process op was sent to
    since: float = 0.0  # wall-clock start


class _OpExited(Exception):
    """An async op raised SystemExit: carried as an ordinary error (asyncio would stop the loop)."""


async def _guarded(coro: Any) -> Any:
    try:
        return await coro
    except SystemExit as err:
        raise _OpExited() from err


def _cancelling() -> bool:
    """Whether the current asyncio task itself is being cancelled (not just something it awaited)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
