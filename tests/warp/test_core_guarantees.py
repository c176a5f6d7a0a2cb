"""Warp's guarantees, held by the pure core alone (in the style of etcd-raft's raft_paper_test.go).

Each test is named after the guarantee it holds and drives :class:`~warpmesh.warp.core.WarpCore`
directly: no event loop, no sockets, no clock. A small in-memory net below plays the runtime: it
applies each ready batch's mutations to the peer's own boards, and replicates boards by joining
their CRDT states, exactly when a test says so. Every test was seen to fail against a core with
the rule it names broken on purpose.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from warpmesh.crdt import GSet, LWWRegister, ORMap
from warpmesh.warp import core as wc
from warpmesh.warp import events as ev
from warpmesh.warp.claim import ClaimStrategy, ClaimView, Decision, decide, winner
from warpmesh.warp.core import Ready, WarpConfig, WarpCore
from warpmesh.warp.model import OpResult, TaskDescriptor
from warpmesh.warp.ring import TaskRing
from warpmesh.wire.frame import pack

CFG = WarpConfig(settle_window=0.3)
BOARDS = (wc.QUEUE, wc.RESULTS, wc.INTENTS, wc.MEMBERS)


@dataclass
class _Spec:
    mode: str


class _Ops:
    def __init__(self, modes: dict[str, str]) -> None:
        self.modes = modes

    def names(self) -> list[str]:
        return sorted(self.modes)

    def __contains__(self, name: object) -> bool:
        return name in self.modes

    def resolve(self, name: str) -> _Spec | None:
        mode = self.modes.get(name)
        return None if mode is None else _Spec(mode)


@dataclass
class Peer:
    """One core and its board states; ``inbox`` collects what its batches asked for."""

    name: str
    incarnation: int
    core: WarpCore
    boards: dict[str, ORMap[Any]]
    majority_waits: list[tuple[str, str]] = field(default_factory=list)
    frames: list[tuple[str, bytes]] = field(default_factory=list)
    events: list[ev.WarpEvent] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    announced: str | None = None  # the view this core last asked to announce (its heartbeat beacon)

    @property
    def replica(self) -> str:
        return f"{self.name}@{self.incarnation}"

    def apply(self) -> Ready:
        out = self.core.ready()
        r = self.replica
        for m in out.mutations:
            board = self.boards[m.board]
            if m.op == wc.PUT:
                board.update(r, m.key, lambda cur, v=m.value: cur.set(r, v))
            elif m.op == wc.REMOVE:
                board.remove(m.key)
            else:
                board.update(r, m.key, lambda cur, p=m.member: cur.add(p))
        self.majority_waits += out.await_majority
        if out.view is not None:
            self.announced = out.view
        self.frames += out.frames
        self.events += out.events
        return out


def make_peer(name: str, incarnation: int = 1, ops: dict[str, str] | None = None) -> Peer:
    boards: dict[str, ORMap[Any]] = {wc.QUEUE: ORMap(LWWRegister), wc.RESULTS: ORMap(LWWRegister),
                                     wc.INTENTS: ORMap(GSet), wc.MEMBERS: ORMap(LWWRegister)}
    core = WarpCore(name, f"{name}@{incarnation}", incarnation, config=CFG, role="worker",
                    queue=boards[wc.QUEUE], results=boards[wc.RESULTS], intents=boards[wc.INTENTS],
                    members=boards[wc.MEMBERS], ops=_Ops(ops or {"echo": "thread"}), rng=random.Random(7))
    core.observed = True
    core.started = True
    return Peer(name, incarnation, core, boards)


class Net:
    """Peers whose boards replicate when :meth:`sync` says so, on a clock the test moves."""

    def __init__(self, names: list[str], ops: dict[str, str] | None = None) -> None:
        self.peers = {n: make_peer(n, ops=ops) for n in names}
        self.now = 100.0
        self.up = set(names)
        self.enqueued = 0

    def __getitem__(self, name: str) -> Peer:
        return self.peers[name]

    def sync(self, among: set[str] | None = None) -> None:
        """Full replication among ``among`` (default: the peers up), then every core hears of it."""
        names = sorted(among if among is not None else self.up)
        for board in BOARDS:
            joined: ORMap[Any] | None = None
            for n in names:
                state = self.peers[n].boards[board]
                if joined is None:
                    joined = state.copy()
                else:
                    joined.join(state.copy())
            assert joined is not None
            for n in names:
                self.peers[n].boards[board].join(joined.copy())
        for n in names:
            p = self.peers[n]
            for m in names:  # the views each announced reach one another (heartbeat beacons)
                other = self.peers[m].announced
                if m != n and other is not None:
                    p.core.on_peer_view(self.now, m, other)
            p.core.on_members(self.now)
            p.apply()
            p.core.on_results(self.now, list(p.boards[wc.RESULTS].keys()))
            p.apply()
            p.core.on_queue(self.now, None)
            p.apply()

    def membership(self, name: str, live: set[str]) -> None:
        p = self.peers[name]
        p.core.set_membership(self.now, frozenset(live), frozenset(live))
        p.apply()

    def converge(self, live: set[str] | None = None) -> None:
        """Every peer up sees ``live`` (default: the peers up) and their views agree, past the settle window."""
        live = live if live is not None else set(self.up)
        for _ in range(3):
            for n in sorted(self.up):
                self.membership(n, live)
            self.sync()
        self.advance(CFG.settle_window + 0.01)  # past the settle window (and the view publish gap)
        self.sync()
        for n in sorted(self.up):
            self.membership(n, live)
        assert all(not self.peers[n].core.contested(self.now) for n in self.up)
        self.advance(2 * CFG.view_publish_gap)  # quiet since: the next view change is published at once

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for n in sorted(self.up):
            self.peers[n].core.tick(self.now)
            self.peers[n].apply()

    def enqueue(self, at: str, task: str, *, pin: str | None = None, op: str = "echo") -> TaskDescriptor:
        self.enqueued += 1
        desc = TaskDescriptor(op=op, args=({"task": task},), run=f"{at}@1:{self.enqueued}", pin=pin,
                              enqueued_by=at)
        p = self.peers[at]
        p.core.enqueue(self.now, task, desc)
        p.apply()
        p.core.consider(self.now, [task])
        p.apply()
        return desc

    def take_all(self, name: str, finish: bool = True) -> list[str]:
        """Start (and by default finish) every run the peer has claimed; returns the task ids."""
        p = self.peers[name]
        started = []
        while (item := p.core.take_run()) is not None:
            task, desc = item
            p.core.run_started(self.now, task, desc, "thread")
            p.ran.append(task)
            started.append(task)
            if finish:
                self.finish(name, task, desc)
        p.apply()
        return started

    def finish(self, name: str, task: str, desc: TaskDescriptor) -> None:
        p = self.peers[name]
        result = OpResult.success(desc.run, f"result-{task}", by=name)
        p.core.run_finished(self.now, task, desc, pack(result.to_wire()), True, result)
        p.core.run_ended(task, desc.run)
        p.apply()

    def kill(self, name: str) -> None:
        self.up.discard(name)

    def majority(self, name: str) -> None:
        """Tell ``name`` that a majority holds every answer it was waiting on."""
        p = self.peers[name]
        waits, p.majority_waits = p.majority_waits, []
        for task, run in waits:
            p.core.majority_held(self.now, task, run)
        p.apply()


def owner_of(task: str, peers: set[str]) -> str:
    o = TaskRing(peers, vnodes=CFG.vnodes, seed=CFG.ring_seed).owner(task)
    assert o is not None
    return o


def task_owned_by(peers: set[str], want: str, prefix: str = "task", avoid: str | None = None,
                  among: set[str] | None = None) -> str:
    """A task id whose ring owner over ``peers`` is ``want`` (and, given ``among``, whose owner over
    ``among`` is not ``avoid``)."""
    for i in range(10_000):
        t = f"{prefix}-{i}"
        if owner_of(t, peers) != want:
            continue
        if among is not None and owner_of(t, among) == avoid:
            continue
        return t
    raise AssertionError("no such task id")


# -- a task runs on its ring owner only ------------------------------------------------------
@pytest.mark.parametrize(("peers", "enqueued_at", "n_tasks"), [
    (["a", "b", "c"], "a", 12),
    (["a", "b", "c"], "c", 12),
    (["p1", "p2", "p3", "p4", "p5"], "p3", 20),
    (["solo"], "solo", 3),
])
def test_a_task_runs_on_its_ring_owner_only(peers: list[str], enqueued_at: str, n_tasks: int) -> None:
    net = Net(peers)
    net.converge()
    tasks = [f"own-{i}" for i in range(n_tasks)]
    for t in tasks:
        net.enqueue(enqueued_at, t)
    net.sync()
    ran = {n: net.take_all(n) for n in peers}
    for t in tasks:
        assert [n for n in peers if t in ran[n]] == [owner_of(t, set(peers))], t
    claimed = [e for n in peers for e in net[n].events if e.kind == ev.CLAIMED]
    assert sorted(e.job for e in claimed if e.job is not None) == sorted(tasks)


def test_a_task_pinned_to_a_peer_runs_there_whoever_owns_it() -> None:
    net = Net(["a", "b", "c"])
    net.converge()
    t = task_owned_by({"a", "b", "c"}, "a")
    net.enqueue("b", t, pin="c")
    net.sync()
    assert {n: net.take_all(n) for n in "abc"} == {"a": [], "b": [], "c": [t]}


# -- contested claims settle to the owner among claimants ------------------------------------
@pytest.mark.parametrize(("peers", "lagging", "newcomer"), [
    # ``newcomer`` just joined: the others see it, but ``lagging``'s roster does not list it yet
    # (it does hear from it). Both believe they own the newcomer's tasks and claim them; after the
    # window the ring owner among the claimants runs each task, and the other stands down.
    (["a", "b", "c"], "a", "c"),
    (["b", "c", "zz"], "b", "zz"),  # the lowest id is not the winner
    (["p1", "p2", "p3", "p4"], "p4", "p1"),
])
def test_contested_claims_settle_to_the_owner_among_claimants(peers: list[str], lagging: str, newcomer: str) -> None:
    full = set(peers)
    net = Net(peers)
    net.converge()
    partial = full - {newcomer}
    tasks = [task_owned_by(full, newcomer, prefix=f"contest-{i}") for i in range(30)]
    tasks = [t for t in tasks if owner_of(t, partial) == lagging][:4]
    assert tasks
    lag = net[lagging].core
    lag.set_membership(net.now, frozenset(partial), frozenset(full))
    net[lagging].apply()
    net.sync()
    for t in tasks:
        net.enqueue(newcomer, t)
    net.sync()  # both claim
    net.sync()  # each side's claim note reaches the other
    assert all(net[n].core.contested(net.now) for n in (lagging, newcomer))
    net.advance(CFG.settle_window + 0.01)
    ran = {n: net.take_all(n) for n in peers}
    for t in tasks:
        runners = [n for n in peers if t in ran[n]]
        desc = net[newcomer].core.descriptor(t)
        assert desc is not None
        claimants = net[newcomer].core.claimants(desc.run)
        assert claimants == {lagging, newcomer}, (t, claimants)  # it really was contested
        assert runners == [owner_of(t, set(claimants))], (t, claimants, runners)
        assert runners == [winner(t, claimants, full, vnodes=CFG.vnodes)]
    settled = [e for n in peers for e in net[n].events if e.kind == ev.SETTLED]
    assert settled and all(e.peer == owner_of(e.job or "", set(e.detail["claimants"])) for e in settled)
    assert all(net[lagging].core.standby.get(t) for t in tasks)  # the loser stood down


# -- a dead owner's tasks move to its successor ----------------------------------------------
@pytest.mark.parametrize(("peers", "dead"), [(["a", "b", "c"], "c"), (["a", "b", "c", "d", "e"], "b")])
def test_a_dead_owners_tasks_move_to_its_successor(peers: list[str], dead: str) -> None:
    net = Net(peers)
    net.converge()
    tasks = [task_owned_by(set(peers), dead, prefix=f"orphan-{i}") for i in range(5)]
    for t in tasks:
        net.enqueue(dead, t)
    net.sync()
    net.kill(dead)  # it dies before running anything
    survivors = set(peers) - {dead}
    for n in sorted(survivors):
        net.membership(n, survivors)
    net.sync()
    net.advance(CFG.settle_window + 0.01)
    ran = {n: net.take_all(n) for n in sorted(survivors)}
    for t in tasks:
        assert [n for n in sorted(survivors) if t in ran[n]] == [owner_of(t, survivors)], t
    assert any(e.kind == ev.PEER_LOST and e.peer == dead for e in net[sorted(survivors)[0]].events)


# -- a returning peer is readmitted -----------------------------------------------------------
@pytest.mark.parametrize("forgotten", [False, True], ids=["still-listed", "forgotten-by-the-mesh"])
def test_a_returning_peer_is_readmitted(forgotten: bool) -> None:
    net = Net(["a", "b", "c"])
    net.converge()
    net.kill("c")
    for n in ("a", "b"):
        net.membership(n, {"a", "b"})
    if forgotten:
        # Gone longer than lost_after: the others drop its members entry.
        for step in (0.0, CFG.heartbeat.lost_after + 1):
            net.advance(step)
            for n in ("a", "b"):
                net[n].core.housekeeping(net.now)
                net[n].apply()
        net.sync()
        assert "c@1" not in net["a"].boards[wc.MEMBERS]
    # c comes back (same incarnation: a partition healed) and exchanges boards with the rest.
    net.up.add("c")
    net.sync()
    net.sync()
    if forgotten:
        # The others had dropped c's entry; c sees it missing and publishes it again.
        assert "c@1" in net["a"].boards[wc.MEMBERS]
    net.converge()
    assert all(net[n].core.workers == {"a", "b", "c"} for n in "abc")
    assert any(e.kind == ev.PEER_READMITTED and e.peer == "c" for e in net["a"].events)
    t = task_owned_by({"a", "b", "c"}, "c", prefix="back")
    net.enqueue("a", t)
    net.sync()
    assert {n: net.take_all(n) for n in "abc"} == {"a": [], "b": [], "c": [t]}


# -- an answer leaves the queue only once a majority holds it, on every path -----------------
def _path_run(net: Net, t: str) -> str:
    net.enqueue("a", t, pin="a")
    net.take_all("a")
    return "a"


def _path_cancel(net: Net, t: str) -> str:
    net.enqueue("a", t, pin="b")
    net.sync()
    assert net["a"].core.cancel(net.now, t, "cancelled") == "cancelled"
    net["a"].apply()
    return "a"


def _path_deadline(net: Net, t: str) -> str:
    desc = net.enqueue("a", t, pin="a")
    item = net["a"].core.take_run()
    assert item is not None
    net["a"].core.expire(net.now, t, desc, "deadline passed")
    net["a"].apply()
    return "a"


def _path_late_duplicate(net: Net, t: str) -> str:
    # b runs the task too (a stale claim) and finishes after a's answer reached it: b leaves the
    # dequeue to the writer, whose majority wait is still out.
    desc = net.enqueue("a", t, pin="a")
    net.take_all("a")
    net.sync()
    net.finish("b", t, desc)
    assert t in net["b"].boards[wc.QUEUE] and not net["b"].majority_waits
    return "a"


def _path_adoption(net: Net, t: str) -> str:
    # c answers and dies before dequeuing; the owner adopts the answer.
    owner = owner_of(t, {"a", "b"})
    desc = net.enqueue("c", t, pin="c")
    net.take_all("c")
    net.sync()
    net.kill("c")
    for n in ("a", "b"):
        net.membership(n, {"a", "b"})
    net.sync()
    net[owner].core.consider(net.now, [t])
    net[owner].apply()
    assert desc.pin == "c"
    return owner


PATHS = {"run": _path_run, "cancel": _path_cancel, "deadline": _path_deadline,
         "late-duplicate": _path_late_duplicate, "adoption": _path_adoption}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_an_answer_leaves_the_queue_only_once_a_majority_holds_it(path: str) -> None:
    net = Net(["a", "b", "c"])
    net.converge()
    t = f"majority-{path}"
    writer = PATHS[path](net, t)
    p = net[writer]
    assert t in p.boards[wc.RESULTS], "the path wrote an answer"
    assert t in p.boards[wc.QUEUE], "the task left the queue before a majority held its answer"
    assert (t, p.core.descriptor(t).run) in p.majority_waits, "no majority wait for the answer"  # type: ignore[union-attr]
    # Nothing else makes it leave before then: more deltas, a re-claim pass.
    net.sync(net.up - {writer} | {writer})
    p.core.housekeeping(net.now)
    p.apply()
    assert t in p.boards[wc.QUEUE]
    net.majority(writer)
    assert t not in p.boards[wc.QUEUE], "the majority was reached, the task should leave the queue"


# -- an answer whose writer died is adopted --------------------------------------------------
@pytest.mark.parametrize(("writer_fate", "adopted"), [
    ("alive", False),  # its writer dequeues it: nobody else touches it
    ("dead", True),
    ("restarted", True),  # a new incarnation of the writer no longer waits for its old answer
])
def test_an_answer_whose_writer_died_is_adopted(writer_fate: str, adopted: bool) -> None:
    net = Net(["a", "b", "c"])
    net.converge()
    t = task_owned_by({"a", "b"}, "a", prefix="adopt")
    desc = net.enqueue("c", t, pin="c")
    net.take_all("c")  # c writes the answer; its majority wait never completes
    net.sync()
    if writer_fate != "alive":
        net.kill("c")
        for n in ("a", "b"):
            net.membership(n, {"a", "b"})
    if writer_fate == "restarted":
        net.peers["c"] = make_peer("c", incarnation=2)
        net.up.add("c")
        net.converge()
    net.sync()
    # Whoever sees to the task: the pinned peer if it is back, else the ring owner.
    adopter = net["c" if writer_fate == "restarted" else "a"]
    adopter.core.consider(net.now, [t])
    adopter.apply()
    adopt = [e for n in sorted(net.up) for e in net[n].events if e.kind == ev.ADOPTED and e.job == t]
    # (While c@2 rejoins, a peer may adopt before views agree: adopting twice writes the same answer.)
    assert bool(adopt) is adopted
    assert ((t, desc.run) in adopter.majority_waits) is adopted
    if adopted:
        reg = adopter.boards[wc.RESULTS].get(t)
        assert reg is not None and reg.replica == adopter.replica  # rewritten as the adopter's own update
        assert adopt[0].peer == "c"
        net.majority(adopter.name)
        assert t not in adopter.boards[wc.QUEUE]
    else:
        assert t in adopter.boards[wc.QUEUE]


# -- stolen tasks run once at steady membership ----------------------------------------------
def _backlog(net: Net, owner: str, n: int, thief: str) -> list[str]:
    tasks = [task_owned_by({owner, thief}, owner, prefix=f"steal-{i}") for i in range(n)]
    for t in tasks:
        net.enqueue(owner, t)
    net[owner].core.costs.observe("echo", 1.0)  # a second each: a backlog worth sharing
    return tasks


def _deliver(net: Net, src: str, dst: str, drop: bool = False, twice: bool = False) -> None:
    frames, net[src].frames = net[src].frames, []
    for peer, data in frames:
        assert peer == dst
        if drop:
            continue
        for _ in range(2 if twice else 1):
            net[dst].core.on_steal(net.now, src, data)
            net[dst].apply()


@pytest.mark.parametrize("weather", ["clear", "grant-duplicated", "grant-lost", "grant-late"])
def test_stolen_tasks_run_once_at_steady_membership(weather: str) -> None:
    net = Net(["a", "b"])
    net.converge()
    tasks = _backlog(net, "a", 10, "b")
    net.sync()
    a, b = net["a"], net["b"]
    assert b.core.steal_attempt(net.now)
    b.apply()
    _deliver(net, "b", "a")  # the request
    if weather == "grant-lost":
        _deliver(net, "a", "b", drop=True)
    elif weather == "grant-late":
        net.now += CFG.steal_timeout + 0.01
        assert b.core.steal_attempt(net.now)  # gave up on it and asked again
        b.apply()
        late, a.frames = a.frames, []
        _deliver(net, "b", "a")  # the second request
        for _, data in late:  # the first grant arrives after all
            b.core.on_steal(net.now, "a", data)
            b.apply()
        _deliver(net, "b", "a")  # b tells a it did not take the late tasks
        _deliver(net, "a", "b")
    else:
        _deliver(net, "a", "b", twice=weather == "grant-duplicated")
    if weather == "grant-lost":
        net.now += CFG.steal_timeout + 0.01
        assert b.core.steal_attempt(net.now)  # gives up, asks again: the owner takes the lost ones back
        b.apply()
        _deliver(net, "b", "a")
        _deliver(net, "a", "b")
    assert any(e.kind == ev.STOLEN for e in a.events)
    for _ in range(3):
        net.take_all("a")
        net.take_all("b")
        net.sync()
        net.majority("a")
        net.majority("b")
        net.sync()
    runs = Counter(a.ran + b.ran)
    assert sorted(runs) == sorted(tasks), "every task ran"
    assert max(runs.values()) == 1, f"a task ran twice: {runs}"
    if weather in ("clear", "grant-duplicated"):
        assert b.ran, "the thief got some work"
    assert not a.boards[wc.QUEUE].keys()


# -- a pinned or running task is never stolen ------------------------------------------------
def test_a_pinned_or_running_task_is_never_stolen() -> None:
    net = Net(["a", "b"])
    net.converge()
    free = _backlog(net, "a", 6, "b")
    pinned = [f"pinned-{i}" for i in range(6)]
    for t in pinned:  # at the back of the backlog, where grants are taken from
        net.enqueue("a", t, pin="a")
    net.sync()
    a = net["a"]
    running = []
    for _ in range(2):  # two runs start on a (taken off the backlog, not finished)
        item = a.core.take_run()
        assert item is not None
        a.core.run_started(net.now, item[0], item[1], "thread")
        running.append(item[0])
    a.apply()
    assert net["b"].core.steal_attempt(net.now)
    net["b"].apply()
    _deliver(net, "b", "a")
    _deliver(net, "a", "b")
    stolen = {e.job for e in a.events if e.kind == ev.STOLEN}
    assert stolen, "some of the free backlog was granted"
    assert stolen <= set(free) - set(running)
    assert not stolen & set(pinned)
    assert not stolen & set(running)


# -- claim.decide and claim.winner, directly -------------------------------------------------
RING3 = TaskRing({"a", "b", "c"}, vnodes=CFG.vnodes)


def _desc(pin: str | None = None) -> TaskDescriptor:
    return TaskDescriptor(op="echo", args=(), run="r1", pin=pin)


def _t(owner: str) -> str:
    return task_owned_by({"a", "b", "c"}, owner, prefix="decide")


@pytest.mark.parametrize(("me", "owner", "pin", "contested", "claimants", "strategy", "eligible", "want"), [
    ("a", "a", None, False, (), ClaimStrategy.INTENT, None, Decision.RUN),  # steady owner runs at once
    ("b", "a", None, False, (), ClaimStrategy.INTENT, None, Decision.SKIP),  # not ours
    ("a", "a", None, True, (), ClaimStrategy.INTENT, None, Decision.SETTLE),  # views may differ
    ("a", "a", None, False, ("b",), ClaimStrategy.INTENT, None, Decision.SETTLE),  # a rival claimed
    ("b", "a", None, False, ("b",), ClaimStrategy.INTENT, None, Decision.SETTLE),  # our claim binds
    ("b", "a", "b", False, (), ClaimStrategy.INTENT, None, Decision.RUN),  # pinned here
    ("a", "a", "b", True, ("a",), ClaimStrategy.INTENT, None, Decision.SKIP),  # pinned elsewhere
    ("a", "a", None, True, ("b",), ClaimStrategy.RING, None, Decision.RUN),  # RING ignores contention
    ("b", "a", None, False, (), ClaimStrategy.RING, None, Decision.SKIP),
    ("b", "a", None, False, (), ClaimStrategy.INTENT, {"b", "c"}, "owner-among-eligible"),
])
def test_claim_decide_table(me: str, owner: str, pin: str | None, contested: bool, claimants: tuple[str, ...],
                            strategy: ClaimStrategy, eligible: set[str] | None, want: Decision | str) -> None:
    task = _t(owner)
    view = ClaimView(me, RING3, contested, strategy)
    got = decide(task, _desc(pin), view, frozenset(claimants), frozenset(eligible) if eligible else None)
    if want == "owner-among-eligible":
        assert eligible is not None
        want = Decision.RUN if RING3.owner(task, frozenset(eligible)) == me else Decision.SKIP
    assert got is want


@pytest.mark.parametrize(("claimants", "live"), [
    ({"a", "b"}, {"a", "b", "c"}),
    ({"a", "b", "c"}, {"a", "b", "c"}),
    ({"a", "b", "c"}, {"b", "c"}),  # a dead claimant never wins
    ({"c"}, {"a", "b", "c"}),
])
def test_claim_winner_is_the_ring_owner_among_live_claimants(claimants: set[str], live: set[str]) -> None:
    for i in range(40):
        task = f"win-{i}"
        candidates = claimants & live
        assert winner(task, claimants, live, vnodes=CFG.vnodes) == owner_of(task, candidates)
    assert winner("x", {"a"}, {"b"}, vnodes=CFG.vnodes) is None


# -- the hot path's read caches never serve a stale entry ------------------------------------
def test_a_rewritten_task_or_answer_is_read_anew_and_a_new_ring_reassigns_owners() -> None:
    peers = ["a", "b", "c"]
    net = Net(peers)
    net.converge()
    owner = owner_of("again", set(peers))
    other = next(n for n in peers if n != owner)
    first = net.enqueue(other, "again")
    net.sync()
    assert net[owner].core.descriptor("again").run == first.run  # decoded, and remembered
    assert net.take_all(owner) == ["again"]
    net.sync()
    assert all(net[n].core.result_run("again") == first.run for n in peers)
    # The same task id again: a new run, a new queue entry and, once it ran, a new answer.
    second = net.enqueue(other, "again")
    net.sync()
    assert net[owner].core.descriptor("again").run == second.run
    assert net.take_all(owner) == ["again"]
    net.sync()
    assert all(net[n].core.result_run("again") == second.run for n in peers)
    # Remembered owners belong to one ring: when the owner leaves, its successor takes over.
    tasks = [task_owned_by(set(peers), owner, prefix=f"moved-{i}") for i in range(3)]
    for t in tasks:
        net.enqueue(other, t)  # every peer considers (and remembers an owner for) each of them
    net.sync()
    net.kill(owner)
    survivors = set(peers) - {owner}
    for n in sorted(survivors):
        net.membership(n, survivors)
    net.sync()
    net.advance(CFG.settle_window + 0.01)
    ran = {n: net.take_all(n) for n in sorted(survivors)}
    for t in tasks:
        assert [n for n in sorted(survivors) if t in ran[n]] == [owner_of(t, survivors)], t


def test_a_stolen_task_stays_held_until_its_owner_confirmed_the_answer() -> None:
    """The thief's answer reached a majority without the owner (c, not a): however long that lasts,
    the task stays in the thief's `held`, or the owner would take it back and run it again."""
    net = Net(["a", "b", "c"])
    net.converge()
    everyone = {"a", "b", "c"}
    tasks = [task_owned_by(everyone, "a", prefix=f"held-{i}") for i in range(8)]
    for t in tasks:
        net.enqueue("a", t)
    a, b = net["a"], net["b"]
    a.core.costs.observe("echo", 1.0)
    net.sync()
    b.core._backlogs["a"] = (100.0, net.now)  # a reported the biggest backlog: b asks it
    assert b.core.steal_attempt(net.now)
    b.apply()
    _deliver(net, "b", "a")
    _deliver(net, "a", "b")
    stolen = sorted(t for t in tasks if t in b.core.stolen)
    assert stolen, "b was granted some of a's backlog"
    net.take_all("b")
    net.sync({"b", "c"})  # the answers reach c, not a
    waits, b.majority_waits = b.majority_waits, []
    for t, run in waits:
        b.core.majority_held(net.now, t, run, 7)  # batch 7 of b's results stream carried them
    b.apply()
    net.sync({"b", "c"})
    b.core.results_confirmed({"a": 6, "c": 7})
    net.now += 60.0  # far past any grace period
    b.core.housekeeping(net.now)
    b.apply()
    assert all(t in b.core.stolen for t in stolen), "dropped from `held` before the owner had the answer"
    for _ in range(50):
        a.core.costs.observe("echo", 1e-6)  # a's backlog is now too small to grant: it keeps what it takes back
    for _ in range(2):  # b asks again, twice (a grant between); `held` still lists them
        b.core._backlogs["a"] = (100.0, net.now)
        assert b.core.steal_attempt(net.now)
        b.apply()
        _deliver(net, "b", "a")
        _deliver(net, "a", "b")
    net.take_all("a")
    assert not set(a.ran) & set(stolen), "the owner took back and ran again a task the thief answered"
    b.core.results_confirmed({"a": 7, "c": 7})
    b.core.housekeeping(net.now)
    b.apply()
    assert not set(b.core.stolen) & set(stolen), "held forever once the owner confirmed"
