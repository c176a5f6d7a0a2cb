"""A peer's event feed: ``Peer.events()`` (bounded, told what it lost), and watchers on channel 0x70."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import warpmesh
from warpmesh.observe.runtime import Observer


def _ops() -> warpmesh.OpRegistry:
    reg = warpmesh.OpRegistry()
    reg.register("sq", lambda x: x * x)
    return reg


class FakeEvent:
    """What WarpCore's ``WarpEvent`` looks like (kind, at, job, peer, detail)."""

    def __init__(self, kind: str, at: float, job: str | None = None, peer: str | None = None,
                 detail: dict[str, Any] | None = None) -> None:
        self.kind, self.at, self.job, self.peer, self.detail = kind, at, job, peer, detail or {}


class FakeNode:
    """Just enough of a WarpNode for an Observer: an event source, a mux, a roster, a clock."""

    def __init__(self, mux: Any, seam: Any) -> None:
        self.mux, self.seam, self.self_id = mux, seam, seam.self_id
        self.listeners: list[Any] = []

    def subscribe_events(self, fn: Any) -> Any:
        self.listeners.append(fn)
        return lambda: self.listeners.remove(fn)

    def emit(self, event: FakeEvent) -> None:
        for fn in list(self.listeners):
            fn(event)

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def status(self) -> dict[str, Any]:
        return {"node": self.self_id, "roster": sorted(self.seam.roster.value), "live_workers": [], "health": {}}

    def member_info(self) -> dict[str, Any]:
        return {}


def test_events_follow_the_node_and_a_slow_reader_is_told_what_it_lost() -> None:
    async def main() -> tuple[list[str], list[Any]]:
        from warpmesh.net.mux import MuxSeam

        fabric = warpmesh.MemoryFabric()
        seam = fabric.join("a")
        node = FakeNode(MuxSeam(seam), seam)
        obs = await Observer(node, capacity=8).start()
        assert not node.listeners, "nobody reads yet: the node builds no event"
        it = obs.events()
        first = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)
        assert node.listeners, "a reader: the observer follows the node's events"
        node.emit(FakeEvent("enqueued", 1.0, job="j0", detail={"op": "sq"}))
        got = [(await first).kind]
        for i in range(20):  # the reader is not reading: a node never waits for it
            node.emit(FakeEvent("finished", 2.0 + i, job=f"j{i}"))
        rest = [await it.__anext__() for _ in range(9)]
        await it.aclose()
        assert not node.listeners, "the last reader gone: the node builds no event again"
        await obs.close()
        return got, rest

    got, rest = asyncio.run(main())
    assert got == ["enqueued"]
    assert rest[0].kind == "dropped" and rest[0].detail["count"] == 12
    assert [e.job for e in rest[1:]] == [f"j{i}" for i in range(12, 20)]


def test_a_watcher_gets_every_peers_events_over_the_mesh() -> None:
    async def main() -> dict[str, Any]:
        fabric = warpmesh.MemoryFabric()
        async with (warpmesh.open_node("a", fabric=fabric, ops=_ops()) as a,
                    warpmesh.open_node("b", fabric=fabric, ops=_ops()) as b,
                    warpmesh.open_node("w", fabric=fabric, ops=_ops(), role="client") as w):
            board = w.observer.watch()
            await asyncio.sleep(0.2)
            for i in range(5):
                a.observer.record("started", job=f"a{i}", detail={"op": "sq"})
                a.observer.record("finished", job=f"a{i}", detail={"op": "sq"})
                b.observer.record("started", job=f"b{i}", detail={"op": "sq"})
                b.observer.record("finished", job=f"b{i}", detail={"op": "sq"})
            for _ in range(50):
                await asyncio.sleep(0.05)
                if board.counts["finished"] == 10:
                    break
            w.observer.refresh()
            return {"finished": board.counts["finished"], "runs": board.stream_page(limit=100)["runs"],
                    "peers": {p["peer"]: p["state"] for p in board.peers()}, "sent": a.observer.stats["sent"]}

    out = asyncio.run(main())
    assert out["finished"] == 10
    assert {r["peer"] for r in out["runs"]} == {"a", "b"}
    assert out["peers"]["a"] == out["peers"]["b"] == "live"
    assert out["sent"] == 10


def test_peer_events_needs_a_feed() -> None:
    from warpmesh.peer import Peer

    with pytest.raises(RuntimeError):
        Peer(node=None, mesh=None).events()  # type: ignore[arg-type]


