"""The example games, pure: tic-tac-toe for two and Nim for two to four.

A game state is a function of the committed turns and seat records (every peer computes the same
one); :meth:`Game.state_hash` digests it, so transcripts can be compared. Moves are ints: a cell
1-9 (left to right, top to bottom) or a number of stones 1-3. Players move in the order they were
seated (the host first); a player whose seat is lost leaves the turn order and the others go on. A
game with fewer than two players left after it started is won by the last one standing.
"""

from __future__ import annotations

from typing import Any

import blake3

from warpmesh.game.errors import IllegalMove
from warpmesh.wire.frame import pack

GAMES = ("tictactoe", "nim")
_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))


class Game:
    """State of one game (see the module docstring). ``needed`` players start it."""

    def __init__(self, kind: str, needed: int, heap: int = 21) -> None:
        if kind not in GAMES:
            raise ValueError(f"unknown game {kind!r}; choose one of {', '.join(GAMES)}")
        if kind == "tictactoe" and needed != 2:
            raise ValueError("tic-tac-toe is for exactly 2 players")
        if kind == "nim" and not 2 <= needed <= 4:
            raise ValueError("Nim is for 2 to 4 players")
        if heap < 1:
            raise ValueError("the heap needs at least one stone")
        self.kind = kind
        self.needed = needed
        self.players: list[str] = []
        self.marks: dict[str, str] = {}
        self.board: list[str] = [""] * 9
        self.heap = heap
        self.next = 0
        self.started = False
        self.over = False
        self.winner: str | None = None
        self.turns = 0

    # -- seats ----------------------------------------------------------------------------------
    def seat(self, player: str) -> None:
        """A player got a seat: it joins the turn order (at the end)."""
        if self.over or player in self.players:
            return
        if self.started and self.kind == "tictactoe":
            return  # a two-player board takes no newcomer mid-game
        self.players.append(player)
        if self.kind == "tictactoe":
            self.marks[player] = "XO"[len(self.marks) % 2]
        if not self.started and len(self.players) >= self.needed:
            self.started = True

    def unseat(self, player: str) -> None:
        """A player lost or left its seat: it leaves the turn order; the others go on."""
        if player not in self.players:
            return
        i = self.players.index(player)
        self.players.pop(i)
        if i < self.next:
            self.next -= 1
        if self.players:
            self.next %= len(self.players)
        else:
            self.next = 0
        if self.started and not self.over and len(self.players) < 2:
            self.over = True
            self.winner = self.players[0] if self.players else None

    # -- moves ----------------------------------------------------------------------------------
    def current(self) -> str | None:
        """Whose turn it is (None before the start and after the end)."""
        if not self.started or self.over or not self.players:
            return None
        return self.players[self.next]

    @staticmethod
    def parse(text: str) -> int:
        """A move typed by a user; raises :class:`IllegalMove` if it is not a whole number."""
        try:
            return int(text.strip())
        except ValueError:
            raise IllegalMove(f"{text.strip()!r} is not a number") from None

    def check(self, player: str, move: Any) -> str | None:
        """Why ``player`` may not play ``move`` now, or None if it may."""
        if self.over:
            return "the game is over"
        if not self.started:
            return f"the game has not started: {len(self.players)} of {self.needed} players seated"
        if player != self.current():
            return f"it is {self.current()}'s turn, not {player}'s"
        if type(move) is not int:
            return "a move is a whole number"
        if self.kind == "tictactoe":
            if not 1 <= move <= 9:
                return "pick a cell from 1 to 9"
            if self.board[move - 1]:
                return f"cell {move} is taken"
        else:
            if not 1 <= move <= 3:
                return "take 1, 2 or 3 stones"
            if move > self.heap:
                return f"only {self.heap} stone(s) left"
        return None

    def apply(self, player: str, move: Any) -> None:
        """Play a committed move; raises :class:`IllegalMove` (state unchanged) if it is refused."""
        reason = self.check(player, move)
        if reason is not None:
            raise IllegalMove(reason)
        self.turns += 1
        if self.kind == "tictactoe":
            mark = self.marks[player]
            self.board[move - 1] = mark
            if any(all(self.board[c] == mark for c in line) for line in _LINES):
                self.over, self.winner = True, player
            elif all(self.board):
                self.over, self.winner = True, None
        else:
            self.heap -= move
            if self.heap == 0:
                self.over, self.winner = True, player
        if not self.over:
            self.next = (self.next + 1) % len(self.players)

    # -- state ----------------------------------------------------------------------------------
    def to_obj(self) -> list[Any]:
        return [self.kind, self.needed, self.players, self.marks, self.board, self.heap, self.next,
                self.started, self.over, self.winner, self.turns]

    @classmethod
    def from_obj(cls, obj: Any) -> Game:
        kind, needed, players, marks, board, heap, nxt, started, over, winner, turns = obj
        g = cls(kind, needed, max(1, heap))
        g.players, g.marks, g.board, g.heap = list(players), dict(marks), list(board), heap
        g.next, g.started, g.over, g.winner, g.turns = nxt, started, over, winner, turns
        return g

    def state_hash(self) -> str:
        """Hex digest of the whole state: equal on every peer at the same log position."""
        return blake3.blake3(pack(self.to_obj())).hexdigest()

    def render(self) -> str:
        """A plain-text picture of the board (the CLI dresses it up)."""
        if self.kind == "tictactoe":
            rows = []
            for r in range(3):
                cells = [self.board[3 * r + c] or str(3 * r + c + 1) for c in range(3)]
                rows.append(" " + " | ".join(cells))
            return "\n---+---+---\n".join(rows)
        return f"heap: {self.heap} stone(s)  " + "o" * min(self.heap, 60)

    def status(self) -> str:
        if self.over:
            return f"game over: {self.winner} wins" if self.winner else "game over: draw"
        if not self.started:
            return f"waiting for players: {len(self.players)} of {self.needed} seated"
        cur = self.current()
        mark = f" ({self.marks[cur]})" if cur in self.marks else ""
        return f"{cur}{mark} to move"
