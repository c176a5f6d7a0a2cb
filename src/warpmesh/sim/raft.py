"""Deterministic Raft simulation: many seeds, faults, and invariant checkers.

:func:`run_seed` builds a cluster of :class:`~warpmesh.raft.core.RaftCore` nodes from one integer
seed and drives them through a discrete-event loop (a virtual clock; no asyncio) with a seeded
faulty network - drops, duplicates, reordering, delays, partitions - plus crashes and restarts
(durable :class:`~warpmesh.raft.storage.InMemoryRaftStorage` survives the node object; a write in
progress when a node crashes is lost), membership changes, leadership transfers, snapshots and
client traffic. Each node persists its Ready batch after a simulated fsync delay, exactly as the
runtime does, so messages keep arriving while a write is in flight.

Checked continuously and at the end:

* election safety - at most one leader per term;
* log matching - two logs that agree on an entry's term agree on every entry before it;
* leader completeness - a new leader holds every entry committed before its term;
* state-machine safety - every node applies the same entry, and reaches the same state, at each
  index (snapshots included); no committed entry is ever truncated;
* exactly-once - no node applies one client request twice (the :class:`SessionTable`);
* durability - every acknowledged proposal is applied on every member after the faults heal;
* read linearizability - a read index is never below a write acknowledged before the read began;
* liveness - after healing, the cluster elects a leader and commits a new proposal.

On failure the result carries the seed and ONE command that replays exactly that run.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from warpmesh.errors import PayloadTooLarge, WarpmeshError
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.core import RaftCore, Ready
from warpmesh.raft.errors import RaftError
from warpmesh.raft.membership import Membership
from warpmesh.raft.messages import Message, decode, encode
from warpmesh.raft.sessions import SessionTable, Verdict
from warpmesh.raft.storage import InMemoryRaftStorage, StorageBatch
from warpmesh.raft.types import DedupKey, Entry, EntryKind, Role, Snapshot
from warpmesh.sim.harness import SimReport, replay_command
from warpmesh.wire.frame import pack, unpack


@dataclass
class RaftSimOptions:
    """One simulated run. ``None`` fields are drawn from the seed (so a sweep covers the space)."""

    seed: int = 0
    nodes: int | None = None
    spares: int | None = None
    duration: float = 1.5
    calm: float = 6.0
    drop: float | None = None
    duplicate: float | None = None
    reorder: float | None = None
    crashes: bool = True
    partitions: bool = True
    membership: bool = True
    transfers: bool = True
    snapshots: bool = True
    lease: bool | None = None
    codec: bool | None = None

    def params(self) -> dict[str, Any]:
        """The non-default options, as ``warpmesh sim raft`` flags (``no_x`` for a disabled x)."""
        out: dict[str, Any] = {}
        defaults = RaftSimOptions()
        for f in fields(self):
            if f.name == "seed":
                continue
            v = getattr(self, f.name)
            if v == getattr(defaults, f.name):
                continue
            if isinstance(v, bool):
                out[f.name if v else f"no_{f.name}"] = True
            else:
                out[f.name] = v
        return out

    def replay_command(self) -> str:
        """The one command that replays this run exactly."""
        return replay_command("raft", self.seed, self.params())


@dataclass
class RaftSimResult:
    options: RaftSimOptions
    violations: list[str] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_sim_report(self) -> SimReport:
        return SimReport("raft", self.options.seed, self.options.params(), list(self.violations),
                         dict(sorted(self.stats.items())))

    def report(self) -> str:
        if self.ok:
            return f"seed {self.options.seed}: ok ({dict(sorted(self.stats.items()))})"
        lines = [f"seed {self.options.seed}: {len(self.violations)} violation(s)"]
        lines += [f"  - {v}" for v in self.violations[:20]]
        lines.append(f"replay: {self.options.replay_command()}")
        return "\n".join(lines)


class Violation(WarpmeshError):
    pass


# -- the replicated state machine used by every simulated node --------------------------------

class ModelApp:
    """A hash-chain state machine with a session table: state after index i is fully determined by
    the committed log, so any divergence shows up as a different hash at the same index."""

    def __init__(self) -> None:
        self.index = 0
        self.digest = b"\x00" * 16
        self.count = 0
        self.sessions = SessionTable()
        #: Every (client, seq) ever applied (sim only: unbounded, part of the snapshot).
        self.applied_keys: set[tuple[str, int]] = set()

    def apply(self, e: Entry) -> Verdict | None:
        """Apply one committed entry; returns the session verdict for keyed commands."""
        assert e.index == self.index + 1, f"apply gap: {self.index} -> {e.index}"
        self.index = e.index
        if e.kind != EntryKind.NORMAL:
            return None
        verdict = Verdict.APPLY
        key = e.key
        if key is not None:
            verdict, _ = self.sessions.check(key)
            if verdict != Verdict.APPLY:
                return verdict
            k = (key.client, key.seq)
            if k in self.applied_keys:
                raise Violation(f"exactly-once: {k} applied twice (again at index {e.index})")
            self.applied_keys.add(k)
            self.sessions.record(key, e.index)
        self.digest = hashlib.blake2b(self.digest + e.data, digest_size=16).digest()
        self.count += 1
        return verdict

    def snapshot(self) -> bytes:
        return pack([self.index, self.digest, self.count, self.sessions.to_obj(),
                     sorted(self.applied_keys)])

    def restore(self, data: bytes) -> None:
        index, digest, count, sessions, keys = unpack(data)
        self.index, self.digest, self.count = index, digest, count
        self.sessions = SessionTable.from_obj(sessions)
        self.applied_keys = {(c, s) for c, s in keys}


class SimNode:
    def __init__(self, node_id: str, bootstrap: Membership) -> None:
        self.id = node_id
        self.bootstrap = bootstrap
        self.storage = InMemoryRaftStorage()
        self.core: RaftCore | None = None
        self.app = ModelApp()
        self.incarnation = 0
        self.busy = False
        self.tick_at = float("inf")
        self.snap_every = 0
        self.last_snap = 0
        self.failed: set[DedupKey] = set()
        #: This node's clock: ``offset + rate * real time``. Rates differ between nodes (drift).
        self.rate = 1.0
        self.offset = 0.0

    def completion_failed(self, key: DedupKey) -> bool:
        return key in self.failed


class RaftSim:
    """The discrete-event cluster. Use :func:`run_seed` unless you need to script a scenario."""

    def __init__(self, opts: RaftSimOptions, *, config: RaftConfig | None = None) -> None:
        self.opts = opts
        rng = self.rng = random.Random(opts.seed)
        self.n_nodes = opts.nodes if opts.nodes is not None else rng.choice((3, 3, 3, 5, 5, 1, 4))
        self.n_spares = opts.spares if opts.spares is not None else rng.choice((0, 1, 2, 2))
        if not opts.membership:
            self.n_spares = 0
        self.drop = opts.drop if opts.drop is not None else rng.choice((0.0, 0.0, 0.01, 0.05, 0.15))
        self.dup = opts.duplicate if opts.duplicate is not None else rng.choice((0.0, 0.0, 0.02, 0.1))
        self.reorder = opts.reorder if opts.reorder is not None else rng.choice((0.0, 0.01, 0.05))
        self.lease = opts.lease if opts.lease is not None else rng.random() < 0.3
        self.codec = opts.codec if opts.codec is not None else rng.random() < 0.25
        self.base_delay = rng.choice((0.0002, 0.001, 0.003))
        self.disk_delay = rng.choice((0.0, 0.0005, 0.002))
        self.cfg = config or RaftConfig(
            election_timeout_min=0.06, election_timeout_max=0.12, heartbeat_interval=0.012,
            max_append_entries=rng.choice((3, 64, 8192)),
            max_append_bytes=rng.choice((256, 4096, 1 << 20)),
            max_inflight_msgs=rng.choice((1, 4, 64)),
            snapshot_chunk_bytes=rng.choice((256, 4096, 65536)),
            snapshot_inflight_chunks=rng.choice((1, 2, 4)),
            trailing_entries=rng.choice((0, 3, 50)),
            lease_read=self.lease,
            forward_retry=0.06,
        )
        ids = [f"n{i + 1}" for i in range(self.n_nodes + self.n_spares)]
        initial = Membership.of(ids[:self.n_nodes])
        empty = Membership(frozenset())
        self.nodes: dict[str, SimNode] = {}
        # Clock drift: with lease reads on, every clock's rate stays within the configured bound
        # (the lease's safety argument); without, clocks drift more (nothing may depend on them).
        drift = self.cfg.lease_drift if self.lease else 0.2
        for i, nid in enumerate(ids):
            node = self.nodes[nid] = SimNode(nid, initial if i < self.n_nodes else empty)
            node.snap_every = rng.choice((0, 5, 20, 100)) if opts.snapshots else 0
            node.rate = rng.uniform(1 - drift, 1 + drift)
            node.offset = rng.uniform(0, 1000)
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.blocked: set[tuple[str, str]] = set()
        self.chaos = True
        self.stats: Counter[str] = Counter()
        self.violations: list[str] = []
        # Global truth for the checkers.
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, Entry] = {}
        self.states: dict[int, tuple[bytes, int]] = {}
        self.acked: dict[tuple[str, int], int] = {}
        self.max_acked_index = 0
        self.reads: dict[tuple[str, int], int] = {}
        self.read_seq = 0
        self.client_seq = 0
        self.client_floor = 1
        self.client_pending: dict[int, bytes] = {}

    # -- event loop ---------------------------------------------------------------------------
    def at(self, t: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, args))

    def run_until(self, t_end: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= t_end:
            t, _, fn, args = heapq.heappop(heap)
            self.now = t
            fn(*args)
            if self.violations:
                return
        self.now = t_end

    # -- nodes --------------------------------------------------------------------------------
    def local(self, node: SimNode) -> float:
        """The node's clock reading now."""
        return node.offset + node.rate * self.now

    def start(self, nid: str) -> None:
        node = self.nodes[nid]
        node.incarnation += 1
        st = node.storage.load()
        node.app = ModelApp()
        if st.snapshot is not None:
            node.app.restore(st.snapshot.data)
            self._check_state(node, st.snapshot.index)
        node.last_snap = node.app.index
        node.core = RaftCore(
            nid, bootstrap=node.bootstrap, now=self.local(node),
            rng=random.Random(self.rng.getrandbits(64)), config=self.cfg,
            hard_state=st.hard_state, entries=st.entries, snapshot=st.snapshot,
        )
        # Restored committed prefix must agree with the global record.
        for e in node.core.log.slice(1, node.core.log.commit + 1):
            self._check_committed(nid, e)
        node.busy = False
        node.tick_at = float("inf")
        self.stats["starts"] += 1
        self.pump(node)

    def crash(self, nid: str) -> None:
        node = self.nodes[nid]
        if node.core is None:
            return
        node.core = None
        node.incarnation += 1
        node.busy = False
        node.tick_at = float("inf")
        self.stats["crashes"] += 1

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def leader(self) -> SimNode | None:
        best = None
        for n in self.live():
            if n.core is not None and n.core.role == Role.LEADER and (
                    best is None or n.core.term > best.core.term):  # type: ignore[union-attr]
                best = n
        return best

    def pump(self, node: SimNode) -> None:
        """Run the node's Ready loop until it is idle or waiting on its disk."""
        while node.core is not None and not node.busy:
            core = node.core
            self._check_leader(node)
            rd = core.ready()
            if rd is None:
                break
            for m in rd.early_messages:
                self.send(m)
            if rd.must_persist and self.disk_delay > 0:
                node.busy = True
                self.at(self.now + self.disk_delay, self._persisted, node, node.incarnation, rd)
                break
            self._finish(node, rd)
        self._schedule_tick(node)

    def _persisted(self, node: SimNode, incarnation: int, rd: Ready) -> None:
        if node.incarnation != incarnation or node.core is None:
            return  # crashed while writing: the write never became durable
        node.busy = False
        self._finish(node, rd)
        self.pump(node)

    def _finish(self, node: SimNode, rd: Ready) -> None:
        core = node.core
        assert core is not None
        if rd.must_persist:
            node.storage.write(StorageBatch(rd.snapshot, rd.log_reset, rd.compact_through, rd.entries,
                                            rd.hard_state))
        for m in rd.messages:
            self.send(m)
        if rd.install is not None:
            self._install(node, rd.install)
        for e in rd.committed:
            self._apply(node, e)
        for c in rd.completions:
            self._completion(node, c)
        core.advance(rd, self.local(node))
        if node.snap_every and node.app.index - node.last_snap >= node.snap_every:
            node.last_snap = node.app.index
            core.publish_snapshot(node.app.index, node.app.snapshot(), self.local(node))

    def _install(self, node: SimNode, snap: Snapshot) -> None:
        node.app.restore(snap.data)
        if node.app.index != snap.index:
            self._violate(f"{node.id}: snapshot at {snap.index} holds state of index {node.app.index}")
        self._check_state(node, snap.index)
        node.last_snap = snap.index
        self.stats["installs"] += 1

    def _apply(self, node: SimNode, e: Entry) -> None:
        self._check_committed(node.id, e)
        try:
            node.app.apply(e)
        except Violation as v:
            self._violate(f"{node.id}: {v}")
            return
        except AssertionError as err:
            self._violate(f"{node.id}: {err}")
            return
        self._check_state(node, e.index)
        self.stats["applied"] += 1

    def _completion(self, node: SimNode, c: Any) -> None:
        if c.kind == "propose":
            key: DedupKey = c.id
            if c.error is not None:
                node.failed.add(key)
                return
            index, _term = c.value
            ent = self.committed.get(index)
            if ent is not None and (ent.client, ent.seq) != (key.client, key.seq):
                self._violate(f"{node.id}: proposal {key} acknowledged at {index}, which holds "
                              f"{(ent.client, ent.seq)}")
            k = (key.client, key.seq)
            if k not in self.acked:
                self.acked[k] = index
                self.max_acked_index = max(self.max_acked_index, index)
                self.stats["acked"] += 1
            if key.client == "client" and key.seq in self.client_pending:
                del self.client_pending[key.seq]
                self.client_floor = min(self.client_pending, default=self.client_seq + 1)
        elif c.kind == "read":
            want = self.reads.pop((node.id, c.id), None)
            if want is None or c.error is not None:
                return
            if c.value < want:
                self._violate(f"{node.id}: read {c.id} returned index {c.value}, below {want}, the index "
                              "of a write acknowledged before the read began (stale read)")
            self.stats["reads"] += 1
        elif c.kind == "membership":
            self.stats["membership_ok" if c.error is None else "membership_failed"] += 1
        elif c.kind == "transfer":
            self.stats["transfer_ok" if c.error is None else "transfer_failed"] += 1

    def _schedule_tick(self, node: SimNode) -> None:
        if node.core is None:
            return
        d = node.core.next_deadline()
        if d < node.tick_at:
            node.tick_at = d
            real = (d - node.offset) / node.rate if d != float("inf") else d
            self.at(max(real, self.now), self._tick, node, node.incarnation, d)

    def _tick(self, node: SimNode, incarnation: int, d: float) -> None:
        if node.incarnation != incarnation or node.core is None or d != node.tick_at:
            return
        node.tick_at = float("inf")
        node.core.tick(max(self.local(node), d))  # never short of the deadline by rounding
        self.pump(node)

    # -- network ------------------------------------------------------------------------------
    def send(self, m: Message) -> None:
        self.stats["sent"] += 1
        dst = self.nodes.get(m.to)
        if dst is None:
            return
        if (m.frm, m.to) in self.blocked:
            self.stats["dropped_partition"] += 1
            return
        rng = self.rng
        if self.chaos and self.drop and rng.random() < self.drop:
            self.stats["dropped"] += 1
            return
        payload: Any = encode(m) if self.codec else m
        copies = 2 if self.chaos and self.dup and rng.random() < self.dup else 1
        for _ in range(copies):
            delay = self.base_delay * (1 + rng.random())
            if self.chaos and self.reorder and rng.random() < self.reorder:
                delay += rng.random() * 0.02
            self.at(self.now + delay, self._deliver, m.frm, m.to, dst.incarnation, payload)

    def _deliver(self, frm: str, to: str, incarnation: int, payload: Any) -> None:
        node = self.nodes[to]
        if node.core is None or node.incarnation != incarnation:
            self.stats["dropped_crash"] += 1
            return
        if (frm, to) in self.blocked:
            self.stats["dropped_partition"] += 1
            return
        if isinstance(payload, bytes):
            m = decode(payload, frm, to)
        else:
            m = payload
        try:
            node.core.step(m, self.local(node))
        except AssertionError as err:
            self._violate(f"{to}: internal assertion while stepping {type(m).__name__}: {err}")
            return
        self.pump(node)

    # -- checkers -----------------------------------------------------------------------------
    def _violate(self, what: str) -> None:
        self.violations.append(f"t={self.now:.4f}s {what}")

    def _check_leader(self, node: SimNode) -> None:
        core = node.core
        if core is None or core.role != Role.LEADER:
            return
        prev = self.leaders.get(core.term)
        if prev is None:
            self.leaders[core.term] = node.id
            self.stats["leaders"] += 1
            # Leader completeness: the new leader holds every entry committed so far.
            log = core.log
            for i in range(log.snap_index + 1, (max(self.committed) if self.committed else 0) + 1):
                e = self.committed.get(i)
                if e is not None and log.term(i) != e.term:
                    self._violate(f"leader completeness: {node.id} leads term {core.term} without "
                                  f"committed entry {i} (term {e.term}; it has {log.term(i)})")
                    return
        elif prev != node.id:
            self._violate(f"election safety: {prev} and {node.id} both lead term {core.term}")

    def _check_committed(self, nid: str, e: Entry) -> None:
        prev = self.committed.setdefault(e.index, e)
        if prev != e:
            self._violate(f"state-machine safety: {nid} committed {e} at {e.index}, others {prev}")

    def _check_state(self, node: SimNode, index: int) -> None:
        app = node.app
        st = (app.digest, app.count)
        prev = self.states.setdefault(index, st)
        if prev != st:
            self._violate(f"state-machine safety: {node.id} state at {index} differs from other nodes")

    def check_log_matching(self) -> None:
        live = [n for n in self.live() if n.core is not None]
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                la, lb = a.core.log, b.core.log  # type: ignore[union-attr]
                lo = max(la.offset, lb.offset)
                hi = min(la.last_index(), lb.last_index())
                j = hi
                while j >= lo and la.term(j) != lb.term(j):
                    j -= 1
                for k in range(lo, j + 1):
                    if la.entry(k) != lb.entry(k):
                        self._violate(f"log matching: {a.id} and {b.id} agree on the term at {j} but "
                                      f"differ at {k}")
                        return

    # -- workload and chaos ---------------------------------------------------------------------
    def _propose(self) -> None:
        live = self.live()
        if not live:
            return
        node = self.rng.choice(live)
        core = node.core
        assert core is not None
        data = self.rng.getrandbits(48).to_bytes(6, "big")
        try:
            if self.rng.random() < 0.3:
                # A "remote client" with its own session, retrying through random nodes.
                if self.client_pending and self.rng.random() < 0.4:
                    seq = self.rng.choice(sorted(self.client_pending))
                    data = self.client_pending[seq]
                    self.stats["client_retries"] += 1
                else:
                    self.client_seq += 1
                    seq = self.client_seq
                    self.client_pending[seq] = data
                    self.client_floor = min(self.client_pending)
                core.propose(data, self.local(node), DedupKey("client", seq, self.client_floor))
            else:
                core.propose(data, self.local(node))
            self.stats["proposed"] += 1
        except (RaftError, PayloadTooLarge):
            self.stats["propose_refused"] += 1
        self.pump(node)

    def _read(self) -> None:
        live = self.live()
        if not live:
            return
        node = self.rng.choice(live)
        self.read_seq += 1
        self.reads[(node.id, self.read_seq)] = self.max_acked_index
        node.core.read_index(self.read_seq, self.local(node))  # type: ignore[union-attr]
        self.pump(node)

    def _chaos(self) -> None:
        if not self.chaos:
            return
        rng = self.rng
        r = rng.random()
        live = self.live()
        opts = self.opts
        if r < 0.15 and opts.crashes and live:
            victim = rng.choice(live)
            self.crash(victim.id)
            self.at(self.now + rng.uniform(0.02, 0.4), self._restart_if_down, victim.id)
        elif r < 0.3 and opts.partitions:
            ids = sorted(self.nodes)
            side = {i for i in ids if rng.random() < 0.5}
            one_way = rng.random() < 0.2
            for a in side:
                for b in ids:
                    if b not in side:
                        self.blocked.add((a, b))
                        if not one_way:
                            self.blocked.add((b, a))
            self.stats["partitions"] += 1
            self.at(self.now + rng.uniform(0.05, 0.5), self._heal)
        elif r < 0.42 and opts.membership:
            ld = self.leader()
            if ld is not None and ld.core is not None:
                cur = ld.core.membership
                pool = sorted(self.nodes)
                voters = set(cur.voters)
                learners = set(cur.learners)
                choice = rng.random()
                outside = [p for p in pool if p not in voters]
                if choice < 0.4 and outside and len(voters) < 5:
                    voters.add(rng.choice(outside))
                elif choice < 0.75 and len(voters) > 1:
                    voters.discard(rng.choice(sorted(voters)))
                elif outside:
                    learners.add(rng.choice(outside))
                learners -= voters
                if rng.random() < 0.3 and learners:
                    learners.discard(rng.choice(sorted(learners)))
                self.stats["membership_requested"] += 1
                ld.core.change_membership(("m", self.now), voters, learners, self.local(ld))
                self.pump(ld)
        elif r < 0.5 and opts.transfers:
            ld = self.leader()
            if ld is not None and ld.core is not None:
                others = sorted(ld.core.membership.voters - {ld.id})
                if others:
                    self.stats["transfer_requested"] += 1
                    ld.core.transfer_leadership(("t", self.now), rng.choice(others), self.local(ld))
                    self.pump(ld)
        self.at(self.now + rng.uniform(0.02, 0.15), self._chaos)

    def _restart_if_down(self, nid: str) -> None:
        if self.nodes[nid].core is None:
            self.start(nid)

    def _heal(self) -> None:
        self.blocked.clear()

    def _workload(self, until: float) -> None:
        if self.now >= until:
            return
        if self.rng.random() < 0.8:
            self._propose()
        else:
            self._read()
        self.at(self.now + self.rng.expovariate(1 / 0.006), self._workload, until)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> RaftSimResult:
        opts = self.opts
        for nid in sorted(self.nodes):
            self.start(nid)
        self.at(0.05, self._workload, opts.duration)
        self.at(0.1, self._chaos)
        t = 0.0
        while t < opts.duration and not self.violations:
            t = min(opts.duration, t + 0.25)
            self.run_until(t)
            self.check_log_matching()
        # Calm: stop faults, heal, restart everyone, then require convergence.
        self.chaos = False
        self.blocked.clear()
        for nid in sorted(self.nodes):
            if self.nodes[nid].core is None:
                self.start(nid)
        deadline = self.now + opts.calm
        probe_key: DedupKey | None = None
        probe_node: SimNode | None = None
        converged = False
        while not self.violations and self.now < deadline:
            self.run_until(self.now + 0.1)
            ld = self.leader()
            if ld is None or ld.core is None or ld.core.commit < ld.core.noop_index:
                continue
            if probe_key is None:
                probe_node = ld
                probe_key = ld.core.propose(b"final", self.local(ld))
                self.pump(ld)
                continue
            if (probe_key.client, probe_key.seq) not in self.acked:
                if probe_node is None or probe_node.core is None or probe_node.id not in \
                        ld.core.membership.members or probe_node.completion_failed(probe_key):
                    probe_key = None
                continue
            if self._converged(ld):
                converged = True
                break
        if not self.violations:
            self.check_log_matching()
            if not converged:
                ld = self.leader()
                desc = "no leader" if ld is None else (
                    f"leader {ld.id} term {ld.core.term} commit {ld.core.commit}; " + ", ".join(  # type: ignore[union-attr]
                        f"{n.id}:{n.core.role}@{n.core.term} applied {n.app.index}" for n in self.live()))  # type: ignore[union-attr]
                self._violate(f"liveness: no convergence {opts.calm}s after healing ({desc})")
        res = RaftSimResult(opts, self.violations, self.stats)
        for n in self.nodes.values():
            if n.core is not None:
                res.stats.update({k: v for k, v in n.core.stats.items() if k.startswith("refused:")})
        res.stats["committed"] = max(self.committed, default=0)
        res.stats["terms"] = max(self.leaders, default=0)
        return res

    def _converged(self, ld: SimNode) -> bool:
        core = ld.core
        assert core is not None
        members = core.membership.members
        target = core.commit
        for nid in sorted(members):
            n = self.nodes.get(nid)
            if n is None or n.core is None or n.app.index < target:
                return False
        # Durability: every acknowledged proposal is in every member's state.
        for nid in sorted(members):
            keys = self.nodes[nid].app.applied_keys
            for k, idx in self.acked.items():
                if k not in keys:
                    self._violate(f"durability: acknowledged proposal {k} (index {idx}) missing on {nid}")
                    return True
        return True


def run_seed(opts: RaftSimOptions | int) -> RaftSimResult:
    """Run one seeded simulation and return its result (violations empty when every check held)."""
    if isinstance(opts, int):
        opts = RaftSimOptions(seed=opts)
    sim = RaftSim(opts)
    try:
        return sim.run()
    except Exception as err:  # a crash inside the core is a finding, reported with its seed
        import traceback

        sim.violations.append(f"t={sim.now:.4f}s exception: {err!r}\n{traceback.format_exc()}")
        return RaftSimResult(opts, sim.violations, sim.stats)
