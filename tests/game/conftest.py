"""Shared helpers: game sessions on a virtual clock over the in-memory fabric."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from warpmesh.game.session import GameSession
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.raft.turns import Committed
from warpmesh.raft.types import Role
from warpmesh.sim.loop import run_virtual


def play(body: Callable[[MemoryFabric], Awaitable[Any]], *, seed: int = 1,
         faults: LinkFaults | None = None) -> Any:
    """Run ``body(fabric)`` on a virtual clock; close every session it registered."""

    async def main() -> Any:
        fabric = MemoryFabric(seed=seed, faults=faults or LinkFaults(delay=0.001))
        try:
            return await body(fabric)
        finally:
            for s in list(SESSIONS):
                await s.close()
            SESSIONS.clear()
            await fabric.close()

    return run_virtual(main())


SESSIONS: list[GameSession] = []


def keep(*sessions: GameSession) -> None:
    SESSIONS.extend(sessions)


async def until(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def leader_of(*sessions: GameSession) -> GameSession:
    leaders = [s for s in sessions if s.node is not None and not s.node.closed
               and s.node.role.value == Role.LEADER]
    assert len(leaders) == 1, [s.id for s in leaders]
    return leaders[0]


async def committed_actions(session: GameSession, n: int) -> list[Any]:
    out = []
    async for ev in session.sequencer().events():
        if isinstance(ev, Committed):
            out.append(ev.turn.action)
            if len(out) >= n:
                return out
    return out
