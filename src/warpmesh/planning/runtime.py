"""Drafts that run: convergent results and execution on the mesh (asyncio runtime).

* :class:`IncrementalResult` - a lattice that only grows; ``await_threshold`` resumes at the first
  state satisfying a monotone predicate (seed 000, "Results that converge").
* :class:`ConvergentExecution` - interprets a :class:`~warpmesh.planning.model.Draft` on a backend
  and joins every sink's output into an ``IncrementalResult`` (the reference only stored the draft).
* :class:`LocalBackend` - runs stages in this process (tests, ``warpmesh draft explain``).
* :class:`PlanningNode` - one mesh peer: free stages run as batched Warp jobs on the peers that own
  them, an embroider seals its input through Raft (mux tag 0x50; a ``BATCHED_EMBROIDER`` is one
  proposal) and is applied to the committed batch identically on every peer, and ``WarpStats`` is
  gossiped on a Quilter channel (0x51) so every peer plans from what the mesh has seen.

Failure: free stages are Warp tasks with ids derived from (execution, node, chunk), so a peer that
dies mid-run has its tasks re-run by their next owner and each chunk answers once; an embroider's
proposal is keyed by (execution, node) and applied at most once however often it is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from warpmesh.crdt.base import Crdt
from warpmesh.crdt.sets import GSet
from warpmesh.errors import WarpmeshError
from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import Seam
from warpmesh.planning.interpret import OpTable, apply_embroider, apply_free, sink_keys, source_elements
from warpmesh.planning.model import Draft, Port, Stage, StageKind
from warpmesh.planning.stats import STATS_CODEC, WarpStats
from warpmesh.quilt.core import QuilterConfig
from warpmesh.quilt.runtime import Quilter
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import RaftError
from warpmesh.raft.runtime import CommittedEntry, RaftNode
from warpmesh.raft.storage import InMemoryRaftStorage, RaftStorage
from warpmesh.raft.transport import SeamRaftTransport
from warpmesh.raft.types import DedupKey
from warpmesh.warp.node import WarpConfig, WarpNode
from warpmesh.warp.ops import OpRegistry
from warpmesh.wire.frame import FrameError, pack, unpack

__all__ = [
    "PLANNING_RAFT_TAG",
    "PLANNING_STATS_TAG",
    "PLANNING_WARP_TAG",
    "Backend",
    "ConvergentExecution",
    "ExecutionError",
    "ExecutionReport",
    "IncrementalResult",
    "LocalBackend",
    "PlanningNode",
]

log = logging.getLogger("warpmesh.planning")

#: Mux channels (docs/architecture.md reserves 0x50-0x5F for planning).
PLANNING_RAFT_TAG = 0x50
PLANNING_STATS_TAG = 0x51
#: The planning Warp runs inside this channel (its own boards, liveness and steal channels nested
#: in it), apart from any application WarpNode on the same seam.
PLANNING_WARP_TAG = 0x52
#: The Warp op every planning peer registers to run a free stage over one chunk.
FREE_OP = "warpmesh.planning.free"
#: Elements per Warp job: small elements travel in batches, never one job per element.
DEFAULT_CHUNK = 128

L = TypeVar("L", bound=Crdt)


class ExecutionError(WarpmeshError, RuntimeError):
    """A draft could not run to the end (an op failed terminally, or consensus was unreachable)."""


class IncrementalResult(Generic[L]):
    """The running join of contributed lattice deltas; it never shrinks. Thread-safe."""

    def __init__(self, initial: L) -> None:
        self._state: L = initial.copy()
        self._lock = threading.Lock()
        self._waiters: list[tuple[Callable[[L], bool], asyncio.AbstractEventLoop, asyncio.Future[L]]] = []

    @property
    def state(self) -> L:
        """A snapshot of the current state (a copy: later contributions do not change it)."""
        with self._lock:
            return self._state.copy()

    def contribute(self, delta: L) -> L:
        """Join ``delta`` in; wake every waiter whose predicate this state first satisfies."""
        with self._lock:
            self._state.join(delta)
            if not self._waiters:
                return self._state.copy()
            snap = self._state.copy()
            keep = []
            for pred, loop, fut in self._waiters:
                if fut.done():
                    continue
                if pred(snap):
                    loop.call_soon_threadsafe(_resolve, fut, snap.copy())
                else:
                    keep.append((pred, loop, fut))
            self._waiters = keep
            return snap

    async def await_threshold(self, predicate: Callable[[L], bool]) -> L:
        """Return the first state satisfying the monotone ``predicate`` (at once if it already holds)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if predicate(self._state):
                return self._state.copy()
            fut: asyncio.Future[L] = loop.create_future()
            self._waiters.append((predicate, loop, fut))
        return await fut


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


