"""Issue 17 in the simulator: grow 3->5, shrink 5->3, replace a dead voter, move the leader and stop
the old one, on the production runtime over a faulty network (drops, duplicates, reordering) with a
node crashed during the change; every history linearizable, the final configuration as asked.

Replay a failing seed: ``warpmesh sim raft --runtime --scenario SCENARIO --seed N``.
"""

from __future__ import annotations

import pytest

from warpmesh.sim.kv_ops import SCENARIOS, run_kv_ops


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_a_few_seeds(scenario):
    for seed in range(3):
        r = run_kv_ops(seed, scenario, clients=3, ops=25)
        assert r.ok, f"{r.replay()}\n" + "\n".join(r.failures)[:3000]
        assert r.metrics["ops"] > 60


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_soak_500_seeds_each(scenario):
    """2,000 seeds in all (500 per scenario)."""
    bad = []
    for seed in range(500):
        r = run_kv_ops(seed, scenario)
        if not r.ok:
            bad.append(r.replay() + ": " + r.failures[0][:300])
    assert not bad, "\n".join(bad[:10])


@pytest.mark.parametrize(("scenario", "seed", "why"), [
    ("grow", 21, "a client must route to a leader that joined after it connected"),
    ("shrink", 3, "a removal retried on a new leader must still find the removed id (retire it first)"),
])
def test_regression_seeds(scenario, seed, why):
    r = run_kv_ops(seed, scenario, clients=3, ops=25)
    assert r.ok, f"{why}: {r.replay()}\n" + "\n".join(r.failures)[:3000]
