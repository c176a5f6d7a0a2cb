"""``RaftCore``: the Raft protocol as a pure, deterministic state machine (etcd-io/raft's design).

Inputs are method calls: :meth:`step` (a decoded message), :meth:`tick` (time passed), and the API
(:meth:`propose`, :meth:`read_index`, :meth:`change_membership`, :meth:`transfer_leadership`,
:meth:`publish_snapshot` ...). Every input takes ``now`` (seconds on the host's clock); randomness
comes from the ``random.Random`` passed in. Nothing here does I/O.

Outputs accumulate until the host calls :meth:`ready`, which returns a :class:`Ready` batch. The host
must then, in order:

1. send ``ready.early_messages`` (leader replication; safe before the local write, thesis §10.2.1),
2. persist ``ready.snapshot``, ``ready.log_reset``/``compact_through``, ``ready.entries`` and
   ``ready.hard_state`` **durably and atomically** (one transaction, one fsync: group commit),
3. send ``ready.messages`` (votes, acknowledgements: they promise what was just persisted),
4. apply ``ready.install`` then ``ready.committed`` to the state machine, deliver
   ``ready.completions``,
5. call :meth:`advance` with the same Ready.

Everything that happens between :meth:`ready` and :meth:`advance` is batched into the next Ready, so
a busy node writes many proposals per fsync and many entries per AppendEntries.

Implemented (paper/dissertation sections cited at each branch): leader election with PreVote (§9.6),
leader stickiness and CheckQuorum (§4.2.3, §6.2), the no-op on election and the Figure-8 commit rule
(§5.4.2), pipelined replication with a bounded in-flight window and byte-bounded batches, fast
backup by conflict term, proposal batching, snapshots with a trailing log and chunked, resumable
InstallSnapshot (§7), joint consensus, learners with catch-up before promotion and leader
self-removal (§4), readIndex reads that start a heartbeat round at once and opt-in lease reads
(§6.4), leadership transfer (§3.10), and proposals from any node, forwarded to the leader and
retried under the same dedup key until they commit (§6.3).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import (
    Busy,
    CatchUpTimeout,
    LeadershipLost,
    MembershipChangeInProgress,
    NotLeader,
    PayloadTooLarge,
    RaftError,
    TransferFailed,
)
from warpmesh.raft.log import CommittedTruncation, RaftLog
from warpmesh.raft.membership import Membership, VoteOutcome
from warpmesh.raft.messages import (
    FWD_BUSY,
    FWD_COMMITTED,
    FWD_NOT_LEADER,
    AppendEntries,
    AppendResponse,
    Forward,
    ForwardResponse,
    Heartbeat,
    HeartbeatResponse,
    Message,
    ReadRequest,
    ReadResponse,
    SnapshotChunk,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from warpmesh.raft.progress import Progress, ProgressState
from warpmesh.raft.types import (
    MAX_TERM,
    DedupKey,
    Entry,
    EntryKind,
    HardState,
    NodeId,
    Role,
    Snapshot,
    SnapshotMeta,
)

_INF = float("inf")
_new_entry = tuple.__new__


class Completion(NamedTuple):
    """The outcome of an API call. ``kind`` is "propose", "read", "membership" or "transfer"."""

    kind: str
    id: Any
    value: Any = None
    error: RaftError | None = None


@dataclass(slots=True)
class Ready:
    """One batch of work for the host; see the module docstring for the order of operations."""

    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    log_reset: bool = False
    compact_through: int = 0
    early_messages: list[Message] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    install: Snapshot | None = None
    committed: list[Entry] = field(default_factory=list)
    completions: list[Completion] = field(default_factory=list)

    @property
    def must_persist(self) -> bool:
        return bool(self.hard_state or self.entries or self.snapshot or self.log_reset or self.compact_through)


class _Pending:
    """A proposal made on this node, retried under its key until it commits or is abandoned."""

    __slots__ = ("data", "key", "known_index", "retry_at", "sent_to")

    def __init__(self, data: bytes, key: DedupKey) -> None:
        self.data = data
        self.key = key
        self.sent_to: NodeId | None = None
        self.retry_at = 0.0
        #: Index the leader reported it already committed at (ForwardResponse COMMITTED).
        self.known_index = 0


class _Read:
    """A read on the leader waiting for its heartbeat round (``origin`` None = local)."""

    __slots__ = ("id", "index", "origin", "round")

    def __init__(self, rid: int, index: int, rnd: int, origin: NodeId | None) -> None:
        self.id = rid
        self.index = index
        self.round = rnd
        self.origin = origin


@dataclass(slots=True)
class _Transfer:
    req_id: Any
    target: NodeId
    deadline: float
    start_term: int
    timeout_now_sent: bool = False


@dataclass(slots=True)
class _ConfChange:
    req_id: Any
    target: Membership
    phase: str  # "learners" | "catchup" | "joint" | "final"
    entry_index: int
    deadline: float = _INF


@dataclass(slots=True)
class _SnapRx:
    index: int
    snap_term: int
    size: int
    membership: Membership
    buf: bytearray
    leader_term: int


class RaftCore:
    """One Raft peer's protocol state. See the module docstring for the host contract."""

    def __init__(
        self,
        node_id: NodeId,
        *,
        bootstrap: Membership,
        now: float,
        rng: random.Random,
        config: RaftConfig | None = None,
        hard_state: HardState | None = None,
        entries: list[Entry] | None = None,
        snapshot: Snapshot | None = None,
        client_id: str | None = None,
    ) -> None:
        self.id = node_id
        self.cfg = config or RaftConfig()
        self.rng = rng
        self.now = now
        hard_state = hard_state or HardState()
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.snapshot = snapshot
        si, st = (snapshot.index, snapshot.term) if snapshot else (0, 0)
        ents = [e for e in (entries or ()) if e.index > si - self.cfg.trailing_entries - 1]
        self.log = RaftLog(si, st, ents, hard_state.commit)
        self.base_membership = snapshot.meta.membership if snapshot else bootstrap
        #: (index, membership) of every CONFIG entry above the snapshot, in log order.
        self.config_entries: list[tuple[int, Membership]] = []
        for e in self.log.entries:
            if e.kind == EntryKind.CONFIG and e.index > si:
                self.config_entries.append((e.index, Membership.from_bytes(e.data)))
        self.membership = self._latest_membership()
        self.role = Role.FOLLOWER
        self.leader: NodeId | None = None
        self.leader_contact = -_INF
        #: No vote is granted until this time: a restarted node may have been a follower that
        #: promised (by stickiness) not to vote for anyone else yet, which lease reads rely on.
        self.quiet_until = now + self.cfg.election_timeout_min
        self.election_deadline = _INF
        self.heartbeat_deadline = _INF
        self.check_quorum_deadline = _INF
        self.votes: dict[NodeId, bool] = {}
        self.election_round = 0
        self.prs: dict[NodeId, Progress] = {}
        #: Removed nodes still being told about their removal: node -> index of that config.
        self.retiring: dict[NodeId, int] = {}
        self.noop_index = 0
        self.uncommitted_bytes = 0
        self.uncommitted_keys: dict[tuple[str, int], int] = {}
        self.recent_committed: OrderedDict[tuple[str, int], int] = OrderedDict()
        # Reads.
        self.round = 0
        self.round_times: dict[int, float] = {}
        self.reads: deque[_Read] = deque()
        self.reads_waiting_noop: list[_Read] = []
        self.need_round = False
        #: Reads issued on this node but confirmed by the leader: id -> (sent_to, retry_at).
        self.remote_reads: dict[int, list[Any]] = {}
        # Proposals.
        self.client_id = client_id or f"{node_id}/{rng.getrandbits(64):016x}"
        self.next_seq = 1
        self.pending: dict[tuple[str, int], _Pending] = {}
        self.own_pending: OrderedDict[int, None] = OrderedDict()
        self.retry_heap: list[tuple[float, tuple[str, int]]] = []
        self.forward_queue: list[tuple[str, int]] = []
        self.transfer: _Transfer | None = None
        self.conf_change: _ConfChange | None = None
        self.snap_rx: _SnapRx | None = None
        # Outputs.
        self._msgs: list[Message] = []
        self._early: list[Message] = []
        self._completions: list[Completion] = []
        self._hs_dirty = False
        self._snapshot_out: Snapshot | None = None
        self._install_out: Snapshot | None = None
        self._log_reset = False
        self._compact_through = 0
        self._read_out: dict[NodeId, list[tuple[int, int]]] = {}
        self._read_req_out: dict[NodeId, list[int]] = {}
        #: Dedup keys known committed at an index (from the leader) but not yet applied here.
        self.known: dict[tuple[str, int], int] = {}
        #: Counters: refused frames by gate, elections, step-downs by reason, ...
        self.stats: Counter[str] = Counter()
        self.last_stepdown_reason = ""
        self._hs_last = HardState(self.term, self.vote, self.log.commit)
        self._refresh_role()
        if self.is_voter():
            self._reset_election_timer()

    # =========================================================================================
    # Introspection
    # =========================================================================================
    def is_voter(self, node: NodeId | None = None) -> bool:
        return self.membership.is_voter(node or self.id)

    @property
    def commit(self) -> int:
        return self.log.commit

    @property
    def is_leader(self) -> bool:
        return self.role == Role.LEADER

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.commit)

    def next_deadline(self) -> float:
        """The earliest time :meth:`tick` has something to do (inf if none)."""
        if self.role != Role.LEADER:
            d = self.election_deadline
        else:
            d = self.heartbeat_deadline
            if self.check_quorum_deadline < d:
                d = self.check_quorum_deadline
        if self.transfer is not None:
            d = min(d, self.transfer.deadline)
        if self.conf_change is not None:
            d = min(d, self.conf_change.deadline)
        if self.retry_heap:
            d = min(d, self.retry_heap[0][0])
        if self.remote_reads:
            d = min(d, min(st[1] for st in self.remote_reads.values()))
        return d

    # =========================================================================================
    # Ready / advance
    # =========================================================================================
    def ready(self) -> Ready | None:
        """Collect everything to persist, send, apply and report since the last call."""
        if self.role == Role.LEADER:
            self._flush_leader()
        if self.forward_queue:
            self._flush_forwards()
        if self._read_out or self._read_req_out:
            self._flush_read_responses()
        log = self.log
        if not (self._msgs or self._early or self._completions or self._hs_dirty
                or self._snapshot_out is not None or self._install_out is not None
                or self._compact_through or log.unstable <= log.last_index()
                or log.applied < log.commit
                or self._hs_last[0] != self.term or self._hs_last[1] != self.vote):
            return None
        rd = Ready()
        if self._snapshot_out is not None:
            rd.snapshot = self._snapshot_out
            rd.log_reset = self._log_reset
            self._snapshot_out = None
            self._log_reset = False
        if self._compact_through:
            rd.compact_through = self._compact_through
            self._compact_through = 0
        rd.entries = log.take_unstable()
        last = self._hs_last
        if (self._hs_dirty or last[0] != self.term or last[1] != self.vote
                or (last[2] != log.commit and (rd.entries or rd.snapshot is not None
                                               or rd.compact_through))):
            # The commit index is only a hint (a restarted node relearns it from the leader, and
            # load clamps it to the log): it rides along with a write that happens anyway, never
            # costs an fsync of its own. A commit-only write used to sit between a leader's commit
            # and its reply to the client, and stalled followers' next append behind it.
            rd.hard_state = self._hs_last = HardState(self.term, self.vote, log.commit)
            self._hs_dirty = False
        if self._install_out is not None:
            rd.install = self._install_out
            self._install_out = None
        if log.applied < log.commit:
            rd.committed = self._take_committed(rd.install is not None)
        rd.early_messages, self._early = self._early, []
        rd.messages, self._msgs = self._msgs, []
        rd.completions, self._completions = self._completions, []
        if not (rd.must_persist or rd.early_messages or rd.messages or rd.install or rd.committed
                or rd.completions):
            return None
        return rd

    def _take_committed(self, installed: bool) -> list[Entry]:
        """Hand out the next committed entries (marking them applied) and resolve their proposals."""
        log = self.log
        hi = min(log.commit, log.applied + self.cfg.max_committed_per_ready)
        committed = log.slice(log.applied + 1, hi + 1)
        log.applied = hi
        removed_check = False
        pending = self.pending
        for e in committed:
            if e.client is not None:
                if pending:
                    p = pending.pop((e.client, e.seq), None)
                    if p is not None:
                        self._resolve_pending(p, e.index)
            elif e.kind == EntryKind.CONFIG:
                removed_check = True
        if (removed_check or installed) and self.pending:
            self._fail_pending_if_removed()
        if self.known:
            for k, idx in list(self.known.items()):
                if idx <= hi:
                    del self.known[k]
                    p = self.pending.pop(k, None)
                    if p is not None:
                        self._resolve_pending(p, idx)
        return committed

    def take_committed(self) -> tuple[list[Entry], list[Completion]]:
        """Committed entries not yet handed out, and the completions so far, for a host whose
        durable write is still in flight: a leader's entry commits once a majority *of followers*
        holds it durably (thesis §10.2.1; the leader counts itself only once its own write is
        done), and nothing about applying it or answering its proposer depends on that write.
        A host calls this between :meth:`ready` and :meth:`advance`; the next Ready carries on
        from here. Entries come in order and each exactly once across both calls."""
        log = self.log
        committed = self._take_committed(False) if log.applied < log.commit else []
        done, self._completions = self._completions, []
        return committed, done

    def take_early(self) -> list[Message]:
        """Only the messages that need no durable write first (a leader's appends and heartbeats,
        forwards, read traffic). A host with a write in flight calls this to keep replication going
        meanwhile; everything else waits for the next :meth:`ready`."""
        if self.role == Role.LEADER:
            self._flush_leader()
        if self.forward_queue:
            self._flush_forwards()
        if self._read_out or self._read_req_out:
            self._flush_read_responses()
        out, self._early = self._early, []
        return out

    def advance(self, rd: Ready, now: float | None = None) -> None:
        """The host finished ``rd``: its writes are durable. May make more work (a leader commit)."""
        if now is not None:
            self.now = now
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == Role.LEADER:
                self._maybe_commit()

    # =========================================================================================
    # Time
    # =========================================================================================
    def tick(self, now: float) -> None:
        """Run every timer that is due at ``now``."""
        self.now = now
        if self.role == Role.LEADER:
            if now >= self.check_quorum_deadline:
                self.check_quorum_deadline = now + self.cfg.election_timeout_min
                if not self._check_quorum():
                    # CheckQuorum (§6.2): a leader that cannot reach a majority steps down, at the
                    # same term, so its stale reads/lease end and clients look elsewhere.
                    self._become_follower(self.term, None, reason="lost_quorum")
            if self.role == Role.LEADER and now >= self.heartbeat_deadline:
                self.heartbeat_deadline = now + self.cfg.heartbeat_interval
                self._broadcast_heartbeat()
                for pr in self.prs.values():
                    if pr.state == ProgressState.SNAPSHOT:
                        pr.snap_stall += 1
                        if pr.snap_stall >= 4:
                            # Resume a stalled transfer from the acknowledged offset (never from 0).
                            pr.snap_stall = 0
                            pr.snap_sent = pr.snap_acked
                            pr.snap_rewound = -1
                            pr.probe_sent = False
        elif now >= self.election_deadline:
            if self._can_campaign():
                self.stats["election_timeouts"] += 1
                self._campaign(pre=self.cfg.pre_vote)
            else:
                self.election_deadline = _INF
        t = self.transfer
        if t is not None and now >= t.deadline:
            self._finish_transfer(TransferFailed("timed out"))
        cc = self.conf_change
        if cc is not None and now >= cc.deadline:
            self.conf_change = None
            self._complete("membership", cc.req_id, error=CatchUpTimeout(
                "the new voter(s) did not catch up in time; they stay learners"))
        while self.retry_heap and self.retry_heap[0][0] <= now:
            _, key = heapq.heappop(self.retry_heap)
            p = self.pending.get(key)
            if p is not None and p.retry_at <= now:
                self._dispatch_pending(p)
        for rid, st in list(self.remote_reads.items()):
            if st[1] <= now:
                self._send_remote_read(rid)

    # =========================================================================================
    # API
    # =========================================================================================
    def propose(self, data: bytes, now: float, key: DedupKey | None = None) -> DedupKey:
        """Propose a command. Returns its dedup key; a "propose" completion with ``(index, term)``
        follows when an entry with that key commits. Works on any node (followers forward)."""
        self.now = now
        if len(data) > self.cfg.max_entry_bytes:
            raise PayloadTooLarge(f"command of {len(data)} bytes exceeds max_entry_bytes="
                                  f"{self.cfg.max_entry_bytes}")
        if key is not None:
            k = (key.client, key.seq)
            if k in self.pending:
                return self.pending[k].key
        if self._removed():
            raise NotLeader(None, "this node was removed from the cluster; propose through a member")
        if len(self.pending) >= self.cfg.max_pending_proposals:
            raise Busy(f"{len(self.pending)} proposals already pending on this node")
        if self.role == Role.LEADER and self.uncommitted_bytes > self.cfg.max_uncommitted_bytes:
            raise Busy(f"{self.uncommitted_bytes} bytes appended but not yet committed")
        own = key is None
        if key is None:
            # Sequence numbers are assigned only to accepted proposals: a gap would raise the
            # floor past a request that never existed and expire the session.
            seq = self.next_seq
            self.next_seq += 1
            key = DedupKey(self.client_id, seq, next(iter(self.own_pending), seq))
            k = (key.client, seq)
        p = _Pending(bytes(data), key)
        self.pending[k] = p
        if own:
            self.own_pending[key.seq] = None
        self._dispatch_pending(p)
        return key

    def abandon_proposal(self, key: DedupKey) -> None:
        """Stop tracking a proposal (the caller gave up; it may still commit)."""
        p = self.pending.pop((key.client, key.seq), None)
        self.known.pop((key.client, key.seq), None)
        if p is not None and key.client == self.client_id:
            self._rotate_client()

    def _rotate_client(self) -> None:
        """Start a fresh dedup session for this node's own proposals.

        A request whose outcome is unknown (abandoned, or failed because this node was removed) may
        still commit later, so the session's floor must never move past it; rather than holding
        the floor forever, later proposals use a new client id (a new session starting at 1).
        """
        self.client_id = f"{self.id}/{self.rng.getrandbits(64):016x}"
        self.next_seq = 1
        self.own_pending = OrderedDict()

    def read_index(self, rid: int, now: float) -> None:
        """Request a linearizable read index (§6.4). A "read" completion with the index follows;
        the reader must wait until its state machine has applied that index, then read locally."""
        self.now = now
        if len(self.reads) + len(self.remote_reads) >= self.cfg.max_pending_reads:
            self._complete("read", rid, error=Busy("too many reads pending"))
            return
        if self.role == Role.LEADER:
            self._leader_read(rid, None)
        else:
            self.remote_reads[rid] = [None, 0.0]
            self._send_remote_read(rid)

    def abandon_read(self, rid: int) -> None:
        """Forget a read the caller gave up on."""
        self.remote_reads.pop(rid, None)
        for coll in (self.reads, self.reads_waiting_noop):
            for r in list(coll):
                if r.id == rid and r.origin is None:
                    coll.remove(r)

    def change_membership(self, req_id: Any, voters: set[NodeId] | frozenset[NodeId],
                          learners: set[NodeId] | frozenset[NodeId] = frozenset(),
                          now: float | None = None) -> None:
        """Move to ``voters``/``learners``. New voters first join as learners and must catch up
        (§4.2.1); voter changes go through the joint configuration (§4.3). A "membership"
        completion follows when the final configuration commits."""
        if now is not None:
            self.now = now
        target = Membership.of(voters, learners)
        err: RaftError | None = None
        if not target.voters:
            self._complete("membership", req_id, error=MembershipChangeInProgress(
                "a configuration needs at least one voter"))
            return
        if self.role != Role.LEADER:
            err = NotLeader(self.leader)
        elif self.transfer is not None:
            err = MembershipChangeInProgress("a leadership transfer is in flight")
        elif self.conf_change is not None or self.membership.joint or self._config_uncommitted():
            err = MembershipChangeInProgress("another membership change is in flight")
        if err is not None:
            self._complete("membership", req_id, error=err)
            return
        cur = self.membership
        if cur == target:
            self._complete("membership", req_id, value=cur)
            return
        missing = target.voters - cur.members
        if missing:
            step = Membership.of(cur.voters, cur.learners | missing)
            idx = self._append_config(step)
            self.conf_change = _ConfChange(req_id, target, "learners", idx)
        else:
            self.conf_change = _ConfChange(req_id, target, "catchup", 0,
                                           self.now + self.cfg.catchup_timeout_s)
            self._advance_conf_change()

    def transfer_leadership(self, req_id: Any, target: NodeId, now: float) -> None:
        """Hand leadership to ``target`` (§3.10): bring it up to date, then send TimeoutNow."""
        self.now = now
        if self.role != Role.LEADER:
            self._complete("transfer", req_id, error=NotLeader(self.leader))
            return
        if target == self.id:
            self._complete("transfer", req_id, value=self.id)
            return
        if not self.membership.is_voter(target) or target not in self.prs:
            self._complete("transfer", req_id, error=TransferFailed(f"{target!r} is not a voter"))
            return
        if self.conf_change is not None or self._config_uncommitted():
            self._complete("transfer", req_id, error=TransferFailed("a membership change is in flight"))
            return
        if self.transfer is not None:
            self._complete("transfer", req_id, error=TransferFailed("another transfer is in flight"))
            return
        self.transfer = _Transfer(req_id, target, now + self.cfg.transfer_timeout_s, self.term)
        self.stats["transfers_started"] += 1
        self._maybe_send_timeout_now()

    def cancel_transfer(self, now: float) -> None:
        self.now = now
        if self.transfer is not None:
            self._finish_transfer(TransferFailed("cancelled"))

    def publish_snapshot(self, index: int, data: bytes, now: float) -> bool:
        """The application's state through ``index`` (<= what it applied). Compacts the log, keeping
        ``trailing_entries``. Returns False (ignored) if not newer than the current snapshot."""
        self.now = now
        log = self.log
        if index <= log.snap_index:
            return False
        if index > log.applied:
            raise ValueError(f"snapshot index {index} is beyond the applied index {log.applied}")
        term = log.term(index)
        assert term is not None
        snap = Snapshot(SnapshotMeta(index, term, self._membership_at(index)), bytes(data))
        self.snapshot = snap
        self._snapshot_out = snap
        log.snap_index, log.snap_term = index, term
        self.base_membership = snap.meta.membership
        self.config_entries = [(i, m) for i, m in self.config_entries if i > index]
        through = index - self.cfg.trailing_entries
        if through >= log.offset:
            log.compact(through)
            self._compact_through = max(self._compact_through, through)
        self.stats["snapshots_published"] += 1
        return True

    # =========================================================================================
    # Step: one message in
    # =========================================================================================
    def step(self, m: Message, now: float) -> None:
        """Process one validated message from ``m.frm``."""
        self.now = now
        if m.frm == self.id:
            return
        if isinstance(m, (Forward, ForwardResponse, ReadRequest, ReadResponse)):
            self._step_client(m)
            return
        if m.term > self.term:
            if (self.term > 0 and self.log.last_index() > 0
                    and m.term - self.term > self.cfg.max_term_jump) or m.term > MAX_TERM:
                self.stats["refused:term_jump"] += 1
                return
            if isinstance(m, VoteRequest):
                if not m.pre:
                    if not m.transfer and self._in_lease():
                        # Leader stickiness (§4.2.3): while we hear from a live leader, a higher-term
                        # candidate is ignored *without adopting its term*.
                        self.stats["vote_ignored_sticky"] += 1
                        return
                    self._become_follower(m.term, None, reason="higher_term_vote")
            elif isinstance(m, VoteResponse) and m.pre and m.granted:
                pass  # carries the proposed term, which we have not adopted yet
            else:
                leader = m.frm if isinstance(m, (AppendEntries, Heartbeat, SnapshotChunk)) else None
                self._become_follower(m.term, leader, reason="higher_term")
        elif m.term < self.term:
            if isinstance(m, (AppendEntries, Heartbeat, SnapshotChunk)):
                # A stale leader (e.g. partitioned with PreVote/CheckQuorum) learns our term and steps
                # down; without this it could never hear of the newer term.
                self._send(AppendResponse(self.id, m.frm, self.term, 0, True, 0, 0))
            elif isinstance(m, VoteRequest):
                # A stale candidate learns our term (and gives up) at once.
                self._send(VoteResponse(self.id, m.frm, self.term, False, m.pre, m.round))
            self.stats["stale_term"] += 1
            return
        if self.role == Role.LEADER and m.frm in self.prs:
            self.prs[m.frm].recent_active = True
        if isinstance(m, AppendEntries):
            self._on_append(m)
        elif isinstance(m, AppendResponse):
            self._on_append_response(m)
        elif isinstance(m, Heartbeat):
            self._on_heartbeat(m)
        elif isinstance(m, HeartbeatResponse):
            self._on_heartbeat_response(m)
        elif isinstance(m, VoteRequest):
            self._on_vote_request(m)
        elif isinstance(m, VoteResponse):
            self._on_vote_response(m)
        elif isinstance(m, SnapshotChunk):
            self._on_snapshot_chunk(m)
        elif isinstance(m, SnapshotResponse):
            self._on_snapshot_response(m)
        elif isinstance(m, TimeoutNow):
            self._on_timeout_now(m)

    # -- follower side ------------------------------------------------------------------------
    def _accept_leader(self, m: Message) -> bool:
        """Same-term message from a leader: pin it (one leader per term) and reset timers."""
        if self.role == Role.LEADER:
            self.stats["refused:dual_leader"] += 1
            return False
        if self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._become_follower(self.term, m.frm, reason="leader_appeared")
        if self.leader is None:
            self._set_leader(m.frm)
        elif self.leader != m.frm:
            # Only one leader per term exists in honest Raft; a second claimant is a bug or forgery.
            self.stats["refused:forged_leader"] += 1
            return False
        self.leader_contact = self.now
        if self.is_voter():
            self._reset_election_timer()
        return True

    def _on_append(self, m: AppendEntries) -> None:
        if not self._accept_leader(m):
            return
        log = self.log
        try:
            last_new = log.maybe_append(m.prev_index, m.prev_term, m.entries)
        except CommittedTruncation:
            self.stats["refused:committed_conflict"] += 1
            return
        if last_new is None:
            hint_index, hint_term = log.find_conflict_by_term(min(m.prev_index, log.last_index()),
                                                              m.prev_term)
            self._send(AppendResponse(self.id, m.frm, self.term, m.prev_index, True, hint_index, hint_term))
            self.stats["append_rejected"] += 1
            return
        if log.written_from:
            self._after_append(log.written_from)
        log.commit_to(min(m.commit, last_new))
        self._send(AppendResponse(self.id, m.frm, self.term, last_new))

    def _on_heartbeat(self, m: Heartbeat) -> None:
        if not self._accept_leader(m):
            return
        self.log.commit_to(min(m.commit, self.log.last_index()))
        if m.round:
            self._send(HeartbeatResponse(self.id, m.frm, self.term, m.round))

    def _on_snapshot_chunk(self, m: SnapshotChunk) -> None:
        if not self._accept_leader(m):
            return
        if m.index <= self.log.commit:
            # Already covered by our committed log (#1219/#1220): ack as done, install nothing.
            self._send(SnapshotResponse(self.id, m.frm, self.term, m.index, m.size, True))
            return
        if m.size > self.cfg.snapshot_max_bytes:
            self.stats["refused:snapshot_too_large"] += 1
            self.snap_rx = None
            return
        rx = self.snap_rx
        if rx is None or (rx.index, rx.snap_term, rx.size) != (m.index, m.snap_term, m.size):
            if m.offset != 0:
                self._send(SnapshotResponse(self.id, m.frm, self.term, m.index, 0, False))
                return
            rx = self.snap_rx = _SnapRx(m.index, m.snap_term, m.size, m.membership, bytearray(), self.term)
        if m.offset != len(rx.buf):
            # Out of order or duplicate: re-advertise what we hold, so the sender resumes there.
            self._send(SnapshotResponse(self.id, m.frm, self.term, m.index, len(rx.buf), False))
            return
        rx.buf += m.data
        if len(rx.buf) < rx.size:
            self._send(SnapshotResponse(self.id, m.frm, self.term, m.index, len(rx.buf), False))
            return
        self.snap_rx = None
        snap = Snapshot(SnapshotMeta(rx.index, rx.snap_term, rx.membership), bytes(rx.buf))
        self._install_snapshot(snap)
        self._send(SnapshotResponse(self.id, m.frm, self.term, m.index, rx.size, True))

    def _install_snapshot(self, snap: Snapshot) -> None:
        log = self.log
        keep = log.has(snap.index) and log.term(snap.index) == snap.term
        log.restore(snap.index, snap.term)
        self.snapshot = snap
        self.base_membership = snap.meta.membership
        self.config_entries = [(i, m) for i, m in self.config_entries if i > snap.index] if keep else []
        self._snapshot_out = snap
        self._log_reset = not keep
        if keep:
            self._compact_through = max(self._compact_through, snap.index)
        self._install_out = snap
        self.stats["snapshots_installed"] += 1
        self._set_membership(self._latest_membership())

    def _on_vote_request(self, m: VoteRequest) -> None:
        log = self.log
        up_to_date = log.is_up_to_date(m.last_index, m.last_term)
        if m.pre:
            # PreVote (§9.6) changes no state. Granted only if a real vote would be (log up to date,
            # a higher term) and we are not hearing from a live leader (stickiness).
            can_vote = (m.term > self.term or self.vote == m.frm
                        or (self.vote is None and self.leader is None))
            grant = can_vote and up_to_date and (m.transfer or not self._in_lease())
            self._send(VoteResponse(self.id, m.frm, m.term if grant else self.term, grant, True, m.round))
            self.stats["prevote_granted" if grant else "prevote_denied"] += 1
            return
        can_vote = self.vote == m.frm or (self.vote is None and self.leader is None)
        grant = can_vote and up_to_date and (m.transfer or self.now >= self.quiet_until)
        if grant:
            self.vote = m.frm
            self._hs_dirty = True
            self._reset_election_timer()
        self._send(VoteResponse(self.id, m.frm, self.term, grant, False, m.round))
        self.stats["vote_granted" if grant else "vote_denied"] += 1

    def _on_vote_response(self, m: VoteResponse) -> None:
        if m.round != self.election_round:
            return
        if m.pre:
            if self.role != Role.PRE_CANDIDATE:
                return
            if m.granted and m.term != self.term + 1:
                return
        elif self.role != Role.CANDIDATE:
            return
        self.votes[m.frm] = m.granted
        outcome = self.membership.vote_outcome(self.votes)
        if outcome == VoteOutcome.WON:
            if m.pre:
                self._campaign(pre=False)
            else:
                self._become_leader()
        elif outcome == VoteOutcome.LOST:
            self._become_follower(self.term, None, reason="lost_election")

    def _on_timeout_now(self, m: TimeoutNow) -> None:
        if self.leader != m.frm:
            self.stats["refused:timeout_now_not_leader"] += 1
            return
        if not self.is_voter() or self.role in (Role.LEADER, Role.CANDIDATE):
            self.stats["refused:timeout_now_role"] += 1
            return
        self.stats["timeout_now"] += 1
        self._campaign(pre=False, transfer=True)

    # -- leader side --------------------------------------------------------------------------
    def _on_append_response(self, m: AppendResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        last = self.log.last_index()
        if m.reject:
            if pr.state == ProgressState.REPLICATE and m.index <= pr.match:
                return  # stale rejection of something already matched
            if pr.state == ProgressState.PROBE and m.index != pr.next - 1:
                return  # not the answer to our current probe
            if pr.state == ProgressState.SNAPSHOT:
                return
            # Fast backup: skip the follower's conflicting term in one round (etcd's scheme).
            probe = m.hint_index
            if m.hint_term > 0:
                probe, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            nxt = max(min(m.index, probe + 1), pr.match + 1)
            if nxt >= pr.next and pr.state == ProgressState.PROBE:
                nxt = max(pr.next - 1, pr.match + 1)  # strictly decreasing probes (#1829)
            pr.become_probe()
            pr.next = min(nxt, last + 1)
            return
        index = min(m.index, last)  # a reply past our log cannot move match beyond it (#1175)
        if pr.maybe_update(index):
            if pr.state == ProgressState.PROBE:
                pr.become_replicate()
            self._maybe_commit()
            if self.transfer is not None and self.transfer.target == m.frm:
                self._maybe_send_timeout_now()
            if self.conf_change is not None and self.conf_change.phase == "catchup":
                self._advance_conf_change()
        elif pr.state == ProgressState.PROBE and pr.match == pr.next - 1:
            pr.become_replicate()

    def _on_heartbeat_response(self, m: HeartbeatResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if pr.state == ProgressState.PROBE:
            pr.probe_sent = False  # the follower is alive: re-probe now
        elif (pr.state == ProgressState.REPLICATE and m.round == pr.hb_round
              and pr.match < pr.hb_expect):
            # Every append sent before this heartbeat has been answered (FIFO links), yet the
            # follower has not matched them: some were lost. Re-probe from its match.
            self.stats["appends_lost"] += 1
            pr.become_probe()
        if 0 < m.round <= self.round and m.round > pr.acked_round:
            pr.acked_round = m.round
            pr.ack_sent_at = self.round_times.get(m.round, -_INF)
            self._release_reads()

    def _on_snapshot_response(self, m: SnapshotResponse) -> None:
        if self.role != Role.LEADER:
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if pr.state != ProgressState.SNAPSHOT or pr.snap is None or pr.snap.index != m.index:
            if m.done and m.index > pr.match and m.index <= self.log.last_index():
                pr.maybe_update(m.index)
            return
        size = len(pr.snap.data)
        off = min(max(m.next_offset, 0), size)  # a malformed ack never escapes the snapshot bounds
        if off >= size and not m.done:
            off = 0  # "have it all" without "done" is inconsistent: start over
        if m.done:
            pr.maybe_update(m.index)
            pr.become_probe()
            pr.next = m.index + 1
            self._maybe_commit()
            self.stats["snapshots_sent"] += 1
            return
        if off > pr.snap_acked:
            pr.snap_acked = off
            pr.snap_stall = 0
            pr.snap_sent = max(pr.snap_sent, off)
        elif off == 0 and pr.snap_acked > 0:
            # The follower lost its partial copy (it restarted): start over.
            pr.snap_acked = pr.snap_sent = 0
            pr.snap_rewound = -1
        elif off == pr.snap_acked and pr.snap_sent > off and pr.snap_rewound != off:
            # A repeated ack: a chunk was lost and later ones re-advertise the gap. Resume there,
            # once per gap (duplicated acks must not multiply retransmissions).
            pr.snap_sent = off
            pr.snap_rewound = off
        # Anything else is a stale (reordered or duplicated) ack: ignore it.

    # -- elections ----------------------------------------------------------------------------
    def _can_campaign(self) -> bool:
        return self.is_voter() and self.role != Role.LEADER

    def _campaign(self, *, pre: bool, transfer: bool = False) -> None:
        if not self._can_campaign():
            return
        if self.term >= MAX_TERM:
            self.stats["election_suppressed_term_ceiling"] += 1
            return
        self.election_round += 1
        self.votes = {self.id: True}
        if pre:
            self.role = Role.PRE_CANDIDATE
            self.leader = None
            term = self.term + 1
            self.stats["prevotes_started"] += 1
        else:
            self.role = Role.CANDIDATE
            self.term += 1
            self.vote = self.id
            self.leader = None
            self._hs_dirty = True
            term = self.term
            self.stats["elections_started"] += 1
        self._reset_election_timer()
        if self.membership.vote_outcome(self.votes) == VoteOutcome.WON:
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        li, lt = self.log.last_index(), self.log.last_term()
        for v in sorted(self.membership.all_voters):
            if v != self.id:
                self._send(VoteRequest(self.id, v, term, li, lt, pre, transfer, self.election_round))

    def _become_follower(self, term: int, leader: NodeId | None, *, reason: str) -> None:
        was_leader = self.role == Role.LEADER
        if term > self.term:
            self.term = term
            self.vote = None
            self._hs_dirty = True
        self.role = Role.FOLLOWER
        self.votes = {}
        if was_leader:
            self.stats["stepdowns"] += 1
            self.stats[f"stepdown:{reason}"] += 1
            self.last_stepdown_reason = reason
            self._leader_teardown()
        self.leader = None
        if leader is not None:
            self._set_leader(leader)
            self.leader_contact = self.now
        self._refresh_role()
        if self.is_voter():
            self._reset_election_timer()
        else:
            self.election_deadline = _INF

    def _leader_teardown(self) -> None:
        self.prs = {}
        self.retiring = {}
        self.heartbeat_deadline = self.check_quorum_deadline = _INF
        self.uncommitted_keys.clear()
        self.uncommitted_bytes = 0
        # Reads are idempotent: instead of failing them, ask the next leader.
        for r in list(self.reads) + self.reads_waiting_noop:
            if r.origin is None:
                self.remote_reads[r.id] = [None, 0.0]
            else:
                self._read_out.setdefault(r.origin, []).append((r.id, -1))
        self.reads.clear()
        self.reads_waiting_noop = []
        self.need_round = False
        cc = self.conf_change
        if cc is not None:
            self.conf_change = None
            self._complete("membership", cc.req_id, error=LeadershipLost(
                "leadership lost during the membership change; it may still complete"))
        # Pending proposals get re-sent to the next leader (same key) after a short grace period,
        # in which that leader's first append usually shows us they already made it.
        grace = self.now + 2 * self.cfg.heartbeat_interval
        for p in self.pending.values():
            p.sent_to = self.id
            self._schedule_retry(p, grace)

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader = self.id
        self.stats["elected"] += 1
        self.votes = {}
        self.election_deadline = _INF
        last = self.log.last_index()
        self.prs = {}
        for peer in self.membership.members:
            if peer != self.id:
                self.prs[peer] = Progress(last + 1)
        self.heartbeat_deadline = self.now + self.cfg.heartbeat_interval
        self.check_quorum_deadline = self.now + self.cfg.election_timeout_min
        self.uncommitted_bytes = 0
        self.uncommitted_keys = {}
        # Keys committed recently (only leaders answer forwards, so only they keep this map).
        rc = self.recent_committed = OrderedDict()
        lo = max(self.log.offset, self.log.commit - self.cfg.recent_keys + 1)
        for e in self.log.slice(lo, self.log.commit + 1):
            if e.client is not None:
                rc[(e.client, e.seq)] = e.index
        for e in self.log.slice(self.log.commit + 1, last + 1):
            if e.client is not None:
                self.uncommitted_keys[(e.client, e.seq)] = e.index
        self.reads.clear()
        self.reads_waiting_noop = []
        # §5.4.2 / §8: a leader commits entries from earlier terms only through one of its own.
        noop = Entry(last + 1, self.term, EntryKind.NOOP)
        self.log.append([noop])
        self.noop_index = noop.index
        if self.transfer is not None:
            self._finish_transfer(TransferFailed("this node was elected again"))
        # Local reads issued while we were a follower now run here.
        for rid in list(self.remote_reads):
            del self.remote_reads[rid]
            self._leader_read(rid, None)
        for p in list(self.pending.values()):
            self._dispatch_pending(p)
        self._maybe_commit()

    def _reset_election_timer(self) -> None:
        c = self.cfg
        self.election_deadline = self.now + self.rng.uniform(c.election_timeout_min, c.election_timeout_max)

    def _in_lease(self) -> bool:
        """True while we believe a leader is alive (stickiness): we lead, or heard from one recently."""
        if self.role == Role.LEADER:
            return True
        if self.now < self.quiet_until:
            return True
        return self.leader is not None and self.now - self.leader_contact < self.cfg.election_timeout_min

    def _check_quorum(self) -> bool:
        active = {self.id}
        for peer, pr in list(self.prs.items()):
            if pr.recent_active:
                active.add(peer)
            elif peer in self.retiring and self.log.commit >= self.retiring[peer]:
                self._retire(peer)  # silent removed node: stop trying
            pr.recent_active = False
        m = self.membership
        if not m.is_voter(self.id):
            # A leader outside the voter set (removed, managing the hand-off) counts only others.
            active.discard(self.id)
        return m.has_quorum(active)

    def _retire(self, peer: NodeId) -> None:
        self.retiring.pop(peer, None)
        self.prs.pop(peer, None)

    def _set_leader(self, leader: NodeId | None) -> None:
        if leader == self.leader:
            return
        self.leader = leader
        if leader is None:
            return
        t = self.transfer
        if t is not None and self.term > t.start_term and leader != self.id:
            if leader == t.target:
                self._finish_transfer(None)
            else:
                self._finish_transfer(TransferFailed(f"{leader!r} became leader instead"))
        # A new leader is known: send it what is parked here, and re-send in-flight forwards soon.
        soon = self.now + 2 * self.cfg.heartbeat_interval
        for p in self.pending.values():
            if p.sent_to is None:
                self._dispatch_pending(p)
            elif p.sent_to != leader:
                self._schedule_retry(p, soon)
        for rid, st in list(self.remote_reads.items()):
            if st[0] != leader and self.role != Role.LEADER:
                self._send_remote_read(rid)

    def _refresh_role(self) -> None:
        if self.role in (Role.FOLLOWER, Role.LEARNER):
            self.role = Role.FOLLOWER if self.is_voter() or not self.membership.is_learner(self.id) \
                else Role.LEARNER

    # -- replication (leader) -----------------------------------------------------------------
    def _leader_has_sends(self) -> bool:
        last = self.log.last_index()
        for pr in self.prs.values():
            if pr.state == ProgressState.SNAPSHOT:
                if pr.snap is not None and self._snapshot_has_sends(pr):
                    return True
            elif (pr.next <= last and not pr.window_full(self.cfg.max_inflight_msgs,
                                                           self.cfg.max_inflight_bytes)) \
                    or min(pr.match, self.log.commit) > pr.commit_sent:
                return True
        return False

    def _flush_leader(self) -> None:
        if self.need_round:
            self._broadcast_heartbeat()
        last = self.log.last_index()
        commit = self.log.commit
        replicate = ProgressState.REPLICATE
        prs = self.prs
        retiring = self.retiring
        for peer in sorted(prs) if len(prs) > 1 else list(prs):
            pr = prs[peer]
            # Fast path: an up-to-date follower that already knows the commit index.
            if pr.state == replicate and pr.next > last and pr.commit_sent >= (
                    pr.match if pr.match < commit else commit) and peer not in retiring:
                continue
            self._send_appends(peer, pr)

    def _send_appends(self, peer: NodeId, pr: Progress) -> None:
        cfg = self.cfg
        log = self.log
        last = log.last_index()
        sent_commit = False
        while True:
            if pr.state == ProgressState.SNAPSHOT:
                self._send_snapshot_chunks(peer, pr)
                break
            if pr.window_full(cfg.max_inflight_msgs, cfg.max_inflight_bytes):
                break
            prev = pr.next - 1
            prev_term = log.term(prev)
            if prev_term is None or pr.next < log.offset:
                if self.snapshot is None:  # pragma: no cover - compaction always leaves a snapshot
                    break
                pr.become_snapshot(self.snapshot)
                continue
            if pr.next > last and (pr.state == ProgressState.REPLICATE or pr.match >= prev):
                break
            ents: list[Entry] = []
            nbytes = 0
            for e in log.slice(pr.next, min(last, pr.next + cfg.max_append_entries - 1) + 1):
                sz = e.size
                if ents and nbytes + sz > cfg.max_append_bytes:
                    break
                ents.append(e)
                nbytes += sz
            self._send(AppendEntries(self.id, peer, self.term, prev, prev_term, log.commit, ents), early=True)
            sent_commit = True
            end = ents[-1].index if ents else prev
            pr.commit_sent = max(pr.commit_sent, min(log.commit, end))
            pr.sent(end, nbytes)
            if pr.state == ProgressState.PROBE:
                break
        if peer in self.retiring:
            at = self.retiring[peer]
            if log.commit >= at and pr.commit_sent >= at:
                self._retire(peer)  # it knows it was removed
                return
        if not sent_commit:
            safe = min(pr.match, log.commit)
            if safe > pr.commit_sent:
                # Commit notice: followers apply (and answer their clients) without waiting for the
                # next heartbeat (the reference's followers lag one heartbeat behind).
                self._send(Heartbeat(self.id, peer, self.term, safe, 0), early=True)
                pr.commit_sent = max(pr.commit_sent, safe)

    def _snapshot_has_sends(self, pr: Progress) -> bool:
        assert pr.snap is not None
        size = len(pr.snap.data)
        if size == 0:
            return not pr.probe_sent
        window = self.cfg.snapshot_chunk_bytes * self.cfg.snapshot_inflight_chunks
        return pr.snap_sent < size and pr.snap_sent - pr.snap_acked < window

    def _send_snapshot_chunks(self, peer: NodeId, pr: Progress) -> None:
        snap = pr.snap
        assert snap is not None
        size = len(snap.data)
        chunk = self.cfg.snapshot_chunk_bytes
        window = chunk * self.cfg.snapshot_inflight_chunks
        if size == 0:
            if not pr.probe_sent:
                self._send(self._chunk(peer, snap, 0, b""), early=True)
                pr.probe_sent = True
            return
        while pr.snap_sent < size and pr.snap_sent - pr.snap_acked < window:
            off = pr.snap_sent
            data = snap.data[off:off + chunk]
            self._send(self._chunk(peer, snap, off, data), early=True)
            pr.snap_sent = off + len(data)

    def _chunk(self, peer: NodeId, snap: Snapshot, off: int, data: bytes) -> SnapshotChunk:
        return SnapshotChunk(self.id, peer, self.term, snap.index, snap.term, snap.meta.membership,
                             len(snap.data), off, data)

    def _broadcast_heartbeat(self) -> None:
        self.round += 1
        self.round_times[self.round] = self.now
        stale = self.round - 4096
        if stale in self.round_times:
            self.round_times = {r: t for r, t in self.round_times.items() if r > stale}
        for r in self.reads:
            if r.round == 0:
                r.round = self.round
        self.need_round = False
        commit = self.log.commit
        for peer in sorted(self.prs):
            pr = self.prs[peer]
            safe = min(pr.match, commit)
            self._send(Heartbeat(self.id, peer, self.term, safe, self.round), early=True)
            pr.hb_round = self.round
            pr.hb_expect = pr.next - 1 if pr.state == ProgressState.REPLICATE else 0
            if safe > pr.commit_sent:
                pr.commit_sent = max(pr.commit_sent, safe)
        self._release_reads()

    def _maybe_commit(self) -> None:
        log = self.log
        me = self.id
        persisted = log.persisted
        prs = self.prs

        def match(node: NodeId) -> int:
            if node == me:
                return persisted
            pr = prs.get(node)
            return pr.match if pr is not None else 0

        idx = self.membership.committed_index(match)
        if idx <= log.commit:
            return
        # Figure 8 (§5.4.2): only an entry of the current term is committed by counting replicas.
        if log.term(idx) != self.term:
            return
        old = log.commit
        log.commit_to(idx)
        self._on_committed(old, log.commit)

    def _on_committed(self, old: int, new: int) -> None:
        """Bookkeeping for entries (old, new] that just committed on the leader."""
        cfg_committed = False
        for e in self.log.slice(old + 1, new + 1):
            if e.client is not None:
                k = (e.client, e.seq)
                self.uncommitted_keys.pop(k, None)
                self.uncommitted_bytes -= e.size
                self.recent_committed[k] = e.index
            elif e.kind == EntryKind.CONFIG:
                cfg_committed = True
            elif e.kind == EntryKind.NORMAL:
                self.uncommitted_bytes -= e.size
        if self.uncommitted_bytes < 0:
            self.uncommitted_bytes = 0
        if self.reads_waiting_noop and new >= self.noop_index:
            waiting, self.reads_waiting_noop = self.reads_waiting_noop, []
            for r in waiting:
                r.index = new
                self._queue_read(r)
        while len(self.recent_committed) > self.cfg.recent_keys:
            self.recent_committed.popitem(last=False)
        if cfg_committed or self.membership.joint or self.conf_change is not None \
                or not self.membership.is_voter(self.id):
            self._on_config_committed()

    def _removed(self) -> bool:
        """True when the latest committed configuration does not include this node at all."""
        m = self.membership
        if self.role == Role.LEADER or self.id in m.voters:
            return False
        return self.id not in m.members and not self._config_uncommitted() and bool(m.all_voters)

    def _fail_pending_if_removed(self) -> None:
        if not self._removed():
            return
        pending, self.pending = self.pending, {}
        self._rotate_client()
        self.known.clear()
        for p in pending.values():
            self._complete("propose", p.key, error=NotLeader(
                None, "this node was removed from the cluster; propose through a member"))

    def _resolve_pending(self, p: _Pending, index: int) -> None:
        if p.key.client == self.client_id:
            self.own_pending.pop(p.key.seq, None)
        term = self.log.term(index)
        self._complete("propose", p.key, value=(index, term if term is not None else 0))

    # -- membership ---------------------------------------------------------------------------
    def _latest_membership(self) -> Membership:
        return self.config_entries[-1][1] if self.config_entries else self.base_membership

    def _membership_at(self, index: int) -> Membership:
        m = self.base_membership
        for i, c in self.config_entries:
            if i > index:
                break
            m = c
        return m

    def _config_uncommitted(self) -> bool:
        return bool(self.config_entries) and self.config_entries[-1][0] > self.log.commit

    @property
    def config_change_pending(self) -> bool:
        """True while a membership change is under way here: a leader-driven change in flight, a
        joint configuration, or a latest configuration entry not yet committed. A new change
        (``change_membership``) is refused until this is False."""
        return self.conf_change is not None or self.membership.joint or self._config_uncommitted()

    def _after_append(self, written_from: int) -> None:
        """Entries from ``written_from`` on were (re)written: adopt the latest configuration in the
        log, committed or not (§4.1 adopt-on-append; a truncated config rolls back with it)."""
        if not written_from:
            return
        ces = self.config_entries
        changed = False
        while ces and ces[-1][0] >= written_from:
            ces.pop()
            changed = True
        for e in self.log.slice(written_from, self.log.last_index() + 1):
            if e.kind == EntryKind.CONFIG:
                ces.append((e.index, Membership.from_bytes(e.data)))
                changed = True
        if changed:
            self._set_membership(self._latest_membership())

    def _set_membership(self, m: Membership) -> None:
        if m == self.membership:
            return
        self.membership = m
        if self.role == Role.LEADER:
            last = self.log.last_index()
            for peer in m.members:
                if peer != self.id and peer not in self.prs:
                    self.prs[peer] = Progress(last + 1)
            for peer in list(self.prs):
                if peer not in m.members and peer not in self.retiring:
                    # Keep replicating to a removed node until it has learned that the config
                    # removing it committed, so it knows to stop (and refuses proposals).
                    self.retiring[peer] = self.log.last_index()
            for peer in list(self.retiring):
                if peer in m.members:
                    del self.retiring[peer]
        else:
            was = self.role
            if self.role in (Role.PRE_CANDIDATE, Role.CANDIDATE) and not self.is_voter():
                self.role = Role.FOLLOWER
            self._refresh_role()
            if self.is_voter() and self.election_deadline == _INF:
                self._reset_election_timer()
            elif not self.is_voter():
                self.election_deadline = _INF
            if was != self.role:
                self.stats[f"role:{self.role}"] += 1

    def _append_config(self, m: Membership) -> int:
        idx = self.log.last_index() + 1
        self.log.append([Entry(idx, self.term, EntryKind.CONFIG, m.to_bytes())])
        self.config_entries.append((idx, m))
        self._set_membership(m)
        return idx

    def _on_config_committed(self) -> None:
        if self.role != Role.LEADER:
            return
        m = self.membership
        if self._config_uncommitted():
            return
        if m.joint:
            # The joint configuration is committed: leave it (§4.3), whoever started the change.
            self._append_config(Membership(m.voters, m.learners))
            return
        cc = self.conf_change
        if cc is not None:
            if cc.phase == "learners":
                cc.phase = "catchup"
                cc.deadline = self.now + self.cfg.catchup_timeout_s
                self._advance_conf_change()
            elif m == cc.target:
                self.conf_change = None
                self._complete("membership", cc.req_id, value=m)
        if not m.is_voter(self.id):
            # Removed leader (§4.2.2): hand over to the most caught-up voter at once, then step down.
            best = max(sorted(m.voters), key=lambda v: self.prs[v].match if v in self.prs else -1,
                       default=None)
            if best is not None and best in self.prs and self.prs[best].match == self.log.last_index():
                self._send(TimeoutNow(self.id, best, self.term), early=True)
            self._become_follower(self.term, None, reason="removed_from_config")

    def _advance_conf_change(self) -> None:
        cc = self.conf_change
        if cc is None or cc.phase != "catchup":
            return
        cur = self.membership
        for v in cc.target.voters - cur.voters:
            pr = self.prs.get(v)
            if pr is None or pr.match < self.log.commit:
                return
        if cc.target.voters != cur.voters:
            cc.phase = "joint"
            cc.entry_index = self._append_config(Membership(cc.target.voters, cc.target.learners,
                                                            cur.voters))
        else:
            cc.phase = "final"
            cc.entry_index = self._append_config(cc.target)
        cc.deadline = _INF

    # -- transfer -----------------------------------------------------------------------------
    def _maybe_send_timeout_now(self) -> None:
        t = self.transfer
        if t is None or t.timeout_now_sent or self.role != Role.LEADER:
            return
        pr = self.prs.get(t.target)
        if pr is not None and pr.match == self.log.last_index():
            # The target has our whole log, so it wins its election (§3.10).
            self._send(TimeoutNow(self.id, t.target, self.term), early=True)
            t.timeout_now_sent = True

    def _finish_transfer(self, err: TransferFailed | None) -> None:
        t = self.transfer
        if t is None:
            return
        self.transfer = None
        if err is None:
            self.stats["transfers_done"] += 1
            self._complete("transfer", t.req_id, value=t.target)
        else:
            self.stats["transfers_failed"] += 1
            self._complete("transfer", t.req_id, error=err)
        if self.role == Role.LEADER:
            for p in list(self.pending.values()):
                if p.sent_to is None:
                    self._dispatch_pending(p)

    # -- proposals and forwarding -------------------------------------------------------------
    def _schedule_retry(self, p: _Pending, at: float) -> None:
        p.retry_at = at
        heapq.heappush(self.retry_heap, (at, (p.key.client, p.key.seq)))

    def _dispatch_pending(self, p: _Pending) -> None:
        """Append ``p`` here (leader) or forward it to the leader; park it if neither is possible."""
        k = (p.key.client, p.key.seq)
        retry = self.now + self.cfg.forward_retry_s
        if self.role == Role.LEADER:
            if self.transfer is not None:
                p.sent_to = None  # held until the transfer ends
                return
            # No retry timer while we lead: our own log keeps the entry, and stepping down
            # re-schedules every pending proposal (_leader_teardown).
            p.sent_to = self.id
            if k in self.uncommitted_keys:
                return
            done = self.recent_committed.get(k)
            if done is not None:
                del self.pending[k]
                self._resolve_pending(p, done)
                return
            self._leader_append(p.data, p.key)
        elif self.leader is not None:
            p.sent_to = self.leader
            self.forward_queue.append(k)
            self._schedule_retry(p, retry)
        else:
            p.sent_to = None
            self._schedule_retry(p, retry)

    def _leader_append(self, data: bytes, key: DedupKey | None) -> int:
        log = self.log
        idx = log.last_index() + 1
        if key is None:
            e = _new_entry(Entry, (idx, self.term, 0, data, None, 0, 0))
            self.uncommitted_bytes += len(data) + 24
        else:
            client = key[0]
            e = _new_entry(Entry, (idx, self.term, 0, data, client, key[1], key[2]))
            self.uncommitted_keys[(client, key[1])] = idx
            self.uncommitted_bytes += len(data) + len(client) + 24
        log.entries.append(e)
        return idx

    def _flush_forwards(self) -> None:
        q = self.forward_queue
        if not q:
            return
        self.forward_queue = []
        batches: dict[NodeId, list[tuple[bytes, str, int, int]]] = {}
        for k in q:
            p = self.pending.get(k)
            if p is None or p.sent_to is None or p.sent_to == self.id:
                continue
            batches.setdefault(p.sent_to, []).append((p.data, p.key.client, p.key.seq, p.key.floor))
        for to, items in batches.items():
            # Bound each Forward by the append byte budget (one item always fits: max_entry_bytes).
            batch: list[tuple[bytes, str, int, int]] = []
            size = 0
            for it in items:
                if batch and size + len(it[0]) > self.cfg.max_append_bytes:
                    self._send(Forward(self.id, to, self.term, batch), early=True)
                    batch, size = [], 0
                batch.append(it)
                size += len(it[0]) + 32
            if batch:
                self._send(Forward(self.id, to, self.term, batch), early=True)

    def _step_client(self, m: Message) -> None:
        if isinstance(m, Forward):
            self._on_forward(m)
        elif isinstance(m, ForwardResponse):
            self._on_forward_response(m)
        elif isinstance(m, ReadRequest):
            for rid in m.ids:
                if self.role == Role.LEADER and (len(self.reads) + len(self.reads_waiting_noop)
                                                 < self.cfg.max_pending_reads):
                    self._leader_read(rid, m.frm)
                else:
                    # Not the leader, or too many reads queued: "ask again" (bounded memory).
                    self._read_out.setdefault(m.frm, []).append((rid, -1))
        elif isinstance(m, ReadResponse):
            for rid, index in m.results:
                st = self.remote_reads.get(rid)
                if st is None or st[0] != m.frm:
                    continue  # provenance: only the node we asked may answer (#1911)
                if index < 0:
                    st[0] = None
                    st[1] = self.now + self.cfg.heartbeat_interval
                    continue
                del self.remote_reads[rid]
                self._complete("read", rid, value=index)

    def _on_forward(self, m: Forward) -> None:
        results: list[tuple[str, int, int, int]] = []
        if self.role != Role.LEADER or self.transfer is not None:
            for _, client, seq, _ in m.items:
                results.append((client, seq, FWD_NOT_LEADER, 0))
        else:
            for data, client, seq, floor in m.items:
                k = (client, seq)
                if k in self.uncommitted_keys:
                    continue  # already in our log: it will commit, and the proposer will see it
                done = self.recent_committed.get(k)
                if done is not None:
                    results.append((client, seq, FWD_COMMITTED, done))
                elif (self.uncommitted_bytes > self.cfg.max_uncommitted_bytes
                      or len(data) > self.cfg.max_entry_bytes):
                    results.append((client, seq, FWD_BUSY, 0))
                else:
                    self._leader_append(data, DedupKey(client, seq, floor))
        if results:
            hint = self.leader if self.leader != m.frm else None
            self._send(ForwardResponse(self.id, m.frm, self.term, results, hint), early=True)

    def _on_forward_response(self, m: ForwardResponse) -> None:
        for client, seq, status, index in m.results:
            p = self.pending.get((client, seq))
            if p is None or p.sent_to != m.frm:
                continue
            if status == FWD_COMMITTED:
                p.known_index = index
                if index <= self.log.applied:
                    del self.pending[(client, seq)]
                    self._resolve_pending(p, index)
                else:
                    self.known[(client, seq)] = index
            elif status == FWD_NOT_LEADER:
                p.sent_to = None
                self._schedule_retry(p, self.now + self.cfg.heartbeat_interval)
            else:
                self._schedule_retry(p, self.now + 2 * self.cfg.heartbeat_interval)

    # -- reads ---------------------------------------------------------------------------------
    def _leader_read(self, rid: int, origin: NodeId | None) -> None:
        r = _Read(rid, self.log.commit, 0, origin)
        if self.log.commit < self.noop_index:
            # §6.4 step 1: until its no-op commits, a new leader does not know the commit index.
            self.reads_waiting_noop.append(r)
            return
        self._queue_read(r)

    def _queue_read(self, r: _Read) -> None:
        if self.membership.self_is_quorum(self.id):
            self._finish_read(r)
            return
        if self._lease_valid():
            self.stats["lease_reads"] += 1
            self._finish_read(r)
            return
        r.round = 0  # needs a heartbeat round started after it arrived
        self.reads.append(r)
        self.need_round = True

    def _lease_valid(self) -> bool:
        if not self.cfg.lease_read or self.transfer is not None or self.role != Role.LEADER:
            return False
        me = self.id
        now = self.now
        prs = self.prs

        def sent_at(node: NodeId) -> float:
            if node == me:
                return now
            pr = prs.get(node)
            return pr.ack_sent_at if pr is not None else -_INF

        m = self.membership
        starts = []
        for s in ((m.voters,) if m.old_voters is None else (m.voters, m.old_voters)):
            vals = sorted((sent_at(v) for v in s), reverse=True)
            starts.append(vals[len(vals) // 2] if vals else now)
        return now < min(starts) + self.cfg.lease_duration

    def _release_reads(self) -> None:
        if not self.reads:
            return
        me = self.id
        prs = self.prs
        rnd = self.round

        def acked(node: NodeId) -> int:
            if node == me:
                return rnd
            pr = prs.get(node)
            return pr.acked_round if pr is not None else 0

        confirmed = self.membership.committed_index(acked)
        while self.reads and 0 < self.reads[0].round <= confirmed:
            self._finish_read(self.reads.popleft())

    def _finish_read(self, r: _Read) -> None:
        self.stats["reads_confirmed"] += 1
        if r.origin is None:
            self._complete("read", r.id, value=r.index)
        else:
            self._read_out.setdefault(r.origin, []).append((r.id, r.index))

    def _send_remote_read(self, rid: int) -> None:
        st = self.remote_reads[rid]
        if self.role == Role.LEADER:
            del self.remote_reads[rid]
            self._leader_read(rid, None)
            return
        st[0] = self.leader
        st[1] = self.now + self.cfg.forward_retry_s
        if self.leader is not None:
            self._read_req_out.setdefault(self.leader, []).append(rid)

    def _flush_read_responses(self) -> None:
        if self._read_req_out:
            req, self._read_req_out = self._read_req_out, {}
            for dest, ids in req.items():
                self._send(ReadRequest(self.id, dest, self.term, ids), early=True)
        if self._read_out:
            out, self._read_out = self._read_out, {}
            for dest, items in out.items():
                self._send(ReadResponse(self.id, dest, self.term, items,
                                        self.leader if self.role != Role.LEADER else None), early=True)

    # -- plumbing -----------------------------------------------------------------------------
    def _send(self, m: Message, *, early: bool = False) -> None:
        (self._early if early else self._msgs).append(m)

    def _complete(self, kind: str, rid: Any, *, value: Any = None, error: RaftError | None = None) -> None:
        self._completions.append(Completion(kind, rid, value, error))

