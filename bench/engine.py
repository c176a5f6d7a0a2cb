"""Engine benchmarks: rewrite throughput and state-root cost, beside Echo's reported figures.

Prints JSON lines (medians over repeated runs):

* ``engine.rewrites_per_s`` — ticks of 5,000 independent rewrites (each updates its own entity's
  motion atom), timed from the first ``apply`` to the end of ``commit`` (wall clock; CPU time beside
  it); Echo's headline is ~5,000 rewrites per 60 fps frame, i.e. 300,000/s, in Rust. Beside it, the
  same tick's arithmetic done by a plain Python loop with no engine (``plain_python_rewrites_per_s``,
  measured in the same run). Variants: the tick through ``Engine.run_tick`` (one bulk section, so the
  cyclic GC also pauses while the candidates are matched), the footprint guard off, 4 logical
  workers, and the comparison-sort drain instead of Echo's radix switch.
* ``engine.state_root`` — state root of a chain of 1,000 and 30,000 entities, cold (hash caches dropped,
  i.e. encoding everything like Echo does) and warm (after a tick that changed 1% of the entities), beside
  BLAKE3 alone over the same canonical bytes measured in the same run; Echo reports 0.85 ms and 42.8 ms.

Every figure is a median of wall-clock time; CPU-time medians (``cpu_*``) are printed beside them because
on a machine shared with other jobs the wall clock also measures the other jobs.
* ``engine.process_pool`` — a tick of CPU-heavy executors serially vs on a 2-process pool (what
  parallelism buys once executors do real work).

Run: ``.venv/bin/python bench/engine.py [--quick] [--only rewrites|state_root|pool]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from blake3 import blake3

from warpmesh.aio.tuning import install_gc_pause
from warpmesh.engine import (
    AtomPayload,
    EdgeRecord,
    Engine,
    Footprint,
    GraphStore,
    GraphView,
    NodeId,
    NodeRecord,
    TickDelta,
    WarpState,
    compute_state_root,
    make_edge_id,
    make_node_id,
    make_type_id,
)
from warpmesh.engine.parallel import PoolExecutor
from warpmesh.engine.state import state_root_bytes

ECHO_REWRITES_PER_S = 300_000  # docs/notes/scheduler-radix-optimization: ~5,000 rewrites per 60 fps frame
ECHO_STATE_ROOT_MS = {1_000: 0.85, 10_000: 11.9, 30_000: 42.8}  # docs/benchmarks/report-inline.html

MOTION = make_type_id("payload/motion")
ENTITY = make_type_id("entity")
LINK = make_type_id("edge:next")
_motion = struct.Struct("<6q")


def motion_matches(view: GraphView, scope: NodeId) -> bool:
    att = view.node_attachment(scope)
    return att is not None and att[0] == MOTION


def motion_footprint(view: GraphView, scope: NodeId) -> Footprint:
    return Footprint(view.warp_id).read_node(scope).write_alpha(scope)


def motion_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    x, y, z, vx, vy, vz = _motion.unpack(view.node_attachment(scope)[1])  # type: ignore[index]
    delta.set_node_attachment(scope, AtomPayload(MOTION, _motion.pack(x + vx, y + vy, z + vz, vx, vy, vz)))


def heavy_execute(view: GraphView, scope: NodeId, delta: TickDelta) -> None:
    """A CPU-bound executor (~a few ms of pure Python): what a process pool is for."""
    x, y, z, vx, vy, vz = _motion.unpack(view.node_attachment(scope)[1])  # type: ignore[index]
    acc = x
    for i in range(20_000):
        acc = (acc * 1103515245 + 12345 + i) & 0xFFFF_FFFF
    delta.set_node_attachment(scope, AtomPayload(MOTION, _motion.pack(acc, y, z, vx, vy, vz)))


def chain_store(n: int) -> tuple[GraphStore, NodeId]:
    """Echo's snapshot_hash shape: a chain of ``n`` entities with motion atoms."""
    store = GraphStore(b"")  # type: ignore[arg-type]
    ids = [make_node_id(f"entity-{i}") for i in range(n)]
    for i, node in enumerate(ids):
        store.insert_node(node, NodeRecord(ENTITY))
        store.set_node_attachment(node, AtomPayload(MOTION, _motion.pack(i, 0, 0, 1, 1, 0)))
        if i:
            store.upsert_edge(EdgeRecord(make_edge_id(f"next-{i}"), ids[i - 1], node, LINK))
    return store, ids[0]


