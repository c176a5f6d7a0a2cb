"""warpmesh's leaderless scheduler beside Dask and ``multiprocessing.Pool``, measured in one run.

Prints JSON lines, each ``{"bench", "ours", "peer", "peer_name", "ratio", "unit", "runs", ...}`` with
medians over ``--runs`` runs (the systems are interleaved run by run, so load drift on a shared
machine hits all of them alike; every line carries the 1-minute load average before and after).

(a) ``trivial_jobs``: ``--jobs`` (10,000) trivial jobs (``demo.collatz(i)``, ~10 µs of Python).
    warpmesh: ``--peers`` (4) ``warpmesh node`` processes on loopback (TCP mesh, the machinery of
    ``warpmesh demo``); the jobs are enqueued through peer 1 and the clock runs from the enqueue
    command until peer 1's results board holds every answer. Peers: Dask
    ``LocalCluster(n_workers=2, threads_per_worker=1)`` + ``Client.map`` + ``gather``, and
    ``multiprocessing.Pool(2).imap_unordered(chunksize=1)``, timed from submission to the last
    answer. Process start-up and mesh/cluster formation are outside the clock for all three.
    Unit: jobs/s; ratio = ours / peer. Target: >= 10x Dask.
    Durable column (``trivial_jobs_durable``): the same run again with ``--data DIR`` on every peer
    (boards in SQLite, acks only once on disk), interleaved with the in-memory run; ratio = durable /
    in memory (target >= 0.7), and ``vs_dask`` = durable / Dask (target >= 10).
(b) ``cpu_jobs``: ``--burn-jobs`` (200) jobs of ``--burn-ms`` (20) ms of CPU each (``demo.burn``).
    Wall time from enqueue to the last answer beside ``Pool(2)``; efficiency = Pool's wall / ours.
    Two warpmesh configurations: 2 peers running the op inline (one process per core), and 4 peers
    running it in each peer's process pool (``demo.burn_process``; each pool has one worker per core,
    so the machine is oversubscribed). Worker pools are warmed up before the clock starts.
    Dask (``LocalCluster(n_workers=2, threads_per_worker=1)``, ``Client.map`` + ``gather``) runs the
    same jobs in each run: ``dask_s`` and ``dask_efficiency`` (Pool's wall / Dask's), and
    ``vs_dask`` (Dask's wall / ours). Target (issue 18): efficiency >= 0.97 in both configurations,
    and at least Dask's in the 2-peer one.
(c) ``bytes_per_job``: 4 WarpNodes in this process on ``MemoryFabric`` under virtual time
    (deterministic), queue sizes ``--queue-sizes`` (100, 10,000) enqueued at once through peer 1:
    fabric payload bytes on every link from the enqueue until every peer has every answer, every
    queue is empty and the mesh has settled, minus the idle mesh's own background (heartbeats and
    anti-entropy digests, measured before), per job. Must be flat. The (a) line also reports the TCP
    figure (``TcpMesh.stats`` bytes out of every peer over the timed window, background included).

``--profile DIR`` runs the warpmesh peers of (a) under cProfile (``bench/profile_node.py``) and prints
the top functions of peer 1 and of one other peer to stderr.

    python bench/warp_vs_peers.py [--runs 3] [--jobs 10000] [--peers 4] [--only a,b,c] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import platform
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from warpmesh.cli.procs import NodeProcess
from warpmesh.warp.demo_ops import burn, collatz_steps

OPS_MODULE = "warpmesh.warp.demo_ops"
HERE = Path(__file__).resolve().parent
#: kuilt WarpEgressFlatnessTest (reference report §5.2): bytes broadcast per task lifecycle at queue 1,600.
REF_BYTES_PER_TASK = 2122

try:  # optional peer: pip install -e '.[bench]'
    import distributed
except ImportError:  # pragma: no cover - depends on the environment
    distributed = None


def load() -> float:
    return round(os.getloadavg()[0], 2)


def med(xs: list[float], nd: int = 3) -> float:
    return round(statistics.median(xs), nd)


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def progress(msg: str) -> None:
    print(f"[warp_vs_peers {time.strftime('%H:%M:%S')} load {load()}] {msg}", file=sys.stderr, flush=True)


# --- warpmesh over TCP: N `warpmesh node` processes ------------------------------------------------


class WarpCluster:
    """``peers`` ``warpmesh node --control stdio`` processes on loopback, joined through peer 1."""

    #: Start timing once every peer says its ownership has settled (``--unsettled``: the moment
    #: every peer sees every worker, i.e. a mesh that has just formed).
    wait_settled = True

    def __init__(self, peers: int, profile_dir: Path | None = None, data_dir: Path | None = None) -> None:
        self.names = [f"peer-{i + 1}" for i in range(peers)]
        self.profile_dir = profile_dir
        self.data_dir = data_dir
        self.procs: list[NodeProcess] = []
        self._batch = 0

    def _args(self, name: str, join: list[str]) -> list[str]:
        cmd = NodeProcess.command(name, "127.0.0.1:0", join, "--ops", OPS_MODULE)
        if self.data_dir is not None:
            cmd += ["--data", str(self.data_dir / name)]
        if self.profile_dir is None:
            return cmd
        node_args = cmd[cmd.index("node"):]
        return [sys.executable, str(HERE / "profile_node.py"), str(self.profile_dir / f"{name}.prof"), *node_args]

    async def start(self, timeout: float = 120.0) -> WarpCluster:
        first = await NodeProcess(self.names[0], self._args(self.names[0], [])).start(timeout)
        self.procs.append(first)
        assert first.address is not None
        rest = [NodeProcess(n, self._args(n, [first.address])) for n in self.names[1:]]
        self.procs += await asyncio.gather(*(p.start(timeout) for p in rest))
        deadline = time.monotonic() + timeout
        while True:
            # Formed and settled: every peer sees every worker, and none still settles claims
            # because a view changed less than a settle window ago (the steady state, where the
            # peers measured beside us are timed after their warm-ups too).
            warps = [(await p.status(timeout))["warp"] for p in self.procs]
            views = [w["live_workers"] for w in warps]
            if all(len(v) == len(self.procs) for v in views) and (
                    not self.wait_settled or all(w["settled"] for w in warps)):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"the mesh did not form and settle within {timeout:.0f} s: workers seen "
                                   f"{views}, settled {[w['settled'] for w in warps]} (--unsettled skips the wait)")
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop(30.0) for p in self.procs), return_exceptions=True)

    async def mesh_bytes_out(self) -> int:
        """TCP bytes written by every peer (frame headers included), from ``TcpMesh.stats``."""
        total = 0
        for p in self.procs:
            total += sum(link["bytes_out"] for link in (await p.status())["mesh"]["peers"].values())
        return total

    async def link_trouble(self) -> dict[str, int]:
        """Reconnects, frames lost with dying links and links closed (any reason), summed over peers."""
        out = {"reconnects": 0, "frames_lost": 0, "links_closed": 0}
        for p in self.procs:
            mesh = (await p.status())["mesh"]
            out["reconnects"] += mesh["reconnects"]
            out["links_closed"] += sum(mesh["links_closed"].values())
            out["frames_lost"] += sum(link["frames_lost"] for link in mesh["peers"].values())
        return out

    async def run_batch(self, op: str, args: list[Any], timeout: float) -> tuple[float, dict[str, Any]]:
        """Enqueue one job per element of ``args`` through peer 1; seconds until peer 1 has every answer."""
        self._batch += 1
        first = self.procs[0]
        base = (await first.status())["warp"]["results"]
        items = [{"task": f"b{self._batch}-{i}", "op": op, "args": a} for i, a in enumerate(args)]
        want = base + len(items)
        # Peer 1 says when its board holds every answer (``wait_results``): polling its status every
        # 50 ms cost it several ms of CPU per poll, work the peers measured beside us never do.
        await first.send({"cmd": "wait_results", "count": want, "timeout": timeout})
        t0 = time.perf_counter()
        for lo in range(0, len(items), 5000):
            await first.call({"cmd": "enqueue_many", "items": items[lo:lo + 5000]}, timeout=timeout)
        done = await first.wait_event(lambda e: e["event"] == "results_reached", timeout + 5)
        seconds = time.perf_counter() - t0
        if not done["ok"]:
            raise RuntimeError(f"only {done['results'] - base} of {len(items)} answers after {timeout:.0f} s")
        st = await first.status(timeout)
        return seconds, {"task_ids": [it["task"] for it in items], "status": st}

    async def check(self, task_ids: list[str], expected: Callable[[int], Any], args: list[Any]) -> dict[str, int]:
        """Lost and wrong answers among ``task_ids`` (read from peer 1's results board)."""
        results = (await self.procs[0].call({"cmd": "results"}, timeout=120))["results"]
        lost = wrong = 0
        for t, a in zip(task_ids, args):
            r = results.get(t)
            if r is None:
                lost += 1
            elif not r["ok"] or r["value"] != expected(a):
                wrong += 1
        return {"lost": lost, "wrong": wrong}


@asynccontextmanager
async def warp_cluster(peers: int, profile_dir: Path | None = None, durable: bool = False) -> Any:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="warp-bench-") as tmp:
        cluster = WarpCluster(peers, profile_dir, Path(tmp) if durable else None)
        try:
            yield await cluster.start()
        finally:
            await cluster.stop()


