"""WarpNode.subscribe_events: the observer contract of warpmesh.warp.events (the live view builds on it)."""

from __future__ import annotations

import dataclasses

import pytest

from warpmesh.sim import run_virtual
from warpmesh.warp import events as ev
from warpmesh.warp.events import WarpEvent

from .harness import eventually, make_mesh


def test_warp_event_is_frozen_data_with_the_contract_fields() -> None:
    e = WarpEvent(ev.STARTED, 1.5, job="t", peer="p", detail={"run": "r"})
    assert (e.kind, e.at, e.job, e.peer, e.detail["run"]) == ("started", 1.5, "t", "p", "r")
    assert WarpEvent(ev.PEER_JOINED, 0.0).detail == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.kind = "x"  # type: ignore[misc]
    assert set(ev.KINDS) == {"enqueued", "claimed", "contested", "settled", "started", "finished", "failed",
                             "stolen", "adopted", "peer_joined", "peer_suspected", "peer_lost",
                             "peer_readmitted"}


def test_subscribers_see_a_task_from_enqueue_to_finish_and_peers_come_and_go() -> None:
    async def main() -> None:
        mesh = await make_mesh(["peer-1", "peer-2", "peer-3"])
        seen: dict[str, list[WarpEvent]] = {n: [] for n in mesh.nodes}
        unsubs = {n: node.subscribe_events(seen[n].append) for n, node in mesh.nodes.items()}
        tasks = [f"ev-task-{i}" for i in range(6)]
        for t in tasks:
            await mesh.nodes["peer-1"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        every = [e for evs in seen.values() for e in evs]
        assert sorted(e.job for e in every if e.kind == ev.ENQUEUED) == tasks
        for t in tasks:
            runner = mesh.log.executed_by(t)[0]
            kinds = [e.kind for e in seen[runner] if e.job == t]
            assert kinds[-3:] == [ev.CLAIMED, ev.STARTED, ev.FINISHED], (t, kinds)
            finished = next(e for e in seen[runner] if e.job == t and e.kind == ev.FINISHED)
            assert finished.peer == runner and finished.detail["attempts"] == 1
            assert finished.detail["duration"] is not None and finished.at >= 0
        # Unsubscribed: nothing more arrives.
        unsubs["peer-3"]()
        before = len(seen["peer-3"])
        await mesh.crash("peer-2")
        await eventually(lambda: any(e.kind in (ev.PEER_SUSPECTED, ev.PEER_LOST) and e.peer == "peer-2"
                                     for e in seen["peer-1"]), what="peer-2's departure")
        assert len(seen["peer-3"]) == before
        # peer-2 returns under a new incarnation: readmitted, not joined.
        await mesh.add("peer-2", incarnation=99)
        await eventually(lambda: any(e.kind == ev.PEER_READMITTED and e.peer == "peer-2"
                                     for e in seen["peer-1"]), what="peer-2 readmitted")
        await mesh.close()

    run_virtual(main())


def test_a_failing_subscriber_does_not_stop_the_node() -> None:
    async def main() -> None:
        mesh = await make_mesh(["peer-1"])
        node = mesh.nodes["peer-1"]

        def bad(_: WarpEvent) -> None:
            raise RuntimeError("observer bug")

        node.subscribe_events(bad)
        await node.enqueue("t", "echo", {"task": "t"})
        assert (await node.outcome("t", timeout=5)).ok
        await mesh.close()

    run_virtual(main())
