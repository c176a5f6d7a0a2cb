"""Ops served by the ``warpmesh node`` processes of ``test_warp_processes.py``.

Loaded with ``--ops tests.cli.warp_test_ops`` (the tests put the repository root on PYTHONPATH).
Every op that takes ``{"task": ...}`` appends the task id to the file named by
``$WARP_TEST_RUNLOG`` (one file per node) when it *starts*, so a test can count who ran what,
including runs that a SIGKILL cut short.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from warpmesh.warp.ops import OpRegistry

registry = OpRegistry()


def _log(args: Any) -> None:
    path = os.environ.get("WARP_TEST_RUNLOG")
    if path and isinstance(args, dict) and "task" in args:
        with open(path, "a", encoding="utf-8") as fh:  # O_APPEND: one whole line per write
            fh.write(f"{args['task']}\n")


def echo(args: dict[str, Any]) -> dict[str, Any]:
    _log(args)
    return {"task": args["task"], "value": args.get("value")}


async def slow(args: dict[str, Any]) -> str:
    _log(args)
    await asyncio.sleep(float(args.get("seconds", 1.0)))
    return f"slept-{args['task']}"


def fail(args: dict[str, Any]) -> None:
    _log(args)
    raise ValueError(f"boom: {args['task']}")


def square(x: int) -> int:
    return x * x


registry.register("t.echo", echo, mode="inline")
registry.register("t.slow", slow)
registry.register("t.fail", fail, mode="inline")
registry.register("t.square", square, mode="inline")


def add(a: int, b: int, scale: int = 1) -> int:
    return (a + b) * scale


registry.register("t.add", add, mode="inline")