def engine_for(n: int, **options: object) -> tuple[Engine, list[NodeId]]:
    store, root = chain_store(n)
    engine = Engine(store, root, **options)  # type: ignore[arg-type]
    engine.register_rule("motion/update", motion_matches, motion_execute, motion_footprint)
    return engine, [make_node_id(f"entity-{i}") for i in range(n)]


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 3)


def plain_python_tick_s(per_tick: int, runs: int) -> float:
    """Median seconds of the same tick's work done by hand, without an engine: read each entity's motion
    atom, integrate it, write it back (what the executors compute, with no matching, footprints,
    scheduling, patch or hashes)."""
    atoms = {make_node_id(f"entity-{i}"): AtomPayload(MOTION, _motion.pack(i, 0, 0, 1, 1, 0)) for i in range(per_tick)}
    samples = []
    for _ in range(runs + 1):
        t0 = time.perf_counter()
        for node, att in atoms.items():
            x, y, z, vx, vy, vz = _motion.unpack(att[1])
            atoms[node] = AtomPayload(MOTION, _motion.pack(x + vx, y + vy, z + vz, vx, vy, vz))
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples[1:])


def bench_rewrites(runs: int, per_tick: int, label: str, run_tick: bool = False, **options: object) -> dict:
    """Ticks of ``per_tick`` motion rewrites: ``begin``/``apply``/``commit`` as a caller writes them, or
    (``run_tick``) :meth:`Engine.run_tick`, which makes the whole tick one bulk section."""
    engine, ids = engine_for(per_tick, **options)
    work = [("motion/update", node) for node in ids]
    ticks, applies, commits, cpu = [], [], [], []
    for _ in range(runs + 1):  # the first tick warms the hash caches
        c0 = time.process_time()
        t0 = time.perf_counter()
        if run_tick:
            engine.run_tick(work)
            t1 = t0
        else:
            tx = engine.begin()
            for node in ids:
                engine.apply(tx, "motion/update", node)
            t1 = time.perf_counter()
            engine.commit(tx)
        t2 = time.perf_counter()
        cpu.append(time.process_time() - c0)
        ticks.append(t2 - t0)
        applies.append(t1 - t0)
        commits.append(t2 - t1)
    ticks, applies, commits, cpu = ticks[1:], applies[1:], commits[1:], cpu[1:]
    tick = statistics.median(ticks)
    ours = per_tick / tick
    plain = per_tick / plain_python_tick_s(per_tick, runs)
    line = {
        "bench": "engine.rewrites_per_s",
        "variant": label,
        "tick_rewrites": per_tick,
        "ours": round(ours),
        "peer": "Echo warp-core (Rust), reported",
        "peer_value": ECHO_REWRITES_PER_S,
        "ratio": round(ours / ECHO_REWRITES_PER_S, 4),
        "plain_python_rewrites_per_s": round(plain),
        "ratio_to_plain_python": round(ours / plain, 4),
        "cpu_rewrites_per_s": round(per_tick / statistics.median(cpu)),
        "median_tick_ms": median_ms(ticks),
        "median_apply_ms": None if run_tick else median_ms(applies),
        "median_commit_ms": None if run_tick else median_ms(commits),
        "median_tick_cpu_ms": median_ms(cpu),
        "us_per_rewrite": round(tick / per_tick * 1e6, 2),
        "runs": runs,
    }
    return line