async def warp_trivial(peers: int, jobs: int, timeout: float, profile_dir: Path | None,
                       durable: bool = False) -> dict[str, Any]:
    async with warp_cluster(peers, profile_dir, durable) as c:
        args = list(range(1, jobs + 1))
        b0 = await c.mesh_bytes_out()
        seconds, info = await c.run_batch("demo.collatz", args, timeout)
        b1 = await c.mesh_bytes_out()
        checked = await c.check(info["task_ids"], collatz_steps, args)
        counters = info["status"]["warp"]["counters"]
        return {"seconds": seconds, "jobs_per_s": jobs / seconds, "tcp_bytes_per_job": (b1 - b0) / jobs,
                "links": await c.link_trouble(),
                "duplicates": counters["duplicates"], "failovers": counters["failovers"],
                "executions": counters["executions"], **checked}


async def warp_cpu(peers: int, op: str, jobs: int, ms: int, timeout: float) -> dict[str, Any]:
    async with warp_cluster(peers) as c:
        # Warm-up (untimed): every peer's worker pool is up and has imported the ops.
        await c.run_batch(op, [1] * (peers * (os.cpu_count() or 1) * 2), timeout)
        args = [ms] * jobs
        seconds, info = await c.run_batch(op, args, timeout)
        checked = await c.check(info["task_ids"], lambda a: a, args)
        counters = info["status"]["warp"]["counters"]
        return {"seconds": seconds, "duplicates": counters["duplicates"], **checked}


