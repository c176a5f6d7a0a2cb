"""The periodic re-claim pass skips tasks it already found owned elsewhere while nothing their decision
reads has changed (issue 16/18: with 10,000 tasks queued, every peer re-deciding every task every second
was a fifth of a busy mesh's CPU), and decides them all again as soon as something has."""

from __future__ import annotations

import random
from typing import Any

from warpmesh.crdt import GSet, LWWRegister, ORMap
from warpmesh.warp import core as wc
from warpmesh.warp.core import WarpCore
from warpmesh.wire import pack

from .test_core_guarantees import CFG, Net, Peer, _Ops, owner_of


class VersionedNet(Net):
    """The core-guarantees net, with board versions (as a runtime's Quilters give them): every sync
    and every local mutation counts as a change of every board."""

    def __init__(self, names: list[str]) -> None:
        self.version = 0
        super().__init__(names)
        for name in names:
            self.peers[name] = self._versioned(name)

    def _versioned(self, name: str, incarnation: int = 1) -> Peer:
        boards: dict[str, ORMap[Any]] = {wc.QUEUE: ORMap(LWWRegister), wc.RESULTS: ORMap(LWWRegister),
                                         wc.INTENTS: ORMap(GSet), wc.MEMBERS: ORMap(LWWRegister)}
        core = WarpCore(name, f"{name}@{incarnation}", incarnation, config=CFG, role="worker",
                        queue=boards[wc.QUEUE], results=boards[wc.RESULTS], intents=boards[wc.INTENTS],
                        members=boards[wc.MEMBERS], ops=_Ops({"echo": "thread"}), rng=random.Random(7),
                        members_version=lambda: self.version, intents_version=lambda: self.version)
        core.observed = True
        core.started = True
        return Peer(name, incarnation, core, boards)

    def sync(self, among: set[str] | None = None) -> None:
        self.version += 1
        super().sync(among)


def _queued_by(writer: str, prefix: str) -> tuple[VersionedNet, list[str]]:
    """Three converged peers, 60 tasks enqueued by ``writer`` and replicated to all."""
    net = VersionedNet(["a", "b", "c"])
    net.converge()
    tasks = [f"{prefix}{i}" for i in range(60)]
    for t in tasks:
        net.enqueue(writer, t)
    net.sync()
    return net, tasks


def test_a_reclaim_pass_skips_tasks_owned_elsewhere_until_the_ring_changes() -> None:
    net, tasks = _queued_by("a", "t")
    a = net["a"].core
    not_ours = [t for t in tasks if owner_of(t, {"a", "b", "c"}) != "a"]
    assert not_ours and len(not_ours) < len(tasks)
    a.claim_all(net.now)  # conditions fixed since the sync's full pass: what is owned elsewhere is skipped
    skipped = a.reclaim_skipped
    a.claim_all(net.now)
    assert a.reclaim_skipped - skipped == len(not_ours)
    assert set(a.claimed) == set(tasks) - set(not_ours)
    # c dies: the ring changes, so the next pass decides every task again and a takes c's share.
    net.kill("c")
    for n in ("a", "b"):
        net.membership(n, {"a", "b"})
    net.advance(CFG.settle_window + 0.01)
    a.claim_all(net.now)
    net["a"].apply()
    mine_now = {t for t in tasks if owner_of(t, {"a", "b"}) == "a"}
    assert mine_now - set(a.claimed) == set()
    assert mine_now - (set(tasks) - set(not_ours))  # some of them were c's


def test_an_answer_makes_a_quiet_task_count_again() -> None:
    net = VersionedNet(["a", "b", "c"])
    net.converge()
    t = next(f"q{i}" for i in range(100) if owner_of(f"q{i}", {"a", "b", "c"}) == "b")
    net.enqueue("a", t)
    net.sync()
    a = net["a"].core
    a.claim_all(net.now)
    assert t in a._quiet
    net.take_all("b")  # b answers; its delta reaches a (no other board changes: the same conditions)
    net["a"].boards[wc.RESULTS].join(net["b"].boards[wc.RESULTS].copy())
    a.on_results(net.now, [t])
    assert t not in a._quiet  # its cleanup is for the passes to decide again
    skipped = a.reclaim_skipped
    a.claim_all(net.now)
    assert a.reclaim_skipped == skipped


def test_another_peers_task_is_decided_without_building_its_descriptor() -> None:
    """A peer decides most of the queue (the tasks the ring gives to others, unpinned, unanswered)
    from the raw entry: no descriptor is built for them, while its own and pinned tasks are claimed."""
    net = VersionedNet(["a", "b", "c"])
    net.converge()
    tasks = [f"d{i}" for i in range(60)]
    for t in tasks:
        net.enqueue("b", t)
    pinned = next(t for t in (f"p{i}" for i in range(100)) if owner_of(t, {"a", "b", "c"}) == "b")
    net.enqueue("b", pinned, pin="a")
    net.sync()
    a = net["a"].core
    ours = {t for t in tasks if owner_of(t, {"a", "b", "c"}) == "a"}
    assert ours and len(ours) < len(tasks)
    a.claim_all(net.now)
    assert set(a.claimed) == ours | {pinned}
    assert set(a._descs) == ours | {pinned}  # the others' were never decoded
    assert set(tasks) - ours <= a._quiet


