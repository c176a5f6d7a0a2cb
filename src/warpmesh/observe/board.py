"""The dashboard's board: what a page or ``warpmesh top`` shows, folded from events and snapshots (pure).

A :class:`Board` takes :class:`~warpmesh.observe.hub.Event` values (from this peer and, over the
wire, from the others) and periodic mesh snapshots (``WarpNode.status()``-like dicts), and keeps:

* counters of every event kind, and of duplicates (a job finished by two runs) and steals;
* the peers with their state (live, suspected, lost), role, ring share and load;
* a task stream of finished and failed runs (which peer ran what, when, how long), a ring buffer;
* the detail of recent jobs (owner, claims, attempts, duration, result or error), an LRU map;
* queue depth and throughput over time (one point a second, a ring buffer);
* Raft (leader, term, commit index per node) and isolates (memo hits and misses, runs in flight).

Every collection is bounded, so the board's memory is flat however many events pass through it;
pages of the task stream are cut on the server (:meth:`Board.stream_page`). Time is an argument.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from warpmesh.observe.hub import Event

__all__ = ["DURATION_BUCKETS", "JOB_KINDS", "PEER_KINDS", "Board", "BoardLimits", "JobDetail"]

#: Event kinds about one job (WarpCore's event source).
JOB_KINDS = ("enqueued", "claimed", "contested", "settled", "started", "finished", "failed", "stolen", "adopted")
#: Event kinds about one peer (the failure detector, as WarpCore reports it).
PEER_KINDS = ("peer_joined", "peer_suspected", "peer_lost", "peer_readmitted")
_PEER_STATE = {"peer_joined": "live", "peer_suspected": "suspected", "peer_lost": "lost",
               "peer_readmitted": "live"}
#: Upper bounds (seconds) of the run-duration histogram's buckets (``/metrics``); the last is +Inf.
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, float("inf"))
#: Longest text kept of a result value or an error (the page shows a job's detail, not its payload).
MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class BoardLimits:
    """Sizes of the board's ring buffers (all bounded: memory stays flat)."""

    stream: int = 5000
    jobs: int = 5000
    series: int = 600
    job_events: int = 16


