"""``warpmesh sim planning``: drafts executed unplanned and planned over a simulated faulty mesh."""

from __future__ import annotations

import sys

import click

from warpmesh.cli.sim import _seed_range, run_sweep, seed_options
from warpmesh.sim.harness import SimReport


@click.command("planning")
@seed_options
@click.option("--peers", type=click.IntRange(min=3, max=9), default=3, show_default=True)
@click.option("--query", type=click.Choice(["random", "three-branch", "thousand-docs"]), default="random",
              show_default=True, help="A random multi-branch draft per seed, or one of the seed's queries.")
@click.option("--crash", is_flag=True, help="Crash a peer other than the coordinator during the first run.")
@click.option("--chunk", type=click.IntRange(min=1), default=16, show_default=True,
              help="Elements per Warp job of a free stage.")
def sim_planning(seed: int | None, seeds: int, start: int, as_json: bool, fail_fast: bool, peers: int,
                 query: str, crash: bool, chunk: int) -> None:
    """Drafts over the mesh: each seed runs a draft unplanned, plans it from the gossiped statistics
    and runs the plan, under message loss, duplication and reordering.

    Checks that both results equal the single-process reference, that the committed Raft log holds
    one embroider proposal per coordinated node on every peer, and that statistics converge.
    """
    from warpmesh.sim.planning import run_planning

    def run(s: int) -> SimReport:
        return run_planning(s, peers=peers, query=query, crash=crash, chunk=chunk)

    sys.exit(run_sweep("planning", run, _seed_range(seed, seeds, start), as_json=as_json, fail_fast=fail_fast))