# --- peers ------------------------------------------------------------------------------------------


def pool_run(fn: Callable[[Any], Any], args: list[Any], expected: Callable[[Any], Any]) -> dict[str, Any]:
    with multiprocessing.Pool(2) as pool:
        pool.map(fn, args[:8])  # warm-up: both workers are up
        t0 = time.perf_counter()
        got = list(pool.imap_unordered(fn, args, chunksize=1))
        seconds = time.perf_counter() - t0
    wrong = Counter(got) != Counter(expected(a) for a in args)
    return {"seconds": seconds, "jobs_per_s": len(args) / seconds, "wrong": int(wrong)}


@contextmanager
def dask_client() -> Iterator[Any]:
    assert distributed is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.CRITICAL)
        client = distributed.Client(cluster)
    try:
        client.submit(collatz_steps, 1, pure=False).result()  # warm-up: workers up and connected
        yield client
    finally:
        client.close()
        cluster.close()


def dask_trivial(jobs: int) -> dict[str, Any]:
    with dask_client() as client:
        args = list(range(1, jobs + 1))
        t0 = time.perf_counter()
        futures = client.map(collatz_steps, args, pure=False)
        got = client.gather(futures)
        seconds = time.perf_counter() - t0
    wrong = sum(1 for a, g in zip(args, got) if g != collatz_steps(a))
    return {"seconds": seconds, "jobs_per_s": jobs / seconds, "wrong": wrong}


def dask_cpu(jobs: int, ms: int, pool_seconds: float) -> dict[str, Any]:
    """(b) on Dask: ``jobs`` x ``burn(ms)`` through ``Client.map`` + ``gather``, and Dask's own
    efficiency against the ``Pool(2)`` run made right before it (``pool_seconds``; the issue's "vs
    its own Pool")."""
    with dask_client() as client:
        client.gather(client.map(burn, [1] * 8, pure=False))  # warm-up: both workers have run burn
        t0 = time.perf_counter()
        got = client.gather(client.map(burn, [ms] * jobs, pure=False))
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "wrong": sum(1 for g in got if g != ms),
            "own_pool_seconds": pool_seconds, "own_efficiency": pool_seconds / seconds}


