"""Membership work that must not grow with the mesh (issue 16): shared rings, cached views, no
redundant roster gossip, counters that flush less often in big meshes."""

from __future__ import annotations

import random
from typing import Any

from warpmesh.crdt import GSet, LWWRegister, ORMap
from warpmesh.warp import core as wc
from warpmesh.warp.core import WarpConfig, WarpCore, counter_interval
from warpmesh.warp.ring import TaskRing, ring_for
from warpmesh.wire.frame import pack

CFG = WarpConfig(settle_window=0.3)


class _Ops:
    def __init__(self, names: list[str]) -> None:
        self._names = names

    def names(self) -> list[str]:
        return sorted(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def resolve(self, name: str) -> Any:
        return None


class _Peer:
    """One core whose members board has a change counter, as the runtime's Quilter gives it."""

    def __init__(self, name: str, ops: list[str] | None = None) -> None:
        self.name = name
        self.version = 0
        self.boards: dict[str, ORMap[Any]] = {wc.QUEUE: ORMap(LWWRegister), wc.RESULTS: ORMap(LWWRegister),
                                              wc.INTENTS: ORMap(GSet), wc.MEMBERS: ORMap(LWWRegister)}
        self.ops = _Ops(ops if ops is not None else ["echo"])
        self.core = WarpCore(name, f"{name}@1", 1, config=CFG, role="worker", queue=self.boards[wc.QUEUE],
                             results=self.boards[wc.RESULTS], intents=self.boards[wc.INTENTS],
                             members=self.boards[wc.MEMBERS], ops=self.ops, rng=random.Random(1),
                             members_version=lambda: self.version)
        self.core.started = True
        self.member_puts = 0
        self.announces = 0  # views this core asked its runtime to announce (heartbeat beacons)
        self.announced: str | None = None

    def apply(self) -> None:
        r = f"{self.name}@1"
        out = self.core.ready()
        if out.view is not None:
            self.announces += 1
            self.announced = out.view
        for m in out.mutations:
            board = self.boards[m.board]
            if m.op == wc.PUT:
                board.update(r, m.key, lambda cur, v=m.value: cur.set(r, v))
            elif m.op == wc.REMOVE:
                board.remove(m.key)
            if m.board == wc.MEMBERS:
                self.version += 1
                self.member_puts += m.op == wc.PUT

    def hear(self, other: _Peer) -> None:
        """``other``'s members board and its announced view reach us, and the core hears of them."""
        if other.announced is not None:
            self.core.on_peer_view(0.0, other.name, other.announced)
        self.boards[wc.MEMBERS].join(other.boards[wc.MEMBERS].copy())
        self.version += 1
        self.core.on_members(0.0)
        self.apply()


def _entry(peer: _Peer, **fields: Any) -> None:
    """Write ``peer``'s members entry as it would (a view or ops other than its real ones)."""
    r = f"{peer.name}@1"
    value = pack({"role": "worker", "ops": peer.ops.names(), **fields})
    peer.boards[wc.MEMBERS].update(r, r, lambda cur: cur.set(r, value))
    peer.version += 1


def _pair() -> tuple[_Peer, _Peer]:
    a, b = _Peer("a"), _Peer("b")
    both = frozenset({"a", "b"})
    for _ in range(2):
        for p in (a, b):
            p.core.set_membership(0.0, both, both, force_publish=True)
            p.apply()
        a.hear(b)
        b.hear(a)
    return a, b


def test_one_ring_is_built_per_worker_set_and_shared() -> None:
    first = ring_for(frozenset({"p1", "p2", "p3"}))
    assert ring_for(frozenset({"p3", "p1", "p2"})) is first  # rebuilt only for a new set
    assert ring_for(frozenset({"p1", "p2"})) is not first
    assert first == TaskRing(["p1", "p2", "p3"])
    plain = TaskRing(["p1", "p2", "p3"])
    assert [first.owner(f"t{i}") for i in range(300)] == [plain.owner(f"t{i}") for i in range(300)]


def test_peers_with_the_same_view_share_one_ring() -> None:
    a, b = _pair()
    assert a.core.workers == b.core.workers == frozenset({"a", "b"})
    assert a.core.ring is b.core.ring


def test_an_unchanged_member_entry_is_not_published_again() -> None:
    a, _ = _pair()
    puts = a.member_puts
    for _ in range(3):
        a.core.publish_member()
        a.core.set_membership(1.0, frozenset({"a", "b"}), frozenset({"a", "b"}), force_publish=True)
        a.apply()
    assert a.member_puts == puts
    a.core.set_member_field("warm", ["k1"])  # a real change is published
    a.apply()
    assert a.member_puts == puts + 1
    # Forgotten by a peer (its entry removed): published again.
    a.boards[wc.MEMBERS].remove("a@1")
    a.version += 1
    a.core.on_members(2.0)
    a.apply()
    assert a.member_puts == puts + 2 and "a@1" in a.boards[wc.MEMBERS]


def test_contention_follows_every_change_of_a_peers_announced_view() -> None:
    a, b = _pair()
    late = 10.0  # past the settle window of the last view change
    assert not a.core.contested(late)
    assert a.core.doubted_views() == []
    b.announced = "another-view"
    a.hear(b)
    assert a.core.contested(late)  # the cached answer was dropped with the view change
    assert a.core.doubted_views() == ["b"]  # the runtime asks b again, in case we missed a change
    b.announced = b.core.view
    a.hear(b)
    assert not a.core.contested(late)
    assert a.core.doubted_views() == []


def test_a_worker_whose_view_never_arrived_contests_ownership() -> None:
    a, _b = _pair()
    late = 10.0
    a.core.peer_views.clear()
    a.core.on_peer_view(late, "c", "unrelated")  # any change drops the cached answer
    assert a.core.contested(late) and a.core.doubted_views() == ["b"]


def test_eligibility_follows_every_change_of_a_peers_ops() -> None:
    a, b = _pair()
    assert a.core.eligible("echo") is None  # everyone has it
    _entry(b, ops=[])
    a.hear(b)
    assert a.core.eligible("echo") == frozenset({"a"})
    assert a.core.eligible("fresh") == frozenset()  # nobody has it
    a.ops._names.append("fresh")  # the local table changed: seen at once, before any republish
    assert a.core.eligible("fresh") == frozenset({"a"})
    _entry(b, ops=["echo"])
    a.hear(b)
    assert a.core.eligible("echo") is None  # b has it again


def test_counters_flush_less_often_in_proportion_beyond_eight_peers() -> None:
    assert counter_interval(0.02, 2) == 0.02
    assert counter_interval(0.02, 8) == 0.02
    assert counter_interval(0.2, 32) == 0.2 * 4
    assert counter_interval(0.2, 64) == 0.2 * 8


def test_a_burst_of_view_changes_is_published_twice_and_an_isolated_one_at_once() -> None:
    a = _Peer("a")
    a.core.set_membership(0.0, frozenset({"a"}), frozenset({"a"}), force_publish=True)
    a.apply()
    puts = a.member_puts
    names = ["a"]
    # A mesh forming: eight peers appear one by one within 20 ms (their entries say "worker").
    for i, t in enumerate([1.0 + k * 0.0025 for k in range(8)]):
        p = _Peer(f"p{i}")
        p.core.set_membership(t, frozenset({p.name}), frozenset({p.name}), force_publish=True)
        p.apply()
        a.boards[wc.MEMBERS].join(p.boards[wc.MEMBERS].copy())
        a.version += 1
        names.append(p.name)
        a.core.set_membership(t, frozenset(names), frozenset(names))
        a.apply()
    announces = a.announces
    assert announces == 2  # at start, then the first change at once; the rest wait for the gap
    assert a.core.next_deadline() == 1.0 + CFG.view_publish_gap
    a.core.tick(1.0 + CFG.view_publish_gap)
    a.apply()
    assert a.announces == 3  # one more, carrying the view as it stands now
    assert a.announced == a.core.view == wc.view_digest(names)
    assert a.core.next_deadline() is None
    # Quiet for a while, then one change: announced at once, as before.
    names.remove("p3")
    a.core.set_membership(5.0, frozenset(names), frozenset(names))
    a.apply()
    assert a.announces == 4 and a.announced == wc.view_digest(names)
    # Views never touch the members board: its entry (role, ops) was written once, at start.
    assert a.member_puts == puts
