"""``WarpCore``: Warp's protocol as a pure state machine (no asyncio, no clock, no pools, no sockets).

The model is etcd-raft's Step/Ready (and our own :mod:`warpmesh.raft.core`): the runtime
(:class:`~warpmesh.warp.node.WarpNode`) feeds the core its inputs as plain method calls, each with
the current time ``now``, then takes one :class:`Ready` batch with :meth:`WarpCore.ready` and
carries it out. The core never waits, sends or reads a clock; it decides.

Inputs (methods):

* board changes: :meth:`~WarpCore.on_queue`, :meth:`~WarpCore.on_results`,
  :meth:`~WarpCore.on_members` (the core reads the board *states*, CRDT maps it is given at
  construction and that only the runtime's replication changes);
* membership: :meth:`~WarpCore.set_membership` (roster and live peers, from the seam, an
  injected roster source and the failure detector) and :meth:`~WarpCore.on_peer_view` (the view
  digest a peer announced on its heartbeats);
* runs: :meth:`~WarpCore.take_run` (the runtime pulls claimed runs as it has room),
  :meth:`~WarpCore.run_started`, :meth:`~WarpCore.run_finished`, :meth:`~WarpCore.run_deferred`,
  :meth:`~WarpCore.op_missing`;
* majority: :meth:`~WarpCore.majority_held` (a results write reached a majority);
* steal frames: :meth:`~WarpCore.on_steal`, and :meth:`~WarpCore.steal_attempt` when idle;
* time: :meth:`~WarpCore.tick` (settle windows that ended) and :meth:`~WarpCore.housekeeping`
  (the periodic re-claim pass and pruning);
* the API: :meth:`~WarpCore.enqueue`, :meth:`~WarpCore.cancel`, :meth:`~WarpCore.ack`, ...

Output (:class:`Ready`): board mutations as data, counter increments, steal frames to send, whether
new runs wait in the backlog, answers to watch until a majority holds them, runs to interrupt, a
view digest to announce, the next deadline the core needs a :meth:`~WarpCore.tick` at, and :class:`~warpmesh.warp.events.WarpEvent`
events for observers.

The rules themselves live in :mod:`~warpmesh.warp.claim` (who runs a task), :mod:`~warpmesh.warp.ring`
(ownership) and :mod:`~warpmesh.warp.steal` (messages, cost estimates); this module keeps the state
around them: what this peer claimed, stood down from, deferred, delegated to a thief or was granted,
and which answers still wait for a majority before their task may leave the queue.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import blake3

from warpmesh.crdt import ORMap
from warpmesh.crdt.registers import LWWRegister
from warpmesh.crdt.sets import GSet
from warpmesh.liveness.core import HeartbeatConfig
from warpmesh.quilt.core import QuilterConfig
from warpmesh.warp import events as ev
from warpmesh.warp.claim import ClaimStrategy, ClaimView, Decision, decide, winner
from warpmesh.warp.events import WarpEvent
from warpmesh.warp.model import OpResult, TaskDescriptor
from warpmesh.warp.ring import DEFAULT_VNODES, TaskRing, ring_for
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

#: Counter names on the mesh-wide counters board.
COUNTER_NAMES = ("executions", "duplicates", "failovers", "retries", "failures", "enqueued", "adopted", "stolen")

#: Entries a read cache of the core keeps at most (it is cleared when full).
MAX_REMEMBERED = 200_000

#: Board names in :class:`Mutation` (the runtime maps each to its Quilter).
QUEUE, RESULTS, INTENTS, MEMBERS = "queue", "results", "intents", "members"
#: Mutation kinds: set a register to ``value``, remove a key, add ``member`` to a set.
PUT, REMOVE, ADD = "put", "remove", "add"


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
    #: loses at most its last batch); in a mesh of more than 8 peers, this times peers / 8, so the
    #: mesh's counter traffic grows with the number of peers, not its square. (It was 20 ms: with
    #: jobs finishing one at a time, every answer then cost a counters delta to every peer, acked;
    #: at 0.1 s counters were still a third of a CPU-bound peer's frames.)
    counter_flush: float = 0.25
    #: The same while this peer has runs under way or waiting: the counters are statistics, and a
    #: busy peer of CPU-bound jobs spent a sixth of its frames on them at 0.25 s. What a busy spell
    #: counted leaves at once when the peer falls idle, so a status read after a batch is current.
    counter_flush_busy: float = 1.0
    #: Least time between two announcements of this peer's changed view (the heartbeat beacon). A
    #: change is announced at once, unless the previous announcement was more recent: then the view
    #: as it stands that long after the previous one is. A burst of changes (a mesh forming, a
    #: partition or its heal, seen peer by peer) so costs two announcements, not one per change: N
    #: peers announcing on each of N joins is N^2 announcements, each sent to N peers. Keep it well
    #: under ``settle_window`` (0: announce every change at once).
    view_publish_gap: float = 0.05
    #: How long ``enqueue`` waits for another peer to hold a new task (see :class:`NotReplicated`).
    replicate_timeout: float = 5.0
    #: How long a graceful ``close`` waits for its boards to replicate before leaving.
    leave_timeout: float = 1.0
    #: How long board deltas wait to be joined with others before they are sent: under load, many
    #: jobs share one frame per board (0: flush at the end of every loop iteration).
    coalesce_delay: float = 0.002
    #: How long an answer a majority holds waits before its task leaves the queue, so the answers
    #: of that moment leave together: one queue delta and one intents delta to every peer per batch
    #: instead of per answer (0: each batch as soon as a majority holds it). The wait costs nothing
    #: but the queue entry's stay: an answered task is never run again.
    dequeue_batch: float = 0.25
    #: How long a peer with more runs under way (running or claimed) holds its answers back, so
    #: several leave in one results delta to every peer, with the acks due meanwhile: a peer of
    #: CPU-bound jobs sent each answer alone. The last answer of a busy spell leaves at once, and
    #: with it those held (0: every answer after ``coalesce_delay``). At 0.1 s a peer of 20 ms jobs
    #: still sent a results delta per 2 answers; 0.25 s cut the four peers' CPU per 200-job batch
    #: by a tenth (0.42-0.48 s -> 0.38-0.41 s, interleaved).
    answer_linger: float = 0.25
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
    #: The replica group this peer belongs to (see docs/warp.md, "Cells"). ``None``: the mesh's
    #: one default cell. Peers of a cell replicate the queue, results and intents boards among
    #: themselves only, so a job's deltas and acks go to its cell, not to every peer; a task is
    #: queued in the cell its id hashes to, whichever peer it is submitted through.
    cell: str | None = None
    #: Every cell of the mesh, if known up front (e.g. ``("a", "b", "c")``): a task's cell is then
    #: the same on every peer from its first moment. Cells seen on the members board are added; a
    #: peer that has just started and has not heard the board yet knows only these.
    cells: tuple[str, ...] = ()
    #: How often a peer asks the cell that runs its forwarded tasks for their answers (answers are
    #: also pushed at once by the peer that accepted the task; this covers a lost push).
    route_poll: float = 0.25

    def __post_init__(self) -> None:
        if (self.settle_window < 0 or self.reclaim_interval <= 0 or self.retry_backoff < 0
                or self.view_publish_gap < 0):
            raise ValueError("settle_window, reclaim_interval, retry_backoff and view_publish_gap must be "
                             "non-negative")
        if self.max_attempts < 1 or self.max_concurrency < 1:
            raise ValueError("max_attempts and max_concurrency must be >= 1")
        if self.cell is not None and (not isinstance(self.cell, str) or not self.cell):
            raise ValueError("cell must be a non-empty string or None")
        if not all(isinstance(c, str) and c for c in self.cells) or len(set(self.cells)) != len(self.cells):
            raise ValueError("cells must be distinct non-empty strings")
        if self.cell is not None and self.cells and self.cell not in self.cells:
            raise ValueError(f"cell {self.cell!r} is not one of cells {list(self.cells)}")
        if not self.route_poll > 0:
            raise ValueError("route_poll must be positive")


@dataclass(frozen=True, slots=True)
class Mutation:
    """One board mutation the runtime applies (as this peer's replica)."""

    board: str  # QUEUE, RESULTS, INTENTS or MEMBERS
    op: str  # PUT (register := value), REMOVE (the key), ADD (member to the key's set)
    key: str
    value: bytes | None = None
    member: str | None = None


class Ready:
    """What the runtime must carry out after a step, in this order: mutations, then the rest."""

    __slots__ = ("await_majority", "counts", "deadline", "events", "frames", "interrupts", "mutations", "runnable",
                 "view")

    def __init__(self) -> None:
        # Written out rather than a dataclass: one of these is made per busy step.
        #: Board mutations, applied in order as this peer's replica.
        self.mutations: list[Mutation] = []
        #: Counter increments (name -> n) for the counters board.
        self.counts: dict[str, int] = {}
        #: Steal frames to send: (peer, data) on the steal channel.
        self.frames: list[tuple[str, bytes]] = []
        #: New runs wait in the backlog: wake the dispatcher (it pulls them with :meth:`WarpCore.take_run`).
        self.runnable = False
        #: (task, run) whose answer this batch writes: once the results board holds this batch's
        #: writes on a majority, call :meth:`WarpCore.majority_held` for each.
        self.await_majority: list[tuple[str, str]] = []
        #: Runs to stop if they are running here: (task, run, reason).
        self.interrupts: list[tuple[str, str, str]] = []
        #: The earliest time the core needs a :meth:`WarpCore.tick` (None: no change).
        self.deadline: float | None = None
        #: For observers (filled only while :attr:`WarpCore.observed`).
        self.events: list[WarpEvent] = []
        #: Announce this view digest to every peer (the runtime's heartbeat beacon), if not None.
        self.view: str | None = None

    def __bool__(self) -> bool:
        return bool(self.mutations or self.counts or self.frames or self.runnable or self.await_majority
                    or self.interrupts or self.deadline is not None or self.events or self.view is not None)

    def __repr__(self) -> str:
        return "Ready(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


class OpTable(Protocol):
    """The ops this peer can run (an :class:`~warpmesh.warp.ops.OpRegistry`): looked up, never called."""

    def names(self) -> list[str]: ...

    def __contains__(self, name: object) -> bool: ...

    def resolve(self, name: str) -> Any: ...


def board_value(reg: LWWRegister | None) -> Any:
    """Board values travel as msgpack bytes inside an LWW register (decoded on read)."""
    if reg is None or reg.is_bottom() or not isinstance(reg.value, bytes):
        return None
    try:
        return unpack(reg.value)
    except FrameUndecodable:
        return None


def decode_result(reg: LWWRegister | None) -> OpResult | None:
    """The :class:`OpResult` a results-board register holds (None if empty or malformed)."""
    wire = board_value(reg)
    if wire is None:
        return None
    try:
        return OpResult.from_wire(wire)
    except ValueError:
        return None


def view_digest(workers: Iterable[str]) -> str:
    """Digest of a worker set, published so peers can tell whether their views agree."""
    return blake3.blake3("\x00".join(sorted(workers)).encode()).hexdigest()[:16]


#: Mesh size up to which counters flush every ``WarpConfig.counter_flush`` (see :func:`counter_interval`).
COUNTER_FLUSH_PEERS = 8


def counter_interval(counter_flush: float, peers: int) -> float:
    """Seconds between counter flushes with ``peers`` other peers: ``counter_flush``, stretched in
    proportion beyond :data:`COUNTER_FLUSH_PEERS`.

    Every flush is a delta to every peer, so with a fixed interval a busy mesh of N peers sends
    N(N-1) counter frames per interval; stretching the interval by N / 8 keeps that traffic growing
    as N. The mesh-wide figures lag by at most the interval; a crash loses at most one batch.
    """
    return counter_flush * max(1.0, peers / COUNTER_FLUSH_PEERS)


def _node_of(replica: str) -> str:
    return replica.rpartition("@")[0] or replica


class WarpCore:
    """One peer's scheduling protocol: claim, settle, run, answer, dequeue, steal. See the module docstring.

    ``queue``, ``results``, ``intents`` and ``members`` are the states of this peer's boards
    (read here, changed only by replication and by the runtime applying :class:`Mutation`\\ s);
    ``ops`` is the local op table; ``rng`` is the seeded randomness the core may use;
    ``members_version`` (optional) reads the members board's change counter, so the parsed
    membership is cached between changes; with ``intents_version`` (the intents board's counter)
    too, a re-claim pass skips the tasks an earlier pass found owned elsewhere while nothing their
    decision depends on has changed (see :meth:`claim_all`).
    """

    def __init__(self, self_id: str, replica: str, incarnation: int, *, config: WarpConfig, role: str,
                 queue: ORMap[LWWRegister], results: ORMap[LWWRegister], intents: ORMap[GSet],
                 members: ORMap[LWWRegister], ops: OpTable,
                 rng: random.Random, roster_injected: bool = False,
                 members_version: Callable[[], int] | None = None,
                 intents_version: Callable[[], int] | None = None, log: Any = None) -> None:
        self.self_id = self_id
        self.replica = replica
        self.incarnation = incarnation
        self.config = config
        self.role = role
        self.queue, self.results, self.intents, self.members = queue, results, intents, members
        self.ops = ops
        self.rng = rng
        self._log = log
        self._roster_injected = roster_injected
        #: Set by the runtime: build events only while someone observes them.
        self.observed = False
        self.started = False
        self.closed = False
        self._out = Ready()
        self._now = 0.0

        # Membership.
        self.roster: frozenset[str] = frozenset()
        self.live: frozenset[str] = frozenset()
        self._elsewhere: frozenset[str] = frozenset()  # peers of other cells, linked or heard from
        self.workers: frozenset[str] = frozenset()
        self._all_workers: frozenset[str] = frozenset()
        self.ring = ring_for(frozenset(), vnodes=config.vnodes, seed=config.ring_seed)
        self._ring_all = self.ring
        self.view = view_digest(())
        self._view_changed_at = float("-inf")
        self._publish_at: float | None = None  # when our changed view is due to be announced
        self._published_at = float("-inf")  # when we last announced our view
        # Node -> the view it announced (heartbeat beacons, see :meth:`on_peer_view`), and a change
        # counter for the caches that read them.
        self.peer_views: dict[str, str] = {}
        self._peer_views_version = 0
        self._member_cache: tuple[int, dict[str, dict[str, Any]]] = (-1, {})  # this cell's entries
        self._mesh_info: dict[str, dict[str, Any]] = {}  # every cell's
        # Replica id -> (value bytes, decoded entry): a members delta touches one or two entries, so
        # re-reading the board decodes only the entries whose bytes changed (O(members) lookups per
        # change instead of O(members) decodes; with N peers a membership change brings N deltas).
        self._entry_cache: dict[str, tuple[bytes | None, Any]] = {}
        # (members version, live, workers, view) -> whether some reachable peer's published view
        # differs from ours; and (members version, workers) -> op -> eligible workers. Both are asked
        # per claim pass, i.e. per queue delta: caching keeps a pass O(1) in the number of peers.
        self._views_differ: tuple[tuple[Any, ...], bool] | None = None
        self._eligible_cache: tuple[tuple[Any, ...], dict[tuple[str, bool], frozenset[str] | None]] | None = None
        self._members_version = members_version
        self._intents_version = intents_version
        # Quiet tasks: queued, unpinned, ring-owned by another peer, no claim note of ours, no answer;
        # found so under ``_quiet_key`` (everything that decision reads: ring, membership, contention,
        # strategy, local ops, the intents board). A re-claim pass under the same key skips them:
        # with 10,000 tasks queued, re-deciding each one on every peer every second was a fifth of a
        # busy mesh's CPU. Any change of the key makes the next pass a full one.
        self._quiet: set[str] = set()
        self._quiet_key: tuple[Any, ...] | None = None
        #: Tasks the re-claim passes skipped as quiet (cumulative).
        self.reclaim_skipped = 0
        self._member_replicas: dict[str, str] = {}  # node id -> replica id of its newest incarnation
        self.member_extra: dict[str, Any] = {}  # extra published fields (set_member_field)
        self._absent_since: dict[str, float] = {}  # member node -> when it was first seen gone
        self._seen_workers: set[str] = set()  # every worker ever in our live set (joined vs readmitted)

        # Claims and runs; every map is pruned as tasks leave the queue.
        self.claimed: dict[str, str] = {}  # task -> run claimed here (settling, queued or running)
        self.standby: dict[str, str] = {}  # task -> run this peer stood down from
        self.deferred: dict[str, tuple[str, float]] = {}  # task -> (run, until): the op raised Standby
        self._settling: list[tuple[float, int, str, str]] = []  # heap of (until, seq, task, run)
        self._settle_seq = 0
        self.backlog: deque[tuple[str, TaskDescriptor]] = deque()  # claimed here, not started
        self.active: set[tuple[str, str]] = set()  # (task, run) running off the loop here
        self._run_started: dict[tuple[str, str], float] = {}  # only while observed: durations
        self._executed: OrderedDict[str, str] = OrderedDict()  # task -> run executed here (recent)
        self._written: dict[str, tuple[str, float]] = {}  # task -> (run, when) of results written here
        self._dequeuing: set[tuple[str, str]] = set()  # answers waiting for a majority
        # Read caches of the hot path (pruned with the queue): decoded descriptors by the register
        # object they came from, answered runs by the value's bytes object, and ring owners while
        # the ring stays the same.
        self._descs: dict[str, tuple[object, TaskDescriptor | None]] = {}  # by the entry's value
        self._result_runs: dict[str, tuple[Any, str | None]] = {}
        self._owners: dict[str, str | None] = {}
        self._owners_ring: TaskRing | None = None

        # Work stealing (local, unreplicated; see warpmesh.warp.steal).
        self.costs = OpCosts()
        self.delegated: dict[str, tuple[str, str, int]] = {}  # task -> (run, thief, request seq): granted away
        self._thieves: dict[str, tuple[int, int]] = {}  # thief -> (incarnation, newest request seq seen)
        self.stolen: dict[str, tuple[str, str, float | None]] = {}  # task -> (run, owner, finished at): granted us
        # Stolen tasks whose answer a majority holds: the results batch of ours that carried it. Such
        # a task stays in `held` until its owner confirmed that batch (results_confirmed).
        self._stolen_answer_seq: dict[str, int] = {}
        self._results_confirmed: dict[str, int] = {}  # peer -> our results batches it holds, up to
        self._steal_seq = 0
        self._steal_sent: dict[str, int] = {}  # owner -> seq of the newest request sent to it
        self._steal_pending: tuple[str, int, float] | None = None  # (owner, seq, sent at) awaiting a grant
        self._backlogs: dict[str, tuple[float, float]] = {}  # peer -> (backlog seconds, reported at)
        self.steal_backoff = config.steal_interval
        self.steal_stats: dict[str, int] = dict.fromkeys(
            ("requests_out", "requests_in", "grants_in", "tasks_in", "tasks_out", "taken_back", "late_grants",
             "declined_grants", "bad_frames"), 0)

    # -- the ready batch --------------------------------------------------------------------
    def ready(self) -> Ready:
        """Take what the steps since the last call decided (carry it out before the next input)."""
        out = self._out
        if out:
            self._out = Ready()
        return out  # an empty batch is handed out again (and stays empty): no allocation per idle step

    def _put(self, board: str, key: str, value: bytes) -> None:
        self._out.mutations.append(Mutation(board, PUT, key, value))

    def _remove(self, board: str, key: str) -> None:
        self._out.mutations.append(Mutation(board, REMOVE, key))

    def _count(self, name: str, n: int = 1) -> None:
        counts = self._out.counts
        counts[name] = counts.get(name, 0) + n

    def _emit(self, kind: str, job: str | None = None, peer: str | None = None, **detail: Any) -> None:
        # Callers check ``self.observed`` first: an unobserved peer builds no event.
        self._out.events.append(WarpEvent(kind, self._now, job, peer, detail))

    def _runnable(self, task_id: str, desc: TaskDescriptor) -> None:
        self.backlog.append((task_id, desc))
        self._out.runnable = True

    def _watch_majority(self, task_id: str, run: str) -> None:
        self._dequeuing.add((task_id, run))
        self._out.await_majority.append((task_id, run))

    # -- reading the boards -----------------------------------------------------------------
    def descriptor(self, task_id: str) -> TaskDescriptor | None:
        """The queued descriptor of ``task_id`` (None if absent or malformed)."""
        reg = self.queue.peek(task_id)
        if reg is None:
            self._descs.pop(task_id, None)
            return None
        # Decoded once per queue entry, not once per look: the re-claim pass, every delta and every
        # answer look the task up again. Remembered by the value's identity, as result_run does: a
        # rewritten entry holds a new bytes object, and an entry enqueued here holds the very bytes
        # object enqueue packed (seeded there).
        cached = self._descs.get(task_id)
        if cached is not None and cached[0] is reg.value:
            return cached[1]
        desc: TaskDescriptor | None = None
        wire = board_value(reg)
        if wire is not None:
            try:
                desc = TaskDescriptor.from_wire(wire)
            except ValueError:
                if self._log is not None:
                    self._log.warning("%s: ignoring malformed descriptor for task %r", self.self_id, task_id)
        self._descs[task_id] = (reg.value, desc)
        return desc

    def result_run(self, task_id: str) -> str | None:
        """The run the results board holds an answer for (None: no answer)."""
        reg = self.results.peek(task_id)
        if reg is None:
            self._result_runs.pop(task_id, None)
            return None
        # Remembered by the value's identity: the run is a function of the value's bytes, and a
        # register holding an answer we wrote holds the very bytes object we wrote (seeded in
        # run_finished), so our own answers are never decoded again to read their run.
        value = reg.value
        cached = self._result_runs.get(task_id)
        if cached is not None and cached[0] is value:
            return cached[1]
        wire = board_value(reg)
        run = wire.get("run") if isinstance(wire, dict) else None
        run = run if isinstance(run, str) else None
        self._result_runs[task_id] = (value, run)
        return run

    def _ring_owner(self, task_id: str) -> str | None:
        """``self.ring.owner(task_id)``, remembered per task until the ring changes."""
        ring = self.ring
        if self._owners_ring is not ring:
            self._owners_ring = ring
            self._owners = {}
        owners = self._owners
        if task_id in owners:
            return owners[task_id]
        if len(owners) >= MAX_REMEMBERED:
            owners.clear()
        owner = owners[task_id] = ring.owner(task_id)
        return owner

    def claimants(self, run: str) -> frozenset[str]:
        """Peers that noted a claim on ``run`` on the intents board."""
        g = self.intents.get(run)
        return frozenset() if g is None else frozenset(g.elements)

    def member_info(self) -> dict[str, dict[str, Any]]:
        """Node id -> the entry of its newest incarnation on the members board, for the peers of
        this peer's cell (``WarpConfig.cell``; cached per version). Every claim decision reads
        this: a peer of another cell is neither a worker nor a rival here."""
        self.mesh_member_info()
        return self._member_cache[1]

    def mesh_member_info(self) -> dict[str, dict[str, Any]]:
        """Node id -> the entry of its newest incarnation on the members board, every cell's
        (what routing and ``warpmesh status`` read; cached per version)."""
        version = self._members_version() if self._members_version is not None else None
        if version is not None and self._member_cache[0] == version:
            return self._mesh_info
        info: dict[str, dict[str, Any]] = {}
        newest: dict[str, int] = {}
        cache = self._entry_cache
        keys = self.members.keys()
        for rid in keys:
            node, _, inc = str(rid).rpartition("@")
            if not node or not inc.isdigit() or int(inc) < newest.get(node, -1):
                continue
            reg = self.members.get(rid)
            raw = reg.value if reg is not None and isinstance(reg.value, bytes) else None
            hit = cache.get(rid)
            if hit is not None and hit[0] == raw:
                value = hit[1]
            else:
                value = board_value(reg)
                cache[rid] = (raw, value)
            if isinstance(value, dict):
                info[node] = value
                newest[node] = int(inc)
        if len(cache) > len(keys):
            present = set(keys)
            for rid in [r for r in cache if r not in present]:
                del cache[rid]
        cell = self.config.cell
        # Without cells anywhere (every entry's cell is ours, None) both views are one dict.
        mine = info if all(v.get("cell") == cell for v in info.values()) else {
            node: v for node, v in info.items() if v.get("cell") == cell}
        self._member_cache = (-1 if version is None else version, mine)
        self._mesh_info = info
        self._member_replicas = {node: f"{node}@{inc}" for node, inc in newest.items()}
        return info

    def _replica_live(self, replica: str) -> bool:
        """Whether ``replica`` (one incarnation of a peer) is the live, newest incarnation of a worker."""
        node = replica.rpartition("@")[0]
        if node not in self.workers:
            return False
        self.member_info()  # refreshes the newest-incarnation map
        return self._member_replicas.get(node) == replica

    def _op_mode(self, op: str) -> str | None:
        spec = self.ops.resolve(op)
        return None if spec is None else str(spec.mode)

    def eligible(self, op: str) -> frozenset[str] | None:
        """Live workers that have ``op`` registered (None: all of them, the common case)."""
        info = self.member_info()
        key = (self._member_cache[0], self.workers)
        cached = self._eligible_cache
        if cached is None or cached[0] != key or key[0] == -1:
            cached = self._eligible_cache = (key, {})
        local = op in self.ops  # the local table may change at any time: part of the key
        slot = (op, local)
        if slot in cached[1]:
            return cached[1][slot]
        result = self._eligible(op, local, info)
        cached[1][slot] = result
        return result

    def _eligible(self, op: str, local: bool, info: dict[str, dict[str, Any]]) -> frozenset[str] | None:
        holders = {p for p in self.workers if op in info.get(p, {}).get("ops", ())}
        if local:
            holders.add(self.self_id)
        holders &= self.workers
        return None if holders == self.workers else frozenset(holders)

    def contested(self, now: float) -> bool:
        """Whether ownership may be contested right now (see :mod:`warpmesh.warp.claim`)."""
        if now - self._view_changed_at < self.config.settle_window:
            return True
        info = self.member_info()
        key = (self._member_cache[0], self._peer_views_version, self.live, self.workers, self.view)
        cached = self._views_differ
        if cached is not None and cached[0] == key and key[0] != -1:
            return cached[1]
        differ = self._views_differ_from(info)
        self._views_differ = (key, differ)
        return differ

    def _views_differ_from(self, info: dict[str, dict[str, Any]]) -> bool:
        # Any reachable worker - in our ring or not (an injected roster source may leave it out) -
        # that sees a different worker set may believe it owns our tasks. A reachable peer that
        # has not published anything yet may be such a worker too.
        views = self.peer_views
        for peer in self.live | self.workers:
            if peer == self.self_id:
                continue
            entry = info.get(peer)
            if entry is None or (entry.get("role") == "worker" and views.get(peer) != self.view):
                return True
        return False

    @property
    def view_changed_at(self) -> float:
        """When our view last changed."""
        return self._view_changed_at

    def doubted_views(self) -> list[str]:
        """Reachable workers whose announced view differs from ours (or never reached us): the runtime
        asks them for it again, in case an announcement was lost."""
        info = self.member_info()
        views = self.peer_views
        return [p for p in sorted(self.live | self.workers) if p != self.self_id
                and info.get(p, {}).get("role", "worker") == "worker" and views.get(p) != self.view]

    def on_peer_view(self, now: float, peer: str, view: str) -> None:
        """``peer`` announced the digest of the worker set it sees (its heartbeat beacon)."""
        self._now = now
        if self.peer_views.get(peer) != view:
            self.peer_views[peer] = view
            self._peer_views_version += 1

    def still_claimed(self, task_id: str, run: str) -> bool:
        """Whether this peer still holds its claim on ``run`` (a retry checks before trying again)."""
        return self.claimed.get(task_id) == run

    # -- membership -------------------------------------------------------------------------
    def announce_view(self) -> None:
        """Announce our view (the digest of the worker set we see) to every peer.

        Views change with every membership change, at every peer: on the members board that was N
        entries, each a delta and an ack to N - 1 peers, per change. They travel as the runtime's
        heartbeat beacon instead (unacknowledged, re-asked when doubted; see
        :mod:`warpmesh.liveness.runtime`)."""
        self._publish_at = None
        self._published_at = self._now
        self._out.view = self.view

    def publish_member(self) -> None:
        """Write this peer's entry (role, ops, extra fields) on the members board."""
        # Keyed by replica id: each incarnation owns its entry, so a restart never races its past.
        entry = {**self.member_extra, "role": self.role, "ops": self.ops.names()}
        if self.config.cell is not None:
            entry["cell"] = self.config.cell
        value = pack(entry)
        current = self.members.get(self.replica)
        if current is not None and current.value == value:
            # The board already holds exactly this entry: a republish would cost a delta to every
            # peer (and N of them per membership change) for nothing.
            return
        self._put(MEMBERS, self.replica, value)

    def set_membership(self, now: float, roster: frozenset[str], live: frozenset[str],
                       force_publish: bool = False, elsewhere: frozenset[str] = frozenset()) -> None:
        """The roster (seam or injected source) and the peers the failure detector hears from, of
        this peer's cell; ``elsewhere``: the peers of other cells that are linked or heard from."""
        self._now = now
        self.roster, self.live = roster, live
        self._elsewhere = elsewhere
        if self.closed:
            return
        info = self.member_info()
        live_listed = live & roster  # in the roster (source) and heard from lately
        workers = {p for p in live_listed if info.get(p, {}).get("role") == "worker"}
        if self.role == "worker" and (not self._roster_injected or self.self_id in roster):
            workers.add(self.self_id)
        workers_f = frozenset(workers)
        all_workers = frozenset(p for p, v in info.items() if v.get("role") == "worker") | (
            {self.self_id} if self.role == "worker" else set())
        if all_workers != self._all_workers:
            self._all_workers = all_workers
            self._ring_all = ring_for(all_workers, vnodes=self.config.vnodes, seed=self.config.ring_seed)
        changed = workers_f != self.workers
        if changed:
            if self.observed:
                for peer in sorted(workers_f - self.workers):
                    self._emit(ev.PEER_READMITTED if peer in self._seen_workers else ev.PEER_JOINED, peer=peer)
                for peer in sorted(self.workers - workers_f):
                    self._emit(ev.PEER_SUSPECTED if peer in roster else ev.PEER_LOST, peer=peer)
            self._seen_workers.update(workers_f)
            self.workers = workers_f
            self.ring = ring_for(workers_f, vnodes=self.config.vnodes, seed=self.config.ring_seed)
            self.view = view_digest(workers_f)
            self._view_changed_at = now
            self.standby.clear()  # a new ring may make a stood-down claimant the winner
        if force_publish:
            self.publish_member()
        if force_publish or (changed and now - self._published_at >= self.config.view_publish_gap):
            self.announce_view()
        elif changed and self._publish_at is None:
            # Within the gap after a publish (a burst): the view as it stands at the end of the gap
            # is published then, once, whatever changes come meanwhile.
            self._publish_at = self._published_at + self.config.view_publish_gap
            self._need_tick(self._publish_at)
        if changed:
            for task_id in [t for t, (_, thief, _) in self.delegated.items() if thief not in workers_f]:
                del self.delegated[task_id]  # its thief left: ours again (the re-claim below)
                self.steal_stats["taken_back"] += 1
            self.claim_all(now)

    def on_members(self, now: float, keys: Iterable[str] | None = None) -> None:
        """A members-board delta arrived (touching ``keys``; None: a whole state was merged): forget
        our past incarnations, republish if we were forgotten."""
        self._now = now
        for rid in [rid for rid in (self.members.keys() if keys is None else keys)
                    if str(rid).rpartition("@")[0] == self.self_id and rid != self.replica and rid in self.members]:
            self._remove(MEMBERS, rid)
        if self.started and not self.closed and self.replica not in self.members:
            self.publish_member()  # a peer forgot us while we were cut off (see _forget_lost_members)

    def set_member_field(self, name: str, value: Any) -> None:
        """Publish an extra field (e.g. ``warm`` keys) in this peer's entry on the members board."""
        if name in ("role", "view", "ops", "cell"):
            raise ValueError(f"member field {name!r} is reserved")
        self.member_extra[name] = value
        if self.started and not self.closed:
            self.publish_member()

    def _forget_lost_members(self, now: float) -> None:
        """Remove the members-board entries of nodes gone (off the roster and silent) for longer
        than the failure detector's ``lost_after``, so ``warpmesh status`` stops listing them. A
        node that comes back publishes a new entry."""
        if self.role != "worker":
            return
        # Every cell's members: a cell whose peers are all gone is forgotten by the others too.
        present = self.roster | self.live | self._elsewhere | {self.self_id}
        info = self.mesh_member_info()
        for node in [n for n in self._absent_since if n not in info or n in present]:
            del self._absent_since[node]
        for node in info:
            if node in present:
                continue
            since = self._absent_since.setdefault(node, now)
            if now - since < self.config.heartbeat.lost_after:
                continue
            del self._absent_since[node]
            if self._log is not None:
                self._log.info("%s: forgetting %s, gone for over %.3g s", self.self_id, node, now - since)
            for rid in [r for r in self.members.keys() if str(r).rpartition("@")[0] == node]:
                self._remove(MEMBERS, rid)

    # -- enqueue and claiming ---------------------------------------------------------------
    def enqueue(self, now: float, task_id: str, desc: TaskDescriptor) -> None:
        """Put ``desc`` on the queue under ``task_id`` (the runtime considers it for claiming soon after)."""
        self._now = now
        wire = pack(desc.to_wire())
        self._put(QUEUE, task_id, wire)
        if desc.packed_args is not None:
            # The register will hold this very bytes object, and ``desc`` is what decoding it gives
            # (packed arguments, as a runtime builds them): the entry is never decoded here.
            self._descs[task_id] = (wire, desc)
        self._count("enqueued")
        if self.observed:
            self._emit(ev.ENQUEUED, task_id, self.self_id, run=desc.run, op=desc.op, pin=desc.pin)

    def claim_all(self, now: float) -> None:
        """Consider every queued task (a re-claim pass), but those known quiet under the same
        conditions (see ``_quiet``): they would be skipped again."""
        self._now = now
        if self.closed or self.role != "worker":
            return
        view = self._claim_view(now)
        key = self._pass_key(view)
        keys = self.queue.keys()
        if key is not None and self._quiet_key is not None and _same_key(key, self._quiet_key):
            quiet = self._quiet
            if len(quiet) > 2 * len(keys) + 1024:
                quiet.intersection_update(keys)  # forget tasks long gone from the queue
            self.reclaim_skipped += len(quiet)
            keys = [t for t in keys if t not in quiet]
        else:
            self._quiet = set()
            self._quiet_key = key
        self._consider(now, keys, view, key)

    def _claim_view(self, now: float) -> ClaimView:
        strategy = self.config.strategy
        return ClaimView(self.self_id, self.ring,
                         self.contested(now) if strategy is ClaimStrategy.INTENT else False, strategy)

    def _pass_key(self, view: ClaimView) -> tuple[Any, ...] | None:
        """What a not-ours decision depends on (``view`` carries the ring, contention and strategy), or
        None when it cannot be told (no board versions)."""
        if self._members_version is None or self._intents_version is None:
            return None
        return (view.ring, self._members_version(), self._intents_version(), self.workers, self.live,
                view.contested, view.strategy, tuple(self.ops.names()))

    def consider(self, now: float, task_ids: Iterable[str]) -> None:
        """Claim what is ours among ``task_ids``; the view and eligibility are computed once."""
        self._now = now
        if self.closed or self.role != "worker":
            return
        view = self._claim_view(now)
        self._consider(now, task_ids, view, self._pass_key(view) if self._quiet_key is not None else None)

    def _consider(self, now: float, task_ids: Iterable[str], view: ClaimView, key: tuple[Any, ...] | None) -> None:
        # Tasks found owned elsewhere are remembered as quiet only under the key the set belongs to.
        quiet_key = self._quiet_key
        quiet = self._quiet if quiet_key is not None and _same_key(key, quiet_key) else None
        eligible_by_op: dict[str, frozenset[str] | None] = {}
        queue_peek, results_peek, intents_peek = self.queue.peek, self.results.peek, self.intents.peek
        claimed, standby, executed, delegated, deferred = (
            self.claimed, self.standby, self._executed, self.delegated, self.deferred)
        me, intent_mode = self.self_id, view.strategy is ClaimStrategy.INTENT
        dequeuing, replica, descriptor, result_run = self._dequeuing, self.replica, self.descriptor, self.result_run
        descs = self._descs
        for task_id in task_ids:
            desc: TaskDescriptor | None = None
            answer = results_peek(task_id)
            if answer is not None:
                # Answered (every re-claim pass meets these until they leave the queue): for the
                # run it answers, _claim would only see to the cleanup. Decided here when the
                # cleanup is nothing: our own answer waiting for its majority, or another writer's
                # task that neither the ring nor a pin makes ours to clean up.
                desc = descriptor(task_id)
                if desc is None:
                    continue
                if result_run(task_id) == desc.run:
                    if (task_id, desc.run) in dequeuing or (
                            answer.replica != replica and desc.pin != me and self._ring_owner(task_id) != me):
                        continue
                    self._cleanup_done(task_id, desc)
                    continue
            # Most tasks are another peer's: decided from the raw entry (op, run, pin) and the ring,
            # without building a descriptor - what _claim decides for a task nothing of ours
            # notes, that has no answer, no pin and an op every worker has.
            elif (task_id not in claimed and task_id not in standby and task_id not in executed
                    and task_id not in delegated and task_id not in deferred):
                entry = queue_peek(task_id)
                cached = descs.get(task_id)
                if entry is not None and cached is not None and cached[0] is entry.value:
                    known = cached[1]  # decoded before, or enqueued here
                    op, run, pin = (known.op, known.run, known.pin) if known is not None else (None, None, None)
                else:
                    wire = board_value(entry)
                    op, run, pin = (wire.get("op"), wire.get("run"), wire.get("pin")) if type(wire) is dict else (
                        None, None, None)
                if pin is None and type(op) is str and type(run) is str:
                    if op not in eligible_by_op:
                        eligible_by_op[op] = self.eligible(op)
                    if eligible_by_op[op] is None and self._ring_owner(task_id) != me:
                        ours = intents_peek(run) if intent_mode else None
                        if ours is None or me not in ours:
                            if quiet is not None:
                                quiet.add(task_id)
                            continue
            if desc is None:  # (an answered task's was read above)
                desc = descriptor(task_id)
                if desc is None:
                    continue
            if desc.op not in eligible_by_op:
                eligible_by_op[desc.op] = self.eligible(desc.op)
            self._claim(now, task_id, desc, view, eligible_by_op[desc.op], quiet)

    def _claim(self, now: float, task_id: str, desc: TaskDescriptor, view: ClaimView,
               eligible: frozenset[str] | None, quiet: set[str] | None) -> None:
        if self.result_run(task_id) == desc.run:
            # Answered already (whatever we thought of the task before): only cleanup remains.
            self._cleanup_done(task_id, desc)
            return
        if self.claimed.get(task_id) == desc.run or self.standby.get(task_id) == desc.run:
            return
        if self._executed.get(task_id) == desc.run:
            # We ran this very run and wrote its answer, which is gone: acknowledged (or expired).
            # Running it again would be a duplicate. Either the queue entry's removal is on its way
            # here (the two travel on different boards), or the entry came back after it: a late
            # copy of a forwarded enqueue of that run (warpmesh.warp.route), which nobody else
            # would ever remove. The run is done either way, so the entry goes.
            if (task_id, desc.run) not in self._dequeuing:
                self._remove_from_queue(task_id, desc.run)
            return
        delegated = self.delegated.get(task_id)
        if delegated is not None:
            if delegated[0] == desc.run:
                return  # granted to a thief, who runs it (or we take it back)
            del self.delegated[task_id]  # a new run of the task: the old grant does not cover it
        deferred = self.deferred.get(task_id)
        if deferred is not None and deferred[0] == desc.run and now < deferred[1]:
            return
        strategy = view.strategy
        ring_owner = self._ring_owner(task_id) if desc.pin is None and eligible is None else None
        if desc.pin is None and eligible is None and ring_owner != self.self_id:
            # Not ours (the common case, in every re-claim pass): SKIP unless a claim of ours on the
            # intents board binds us - what ``decide`` would say, without building the claimant set.
            ours = self.intents.peek(desc.run) if strategy is ClaimStrategy.INTENT else None
            if ours is None or self.self_id not in ours:
                if quiet is not None:
                    quiet.add(task_id)
                return
        claimants = self.claimants(desc.run) if strategy is ClaimStrategy.INTENT else frozenset()
        decision = decide(task_id, desc, view, claimants, eligible, ring_owner if view.ring is self.ring else None)
        if decision is Decision.SKIP:
            return
        self.claimed[task_id] = desc.run
        # The note matters only where a rival might claim while this run is in progress: when
        # ownership is contested, or when the op runs off the loop for a while. An uncontested
        # inline op finishes before any rival could look, so it skips the note (and its removal).
        noted = decision is Decision.SETTLE or self._op_mode(desc.op) != "inline"
        if desc.pin is None and strategy is ClaimStrategy.INTENT and noted and self.self_id not in claimants:
            self._out.mutations.append(Mutation(INTENTS, ADD, desc.run, member=self.self_id))
        if self.observed:
            if decision is Decision.RUN:
                self._emit(ev.CLAIMED, task_id, self.self_id, run=desc.run, op=desc.op)
            else:
                self._emit(ev.CONTESTED, task_id, self.self_id, run=desc.run,
                           claimants=sorted(claimants | {self.self_id}))
        if decision is Decision.RUN:
            self._runnable(task_id, desc)
        else:
            self._settle_seq += 1
            until = now + self.config.settle_window
            heapq.heappush(self._settling, (until, self._settle_seq, task_id, desc.run))
            self._need_tick(until)

    def tick(self, now: float) -> None:
        """Time passed: settle the contested claims whose window ended, publish a view that is due."""
        self._now = now
        if self._publish_at is not None and self._publish_at <= now and not self.closed:
            self.announce_view()
        while self._settling and self._settling[0][0] <= now:
            _, _, task_id, run = heapq.heappop(self._settling)
            self._after_settle(task_id, run)
        due = self.next_deadline()
        if due is not None:
            self._out.deadline = due

    def next_deadline(self) -> float | None:
        """When the core next needs a :meth:`tick` (None: nothing pending)."""
        settle = self._settling[0][0] if self._settling else None
        if self._publish_at is None:
            return settle
        return self._publish_at if settle is None else min(settle, self._publish_at)

    def _need_tick(self, at: float) -> None:
        self._out.deadline = at if self._out.deadline is None else min(self._out.deadline, at)

    def _after_settle(self, task_id: str, run: str) -> None:
        if self.closed or self.claimed.get(task_id) != run:
            return
        desc = self.descriptor(task_id)
        if desc is None or desc.run != run or self.result_run(task_id) == run:
            self.claimed.pop(task_id, None)
            if desc is not None and desc.run == run:
                self._cleanup_done(task_id, desc)
            return
        claimants = self.claimants(run) | {self.self_id}
        # Every reachable claimant counts, even one outside our ring: it believes the task is its own.
        reachable = self.live | self.workers
        win = winner(task_id, claimants, reachable, vnodes=self.config.vnodes, seed=self.config.ring_seed)
        if self.observed:
            self._emit(ev.SETTLED, task_id, win, run=run, claimants=sorted(claimants), won=win == self.self_id)
        if win == self.self_id:
            self._runnable(task_id, desc)
        else:
            self.claimed.pop(task_id, None)
            self.standby[task_id] = run

    def wake_standby(self, now: float) -> None:
        """Consider every task an op stood by on (``Standby``) again now."""
        if self.deferred and not self.closed:
            self.deferred.clear()
            self.claim_all(now)

    # -- board deltas -----------------------------------------------------------------------
    def on_queue(self, now: float, task_ids: Iterable[str] | None) -> None:
        """A queue delta arrived (``None``: a whole state was merged)."""
        if task_ids is None:
            self.claim_all(now)
        else:
            self.consider(now, task_ids)

    def on_results(self, now: float, task_ids: Iterable[str]) -> None:
        """A results delta arrived for ``task_ids``."""
        self._now = now
        executed, claimed = self._executed, self.claimed
        running = {t for t, _ in self.active} if self.active else ()
        quiet = self._quiet
        for task_id in task_ids:
            quiet.discard(task_id)  # answered: its cleanup is decided by the re-claim passes
            if task_id not in executed and task_id not in claimed and task_id not in running:
                continue  # nothing of ours to settle: most answers, on most peers
            run = self.result_run(task_id)
            if run is None:
                continue
            # A concurrent duplicate: we ran this run too, and the other answer won the board.
            if self._executed.get(task_id) == run:
                res = decode_result(self.results.get(task_id))
                if res is not None and res.by != self.self_id:
                    self._executed.pop(task_id, None)
                    self._count("duplicates")
            active = (task_id, run) in self.active
            if self.claimed.get(task_id) == run and not active:
                # Settling or queued here but answered elsewhere: the dispatcher will skip it.
                self.claimed.pop(task_id, None)
            if active:
                res = decode_result(self.results.get(task_id))
                if res is not None and res.cancelled:
                    self._out.interrupts.append((task_id, run, res.error or "cancelled"))

    # -- answers and the queue --------------------------------------------------------------
    def _cleanup_done(self, task_id: str, desc: TaskDescriptor) -> None:
        """An answered task still queued: its writer, or else the ring owner (or the pinned peer),
        sees that it leaves the queue.

        It happens when the writer crashed or restarted before dequeuing, and when the entry came
        back after its dequeue (an enqueue retried with the same run token races the removal, and
        the queue's add wins).
        """
        if (task_id, desc.run) in self._dequeuing:
            return  # ours, leaving once a majority holds the answer (every re-claim pass meets these)
        reg = self.results.peek(task_id)
        mine = reg is not None and reg.replica == self.replica
        if mine or self._ring_owner(task_id) == self.self_id or desc.pin == self.self_id:
            self._dequeue_answered(task_id, desc)

    def _dequeue_answered(self, task_id: str, desc: TaskDescriptor) -> None:
        """Remove an answered task from the queue - never before a majority holds its answer.

        The writer's own majority watch ensures that while the writer lives, so its tasks are left
        to it. An answer whose writer crashed (or restarted, or left) before dequeuing may live on
        this peer alone - it came straight from the writer, who is gone - so this peer adopts it:
        it writes the same answer again as its own update and dequeues once a majority holds that.
        """
        if (task_id, desc.run) in self._dequeuing:
            return  # being dequeued, once a majority holds the answer
        reg = self.results.peek(task_id)
        writer = (reg.replica if reg is not None else None) or ""
        if writer == self.replica:
            self._remove_from_queue(task_id, desc.run)  # ours, and our majority watch saw it replicated
            return
        if self._replica_live(writer):
            return  # the writer removes it once a majority holds the answer
        wire = reg.value if reg is not None else None
        if not isinstance(wire, bytes):
            return
        self._put(RESULTS, task_id, wire)
        self._count("adopted")
        if self.observed:
            self._emit(ev.ADOPTED, task_id, _node_of(writer), run=desc.run)
        self._watch_majority(task_id, desc.run)

    def majority_held(self, now: float, task_id: str, run: str, seq: int = 0) -> None:
        """A majority holds this peer's answer for ``run``: the task may leave the queue. ``seq``:
        the batch of our results stream that carried it (0: not known)."""
        self._now = now
        self._dequeuing.discard((task_id, run))
        stolen = self.stolen.get(task_id)
        if seq and stolen is not None and stolen[0] == run:
            self._stolen_answer_seq[task_id] = seq
        if self.result_run(task_id) == run:
            self._remove_from_queue(task_id, run)

    def _remove_from_queue(self, task_id: str, run: str) -> None:
        desc = self.descriptor(task_id)
        if desc is not None and desc.run == run:
            self._remove(QUEUE, task_id)
        if run in self.intents:
            self._remove(INTENTS, run)

    def write_cancel(self, now: float, task_id: str, desc: TaskDescriptor, reason: str) -> None:
        """Answer ``desc``'s run as cancelled (and stop it if it runs here)."""
        self._now = now
        result = OpResult.failure(desc.run, reason, by=self.self_id, attempts=1, cancelled=True, op=desc.op)
        self._put(RESULTS, task_id, pack(result.to_wire()))
        self._out.interrupts.append((task_id, desc.run, reason))
        if self.claimed.get(task_id) == desc.run:
            self.claimed.pop(task_id, None)
        if self.role == "worker":
            self._watch_majority(task_id, desc.run)

    def cancel(self, now: float, task_id: str, reason: str) -> str:
        """Cancel ``task_id``'s current run: ``"cancelled"``, ``"done"`` or ``"unknown"``."""
        desc = self.descriptor(task_id)
        if desc is None:
            return "done" if task_id in self.results else "unknown"
        if self.result_run(task_id) == desc.run:
            return "done"
        self.write_cancel(now, task_id, desc, reason)
        return "cancelled"

    def expire(self, now: float, task_id: str, desc: TaskDescriptor, reason: str) -> None:
        """``desc``'s deadline passed before (or while) it ran: drop the claim, answer it cancelled."""
        self._now = now
        self.claimed.pop(task_id, None)
        if self.result_run(task_id) != desc.run:
            self.write_cancel(now, task_id, desc, reason)

    def ack(self, task_id: str) -> None:
        """Acknowledge (remove) a task's answer, and its run from the queue.

        The answered run may still be queued somewhere (its dequeue waits for a majority): it leaves
        with its answer, or a peer that sees the queue entry but no answer would run it again.
        """
        run = self.result_run(task_id)
        if run is not None:
            self._remove_from_queue(task_id, run)
        self._remove(RESULTS, task_id)
        self._written.pop(task_id, None)

    # -- runs -------------------------------------------------------------------------------
    def take_run(self) -> tuple[str, TaskDescriptor] | None:
        """The next claimed run to start (oldest first), or None when the backlog is empty."""
        while self.backlog:
            task_id, desc = self.backlog.popleft()
            if self.claimed.get(task_id) == desc.run:
                return task_id, desc
        return None

    def op_missing(self, task_id: str, run: str) -> None:
        """We lack the run's op (another peer may have it): stand by instead of failing it."""
        self.claimed.pop(task_id, None)
        self.stolen.pop(task_id, None)
        self._stolen_answer_seq.pop(task_id, None)
        self.standby[task_id] = run

    def run_started(self, now: float, task_id: str, desc: TaskDescriptor, mode: str) -> None:
        """A run starts here (``mode`` ``"inline"`` runs on the loop and finishes in the same step)."""
        self._now = now
        if mode != "inline":
            self.active.add((task_id, desc.run))
        if self.observed:
            self._run_started[(task_id, desc.run)] = now
            if len(self._run_started) > 100_000:  # runs that never completed here (deferred, cancelled)
                self._run_started.pop(next(iter(self._run_started)))
            self._emit(ev.STARTED, task_id, self.self_id, run=desc.run, op=desc.op, mode=mode)

    def run_ended(self, task_id: str, run: str) -> None:
        """A non-inline run stopped occupying this peer (whatever its outcome)."""
        self.active.discard((task_id, run))

    def run_deferred(self, now: float, task_id: str, run: str, retry_after: float) -> None:
        """The op cannot run this task here yet: release the claim, no result, no attempt used."""
        self._now = now
        if self.claimed.get(task_id) == run:
            self.claimed.pop(task_id, None)
        self.stolen.pop(task_id, None)  # granted to us: left out of `held`, so its owner takes it back
        self._stolen_answer_seq.pop(task_id, None)
        self.deferred[task_id] = (run, now + retry_after)

    def _is_failover(self, task_id: str) -> bool:
        if self._all_workers <= self.workers:
            return False  # every worker we know of is live: so is the task's primary
        primary = self._ring_all.owner(task_id)
        return primary is not None and primary != self.self_id and primary not in self.workers

    def run_finished(self, now: float, task_id: str, desc: TaskDescriptor, wire: bytes, ok: bool,
                     result: OpResult) -> None:
        """A run ended here with ``result``; ``wire`` is the answer as it travels (a failure when
        the value could not travel: then ``ok`` is False)."""
        self._now = now
        if self.closed:
            return
        if self.observed:
            t0 = self._run_started.pop((task_id, desc.run), None)
            detail: dict[str, Any] = {"run": desc.run, "attempts": result.attempts,
                                      "duration": None if t0 is None else now - t0}
            if not ok:
                detail["error"] = result.error if not result.ok else "result cannot travel"
            self._emit(ev.FINISHED if ok else ev.FAILED, task_id, self.self_id, **detail)
        self.claimed.pop(task_id, None)
        stolen = self.stolen.get(task_id)
        if stolen is not None and stolen[0] == desc.run:
            self.stolen[task_id] = (stolen[0], stolen[1], now)
        self._count("executions")
        if not ok:
            self._count("failures")
        if desc.pin is None and self._is_failover(task_id):
            self._count("failovers")
        if self.result_run(task_id) == desc.run:
            current = decode_result(self.results.get(task_id))
            if current is None or not current.cancelled:
                self._count("duplicates")  # a late duplicate: the answer was already on the board
            self._dequeue_answered(task_id, desc)
            return
        self._put(RESULTS, task_id, wire)
        self._result_runs[task_id] = (wire, desc.run)
        self._executed[task_id] = desc.run
        if len(self._executed) > 100_000:
            self._executed.popitem(last=False)
        if self.config.result_ttl is not None:
            self._written[task_id] = (desc.run, now)
        # The task leaves the queue only once a majority holds its answer: the two are on
        # different boards, and crashes between them must never lose the task.
        self._watch_majority(task_id, desc.run)

    # -- work stealing (see warpmesh.warp.steal) --------------------------------------------
    def backlog_seconds(self) -> float:
        """Estimated seconds of claimed, unstarted work here."""
        # O(1): the backlog's length times the mean cost of the op at its back (the end grants are
        # taken from). Mixed workloads make it rough, which is all it needs.
        if not self.backlog:
            return 0.0
        return len(self.backlog) * self.costs.estimate(self.backlog[-1][1].op)

    def _send_steal_request(self, owner: str, want: int) -> None:
        self._steal_seq += 1
        self._steal_sent[owner] = self._steal_seq
        held = [t for t, (_, o, _) in self.stolen.items() if o == owner]
        self.steal_stats["requests_out"] += 1
        self._out.frames.append((owner, encode_request(self._steal_seq, want, held, self.incarnation)))

    def _steal_target(self, now: float) -> str | None:
        peers = sorted(p for p in self.workers if p != self.self_id)
        if not peers:
            return None
        fresh = [(b, p) for p, (b, at) in self._backlogs.items()
                 if p in peers and now - at < 1.0 and b >= self.config.steal_min_backlog]
        if fresh:
            return max(fresh)[1]
        return self.rng.choice(peers)  # nobody reported a backlog lately: ask around

    def steal_attempt(self, now: float) -> bool:
        """This peer is idle while tasks are queued: ask a peer for work unless a request is out.

        Returns False when there is nobody to ask. The runtime waits :attr:`steal_backoff` before
        the next attempt.
        """
        self._now = now
        pending = self._steal_pending
        if pending is None or now - pending[2] >= self.config.steal_timeout:
            if pending is not None:
                self._steal_pending = None
                self.steal_backoff = min(self.steal_backoff * 2, 1.0)
            owner = self._steal_target(now)
            if owner is None:
                return False
            self._send_steal_request(owner, want=1_000)
            self._steal_pending = (owner, self._steal_seq, now)
        return True

    def on_steal(self, now: float, sender: str, data: bytes) -> None:
        """A steal frame arrived from ``sender``."""
        self._now = now
        try:
            msg = decode_steal(data)
        except ValueError as err:
            self.steal_stats["bad_frames"] += 1
            if self._log is not None:
                self._log.debug("%s: refused a steal message from %s: %s", self.self_id, sender, err)
            return
        if self.closed or self.role != "worker":
            return
        if isinstance(msg, StealRequest):
            self._on_steal_request(now, sender, msg)
        else:
            self._on_steal_grant(now, sender, msg)

    def _on_steal_request(self, now: float, thief: str, req: StealRequest) -> None:
        known = self._thieves.get(thief)
        if known is not None and (req.incarnation, req.seq) <= known:
            return  # duplicated or overtaken by a newer request
        # A restarted thief: whatever its old incarnation held is ours again.
        restarted = known is not None and req.incarnation != known[0]
        self._thieves[thief] = (req.incarnation, req.seq)
        self.steal_stats["requests_in"] += 1
        for task_id, (_, th, seq) in list(self.delegated.items()):
            if th == thief and (restarted or (seq < req.seq and task_id not in req.held)):
                # Granted under an earlier request and never accepted (the grant was lost or late).
                del self.delegated[task_id]
                self.steal_stats["taken_back"] += 1
                self.consider(now, (task_id,))
        granted: list[tuple[str, bytes]] = []
        if req.want > 0 and thief in self.workers and self.config.steal:
            granted = self._grant(thief, req.seq, req.want)
        self._out.frames.append((thief, encode_grant(req.seq, granted, self.backlog_seconds())))

    def _grant(self, thief: str, seq: int, want: int) -> list[tuple[str, bytes]]:
        backlog = self.backlog_seconds()
        if backlog < self.config.steal_min_backlog:
            return []
        target, moved, size = backlog / 2, 0.0, 0
        granted: list[tuple[str, bytes]] = []
        kept: list[tuple[str, TaskDescriptor]] = []
        scanned = 0
        # Only the backlog - claimed, not started - is ever granted: a running task is not in it.
        while self.backlog and len(granted) < want and moved < target and scanned < want + 1_000:
            task_id, desc = self.backlog.pop()
            scanned += 1
            if self.claimed.get(task_id) != desc.run:
                continue  # a stale entry: the dispatcher would skip it too
            reg = self.queue.get(task_id)
            raw = reg.value if reg is not None else None
            eligible = self.eligible(desc.op)
            if (desc.pin is not None or task_id in self.stolen or not isinstance(raw, bytes)
                    or (eligible is not None and thief not in eligible)):
                kept.append((task_id, desc))  # pinned, stolen already, or the thief lacks the op
                continue
            if granted and size + len(raw) > MAX_GRANT_BYTES:
                kept.append((task_id, desc))
                break
            granted.append((task_id, raw))
            size += len(raw)
            moved += self.costs.estimate(desc.op)
            self.claimed.pop(task_id, None)
            self.delegated[task_id] = (desc.run, thief, seq)
            if self.observed:
                self._emit(ev.STOLEN, task_id, thief, run=desc.run, direction="out")
        self.backlog.extend(reversed(kept))
        self.steal_stats["tasks_out"] += len(granted)
        return granted

    def _on_steal_grant(self, now: float, owner: str, grant: StealGrant) -> None:
        self._backlogs[owner] = (grant.backlog, now)
        pending = self._steal_pending
        current = pending is not None and pending[0] == owner and pending[1] == grant.seq \
            and self._steal_sent.get(owner) == grant.seq
        if not current:
            fresh = [t for t, _ in grant.tasks if self.stolen.get(t, ("", ""))[1] != owner]
            if fresh:
                # A late grant (we gave up waiting, or asked again since): not run here. Tell the
                # owner at once, with a request that does not list them, so it takes them back.
                self.steal_stats["late_grants"] += 1
                self._send_steal_request(owner, want=0)
            return
        self._steal_pending = None
        self.steal_stats["grants_in"] += 1
        if not grant.tasks:
            self.steal_backoff = min(self.steal_backoff * 2, 1.0)
            return
        self.steal_backoff = self.config.steal_interval
        if self.backlog_seconds() >= self.config.steal_min_backlog:
            # We asked while idle, and work of our own arrived meanwhile (a request goes out
            # whenever we idle while anything is queued, e.g. just before a new batch reaches us):
            # taking half of the owner's backlog now would only unbalance the two, and the owner
            # would soon steal it back. Handed back as a late grant is: at once, by a request that
            # does not list them.
            self.steal_stats["declined_grants"] += 1
            self._send_steal_request(owner, want=0)
            return
        for task_id, raw in grant.tasks:
            try:
                desc = TaskDescriptor.from_wire(unpack(raw))
            except (FrameUndecodable, ValueError):
                continue  # left out of `held`: the owner takes it back
            if self.result_run(task_id) == desc.run:
                continue  # answered meanwhile: the owner takes it back and finds it answered
            self.stolen[task_id] = (desc.run, owner, None)
            if self.claimed.get(task_id) == desc.run:
                continue
            self.claimed[task_id] = desc.run
            self._runnable(task_id, desc)
            self._count("stolen")
            self.steal_stats["tasks_in"] += 1
            if self.observed:
                self._emit(ev.STOLEN, task_id, owner, run=desc.run, direction="in")
        self._out.runnable = True

    def results_confirmed(self, confirmed: Mapping[str, int]) -> None:
        """How far each peer has confirmed (acknowledged) our results stream's batches."""
        self._results_confirmed = dict(confirmed)

    def _prune_steal_bookkeeping(self, now: float) -> None:
        queued = self.queue
        for task_id, (run, _, _) in list(self.delegated.items()):
            if task_id not in queued or self.result_run(task_id) == run:
                del self.delegated[task_id]  # answered (or gone): nothing left to take back
        # A finished stolen task stays in `held` for a while: its owner must not take it back
        # before the answer has reached it.
        grace = max(5.0, 10 * self.config.steal_timeout)
        for task_id, (run, owner, finished) in list(self.stolen.items()):
            if finished is None:
                if self.result_run(task_id) == run and self.claimed.get(task_id) != run:
                    self.stolen[task_id] = (run, owner, now)  # answered elsewhere; never ran here
            elif now - finished >= grace and (task_id not in queued or self.result_run(task_id) == run):
                if (task_id, run) in self._dequeuing:
                    continue  # our answer is not on a majority yet: the owner may well lack it
                seq = self._stolen_answer_seq.get(task_id, 0)
                if seq and owner in self._all_workers and self._results_confirmed.get(owner, 0) < seq:
                    # Out of `held`, the task would be taken back by its owner, who would run it
                    # again if our answer has not reached it (a majority without the owner).
                    continue
                del self.stolen[task_id]
                self._stolen_answer_seq.pop(task_id, None)
        for peer, (_, at) in list(self._backlogs.items()):
            if now - at > 10.0:
                del self._backlogs[peer]
        for thief in [t for t in self._thieves if t not in self._all_workers]:
            del self._thieves[thief]

    # -- housekeeping -----------------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        """The periodic pass (after a membership refresh): prune, re-claim, expire results."""
        self._now = now
        self._forget_lost_members(now)
        queued = self.queue
        for task_id in [t for t in self.claimed if t not in queued]:
            stolen = self.stolen.get(task_id)
            if stolen is not None and stolen[2] is None:
                continue  # granted to us before our replica of the queue has the task
            if not any(t == task_id for t, _ in self.active):
                self.claimed.pop(task_id, None)
        self._prune_steal_bookkeeping(now)
        for task_id in [t for t in self.standby if t not in queued]:
            self.standby.pop(task_id, None)
        for task_id in [t for t in self.deferred if t not in queued]:
            self.deferred.pop(task_id, None)
        for cache in (self._descs, self._result_runs, self._owners):
            for task_id in [t for t in cache if t not in queued]:
                del cache[task_id]
        self.claim_all(now)
        ttl = self.config.result_ttl
        if ttl is not None:
            for task_id, (run, at) in list(self._written.items()):
                if now - at >= ttl:
                    del self._written[task_id]
                    if self.result_run(task_id) == run:
                        self._remove(RESULTS, task_id)

    def queued(self) -> Iterator[tuple[str, TaskDescriptor]]:
        """Every task on the queue with its descriptor."""
        for task_id in list(self.queue.keys()):
            desc = self.descriptor(task_id)
            if desc is not None:
                yield task_id, desc


def _same_key(a: tuple[Any, ...] | None, b: tuple[Any, ...]) -> bool:
    """Equal pass keys; the ring is compared by identity (rings are shared per worker set)."""
    return a is not None and a[0] is b[0] and a[1:] == b[1:]