def _timed(fn: Callable[..., object], *args: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_state_root(n: int, runs: int) -> dict:
    store, root = chain_store(n)
    state = WarpState.from_root_store(store, root)
    w = store.warp_id
    cold, warm, floor = [], [], []
    ids = [make_node_id(f"entity-{i}") for i in range(n)]
    for r in range(runs):
        store.drop_hash_caches()
        state._plan = None
        cold.append(_timed(compute_state_root, state, w, root))
        for step in (0, 1):  # two ticks touching 1% of the entities each; the second is steady state
            for node in ids[(2 * r + step) % 100::100]:
                store.set_node_attachment(node, AtomPayload(MOTION, _motion.pack(r, step, 0, 1, 1, 0)))
            sample = _timed(compute_state_root, state, w, root)
        warm.append(sample)
        data = state_root_bytes(state, w, root)
        floor.append(_timed(lambda d: blake3(d).digest(), data))

    def med(samples: list[tuple[float, float]], k: int) -> float:
        return statistics.median(s[k] for s in samples)

    return {
        "bench": "engine.state_root",
        "nodes": n,
        "canonical_bytes": len(data),
        "ours_cold_ms": round(med(cold, 0) * 1e3, 3),
        "ours_warm_1pct_changed_ms": round(med(warm, 0) * 1e3, 3),
        "blake3_same_bytes_ms": round(med(floor, 0) * 1e3, 3),
        "cpu_cold_ms": round(med(cold, 1) * 1e3, 3),
        "cpu_warm_1pct_changed_ms": round(med(warm, 1) * 1e3, 3),
        "cpu_blake3_same_bytes_ms": round(med(floor, 1) * 1e3, 3),
        "ratio_cold_to_blake3": round(med(cold, 0) / med(floor, 0), 1),
        "ratio_warm_to_blake3": round(med(warm, 0) / med(floor, 0), 2),
        "cpu_ratio_cold_to_blake3": round(med(cold, 1) / med(floor, 1), 1),
        "cpu_ratio_warm_to_blake3": round(med(warm, 1) / med(floor, 1), 2),
        "peer": "Echo snapshot_hash (Rust, from scratch), reported",
        "peer_ms": ECHO_STATE_ROOT_MS.get(n),
        "ratio_cold_to_echo": round(med(cold, 0) * 1e3 / ECHO_STATE_ROOT_MS[n], 2) if n in ECHO_STATE_ROOT_MS else None,
        "ratio_warm_to_echo": round(med(warm, 0) * 1e3 / ECHO_STATE_ROOT_MS[n], 3) if n in ECHO_STATE_ROOT_MS else None,
        "runs": runs,
    }


def bench_pool(runs: int, per_tick: int, procs: int) -> dict:
    def tick_times(**options: object) -> list[float]:
        engine, ids = engine_for(per_tick, **options)
        engine._rules[0] = type(engine._rules[0])("motion/update", motion_matches, heavy_execute, motion_footprint)
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            tx = engine.begin()
            for node in ids:
                engine.apply(tx, "motion/update", node)
            engine.commit(tx)
            out.append(time.perf_counter() - t0)
        return out

    serial = tick_times()
    with ProcessPoolExecutor(procs) as pool:
        pool.submit(int).result()  # start the workers outside the timing
        pooled = tick_times(workers=procs, executor=PoolExecutor(pool))
    s, p = statistics.median(serial), statistics.median(pooled)
    return {
        "bench": "engine.process_pool",
        "tick_rewrites": per_tick,
        "executor": "20k-step integer loop per rewrite",
        "serial_tick_ms": median_ms(serial),
        "pool_tick_ms": median_ms(pooled),
        "processes": procs,
        "speedup": round(s / p, 2),
        "runs": runs,
    }


def main() -> None:
    install_gc_pause()  # as the engine CLI and the runtimes do: a tick is a bulk section
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer runs (smoke test)")
    ap.add_argument("--only", choices=["rewrites", "state_root", "pool"], help="run one group of lines")
    args = ap.parse_args()
    runs = 3 if args.quick else 7
    groups: dict[str, list[Callable[[], dict]]] = {
        "rewrites": [
            lambda: bench_rewrites(runs, 5_000, "default (guard on, 1 worker)"),
            lambda: bench_rewrites(runs, 5_000, "run_tick (whole tick one bulk section)", run_tick=True),
            lambda: bench_rewrites(runs, 5_000, "guard off", footprint_guard=False),
            lambda: bench_rewrites(runs, 5_000, "4 logical workers", workers=4),
            lambda: bench_rewrites(runs, 5_000, "comparison drain (radix_threshold=None)", radix_threshold=None),
        ],
        "state_root": [lambda: bench_state_root(1_000, runs * 3), lambda: bench_state_root(30_000, runs)],
        "pool": [lambda: bench_pool(max(3, runs // 2), 200, 2)],
    }
    for name, lines in groups.items():
        if args.only in (None, name):
            for make in lines:
                print(json.dumps(make()), flush=True)


if __name__ == "__main__":
    main()
