"""``warpmesh game host|join|watch``: turn-based games (tic-tac-toe, Nim) over Raft on a TCP mesh.

Every peer applies the same committed turns, so every screen shows the same board; the host is only
the first Raft leader, so the game survives it leaving or crashing (with three or more voters).
``--moves FILE`` (``-`` for stdin) plays non-interactively; ``--json`` prints each committed turn as
``{"index", "player", "move"}``, ``{"event": "seat_lost", "player"}`` when a seat is lost, and finally
``{"final_state_hash", "winner"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from warpmesh.cli.common import load_mesh_security, mesh_options, parse_addr, setup_logging
from warpmesh.errors import WarpmeshError


def _addr(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    return None if value is None else parse_addr(value, param.name or "address")


class _Play:
    """One peer's view of the game: follows committed events, prints, and moves on its turn."""

    def __init__(self, session: Any, me: str, *, moves: Iterator[str] | None, interactive: bool,
                 as_json: bool, playing: bool) -> None:
        from rich.console import Console

        self.s = session
        self.me = me
        self.moves = moves
        self.interactive = interactive
        self.as_json = as_json
        self.playing = playing
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)
        self.game: Any = None
        self.proposing: asyncio.Task[None] | None = None
        self.seq = session.sequencer()
        self.left = False
        # The Raft index our last proposal committed at, until its event is seen: another move is
        # not proposed meanwhile. ``applied``: the highest index of the events seen so far.
        self.awaiting: int | None = None
        self.applied = 0
        self.stopped = False  # run() has returned: no more moves

    def emit(self, obj: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(obj), flush=True)

    def show(self) -> None:
        if self.as_json or self.game is None:
            return
        from rich.panel import Panel

        g = self.game
        who = ", ".join(f"{p}{' (' + g.marks[p] + ')' if p in g.marks else ''}" for p in g.players)
        self.out.print(Panel(g.render(), title=f"{g.kind} - {g.status()}", subtitle=f"players: {who}",
                             expand=False))

    async def _ask(self) -> str | None:
        if self.moves is not None:
            return next(self.moves, None)
        loop = asyncio.get_running_loop()
        prompt = "your move (1-9)" if self.game.kind == "tictactoe" else "take 1-3 stones"
        self.out.print(f"[bold]{prompt}[/bold] (or '/say TEXT' to chat): ", end="")
        line = await loop.run_in_executor(None, sys.stdin.readline)
        return line if line else None

    async def _move(self) -> None:
        from warpmesh.game.errors import IllegalMove

        while True:
            line = await self._ask()
            if line is None:
                self.err.print(f"{self.me}: no more moves; leaving the game")
                self.left = True
                await self.s.leave()
                return
            line = line.strip()
            if not line:
                continue
            if line.startswith("/say "):
                await self.s.app_channel("chat").broadcast(line[5:].encode())
                continue
            try:
                move = self.game.parse(line)
                reason = self.game.check(self.me, move)
                if reason is not None:
                    raise IllegalMove(reason)
            except IllegalMove as err:
                self.err.print(f"illegal move {line!r}: {err}")
                continue
            try:
                done = await self.seq.propose([self.me, move], timeout=30)
            except (TimeoutError, WarpmeshError) as err:
                self.err.print(f"[yellow]move {line!r} not committed ({err}); asking again[/yellow]")
                return  # the done callback asks for a move again while it is still our turn
            if done.index > self.applied:
                self.awaiting = done.index
            return

    def _maybe_move(self) -> None:
        """Ask for our move when it is our turn and no proposal of ours is under way or unseen.

        Called after every event and whenever a proposal ends. A restarted player replays the log
        before it catches up, so it may propose for a turn that is already played: that proposal
        commits later and is refused on every peer, and the player is asked again (it used to wait
        for an event that no one else would send)."""
        g = self.game
        if (self.playing and not self.left and not self.stopped and g is not None and not g.over and g.current() == self.me
                and self.awaiting is None and (self.proposing is None or self.proposing.done())):
            self.proposing = asyncio.ensure_future(self._move())
            self.proposing.add_done_callback(self._proposal_ended)

    def _proposal_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.err.print(f"[red]{self.me}: cannot move: {task.exception()}[/red]")
            return
        self._maybe_move()

    async def pauses(self) -> None:
        """Say on stderr why the game cannot go on (e.g. one of two players is gone), and when it can."""
        last: str | None = None
        while True:
            reason = await self.s.paused.changed()
            if reason != last:
                self.err.print(f"[yellow]paused: {reason}[/yellow]" if reason else "resumed")
                last = reason

    async def chat(self) -> None:
        sub = self.s.app_channel("chat").subscribe()
        async for sender, data in sub:
            if not self.as_json:
                self.out.print(f"[cyan]<{sender}>[/cyan] {data.decode(errors='replace')}")

    async def run(self) -> int:
        from warpmesh.game.errors import IllegalMove
        from warpmesh.game.rules import Game
        from warpmesh.raft.turns import Committed, Reset, SystemRecord

        chat = asyncio.ensure_future(self.chat())
        pauses = asyncio.ensure_future(self.pauses())
        try:
            async for ev in self.seq.events():
                index = ev.turn.index if isinstance(ev, Committed) else ev.index
                self.applied = max(self.applied, index)
                if self.awaiting is not None and self.applied >= self.awaiting:
                    self.awaiting = None  # our proposal's entry is in (applied, or refused)
                g = self.game
                if isinstance(ev, SystemRecord):
                    rec = ev.record
                    if rec[0] == "game" and g is None:
                        kind, needed, heap = rec[2]
                        g = self.game = Game(kind, needed, heap)
                        for p in ev.state.players:
                            g.seat(p)
                    elif g is not None and rec[0] == "seat" and rec[2] == "player":
                        g.seat(rec[1])
                    elif g is not None and rec[0] == "unseat" and rec[1] in g.players:
                        g.unseat(rec[1])
                        self.emit({"event": "seat_lost", "player": rec[1]})
                        if not self.as_json:
                            self.err.print(f"[yellow]{rec[1]} lost its seat ({rec[2]})[/yellow]")
                    self.show()
                elif isinstance(ev, Committed) and g is not None:
                    try:
                        player, move = ev.turn.action
                        g.apply(player, move)
                    except (IllegalMove, ValueError, TypeError, KeyError):
                        pass  # refused on every peer alike: the committed log decides
                    else:
                        self.emit({"index": g.turns, "player": player, "move": move})
                        self.show()
                elif isinstance(ev, Reset):
                    continue
                if g is not None and g.over:
                    self.emit({"final_state_hash": g.state_hash(), "winner": g.winner})
                    if not self.as_json:
                        self.out.print(f"[bold]{g.status()}[/bold]")
                    return 0
                self._maybe_move()
                if self.left:
                    return 0
        finally:
            self.stopped = True
            chat.cancel()
            pauses.cancel()
            if self.proposing is not None:
                self.proposing.cancel()
        return 1


