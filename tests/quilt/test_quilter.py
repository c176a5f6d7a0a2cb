"""Quilter: replicas converge under drop, duplication, reordering, partitions and restarts."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.quilt import Quilter, QuilterConfig, QuilterCore, QuiltKind
from warpmesh.sim import run_virtual
from warpmesh.wire import encode_frame

from .lattice import CODEC, MaxMap

FAST = QuilterConfig(anti_entropy_interval=0.2, resend_after=0.1, evict_after=5.0)


async def _mesh(fabric: MemoryFabric, names: list[str], seed: int = 0) -> dict[str, Quilter[MaxMap]]:
    out = {}
    for i, name in enumerate(names):
        seam = fabric.join(name)
        q = Quilter(seam, MaxMap(), stream=f"{name}@{seam.incarnation}", codec=CODEC, config=FAST,
                    rng=random.Random(seed * 100 + i))
        out[name] = await q.start()
    return out


async def _converged(qs: dict[str, Quilter[MaxMap]], want: MaxMap, timeout: float = 20.0) -> None:
    for q in qs.values():
        await q.wait_for(lambda s: s == want, timeout=timeout)


def test_mutations_reach_every_replica() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=1)
        qs = await _mesh(fabric, ["a", "b", "c"])
        want = MaxMap()
        for i in range(30):
            name = "abc"[i % 3]
            qs[name].mutate(lambda s, i=i: s.put(f"k{i % 7}", i))
            want.put(f"k{i % 7}", i)
            await asyncio.sleep(0.001)
        await _converged(qs, want, timeout=2.0)
        for q in qs.values():
            await q.close()
        await fabric.close()

    run_virtual(main())


def test_many_local_mutations_coalesce_into_one_frame() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=2)
        qs = await _mesh(fabric, ["a", "b"])
        await asyncio.sleep(0.01)
        before = qs["a"].core.stats["out_delta"]
        for i in range(500):
            qs["a"].mutate(lambda s, i=i: s.put(f"k{i}", i))
        await qs["b"].wait_for(lambda s: len(s.items) == 500, timeout=1.0)
        assert qs["a"].core.stats["out_delta"] - before == 1
        for q in qs.values():
            await q.close()
        await fabric.close()

    run_virtual(main())


def test_a_linger_joins_changes_spread_over_time_and_hurry_ends_it() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=3)
        qs = await _mesh(fabric, ["a", "b"])
        a, b = qs["a"], qs["b"]
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        before = a.core.stats["out_delta"]
        a.linger = 0.1
        for i in range(4):  # 30 ms apart: without the hold, four deltas
            a.mutate(lambda s, i=i: s.put(f"k{i}", i))
            await asyncio.sleep(0.03)
        await b.wait_for(lambda s: len(s.items) == 4, timeout=1.0)
        assert a.core.stats["out_delta"] - before == 1
        # hurry: what is held leaves now, not when the hold would have ended.
        a.linger = 10.0
        a.mutate(lambda s: s.put("late", 1))
        await asyncio.sleep(0.01)
        t0 = loop.time()
        a.hurry()
        await b.wait_for(lambda s: "late" in s.items, timeout=1.0)
        assert loop.time() - t0 < 0.05 and a.linger == 0.0
        for q in qs.values():
            await q.close()
        await fabric.close()

    run_virtual(main())


@pytest.mark.parametrize("seed", range(8))
def test_converges_under_drop_duplicate_reorder_and_partition(seed: int) -> None:
    async def main() -> None:
        rng = random.Random(seed)
        fabric = MemoryFabric(seed=seed, faults=LinkFaults(drop=0.3, duplicate=0.2, reorder=0.3, jitter=0.01))
        names = ["a", "b", "c", "d"]
        qs = await _mesh(fabric, names, seed)
        want = MaxMap()
        for step in range(120):
            if step == 30:
                fabric.partition({"a", "b"}, {"c", "d"})
            if step == 80:
                fabric.heal()
            name = rng.choice(names)
            key, val = f"k{rng.randrange(20)}", rng.randrange(1000)
            qs[name].mutate(lambda s, key=key, val=val: s.put(key, val))
            want.put(key, val)
            await asyncio.sleep(rng.random() * 0.02)
        fabric.calm()
        await _converged(qs, want)
        for q in qs.values():
            await q.close()
        await fabric.close()

    run_virtual(main())


def test_restarted_replica_gets_full_state_back() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=5)
        qs = await _mesh(fabric, ["a", "b", "c"])
        want = MaxMap()
        for i in range(20):
            qs["abc"[i % 3]].mutate(lambda s, i=i: s.put(f"k{i}", i))
            want.put(f"k{i}", i)
        await _converged(qs, want)
        await qs["c"].close()
        fabric.crash("c")
        qs["a"].mutate(lambda s: s.put("while-down", 1))
        want.put("while-down", 1)
        seam = fabric.join("c")
        qs["c"] = await Quilter(seam, MaxMap(), stream=f"c@{seam.incarnation}", codec=CODEC,
                                config=FAST).start()
        await _converged(qs, want, timeout=5.0)
        assert qs["c"].core.stats["states_in"] >= 1
        for q in qs.values():
            await q.close()
        await fabric.close()

    run_virtual(main())


def test_settled_round_is_small() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=6)
        qs = await _mesh(fabric, ["a", "b", "c"])
        for i in range(2000):
            qs["a"].mutate(lambda s, i=i: s.put(f"key-{i}", i))
        await _converged(qs, qs["a"].state.copy())
        await asyncio.sleep(2.0)
        start_bytes = fabric.bytes_sent
        start_rounds = sum(q.core.stats["out_digest"] for q in qs.values())
        await asyncio.sleep(10.0)
        rounds = sum(q.core.stats["out_digest"] for q in qs.values()) - start_rounds
        per_round = (fabric.bytes_sent - start_bytes) / rounds
        heartbeat_free = per_round
        assert rounds >= 30
        assert heartbeat_free < 100, per_round  # a digest, nothing else
        assert all(q.core.stats["digest_match"] > 0 for q in qs.values())
        for q in qs.values():
            await q.close()
        await fabric.close()

    run_virtual(main())


def test_core_refuses_hostile_frames_and_keeps_state() -> None:
    core = QuilterCore("a", "a@1", MaxMap({"x": 1}), CODEC)
    core.roster_changed({"a", "b"}, 0.0)
    hostile = [
        b"",
        b"\x01\x01\xc1",
        encode_frame(QuiltKind.DELTA, "not a list"),
        encode_frame(QuiltKind.DELTA, ["b@1", -1, []]),
        encode_frame(QuiltKind.DELTA, ["b@1", 1, [["x", "not-int"]]]),
        encode_frame(QuiltKind.ACK, ["a@1", 10**9]),
        encode_frame(QuiltKind.RESEND, ["a@1", 1, 10**9]),
        encode_frame(QuiltKind.STATE, ["b@1", 0, True, 1, 0, 10**9, b"x"]),
        encode_frame(QuiltKind.STATE, ["b@1", 0, True, 1, 5, 2, b"x"]),
        encode_frame(99, []),
    ]
    for frame in hostile:
        core.receive("b", frame, 1.0)
    assert core.stats["refused"] == len(hostile)
    assert core.state == MaxMap({"x": 1})


def test_gap_triggers_resend_request_and_lost_tail_is_repaired_by_digest() -> None:
    a = QuilterCore("a", "a@1", MaxMap(), CODEC, config=FAST)
    b = QuilterCore("b", "b@1", MaxMap(), CODEC, config=FAST)
    a.roster_changed({"a", "b"}, 0.0)
    b.roster_changed({"a", "b"}, 0.0)
    a.take_outbox(), b.take_outbox()
    frames = []
    for i in range(1, 4):
        a.mutate(lambda s, i=i: s.put(f"k{i}", i))
        a.flush(0.0)
        frames += [f for _, f in a.take_outbox()]
    b.receive("a", frames[0], 0.0)
    b.receive("a", frames[2], 0.0)  # frame 2 lost: gap
    assert not [f for _, f in b.take_outbox() if f[1] == QuiltKind.RESEND]  # it may only be reordered
    b.tick(FAST.resend_after)  # the gap outlived the grace: ask for it
    [(peer, req)] = [(p, f) for p, f in b.take_outbox() if f[1] == QuiltKind.RESEND]
    assert peer == "a"
    a.receive("b", req, 0.0)
    for _, f in a.take_outbox():
        b.receive("a", f, 0.0)
    assert b.state == a.state
    # Lost tail: the last batch never arrives; the origin's digest reveals it.
    a.mutate(lambda s: s.put("tail", 9))
    a.flush(0.0)
    a.take_outbox()
    a._send_digest("b")
    b.receive("a", a.take_outbox()[0][1], 1.0)
    b.tick(1.0 + FAST.resend_after)
    [(peer, req)] = [(p, f) for p, f in b.take_outbox() if f[1] == QuiltKind.RESEND]
    a.receive("b", req, 1.0)
    for _, f in a.take_outbox():
        b.receive("a", f, 1.0)
    assert b.state == a.state


def _pump(cores: dict[str, QuilterCore[Any]], now: float, dead: set[str], kinds: Counter[int] | None = None) -> None:
    """Deliver every frame in every outbox (to live peers only) until all outboxes are empty.

    ``kinds``, if given, counts the bytes delivered by frame kind.
    """
    moved = True
    while moved:
        moved = False
        for name, core in cores.items():
            for peer, frame in core.take_outbox():
                moved = True
                targets = [p for p in cores if p != name] if peer is None else [peer]
                for t in targets:
                    if t not in dead:
                        if kinds is not None:
                            kinds[frame[1]] += len(frame)
                        cores[t].receive(name, frame, now)


def test_a_dead_origins_batch_held_by_one_peer_reaches_the_others_under_sustained_load() -> None:
    # c's last batch reached a only, then c died: no resend can come from c. a and b mutate every
    # round (busy peers send no state digest, and their frontiers never stand still), so only the
    # frontier exchange notices that b lacks what a holds of a closed stream.
    cfg = QuilterConfig(anti_entropy_interval=0.2, resend_after=0.1, evict_after=20.0, frontier_interval=3.0)
    cores = {n: QuilterCore(n, f"{n}@1", MaxMap(), CODEC, config=cfg) for n in "abc"}
    for core in cores.values():
        core.roster_changed({"a", "b", "c"}, 0.0)
    _pump(cores, 0.0, set())
    cores["c"].mutate(lambda s: s.put("from-c", 1))
    cores["c"].flush(0.0)
    for peer, frame in cores["c"].take_outbox():
        for t in (["a", "b"] if peer is None else [peer]):
            if t == "a":
                cores["a"].receive("c", frame, 0.0)
    _pump(cores, 0.0, {"c"})
    assert cores["a"].state.items.get("from-c") == 1 and cores["b"].state.items.get("from-c") is None
    live = {"a": cores["a"], "b": cores["b"]}
    for core in live.values():
        core.roster_changed({"a", "b"}, 0.1)
    now, step = 0.1, 0.05
    while now < 30.0 and cores["b"].state.items.get("from-c") is None:
        now += step
        for name, core in live.items():
            core.mutate(lambda s, name=name, now=now: s.put(f"busy-{name}", int(now * 1000)))
            core.flush(now)
            core.tick(now)
        _pump(live, now, {"c"})
    assert cores["b"].state.items.get("from-c") == 1, "b never received the dead origin's batch"
    assert now < 12.0, f"took {now:.1f} s"
    assert cores["a"].stats["frontier_repairs"] >= 1
