"""Quilter sync hooks: a late reader pulls a peer's whole state at once; delivery can be awaited."""

from __future__ import annotations

import asyncio
import random

import pytest

from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.quilt import Quilter, QuilterConfig, QuilterCore
from warpmesh.sim import run_virtual

from .lattice import CODEC, MaxMap

# Anti-entropy so slow that only the sync hooks can explain a prompt convergence.
SLOW_AE = QuilterConfig(anti_entropy_interval=60.0, resend_after=0.1, evict_after=120.0)


async def _join(fabric: MemoryFabric, name: str, state: MaxMap | None = None, seed: int = 0) -> Quilter[MaxMap]:
    seam = fabric.join(name)
    q = Quilter(seam, state or MaxMap(), stream=f"{name}@{seam.incarnation}", codec=CODEC, config=SLOW_AE,
                rng=random.Random(seed))
    return await q.start()


def test_sync_with_pulls_a_peers_whole_state_without_waiting_for_anti_entropy() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=1, faults=LinkFaults(delay=0.01))
        a = await _join(fabric, "a")
        for i in range(50):
            a.mutate(lambda s, i=i: s.put(f"k{i}", i))
        await asyncio.sleep(0.1)
        # The reader has a state of its own, so first-contact digests alone would not trigger an
        # exchange before several anti-entropy rounds (minutes here).
        reader = await _join(fabric, "reader", MaxMap({"mine": 7}), seed=1)
        await asyncio.sleep(0.05)
        assert len(reader.state.items) == 1
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await reader.sync_with("a", timeout=5.0)
        assert loop.time() - t0 < 0.5
        assert reader.state.items == {**{f"k{i}": i for i in range(50)}, "mine": 7}
        assert reader.core.synced_at("a") is not None
        # The request carried our state too: the peer now holds the reader's update.
        assert a.state.items.get("mine") == 7
        await a.close()
        await reader.close()
        await fabric.close()

    run_virtual(main())


def test_a_peer_holding_nothing_more_answers_with_a_digest_not_its_state() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=2, faults=LinkFaults(delay=0.01))
        a = await _join(fabric, "a")
        b = await _join(fabric, "b", seed=2)
        b.mutate(lambda s: s.put("x", 1))
        await a.wait_for(lambda s: s.items == {"x": 1}, timeout=2.0)
        await asyncio.sleep(0.2)
        states_out = a.core.stats["states_out"]
        digests_out = a.core.stats["out_digest"]
        await b.sync_with("a", timeout=5.0)
        assert a.core.stats["states_out"] == states_out
        assert a.core.stats["out_digest"] > digests_out
        await a.close()
        await b.close()
        await fabric.close()

    run_virtual(main())


def test_sync_with_asks_again_after_a_lost_request_and_times_out_while_cut_off() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=3, faults=LinkFaults(delay=0.01))
        a = await _join(fabric, "a")
        a.mutate(lambda s: s.put("k", 1))
        reader = await _join(fabric, "reader", seed=3)
        await asyncio.sleep(0.1)
        fabric.partition({"reader"}, {"a"})
        with pytest.raises(TimeoutError):
            await reader.sync_with("a", timeout=1.0, retry_every=0.3)
        asked = reader.core.stats["sync_requests"]
        assert asked >= 3
        fabric.heal()
        await reader.sync_with("a", timeout=5.0, retry_every=0.3)
        assert reader.state.items == {"k": 1}
        await a.close()
        await reader.close()
        await fabric.close()

    run_virtual(main())


def test_replicated_can_wait_for_a_given_number_of_peers() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=4, faults=LinkFaults(delay=0.01))
        a = await _join(fabric, "a")
        b = await _join(fabric, "b", seed=4)
        c = await _join(fabric, "c", seed=5)
        await asyncio.sleep(0.1)
        fabric.partition({"a"}, {"c"})
        a.mutate(lambda s: s.put("k", 1))
        assert await a.replicated(timeout=1.0)  # one peer (b) holds it
        assert await a.replicated(timeout=1.0, majority=True)  # a and b: a majority of three
        assert not await a.replicated(timeout=1.0, count=2)  # c is cut off
        fabric.heal()
        assert await a.replicated(timeout=5.0, count=2)  # the unacked batch is resent to c
        assert c.state.items == {"k": 1} and b.state.items == {"k": 1}
        for q in (a, b, c):
            await q.close()
        await fabric.close()

    run_virtual(main())


def test_core_synced_at_follows_matching_digests_and_states() -> None:
    a = QuilterCore("a", "a@1", MaxMap({"x": 1}), CODEC)
    b = QuilterCore("b", "b@1", MaxMap(), CODEC)
    a.roster_changed({"a", "b"}, 0.0)
    b.roster_changed({"a", "b"}, 0.0)
    for peer, frame in a.take_outbox():
        assert peer == "b"
        b.receive("a", frame, 1.0)  # a's first-contact digest: b is empty, so it sends its state
    assert b.synced_at("a") is None
    b.take_outbox()
    b.request_sync("a")
    for _, frame in b.take_outbox():
        a.receive("b", frame, 2.0)
    assert a.synced_at("b") == 2.0  # a joined b's full state
    for _, frame in a.take_outbox():
        b.receive("a", frame, 3.0)  # a holds more than b sent: it answers with its state
    assert b.synced_at("a") == 3.0 and b.state.items == {"x": 1}