def _moves(path: str | None) -> Iterator[str] | None:
    if path is None:
        return None
    if path == "-":
        return iter(sys.stdin.readline, "")
    try:
        fh: TextIO = open(path)  # noqa: SIM115 - read lazily, line by line, for the whole game
    except OSError as err:
        raise click.BadParameter(f"cannot read {path}: {err.strerror}", param_hint="--moves") from None
    return iter(fh.readline, "")


async def _linger(session: Any, seconds: float = 3.0) -> None:
    """Let the others see the end before this peer's votes disappear (see docs/game.md)."""
    from warpmesh.game import presence as pres

    await session.announce_done()
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        slots = session.presence_slots()
        members = session.raft.membership.value.members - {session.id}
        if all(slots.get(p) in (pres.DONE, pres.VACATE) for p in members):
            break
        await asyncio.sleep(0.1)


async def _session_main(role: str, *, node_id: str, listen: tuple[str, int], join: tuple[str, int] | None,
                        secret: bytes | None, tls: Any, players: int = 2, game: str = "tictactoe",
                        heap: int = 21, witness: bool = False, spectators: int = 0,
                        data_dir: Path | None, moves: Iterator[str] | None, as_json: bool,
                        timeout: float = 30.0) -> int:
    from warpmesh.game import game_host, game_join, game_spectate
    from warpmesh.game.errors import GameError
    from warpmesh.net.tcp import TcpMesh

    err = sys.stderr
    storage = None
    if data_dir is not None:
        from warpmesh.raft.storage import SqliteRaftStorage

        data_dir.mkdir(parents=True, exist_ok=True)
        storage = SqliteRaftStorage(data_dir / f"{node_id}.raft.sqlite")
    mesh = TcpMesh(node_id, listen=listen, join=[join] if join else [], secret=secret, tls=tls,
                   incarnation=int.from_bytes(os.urandom(7), "big"))
    try:
        await mesh.start()
    except OSError as e:
        raise click.ClickException(f"cannot listen on {listen[0]}:{listen[1]}: {e.strerror}; pick another "
                                   f"--listen address") from None
    session = None
    try:
        if role == "host":
            assert mesh.address is not None
            if not as_json:
                err.write(f"hosting {game} for {players} on {mesh.address[0]}:{mesh.address[1]}; "
                          f"others run: warpmesh game join {mesh.address[0]}:{mesh.address[1]}\n")
            session = await game_host(mesh, players, witness=witness, allow_spectators=spectators > 0,
                                      max_spectators=spectators, storage=storage)
            while witness and not session.book.witnesses:
                await asyncio.sleep(0.05)  # --witness: the game starts once its witness is seated
            if session.book.policy is not None:
                with contextlib.suppress(Exception):
                    await session.sequencer().propose_system(["game", "", [game, players, heap]], timeout=10)
        elif role == "join":
            session = await game_join(mesh, witness=witness, timeout=timeout, storage=storage)
        else:
            session = await game_spectate(mesh, timeout=timeout, storage=storage)
        play = _Play(session, node_id, moves=moves, interactive=moves is None, as_json=as_json,
                     # The host's --witness asks for a witness; it still plays.
                     playing=role == "host" or (role == "join" and not witness))
        code = await play.run()
        await _linger(session)
        return code
    except GameError as e:
        raise click.ClickException(str(e)) from None
    finally:
        if session is not None:
            await session.close()
        await mesh.close()


