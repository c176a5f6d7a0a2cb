"""``WarpNode``: the leaderless scheduler. A roomful of peers shares a pile of jobs, nobody in charge.

This module is the asyncio runtime; the protocol's decisions live in the pure
:class:`~warpmesh.warp.core.WarpCore`, which this runtime feeds and whose ready batches it carries
out (see docs/warp.md, "The core and the runtime").

Every peer replicates four small CRDT boards over its seam (each a Quilter on a mux channel):

=========  ====  ================================================================================
board      tag   contents
=========  ====  ================================================================================
queue      0x01  ``ORMap[task_id, LWWRegister[TaskDescriptor]]``: work waiting to run
results    0x02  ``ORMap[task_id, LWWRegister[OpResult]]``: one answer per task (the safety net)
intents    0x03  ``ORMap[run, GSet[peer]]``: claims ("dibs") on a run
counters   0x04  ``ORMap[name, GCounter]``: mesh-wide executions, duplicates, failovers, ...
members    0x05  ``ORMap[node, LWWRegister]``: each peer's role, ops and extra published fields
=========  ====  ================================================================================

Each peer's *view* (the digest of the worker set it sees, which tells peers whether ownership may be
contested) changes with every membership change and travels as its heartbeat beacon instead of a
board entry (see :mod:`warpmesh.liveness.runtime`).

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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from warpmesh.aio.observable import Observable
from warpmesh.aio.procpool import PoolCall, ProcessPool, WorkerDied
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.crdt import GCounter, GSet, LWWRegister, ORMap, replica_id
from warpmesh.liveness import Liveness
from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import PeerId, Seam, seam_incarnation
from warpmesh.net.subset import SubsetSeam
from warpmesh.quilt import Quilter
from warpmesh.warp import core as wc
from warpmesh.warp import policy
from warpmesh.warp.cells import CellRouter
from warpmesh.warp.claim import ClaimStrategy
from warpmesh.warp.context import JobContext, _reset, _set
from warpmesh.warp.core import COUNTER_NAMES, Ready, WarpConfig, WarpCore, decode_result
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
from warpmesh.warp.ring import TaskRing
from warpmesh.wire.frame import FrameUndecodable, pack, unpack

if TYPE_CHECKING:
    from warpmesh.quilt.store import NodeStore

log = logging.getLogger("warpmesh.warp")

QUEUE_TAG, RESULTS_TAG, INTENTS_TAG, COUNTERS_TAG, MEMBERS_TAG, STEAL_TAG = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
#: Who runs what right now (``warpmesh jobs``): a request/reply channel, silent unless asked.
INSPECT_TAG = 0x07
#: The boards a cell keeps to itself (see docs/warp.md, "Cells"): every board but the members board.
#: The counters too: mesh-wide figures are the sums over the cells (``router.counts()``); kept
#: mesh-wide, their flushes were half of all bytes at 64 peers in cells of 8.
_CELL_BOARDS = frozenset({QUEUE_TAG, RESULTS_TAG, INTENTS_TAG, COUNTERS_TAG})
#: Running jobs one inspect reply lists at most.
MAX_INSPECT_JOBS = 10_000


class Results:
    """A read-only view of the results board: one :class:`OpResult` per task id."""

    def __init__(self, board: ORMap, forwarded: dict[str, OpResult] | None = None) -> None:
        self._board = board
        # Answers of the tasks this peer forwarded to other cells (they live on those cells' boards).
        self._forwarded: dict[str, OpResult] = {} if forwarded is None else forwarded

    @property
    def task_ids(self) -> frozenset[str]:
        return frozenset(self._board.keys()) | self._forwarded.keys()

    def get(self, task_id: str) -> OpResult | None:
        res = decode_result(self._board.get(task_id))
        return self._forwarded.get(task_id) if res is None else res

    def __getitem__(self, task_id: str) -> OpResult:
        r = self.get(task_id)
        if r is None:
            raise KeyError(task_id)
        return r

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._board or task_id in self._forwarded

    def __len__(self) -> int:
        return len(self._board) + sum(1 for t in self._forwarded if t not in self._board)

    def __iter__(self) -> Iterator[str]:
        yield from self._board.keys()
        yield from (t for t in list(self._forwarded) if t not in self._board)

    def items(self) -> Iterator[tuple[str, OpResult]]:
        for k in list(self):
            r = self.get(k)
            if r is not None:
                yield k, r



class WarpNode:
    """One peer of the leaderless scheduler: the asyncio runtime around a :class:`~warpmesh.warp.core.WarpCore`.

    The core decides (claims, settles, answers, dequeues, steals); this runtime owns what does
    I/O - the boards' Quilters, the failure detector, the pools and the timers - feeds the core
    its inputs and carries out each :class:`~warpmesh.warp.core.Ready` batch (see docs/warp.md).

    ``WarpNode(seam, registry=ops)`` with an :class:`~warpmesh.warp.ops.OpRegistry`, or, as in the
    seed, ``WarpNode(seam, executor=fn)`` where ``fn(task_id)`` computes a task's answer. Then
    ``await node.start()``, ``await node.enqueue(task_id, op, args)`` on any peer, and every peer's
    :attr:`results` converges to one answer per task.

    ``board_history=False`` (clients only; a worker always keeps every board whole) makes every
    board but the members board a partial replica that follows what is written from when it
    joins: a client that enqueues and waits for its own answers then never fetches the answers
    already on a big board, and never counts towards a majority of holders.
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
        board_history: bool = True,
    ) -> None:
        if role not in ("worker", "client"):
            raise ValueError("role must be 'worker' or 'client'")
        cfg = config or WarpConfig()
        if strategy is not None and strategy is not cfg.strategy:
            cfg = replace(cfg, strategy=strategy)
        self.config = cfg
        self.seam = seam
        self.self_id: PeerId = seam.self_id
        self.role = role
        self._board_history = board_history or role == "worker"
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
        self._cell_seams: list[SubsetSeam] = []
        #: The peers known (from the members board) to share this peer's cell, self excluded.
        self.cell_peers: frozenset[PeerId] = frozenset()
        self.queue, self.results_board, self.intents, self.counters, self.members = self._make_boards()
        self._boards = (self.queue, self.results_board, self.intents, self.counters, self.members)
        self._board_by_name: dict[str, Quilter[ORMap]] = {
            wc.QUEUE: self.queue, wc.RESULTS: self.results_board, wc.INTENTS: self.intents, wc.MEMBERS: self.members}
        self.liveness = Liveness(self.mux, cfg.heartbeat, rng=random.Random(f"probe:{self.replica}"))
        members_core, intents_core = self.members.core, self.intents.core
        #: The protocol: every decision is the core's; this object carries them out.
        self.core = WarpCore(self.self_id, self.replica, self.incarnation, config=cfg, role=role,
                             queue=self.queue.state, results=self.results_board.state, intents=self.intents.state,
                             members=self.members.state, ops=self.registry, rng=self.rng,
                             roster_injected=roster is not None, members_version=lambda: members_core.version,
                             intents_version=lambda: intents_core.version, log=log)

        #: Forwards tasks of other cells and serves those forwarded here (see warpmesh.warp.route).
        self.router = CellRouter(self)
        self.results = Results(self.results_board.state, self.router.answers)
        self._result_listeners: list[Callable[[list[str]], None]] = []
        self._event_subscribers: list[Callable[[WarpEvent], None]] = []
        self._pending_counts: dict[str, int] = {}
        self._counts_timer: asyncio.TimerHandle | None = None
        self._counts_busy = False  # the pending counts wait on the busy interval
        self._counts_flushed_at = float("-inf")
        self._to_consider: dict[str, None] = {}  # insertion-ordered set
        self._ready_event = asyncio.Event()
        self._dequeues: list[tuple[int, str, str]] = []  # (results seq, task, run) awaiting a majority
        self._dequeue_waiting: list[tuple[int, str, str]] = []  # the batch the dequeuer waits on
        self._dequeue_event = asyncio.Event()
        self._settle_timer: tuple[float, asyncio.TimerHandle] | None = None  # (deadline, handle)
        self._run_seq = 0
        self._running = 0
        self._burst = False  # inline runs of one dispatch burst: their answers are applied together
        self._jobs: dict[tuple[str, str], _Job] = {}  # (task, run) running here: context, interrupt handle
        self._tasks: list[asyncio.Task[Any]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        # Process-pool runs in flight: the pool's size plus one (so it never waits on IPC). The rest
        # waits in the core's backlog rather than in the pool, within reach of work stealing.
        self._process_slots: asyncio.Semaphore | None = None
        self._thread_pool: ThreadPoolExecutor | None = None
        self._process_pool: ProcessPool | None = None
        self._pool_size: int | None = None
        #: Local tallies (the mesh-wide figures are on the counters board: :meth:`counter`).
        self.local_stats: Counter[str] = Counter(dict.fromkeys(COUNTER_NAMES, 0))

        self._steal_channel = self._cell_channel(STEAL_TAG)
        self._inspect_channel = self.mux.channel(INSPECT_TAG)
        self._remove_inspect_handler: Callable[[], None] | None = None
        self._inspect_seq = 0
        self._inspect_waiters: dict[int, tuple[set[str], dict[str, list[Any]], asyncio.Event]] = {}
        self._remove_steal_handler: Callable[[], None] | None = None
        self._steal_wake = asyncio.Event()
        #: Work-stealing tallies of this peer (requests, grants, tasks in and out, take-backs, bad frames).
        self.steal_stats = self.core.steal_stats

    def _make_boards(self) -> tuple[Quilter[ORMap], Quilter[ORMap], Quilter[ORMap], Quilter[ORMap], Quilter[ORMap]]:
        """The five boards (queue, results, intents, counters, members): every Quilter is built here."""
        cfg = self.config

        def board(tag: int, state: Any) -> Quilter[Any]:
            # Without board history (a client that only waits for its own jobs' answers), every board
            # but the members board is a partial replica: joining a mesh holding 300,000 answers
            # must not fetch them (issue 16's rounds experiment).
            # A cell's boards (all but the members board) replicate among the cell's peers only.
            seam = self._cell_channel(tag) if tag in _CELL_BOARDS else self.mux.channel(tag)
            return Quilter(seam, state, stream=self.replica, config=cfg.quilter,
                           rng=random.Random(self.rng.getrandbits(32)), coalesce_delay=cfg.coalesce_delay,
                           store=None if self.store is None else self.store.board(self._board_name(tag)),
                           history=self._board_history or tag == MEMBERS_TAG)

        return (board(QUEUE_TAG, ORMap(LWWRegister)), board(RESULTS_TAG, ORMap(LWWRegister)),
                board(INTENTS_TAG, ORMap(GSet)), board(COUNTERS_TAG, ORMap(GCounter)),
                board(MEMBERS_TAG, ORMap(LWWRegister)))

    def _board_name(self, tag: int) -> str:
        """The board's name in the data directory. A cell's boards are named after the cell, so a
        peer restarted in another cell starts those empty rather than carrying its old cell's
        tasks into the new one (the old cell's majority still holds them)."""
        if self.config.cell is not None and tag in _CELL_BOARDS:
            return f"warp-{tag}@{self.config.cell}"
        return f"warp-{tag}"

    def _cell_channel(self, tag: int) -> Seam:
        """The channel ``tag`` of the mux, cut to this peer's cell when it has one."""
        ch = self.mux.channel(tag)
        if self.config.cell is None:
            return ch
        sub = SubsetSeam(ch)
        self._cell_seams.append(sub)
        return sub

    # -- the core's state, under the names tests and the simulator read ---------------------
    @property
    def _started(self) -> bool:
        return self.core.started

    @_started.setter
    def _started(self, value: bool) -> None:
        self.core.started = value

    @property
    def _closed(self) -> bool:
        return self.core.closed

    @_closed.setter
    def _closed(self, value: bool) -> None:
        self.core.closed = value

    @property
    def _claimed(self) -> dict[str, str]:
        return self.core.claimed

    @property
    def _standby(self) -> dict[str, str]:
        return self.core.standby

    def _contested(self) -> bool:
        return self.core.contested(self.now())

    def _descriptor(self, task_id: str) -> TaskDescriptor | None:
        return self.core.descriptor(task_id)

    def _claimants(self, run: str) -> frozenset[str]:
        return self.core.claimants(run)

    def _result_run(self, task_id: str) -> str | None:
        return self.core.result_run(task_id)

    # -- carrying out the core's batches ----------------------------------------------------
    def _drain(self) -> None:
        """Carry out what the core decided: board mutations first, then everything they enable."""
        out = self.core.ready()
        if not out:
            return
        self._apply(out)

    def _apply(self, out: Ready) -> None:
        if out.mutations:
            self._apply_mutations(out.mutations)
        for name, n in out.counts.items():
            self._count(name, n)
        if out.await_majority:
            # The task leaves the queue only once a majority holds its answer: the two are on
            # different boards, and crashes between them must never lose the task.
            seq = self.results_board.core.pending_seq
            self._dequeues.extend((seq, t, run) for t, run in out.await_majority)
            self._dequeue_event.set()
        for task_id, run, reason in out.interrupts:
            self._interrupt(task_id, run, reason)
        for peer, data in out.frames:
            self._send_steal(peer, data)
        if out.runnable:
            self._ready_event.set()
        if out.deadline is not None:
            self._schedule_tick(out.deadline)
        if out.events:
            self._publish_events(out.events)
        if out.view is not None:
            self.liveness.set_beacon(bytes.fromhex(out.view))

    def _apply_mutations(self, mutations: list[wc.Mutation]) -> None:
        """Apply the core's board mutations as this peer's replica, one board update per run.

        Boards replicate independently, so only the order within a board matters: each board's
        mutations are cut into runs of one kind with distinct keys, and each run is one update (one
        delta, joined once into the pending batch) instead of one per job.
        """
        r = self.replica
        runs: dict[str, tuple[str, list[wc.Mutation], set[str]]] = {}
        for m in mutations:
            run = runs.get(m.board)
            if run is not None and (run[0] != m.op or m.key in run[2]):
                self._apply_run(m.board, run[0], run[1], r)
                run = None
            if run is None:
                run = runs[m.board] = (m.op, [], set())
            run[1].append(m)
            run[2].add(m.key)
        for board_name, (op, ms, _) in runs.items():
            self._apply_run(board_name, op, ms, r)

    def _apply_run(self, board_name: str, op: str, ms: list[wc.Mutation], r: str) -> None:
        board = self._board_by_name[board_name]
        if op == wc.REMOVE:
            if len(ms) == 1:
                key = ms[0].key
                board.mutate(lambda s: s.remove(key))  # type: ignore[no-any-return]
            else:
                keys = [m.key for m in ms]
                board.mutate(lambda s: s.remove_all(keys))  # type: ignore[no-any-return]
            return
        updates: list[tuple[str, Callable[[Any], Any]]]
        if op == wc.PUT:
            updates = [(m.key, functools.partial(_lww_set, r, m.value)) for m in ms]
            if board_name == wc.RESULTS and self.router.pushes_due:
                # Answers written here: push those of tasks forwarded to this peer back (after the update).
                asyncio.get_running_loop().call_soon(self.router.answered, [m.key for m in ms])
        else:
            updates = [(m.key, functools.partial(_gset_add, m.member)) for m in ms]
        if len(updates) == 1:
            key, fn = updates[0]
            board.mutate(lambda s: s.update(r, key, fn))  # type: ignore[no-any-return]
        else:
            board.mutate(lambda s: s.update_many(r, updates))  # type: ignore[no-any-return]

    def _schedule_tick(self, deadline: float) -> None:
        if self._settle_timer is not None:
            if self._settle_timer[0] <= deadline:
                return
            self._settle_timer[1].cancel()
        loop = asyncio.get_running_loop()
        self._settle_timer = (deadline, loop.call_later(max(0.0, deadline - self.now()), self._on_tick, deadline))

    def _on_tick(self, deadline: float) -> None:
        self._settle_timer = None
        if self._closed:
            return
        self.core.tick(max(self.now(), deadline))
        self._drain()

    # -- lifecycle --------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def start(self) -> WarpNode:
        if self._started:
            return self
        self._started = True
        if self._clock is None:
            # The loop's clock from here on, bound once: several reads per inline job otherwise
            # each looked the running loop up first.
            self._clock = asyncio.get_running_loop().time
        for q in self._boards:
            await q.start()
        self.liveness.on_beacon = self._on_beacon
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
        self.router.start()
        if self.role == "worker" and self.config.steal:
            self._tasks.append(loop.create_task(self._stealer(), name=f"warp-steal-{self.self_id}"))
        if self.role == "client":
            self._tasks.append(loop.create_task(self._introduce_to_new_peers(),
                                                name=f"warp-introduce-{self.self_id}"))
        self._refresh_membership(force_publish=True)
        if any(spec.mode == "process" for spec in self._specs()):
            self._procs().start_workers()  # start worker processes now, not on the first job
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
        if self._settle_timer is not None:
            self._settle_timer[1].cancel()
            self._settle_timer = None
        await cancel_and_wait([*self._tasks, *self._inflight])
        await self.router.close()
        if self._remove_steal_handler is not None:
            self._remove_steal_handler()
        if self._remove_inspect_handler is not None:
            self._remove_inspect_handler()
        self._closed = False
        self._dequeue_before_leaving()
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
        for sub in self._cell_seams:
            await sub.close()
        if self._own_mux:
            await self.mux.close()
        if self._thread_pool is not None:
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
        if self._process_pool is not None:
            self._process_pool.close()  # runs still under way cannot be answered from here any more

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
        if op is None:
            op, args = EXECUTOR_OP, (args or (task_id,))
        desc = self._descriptor_for(task_id, op, args, kwargs, pin=pin, run=run, deadline=deadline)
        cell = self.config.cell if self.router.only_cell() else self.router.target(task_id, pin)
        if cell != self.config.cell:
            return await self.router.enqueue(cell, task_id, desc)  # held by a majority of its cell
        run = desc.run
        self._enqueue_descriptors([(task_id, desc)])
        if not self.queue.core.peers and self.store is None:
            if not self.cell_known():
                raise NotReplicated(task_id, run, "this peer has not heard the members board yet, so it does not "
                                    "know the peers of its cell")
            return run  # a mesh of one: nothing to replicate to (with a store: once on its disk)
        need = self.holders_needed()
        # Of this cell, or not known to be of another.
        live = self.liveness.live.value if self.config.cell is None else self.core.live
        reachable = len(live - {self.self_id})
        if reachable < need:
            raise NotReplicated(task_id, run, f"only {reachable} other peer(s) reachable, a majority needs {need}")
        if not await self.queue.replicated(timeout=self.config.replicate_timeout, count=need):
            raise NotReplicated(task_id, run,
                                f"no majority acknowledged it within {self.config.replicate_timeout} s")
        return run

    def cell_known(self) -> bool:
        """Whether this peer knows who shares its boards. Without cells, always (the transport's
        roster says). With a cell, once the members board has come from some peer, or no other
        peer is linked: a peer that has just (re)started knows its cell's peers only from the
        members board, and until then must not take its own cell for a cell of one."""
        if self.config.cell is None:
            return True
        return len(self.core.mesh_member_info()) > 1 or not (self.seam.roster.value - {self.self_id})

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
        desc = self._descriptor_for(task_id, op, args, kwargs, pin=pin, run=run, deadline=deadline)
        cell = self.config.cell if self.router.only_cell() else self.router.target(task_id, pin)
        if cell != self.config.cell:
            self.router.forward(cell, [(task_id, desc)])
        else:
            self._enqueue_descriptors([(task_id, desc)])
        return desc.run

    def _enqueue_descriptors(self, items: list[tuple[str, TaskDescriptor]]) -> None:
        """Queue ``items`` on this cell's queue board (one update) and consider them soon."""
        now = self.now()
        for task_id, desc in items:
            self.core.enqueue(now, task_id, desc)
        self._drain()
        for task_id, _ in items:
            self._consider_soon(task_id)

    async def submitted(self, timeout: float | None = None) -> bool:
        """Wait until every task enqueued here so far is held by a majority of its cell: of this
        peer's queue board, and of the cells it forwarded tasks to. False on timeout."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        if not await self.router.settled(timeout):
            return False
        left = None if timeout is None else max(0.0, timeout - (loop.time() - start))
        return await self.queue.replicated(timeout=left, count=self.holders_needed())

    def enqueue_many(self, items: Iterable[tuple[str, str | None, Iterable[Any]]]) -> list[str]:
        """Enqueue ``(task_id, op, args)`` for each item at once (``op`` None: the executor, as in
        :meth:`enqueue_nowait`); returns the run tokens in order.

        The same as one :meth:`enqueue_nowait` per item, but the queue takes them as one update:
        what ``warpmesh node``'s ``enqueue_many`` command uses. Every item is checked before any is
        queued (``ValueError``/``TypeError`` as :meth:`enqueue_call` raises them: nothing is queued
        then). Replicated in the background; ``await node.queue.replicated(...)`` waits for it.
        """
        descs: list[tuple[str, TaskDescriptor]] = []
        for task_id, op, args in items:
            if op is None:
                op, args = EXECUTOR_OP, (tuple(args) or (task_id,))
            descs.append((task_id, self._descriptor_for(task_id, op, args, None)))
        if self.router.only_cell():  # no other cell (the common case): everything is queued here
            self._enqueue_descriptors(descs)
            return [desc.run for _, desc in descs]
        local: list[tuple[str, TaskDescriptor]] = []
        forwarded: dict[str | None, list[tuple[str, TaskDescriptor]]] = {}
        own = self.config.cell
        for task_id, desc in descs:
            cell = self.router.target(task_id, desc.pin)
            if cell == own:
                local.append((task_id, desc))
            else:
                forwarded.setdefault(cell, []).append((task_id, desc))
        if local:
            self._enqueue_descriptors(local)
        for cell, batch in forwarded.items():
            self.router.forward(cell, batch)
        return [desc.run for _, desc in descs]

    def _consider_soon(self, task_id: str) -> None:
        # Considered in a batch at the end of this loop iteration: a loop of enqueues pays for the
        # claim view once, not once per task.
        if not self._to_consider:
            asyncio.get_running_loop().call_soon(self._consider_pending)
        self._to_consider[task_id] = None

    def _descriptor_for(self, task_id: str, op: str, args: Iterable[Any], kwargs: dict[str, Any] | None, *,
                        pin: PeerId | None = None, run: str | None = None,
                        deadline: float | None = None) -> TaskDescriptor:
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
        try:
            packed = pack([list(args), kwargs or {}])  # TaskDescriptor.args_bytes, without a descriptor
        except (TypeError, ValueError, OverflowError) as err:
            raise TypeError(f"arguments of {op} cannot be encoded ({err}); pass lists, dicts, str, bytes, "
                            "numbers, bool or None (integers within 64 bits)") from None
        return TaskDescriptor(op=op, run=run, pin=pin, enqueued_by=self.self_id, deadline=at, packed_args=packed)

    def _consider_pending(self) -> None:
        pending, self._to_consider = self._to_consider, {}
        self.core.consider(self.now(), pending)
        self._drain()

    def enqueue_local(self, task_id: str, op: str | None = None, /, *args: Any, **kwargs: Any) -> str:
        """Enqueue a task pinned to this peer: it runs here and never re-homes."""
        return self.enqueue_nowait(task_id, op, *args, pin=self.self_id, **kwargs)

    async def outcome(self, task_id: str, timeout: float | None = None, *, run: str | None = None) -> OpResult:
        """Wait for the answer record of ``task_id`` (of ``run`` if given, else of its latest run)."""

        router = self.router

        def ready() -> OpResult | None:
            res = self.results.get(task_id)
            if res is None:
                return None
            want = run
            if want is None:
                desc = self._descriptor(task_id)
                waiting = router.waiting.get(task_id)
                want = desc.run if desc is not None else waiting[1] if waiting is not None else res.run
            return res if res.run == want else None

        async def wait() -> OpResult:
            while (res := ready()) is None:
                # A task forwarded to another cell is answered through the router, not this board.
                forwarded = task_id in router.waiting or task_id in router.answers
                await (router.changes if forwarded else self.results_board.changes).changed()
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
        status = self.core.cancel(self.now(), task_id, reason)
        self._drain()
        return status

    def _write_cancel(self, task_id: str, desc: TaskDescriptor, reason: str) -> None:
        self.core.write_cancel(self.now(), task_id, desc, reason)
        self._drain()

    async def wait_idle(self, task_ids: Iterable[str] | None = None, timeout: float | None = None) -> None:
        """Wait until the given tasks (default: everything queued here) have answers."""
        ids = list(task_ids) if task_ids is not None else list(self.queue.state.keys())
        for t in ids:
            await self.outcome(t, timeout=timeout)

    def ack(self, task_id: str) -> None:
        """Acknowledge (remove) a task's answer from the board on every peer (a task forwarded to
        another cell: from that cell's board)."""
        if self.router.ack(task_id):
            return
        self.core.ack(task_id)
        self._drain()

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
        self.core.observed = True

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._event_subscribers.remove(fn)
            self.core.observed = bool(self._event_subscribers)

        return unsubscribe

    def _publish_events(self, events: Iterable[WarpEvent]) -> None:
        for event in events:
            for fn in list(self._event_subscribers):
                try:
                    fn(event)
                except Exception:  # an observer's bug never stops the scheduler
                    log.exception("%s: event subscriber failed on %s", self.self_id, event.kind)

    async def sync_from(self, peer: PeerId, timeout: float | None = None) -> None:
        """Wait until every board here holds everything ``peer``'s boards held when it answered.

        A peer that just joined (``warpmesh results``/``status``) calls this before reading, so it
        never reports a half-received board. Pulls each board's state from ``peer`` at once (see
        :meth:`~warpmesh.quilt.Quilter.sync_with`) instead of waiting for anti-entropy rounds.
        Raises :class:`TimeoutError`. A peer of another cell shares only the members board with
        this one: only that is pulled from it.
        """
        async with asyncio.timeout(timeout):
            await self.members.sync_with(peer)
            entry = self.core.mesh_member_info().get(peer)
            if entry is None or entry.get("cell") == self.config.cell:
                await asyncio.gather(*(q.sync_with(peer) for q in self._boards if q is not self.members))
        self._refresh_membership()

    def queued(self) -> Iterator[tuple[str, TaskDescriptor]]:
        """Every task on the shared queue with its descriptor (waiting, settling or running)."""
        return self.core.queued()

    def claimants(self, run: str) -> frozenset[str]:
        """Peers that noted a claim on ``run`` on the intents board (``ClaimStrategy.INTENT``)."""
        return self.core.claimants(run)

    def member_info(self) -> dict[str, dict[str, Any]]:
        """Each node's newest entry on the members board (``role``, ``ops``, ``cell`` when it has
        one, extra fields), every cell's, with the ``view`` it last announced (None: not heard yet;
        ours for this node)."""
        views = self.core.peer_views
        return {node: {**entry, "view": self.core.view if node == self.self_id else views.get(node)}
                for node, entry in self.core.mesh_member_info().items()}

    @property
    def mesh_workers(self) -> frozenset[str]:
        """Live workers of every cell (:attr:`workers` is this peer's cell's)."""
        live = self.liveness.live.value | {self.self_id}
        return frozenset(p for p, e in self.core.mesh_member_info().items()
                         if p in live and e.get("role") == "worker")

    @property
    def view(self) -> str:
        """Digest of this peer's worker set, as announced on its heartbeats."""
        return self.core.view

    def counter(self, name: str) -> int:
        """A mesh-wide counter (every peer's increments that have reached this peer); in a mesh of
        cells, this peer's cell's (``await node.router.counts()`` gives the other cells')."""
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
        return self.core.workers

    @property
    def ring(self) -> TaskRing:
        return self.core.ring

    def status(self) -> dict[str, Any]:
        """A snapshot for ``warpmesh status``."""
        return {
            "node": self.self_id,
            "replica": self.replica,
            "role": self.role,
            "roster": sorted(self._roster()),
            "live_workers": sorted(self.core.workers),
            # Ownership settled: every reachable worker shows our view and it has not changed for a
            # settle window, so claims run at once instead of settling (see warpmesh.warp.claim).
            "settled": not self._contested(),
            "health": {p: h.value for p, h in self.liveness.health.value.items()},
            "ring_shares": {p: round(s, 4) for p, s in self.core.ring.shares().items()},
            "queue_depth": self.queue_depth,
            "results": len(self.results),
            "running": self._running + len(self.core.backlog),
            "counters": {n: self.counter(n) for n in COUNTER_NAMES},
            "executions_by_peer": self.counters_by_peer("executions"),
            "ops": self.registry.names(),
            "replication_lag": self.replication_lag(),
            "boards": self.board_stats(),
            "liveness": self.liveness.stats(),
            "cell": self.config.cell,
            "cells": [c for c in self.router.cells() if c is not None],
            "routing": dict(self.router.stats),
            "steal": dict(self.steal_stats),
        }

    def board_stats(self) -> dict[str, dict[str, int]]:
        """Per board, its replication tallies (frames and bytes in and out by kind, repairs, ...)."""
        names = ("queue", "results", "intents", "counters", "members")
        return {name: {k: v for k, v in sorted(q.core.stats.items()) if v}
                for name, q in zip(names, self._boards)}

    def replication_lag(self) -> dict[str, dict[str, float]]:
        """Per peer, over every board: our batches it has not confirmed and the oldest one's age."""
        now = self.now()
        out: dict[str, dict[str, float]] = {}
        for q in self._boards:
            for peer, (batches, seconds) in q.core.replication_lag(now).items():
                row = out.setdefault(peer, {"batches": 0, "seconds": 0.0})
                row["batches"] = max(row["batches"], batches)
                row["seconds"] = max(row["seconds"], round(seconds, 4))
        return out

    # -- membership -------------------------------------------------------------------------
    def _roster(self) -> frozenset[PeerId]:
        source = self._roster_source.value if self._roster_source is not None else self.seam.roster.value
        return frozenset(source)

    def _refresh_membership(self, force_publish: bool = False) -> None:
        if self._closed:
            return
        roster, live = self._roster(), frozenset(self.liveness.live.value)
        info = self.core.mesh_member_info()
        cell = self.config.cell
        mine = frozenset(p for p, v in info.items() if v.get("cell") == cell and p != self.self_id)
        elsewhere: frozenset[PeerId] = frozenset()
        if len(mine) + 1 < len(info):
            # Peers of other cells are neither workers nor rivals here; a peer whose entry has not
            # arrived yet may be of this cell, so it still counts (the safe side: contested).
            others = frozenset(info) - mine - {self.self_id}
            elsewhere = (roster | live) & others
            roster, live = roster - others, live - others
        self.cell_peers = mine
        if self._cell_seams:
            transport = self.seam.roster.value
            for sub in self._cell_seams:
                sub.allow(mine, transport)
        self.core.set_membership(self.now(), roster, live, force_publish=force_publish, elsewhere=elsewhere)
        self._drain()

    def _on_beacon(self, peer: PeerId, beacon: bytes) -> None:
        # Any bytes read as some view: a foreign or hostile beacon only makes that peer's view differ.
        self.core.on_peer_view(self.now(), peer, beacon.hex())
        self._drain()

    def _on_members_delta(self, delta: ORMap | None) -> None:
        self.core.on_members(self.now(), None if delta is None else delta.iter_keys())
        self._drain()
        self._refresh_membership()

    def set_member_field(self, name: str, value: Any) -> None:
        """Publish an extra field (e.g. ``warm`` keys) in this peer's entry on the members board."""
        self.core.set_member_field(name, value)
        self._drain()

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

    # -- board deltas -----------------------------------------------------------------------
    def _on_queue_delta(self, delta: ORMap | None) -> None:
        self.core.on_queue(self.now(), None if delta is None else delta.iter_keys())
        self._drain()
        if self._idle():
            self._steal_wake.set()  # new work somewhere: a peer may have a backlog to share

    def _on_results_delta(self, delta: ORMap | None) -> None:
        keys = list(self.results_board.state.keys()) if delta is None else list(delta.iter_keys())
        self.core.on_results(self.now(), keys)
        self._drain()
        self.router.answered(keys)
        self._notify_results(keys)

    def _notify_results(self, keys: list[str]) -> None:
        for fn in list(self._result_listeners):
            fn(keys)

    # -- work stealing (decisions in the core; see warpmesh.warp.steal) ----------------------
    def _process_workers(self) -> int:
        if self._pool_size is None:  # asked on every idle check: os.cpu_count() reads /sys each time
            self._pool_size = self.config.process_workers or os.cpu_count() or 1
        return self._pool_size

    def _process_slot(self) -> asyncio.Semaphore:
        if self._process_slots is None:
            self._process_slots = asyncio.Semaphore(self._process_workers() + 1)
        return self._process_slots

    def _idle(self) -> bool:
        # Room for more work: nothing waiting, and fewer runs than a process pool (if any) has workers.
        capacity = self._process_workers() if self._process_pool is not None else 1
        return not self.core.backlog and self._running < capacity and not self._closed

    def _send_steal(self, peer: str, data: bytes) -> None:
        async def send() -> None:
            with contextlib.suppress(Exception):
                await self._steal_channel.send_to(peer, data)

        t = asyncio.get_running_loop().create_task(send())
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)

    async def _stealer(self) -> None:
        while True:
            await self._steal_wake.wait()
            self._steal_wake.clear()
            while self._idle() and self.queue.state.keys():
                asked = self.core.steal_attempt(self.now())
                self._drain()
                if not asked:
                    break
                await asyncio.sleep(self.core.steal_backoff)

    def _on_steal(self, sender: str, data: bytes) -> None:
        self.core.on_steal(self.now(), sender, data)
        self._drain()

    # -- running ----------------------------------------------------------------------------
    def _procs(self) -> ProcessPool:
        if self._process_pool is None:
            self._process_pool = ProcessPool(self._process_workers())
        return self._process_pool

    def _threads(self) -> ThreadPoolExecutor:
        if self._thread_pool is None:
            self._thread_pool = ThreadPoolExecutor(self.config.thread_workers, thread_name_prefix=f"warp-{self.self_id}")
        return self._thread_pool

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._ready_event.wait()
            self._ready_event.clear()
            budget_end = loop.time() + 0.005
            while (item := self.core.take_run()) is not None:
                task_id, desc = item
                spec = self.registry.resolve(desc.op)
                if spec is None:
                    self.core.op_missing(task_id, desc.run)  # another peer may have the op
                    continue
                if spec.mode == "inline":
                    # A burst of inline runs answers as one batch: the core takes each run's end at
                    # once (its claim is released, so no run is taken twice), and the answers reach
                    # the boards together below - one results update per burst, not one per job.
                    # Each of these inputs reads only its own task's entries, which no other
                    # answer of the burst touches.
                    self._burst = True
                    try:
                        self._run_inline(task_id, desc, spec)
                    finally:
                        self._burst = False
                    if loop.time() >= budget_end and self.core.backlog:
                        # Yield so heartbeats and deltas keep flowing during long bursts.
                        self._drain()
                        self._ready_event.set()
                        await asyncio.sleep(0)
                        budget_end = loop.time() + 0.005
                else:
                    self._drain()  # the burst's answers, before anything awaits
                    await self._sem.acquire()
                    if spec.mode == "process":
                        await self._process_slot().acquire()
                    t = loop.create_task(self._run_async(task_id, desc, spec))
                    self._inflight.add(t)
                    t.add_done_callback(self._inflight.discard)
            self._drain()
            self._flush_counts_if_idle()
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
        self.core.expire(self.now(), task_id, desc, f"deadline passed {-left:.3g} s before the run started")
        self._drain()
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
        elif job.call is not None:
            job.call.kill()  # the process running it, and only that one

    def _run_inline(self, task_id: str, desc: TaskDescriptor, spec: OpSpec) -> None:
        if desc.deadline is not None and self._expired(task_id, desc):
            return
        try:
            args, kwargs = desc.call_args()
        except ArgsUndecodable as err:
            self._complete(task_id, desc, OpResult.failure(desc.run, str(err), by=self.self_id))
            return
        ctx = JobContext(task_id, desc.run, desc.op)
        clock = self.now
        started = clock()
        self.core.run_started(started, task_id, desc, "inline")
        attempts = 0
        while True:
            attempts += 1
            ctx.attempt = attempts
            if attempts > 1:
                started = clock()
            token = _set(ctx)
            try:
                value = spec.fn(*args, **kwargs)
                self.core.costs.observe(desc.op, clock() - started)
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
            self._complete(task_id, desc, OpResult.success(desc.run, value, by=self.self_id, attempts=attempts,
                                                            op=desc.op))
            return

    async def _run_async(self, task_id: str, desc: TaskDescriptor, spec: OpSpec) -> None:
        key = (task_id, desc.run)
        self._running += 1
        loop = asyncio.get_running_loop()
        job = _Job(JobContext(task_id, desc.run, desc.op), spec.mode, since=self.wall_clock())
        self._jobs[key] = job
        self.core.run_started(self.now(), task_id, desc, spec.mode)
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
                    self.core.costs.observe(desc.op, self.now() - started)
                except asyncio.CancelledError:
                    if job.ctx.cancelled and not self._closed and not _cancelling():
                        return  # cancelled by cancel() or the deadline: the answer says so already
                    raise
                except Standby as err:
                    self._defer(task_id, desc, err)
                    return
                except WorkerDied as err:
                    if job.ctx.cancelled:
                        return
                    if attempts < self.config.max_attempts:
                        log.warning("%s: the worker process running %r died (%s; attempt %d of %d); "
                                    "retrying in a new one", self.self_id, task_id, err, attempts,
                                    self.config.max_attempts)
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
                self._complete(task_id, desc, OpResult.success(desc.run, value, by=self.self_id, attempts=attempts,
                                                            op=desc.op))
                return
        finally:
            if timer is not None:
                timer.cancel()
            self._jobs.pop(key, None)
            self.core.run_ended(task_id, desc.run)
            self._running -= 1
            self._sem.release()
            if spec.mode == "process":
                self._process_slot().release()
            self._flush_counts_if_idle()
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
            return await loop.run_in_executor(self._threads(), functools.partial(cv.run, spec.fn, *args, **kwargs))
        # A process op: written straight to an idle worker's pipe (no executor threads), and
        # interruptible by killing exactly the process that runs it (see _interrupt).
        job.call = self._procs().submit(spec.fn, args, kwargs)
        try:
            return await job.call.result()
        finally:
            job.call = None

    def _defer(self, task_id: str, desc: TaskDescriptor, err: Standby) -> None:
        """The op cannot run this task here yet: release the claim, no result, no attempt used."""
        self.core.run_deferred(self.now(), task_id, desc.run, err.retry_after)
        log.info("%s: standing by on task %r for %.3gs: %s", self.self_id, task_id, err.retry_after, err)

    def wake_standby(self) -> None:
        """Consider every task an op stood by on (:class:`Standby`) again now, e.g. because the
        dependency it was missing has appeared."""
        self.core.wake_standby(self.now())
        self._drain()

    @staticmethod
    def _retryable(err: Exception, spec: OpSpec) -> bool:
        return isinstance(err, TransientError) or (bool(spec.retry_on) and isinstance(err, spec.retry_on))

    def _complete(self, task_id: str, desc: TaskDescriptor, result: OpResult) -> None:
        if self._closed:
            return
        if result.op != desc.op:
            # Built field by field: dataclasses.replace costs more than the rest of a trivial job's answer.
            result = OpResult(run=result.run, ok=result.ok, value=result.value, error=result.error, by=result.by,
                              attempts=result.attempts, traceback=result.traceback, cancelled=result.cancelled,
                              op=desc.op)
        wire, ok = self._encode(task_id, desc, result)
        linger = self.config.answer_linger
        if linger > 0:
            if self._running > 1 or self.core.backlog:  # more answers of ours are on their way
                self.results_board.linger = linger
            else:
                self.results_board.hurry()
        self.core.run_finished(self.now(), task_id, desc, wire, ok, result)
        if not self._burst:
            self._drain()

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
            if self.config.dequeue_batch > 0:
                # Let the answers of the next moments join this batch: their queue entries (and
                # claim notes) then leave in one delta per board, not one delta to every peer, each
                # acknowledged, per answer. An answered task waiting here is never run again (the
                # answer is on the board), and a crash before the dequeue leaves it to the peers'
                # adoption of answers whose writer is gone.
                await asyncio.sleep(self.config.dequeue_batch)
            self._dequeue_event.clear()
            if not self._dequeues:
                continue
            batch, self._dequeues = self._dequeues, []
            self._dequeue_waiting = batch
            await self.results_board.replicated(max(seq for seq, _, _ in batch), majority=True)
            self._dequeue_held(batch)
            self._dequeue_waiting = []

    def _dequeue_held(self, batch: list[tuple[int, str, str]]) -> None:
        now = self.now()
        for seq, task_id, run in batch:
            self.core.majority_held(now, task_id, run, seq)
        self._drain()

    def _dequeue_before_leaving(self) -> None:
        """At close: dequeue the answers a majority already holds (the rest are left to adoption)."""
        pending = [*self._dequeue_waiting, *self._dequeues]
        self._dequeue_waiting, self._dequeues = [], []
        held = [item for item in pending if self.results_board.is_replicated(item[0], majority=True)]
        if held:
            self._dequeue_held(held)

    def _count(self, name: str, n: int = 1) -> None:
        # Counters are statistics: increments are batched into one board update per name every
        # ``counter_flush`` seconds (``counter_flush_busy`` while runs are under way or waiting), so
        # a busy peer does not ship a counters delta per job.
        self.local_stats[name] += n
        if not self._pending_counts and not self._closed:
            self._counts_busy = self._running > 0 or bool(self.core.backlog)
            every = self.config.counter_flush_busy if self._counts_busy else self.config.counter_flush
            self._counts_timer = asyncio.get_running_loop().call_later(self._counter_interval(every),
                                                                       self._flush_counts)
        self._pending_counts[name] = self._pending_counts.get(name, 0) + n

    def _counter_interval(self, every: float) -> float:
        return wc.counter_interval(every, len(self.counters.core.peers))

    def _flush_counts_if_idle(self) -> None:
        """The end of a busy spell: what it counted leaves on the idle schedule (``counter_flush``
        after the previous flush), not when the busy interval ends."""
        if not self._counts_busy or not self._pending_counts or self._running or self.core.backlog:
            return
        if self.config.counter_flush_busy <= self.config.counter_flush:
            return  # no busy hold to cut short
        self._counts_busy = False
        if self._counts_timer is not None:
            self._counts_timer.cancel()
        loop = asyncio.get_running_loop()
        due = self._counts_flushed_at + self._counter_interval(self.config.counter_flush)
        self._counts_timer = loop.call_later(max(0.0, due - loop.time()), self._flush_counts)

    def _flush_counts(self) -> None:
        pending, self._pending_counts = self._pending_counts, {}
        # A timer still due (a flush at close) is left to fire: it flushes what is pending by then.
        self._counts_timer = None
        if self._closed:
            return
        self._counts_flushed_at = asyncio.get_running_loop().time()
        r = self.replica
        for name, n in sorted(pending.items()):
            self.counters.mutate(lambda m, name=name, n=n: m.update(r, name, lambda cur: cur.inc(r, n)))  # type: ignore[misc]

    # -- housekeeping -----------------------------------------------------------------------
    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.config.reclaim_interval * self.rng.uniform(0.8, 1.2))
            self._refresh_membership()
            self.core.results_confirmed(self.results_board.core.confirmed())
            self.core.housekeeping(self.now())
            self._drain()
            self.router.expire(self.now())
            if self.now() - self.core.view_changed_at >= self.config.settle_window:
                # Our view is settled: a peer still showing another may have lost our announcement
                # or we its; ask it (views travel unacknowledged on heartbeats).
                self.liveness.ask_beacons(self.core.doubted_views())


def _lww_set(replica: str, value: Any, cur: LWWRegister) -> LWWRegister:
    return cur.set(replica, value)


def _gset_add(member: Any, cur: GSet) -> GSet:
    return cur.add(member)


@dataclass
class _Job:
    """A run in progress on this peer: its context and what interrupts it."""

    ctx: JobContext
    mode: str
    inner: asyncio.Task[Any] | None = None  # an async op's own task (cancelled to interrupt it)
    call: PoolCall | None = None  # a process op's call in the pool (killed to interrupt it)
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
