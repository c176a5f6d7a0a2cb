"""Leader-side replication state per follower (etcd's ``tracker.Progress``, simplified).

States:

* ``PROBE`` - we do not know where the follower's log matches ours. At most one AppendEntries is
  outstanding; the next waits for its answer (or for a heartbeat reply).
* ``REPLICATE`` - the follower matches: appends are *pipelined*, ``next`` moves optimistically past
  each batch sent, bounded by an in-flight window counted in messages and bytes.
* ``SNAPSHOT`` - the entries it needs were compacted; a chunked InstallSnapshot is in progress.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum

from warpmesh.raft.types import Snapshot


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    __slots__ = (
        "ack_sent_at", "acked_round", "commit_sent", "hb_expect", "hb_round", "inflight",
        "inflight_bytes", "match", "next", "probe_sent", "recent_active", "snap", "snap_acked",
        "snap_rewound", "snap_sent", "snap_stall", "state",
    )

    def __init__(self, next_index: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        #: PROBE: an append is outstanding; cleared by any reply from the follower.
        self.probe_sent = False
        #: REPLICATE: (last index, bytes) of each append in flight, oldest first.
        self.inflight: deque[tuple[int, int]] = deque()
        self.inflight_bytes = 0
        #: Heard from since the last CheckQuorum round.
        self.recent_active = False
        #: Highest read round echoed back, and when (our clock) we sent that round (for leases).
        self.acked_round = 0
        self.ack_sent_at = float("-inf")
        #: SNAPSHOT: the snapshot being sent (pinned, even if a newer one is published), acked and
        #: sent byte offsets.
        self.snap: Snapshot | None = None
        self.snap_acked = 0
        self.snap_sent = 0
        self.snap_stall = 0
        self.snap_rewound = -1
        #: Highest commit index we told this follower it may apply.
        self.commit_sent = 0
        #: Last heartbeat round sent, and the last index sent before it: when the reply to that round
        #: arrives, every earlier append has been answered (links are FIFO), so a match still below
        #: ``hb_expect`` means appends were lost and the follower must be re-probed.
        self.hb_round = 0
        self.hb_expect = 0

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT and self.snap is not None:
            self.next = max(self.match + 1, self.snap.index + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self._clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self._clear()

    def become_snapshot(self, snap: Snapshot) -> None:
        self.state = ProgressState.SNAPSHOT
        self.snap = snap
        self.snap_acked = 0
        self.snap_sent = 0
        self.snap_rewound = -1
        self.snap_stall = 0
        self.probe_sent = False
        self.inflight.clear()
        self.inflight_bytes = 0

    def _clear(self) -> None:
        self.inflight.clear()
        self.inflight_bytes = 0
        self.snap = None
        self.snap_acked = 0
        self.snap_sent = 0

    def maybe_update(self, index: int) -> bool:
        """A success reply up to ``index``; returns True if ``match`` moved."""
        updated = False
        if index > self.match:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        # Free every in-flight batch that is now acknowledged.
        fl = self.inflight
        while fl and fl[0][0] <= index:
            self.inflight_bytes -= fl.popleft()[1]
        return updated

    def sent(self, last: int, nbytes: int) -> None:
        """Record an append covering entries up to ``last`` (REPLICATE: pipelined)."""
        if self.state == ProgressState.REPLICATE:
            if last >= self.next:
                self.next = last + 1
                self.inflight.append((last, nbytes))
                self.inflight_bytes += nbytes
        else:
            self.probe_sent = True

    def window_full(self, max_msgs: int, max_bytes: int) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.SNAPSHOT:
            return True
        return len(self.inflight) >= max_msgs or self.inflight_bytes >= max_bytes

    def __repr__(self) -> str:
        return (f"Progress({self.state.name} match={self.match} next={self.next} "
                f"inflight={len(self.inflight)})")
