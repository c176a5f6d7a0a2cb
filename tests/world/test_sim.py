"""Replicated worlds under the simulator: many seeds of loss, reordering, crashes and an injected
divergence; every failure names its one-command replay (``warpmesh sim world --seed N``)."""

from __future__ import annotations

import pytest

from warpmesh.sim.world import run_world


def _check(seed: int, **kw: object) -> None:
    r = run_world(seed, **kw)  # type: ignore[arg-type]
    assert r.ok, f"{r.failures} -- replay: {r.replay}"
    assert r.metrics["repaired_at"] is not None or kw.get("diverge") is False


@pytest.mark.parametrize("seed", range(30))
def test_world_sweep(seed: int) -> None:
    _check(seed)


def test_world_without_faults_detects_at_the_injected_tick() -> None:
    r = run_world(3, crashes=False, lossy=False)
    assert r.ok, r.failures
    bad, tick = r.metrics["injected"]
    assert bad is not None and r.metrics["repaired_at"] == tick + 1


def test_same_seed_same_trace() -> None:
    assert run_world(5).trace == run_world(5).trace


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 200))
def test_world_sweep_long(seed: int) -> None:
    _check(seed, ticks=80)


def test_a_large_world_is_repaired_from_a_snapshot_fetched_in_several_chunks() -> None:
    from warpmesh.world.runtime import CHUNK_BYTES

    r = run_world(2, ticks=10, entities=1200, crashes=False)
    assert r.ok, f"{r.failures} -- replay: {r.replay}"
    assert r.metrics["fetched_bytes"] > CHUNK_BYTES