def _run(coro: Any) -> None:
    try:
        code = asyncio.run(coro)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


@click.group()
def game() -> None:
    """Turn-based games over Raft: host one, join it, or watch it."""


_common = [
    click.option("--json", "as_json", is_flag=True, help="Print committed turns as JSON lines."),
    click.option("--moves", type=str, default=None, help="Play non-interactively: one move per line ('-' = stdin)."),
    click.option("--listen", default="127.0.0.1:0", show_default=True, callback=_addr, help="HOST:PORT to listen on."),
    click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Keep the Raft log here, so a restarted peer resumes its seat."),
]


def common(f: Any) -> Any:
    for opt in reversed(_common):
        f = opt(f)
    return mesh_options(f)


@game.command("host")
@click.option("--players", type=click.IntRange(1, 4), default=2, show_default=True)
@click.option("--game", "game_kind", type=click.Choice(["tictactoe", "nim"]), default="tictactoe", show_default=True)
@click.option("--heap", type=click.IntRange(1, 10_000), default=21, show_default=True, help="Nim: stones.")
@click.option("--id", "node_id", default="host", show_default=True, help="This peer's id.")
@click.option("--witness", is_flag=True, help="Wait for a non-playing third voter ('game join --witness').")
@click.option("--spectators", type=click.IntRange(0, 64), default=8, show_default=True,
              help="How many watchers to admit (0 = none).")
@common
def host(players: int, game_kind: str, heap: int, node_id: str, witness: bool, spectators: int, as_json: bool,
         moves: str | None, listen: tuple[str, int], data_dir: Path | None, log_level: str,
         secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
    """Host a game and play it (you are the first player)."""
    if game_kind == "tictactoe" and players != 2:
        raise click.UsageError("tic-tac-toe is for exactly 2 players (--players 2)")
    if game_kind == "nim" and players < 2:
        raise click.UsageError("Nim is for 2 to 4 players")
    setup_logging(log_level)
    secret, tls = load_mesh_security(secret_file, tls_cert, tls_key, tls_ca)
    _run(_session_main("host", node_id=node_id, listen=listen, join=None, secret=secret, tls=tls,
                       players=players, game=game_kind, heap=heap, witness=witness, spectators=spectators,
                       data_dir=data_dir, moves=_moves(moves), as_json=as_json))


def _default_id(prefix: str) -> str:
    return f"{prefix}-{os.urandom(3).hex()}"


@game.command("join")
@click.argument("address", callback=_addr)
@click.option("--id", "node_id", default=None, help="This peer's id (default: generated).")
@click.option("--witness", is_flag=True, help="Vote without playing (lets a 2-player game survive a loss).")
@click.option("--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True)
@common
def join(address: tuple[str, int], node_id: str | None, witness: bool, timeout: float, as_json: bool,
         moves: str | None, listen: tuple[str, int], data_dir: Path | None, log_level: str,
         secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
    """Join the game hosted at ADDRESS (HOST:PORT) and play it."""
    setup_logging(log_level)
    secret, tls = load_mesh_security(secret_file, tls_cert, tls_key, tls_ca)
    _run(_session_main("join", node_id=node_id or _default_id("player"), listen=listen, join=address,
                       secret=secret, tls=tls, witness=witness, data_dir=data_dir, moves=_moves(moves),
                       as_json=as_json, timeout=timeout))


@game.command("watch")
@click.argument("address", callback=_addr)
@click.option("--id", "node_id", default=None, help="This peer's id (default: generated).")
@click.option("--witness", is_flag=True, help="Also vote (as the non-playing witness of a 2-player game).")
@click.option("--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True)
@common
def watch(address: tuple[str, int], node_id: str | None, witness: bool, timeout: float, as_json: bool,
          moves: str | None, listen: tuple[str, int], data_dir: Path | None, log_level: str,
          secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
    """Watch the game hosted at ADDRESS (HOST:PORT)."""
    setup_logging(log_level)
    secret, tls = load_mesh_security(secret_file, tls_cert, tls_key, tls_ca)
    role = "join" if witness else "watch"
    _run(_session_main(role, node_id=node_id or _default_id("watcher"), listen=listen, join=address,
                       secret=secret, tls=tls, witness=witness, data_dir=data_dir, moves=None,
                       as_json=as_json, timeout=timeout))
