"""Cells over real TCP: four ``warpmesh node --cell`` processes in two cells, driven by the CLI.

``submit`` through a peer of one cell runs every job in its own cell; ``results``, ``cancel`` and
``results --ack`` through a peer of the other cell reach the tasks where they live; each cell's
boards hold only its own tasks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from warpmesh.cli.procs import NodeProcess
from warpmesh.warp.route import cell_for

from .test_warp_processes import OPS, LoopThread, Mesh, cli

pytestmark = pytest.mark.process

CELLS = {"a": "x", "b": "x", "c": "y", "d": "y"}


class CellMesh(Mesh):
    async def start_cell_node(self, name: str, join: list[str]) -> NodeProcess:
        cmd = NodeProcess.command(name, "127.0.0.1:0", join, "--ops", OPS, "--cell", CELLS[name], "--cells", "x,y")
        proc = NodeProcess(name, cmd, env=self.env(name))
        self.nodes[name] = await proc.start(timeout=60)
        return proc

    async def start(self) -> None:
        first = await self.start_cell_node("a", [])
        assert first.address
        await asyncio.gather(*(self.start_cell_node(n, [first.address]) for n in "bcd"))
        await self.cells_steady()

    async def cells_steady(self, timeout: float = 60.0) -> None:
        async def check() -> None:
            while True:
                ok = True
                for name, proc in self.nodes.items():
                    live = (await proc.status())["warp"]["live_workers"]
                    want = sorted(p for p, c in CELLS.items() if c == CELLS[name])
                    ok = ok and sorted(live) == want
                if ok:
                    return
                await asyncio.sleep(0.2)

        await asyncio.wait_for(check(), timeout)


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CellMesh]:
    lt = LoopThread()
    m = CellMesh(lt, tmp_path_factory.mktemp("cell-mesh"))
    try:
        lt.run(m.start())
        yield m
    finally:
        lt.run(m.stop())
        lt.close()


def _jsonl(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_submit_through_one_cell_runs_each_job_in_its_own_cell(cells: CellMesh) -> None:
    tasks = [f"cj-{i}" for i in range(24)]
    jobs = "".join(json.dumps({"task": t, "op": "t.echo", "args": [{"task": t}]}) + "\n" for t in tasks)
    out = cli(cells, "submit", "--to", cells.addr("a"), "--file", "-", "--json", stdin=jobs)
    assert out.returncode == 0, out.stderr
    rows = {r["task"]: r for r in _jsonl(out.stdout)}
    assert set(rows) == set(tasks)
    for t, r in rows.items():
        assert r["ok"] is True
        assert CELLS[str(r["by"])] == cell_for(t, ("x", "y")), (t, r["by"])  # ran in the task's cell
    assert {cell_for(t, ("x", "y")) for t in tasks} == {"x", "y"}
    # Each cell's boards hold its own tasks only.
    for name in CELLS:
        board = cells.lt.run(cells.answers(name))
        assert {t for t in tasks if t in board} == {t for t in tasks if cell_for(t, ("x", "y")) == CELLS[name]}
    # Through a peer of cell y, every answer is found, whichever cell holds it.
    got = cli(cells, "results", "--to", cells.addr("c"), "--json", *tasks)
    assert got.returncode == 0, got.stderr
    assert {r["task"] for r in _jsonl(got.stdout) if r.get("ok")} == set(tasks)
    # ... and acknowledged where it lives.
    some = [t for t in tasks if cell_for(t, ("x", "y")) == "x"][:3]
    acked = cli(cells, "results", "--to", cells.addr("c"), "--ack", "--json", *some)
    assert acked.returncode == 0, acked.stderr
    gone = cli(cells, "results", "--to", cells.addr("a"), "--json", *some)
    assert gone.returncode == 1 and all(r.get("unknown") for r in _jsonl(gone.stdout))


def test_status_through_a_cell_lists_every_cells_workers(cells: CellMesh) -> None:
    out = cli(cells, "status", "--to", cells.addr("c"), "--json")
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert sorted(snap["live_workers"]) == ["a", "b", "c", "d"]
    assert {p["peer"]: p["cell"] for p in snap["peers"] if p["role"] == "worker"} == CELLS
    # The ring is the entry's cell's: only its peers have a share.
    assert set(snap["ring_shares"]) == {"c", "d"}
    # Counters are kept per cell; status sums them over the cells.
    assert snap["counters"]["executions"] >= 24
    by_peer = {p["peer"]: p["executions"] for p in snap["peers"] if p["role"] == "worker"}
    assert sum(by_peer.values()) == snap["counters"]["executions"]
    assert by_peer["a"] + by_peer["b"] > 0 and by_peer["c"] + by_peer["d"] > 0
    node = cells.lt.run(cells.nodes["c"].status())["warp"]
    assert node["cell"] == "y" and node["cells"] == ["x", "y"] and node["routing"]["bad_frames"] == 0
    text = cli(cells, "status", "--to", cells.addr("c"))
    assert text.returncode == 0 and "cell" in text.stdout


def test_cancel_through_a_peer_of_another_cell(cells: CellMesh) -> None:
    slow = [t for t in (f"cs-{i}" for i in range(40)) if cell_for(t, ("x", "y")) == "x"][:3]
    jobs = "".join(json.dumps({"task": t, "op": "t.slow", "args": [{"task": t, "seconds": 60}]}) + "\n"
                   for t in slow)
    out = cli(cells, "submit", "--to", cells.addr("a"), "--file", "-", "--no-wait", "--json", stdin=jobs)
    assert out.returncode == 0, out.stderr
    done = cli(cells, "cancel", "--to", cells.addr("d"), "--json", *slow)
    assert done.returncode == 0, done.stderr + done.stdout
    assert {r["task"]: r["state"] for r in _jsonl(done.stdout)} == dict.fromkeys(slow, "cancelled")
    got = cli(cells, "results", "--to", cells.addr("c"), "--json", *slow)
    rows = _jsonl(got.stdout)
    assert all(r.get("cancelled") or r.get("ok") is False for r in rows), rows
    unknown = cli(cells, "cancel", "--to", cells.addr("d"), "--json", "no-such-task")
    assert unknown.returncode == 1
