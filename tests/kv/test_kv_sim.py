"""The KV store through the real runtime under simulation: concurrent clients, crashes, restarts and
partitions; every history linearizable (hence no acknowledged write lost), replicas identical."""

from __future__ import annotations

import pytest

from warpmesh.sim.kv import run_kv

CHUNKS = 10
PER_CHUNK = 10


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_kv_runtime_simulation_sweep(chunk: int) -> None:
    bad = []
    for seed in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK):
        r = run_kv(seed)
        if not r.ok:
            bad.append(f"seed {seed}: {r.failures}\nreplay: {r.replay}")
    assert not bad, "\n\n".join(bad)


def test_a_run_with_five_nodes_and_more_keys() -> None:
    r = run_kv(1234, nodes=5, clients=6, ops=30, keys=5)
    assert r.ok, (r.failures, r.replay)
    assert r.replay.startswith("warpmesh sim raft --seed 1234") and "--runtime" in r.replay


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("chunk", range(20))
def test_kv_runtime_simulation_soak(chunk: int) -> None:
    bad = []
    for seed in range(10_000 + chunk * 100, 10_000 + (chunk + 1) * 100):
        r = run_kv(seed)
        if not r.ok:
            bad.append(f"seed {seed}: {r.failures}\nreplay: {r.replay}")
    assert not bad, "\n\n".join(bad)
