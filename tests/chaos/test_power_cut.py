"""Real processes on real disks: every peer SIGKILLed at once, restarted on its ``--data`` directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from warpmesh.cli.procs import NodeProcess
from warpmesh.warp.demo_ops import collatz_steps

pytestmark = pytest.mark.process
OPS = "warpmesh.warp.demo_ops"


def _spawn(name: str, join: list[str], data: Path) -> NodeProcess:
    return NodeProcess(name, NodeProcess.command(name, "127.0.0.1:0", join, "--ops", OPS, "--data", str(data / name)))


async def _boot(names: list[str], data: Path) -> dict[str, NodeProcess]:
    first = await _spawn(names[0], [], data).start()
    assert first.address is not None
    rest = await asyncio.gather(*(_spawn(n, [first.address], data).start() for n in names[1:]))
    procs = {names[0]: first, **{p.node_id: p for p in rest}}
    for _ in range(300):
        views = [(await p.status())["warp"]["live_workers"] for p in procs.values()]
        if all(len(v) == len(names) for v in views):
            return procs
        await asyncio.sleep(0.1)
    raise AssertionError("the mesh did not form")


def test_power_cut_right_after_an_acknowledged_enqueue_loses_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        names = ["a", "b", "c"]
        procs = await _boot(names, tmp_path)
        # A memory-only client enqueues: the jobs are safe only through the workers' acks.
        client = await NodeProcess("cl", NodeProcess.command("cl", "127.0.0.1:0", [str(procs["a"].address)],
                                                             "--role", "client")).start()
        for _ in range(300):
            if len((await client.status())["warp"]["live_workers"]) == 3:
                break
            await asyncio.sleep(0.1)
        items = [{"task": f"j{i}", "op": "demo.collatz", "args": i + 1} for i in range(3000)]
        answer = await client.call({"cmd": "enqueue_many", "items": items, "wait": True}, timeout=60)
        assert answer["acknowledged"] is True
        for p in [client, *procs.values()]:
            p.kill()  # the moment the enqueue returned: no goodbye, no flush, nothing more written
        await asyncio.gather(*(p.stop() for p in [client, *procs.values()]))
        procs = await _boot(names, tmp_path)
        try:
            for _ in range(600):
                results = (await procs["b"].call({"cmd": "results"}, timeout=60))["results"]
                if len(results) == len(items):
                    break
                await asyncio.sleep(0.1)
            assert len(results) == len(items), f"{len(items) - len(results)} acknowledged jobs lost"
            assert all(results[f"j{i}"]["value"] == collatz_steps(i + 1) for i in range(len(items)))
        finally:
            await asyncio.gather(*(p.stop() for p in procs.values()))

    asyncio.run(main())


def test_demo_power_cut_with_kill_one() -> None:
    args = [sys.executable, "-m", "warpmesh.cli.app", "demo", "--peers", "3", "--jobs", "1500", "--json",
            "--timeout", "120", "--power-cut", "--kill-one"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["lost"] == 0 and summary["wrong"] == 0 and summary["completed"] == 1500
    for key in ("jobs", "completed", "lost", "wrong", "duplicates", "seconds", "jobs_per_s", "restarted",
                "power_cut_at"):
        assert key in summary
    assert summary["killed"] == ["peer-3"] and summary["restarted"] == 2
    assert summary["power_cut_at"] >= 750


def test_node_data_refusals_exit_with_one_line(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "warpmesh.cli.app", "node", "--listen", "127.0.0.1:0"]
    ok = subprocess.run([*base, "--id", "a", "--data", str(tmp_path / "a"), "--incarnation", "9", "--control",
                         "stdio"], input='{"cmd": "quit"}\n', capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and '"incarnation": 9' in ok.stdout
    low = subprocess.run([*base, "--id", "a", "--data", str(tmp_path / "a"), "--incarnation", "9"],
                         capture_output=True, text=True, timeout=60)
    assert low.returncode == 2 and "not above 9" in low.stderr
    other = subprocess.run([*base, "--id", "b", "--data", str(tmp_path / "a")], capture_output=True, text=True,
                           timeout=60)
    assert other.returncode == 1 and "belongs to node 'a'" in other.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    foreign = subprocess.run([*base, "--id", "c", "--data", str(tmp_path / "mine")], capture_output=True,
                             text=True, timeout=60)
    assert foreign.returncode == 1 and "not a warpmesh node data directory" in foreign.stderr
    for out in (low, other, foreign):
        assert len(out.stderr.strip().splitlines()) == 1