def test_our_own_answer_is_not_decoded_again_to_read_its_run(monkeypatch: Any) -> None:
    """The answered-run cache is keyed by the value's bytes object: reading the run of an answer
    this peer wrote costs no decode, and a different answer on the board is read afresh."""
    net = VersionedNet(["a", "b", "c"])
    net.converge()
    t = next(f"o{i}" for i in range(100) if owner_of(f"o{i}", {"a", "b", "c"}) == "a")
    desc = net.enqueue("a", t)
    net.take_all("a")
    a = net["a"].core
    decoded: list[object] = []
    real = wc.board_value
    monkeypatch.setattr(wc, "board_value", lambda reg: decoded.append(reg) or real(reg))
    assert a.result_run(t) == desc.run and decoded == []
    # Another answer replaces ours on the board (a later write): its run is read, not assumed.
    other = wc.OpResult.success("other-run", 1, by="b")
    net["a"].boards[wc.RESULTS].update("b@1", t, lambda cur: cur.set("b@1", pack(other.to_wire())))
    assert a.result_run(t) == "other-run" and len(decoded) == 1


def test_answered_tasks_waiting_to_leave_the_queue_are_passed_over_without_a_claim(monkeypatch: Any) -> None:
    """Until a majority holds an answer its task stays queued, and every re-claim pass meets it.
    Where the cleanup has nothing to do (our answer awaiting its majority; another writer's answer
    to a task neither the ring nor a pin gives us), the pass decides without the claim path; the
    owner of an answer whose writer is gone still adopts it."""
    net, tasks = _queued_by("b", "w")
    for n in ("a", "b", "c"):
        net.take_all(n)  # every owner answers; no majority is confirmed, so all stay queued
    net.sync()
    a = net["a"].core
    assert all(t in a.queue and a.result_run(t) is not None for t in tasks)
    claims: list[str] = []
    real = a._claim
    monkeypatch.setattr(a, "_claim", lambda now, t, *rest: claims.append(t) or real(now, t, *rest))
    a.claim_all(net.now)
    assert claims == []
    # c leaves for good: its answers may live on a minority, so their new ring owners adopt them.
    net.kill("c")
    for n in ("a", "b"):
        net.membership(n, {"a", "b"})
    a.claim_all(net.now)
    a_now = {t for t in tasks if owner_of(t, {"a", "b"}) == "a"}
    c_answered = {t for t in tasks if owner_of(t, {"a", "b", "c"}) == "c"}
    adopted = {t for t, _ in a._dequeuing} - {t for t in tasks if owner_of(t, {"a", "b", "c"}) == "a"}
    assert adopted == a_now & c_answered and adopted
    assert claims == []  # the cleanup ran without a claim being considered


def test_a_task_enqueued_here_is_decided_without_decoding_its_entry(monkeypatch: Any) -> None:
    """The enqueuing peer knows each new entry's descriptor (packed arguments, as a runtime builds
    them): deciding its own enqueues costs no decode, and it claims exactly what it would have
    claimed from decoded entries."""
    net = VersionedNet(["a", "b", "c"])
    net.converge()
    a = net["a"].core
    decoded: list[object] = []
    real = wc.board_value
    monkeypatch.setattr(wc, "board_value", lambda reg: decoded.append(reg) or real(reg))
    tasks = [f"e{i}" for i in range(40)]
    for t in tasks:
        desc = wc.TaskDescriptor(op="echo", run=f"a@1:{t}", enqueued_by="a", packed_args=pack([[t], {}]))
        a.enqueue(net.now, t, desc)
        net["a"].apply()
    a.consider(net.now, tasks)
    net["a"].apply()
    assert decoded == []
    ours = {t for t in tasks if owner_of(t, {"a", "b", "c"}) == "a"}
    assert ours and set(a.claimed) == ours
    assert set(tasks) - ours <= a._quiet
    item = a.take_run()
    assert item is not None and item[1].call_args() == ((item[0],), {})
    # A descriptor built without packed arguments is not what decoding its entry gives: read afresh.
    a.enqueue(net.now, "plain", wc.TaskDescriptor(op="echo", args=((1, 2),), run="a@1:plain", enqueued_by="a"))
    net["a"].apply()
    assert a.descriptor("plain") is not None and a.descriptor("plain").call_args() == (([1, 2],), {})
    assert len(decoded) == 1
