"""Real parallelism through an explicit executor: a process pool commits exactly what a serial run does."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from tests.engine.conftest import GOLDEN
from tests.engine.workload import make_engine, run
from warpmesh.engine import FootprintViolation
from warpmesh.engine.execution import run_batch
from warpmesh.engine.guard import footprint_slice
from warpmesh.engine.parallel import PoolExecutor
from warpmesh.examples.dind.harness import load_expected, replay_log

TICKS = [
    [("test/spawn", i) for i in range(40)] + [("test/hub", i) for i in range(5)],
    [("test/counter", i) for i in range(40)],
    [("test/prune", i) for i in range(0, 40, 3)] + [("test/counter", i) for i in range(1, 40, 3)],
]


def test_thread_pool_executor_matches_serial() -> None:
    baseline = run(make_engine(40), TICKS)
    with ThreadPoolExecutor(3) as pool:
        assert run(make_engine(40, workers=3, executor=PoolExecutor(pool)), TICKS) == baseline


@pytest.mark.process
def test_process_pool_matches_serial() -> None:
    baseline = run(make_engine(40), TICKS)
    with ProcessPoolExecutor(2) as pool:
        engine = make_engine(40, workers=4, executor=PoolExecutor(pool))
        assert run(engine, TICKS) == baseline
        engine.replay()


@pytest.mark.process
def test_dind_log_replays_on_a_process_pool() -> None:
    log = GOLDEN / "head/010_dense_rewrite_seed0001.eintlog"
    expected = load_expected(log.with_name(log.stem + ".hashes.json")).hashes
    with ProcessPoolExecutor(2) as pool:
        assert replay_log(log, "echo", workers=2, executor=PoolExecutor(pool)).hashes == expected


def test_slices_pickle_and_hold_only_the_footprint() -> None:
    engine = make_engine(5)
    from tests.engine.workload import counter_exec, counter_fp, entity

    store = engine.state.stores[engine.root_key.warp_id]
    fp = counter_fp(engine.view(), entity(2))
    piece = footprint_slice(store, fp)
    assert set(piece.nodes) == {entity(2)}
    clone = pickle.loads(pickle.dumps(piece))
    ops, origins = run_batch([(7, counter_exec, clone, entity(2), fp, False)])
    assert origins == [(7, 0)] and len(ops) == 1
    # An executor reading beyond its footprint fails the same way on a slice as under the guard.
    from tests.engine.workload import ROOT

    def nosy(view, scope, delta):  # type: ignore[no-untyped-def]
        view.node(ROOT)

    with pytest.raises(FootprintViolation):
        run_batch([(0, nosy, clone, entity(2), fp, False)])