# --- (c) bytes per job, in process on the memory fabric --------------------------------------------


async def _bytes_per_job(queue_size: int, peers: int, seed: int) -> dict[str, Any]:
    from warpmesh.net.memory import LinkFaults, MemoryFabric
    from warpmesh.warp import WarpNode
    from warpmesh.warp.demo_ops import registry

    class TallyFabric(MemoryFabric):
        """Counts payload bytes per mux channel (the first byte) as well."""

        by_tag: Counter[int]

        async def _send(self, seam: Any, dst: str, data: bytes) -> None:
            self.by_tag[data[0] if data else -1] += len(data)
            await super()._send(seam, dst, data)

    fabric = TallyFabric(seed=seed, faults=LinkFaults(delay=0.0002))
    fabric.by_tag = Counter()
    nodes = []
    for i in range(peers):
        seam = fabric.join(f"peer-{i + 1}")
        nodes.append(await WarpNode(seam, registry=registry, incarnation=1_763_700_000_000_000 + i).start())
    loop = asyncio.get_running_loop()
    await asyncio.sleep(10.0)  # membership published, rings agree, views settled
    # The idle mesh's own traffic (heartbeats, anti-entropy digests), to subtract.
    idle0, idle_t0 = fabric.bytes_sent, loop.time()
    await asyncio.sleep(30.0)
    idle_rate = (fabric.bytes_sent - idle0) / (loop.time() - idle_t0)

    b0, t0, wall0, tags0 = fabric.bytes_sent, loop.time(), time.perf_counter(), Counter(fabric.by_tag)
    for j in range(queue_size):
        nodes[0].enqueue_nowait(f"job-{j}", "demo.collatz", j + 1)
    while len(nodes[0].results) < queue_size:
        await nodes[0].results_board.changes.changed()
    wall = time.perf_counter() - wall0
    while any(n.queue_depth for n in nodes) or any(len(n.results) < queue_size for n in nodes):
        await asyncio.sleep(0.05)
    await asyncio.sleep(3.0)  # acks, intent cleanup and a quiet anti-entropy round everywhere
    window = loop.time() - t0
    total = fabric.bytes_sent - b0
    by_board = {name: (fabric.by_tag[tag] - tags0[tag]) / queue_size
                for name, tag in (("queue", 0x01), ("results", 0x02), ("intents", 0x03), ("counters", 0x04),
                                  ("members", 0x05), ("heartbeat", 0x10))}
    wrong = sum(1 for j in range(queue_size)
                if (r := nodes[0].results.get(f"job-{j}")) is None or r.value != collatz_steps(j + 1))
    dups = nodes[0].counter("duplicates")
    for n in nodes:
        await n.close()
    await fabric.close()
    return {"bytes_per_job": (total - idle_rate * window) / queue_size, "raw_bytes_per_job": total / queue_size,
            "idle_bytes_per_s": idle_rate, "window_s": window, "by_board": by_board, "wrong": wrong,
            "duplicates": dups, "inproc_jobs_per_s": queue_size / wall}


def bytes_per_job(queue_size: int, peers: int, seed: int) -> dict[str, Any]:
    from warpmesh.sim import run_virtual

    return run_virtual(_bytes_per_job(queue_size, peers, seed))


# --- driver -----------------------------------------------------------------------------------------


