"""``ScriptedCluster``: drive several :class:`RaftCore` nodes by hand, for scenario tests.

The counterpart of the seeded simulator (:mod:`warpmesh.sim.raft`) for tests that script one
situation precisely: time advances only when asked, messages are delivered in FIFO order (or held,
dropped and rewritten by filters), and every node persists its Ready batches to an
:class:`InMemoryRaftStorage` that survives :meth:`crash` / :meth:`restart`. Election safety and
state-machine safety are checked on every step, so any scenario is also an invariant test.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from warpmesh.raft.config import RaftConfig
from warpmesh.raft.core import Completion, RaftCore
from warpmesh.raft.membership import Membership
from warpmesh.raft.messages import Message, decode, encode
from warpmesh.raft.storage import InMemoryRaftStorage, StorageBatch
from warpmesh.raft.types import DedupKey, Entry, EntryKind, HardState, Role, Snapshot

#: A filter sees each message about to be delivered; it returns the message (possibly replaced) to
#: deliver it, or None to drop it.
Filter = Callable[[Message], "Message | None"]


class ClusterNode:
    def __init__(self, node_id: str, bootstrap: Membership) -> None:
        self.id = node_id
        self.bootstrap = bootstrap
        self.storage = InMemoryRaftStorage()
        self.core: RaftCore | None = None
        #: Committed entries handed to this node's application, and snapshot installs, in order.
        self.applied: list[Entry] = []
        self.installs: list[Snapshot] = []
        self.completions: list[Completion] = []
        self.sent: list[Message] = []
        #: For each message in ``sent``, the hard state this node's storage held when it left: what
        #: the message could promise had the node crashed right after sending it.
        self.durable_at_send: list[HardState] = []

    @property
    def c(self) -> RaftCore:
        """The live core (raises if crashed)."""
        assert self.core is not None, f"{self.id} is down"
        return self.core

    def commands(self) -> list[bytes]:
        """Data of the NORMAL entries applied here (snapshots reset nothing in this list)."""
        return [e.data for e in self.applied if e.kind == EntryKind.NORMAL]

    def completion(self, kind: str, rid: Any) -> Completion | None:
        for c in self.completions:
            if c.kind == kind and c.id == rid:
                return c
        return None


class ScriptedCluster:
    """Nodes ``ids``; the first ``voters`` (default all) form the bootstrap configuration."""

    def __init__(self, ids: Iterable[str] | int = 3, *, voters: Iterable[str] | None = None,
                 learners: Iterable[str] = (), config: RaftConfig | None = None, seed: int = 0,
                 codec: bool = True) -> None:
        if isinstance(ids, int):
            ids = [f"n{i + 1}" for i in range(ids)]
        ids = list(ids)
        voter_set = list(voters) if voters is not None else [i for i in ids if i not in set(learners)]
        self.bootstrap = Membership.of(voter_set, learners)
        self.cfg = config or RaftConfig(election_timeout_min=0.1, election_timeout_max=0.2,
                                        heartbeat_interval=0.02)
        self.rng = random.Random(seed)
        self.now = 0.0
        #: Clock rate per node (default 1.0): a node's clock reads ``rate * now``.
        self.rates: dict[str, float] = {}
        self.codec = codec
        self.nodes: dict[str, ClusterNode] = {}
        self.queue: deque[Message] = deque()
        self.filters: list[Filter] = []
        self.blocked: set[tuple[str, str]] = set()
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, Entry] = {}
        self.delivered: list[Message] = []
        for nid in ids:
            boot = self.bootstrap if nid in self.bootstrap.members else Membership(frozenset())
            self.nodes[nid] = ClusterNode(nid, boot)
            self.start(nid)

    def __getitem__(self, nid: str) -> ClusterNode:
        return self.nodes[nid]

    def t(self, nid: str) -> float:
        """Node ``nid``'s clock reading (its rate times the cluster's time)."""
        return self.now * self.rates.get(nid, 1.0)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, nid: str, *, client_id: str | None = None) -> RaftCore:
        node = self.nodes[nid]
        st = node.storage.load()
        # The application restarts from scratch too: it replays from the snapshot (if any).
        node.applied = []
        node.installs = [st.snapshot] if st.snapshot is not None else []
        node.core = RaftCore(nid, bootstrap=node.bootstrap, now=self.t(nid), rng=random.Random(
            self.rng.getrandbits(64)), config=self.cfg, hard_state=st.hard_state, entries=st.entries,
            snapshot=st.snapshot, client_id=client_id)
        self.pump(nid)
        return node.core

    def preload(self, nid: str, terms: list[int], *, term: int | None = None) -> RaftCore:
        """Replace ``nid``'s durable log with entries of the given terms (index 1, 2, ...) and
        restart it; ``term`` is its current term (default: the last entry's)."""
        st = self.nodes[nid].storage = InMemoryRaftStorage()
        ents = [Entry(i + 1, t, EntryKind.NORMAL, f"{i + 1}@{t}".encode()) for i, t in enumerate(terms)]
        st.write(StorageBatch(entries=ents, hard_state=HardState(
            term if term is not None else (terms[-1] if terms else 0), None, 0)))
        return self.restart(nid)

    def crash(self, nid: str) -> None:
        """Kill the node; its durable storage survives, messages queued to it are lost."""
        self.nodes[nid].core = None
        self.queue = deque(m for m in self.queue if m.to != nid)

    def restart(self, nid: str) -> RaftCore:
        self.crash(nid)
        return self.start(nid)

    # -- network control ----------------------------------------------------------------------
    def isolate(self, nid: str) -> None:
        for other in self.nodes:
            if other != nid:
                self.blocked.add((nid, other))
                self.blocked.add((other, nid))

    def partition(self, *groups: Iterable[str]) -> None:
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1:]:
                for x in a:
                    for y in b:
                        self.blocked.add((x, y))
                        self.blocked.add((y, x))

    def heal(self) -> None:
        self.blocked.clear()
        self.filters.clear()

    # -- running ------------------------------------------------------------------------------
    def pump(self, nid: str) -> None:
        node = self.nodes[nid]
        while node.core is not None:
            core = node.core
            self._check_leader(nid, core)
            rd = core.ready()
            if rd is None:
                return
            # The host's contract (RaftCore's docstring): early messages may leave before the write,
            # the others only after it. Sending in that order, and recording what was durable at each
            # send, lets a test see a promise sent before it was persisted.
            self._send(node, rd.early_messages)
            if rd.must_persist:
                node.storage.write(StorageBatch(rd.snapshot, rd.log_reset, rd.compact_through,
                                                rd.entries, rd.hard_state))
            self._send(node, rd.messages)
            if rd.install is not None:
                node.installs.append(rd.install)
            for e in rd.committed:
                prev = self.committed.setdefault(e.index, e)
                assert prev == e, f"state-machine safety: {nid} committed {e}, others {prev}"
                node.applied.append(e)
            node.completions.extend(rd.completions)
            core.advance(rd, self.t(nid))

    def _send(self, node: ClusterNode, messages: list[Message]) -> None:
        durable = node.storage.hard_state()
        for m in messages:
            node.sent.append(m)
            node.durable_at_send.append(durable)
            self.queue.append(m)

    def _check_leader(self, nid: str, core: RaftCore) -> None:
        if core.role == Role.LEADER:
            prev = self.leaders.setdefault(core.term, nid)
            assert prev == nid, f"election safety: {prev} and {nid} both lead term {core.term}"

    def deliver(self, limit: int = 1_000_000) -> int:
        """Deliver queued messages (and those they cause) until none are left."""
        n = 0
        while self.queue and n < limit:
            m = self.queue.popleft()
            n += 1
            if (m.frm, m.to) in self.blocked:
                continue
            for f in self.filters:
                m2 = f(m)
                if m2 is None:
                    break
                m = m2
            else:
                node = self.nodes.get(m.to)
                if node is None or node.core is None:
                    continue
                if self.codec:
                    m = decode(encode(m), m.frm, m.to)
                self.delivered.append(m)
                node.core.step(m, self.t(m.to))
                self.pump(m.to)
        return n

    def tick(self) -> None:
        for nid, node in self.nodes.items():
            if node.core is not None and node.core.next_deadline() <= self.t(nid):
                node.core.tick(self.t(nid))
                self.pump(nid)

    def run(self, seconds: float, step: float = 0.002) -> None:
        """Advance time by ``seconds``, ticking and delivering everything at each step."""
        end = self.now + seconds
        while self.now < end - 1e-12:
            self.now = min(end, self.now + step)
            self.tick()
            self.deliver()

    def run_until(self, pred: Callable[[], bool], timeout: float = 10.0, step: float = 0.002) -> None:
        end = self.now + timeout
        while not pred():
            if self.now >= end:
                raise AssertionError(f"condition not reached within {timeout}s (virtual)")
            self.now = min(end, self.now + step)
            self.tick()
            self.deliver()

    # -- helpers ------------------------------------------------------------------------------
    def live(self) -> list[ClusterNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def leader(self) -> ClusterNode | None:
        leaders = [n for n in self.live() if n.c.role == Role.LEADER]
        if not leaders:
            return None
        return max(leaders, key=lambda n: n.c.term)

    def elect(self, nid: str, timeout: float = 5.0, *, wait_commit: bool = True) -> ClusterNode:
        """Make ``nid`` campaign now (as if its election timer fired) and wait until it leads (and,
        with ``wait_commit``, until its no-op committed)."""
        core = self.nodes[nid].c
        for n in self.live():
            # As if the cluster had been up a while and the old leader had gone quiet long ago:
            # neither the restart quiet period nor leader stickiness holds this election back.
            n.c.quiet_until = min(n.c.quiet_until, self.t(n.id))
            if n.c.role != Role.LEADER:
                n.c.leader_contact = float("-inf")
        core.election_deadline = self.t(nid)
        core.tick(self.t(nid))
        self.pump(nid)
        self.deliver()
        self.run_until(lambda: self.nodes[nid].core is not None and self.nodes[nid].c.role == Role.LEADER
                       and (not wait_commit or self.nodes[nid].c.commit >= self.nodes[nid].c.noop_index),
                       timeout)
        return self.nodes[nid]

    def wait_leader(self, timeout: float = 10.0) -> ClusterNode:
        self.run_until(lambda: self.leader() is not None
                       and self.leader().c.commit >= self.leader().c.noop_index,  # type: ignore[union-attr]
                       timeout)
        ld = self.leader()
        assert ld is not None
        return ld

    def propose(self, nid: str, data: bytes, key: DedupKey | None = None) -> DedupKey:
        k = self.nodes[nid].c.propose(data, self.t(nid), key)
        self.pump(nid)
        self.deliver()
        return k
