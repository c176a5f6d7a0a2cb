"""Command jobs: argument validation, process-group kill, capture caps, limits, the command.run op."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from warpmesh.errors import WarpmeshError
from warpmesh.workers.command import CommandError, parse_command
from warpmesh.workers.commands import COMMAND_RUN_OP, CommandWorkers, run_command
from warpmesh.workers.subproc import SpawnError, run_process

PY = sys.executable


def alive(pid: int) -> bool:
    """A live (non-zombie) process: zombies wait for a reaper that may not exist in a container."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_parse_rejects_bad_arguments_with_named_fields() -> None:
    assert parse_command({"argv": ["true"]}).argv == ("true",)
    for bad, word in [(None, "object"), ({}, "argv"), ({"argv": []}, "argv"), ({"argv": [1]}, "argv"),
                      ({"argv": ["x"], "deadline": -1}, "deadline"), ({"argv": ["x"], "memory_mb": 1.5}, "memory_mb"),
                      ({"argv": ["x"], "env": {"A B": "1"}}, "A B"), ({"argv": ["x"], "tree": "zz"}, "tree"),
                      ({"argv": ["x"], "cwd": "/", "tree": "0" * 64}, "not both"), ({"argv": ["x"], "bogus": 1}, "bogus"),
                      ({"argv": ["x"], "cpu_seconds": True}, "cpu_seconds")]:
        with pytest.raises(CommandError, match=word):
            parse_command(bad)
    assert issubclass(CommandError, WarpmeshError) and issubclass(CommandError, ValueError)
    spec = parse_command({"argv": ["a"], "env": {"X": "1"}, "deadline": 3, "cpu_seconds": 2, "memory_mb": 64})
    assert parse_command(spec.as_arg()) == spec


def test_result_shape_exit_code_and_capture() -> None:
    res = run_process([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"])
    d = res.as_dict()
    assert set(d) == {"exit_code", "signal", "stdout", "stderr", "truncated", "seconds", "rusage"}
    assert (d["exit_code"], d["signal"], d["stdout"], d["stderr"], d["truncated"]) == (3, None, "out\n", "err\n", False)
    assert d["seconds"] > 0 and {"utime", "stime", "maxrss_kb"} <= set(d["rusage"])


def test_output_is_capped_but_fully_drained() -> None:
    # 8 MB through a 1 KB cap: the child must not block on a full pipe, and the result says so.
    res = run_process([PY, "-c", "import sys; sys.stdout.write('x' * 8_000_000)"], capture=1024, deadline=30)
    assert res.exit_code == 0 and len(res.stdout) == 1024 and res.truncated


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; sleep 300"
    start = time.monotonic()
    res = run_process(["sh", "-c", script], deadline=0.5)
    assert res.timed_out and res.signal == "SIGTERM" and res.exit_code is None
    assert time.monotonic() - start < 5
    grandchild = int(pids.read_text())
    deadline = time.monotonic() + 2
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(grandchild), "a process of the job outlived it"


def test_term_ignoring_child_is_killed_after_grace() -> None:
    res = run_process([PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(300)"], deadline=0.5, grace=0.3)
    assert res.signal == "SIGKILL" and 0.7 <= res.seconds < 5


def test_background_process_does_not_outlive_a_successful_job(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    res = run_process(["sh", "-c", f"(sleep 300 >/dev/null 2>&1 & echo $! > {pids}); exit 0"], deadline=10)
    assert res.exit_code == 0
    time.sleep(0.05)
    assert not alive(int(pids.read_text()))


def test_cancel_kills_the_group() -> None:
    import threading

    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    res = run_process(["sleep", "300"], cancel=cancel, deadline=60)
    assert res.cancelled and not res.timed_out and res.signal == "SIGTERM" and res.seconds < 5


def test_cpu_and_memory_limits() -> None:
    res = run_process([PY, "-c", "while True: pass"], cpu_seconds=1, deadline=20)
    assert res.signal in ("SIGXCPU", "SIGKILL") and res.rusage["utime"] >= 0.5
    res = run_process([PY, "-c", "b = bytearray(400 * 1024 * 1024)"], memory_mb=200, deadline=20)
    assert res.exit_code != 0 and "MemoryError" in res.stderr


def test_missing_executable_and_cwd() -> None:
    with pytest.raises(SpawnError, match="PATH"):
        run_process(["/nonexistent/tool"])
    with pytest.raises(CommandError, match="does not exist"):
        run_command({"argv": ["true"], "cwd": "/nonexistent/dir"})


def test_env_overlay_and_cwd(tmp_path: Path) -> None:
    res = run_command({"argv": [PY, "-c", "import os; print(os.getcwd(), os.environ['WM_X'])"],
                       "cwd": str(tmp_path), "env": {"WM_X": "42"}})
    assert res.stdout.split() == [str(tmp_path.resolve()), "42"]


def test_tree_is_materialized_and_removed(tmp_path: Path) -> None:
    from warpmesh.workers import Store
    from warpmesh.workers.fold import import_dir

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.txt").write_text("beta")
    with Store(tmp_path / "store") as store:
        tree = import_dir(store, src)
        res = run_command({"argv": [PY, "-c", "import os; print(open('a.txt').read(), open('sub/b.txt').read(), os.getcwd())"],
                           "tree": tree.id.hex()}, store=store)
        assert res.exit_code == 0, res.stderr
        a, b, where = res.stdout.split()
        assert (a, b) == ("alpha", "beta") and not os.path.exists(where)
        with pytest.raises(CommandError, match="not in this peer's store"):
            run_command({"argv": ["true"], "tree": "ab" * 32}, store=store)


def test_command_run_op_on_a_warp_mesh(tmp_path: Path) -> None:
    from tests.warp.harness import make_mesh

    async def main() -> None:
        mesh = await make_mesh([])
        try:
            workers = CommandWorkers()
            reg = workers.registry
            node = await mesh.add("w1", registry=reg)
            workers.bind(node)
            await mesh.settle(0.5)
            await node.enqueue("j1", COMMAND_RUN_OP, {"argv": [PY, "-c", "print(6 * 7)"]})
            await node.enqueue("j2", COMMAND_RUN_OP, {"argv": ["sleep", "30"], "deadline": 0.3})
            await node.enqueue("j3", COMMAND_RUN_OP, {"argv": []})
            r1, r2, r3 = [await node.result(t, timeout=20) for t in ("j1", "j2", "j3")]
            assert r1.ok and r1.value["stdout"] == "42\n" and r1.value["exit_code"] == 0
            assert r2.ok and r2.value["signal"] == "SIGTERM"
            assert not r3.ok and "argv" in (r3.error or "")
        finally:
            await mesh.close()

    asyncio.run(main())
