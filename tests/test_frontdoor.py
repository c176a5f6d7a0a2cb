"""The front door: ``warpmesh.open_node`` and ``warpmesh.connect``, and the README's Python example."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import warpmesh

ROOT = Path(__file__).resolve().parents[1]


def _ops() -> warpmesh.OpRegistry:
    reg = warpmesh.OpRegistry()
    reg.register("add", lambda a, b: a + b)
    reg.register("boom", _boom)
    return reg


def _boom() -> None:
    raise RuntimeError("kaboom")


def test_two_peers_on_a_memory_fabric_share_jobs() -> None:
    async def main() -> tuple[Any, ...]:
        fabric = warpmesh.MemoryFabric()
        async with (warpmesh.open_node("a", fabric=fabric, ops=_ops()) as a,
                    warpmesh.open_node("b", fabric=fabric, ops=_ops()) as b):
            await a.enqueue("t1", "add", 2, 3)
            value = await b.result("t1", 10)
            await b.enqueue("t2", "boom")
            with pytest.raises(warpmesh.TaskFailed) as failed:
                await a.result("t2", 10)
            record = await a.outcome("t1", 10)
            boards = a.status()["boards"]
            live = a.status()["liveness"]
            return value, a.address, record.ok, record.by, str(failed.value), a.status()["role"], boards, live

    value, address, ok, by, error, role, boards, live = asyncio.run(main())
    assert live["mode"] == "probe" and set(live["probe"]) >= {"probes", "suspected", "believed", "refuted"}
    assert (value, address, ok, role) == (5, None, True, "worker")
    # Replication tallies per board: t1 and t2 crossed the queue and results boards both ways.
    assert set(boards) == {"queue", "results", "intents", "counters", "members"}
    for name in ("queue", "results"):
        assert boards[name]["deltas_in"] >= 1 and boards[name]["out_delta"] >= 1, boards[name]
    assert by in ("a", "b")
    assert "kaboom" in error


def test_tcp_peers_and_a_client_on_loopback() -> None:
    async def main() -> dict[str, Any]:
        async with (warpmesh.open_node("a", ops=_ops()) as a,
                    warpmesh.open_node("b", join=[a.address], ops=_ops()) as b):
            assert a.address is not None and a.address.startswith("127.0.0.1:")
            await b.enqueue("t1", "add", 20, 22)
            out: dict[str, Any] = {"peer": await a.result("t1", 10)}
            async with warpmesh.connect(a.address, connect_timeout=10) as client:
                task = await client.submit("add", 4, 5)
                out["task"] = task
                out["client"] = await client.result(task, 10)
                out["by"] = (await client.outcome(task, 10)).by
                out["status"] = await client.status()
            return out

    out = asyncio.run(main())
    assert out["peer"] == 42 and out["client"] == 9
    assert out["task"] == warpmesh.content_task_id("add", [4, 5])
    assert out["by"] in ("a", "b")
    status = out["status"]
    assert status["live_workers"] == ["a", "b"]
    assert status["entry"] == "a" and status["results"] >= 2
    assert {p["peer"] for p in status["peers"]} == {"a", "b"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_leaving_the_block_closes_the_node_and_frees_the_port() -> None:
    port = _free_port()

    async def main() -> tuple[bool, bool]:
        async with warpmesh.open_node("a", listen=f"127.0.0.1:{port}", ops=_ops()) as a:
            node = a.node
            assert a.address == f"127.0.0.1:{port}"
        with socket.socket() as s:  # nothing listens there any more
            refused = s.connect_ex(("127.0.0.1", port)) != 0
        async with warpmesh.open_node("a", listen=f"127.0.0.1:{port}", ops=_ops()):
            pass  # the same address can be opened again
        return refused, node._closed

    refused, closed = asyncio.run(main())
    assert refused and closed


def test_a_seed_that_does_not_answer_raises_join_error() -> None:
    port = _free_port()

    async def main() -> None:
        async with warpmesh.open_node("b", join=[f"127.0.0.1:{port}"], ops=_ops(), join_timeout=0.5):
            pytest.fail("joined a mesh that does not exist")

    with pytest.raises(warpmesh.JoinError) as err:
        asyncio.run(main())
    assert isinstance(err.value, warpmesh.WarpmeshError)
    assert f"127.0.0.1:{port}" in str(err.value)


def test_the_secret_comes_from_the_environment_and_a_wrong_one_is_refused(monkeypatch: Any,
                                                                        tmp_path: Path) -> None:
    secret = "correct horse battery staple, twice over"
    monkeypatch.setenv("WARPMESH_SECRET", secret)
    wrong = tmp_path / "wrong"
    wrong.write_text("another secret of more than enough length\n")

    async def main() -> tuple[int, str]:
        async with warpmesh.open_node("a", ops=_ops()) as a:  # reads $WARPMESH_SECRET
            assert a.address is not None
            async with warpmesh.connect(a.address, secret=secret, connect_timeout=10) as client:
                task = await client.submit("add", 1, 2)
                value = await client.result(task, 10)
            with pytest.raises(warpmesh.ConnectError) as refused:
                async with warpmesh.connect(a.address, secret_file=wrong, connect_timeout=5):
                    pass
            return value, str(refused.value)

    value, refused = asyncio.run(main())
    assert value == 3
    assert "bad_secret" in refused


def test_the_package_exports_the_front_door() -> None:
    for name in warpmesh.__all__:
        assert getattr(warpmesh, name) is not None
    for err in (warpmesh.TaskFailed, warpmesh.ConnectError, warpmesh.JoinError, warpmesh.SecretError,
                warpmesh.Unavailable, warpmesh.NotReplicated):
        assert issubclass(err, warpmesh.WarpmeshError)
    assert warpmesh.WarpNode.__name__ == "WarpNode" and warpmesh.KVClient.__name__ == "KVClient"


def _readme_example() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), flags=re.S | re.M)
    runnable = [b for b in blocks if "warpmesh.open_node" in b]
    assert len(runnable) == 1, "README.md must hold one Python example that uses warpmesh.open_node"
    return runnable[0]


def test_the_readme_example_uses_only_import_warpmesh_and_runs() -> None:
    code = _readme_example()
    assert not re.search(r"^\s*(from warpmesh\S*\s+import|import warpmesh\.)", code, flags=re.M)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5", "9"]


def test_attached_hooks_start_before_the_node_and_close_after_it() -> None:
    events: list[str] = []

    class Extra:
        def __init__(self, node: Any) -> None:
            self.node = node

        async def start(self) -> None:
            events.append(f"start started={self.node._started}")

        async def close(self) -> None:
            events.append(f"close closed={self.node._closed}")

    async def main() -> None:
        async with warpmesh.open_node("a", fabric=warpmesh.MemoryFabric(), ops=_ops(), attach=[Extra],
                                      strategy="ring") as a:
            events.append(f"inside strategy={a.node.config.strategy.value}")

    asyncio.run(main())
    assert events == ["start started=False", "inside strategy=ring", "close closed=True"]
