"""Command workers from the CLI: ``node --speculative`` serving command.run, warm keys in ``status``,
``warpmesh check`` usage errors and JSON shape, ``warpmesh cache ls|gc``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers.test_warm import FAKE_TOOL, _script, fake_recipe, project
from warpmesh.cli.procs import NodeProcess
from warpmesh.workers.warm import WarmCache, warm_boot

pytestmark = pytest.mark.process
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "warpmesh.cli.app", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def warm_fake_cache(tmp_path: Path) -> tuple[dict[str, str], str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _script(bindir / "faketool", FAKE_TOOL)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "WARPMESH_WARM": str(tmp_path / "warm"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    rep = warm_boot(fake_recipe(), project(tmp_path / "p"), cache=WarmCache(tmp_path / "warm"), env=env)
    assert rep.warm and rep.key
    return env, rep.key


def test_node_serves_command_run_and_status_shows_its_warm_keys(tmp_path: Path) -> None:
    env, key = warm_fake_cache(tmp_path)

    async def main() -> None:
        proc = NodeProcess("w1", NodeProcess.command("w1", "127.0.0.1:0", [], "--ops", "warpmesh.workers.commands",
                                                     "--speculative"), env=env)
        await proc.start(timeout=60)
        try:
            addr = proc.address
            assert addr
            arg = json.dumps({"argv": [sys.executable, "-c", "print('hi from a job')"], "deadline": 30})
            out = await asyncio.to_thread(cli, "submit", "--to", addr, "--json", "command.run", arg, env=env)
            assert out.returncode == 0, out.stderr
            rec = json.loads(out.stdout.splitlines()[0])
            assert rec["ok"] and rec["value"]["stdout"] == "hi from a job\n" and rec["value"]["exit_code"] == 0
            assert set(rec["value"]) == {"exit_code", "signal", "stdout", "stderr", "truncated", "seconds", "rusage"}
            st = await asyncio.to_thread(cli, "status", "--to", addr, "--json", env=env)
            assert st.returncode == 0, st.stderr
            peers = {p["peer"]: p for p in json.loads(st.stdout)["peers"]}
            assert peers["w1"]["warm"] == [key]
            assert {"command.run", "command.check"} <= set(peers["w1"]["ops"])
            human = await asyncio.to_thread(cli, "status", "--to", addr, env=env)
            assert f"warm on w1: {key}" in human.stdout
        finally:
            await proc.stop()

    asyncio.run(main())


def test_check_usage_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "WARPMESH_WARM": str(tmp_path / "warm")}
    for args in (["check"], ["check", str(tmp_path / "missing")], ["check", str(tmp_path), "--recipe", "make"],
                 ["cache", "gc", "--max-age", "-1"]):
        out = cli(*args, env=env)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr, args


def test_check_json_rows_and_summary_when_the_tool_is_missing(tmp_path: Path) -> None:
    # No cargo on PATH: the warm boot is unavailable, each check is an error row; shapes hold.
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "WARPMESH_WARM": str(tmp_path / "warm")}
    a, b = project(tmp_path / "a"), project(tmp_path / "b")
    out = cli("check", str(a), str(b), "--speculative", "--json", env=env)
    assert out.returncode == 1
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [sorted(r) for r in lines[:2]] == [sorted(["worktree", "status", "exit_code", "seconds", "rebuilt",
                                                      "fresh", "warm"])] * 2
    assert [r["status"] for r in lines[:2]] == ["error", "error"]
    assert lines[2] == {"summary": {**lines[2]["summary"], "worktrees": 2, "passed": 0, "failed": 2,
                                    "warm_status": "unavailable"}}
    assert "not found on PATH" in out.stderr


def test_cache_ls_and_gc(tmp_path: Path) -> None:
    env, key = warm_fake_cache(tmp_path)
    ls = json.loads(cli("cache", "ls", "--json", env=env).stdout)
    assert [c["key"] for c in ls["caches"]] == [key] and ls["caches"][0]["recipe"] == "fake"
    assert key in cli("cache", "ls", env=env).stdout
    kept = json.loads(cli("cache", "gc", "--json", env=env).stdout)
    assert kept["deleted"] == [] and kept["kept"] == [key]
    gone = json.loads(cli("cache", "gc", "--max-size", "0", "--json", env=env).stdout)
    assert gone["deleted"] == [key] and gone["kept"] == []