def section_a(args: argparse.Namespace) -> None:
    progress(f"(a) {args.jobs} trivial jobs: warpmesh {args.peers} peers vs Dask vs Pool(2), {args.runs} runs")
    load0 = load()
    ours: list[dict[str, Any]] = []
    pool: list[dict[str, Any]] = []
    dask: list[dict[str, Any]] = []
    durable: list[dict[str, Any]] = []
    for r in range(args.runs):
        pool.append(pool_run(collatz_steps, list(range(1, args.jobs + 1)), collatz_steps))
        progress(f"(a) run {r + 1}: Pool(2) {pool[-1]['jobs_per_s']:.0f} jobs/s")
        if distributed is not None and not args.no_dask:
            dask.append(dask_trivial(args.jobs))
            progress(f"(a) run {r + 1}: Dask {dask[-1]['jobs_per_s']:.0f} jobs/s")
        prof = args.profile if r == 0 and args.profile is not None else None
        ours.append(asyncio.run(warp_trivial(args.peers, args.jobs, args.timeout, prof)))
        progress(f"(a) run {r + 1}: warpmesh {ours[-1]['jobs_per_s']:.0f} jobs/s, "
                 f"{ours[-1]['duplicates']} duplicates, {ours[-1]['failovers']} failovers")
        if not args.no_durable:
            durable.append(asyncio.run(warp_trivial(args.peers, args.jobs, args.timeout, None, durable=True)))
            progress(f"(a) run {r + 1}: warpmesh --data {durable[-1]['jobs_per_s']:.0f} jobs/s")
    ours_rate = med([o["jobs_per_s"] for o in ours], 1)
    common = {
        "unit": "jobs/s", "runs": args.runs, "jobs": args.jobs, "peers": args.peers, "op": "demo.collatz",
        "ours_samples": [round(o["jobs_per_s"], 1) for o in ours],
        "ours_seconds": med([o["seconds"] for o in ours]),
        "ours_lost": sum(o["lost"] for o in ours), "ours_wrong": sum(o["wrong"] for o in ours),
        "ours_duplicates": [o["duplicates"] for o in ours], "ours_failovers": [o["failovers"] for o in ours],
        "tcp_bytes_per_job_incl_background": med([o["tcp_bytes_per_job"] for o in ours], 1),
        "ours_link_trouble": [o["links"] for o in ours],
        "timed": "enqueue command sent -> peer 1's results board holds every answer",
        "mesh": "settled" if WarpCluster.wait_settled else "just formed (--unsettled)",
    }
    pool_rate = med([p["jobs_per_s"] for p in pool], 1)
    if dask:
        dask_rate = med([d["jobs_per_s"] for d in dask], 1)
        emit({"bench": "trivial_jobs", "ours": ours_rate, "peer": dask_rate,
              "peer_name": "dask.distributed LocalCluster(n_workers=2, threads_per_worker=1) Client.map+gather",
              "ratio": round(ours_rate / dask_rate, 3), "target_ratio": 10.0,
              "met": ours_rate / dask_rate >= 10.0, "peer_samples": [round(d["jobs_per_s"], 1) for d in dask],
              "peer_wrong": sum(d["wrong"] for d in dask), **common, "loadavg_1m": [load0, load()]})
    else:
        emit({"bench": "trivial_jobs", "ours": ours_rate, "peer": None, "peer_name": "dask (not installed)",
              "ratio": None, "skipped": "dask.distributed is not installed: pip install -e '.[bench]'",
              **common, "loadavg_1m": [load0, load()]})
    emit({"bench": "trivial_jobs_vs_pool", "ours": ours_rate, "peer": pool_rate,
          "peer_name": "multiprocessing.Pool(2).imap_unordered(chunksize=1)",
          "ratio": round(ours_rate / pool_rate, 4), "peer_samples": [round(p["jobs_per_s"], 1) for p in pool],
          "peer_wrong": sum(p["wrong"] for p in pool), **common, "loadavg_1m": [load0, load()]})
    if durable:
        durable_rate = med([o["jobs_per_s"] for o in durable], 1)
        dask_rate_or_none = med([d["jobs_per_s"] for d in dask], 1) if dask else None
        emit({"bench": "trivial_jobs_durable", "ours": durable_rate, "peer": ours_rate,
              "peer_name": "warpmesh in memory, same run (interleaved)", "ratio": round(durable_rate / ours_rate, 3),
              "target_ratio": 0.7, "met": durable_rate / ours_rate >= 0.7,
              "vs_dask": None if dask_rate_or_none is None else round(durable_rate / dask_rate_or_none, 3),
              "dask": dask_rate_or_none, "unit": "jobs/s", "runs": args.runs, "jobs": args.jobs, "peers": args.peers,
              "ours_samples": [round(o["jobs_per_s"], 1) for o in durable],
              "ours_lost": sum(o["lost"] for o in durable), "ours_wrong": sum(o["wrong"] for o in durable),
              "ours_duplicates": [o["duplicates"] for o in durable],
              "durability": "--data DIR on every peer: SQLite WAL, synchronous=FULL, group commit; acks after fsync",
              "timed": common["timed"], "loadavg_1m": [load0, load()]})
    if args.profile is not None:
        from profile_node import show

        for name in ("peer-1", f"peer-{args.peers}"):
            path = args.profile / f"{name}.prof"
            if path.exists():
                print(f"==== cProfile of {name} (run 1 of (a)), by cumulative time ====", file=sys.stderr)
                print(show(str(path), 45), file=sys.stderr)


