"""``warpmesh sim world``: replicated worlds on a virtual clock (attached to the ``sim`` group)."""

from __future__ import annotations

import sys

import click

from warpmesh.cli.sim import _seed_range, run_sweep, seed_options
from warpmesh.sim.harness import SimReport


@click.command("world")
@seed_options
@click.option("--peers", type=click.IntRange(3, 7), default=3, show_default=True)
@click.option("--ticks", type=click.IntRange(min=10), default=30, show_default=True)
@click.option("--no-crashes", is_flag=True, help="Never crash peers.")
@click.option("--no-diverge", is_flag=True, help="Inject no divergence.")
@click.option("--no-loss", is_flag=True, help="A perfect network (no drops, duplicates, reordering).")
@click.option("--entities", type=click.IntRange(1, 100_000), default=6, show_default=True,
              help="Entities in the world (thousands make snapshots span several fetch chunks).")
def sim_world(seed: int | None, seeds: int, start: int, as_json: bool, fail_fast: bool, peers: int, ticks: int,
              no_crashes: bool, no_diverge: bool, no_loss: bool, entities: int) -> None:
    """Replicated worlds: peers with different worker counts over a lossy network, crashes and restarts,
    one injected divergence. Checks equal commit hashes at every tick, detection at the injected tick,
    repair, and agreement at the end."""
    from warpmesh.sim.world import run_world

    def run(s: int) -> SimReport:
        return run_world(s, peers=peers, ticks=ticks, crashes=not no_crashes, diverge=not no_diverge,
                         lossy=not no_loss, entities=entities)

    sys.exit(run_sweep("world", run, _seed_range(seed, seeds, start), as_json=as_json, fail_fast=fail_fast))
