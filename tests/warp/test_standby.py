"""``Standby``: an op that cannot run a task *yet* releases it without failing it or using attempts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from warpmesh.sim import run_virtual
from warpmesh.warp import OpRegistry, Standby

from .harness import FAST, make_mesh


def _registry(ready: dict[str, bool], calls: list[str], mode: str) -> OpRegistry:
    reg = OpRegistry()

    def check(args: Any) -> str:
        calls.append(args)
        if not ready["yes"]:
            raise Standby("dependency missing", retry_after=0.5)
        return f"done-{args}"

    if mode == "async":
        async def op(args: Any) -> str:
            await asyncio.sleep(0)
            return check(args)

        reg.register("dep", op)
    else:
        reg.register("dep", check, mode="inline")
    return reg


@pytest.mark.parametrize("mode", ["inline", "async"])
def test_standby_neither_fails_nor_spends_attempts_and_retries_later(mode: str) -> None:
    async def main() -> None:
        from dataclasses import replace

        ready = {"yes": False}
        calls: list[str] = []
        mesh = await make_mesh([], config=replace(FAST, max_attempts=1))
        node = await mesh.add("solo", registry=_registry(ready, calls, mode))
        await node.enqueue("t1", "dep", "t1")
        await asyncio.sleep(5.0)
        # Retried every ~0.5 s (at the re-claim passes), never answered, never failed.
        assert 3 <= len(calls) <= 12
        assert "t1" not in node.results and node.queue_depth == 1
        assert node.local_stats["failures"] == 0 and node.local_stats["executions"] == 0
        ready["yes"] = True
        res = await node.outcome("t1", timeout=5.0)
        assert res.ok and res.value == "done-t1" and res.attempts == 1
        await mesh.close()

    run_virtual(main())


def test_wake_standby_reconsiders_at_once() -> None:
    async def main() -> None:
        from dataclasses import replace

        ready = {"yes": False}
        calls: list[str] = []
        # A long retry period and re-claim interval: only wake_standby can bring the task back soon.
        mesh = await make_mesh([], config=replace(FAST, reclaim_interval=30.0))
        reg = OpRegistry()

        def op(args: Any) -> str:
            calls.append(args)
            if not ready["yes"]:
                raise Standby("not yet", retry_after=60.0)
            return "ok"

        reg.register("dep", op, mode="inline")
        node = await mesh.add("solo", registry=reg)
        await node.enqueue("t1", "dep", "t1")
        await asyncio.sleep(1.0)
        assert calls == ["t1"]
        ready["yes"] = True
        node.wake_standby()
        res = await node.outcome("t1", timeout=0.5)
        assert res.ok and calls == ["t1", "t1"]
        await mesh.close()

    run_virtual(main())


def test_standby_retry_after_must_be_non_negative() -> None:
    with pytest.raises(ValueError):
        Standby("x", retry_after=-1)
    assert Standby("x").retry_after == 5.0