def section_b(args: argparse.Namespace) -> None:
    pp = args.burn_process_peers
    configs = [("2 peers, demo.burn inline (one peer process per core)", 2, "demo.burn"),
               (f"{pp} peers, demo.burn_process (each peer's process pool, one worker per core)", pp,
                "demo.burn_process")]
    progress(f"(b) {args.burn_jobs} x {args.burn_ms} ms CPU jobs: warpmesh vs Pool(2) and Dask, {args.runs} runs")
    load0 = load()
    pool: list[dict[str, Any]] = []
    dask: list[dict[str, Any]] = []
    ours: dict[str, list[dict[str, Any]]] = {c[0]: [] for c in configs}
    for r in range(args.runs):
        pool.append(pool_run(burn, [args.burn_ms] * args.burn_jobs, lambda a: a))
        progress(f"(b) run {r + 1}: Pool(2) {pool[-1]['seconds']:.2f} s")
        if distributed is not None and not args.no_dask:
            dask.append(dask_cpu(args.burn_jobs, args.burn_ms, pool[-1]["seconds"]))
            progress(f"(b) run {r + 1}: Dask {dask[-1]['seconds']:.2f} s "
                     f"(own Pool(2) {dask[-1]['own_pool_seconds']:.2f} s)")
        for label, peers, op in configs:
            ours[label].append(asyncio.run(warp_cpu(peers, op, args.burn_jobs, args.burn_ms, args.timeout)))
            progress(f"(b) run {r + 1}: warpmesh [{label}] {ours[label][-1]['seconds']:.2f} s")
    pool_s = med([p["seconds"] for p in pool])
    ideal = args.burn_jobs * args.burn_ms / 1000 / 2
    dask_line: dict[str, Any]
    if dask:
        # Dask beside us: its wall time and its efficiency against the same runs' Pool(2) (the
        # figure ours is compared with), and against the Pool(2) run just before it.
        dask_s = med([d["seconds"] for d in dask])
        dask_line = {"dask_s": dask_s, "dask_efficiency": round(pool_s / dask_s, 3),
                     "dask_own_pool_efficiency": round(med([d["own_efficiency"] for d in dask]), 3),
                     "dask_samples": [round(d["seconds"], 3) for d in dask],
                     "dask_wrong": sum(d["wrong"] for d in dask),
                     "dask_name": "dask.distributed LocalCluster(n_workers=2, threads_per_worker=1) "
                                  "Client.map+gather"}
    else:
        dask_line = {"dask_s": None, "dask_skipped": "dask.distributed is not installed (or --no-dask)"}
    for label, peers, op in configs:
        ours_s = med([o["seconds"] for o in ours[label]])
        eff = pool_s / ours_s
        vs_dask = {} if not dask else {"vs_dask": round(dask_line["dask_s"] / ours_s, 3),
                                        "at_least_dask": eff >= dask_line["dask_efficiency"]}
        emit({"bench": "cpu_jobs", "config": label, "ours": ours_s, "peer": pool_s,
              "peer_name": "multiprocessing.Pool(2).imap_unordered(chunksize=1)",
              "ratio": round(eff, 3), "unit": "s wall; ratio = efficiency = Pool's wall / ours",
              "target_ratio": 0.97, "met": eff >= 0.97, **dask_line, **vs_dask,
              "mesh": "settled" if WarpCluster.wait_settled else "just formed (--unsettled)",
              "runs": args.runs, "jobs": args.burn_jobs,
              "ms_per_job": args.burn_ms, "peers": peers, "op": op, "ideal_s_on_2_cores": ideal,
              "ours_samples": [round(o["seconds"], 3) for o in ours[label]],
              "peer_samples": [round(p["seconds"], 3) for p in pool],
              "ours_lost": sum(o["lost"] for o in ours[label]), "ours_wrong": sum(o["wrong"] for o in ours[label]),
              "ours_duplicates": [o["duplicates"] for o in ours[label]],
              "loadavg_1m": [load0, load()]})


