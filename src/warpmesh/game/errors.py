"""Errors of game sessions: each says what happened and what to do next."""

from __future__ import annotations

from warpmesh.errors import WarpmeshError


class GameError(WarpmeshError):
    """Base class of game-session errors."""


class DuplicateHostError(GameError):
    """Another peer on this mesh already hosts the game (the lowest peer id wins)."""


class RosterFullError(GameError):
    """Every seat is taken and admission is closed."""


class JoinTimeoutError(GameError, TimeoutError):
    """The host did not admit this peer in time."""


class SpectatorsClosedError(GameError):
    """The host does not accept (more) spectators."""


class IllegalMove(GameError, ValueError):
    """A move the rules refuse; the message gives the reason."""
