"""Real ``warpmesh node`` processes on loopback: replication through SIGKILL, secrets, Warp failover."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from warpmesh.cli.procs import NodeProcess

pytestmark = pytest.mark.process


def test_mesh_demo_converges_after_sigkill_and_restart() -> None:
    out = subprocess.run([sys.executable, "-m", "warpmesh.cli.app", "mesh-demo", "--json", "--elements", "20"],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    outcome = json.loads(out.stdout.strip().splitlines()[-1])
    assert outcome["converged"] and outcome["failures"] == []


def test_three_nodes_with_a_secret_replicate_and_refuse_a_fourth_with_the_wrong_secret() -> None:
    async def main() -> None:
        good = {**os.environ, "WARPMESH_SECRET": "correct horse battery staple"}
        bad = {**os.environ, "WARPMESH_SECRET": "wrong"}
        procs: list[NodeProcess] = []
        try:
            a = await NodeProcess("a", NodeProcess.command("a", "127.0.0.1:0", []), env=good).start()
            procs.append(a)
            assert a.address
            for n in ("b", "c"):
                procs.append(await NodeProcess(n, NodeProcess.command(n, "127.0.0.1:0", [a.address]), env=good).start())
            # The intruder is refused and, since issue 9, exits 1 saying why instead of idling alone.
            intruder = await asyncio.create_subprocess_exec(
                *NodeProcess.command("mallory", "127.0.0.1:0", [a.address]), env=bad, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(intruder.communicate(), 30)
            assert intruder.returncode == 1 and b"bad_secret" in err and b"ready" not in out
            await procs[1].call({"cmd": "add", "elem": "hello"})

            async def all_have_it() -> None:
                while True:
                    sts = [await p.status() for p in procs[:3]]
                    if all("hello" in s["tags"] and len(s["roster"]) == 3 for s in sts):
                        return
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(all_have_it(), 30)
            for p in procs[:3]:
                assert "mallory" not in (await p.status())["roster"]
            assert any("refused" in line or "secret" in line for line in a.stderr_tail)
        finally:
            for p in procs:
                await p.stop()

    asyncio.run(main())


@pytest.mark.parametrize("kill", [False, True])
def test_demo_answers_every_job_correctly(kill: bool) -> None:
    args = [sys.executable, "-m", "warpmesh.cli.app", "demo", "--peers", "3", "--jobs", "600", "--json",
            "--timeout", "120"]
    if kill:
        args.append("--kill-one")
    out = subprocess.run(args, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["lost"] == 0 and summary["wrong"] == 0 and summary["completed"] == 600
    for key in ("jobs", "completed", "lost", "wrong", "duplicates", "seconds", "jobs_per_s"):
        assert key in summary
    if kill:
        assert summary["killed"] == ["peer-3"]
    else:
        assert summary["duplicates"] == 0
