"""WarpNode hooks for short-lived clients (``warpmesh submit``/``results``/``status``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from warpmesh.quilt import QuilterConfig
from warpmesh.sim import run_virtual
from warpmesh.warp import OpRegistry

from .harness import FAST, make_mesh

# Anti-entropy rounds a minute apart: anything prompt below is the hooks' doing.
SLOW_AE = replace(FAST, quilter=QuilterConfig(anti_entropy_interval=60.0, resend_after=0.1, evict_after=120.0))


def test_a_late_client_syncs_every_board_from_its_peer_at_once() -> None:
    async def main() -> None:
        mesh = await make_mesh(["w1", "w2"], config=SLOW_AE)
        tasks = [f"s{i}" for i in range(40)]
        for t in tasks:
            await mesh.nodes["w1"].enqueue(t, "echo", {"task": t})
        await mesh.await_results(tasks)
        await asyncio.sleep(0.5)
        client = await mesh.add("cli", role="client", registry=OpRegistry())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await client.sync_from("w1", timeout=5.0)
        assert loop.time() - t0 < 1.0
        assert set(client.results) == set(tasks)
        assert client.counter("executions") == 40
        assert client.member_info()["w1"]["role"] == "worker"
        await mesh.close()

    run_virtual(main())


def test_workers_learn_a_client_role_at_once_and_it_leaves_no_member_entry() -> None:
    async def main() -> None:
        mesh = await make_mesh(["w1", "w2"], config=SLOW_AE)
        client = await mesh.add("cli", role="client", registry=OpRegistry())
        await asyncio.sleep(0.5)
        for name in ("w1", "w2"):
            info = mesh.nodes[name].member_info()
            assert info["cli"]["role"] == "client", name
            assert not mesh.nodes[name]._contested(), name  # a known client never contests ownership
        # The client sees the same worker set as each worker publishes.
        assert client.view == mesh.nodes["w1"].member_info()["w1"]["view"]
        mesh.nodes.pop("cli")
        await client.close()
        await asyncio.sleep(0.5)
        for name in ("w1", "w2"):
            assert "cli" not in mesh.nodes[name].member_info(), name
        await mesh.close()

    run_virtual(main())


def test_result_listener_sees_remote_answers_and_can_be_removed() -> None:
    async def main() -> None:
        mesh = await make_mesh(["w1", "w2"])
        client = await mesh.add("cli", role="client", registry=OpRegistry())
        await asyncio.sleep(0.5)
        seen: list[str] = []
        remove = client.add_result_listener(seen.extend)
        tasks = [f"l{i}" for i in range(10)]
        for t in tasks:
            await client.enqueue(t, "echo", {"task": t})
        for t in tasks:
            await client.outcome(t, timeout=10)
        assert set(tasks) <= set(seen)
        remove()
        seen.clear()
        await client.enqueue("after", "echo", {"task": "after"})
        await client.outcome("after", timeout=10)
        assert seen == []
        await mesh.close()

    run_virtual(main())


def test_a_client_does_not_count_itself_towards_the_majority_holding_its_tasks() -> None:
    async def main() -> None:
        from warpmesh.warp import NotReplicated

        mesh = await make_mesh(["w1", "w2"])
        client = await mesh.add("cli", role="client", registry=OpRegistry())
        worker = mesh.nodes["w1"]
        await asyncio.sleep(0.5)
        assert worker.holders_needed() == 1  # w1 and one other peer: two of three
        assert client.holders_needed() == 2  # the client leaves soon: both workers must hold it
        mesh.fabric.partition({"cli"}, {"w2"}, one_way=True)  # w2 never hears the client
        with pytest.raises(NotReplicated):
            await client.enqueue("held-by-one", "echo", {"task": "held-by-one"})
        mesh.fabric.heal()
        await client.enqueue("held-by-two", "echo", {"task": "held-by-two"})
        await client.outcome("held-by-two", timeout=10)
        await mesh.close()

    run_virtual(main())
