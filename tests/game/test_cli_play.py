"""The game CLI's player loop (`warpmesh.cli.game._Play`) against a scripted sequencer: a player
that replays the log after a restart may propose for a turn already played; that proposal is
refused when it commits, and the player is asked for its move again instead of waiting forever."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

from warpmesh.cli.game import _Play
from warpmesh.raft.turns import Committed, IndexedAction, SystemRecord


class _Sequencer:
    """Replays ``log`` (with a pause after each event, as a catching-up replay does), then commits
    whatever is proposed at the next index."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.live: asyncio.Queue[Any] = asyncio.Queue()
        self.proposed: list[Any] = []
        self.index = len(log)

    async def propose(self, action: Any, *, timeout: float | None = None) -> IndexedAction[Any]:
        self.proposed.append(action)
        await asyncio.sleep(0.03)  # the commit takes a moment; the replay ends meanwhile
        self.index += 1
        done = IndexedAction(self.index, action, None)
        self.live.put_nowait(Committed(done))
        await asyncio.sleep(0.005)  # the entry is applied (its event seen) before propose returns
        return done

    async def events(self) -> AsyncIterator[Any]:
        for ev in self.log:
            yield ev
            await asyncio.sleep(0.005)
        while True:
            yield await self.live.get()


def _log() -> list[Any]:
    game = SystemRecord(1, ["game", "host", ["tictactoe", 2, 21]], SimpleNamespace(players=["host", "p2"]))
    turns = [("host", 1), ("p2", 4), ("host", 2)]
    return [game] + [Committed(IndexedAction(i + 2, list(t), None)) for i, t in enumerate(turns)]


def test_a_replaying_player_whose_stale_move_is_refused_is_asked_again() -> None:
    async def main() -> tuple[_Sequencer, _Play]:
        seq = _Sequencer(_log())
        session = SimpleNamespace(sequencer=lambda: seq, app_channel=None)
        play = _Play(session, "p2", moves=iter(["4\n", "5\n"]), interactive=False, as_json=True, playing=True)

        async def chat() -> None:
            await asyncio.Event().wait()

        play.chat = chat  # type: ignore[method-assign]
        play.pauses = chat  # type: ignore[method-assign]
        runner = asyncio.ensure_future(play.run())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if play.game is not None and play.game.turns >= 4:
                break
        runner.cancel()
        return seq, play

    seq, play = asyncio.run(main())
    # "4" was proposed while replaying (its turn looked open), refused when it committed after
    # the host's move 2; the player was then asked again and played 5.
    assert seq.proposed[0] == ["p2", 4]
    assert ["p2", 5] in seq.proposed
    assert play.game.turns == 4 and play.game.current() == "host"  # 5 was applied: the host's turn


class _SlowApply(_Sequencer):
    """Commits at once but delivers the committed event only a moment after propose returned."""

    async def propose(self, action: Any, *, timeout: float | None = None) -> IndexedAction[Any]:
        self.proposed.append(action)
        self.index += 1
        done = IndexedAction(self.index, action, None)
        asyncio.get_running_loop().call_later(0.05, self.live.put_nowait, Committed(done))
        return done


def test_a_player_proposes_once_per_turn_while_its_committed_move_is_on_its_way() -> None:
    async def main() -> _Sequencer:
        seq = _SlowApply(_log())
        session = SimpleNamespace(sequencer=lambda: seq, app_channel=None)
        play = _Play(session, "p2", moves=iter(["5\n", "6\n", "7\n"]), interactive=False, as_json=True,
                     playing=True)

        async def idle() -> None:
            await asyncio.Event().wait()

        play.chat = idle  # type: ignore[method-assign]
        play.pauses = idle  # type: ignore[method-assign]
        runner = asyncio.ensure_future(play.run())
        await asyncio.sleep(0.5)
        runner.cancel()
        return seq

    seq = asyncio.run(main())
    # Replaying, p2 proposed once when its turn looked open (after "host 1"): 5, committed after
    # the host's move 2 and applied; nothing more was proposed while that move was on its way.
    assert seq.proposed == [["p2", 5]]
