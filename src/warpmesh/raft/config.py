"""``RaftConfig``: timing, batching and safety limits, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Tunables of one Raft node. Times are seconds on the runtime's clock.

    The defaults target a LAN/loopback cluster: a crashed leader is replaced in about 0.5 s
    (election timeout drawn from [0.3, 0.6) s, after CheckQuorum/stickiness allow it), while a
    heartbeat every 50 ms gives six missed heartbeats of slack before a follower suspects the leader,
    which keeps a loaded event loop (GC pauses, fsync stalls) from causing spurious elections.
    """

    election_timeout_min: float = 0.3
    election_timeout_max: float = 0.6
    heartbeat_interval: float = 0.05
    #: PreVote (dissertation §9.6): a node only starts a real election if a majority would vote.
    pre_vote: bool = True
    #: Appends in flight per follower (pipelining window) and bytes in flight.
    max_inflight_msgs: int = 256
    max_inflight_bytes: int = 32 * 1024 * 1024
    #: Upper bound of one AppendEntries (always at least one entry).
    max_append_bytes: int = 1024 * 1024
    max_append_entries: int = 8192
    #: Largest single command (checked at propose, before anything enters the log).
    max_entry_bytes: int = 8 * 1024 * 1024
    #: Leader stops accepting proposals while this many bytes are appended but uncommitted.
    max_uncommitted_bytes: int = 64 * 1024 * 1024
    #: Proposals made on this node awaiting commit (each is retried until it commits or is abandoned).
    max_pending_proposals: int = 100_000
    #: Reads awaiting confirmation on this node.
    max_pending_reads: int = 100_000
    #: Committed entries handed to the host per Ready (bounds one apply batch).
    max_committed_per_ready: int = 8192
    #: InstallSnapshot chunking: bytes per chunk, chunks in flight, receiver's ceiling.
    snapshot_chunk_bytes: int = 1024 * 1024
    snapshot_inflight_chunks: int = 4
    snapshot_max_bytes: int = 4 * 1024 * 1024 * 1024
    #: Entries kept below a published snapshot, so a slightly lagging follower needs no snapshot.
    trailing_entries: int = 1024
    #: Re-send a forwarded proposal (same dedup key) if it has not committed after this long.
    forward_retry: float = 0.0  # 0 = election_timeout_min
    #: Leadership transfer gives up after this long (0 = 2 * election_timeout_max).
    transfer_timeout: float = 0.0
    #: A learner being promoted must catch up within this long (0 = 20 * election_timeout_max).
    catchup_timeout: float = 0.0
    #: Opt-in lease reads (dissertation §6.4.1): the leader answers reads without a heartbeat round
    #: while a majority acknowledged it recently. Safe only if clock *rates* differ by at most
    #: ``lease_drift`` (0.05 = 5%) between any two nodes; see docs/raft.md.
    lease_read: bool = False
    lease_drift: float = 0.05
    #: A message whose term exceeds ours by more than this is dropped (a hostile or corrupt peer
    #: cannot pin the cluster at a huge term). Not applied while our own log is empty.
    max_term_jump: int = 1_000_000
    #: Remember this many recently committed dedup keys, so a retried forward is answered instead of
    #: appended twice.
    recent_keys: int = 65_536
    #: A batch of at most this many entries (and no snapshot, log reset or compaction) is written
    #: on the event loop itself when the runtime offloads I/O: for such a write the hop to the I/O
    #: thread and back (a wake-up on each side) costs about as much as the write.
    #: 0 = every write goes to the I/O thread.
    inline_write_entries: int = 4
    #: Whether a leader writes such batches on the loop too. Its appends are sent before its write,
    #: so its fsync starts first and usually ends before the first follower's acknowledgement
    #: arrives. False keeps its writes on the I/O thread, where the followers' acknowledgements
    #: can answer callers while its own write is still in flight: better when the leader's disk is
    #: slower than its followers'.
    inline_write_leader: bool = True
    #: While small writes take longer than this on average (a slow or busy disk; see
    #: ``runtime.INLINE_WEIGHT``) they go to the I/O thread, so such a disk cannot keep stalling
    #: the loop (heartbeats, elections, reads); they come back once the average is below it.
    inline_write_slow: float = 0.002

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.election_timeout_min < self.election_timeout_max:
            raise ValueError(
                "need 0 < heartbeat_interval < election_timeout_min < election_timeout_max, got "
                f"{self.heartbeat_interval} / {self.election_timeout_min} / {self.election_timeout_max}"
            )
        for name in ("max_inflight_msgs", "max_inflight_bytes", "max_append_bytes", "max_append_entries",
                     "max_entry_bytes", "max_uncommitted_bytes", "max_pending_proposals",
                     "max_pending_reads", "max_committed_per_ready", "snapshot_chunk_bytes",
                     "snapshot_inflight_chunks", "snapshot_max_bytes", "max_term_jump", "recent_keys"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.trailing_entries < 0:
            raise ValueError("trailing_entries must be >= 0")
        if self.inline_write_entries < 0:
            raise ValueError("inline_write_entries must be >= 0")
        if not self.inline_write_slow > 0:
            raise ValueError("inline_write_slow must be > 0")
        if not 0 <= self.lease_drift < 1:
            raise ValueError("lease_drift must be within [0, 1)")

    @property
    def forward_retry_s(self) -> float:
        return self.forward_retry or self.election_timeout_min

    @property
    def transfer_timeout_s(self) -> float:
        return self.transfer_timeout or 2 * self.election_timeout_max

    @property
    def catchup_timeout_s(self) -> float:
        return self.catchup_timeout or 20 * self.election_timeout_max

    @property
    def lease_duration(self) -> float:
        """How long after sending an acknowledged heartbeat the leader may assume leadership.

        Followers refuse to vote for ``election_timeout_min`` (their clock) after hearing from the
        leader. With clock rates within ``1 ± ρ`` of real time, that is at least
        ``election_timeout_min / (1 + ρ)`` real seconds, which the leader's clock may read as little
        as ``(1 - ρ)`` of. Hence ``election_timeout_min · (1 - ρ) / (1 + ρ)``.
        """
        rho = self.lease_drift
        return self.election_timeout_min * (1 - rho) / (1 + rho)


#: Upper bounds (seconds) of ``RaftNode.commit_latency``, the histogram of ``propose`` called ->
#: committed (``/metrics`` exports it as ``warpmesh_raft_commit_latency_seconds``).
COMMIT_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
                          float("inf"))
