"""Quilter costs that must not grow with the mesh (issue 16): redundant resends, per-ack work."""

from __future__ import annotations

from warpmesh.quilt import QuilterConfig, QuilterCore, QuiltKind

from .lattice import CODEC, MaxMap
from .test_quilter import _pump

CFG = QuilterConfig(anti_entropy_interval=100.0, resend_after=0.1, evict_after=20.0)


def _linked_pair() -> dict[str, QuilterCore[MaxMap]]:
    """Two cores, a and b, that know each other and have exchanged their greetings."""
    cores = {n: QuilterCore(n, f"{n}@1", MaxMap(), CODEC, config=CFG) for n in "ab"}
    for core in cores.values():
        core.roster_changed({"a", "b"}, 0.0)
    _pump(cores, 0.0, set())
    return cores


def test_one_lost_batch_is_the_only_batch_resent() -> None:
    # Batch 2 of five never reaches b. b holds 1, 3, 4 and 5: its ack says so (selective ack), and
    # the origin's timed resend brings batch 2 alone, not every batch after the last cumulative ack.
    cores = _linked_pair()
    a, b = cores["a"], cores["b"]
    for i in range(1, 6):
        a.mutate(lambda s, i=i: s.put(f"k{i}", i))
        a.flush(0.0)
        for _peer, frame in a.take_outbox():
            if i != 2 and frame[1] == QuiltKind.DELTA:
                b.receive("a", frame, 0.0)
    b.flush(0.0)
    for _peer, frame in b.take_outbox():  # b's resend request is lost: only a's timer repairs the gap
        if frame[1] != QuiltKind.RESEND:
            a.receive("b", frame, 0.0)
    now = 0.0
    for _ in range(40):
        now += 0.05
        for core in cores.values():
            core.tick(now)
            core.flush(now)
        _pump(cores, now, set())
    assert b.state.items == a.state.items
    assert b.stats["deltas_redundant"] == 0, b.stats
    assert a.stats["out_resend"] == 1, a.stats


def test_a_reordered_batch_costs_no_resend() -> None:
    # Batch 2 overtakes batch 1 on the link (reordering, or a digest naming a batch still in flight):
    # asking for the gap at once made the origin resend what was about to arrive anyway.
    cores = _linked_pair()
    a, b = cores["a"], cores["b"]
    a.mutate(lambda s: s.put("k0", 0))  # b knows a's stream already (a stream met mid-way waits anyway)
    a.flush(0.0)
    _pump(cores, 0.0, set())
    frames = []
    for i in range(1, 3):
        a.mutate(lambda s, i=i: s.put(f"k{i}", i))
        a.flush(0.0)
        frames += [f for _, f in a.take_outbox()]
    a._send_digest("b")  # the digest names batch 2 too
    frames += [f for _, f in a.take_outbox()]
    b.receive("a", frames[1], 0.0)
    b.receive("a", frames[2], 0.0)
    b.tick(0.01)
    b.receive("a", frames[0], 0.02)  # 20 ms late
    for t in (0.05, 0.1, 0.2, 0.3):
        for core in cores.values():
            core.tick(t)
            core.flush(t)
        _pump(cores, t, set())
    assert b.state.items == a.state.items
    assert b.stats["out_resend_request"] == 0 and a.stats["out_resend"] == 0, (a.stats, b.stats)
    assert b.stats["deltas_redundant"] == 0


def test_a_peer_that_does_not_answer_gets_probes_not_the_whole_range_again() -> None:
    # b is cut off while a sends 10 batches: a resends them once, then probes with one batch per
    # (backed-off) round; after the cut heals, b catches up.
    cores = _linked_pair()
    a = cores["a"]
    for i in range(10):
        a.mutate(lambda s, i=i: s.put(f"k{i}", i))
        a.flush(0.0)
    a.take_outbox()
    now = 0.0
    while now < 6.0:  # b unreachable: everything a sends is lost
        now += 0.05
        a.tick(now)
        a.flush(now)
        a.take_outbox()
    assert a.stats["out_resend"] <= 10 + 8, a.stats["out_resend"]
    while now < 30.0 and cores["b"].state.items != a.state.items:
        now += 0.05
        for core in cores.values():
            core.tick(now)
            core.flush(now)
        _pump(cores, now, set())
    assert cores["b"].state.items == a.state.items


def test_replication_lag_counts_what_a_peer_has_not_confirmed_and_how_long_it_waited() -> None:
    # What the dashboard and /metrics show as a peer's replication lag: our batches it has not
    # confirmed and the age of the oldest; back to zero once it acknowledges them.
    cores = _linked_pair()
    a, b = cores["a"], cores["b"]
    assert a.replication_lag(0.0) == {"b": (0, 0.0)}
    for i, t in enumerate((1.0, 1.5, 2.0), 1):
        a.mutate(lambda s, i=i: s.put(f"k{i}", i))
        a.flush(t)
        a.take_outbox()  # lost on the way: b confirms nothing
    assert a.replication_lag(2.5) == {"b": (3, 1.5)}
    for i in range(4, 6):
        a.mutate(lambda s, i=i: s.put(f"k{i}", i))
        a.flush(3.0)
    _pump(cores, 3.0, set())  # b gets 4 and 5, asks for the rest; a resends; b confirms all
    now = 3.0
    for _ in range(20):
        now += 0.05
        for core in cores.values():
            core.tick(now)
            core.flush(now)
        _pump(cores, now, set())
    assert b.state.items == a.state.items
    assert a.replication_lag(now) == {"b": (0, 0.0)}
