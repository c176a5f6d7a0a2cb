"""The seeded simulation sweep: 1,000 seeds in the default suite, a longer soak with ``-m slow``.

Each seed builds a cluster (1-5 voters plus spare nodes) with its own fault mix - drops,
duplicates, reordering, delays, partitions, crashes and restarts - membership changes, leadership
transfers, snapshots and client traffic, and checks election safety, log matching, leader
completeness, state-machine safety (no committed entry ever truncated), exactly-once apply,
durability of acknowledged writes, read linearizability and liveness after healing. A failure
prints the seed and the one command that replays it.
"""

from __future__ import annotations

import os

import pytest

from warpmesh.sim.raft import RaftSimOptions, run_seed

SEEDS = 1000
CHUNK = 50


def _sweep(seeds: range) -> None:
    bad = []
    for seed in seeds:
        res = run_seed(RaftSimOptions(seed=seed))
        if not res.ok:
            bad.append(res.report())
    assert not bad, "\n\n".join(bad)


@pytest.mark.parametrize("chunk", range(SEEDS // CHUNK))
def test_seeded_simulation_sweep(chunk: int) -> None:
    _sweep(range(chunk * CHUNK, (chunk + 1) * CHUNK))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("chunk", range(40))
def test_seeded_simulation_soak(chunk: int) -> None:
    """20,000 more seeds (``./run soak``); ``warpmesh sim raft --seeds 100000`` goes further."""
    base = int(os.environ.get("WARPMESH_SOAK_BASE", "100000"))
    _sweep(range(base + chunk * 500, base + (chunk + 1) * 500))


def test_replay_command_names_the_seed_and_non_default_options() -> None:
    opts = RaftSimOptions(seed=42, nodes=5, crashes=False, drop=0.1)
    cmd = opts.replay_command()
    assert cmd.startswith("warpmesh sim raft --seed 42")
    assert "--nodes 5" in cmd and "--no-crashes" in cmd and "--drop 0.1" in cmd


def test_a_run_is_reproducible_from_its_seed() -> None:
    a, b = run_seed(RaftSimOptions(seed=123)), run_seed(RaftSimOptions(seed=123))
    assert a.ok and a.stats == b.stats