def test_a_watcher_asks_again_until_a_late_feed_answers() -> None:
    class SlowStart:  # holds back the peer's start (and its feed) after it has joined the mesh
        def __init__(self, _node: Any) -> None:
            pass

        async def start(self) -> None:
            await asyncio.sleep(0.6)

        async def close(self) -> None:
            pass

    async def main() -> int:
        fabric = warpmesh.MemoryFabric()
        async with warpmesh.open_node("w", fabric=fabric, ops=_ops(), role="client") as w:
            board = w.observer.watch()
            async with warpmesh.open_node("a", fabric=fabric, ops=_ops(), attach=[SlowStart]) as a:
                for i in range(3):
                    a.observer.record("finished", job=f"a{i}")
                for _ in range(40):
                    await asyncio.sleep(0.05)
                    if board.counts["finished"] == 3:
                        break
                return board.counts["finished"]

    assert asyncio.run(main()) == 3


def test_a_resubscription_after_a_dropped_link_does_not_count_events_twice() -> None:
    async def main() -> tuple[int, int]:
        fabric = warpmesh.MemoryFabric()
        async with (warpmesh.open_node("a", fabric=fabric, ops=_ops()) as a,
                    warpmesh.open_node("w", fabric=fabric, ops=_ops(), role="client") as w):
            board = w.observer.watch()
            for i in range(5):
                a.observer.record("finished", job=f"j{i}")
            for _ in range(40):
                await asyncio.sleep(0.05)
                if board.counts["finished"] == 5:
                    break
            # As after a link drop: a forgets its watcher, the watcher asks again (with the backlog).
            a.observer._subscribers.clear()
            w.observer._confirmed.clear()
            w.observer._watched.clear()
            a.observer.record("finished", job="j5")
            for _ in range(40):
                await asyncio.sleep(0.05)
                if "a" in w.observer._confirmed and board.counts["finished"] >= 6:
                    break
            await asyncio.sleep(0.3)
            return board.counts["finished"], a.observer.stats["sent"]

    finished, sent = asyncio.run(main())
    assert sent == 11  # the ring's events went out twice...
    assert finished == 6  # ...and were folded once


def test_a_board_behind_its_ring_is_told_how_many_it_lost_and_keeps_up_with_bursts() -> None:
    async def main() -> tuple[int, int, int]:
        from warpmesh.net.mux import MuxSeam

        seam = warpmesh.MemoryFabric().join("a")
        node = FakeNode(MuxSeam(seam), seam)
        obs = await Observer(node, capacity=8).start()
        board = obs.watch()
        for i in range(20):  # one synchronous burst, bigger than the ring
            node.emit(FakeEvent("finished", float(i), job=f"j{i}"))
        obs.refresh()
        lost, kept = board.events_dropped, board.counts["finished"]
        for i in range(20, 26):  # bursts spread over loop turns are folded as they come
            node.emit(FakeEvent("finished", float(i), job=f"j{i}"))
            await asyncio.sleep(0)
        after = board.counts["finished"]
        await obs.close()
        return lost, kept, after

    lost, kept, after = asyncio.run(main())
    assert (lost, kept) == (12, 8)
    assert after == 13  # no tick was due: every second event (a quarter of the ring) flushed early; the last waits


def test_the_task_stream_survives_a_restart_where_the_durable_board_holds_the_answers(tmp_path: Any) -> None:
    # Flower's history is lost on restart; ours comes back from the results board on disk.
    async def run(jobs: range, wait: bool) -> dict[str, Any]:
        async with warpmesh.open_node("a", fabric=warpmesh.MemoryFabric(), ops=_ops(),
                                      data_dir=tmp_path / "a") as a:
            for i in jobs:
                await a.enqueue(f"t{i}", "sq", i)
            if wait:
                for i in jobs:
                    assert await a.result(f"t{i}", 10) == i * i
            board = a.observer.watch()
            a.observer.refresh()
            return {"stream": board.stream_page(limit=100), "job": board.job("t3")}

    before = asyncio.run(run(range(6), wait=True))
    assert before["stream"]["total"] == 6
    after = asyncio.run(run(range(0), wait=False))  # restarted on its directory: no event of those runs
    runs = after["stream"]["runs"]
    assert sorted(r["job"] for r in runs) == [f"t{i}" for i in range(6)]
    assert all(r["restored"] and r["ok"] and r["peer"] == "a" and r["op"] == "sq" for r in runs)
    assert after["job"]["state"] == "finished" and after["job"]["result"] == "9" and after["job"]["ran_on"] == ["a"]