class Backend(Protocol):
    """Where stages run: :class:`LocalBackend` or :class:`PlanningNode`."""

    ops: OpTable

    async def run_free(self, exec_id: str, vertex: str, stage: Stage, chunks: list[list[Any]]) -> list[list[Any]]:
        """Apply a free stage to each chunk; outputs in chunk order."""
        ...

    async def commit(self, exec_id: str, node_id: int, members: list[tuple[str, list[Any]]]) -> list[list[Any]]:
        """One consensus round for a coordinated node: seal each member's input, return each
        member's embroider output over the committed batch."""
        ...

    def observe(self, op: str, elements: list[Any]) -> None:
        """Feed the statistics."""
        ...


class LocalBackend:
    """Runs every stage in this process; counts the consensus rounds it would have needed."""

    def __init__(self, ops: OpTable, stats: WarpStats | None = None) -> None:
        self.ops = ops
        self.stats = stats if stats is not None else WarpStats()
        self.proposals = 0

    async def run_free(self, exec_id: str, vertex: str, stage: Stage, chunks: list[list[Any]]) -> list[list[Any]]:
        return [apply_free(stage, self.ops, c, self.observe) for c in chunks]

    async def commit(self, exec_id: str, node_id: int, members: list[tuple[str, list[Any]]]) -> list[list[Any]]:
        self.proposals += 1
        return [apply_embroider(op, self.ops, batch) for op, batch in members]

    def observe(self, op: str, elements: list[Any]) -> None:
        self.stats.observe_all(op, elements)


@dataclass
class ExecutionReport:
    """What one run of a draft did."""

    exec_id: str
    rounds: int = 0
    free_jobs: int = 0
    coordinated_elements: int = 0
    outputs: dict[str, list[Any]] = field(default_factory=dict)


_exec_ids = itertools.count(1)


