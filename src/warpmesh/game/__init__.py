"""Turn-based game sessions over Raft (seed 002's game facade); see docs/game.md.

Core modules (pure): :mod:`warpmesh.game.seats`, :mod:`warpmesh.game.presence`,
:mod:`warpmesh.game.rules`, :mod:`warpmesh.game.errors`. Runtime: :mod:`warpmesh.game.session`
(exported lazily here, so importing the package pulls in no asyncio machinery).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
from warpmesh.game.errors import (
    DuplicateHostError,
    GameError,
    IllegalMove,
    JoinTimeoutError,
    RosterFullError,
    SpectatorsClosedError,
)
from warpmesh.game.rules import Game
from warpmesh.game.seats import SeatBook

if TYPE_CHECKING:
    from warpmesh.game.session import (
        GameSession,
        ReturnAt,
        game_host,
        game_join,
        game_node,
        game_spectate,
    )

__getattr__, __dir__ = lazy_exports(__name__, globals(), dict.fromkeys(
    ("GameSession", "ReturnAt", "game_host", "game_join", "game_node", "game_spectate"), "warpmesh.game.session"))

__all__ = [
    "DuplicateHostError",
    "Game",
    "GameError",
    "GameSession",
    "IllegalMove",
    "JoinTimeoutError",
    "ReturnAt",
    "RosterFullError",
    "SeatBook",
    "SpectatorsClosedError",
    "game_host",
    "game_join",
    "game_node",
    "game_spectate",
]

