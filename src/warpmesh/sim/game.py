"""Game sessions under simulation: host, joiners and a spectator play Nim over a lossy, seeded
:class:`MemoryFabric` on a virtual clock while a victim (a random player, or the host) crashes.

Checks: every peer that saw the end agrees on the transcript and the final state hash (no desync),
the game finishes after the faults calm down (liveness), a crashed player's seat is recorded lost,
and the spectator, never promoted, sees the same transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from warpmesh.game.errors import IllegalMove
from warpmesh.game.rules import Game
from warpmesh.game.session import GameSession, game_host, game_join, game_spectate
from warpmesh.net.memory import LinkFaults, MemoryFabric
from warpmesh.raft.turns import Committed, SystemRecord
from warpmesh.sim.harness import SimReport
from warpmesh.sim.loop import run_virtual

VICTIMS = ("random", "host", "none")


def run_game(seed: int, *, players: int = 3, victim: str = "random", max_drop: float = 0.2,
             heap: int = 21) -> SimReport:
    """One seeded run; see the module docstring."""
    if victim not in VICTIMS:
        raise ValueError(f"victim must be one of {', '.join(VICTIMS)}")
    params: dict[str, Any] = {}
    if players != 3:
        params["players"] = players
    if victim != "random":
        params["victim"] = victim
    if max_drop != 0.2:
        params["max_drop"] = max_drop
    report = SimReport("game", seed, params)
    try:
        run_virtual(_run(seed, players, victim, max_drop, heap, report))
    except Exception as err:
        import traceback

        report.failures.append(f"exception: {err!r}\n{traceback.format_exc()}")
    return report


async def _follow(s: GameSession, heap: int, out: list[Any], mover: bool, rng: random.Random) -> str | None:
    g: Game | None = None
    seq: Any = s.sequencer()
    pending: asyncio.Task[Any] | None = None
    async for ev in seq.events():
        if isinstance(ev, SystemRecord):
            rec = ev.record
            if rec[0] == "game" and g is None:
                g = Game("nim", rec[2][0], heap)
                for p in ev.state.players:
                    g.seat(p)
            elif g is not None and rec[0] == "seat" and rec[2] == "player":
                g.seat(rec[1])
            elif g is not None and rec[0] == "unseat":
                g.unseat(rec[1])
                out.append(("lost", rec[1]))
        elif isinstance(ev, Committed) and g is not None:
            with contextlib.suppress(IllegalMove, ValueError, TypeError):
                g.apply(*ev.turn.action)
                out.append(tuple(ev.turn.action))
        if g is not None and g.over:
            out.append(("end", g.winner, g.state_hash()))
            return g.state_hash()
        if mover and g is not None and g.current() == s.id and (pending is None or pending.done()):
            move = min(g.heap, rng.randint(1, 3))
            pending = asyncio.ensure_future(_propose(seq, [s.id, move]))
    return None


async def _propose(seq: Any, action: list[Any]) -> None:
    with contextlib.suppress(Exception):
        await seq.propose(action, timeout=30)


async def _run(seed: int, n: int, victim: str, max_drop: float, heap: int, report: SimReport) -> None:
    rng = random.Random(seed)
    drop = rng.uniform(0.0, max_drop)
    fabric = MemoryFabric(seed=rng.getrandbits(32), faults=LinkFaults(
        delay=0.001, jitter=rng.choice((0.0, 0.003)), drop=drop, duplicate=rng.choice((0.0, 0.02)),
        reorder=rng.choice((0.0, 0.02))))
    report.metrics["drop"] = round(drop, 3)
    ids = ["host"] + [f"p{i}" for i in range(2, n + 1)]
    sessions: dict[str, GameSession] = {}
    try:
        started = await asyncio.wait_for(asyncio.gather(
            game_host(fabric.join("host"), n, allow_spectators=True, max_spectators=1, seed=rng.getrandbits(32),
                      admission_timeout=120),
            *(game_join(fabric.join(i), seed=rng.getrandbits(32), timeout=120) for i in ids[1:])), 150)
        for s in started:
            sessions[s.id] = s
        report.metrics["seated_at"] = round(asyncio.get_running_loop().time(), 2)
        spec = await game_spectate(fabric.join("watcher"), seed=rng.getrandbits(32), timeout=120)
        sessions["watcher"] = spec
        await sessions["host"].sequencer().propose_system(["game", "", [n, 0, 0]], timeout=60)
        outs: dict[str, list[Any]] = {i: [] for i in sessions}
        tasks = {i: asyncio.ensure_future(_follow(s, heap, outs[i], i != "watcher", random.Random(rng.getrandbits(32))))
                 for i, s in sessions.items()}
        dead: str | None = None
        if victim != "none" and n >= 3:
            await asyncio.sleep(rng.uniform(0.0, 1.5))
            dead = "host" if victim == "host" else rng.choice(ids)
            fabric.crash(dead)
            await sessions[dead].close()
            tasks[dead].cancel()
            report.metrics["victim"] = dead
        await asyncio.sleep(rng.uniform(1.0, 3.0))
        fabric.calm()
        alive = [i for i in sessions if i != dead]
        done, _ = await asyncio.wait([tasks[i] for i in alive], timeout=120)
        if len(done) != len(alive):
            stuck = [i for i in alive if not tasks[i].done()]
            report.failures.append(f"liveness: the game did not finish on {stuck} within 120 s after calm "
                                   f"(seats {sessions[alive[0]].book}, paused: {sessions[alive[0]].paused.value})")
            return
        hashes = {i: tasks[i].result() for i in alive}
        if len(set(hashes.values())) != 1:
            report.failures.append(f"desync: final state hashes differ: {hashes}")
        ref = outs[alive[0]]
        for i in alive[1:]:
            if outs[i] != ref:
                report.failures.append(f"desync: transcript of {i} differs from {alive[0]}'s")
        if sessions["watcher"].raft.membership.value.is_voter("watcher"):
            report.failures.append("the spectator was promoted to voter")
        report.metrics["turns"] = len([x for x in ref if x[0] not in ("lost", "end")])
        report.trace = str(hashes[alive[0]])
    finally:
        for s in sessions.values():
            with contextlib.suppress(Exception):
                await s.close()
        await fabric.close()