@dataclass(slots=True)
class JobDetail:
    """What the board knows of one job."""

    job: str
    op: str = ""
    owner: str | None = None
    claims: list[str] = field(default_factory=list)
    attempts: int = 0
    state: str = "enqueued"
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration: float | None = None
    result: str | None = None
    error: str | None = None
    ran_on: list[str] = field(default_factory=list)
    stolen: bool = False
    duplicate: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict."""
        return {"job": self.job, "op": self.op, "owner": self.owner, "claims": list(self.claims),
                "attempts": self.attempts, "state": self.state, "enqueued_at": self.enqueued_at,
                "started_at": self.started_at, "finished_at": self.finished_at, "duration": self.duration,
                "result": self.result, "error": self.error, "ran_on": list(self.ran_on), "stolen": self.stolen,
                "duplicate": self.duplicate, "history": list(self.history)}


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _lag(row: Any) -> dict[str, float] | None:
    if not isinstance(row, Mapping):
        return None
    return {"batches": int(row.get("batches", 0) or 0), "seconds": float(row.get("seconds", 0.0) or 0.0)}


class Board:
    """The dashboard's state; see the module docstring."""

    def __init__(self, limits: BoardLimits | None = None) -> None:
        self.limits = limits or BoardLimits()
        #: Events folded in, by kind.
        self.counts: Counter[str] = Counter()
        #: Events seen in total, and lost on the way (a reader fell behind a ring).
        self.events_seen = 0
        self.events_dropped = 0
        self.duplicates = 0
        self._stream: deque[dict[str, Any]] = deque(maxlen=self.limits.stream)
        self._stream_seq = 0
        self._jobs: OrderedDict[str, JobDetail] = OrderedDict()
        self._series: deque[dict[str, Any]] = deque(maxlen=self.limits.series)
        self._peer_events: dict[str, str] = {}
        self._snapshot: dict[str, Any] = {}
        self._snapshot_at: float | None = None
        self._known_peers: dict[str, str] = {}  # every peer ever seen -> its role
        self.raft: dict[str, dict[str, Any]] = {}
        self.memo: Counter[str] = Counter()
        self.isolates_running = 0
        self._durations: deque[float] = deque(maxlen=1000)
        #: Run durations: count per bucket of :data:`DURATION_BUCKETS` (not cumulative) and their sum.
        self.duration_buckets = [0] * len(DURATION_BUCKETS)
        self.duration_sum = 0.0
        self._last_tick: float | None = None
        self._finished_at_tick = 0

    # -- input ------------------------------------------------------------------------------
    def add_dropped(self, n: int) -> None:
        """Count events lost before they reached the board (a slow reader of some ring)."""
        self.events_dropped += n

    def apply_many(self, events: Iterable[Event]) -> None:
        """Fold in events in order."""
        for e in events:
            self.apply(e)

    def apply(self, event: Event) -> None:
        """Fold in one event."""
        self.events_seen += 1
        kind = event.kind
        self.counts[kind] += 1
        if kind in _PEER_STATE and event.peer is not None:
            self._peer_events[event.peer] = _PEER_STATE[kind]
        elif kind in JOB_KINDS and event.job is not None:
            self._job_event(event)
        elif kind.startswith("raft_"):
            self._raft_event(event)
        elif kind in ("memo_hit", "memo_miss"):
            self.memo[kind[5:]] += 1
        elif kind == "isolate_started":
            self.isolates_running += 1
        elif kind == "isolate_finished":
            self.isolates_running = max(0, self.isolates_running - 1)

    def restore_answers(self, answers: Iterable[tuple[str, str, str, bool, Any]]) -> int:
        """Seed the task stream and the job details from answers a peer's results board holds
        (``(job, op, ran_by, ok, result_or_error)``): after a restart on its data directory the
        events of those runs are gone, the durable board's answers are not. Restored runs carry
        ``restored: True`` and no times; jobs the board already knows are left alone. Only the
        newest ``limits.stream`` fit. Returns how many were added."""
        added = 0
        for job, op, by, ok, outcome in answers:
            if job in self._jobs:
                continue
            d = self._job(job)
            d.op, d.owner, d.state, d.attempts = op, by or None, "finished" if ok else "failed", 1
            d.ran_on.append(by)
            if ok:
                d.result = _text(outcome)
            else:
                d.error = _text(outcome if outcome is not None else "failed")
            d.history.append({"kind": "restored", "detail": "from the durable results board"})
            self._stream_seq += 1
            self._stream.append({"n": self._stream_seq, "job": job, "op": op, "peer": by, "ok": ok, "start": None,
                                 "end": None, "duration": None, "duplicate": False, "stolen": False,
                                 "error": d.error, "restored": True})
            added += 1
        return added

    def _job(self, job_id: str) -> JobDetail:
        d = self._jobs.get(job_id)
        if d is None:
            d = self._jobs[job_id] = JobDetail(job_id)
            while len(self._jobs) > self.limits.jobs:
                self._jobs.popitem(last=False)
        else:
            self._jobs.move_to_end(job_id)
        return d

    def _job_event(self, e: Event) -> None:
        assert e.job is not None
        d = self._job(e.job)
        detail = e.detail
        op = detail.get("op")
        if isinstance(op, str) and op:
            d.op = op
        who = e.peer or e.node
        if len(d.history) < self.limits.job_events:
            d.history.append({"kind": e.kind, "at": e.at, "peer": who})
        kind = e.kind
        if kind == "enqueued":
            d.enqueued_at = d.enqueued_at if d.enqueued_at is not None else e.at
            owner = detail.get("owner")
            if isinstance(owner, str):
                d.owner = owner
        elif kind in ("claimed", "contested", "settled"):
            claimants = detail.get("claimants")
            for p in (claimants if isinstance(claimants, list) else [who] if kind == "claimed" else []):
                if isinstance(p, str) and p not in d.claims:
                    d.claims.append(p)
            if kind == "settled":
                winner = detail.get("winner", who)
                d.owner = winner if isinstance(winner, str) else who
            if d.state == "enqueued":
                d.state = "claimed"
        elif kind == "stolen":
            d.stolen = True
            # WarpCore reports both sides: "out" on the owner (peer: the thief), "in" on the thief.
            d.owner = e.node if detail.get("direction") == "in" else who
        elif kind == "adopted":
            d.owner = who
        elif kind == "started":
            d.attempts += 1
            d.started_at = e.at
            d.state = "running"
            if d.owner is None:
                d.owner = who
        elif kind in ("finished", "failed"):
            duration = _num(detail.get("duration"))
            if duration is None and d.started_at is not None:
                duration = max(0.0, e.at - d.started_at)
            duplicate = d.state in ("finished", "failed") and bool(d.ran_on) and who not in d.ran_on[-1:]
            if duplicate:
                d.duplicate = True
                self.duplicates += 1
            d.ran_on.append(who)
            d.finished_at = e.at
            d.duration = duration
            d.state = kind
            if kind == "finished":
                if "result" in detail:
                    d.result = _text(detail["result"])
            else:
                d.error = _text(detail.get("error", "failed"))
            if duration is not None:
                self._durations.append(duration)
                self.duration_sum += duration
                self.duration_buckets[next(i for i, b in enumerate(DURATION_BUCKETS) if duration <= b)] += 1
            self._stream_seq += 1
            self._stream.append({"n": self._stream_seq, "job": d.job, "op": d.op, "peer": who, "ok": kind == "finished",
                                 "start": d.started_at if d.started_at is not None else e.at, "end": e.at,
                                 "duration": duration, "duplicate": duplicate, "stolen": d.stolen,
                                 "error": d.error if kind == "failed" else None})

    def _raft_event(self, e: Event) -> None:
        node = e.peer or e.node
        entry = self.raft.setdefault(node, {"leader": None, "term": 0, "commit": 0, "commit_latency": None})
        for key in ("leader", "term", "commit", "commit_latency", "role"):
            if key in e.detail:
                entry[key] = e.detail[key]

    def observe_status(self, status: Mapping[str, Any], now: float) -> None:
        """Take a mesh snapshot (``WarpNode.status()``, or ``warpmesh status --json``'s object)."""
        self._snapshot = dict(status)
        self._snapshot_at = now
        for p in status.get("roster", ()):
            self._known_peers.setdefault(str(p), "?")
        for p in status.get("live_workers", ()):
            self._known_peers[str(p)] = "worker"
        for p in status.get("peers", ()):
            if isinstance(p, dict) and "peer" in p:
                self._known_peers[str(p["peer"])] = str(p.get("role", "?"))

    def tick(self, now: float) -> None:
        """Close the current one-second point of the queue-depth and throughput series if it is due."""
        if self._last_tick is None:
            self._last_tick, self._finished_at_tick = now, self.finished
            return
        elapsed = now - self._last_tick
        if elapsed < 1.0:
            return
        done = self.finished
        self._series.append({"t": now, "queue": int(self._snapshot.get("queue_depth", 0) or 0),
                             "rate": round((done - self._finished_at_tick) / elapsed, 2)})
        self._last_tick, self._finished_at_tick = now, done

    # -- output -----------------------------------------------------------------------------
    @property
    def finished(self) -> int:
        """Runs finished or failed (as events reported them)."""
        return self.counts["finished"] + self.counts["failed"]

    def peers(self) -> list[dict[str, Any]]:
        """Every peer seen, with state, role, ring share and load."""
        snap = self._snapshot
        roster = {str(p) for p in snap.get("roster", ())}
        live = {str(p) for p in snap.get("live_workers", ())}
        health = snap.get("health", {}) or {}
        shares = snap.get("ring_shares", {}) or {}
        executions = snap.get("executions_by_peer", {}) or {}
        lags = snap.get("replication_lag", {}) or {}
        rows = {str(p["peer"]): p for p in snap.get("peers", ()) if isinstance(p, dict) and "peer" in p}
        self_id = snap.get("node")
        running: Counter[str | None] = Counter(d.owner for d in self._jobs.values() if d.state == "running")
        out = []
        for peer in sorted(set(self._known_peers) | set(self._peer_events)):
            h = health.get(peer)
            if peer == self_id or peer in live:
                state = "suspected" if h == "unresponsive" else "live"
            elif peer in roster:
                state = {"unresponsive": "suspected", "lost": "lost"}.get(str(h), "live")
            else:
                state = "lost"
            if peer not in self._known_peers and self._peer_events.get(peer):
                state = self._peer_events[peer]
            row = rows.get(peer, {})
            role = row.get("role", self._known_peers.get(peer, "?"))
            if state == "lost" and role in ("client", "?"):
                continue  # a client (or unknown) that came and went (warpmesh submit ...): not a peer that died
            out.append({"peer": peer, "role": role, "state": state,
                        "ring_share": float(shares.get(peer, row.get("ring_share", 0.0)) or 0.0),
                        "executions": int(executions.get(peer, row.get("executions", 0)) or 0),
                        "queued": int(row.get("queued", 0) or 0),
                        "running": running[peer],
                        # Our deltas this peer has not confirmed (None: not a replica we send to).
                        "lag": _lag(lags.get(peer))})
        return out

    def counters(self) -> dict[str, int]:
        """Event counts by kind plus duplicates and drops (what ``/metrics`` exports)."""
        out = {k: self.counts[k] for k in (*JOB_KINDS, *PEER_KINDS)}
        out.update({"duplicates": self.duplicates, "events_seen": self.events_seen,
                    "events_dropped": self.events_dropped, "memo_hits": self.memo["hit"],
                    "memo_misses": self.memo["miss"]})
        return out

    def stream_page(self, before: int | None = None, limit: int = 50) -> dict[str, Any]:
        """Newest-first runs of the task stream, ``limit`` at most, older than run number ``before``."""
        limit = max(1, min(limit, 500))
        rows: list[dict[str, Any]] = []
        for row in reversed(self._stream):
            if before is not None and row["n"] >= before:
                continue
            rows.append(row)
            if len(rows) == limit:
                break
        oldest = self._stream[0]["n"] if self._stream else 0
        more = bool(rows) and rows[-1]["n"] > oldest
        return {"runs": rows, "total": self._stream_seq, "held": len(self._stream),
                "next": rows[-1]["n"] if more else None}

    def job(self, job_id: str) -> dict[str, Any] | None:
        """One job's detail (None when the board does not hold it)."""
        d = self._jobs.get(job_id)
        if d is None:
            return None
        out = d.as_dict()
        answered = d.state in ("finished", "failed")
        out["holders"] = sorted(p["peer"] for p in self.peers() if p["state"] == "live") if answered else []
        return out

    def jobs_held(self) -> int:
        """How many job details the board holds (bounded by its limits)."""
        return len(self._jobs)

    def series(self) -> list[dict[str, Any]]:
        """Queue depth and finished-per-second points, oldest first."""
        return list(self._series)

    def summary(self, now: float) -> dict[str, Any]:
        """The page's and ``top``'s whole view except the task stream's older pages."""
        snap = self._snapshot
        durations = sorted(self._durations)
        lookups = self.memo["hit"] + self.memo["miss"]
        mesh = {str(k): int(v) for k, v in (snap.get("counters", {}) or {}).items()}
        # The replicated counters board is the mesh-wide truth (it survives restarts); the event
        # counts cover what this board has heard, and stand in when there is no snapshot yet.
        finished = mesh["executions"] - mesh.get("failures", 0) if "executions" in mesh else self.counts["finished"]
        return {
            "node": snap.get("node"),
            "at": now,
            "jobs": {"finished": finished, "failed": mesh.get("failures", self.counts["failed"]),
                     "enqueued": mesh.get("enqueued", self.counts["enqueued"]),
                     "duplicates": mesh.get("duplicates", self.duplicates),
                     "stolen": mesh.get("stolen", self.counts["stolen"]),
                     "running": sum(1 for d in self._jobs.values() if d.state == "running"),
                     "queue_depth": int(snap.get("queue_depth", 0) or 0),
                     "results": int(snap.get("results", 0) or 0)},
            "mesh_counters": mesh,
            "duration_p50": durations[len(durations) // 2] if durations else None,
            "peers": self.peers(),
            "counters": self.counters(),
            "series": self.series()[-120:],
            "stream": self.stream_page(limit=20),
            "raft": {n: dict(v) for n, v in sorted(self.raft.items())},
            "isolates": {"memo_hits": self.memo["hit"], "memo_misses": self.memo["miss"],
                         "memo_hit_rate": round(self.memo["hit"] / lookups, 4) if lookups else None,
                         "running": self.isolates_running},
            "held": {"jobs": len(self._jobs), "stream": len(self._stream), "series": len(self._series)},
        }
