"""``warpmesh sim raft``: the seeded Raft simulation (attached to the ``sim`` group).

Default: the pure-core discrete-event harness (:mod:`warpmesh.sim.raft`), fast enough for thousands
of seeds. ``--runtime``: the production asyncio runtime with the KV store and its clients on a
virtual clock over the faulty in-memory fabric, every history checked for linearizability
(:mod:`warpmesh.sim.kv`).
"""

from __future__ import annotations

import sys

import click

from warpmesh.cli.sim import _seed_range, run_sweep, seed_options
from warpmesh.sim.harness import SimReport


@click.command("raft")
@seed_options
@click.option("--runtime", is_flag=True,
              help="Simulate the asyncio runtime + KV store (linearizability-checked) instead of the core.")
@click.option("--nodes", type=click.IntRange(1, 9), default=None,
              help="Initial voters (default: drawn from the seed; 3 with --runtime).")
@click.option("--spares", type=click.IntRange(0, 4), default=None, help="Extra nodes for membership changes.")
@click.option("--duration", type=click.FloatRange(0.1, 3600), default=1.5, show_default=True,
              help="Simulated seconds of faults and traffic.")
@click.option("--calm", type=click.FloatRange(0.5, 3600), default=6.0, show_default=True,
              help="Simulated seconds allowed to converge after healing.")
@click.option("--drop", type=click.FloatRange(0, 0.9), default=None, help="Message drop probability.")
@click.option("--duplicate", type=click.FloatRange(0, 0.9), default=None, help="Duplication probability.")
@click.option("--reorder", type=click.FloatRange(0, 0.9), default=None, help="Reordering probability.")
@click.option("--no-crashes", is_flag=True, help="Never crash nodes.")
@click.option("--no-partitions", is_flag=True, help="Never partition the network.")
@click.option("--no-membership", is_flag=True, help="No membership changes.")
@click.option("--no-transfers", is_flag=True, help="No leadership transfers.")
@click.option("--no-snapshots", is_flag=True, help="Never publish snapshots.")
@click.option("--lease/--no-lease", default=None, help="Lease reads on/off (default: from the seed).")
@click.option("--codec/--no-codec", default=None,
              help="Round-trip every message through the wire codec (default: from the seed).")
@click.option("--clients", type=click.IntRange(1, 64), default=5, show_default=True,
              help="--runtime: concurrent KV clients.")
@click.option("--ops", type=click.IntRange(1), default=40, show_default=True,
              help="--runtime: operations per client.")
@click.option("--keys", type=click.IntRange(1), default=3, show_default=True, help="--runtime: keys.")
@click.option("--scenario", type=click.Choice(["grow", "shrink", "replace", "transfer"]), default=None,
              help="--runtime: a cluster operation under faults (3->5, 5->3, replace a dead voter, "
                   "move the leader and stop the old one).")
def sim_raft(seed: int | None, seeds: int, start: int, as_json: bool, fail_fast: bool, runtime: bool,
             nodes: int | None, spares: int | None, duration: float, calm: float, drop: float | None,
             duplicate: float | None, reorder: float | None, no_crashes: bool, no_partitions: bool,
             no_membership: bool, no_transfers: bool, no_snapshots: bool, lease: bool | None,
             codec: bool | None, clients: int, ops: int, keys: int, scenario: str | None) -> None:
    """Raft under faults: drops, duplicates, reordering, delays, partitions, crashes and restarts,
    membership changes, transfers and snapshots. Checks election safety, log matching, leader
    completeness, state-machine safety, exactly-once apply, durability, read linearizability and
    liveness; prints the replay command of every failing seed.
    """
    if scenario is not None and not runtime:
        raise click.UsageError("--scenario needs --runtime")
    if scenario is not None:
        from warpmesh.sim.kv_ops import run_kv_ops

        def run(s: int) -> SimReport:
            return run_kv_ops(s, scenario, clients=clients, ops=ops, keys=keys, faults=not no_crashes)
    elif runtime:
        from warpmesh.sim.kv import run_kv

        def run(s: int) -> SimReport:
            return run_kv(s, nodes=nodes or 3, clients=clients, ops=ops, keys=keys,
                          crashes=not no_crashes, partitions=not no_partitions)
    else:
        from warpmesh.sim.raft import RaftSimOptions, run_seed

        def run(s: int) -> SimReport:
            opts = RaftSimOptions(seed=s, nodes=nodes, spares=spares, duration=duration, calm=calm,
                                  drop=drop, duplicate=duplicate, reorder=reorder, crashes=not no_crashes,
                                  partitions=not no_partitions, membership=not no_membership,
                                  transfers=not no_transfers, snapshots=not no_snapshots, lease=lease,
                                  codec=codec)
            return run_seed(opts).to_sim_report()

    sys.exit(run_sweep("raft", run, _seed_range(seed, seeds, start), as_json=as_json, fail_fast=fail_fast))
