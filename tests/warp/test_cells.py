"""Cells: replica groups within one mesh (WarpConfig.cell), and the routing between them."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.net.seam import PeerUnreachable
from warpmesh.net.subset import SubsetSeam
from warpmesh.sim import run_virtual
from warpmesh.sim.warp import run_warp
from warpmesh.warp import NotReplicated, WarpConfig, WarpNode, route
from warpmesh.warp.route import cell_for
from warpmesh.wire.frame import pack

from .harness import FAST, ExecLog, eventually, recording_registry

CELLS = ("c0", "c1")
PEERS = {"a": "c0", "b": "c0", "c": "c0", "d": "c1", "e": "c1", "f": "c1"}


def _tasks_for(cell: str, n: int, prefix: str = "t") -> list[str]:
    out = [f"{prefix}{i}" for i in range(10 * n) if cell_for(f"{prefix}{i}", CELLS) == cell]
    return out[:n]


# -- the rendezvous rule ---------------------------------------------------------------------
def test_cell_for_is_the_same_whatever_the_order_of_the_cells() -> None:
    for i in range(200):
        t = f"job-{i}"
        assert cell_for(t, ["a", "b", "c"]) == cell_for(t, ["c", "a", "b"]) == cell_for(t, ("b", "c", "a"))
    assert cell_for("x", []) is None
    assert cell_for("x", [None]) is None


def test_cell_for_spreads_tasks_evenly_and_a_new_cell_takes_only_its_share() -> None:
    tasks = [f"job-{i}" for i in range(4000)]
    four = {t: cell_for(t, ["a", "b", "c", "d"]) for t in tasks}
    counts = Counter(four.values())
    assert set(counts) == {"a", "b", "c", "d"}
    assert all(850 <= n <= 1150 for n in counts.values()), counts
    five = {t: cell_for(t, ["a", "b", "c", "d", "e"]) for t in tasks}
    moved = [t for t in tasks if four[t] != five[t]]
    assert all(five[t] == "e" for t in moved)  # rendezvous: only the new cell's share moves
    assert 600 <= len(moved) <= 1000


# -- the messages ------------------------------------------------------------------------------
def test_route_messages_round_trip() -> None:
    assert route.decode(route.encode_submit(3, [("t", b"d")])) == route.Submit(3, (("t", b"d"),))
    assert route.decode(route.encode_accept(4, False, "why")) == route.Accept(4, False, "why")
    assert route.decode(route.encode_fetch(5, ["t", "u"])) == route.Fetch(5, ("t", "u"))
    assert route.decode(route.encode_answers(0, [("t", b"r")])) == route.Answers(0, (("t", b"r"),))
    assert route.decode(route.encode_ack(6, ["t"])) == route.Ack(6, ("t",))
    assert route.decode(route.encode_answers(7, [], [("t", "run-1")])) == route.Answers(7, (), (("t", b"run-1"),))
    assert route.decode(route.encode_hello(8)) == route.Hello(8)
    assert route.decode(route.encode_cell(9, "x", ["x", "y"])) == route.Cell(9, "x", ("x", "y"))
    assert route.decode(route.encode_cell(9, None, [])) == route.Cell(9, None, ())
    assert route.decode(route.encode_cancel(10, [("t", "why")])) == route.Cancel(10, (("t", b"why"),))
    assert route.decode(route.encode_cancelled(11, [("t", "done")])) == route.Cancelled(11, (("t", b"done"),))
    assert route.decode(route.encode_counts(12)) == route.Counts(12)
    assert route.decode(route.encode_counted(13, {"executions": {"a": 3}})) == route.Counted(13, {"executions": {"a": 3}})


@pytest.mark.parametrize("data", [
    b"", b"\xc1", pack("x"), pack([0]), pack([0, -1, []]), pack([0, 1, [["t"]]]), pack([0, 1, [["", b"d"]]]),
    pack([1, 1, "yes", ""]), pack([2, 1, [3]]), pack([3, 1, [["t", "not bytes"]]]), pack([99, 1, []]),
    pack([2, 1, ["t"] * (route.MAX_BATCH + 1)]), pack([6, 1, "", []]), pack([6, 1, 5, []]),
    pack([3, 1, [], [["t", 1]]]), pack([7, 1, [["t"]]]), pack([5, 1]), pack([10, 1, {"x": {"a": -1}}]),
    pack([10, 1, {"x": 3}]), pack([10, 1, []]),
])
def test_hostile_route_frames_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        route.decode(data)


# -- the subset seam -------------------------------------------------------------------------
def test_subset_seam_talks_only_to_the_peers_it_allows() -> None:
    async def main() -> None:
        fabric = MemoryFabric(seed=1, faults=LinkFaults(delay=0.001))
        seams = {n: fabric.join(n) for n in "xyz"}
        await asyncio.sleep(0.1)
        sub = SubsetSeam(seams["x"])
        got: list[tuple[str, bytes]] = []
        sub.add_handler(lambda sender, data: got.append((sender, data)))
        assert sub.roster.value == {"x"}
        sub.allow({"y"})
        assert sub.roster.value == {"x", "y"}
        with pytest.raises(PeerUnreachable):
            await sub.send_to("z", b"no")
        heard: dict[str, list[bytes]] = {"y": [], "z": []}
        for n in ("y", "z"):
            seams[n].add_handler(lambda sender, data, n=n: heard[n].append(data))
        await sub.broadcast(b"hello")
        await seams["y"].send_to("x", b"from y")
        await seams["z"].send_to("x", b"from z")
        await asyncio.sleep(0.1)
        assert heard == {"y": [b"hello"], "z": []}
        assert got == [("y", b"from y")]
        assert sub.refused == 1
        await sub.close()
        await fabric.close()

    run_virtual(main())


# -- a mesh of two cells -------------------------------------------------------------------------
def _cfg(cell: str | None, **kw: float) -> WarpConfig:
    return replace(FAST, cell=cell, cells=CELLS, **kw)


async def _two_cells(log: ExecLog, *, faults: LinkFaults | None = None, peers: dict[str, str] = PEERS,
                     delay: float = 0.0, **kw: float) -> tuple[MemoryFabric, dict[str, WarpNode]]:
    fabric = MemoryFabric(seed=7, faults=faults or LinkFaults(delay=0.001))
    nodes: dict[str, WarpNode] = {}
    for name, cell in peers.items():
        nodes[name] = await WarpNode(fabric.join(name), registry=recording_registry(log, name, delay=delay),
                                     config=_cfg(cell, **kw)).start()
    await eventually(lambda: all(n.workers == {p for p, c in peers.items() if c == n.config.cell}
                                 and not n._contested() for n in nodes.values()), 10.0, "two cells formed")
    return fabric, nodes



async def _close(nodes: dict[str, WarpNode], fabric: MemoryFabric) -> None:
    for n in nodes.values():
        await n.close()
    await fabric.close()

def test_a_task_is_queued_run_and_answered_in_its_own_cell_only() -> None:
    async def main() -> None:
        log = ExecLog()
        fabric, nodes = await _two_cells(log)
        remote = _tasks_for("c1", 20)
        local = _tasks_for("c0", 20)
        a = nodes["a"]
        for t in remote + local:
            await a.enqueue(t, "echo", {"task": t})
        for t in remote + local:
            assert await a.result(t, timeout=10.0) == f"result-{t}"
        # Each ran once, in its cell; only its cell's boards ever held it.
        assert Counter(t for _, t in log.runs) == Counter(remote + local)
        for peer, t in log.runs:
            assert PEERS[peer] == ("c1" if t in remote else "c0")
        await eventually(lambda: all(t in nodes[p].results_board.state for p in "def" for t in remote), 5.0)
        for p in "abc":
            assert not set(remote) & set(nodes[p].results_board.state.keys())
            assert not set(remote) & set(nodes[p].queue.state.keys())
        for p in "def":
            assert not set(local) & set(nodes[p].results_board.state.keys())
        # The submitter sees the forwarded answers through its results view too.
        assert all(a.results.get(t) is not None for t in remote)
        assert a.router.stats["forwarded"] == 20
        await _close(nodes, fabric)

    run_virtual(main())


def test_a_client_of_no_cell_forwards_every_task_and_gets_every_answer() -> None:
    async def main() -> None:
        log = ExecLog()
        fabric, nodes = await _two_cells(log)
        client = await WarpNode(fabric.join("client"), role="client", config=_cfg(None)).start()
        await eventually(lambda: len(client.core.mesh_member_info()) >= 7, 5.0, "client sees the mesh")
        tasks = [f"job-{i}" for i in range(30)]
        runs = client.enqueue_many([(t, "echo", ({"task": t},)) for t in tasks])
        assert len(runs) == 30
        assert await client.submitted(timeout=5.0)
        got = [await client.outcome(t, timeout=10.0) for t in tasks]
        assert [r.value for r in got] == [f"result-{t}" for t in tasks]
        assert sorted(t for _, t in log.runs) == sorted(tasks)
        assert not client.queue.state.keys()  # nothing queued on the client itself
        # Acknowledging a forwarded answer removes it from its cell's boards.
        t = tasks[0]
        owner_cell = "def" if cell_for(t, CELLS) == "c1" else "abc"
        client.ack(t)
        await eventually(lambda: all(t not in nodes[p].results_board.state for p in owner_cell), 5.0, "ack reached")
        assert t not in client.results
        await client.close()
        await _close(nodes, fabric)

    run_virtual(main())


def test_a_peer_reads_and_cancels_tasks_of_another_cell() -> None:
    async def main() -> None:
        log = ExecLog()
        fabric, nodes = await _two_cells(log, delay=30.0)  # every run takes 30 s: they stay queued
        a = nodes["a"]
        far = _tasks_for("c1", 3)
        for t in far:
            await a.enqueue(t, "echo", {"task": t})
        await asyncio.sleep(0.5)
        answers, queued = await a.router.fetch([*far, "never-submitted"])
        assert answers == {} and set(queued) == set(far)
        assert queued[far[0]] == a.router.waiting[far[0]][1]  # the run we forwarded
        states = await a.router.cancel(far[:2], reason="not needed")
        assert states == dict.fromkeys(far[:2], "cancelled")
        answers, queued = await a.router.fetch(far)
        assert set(answers) == set(far[:2]) and all(r.cancelled for r in answers.values())
        assert set(queued) == {far[2]}
        ghost = _tasks_for("c1", 1, prefix="ghost")[0]
        assert await a.router.cancel([ghost]) == {ghost: "unknown"}  # never submitted: unknown there
        await _close(nodes, fabric)

    run_virtual(main())


def test_forwarding_survives_lossy_links() -> None:
    async def main() -> None:
        log = ExecLog()
        faults = LinkFaults(drop=0.1, duplicate=0.05, reorder=0.1, delay=0.002, jitter=0.002)
        # An unanswered SUBMIT is sent again well within the timeout: no acknowledged enqueue fails.
        fabric, nodes = await _two_cells(log, faults=faults, replicate_timeout=1.0)
        remote = _tasks_for("c1", 40)
        for t in remote:
            await nodes["b"].enqueue(t, "echo", {"task": t})
        for t in remote:
            assert await nodes["b"].result(t, timeout=30.0) == f"result-{t}"
        await asyncio.sleep(2.0)
        counts = Counter(t for _, t in log.runs)
        assert set(counts) == set(remote) and max(counts.values()) == 1  # steady membership: once each
        await _close(nodes, fabric)

    run_virtual(main())


def test_a_cell_with_no_live_peer_refuses_then_gets_the_task_once_it_is_back() -> None:
    async def main() -> None:
        log = ExecLog()
        fabric, nodes = await _two_cells(log)
        for p in "def":
            fabric.crash(p)
            await nodes.pop(p).close()
        await eventually(lambda: not nodes["a"].router.live_peers("c1"), 10.0, "c1 seen down")
        t = _tasks_for("c1", 1)[0]
        with pytest.raises(NotReplicated) as err:
            await nodes["a"].enqueue(t, "echo", {"task": t})
        assert "c1" in str(err.value)
        for p in "def":  # the cell comes back; the forward is retried in the background
            nodes[p] = await WarpNode(fabric.join(p), registry=recording_registry(log, p), config=_cfg("c1")).start()
        assert await nodes["a"].result(t, timeout=20.0) == f"result-{t}"
        assert [x for _, x in log.runs].count(t) == 1
        await _close(nodes, fabric)

    run_virtual(main())


def test_peers_of_another_cell_never_merge_into_a_cells_boards() -> None:
    # A hostile or confused peer of c1 sends a queue delta straight at a c0 peer's board channel.
    async def main() -> None:
        log = ExecLog()
        fabric, nodes = await _two_cells(log)
        before = set(nodes["a"].queue.state.keys())
        t = _tasks_for("c1", 1)[0]
        nodes["d"].enqueue_nowait(t, "echo", {"task": t})
        await nodes["d"].result(t, timeout=10.0)
        sub = nodes["a"].queue.seam
        assert isinstance(sub, SubsetSeam) and "d" not in sub.allowed
        assert set(nodes["a"].queue.state.keys()) == before
        await _close(nodes, fabric)

    run_virtual(main())


def test_a_mesh_without_cells_routes_nothing() -> None:
    async def main() -> None:
        log = ExecLog()
        fabric = MemoryFabric(seed=3, faults=LinkFaults(delay=0.001))
        nodes = [await WarpNode(fabric.join(n), registry=recording_registry(log, n), config=FAST).start()
                 for n in "xyz"]
        await asyncio.sleep(1.0)
        for i in range(10):
            await nodes[0].enqueue(f"t{i}", "echo", {"task": f"t{i}"})
        for i in range(10):
            await nodes[0].result(f"t{i}", timeout=10.0)
        assert all(n.router.stats["forwarded"] == 0 and n.router.stats["accepted_here"] == 0 for n in nodes)
        assert not any(isinstance(n.queue.seam, SubsetSeam) for n in nodes)
        for n in nodes:
            await n.close()
        await fabric.close()

    run_virtual(main())


def test_config_rejects_a_cell_outside_the_named_cells() -> None:
    with pytest.raises(ValueError):
        WarpConfig(cell="x", cells=("a", "b"))
    with pytest.raises(ValueError):
        WarpConfig(cells=("a", "a"))
    with pytest.raises(ValueError):
        WarpConfig(cell="")


# -- the simulator ----------------------------------------------------------------------------
def test_simulated_cells_under_churn_lose_nothing() -> None:
    report = run_warp(5, peers=12, jobs=300, cell_size=4)
    assert report.ok, report.failures
    assert report.metrics["cells"] == 3
    assert report.metrics["lost"] == 0 and report.metrics["wrong"] == 0
    assert report.metrics["routing"]["forwarded"] > 0
    assert report.metrics["bytes_by_kind"]["route"] > 0




def test_a_durable_peer_restarted_in_another_cell_does_not_carry_its_old_cells_tasks(tmp_path: Path) -> None:
    async def boot(cell: str) -> WarpNode:
        fabric = MemoryFabric(seed=1)
        node = WarpNode(fabric.join("p"), registry=recording_registry(ExecLog(), "p"), data_dir=tmp_path,
                        config=replace(FAST, cell=cell, cells=(cell,)))
        return await node.start()

    async def main() -> None:
        node = await boot("x")
        await node.enqueue("held", "nobody.has.this.op", 1)  # stays queued: no peer serves the op
        assert "held" in node.queue.state
        await node.close()
        node = await boot("y")
        assert "held" not in node.queue.state  # another cell's boards start empty
        await node.close()
        node = await boot("x")
        assert "held" in node.queue.state  # and the old cell's are still on disk
        await node.close()

    run_virtual(main())


def test_a_cell_whose_peers_are_all_gone_is_forgotten_and_its_share_moves() -> None:
    # Cells learned from the members board (no `cells` configured): once c1's peers are forgotten
    # (lost_after), its tasks hash to the cells left.
    async def main() -> None:
        log = ExecLog()
        fabric = MemoryFabric(seed=9, faults=LinkFaults(delay=0.001))
        nodes = {name: await WarpNode(fabric.join(name), registry=recording_registry(log, name),
                                      config=replace(FAST, cell=cell)).start() for name, cell in PEERS.items()}
        await eventually(lambda: all(n.router.cells() == ("c0", "c1") for n in nodes.values()), 10.0, "cells seen")
        for p in "def":
            fabric.crash(p)
            await nodes.pop(p).close()
        await eventually(lambda: all(n.router.cells() == ("c0",) for n in nodes.values()), 30.0,
                         "the gone cell forgotten")
        t = _tasks_for("c1", 1)[0]
        await nodes["a"].enqueue(t, "echo", {"task": t})
        assert await nodes["a"].result(t, timeout=10.0) == f"result-{t}"
        assert [p for p, x in log.runs if x == t] in (["a"], ["b"], ["c"])  # once, in c0
        await _close(nodes, fabric)

    run_virtual(main())


def test_forwarded_answers_expire_with_result_ttl() -> None:
    async def main() -> None:
        log = ExecLog()
        fabric, nodes = await _two_cells(log, result_ttl=3.0)
        a = nodes["a"]
        t = _tasks_for("c1", 1)[0]
        await a.enqueue(t, "echo", {"task": t})
        assert await a.result(t, timeout=10.0) == f"result-{t}"
        assert t in a.router.answers
        await eventually(lambda: t not in a.router.answers and t not in a.results, 10.0, "forwarded answer expired")
        await _close(nodes, fabric)

    run_virtual(main())


def test_a_cell_that_is_down_does_not_hold_up_forwards_to_the_others() -> None:
    three = ("c0", "c1", "c2")
    peers = {"a": "c0", "b": "c0", "c": "c0", "d": "c1", "e": "c1", "f": "c1", "g": "c2", "h": "c2", "i": "c2"}

    def task_of(cell: str, prefix: str) -> str:
        return next(t for t in (f"{prefix}{i}" for i in range(1000)) if cell_for(t, three) == cell)

    async def main() -> None:
        log = ExecLog()
        fabric = MemoryFabric(seed=4, faults=LinkFaults(delay=0.001))
        cfg = {c: replace(FAST, cell=c, cells=three, replicate_timeout=2.0) for c in three}
        nodes = {n: await WarpNode(fabric.join(n), registry=recording_registry(log, n), config=cfg[c]).start()
                 for n, c in peers.items()}
        await eventually(lambda: all(len(n.workers) == 3 and not n._contested() for n in nodes.values()), 10.0)
        for p in "ghi":
            fabric.crash(p)
            await nodes.pop(p).close()
        await eventually(lambda: not nodes["a"].router.live_peers("c2"), 10.0, "c2 seen down")
        loop = asyncio.get_running_loop()
        down = task_of("c2", "down-")
        nodes["a"].enqueue_nowait(down, "echo", {"task": down})  # its forwarder waits for c2
        await asyncio.sleep(0.1)
        up = task_of("c1", "up-")
        t0 = loop.time()
        await nodes["a"].enqueue(up, "echo", {"task": up})
        assert loop.time() - t0 < 0.5  # not behind the forward that waits for c2
        assert await nodes["a"].result(up, timeout=5.0) == f"result-{up}"
        await _close(nodes, fabric)

    run_virtual(main())


def test_a_restarted_peer_does_not_take_its_cell_for_a_cell_of_one_before_it_hears_the_members_board() -> None:
    # Found by sim warp --cell-size 8, seed 5: a peer back from a crash knew no peer of its cell
    # yet, accepted a forwarded task as if alone, ran it and crashed: the task was lost.
    async def main() -> None:
        log = ExecLog()
        fabric, nodes = await _two_cells(log)
        fabric.crash("d")
        await nodes.pop("d").close()
        d = await WarpNode(fabric.join("d"), registry=recording_registry(log, "d"), config=_cfg("c1")).start()
        t = _tasks_for("c1", 1)[0]
        assert not d.cell_known()
        with pytest.raises(NotReplicated, match="members board"):
            await d.enqueue(t, "echo", {"task": t})
        await eventually(d.cell_known, 5.0, "the members board arrived")
        assert d.cell_peers == {"e", "f"}
        for n in [*nodes.values(), d]:
            await n.close()
        await fabric.close()

    run_virtual(main())
