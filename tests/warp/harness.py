"""A small in-process mesh of WarpNodes on the memory fabric, under virtual time."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warpmesh.liveness import HeartbeatConfig
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.quilt import QuilterConfig
from warpmesh.warp import ClaimStrategy, OpRegistry, WarpConfig, WarpNode

FAST = WarpConfig(
    settle_window=0.2,
    reclaim_interval=0.5,
    heartbeat=HeartbeatConfig(interval=0.05, timeout=0.3, lost_after=3.0),
    quilter=QuilterConfig(anti_entropy_interval=0.2, resend_after=0.1, evict_after=10.0),
)


@dataclass
class ExecLog:
    """Who executed which task (shared by every node of an in-process mesh)."""

    runs: list[tuple[str, str]] = field(default_factory=list)

    def executed_by(self, task: str) -> list[str]:
        return [peer for peer, t in self.runs if t == task]

    def per_task(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for _, t in self.runs:
            counts[t] += 1
        return dict(counts)


def recording_registry(log: ExecLog, peer: str, fn: Callable[[Any], Any] | None = None,
                       delay: float = 0.0) -> OpRegistry:
    """An ``echo`` op that logs who ran it; with ``delay`` it is async and takes that long."""
    reg = OpRegistry()

    def echo(args: Any) -> Any:
        log.runs.append((peer, args["task"]))
        return fn(args) if fn is not None else f"result-{args['task']}"

    async def slow_echo(args: Any) -> Any:
        log.runs.append((peer, args["task"]))
        await asyncio.sleep(delay)
        return fn(args) if fn is not None else f"result-{args['task']}"

    if delay > 0:
        reg.register("echo", slow_echo)
    else:
        reg.register("echo", echo, mode="inline")
    return reg


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` on virtual time (counters and boards converge; they are never instant)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.05)


class Mesh:
    def __init__(self, fabric: MemoryFabric, log: ExecLog, config: WarpConfig) -> None:
        self.fabric = fabric
        self.log = log
        self.config = config
        self.nodes: dict[str, WarpNode] = {}

    async def add(self, name: str, *, registry: OpRegistry | None = None, **kw: Any) -> WarpNode:
        seam = self.fabric.join(name)
        reg = registry if registry is not None else recording_registry(self.log, name)
        node = WarpNode(seam, registry=reg, config=self.config, **kw)
        self.nodes[name] = await node.start()
        return node

    async def crash(self, name: str) -> None:
        node = self.nodes.pop(name)
        self.fabric.crash(name)
        await node.close()

    async def settle(self, seconds: float = 1.0) -> None:
        await asyncio.sleep(seconds)

    async def await_results(self, tasks: list[str], timeout: float = 20.0) -> None:
        for node in self.nodes.values():
            for t in tasks:
                await node.outcome(t, timeout=timeout)

    async def close(self) -> None:
        for node in list(self.nodes.values()):
            await node.close()
        await self.fabric.close()


async def make_mesh(names: list[str], *, seed: int = 0, strategy: ClaimStrategy = ClaimStrategy.INTENT,
                    faults: LinkFaults | None = None, config: WarpConfig | None = None) -> Mesh:
    from dataclasses import replace

    cfg = replace(config or FAST, strategy=strategy)
    fabric = MemoryFabric(seed=seed, faults=faults or LinkFaults(delay=0.001))
    mesh = Mesh(fabric, ExecLog(), cfg)
    for n in names:
        await mesh.add(n)
    await mesh.settle(1.0)
    return mesh
