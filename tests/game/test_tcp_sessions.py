"""A representative subset of the game scenarios over a real TCP mesh on loopback (real clock)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import pytest

from tests.game.conftest import committed_actions
from warpmesh.game import RosterFullError, game_host, game_join, game_spectate
from warpmesh.net.tcp import TcpMesh


async def _mesh(name: str, join: Any = None) -> TcpMesh:
    m = TcpMesh(name, listen=("127.0.0.1", 0), join=[join] if join else [],
                incarnation=int.from_bytes(os.urandom(6), "big"))
    return await m.start()


def test_over_tcp_join_play_chat_spectate_and_roster_full() -> None:
    async def main() -> None:
        meshes = [await _mesh("host")]
        addr = meshes[0].address
        for name in ("p2", "w", "p3"):
            meshes.append(await _mesh(name, addr))
        sessions: list[Any] = []
        try:
            h, j = await asyncio.wait_for(asyncio.gather(
                game_host(meshes[0], 2, allow_spectators=True, max_spectators=1),
                game_join(meshes[1])), 30)
            sessions += [h, j]
            assert h.book.players == j.book.players == ["host", "p2"]
            chat = j.app_channel("chat").subscribe()
            await h.app_channel("chat").broadcast(b"gl hf")
            assert await asyncio.wait_for(chat.get(), 10) == ("host", b"gl hf")
            for i in range(5):
                await (h if i % 2 == 0 else j).sequencer().propose(i, timeout=10)
            w = await game_spectate(meshes[2], timeout=20)
            sessions.append(w)
            assert await asyncio.wait_for(committed_actions(w, 5), 20) == list(range(5))
            with pytest.raises(RosterFullError):
                await game_join(meshes[3], timeout=20)
        finally:
            for s in sessions:
                await s.close()
            for m in meshes:
                with contextlib.suppress(Exception):
                    await m.close()

    asyncio.run(main())