class ConvergentExecution:
    """Interprets ``draft`` on ``backend``; sink outputs join into :attr:`result` as a ``GSet`` of
    ``(sink key, element)`` pairs (the sink key names the ops it depends on, so equivalent drafts'
    results are comparable). :meth:`submit` also accepts raw lattice deltas, as in the seed."""

    def __init__(self, draft: Draft, backend: Backend, *, initial: GSet | None = None,
                 chunk_size: int = DEFAULT_CHUNK, exec_id: str | None = None) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.draft = draft
        self.backend = backend
        self.chunk_size = chunk_size
        self.exec_id = exec_id or f"x{next(_exec_ids)}"
        self.result: IncrementalResult[GSet] = IncrementalResult(initial if initial is not None else GSet())
        self._queue: asyncio.Queue[GSet] | None = None
        self._drain: asyncio.Task[None] | None = None
        self._ran = False

    def submit(self, delta: GSet) -> None:
        """Queue a delta to join into the result (drained by a task on the running loop)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._drain = asyncio.get_running_loop().create_task(self._drain_loop())
        self._queue.put_nowait(delta)

    async def _drain_loop(self) -> None:
        assert self._queue is not None
        while True:
            self.result.contribute(await self._queue.get())
            self._queue.task_done()

    async def flush(self) -> None:
        """Wait until every submitted delta has joined the result."""
        if self._queue is not None:
            await self._queue.join()

    async def close(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain

    async def run(self, sources: Mapping[str, Iterable[Any]] | None = None) -> ExecutionReport:
        """Execute the draft once; independent branches run concurrently. Returns the report; the
        outputs are also in :attr:`result`. An execution runs once (its id names its Warp tasks and
        Raft commands); make a new one to run again."""
        if self._ran:
            raise ExecutionError(f"execution {self.exec_id} already ran; create a new ConvergentExecution")
        self._ran = True
        d = self.draft
        report = ExecutionReport(self.exec_id)
        keys = sink_keys(d)
        done: dict[int, asyncio.Future[None]] = {}
        outputs: dict[Port, list[Any]] = {}
        loop = asyncio.get_running_loop()
        for n in d.nodes:
            done[n.id] = loop.create_future()

        async def run_node(n: Any) -> None:
            for p in n.predecessors:
                await done[p]
            try:
                await step(n)
            except ExecutionError:
                raise
            except Exception as err:  # an op's own failure: say which stage, keep the cause
                raise ExecutionError(f"{n.stage.label()} (node {n.id}) failed: {type(err).__name__}: {err}") from err
            done[n.id].set_result(None)

        async def step(n: Any) -> None:
            if n.stage.is_source:
                items = source_elements(n.stage, self.backend.ops, sources)
                self.backend.observe(n.stage.op_id, items)
                outputs[(n.id, 0)] = items
            elif n.stage.coordinated:
                members = [(n.stage.op_ids[k], [x for p in sorted(n.inputs[k]) for x in outputs[p]])
                           for k in range(n.stage.ports)]
                report.rounds += 1
                report.coordinated_elements += sum(len(b) for _, b in members)
                outs = await self.backend.commit(self.exec_id, n.id, members)
                for k, out in enumerate(outs):
                    outputs[(n.id, k)] = out
            else:
                inp = [x for p in sorted(n.inputs[0]) for x in outputs[p]]
                chunks = [inp[i:i + self.chunk_size] for i in range(0, len(inp), self.chunk_size)]
                report.free_jobs += len(chunks)
                outs = await self.backend.run_free(self.exec_id, str(n.id), n.stage, chunks)
                outputs[(n.id, 0)] = [x for c in outs for x in c]
            for k in range(n.stage.ports):
                key = keys.get((n.id, k))
                if key is not None:
                    out = outputs[(n.id, k)]
                    report.outputs.setdefault(key, []).extend(out)
                    self.result.contribute(GSet((key, _frozen(x)) for x in out))

        tasks = [loop.create_task(run_node(n)) for n in d.nodes]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        return report


def _frozen(x: Any) -> Any:
    """Lists as tuples, recursively (set elements must be hashable)."""
    if isinstance(x, list | tuple):
        return tuple(_frozen(i) for i in x)
    return x


# -- the mesh ---------------------------------------------------------------------------------

_KIND_EMBROIDER = "embroider"


class PlanningNode:
    """One mesh peer that runs drafts: a :class:`RaftNode` (channel 0x50) for embroiders, a
    ``WarpStats`` Quilter (0x51), and a :class:`WarpNode` for free stages whose channels are nested
    in 0x52, so all planning traffic stays in the planning range (0x50-0x5F).

    Every peer registers the same ``ops`` table. ``voters`` is the Raft cluster (every peer's id).
    Pass ``mux`` when the application already multiplexes ``seam`` (one reader per seam).
    """

    def __init__(self, seam: Seam, ops: OpTable, *, voters: Iterable[str],
                 warp_config: WarpConfig | None = None, raft_config: RaftConfig | None = None,
                 quilter_config: QuilterConfig | None = None, raft_storage: RaftStorage | None = None,
                 seed: int | None = None, chunk_size: int = DEFAULT_CHUNK,
                 commit_timeout: float = 5.0, mux: MuxSeam | None = None) -> None:
        self.seam = seam
        self.self_id = seam.self_id
        self.ops = ops
        self.chunk_size = chunk_size
        self.commit_timeout = commit_timeout
        rng = random.Random(seed if seed is not None else f"planning:{seam.self_id}")
        self._own_mux = mux is None
        self.mux = mux if mux is not None else MuxSeam(seam)
        registry = OpRegistry()
        registry.register(FREE_OP, self._free_op, mode="inline")
        warp_seam = self.mux.channel(PLANNING_WARP_TAG)
        self.warp_mux = MuxSeam(warp_seam)
        self.warp = WarpNode(warp_seam, registry=registry, config=warp_config, mux=self.warp_mux,
                             incarnation=getattr(seam, "incarnation", None),
                             rng=random.Random(rng.getrandbits(32)))
        self.raft = RaftNode(self.self_id, SeamRaftTransport(self.mux.channel(PLANNING_RAFT_TAG)),
                             raft_storage if raft_storage is not None else InMemoryRaftStorage(),
                             voters=voters, config=raft_config, seed=rng.getrandbits(32))
        self.stats_board: Quilter[WarpStats] = Quilter(
            self.mux.channel(PLANNING_STATS_TAG), WarpStats(), stream=self.warp.replica, codec=STATS_CODEC,
            config=quilter_config, rng=random.Random(rng.getrandbits(32)), coalesce_delay=0.01)
        #: (exec id, node id) -> each member's output, for every embroider committed so far.
        self.applied: dict[tuple[str, int], list[list[Any]]] = {}
        #: Embroider proposals in the committed log: distinct keys, and every entry (retries too).
        self.embroider_proposals = 0
        self.embroider_entries = 0
        self._applied_changed = asyncio.Event()
        self._apply_task: asyncio.Task[None] | None = None
        self._seq = itertools.count(1)
        self._execs = itertools.count(1)

    @property
    def stats(self) -> WarpStats:
        """This peer's view of the mesh-wide statistics (converges by gossip)."""
        return self.stats_board.state

    async def start(self) -> PlanningNode:
        await self.stats_board.start()
        await self.raft.start()
        await self.warp.start()
        self._apply_task = asyncio.get_running_loop().create_task(self._apply_loop(),
                                                                   name=f"planning-apply-{self.self_id}")
        return self

    async def close(self) -> None:
        if self._apply_task is not None:
            self._apply_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._apply_task
        await self.warp.close()
        await self.raft.close()
        await self.stats_board.close()
        await self.warp_mux.close()
        if self._own_mux:
            await self.mux.close()

    # -- stats ------------------------------------------------------------------------------
    def observe(self, op: str, elements: list[Any]) -> None:
        if elements:
            self.stats_board.mutate(lambda s: s.observe_all(op, elements))

    async def sync_stats(self, timeout: float | None = 10.0) -> WarpStats:
        """Pull every live peer's statistics now instead of waiting for anti-entropy (call before
        planning when the last run just ended elsewhere)."""
        peers = sorted(self.warp.liveness.live.value - {self.self_id})
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(self.stats_board.sync_with(p) for p in peers))
        return self.stats

    # -- free stages: Warp jobs -------------------------------------------------------------
    def _free_op(self, args: Any) -> list[Any]:
        kind, ops, chunk = args
        stage = Stage(StageKind(kind), tuple(ops))
        return apply_free(stage, self.ops, chunk, self.observe)

    async def run_free(self, exec_id: str, vertex: str, stage: Stage, chunks: list[list[Any]]) -> list[list[Any]]:
        ids = [f"plan/{exec_id}/{vertex}/{i}" for i in range(len(chunks))]
        for tid, chunk in zip(ids, chunks, strict=True):
            self.warp.enqueue_nowait(tid, FREE_OP, [stage.kind.value, list(stage.op_ids), chunk])
        results = await asyncio.gather(*(self.warp.result(t) for t in ids))
        out = []
        for tid, r in zip(ids, results, strict=True):
            if not r.ok:
                raise ExecutionError(f"{stage.label()} failed on chunk {tid}: {r.error}")
            out.append(list(r.value))
            self.warp.ack(tid)
        return out

    # -- coordinated stages: Raft -----------------------------------------------------------
    async def commit(self, exec_id: str, node_id: int, members: list[tuple[str, list[Any]]]) -> list[list[Any]]:
        key = (exec_id, node_id)
        command = pack([_KIND_EMBROIDER, exec_id, node_id, [[op, batch] for op, batch in members]])
        dedup = DedupKey(f"plan:{self.warp.replica}", next(self._seq))
        attempts = 0
        while key not in self.applied:
            attempts += 1
            try:
                await self.raft.propose(command, key=dedup, timeout=self.commit_timeout)
            except (RaftError, TimeoutError) as err:
                if attempts >= 20:
                    raise ExecutionError(f"embroider {key} did not commit: {err}; is a Raft majority up?") from err
                await asyncio.sleep(0.05 * attempts)
                continue
            await self._wait_applied(key)
        return self.applied[key]

    async def _wait_applied(self, key: tuple[str, int]) -> None:
        while key not in self.applied:
            self._applied_changed.clear()
            await self._applied_changed.wait()

    async def _apply_loop(self) -> None:
        async for c in self.raft.committed_from(1):
            if not isinstance(c, CommittedEntry):
                continue
            try:
                kind, exec_id, node_id, members = unpack(c.data)
            except (FrameError, ValueError, TypeError):
                continue  # not a planning command
            if kind != _KIND_EMBROIDER:
                continue
            self.embroider_entries += 1
            key = (str(exec_id), int(node_id))
            if key in self.applied:
                continue  # a retried proposal: applied once
            self.embroider_proposals += 1
            try:
                self.applied[key] = [apply_embroider(op, self.ops, batch) for op, batch in members]
            except Exception as err:  # an op's failure must not stop the apply loop
                log.warning("embroider %s failed: %s", key, err)
                self.applied[key] = [[] for _ in members]
            self._applied_changed.set()

    # -- running drafts ---------------------------------------------------------------------
    def execution(self, draft: Draft, *, exec_id: str | None = None) -> ConvergentExecution:
        """A :class:`ConvergentExecution` of ``draft`` on this mesh."""
        eid = exec_id or f"{self.warp.replica}:{next(self._execs)}"
        return ConvergentExecution(draft, self, chunk_size=self.chunk_size, exec_id=eid)

    async def execute(self, draft: Draft, sources: Mapping[str, Iterable[Any]] | None = None,
                      ) -> tuple[ConvergentExecution, ExecutionReport]:
        ex = self.execution(draft)
        report = await ex.run(sources)
        return ex, report
