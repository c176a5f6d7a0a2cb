"""The process's event bus: Raft and isolate events reach the peer's feed and its board."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import warpmesh
from warpmesh.observe import bus


class FakeRaft:
    id = "r1"


def test_raft_changes_and_memo_lookups_reach_the_board_from_any_thread() -> None:
    before = len(bus.sinks)

    async def main() -> tuple[dict[str, object], dict[str, object], list[str]]:
        async with warpmesh.open_node("a", fabric=warpmesh.MemoryFabric(), ops=warpmesh.OpRegistry()) as a:
            board = a.observer.watch()
            raft = FakeRaft()
            core = SimpleNamespace(leader="r1", term=3, commit=10, role="leader")
            bus.publish_raft(raft, core)
            core.commit = 11
            bus.publish_raft(raft, core)  # commit progress comes at most every RAFT_COMMIT_EVERY s
            await asyncio.sleep(bus.RAFT_COMMIT_EVERY + 0.05)
            core.commit = 12
            bus.publish_raft(raft, core)
            worker = threading.Thread(target=lambda: [bus.publish("memo_hit"), bus.publish("memo_miss"),
                                                      bus.publish("memo_hit")])
            worker.start()
            worker.join()
            await asyncio.sleep(0.05)  # the thread's events are handed to the loop
            a.observer.refresh()
            kinds = [e.kind for e in a.observer.ring.take(a.observer.ring.cursor(from_start=True)).events]
            summary = board.summary(0.0)
            return summary["raft"], summary["isolates"], kinds

    raft, isolates, kinds = asyncio.run(main())
    assert raft == {"r1": {"leader": "r1", "term": 3, "commit": 12, "commit_latency": None, "role": "leader"}}
    assert kinds.count("raft_leader") == 1 and kinds.count("raft_commit") == 1
    assert isolates["memo_hits"] == 2 and isolates["memo_misses"] == 1 and isolates["memo_hit_rate"] == 0.6667
    assert len(bus.sinks) == before  # the observer closed: its sink left the bus
