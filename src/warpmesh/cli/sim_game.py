"""``warpmesh sim game``: seeded game sessions (attached to the ``sim`` group); see :mod:`warpmesh.sim.game`."""

from __future__ import annotations

import sys

import click

from warpmesh.cli.sim import _seed_range, run_sweep, seed_options
from warpmesh.sim.harness import SimReport


@click.command("game")
@seed_options
@click.option("--players", type=click.IntRange(2, 4), default=3, show_default=True)
@click.option("--victim", type=click.Choice(["random", "host", "none"]), default="random", show_default=True,
              help="Which peer crashes mid-game.")
@click.option("--max-drop", type=click.FloatRange(0.0, 0.5), default=0.2, show_default=True,
              help="Upper bound of the per-run random drop probability.")
def sim_game(seed: int | None, seeds: int, start: int, as_json: bool, fail_fast: bool, players: int,
             victim: str, max_drop: float) -> None:
    """Game sessions under loss with a crashed player: no desync, the game finishes, spectators follow."""
    from warpmesh.sim.game import run_game

    def run(s: int) -> SimReport:
        return run_game(s, players=players, victim=victim, max_drop=max_drop)

    sys.exit(run_sweep("game", run, _seed_range(seed, seeds, start), as_json=as_json, fail_fast=fail_fast))