def section_c(args: argparse.Namespace) -> None:
    progress(f"(c) bytes per job at queue sizes {args.queue_sizes}, {args.peers} WarpNodes on MemoryFabric")
    load0 = load()
    results: dict[int, list[dict[str, Any]]] = {}
    for r in range(args.runs):
        for q in args.queue_sizes:
            results.setdefault(q, []).append(bytes_per_job(q, args.peers, seed=1 + r))
            progress(f"(c) run {r + 1}: queue {q}: {results[q][-1]['bytes_per_job']:.0f} B/job")
    smallest = None
    for q in args.queue_sizes:
        rs = results[q]
        ours = med([x["bytes_per_job"] for x in rs], 1)
        smallest = ours if smallest is None else smallest
        emit({"bench": "bytes_per_job", "queue_size": q, "ours": ours, "peer": REF_BYTES_PER_TASK,
              "peer_name": "kuilt WarpEgressFlatnessTest, queue 1,600 (reference report §5.2; not re-measured, "
                           "counts bytes broadcast, ours counts every link)",
              "ratio": round(ours / REF_BYTES_PER_TASK, 3), "unit": "bytes on all links per job",
              "runs": args.runs, "peers": args.peers,
              "transport": "MemoryFabric payload bytes (mux tag included, TCP's 11-byte header per frame not)",
              "vs_smallest_queue": round(ours / smallest, 3),
              "raw_bytes_per_job": med([x["raw_bytes_per_job"] for x in rs], 1),
              "idle_background_bytes_per_s": med([x["idle_bytes_per_s"] for x in rs], 1),
              "by_board": {k: med([x["by_board"][k] for x in rs], 1) for k in rs[0]["by_board"]},
              "wrong": sum(x["wrong"] for x in rs), "duplicates": [x["duplicates"] for x in rs],
              "inproc_jobs_per_s": med([x["inproc_jobs_per_s"] for x in rs], 1),
              "loadavg_1m": [load0, load()]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=10_000, help="(a) trivial jobs")
    ap.add_argument("--peers", type=int, default=4, help="(a, c) warpmesh peers")
    ap.add_argument("--burn-jobs", type=int, default=200, help="(b) CPU-bound jobs")
    ap.add_argument("--burn-ms", type=int, default=20, help="(b) ms of CPU per job")
    ap.add_argument("--burn-process-peers", type=int, default=4, help="(b) peers of the process-pool configuration")
    ap.add_argument("--queue-sizes", default="100,10000", help="(c) comma-separated queue sizes")
    ap.add_argument("--only", default="a,b,c", help="sections to run, e.g. 'a' or 'b,c'")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for one batch's answers")
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask peer")
    ap.add_argument("--no-durable", action="store_true", help="(a) skip the durable (--data) column")
    ap.add_argument("--unsettled", action="store_true",
                    help="(a, b) time each batch from the moment every peer sees every worker, before ownership "
                         "has settled (a mesh that has just formed; by default every peer must say it has settled)")
    ap.add_argument("--profile", type=Path, default=None, metavar="DIR",
                    help="run (a)'s first warpmesh run under cProfile, write DIR/peer-N.prof, print the top")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one run")
    args = ap.parse_args(argv)
    WarpCluster.wait_settled = not args.unsettled
    if args.quick:
        args.runs, args.jobs, args.peers, args.burn_jobs, args.burn_ms = 1, 200, 2, 8, 5
        args.burn_process_peers = 2
        args.queue_sizes, args.timeout = "20,60", min(args.timeout, 120.0)
    args.queue_sizes = [int(q) for q in args.queue_sizes.split(",") if q]
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    if not sections <= {"a", "b", "c"} or min(args.runs, args.jobs, args.peers, args.burn_jobs, args.burn_ms,
                                                      args.burn_process_peers) < 1:
        ap.error("--only takes a, b, c; counts must be >= 1")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    sys.path.insert(0, str(HERE))  # profile_node, when --profile
    progress(f"python {platform.python_version()}, {os.cpu_count()} cpus")
    if "a" in sections:
        section_a(args)
    if "b" in sections:
        section_b(args)
    if "c" in sections:
        section_c(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
