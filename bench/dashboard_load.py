"""The dashboard's cost: bench (a) with and without the dashboard open, and the server's memory.

Prints JSON lines ``{"bench", "ours", "peer", "peer_name", "ratio", "unit", "runs", ...}`` (medians).

(1) ``dashboard_throughput``: bench (a) of ``bench/warp_vs_peers.py`` - ``--jobs`` (10,000) trivial
    jobs (``demo.collatz``) through peer 1 of ``--peers`` (4) ``warpmesh node`` processes on
    loopback - on two meshes side by side: one plain (the peer figure), one whose peer 1 runs
    ``--http`` with the dashboard open (ours): a reader on the page's live stream (``/api/live``,
    a summary every 0.5 s) and a ``/metrics`` scrape every second, while peer 1 folds every peer's
    events (channel 0x70) into its board. Each run starts fresh meshes, as bench (a) does; runs
    alternate between the two (the order flips each run) so load drift hits both alike. Wall-clock
    jobs/s and the mesh's CPU ms per job (from /proc). Ratio = ours / peer; the goal is >= 0.95.
(2) ``dashboard_memory``: one peer (in this process, memory fabric) with the dashboard server is fed
    ``--events`` (1,000,000) job events through its event feed, the board folded and the summary
    and ``/metrics`` built every 1,000 events as a page and a scraper would. The RSS is sampled
    every 100,000 events; ours = growth from the 200,000th event to the last (MiB), after the ring
    buffers have filled. Peer: the same events kept in an unbounded history (a list of dicts, what
    a dashboard without ring buffers holds), measured in the same run.

    python bench/dashboard_load.py [--runs 5] [--jobs 10000] [--peers 4] [--events 1000000] [--only 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from warp_vs_peers import OPS_MODULE, WarpCluster, load

from warpmesh.cli.procs import NodeProcess


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def progress(msg: str) -> None:
    print(f"[dashboard_load {time.strftime('%H:%M:%S')} load {load()}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(cluster: WarpCluster) -> float:
    """User + system CPU seconds used so far by every peer process of ``cluster`` (from /proc)."""
    total = 0
    for p in cluster.procs:
        assert p.proc is not None
        with open(f"/proc/{p.proc.pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DashboardCluster(WarpCluster):
    """bench (a)'s mesh whose peer 1 serves the dashboard on ``port``."""

    def __init__(self, peers: int, port: int) -> None:
        super().__init__(peers)
        self.port = port

    def _args(self, name: str, join: list[str]) -> list[str]:
        cmd = NodeProcess.command(name, "127.0.0.1:0", join, "--ops", OPS_MODULE)
        return [*cmd, "--http", f"127.0.0.1:{self.port}"] if name == self.names[0] else cmd


async def open_page(url: str, stop: asyncio.Event, seen: dict[str, int]) -> None:
    """What an open page costs the server: the live stream read to the end, /metrics every second."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async def live() -> None:
            async with http.get(url + "api/live") as r:
                async for line in r.content:
                    if line.startswith(b"data: "):
                        seen["summaries"] += 1

        async def scrape() -> None:
            while True:
                async with http.get(url + "metrics") as r:
                    await r.read()
                    seen["scrapes"] += 1
                await asyncio.sleep(1.0)

        tasks = [asyncio.create_task(live()), asyncio.create_task(scrape())]
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def one_run(args: argparse.Namespace, with_dashboard: bool, seen: dict[str, int]) -> dict[str, float]:
    """One bench (a) batch on a fresh mesh (as bench (a) does), with or without the dashboard open."""
    port = free_port()
    cluster = await (DashboardCluster(args.peers, port) if with_dashboard else WarpCluster(args.peers)).start()
    url = f"http://127.0.0.1:{port}/"
    stop = asyncio.Event()
    page = asyncio.create_task(open_page(url, stop, seen)) if with_dashboard else None
    try:
        await asyncio.sleep(0.5)
        c0 = cpu_seconds(cluster)
        seconds, _ = await cluster.run_batch("demo.collatz", list(range(1, args.jobs + 1)), args.timeout)
        c1 = cpu_seconds(cluster)
        out = {"jobs_per_s": args.jobs / seconds, "cpu_ms_per_job": 1000 * (c1 - c0) / args.jobs}
        if with_dashboard:
            board = json.loads(await _get(url + "api/summary"))
            out["stream_total"] = board["stream"]["total"]
            out["events_dropped"] = board["counters"]["events_dropped"]
        return out
    finally:
        stop.set()
        if page is not None:
            await page
        await cluster.stop()


async def section_1(args: argparse.Namespace) -> None:
    progress(f"(1) {args.jobs} trivial jobs on {args.peers} peers, with and without the dashboard, {args.runs} runs")
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    seen = {"summaries": 0, "scrapes": 0}
    failed = {True: 0, False: 0}
    load_before = load()
    for r in range(args.runs):
        for with_dashboard in ((True, False) if r % 2 else (False, True)):  # the order flips each run
            try:
                runs[with_dashboard].append(await one_run(args, with_dashboard, seen))
            except Exception as err:  # an overloaded machine: count it, do not hang the bench
                failed[with_dashboard] += 1
                progress(f"(1) run {r + 1} {'with' if with_dashboard else 'without'} the dashboard failed: {err}")
        if runs[True] and runs[False]:
            w, wo = runs[True][-1], runs[False][-1]
            progress(f"(1) run {r + 1}: with the dashboard {w['jobs_per_s']:.0f} jobs/s ({w['cpu_ms_per_job']:.3f} "
                     f"CPU ms/job), without {wo['jobs_per_s']:.0f} ({wo['cpu_ms_per_job']:.3f})")

    def med(flag: bool, key: str) -> float:
        return statistics.median(x[key] for x in runs[flag])

    ours, peer = med(True, "jobs_per_s"), med(False, "jobs_per_s")
    emit({"bench": "dashboard_throughput", "ours": round(ours), "peer": round(peer),
          "peer_name": "the same mesh without the dashboard", "ratio": round(ours / peer, 3), "unit": "jobs/s",
          "runs": args.runs, "jobs": args.jobs, "peers": args.peers,
          "with": [round(x["jobs_per_s"]) for x in runs[True]], "without": [round(x["jobs_per_s"]) for x in runs[False]],
          "cpu_ms_per_job": {"with": round(med(True, "cpu_ms_per_job"), 4),
                             "without": round(med(False, "cpu_ms_per_job"), 4)},
          "failed_runs": {"with": failed[True], "without": failed[False]},
          "page_summaries": seen["summaries"], "metrics_scrapes": seen["scrapes"],
          "board_stream_totals": [x["stream_total"] for x in runs[True]],
          "board_events_dropped": [x["events_dropped"] for x in runs[True]],
          "load_before": load_before, "load_after": load()})


async def _get(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as http, http.get(url) as r:
        return await r.text()


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def section_2(args: argparse.Namespace) -> None:
    import warpmesh
    from warpmesh.observe.http import DashboardServer
    from warpmesh.observe.metrics import metrics_text

    n = args.events
    progress(f"(2) {n} events through one peer's feed and board, RSS every 100,000")
    async with warpmesh.open_node("m", fabric=warpmesh.MemoryFabric(), ops=warpmesh.OpRegistry()) as peer:
        server = await DashboardServer(peer.observer, "127.0.0.1", 0).start()
        obs, board = peer.observer, server.board
        samples: list[tuple[int, float]] = []
        gc.collect()
        samples.append((0, rss_mib()))
        t0 = time.perf_counter()
        for i in range(n // 2):
            job = f"job-{i:08d}"
            obs.record("started", job=job, peer="m", detail={"op": "demo.collatz", "run": f"m@1:{i}"})
            obs.record("finished", job=job, peer="m", detail={"run": f"m@1:{i}", "attempts": 1, "duration": 1e-5})
            if (i + 1) % 500 == 0:
                obs.refresh()
                board.summary(0.0)
                if (i + 1) % 5000 == 0:
                    metrics_text(lambda: board)
            if (2 * (i + 1)) % 100_000 == 0:
                gc.collect()
                samples.append((2 * (i + 1), rss_mib()))
        seconds = time.perf_counter() - t0
        await server.close()
        held = board.summary(0.0)["held"]
    by = dict(samples)
    ours = by[n] - by[min(200_000, n)]
    # The peer: the same events kept as an unbounded history of dicts.
    history: list[dict[str, Any]] = []
    gc.collect()
    base = rss_mib()
    at_200k = base
    for i in range(n // 2):
        job = f"job-{i:08d}"
        history.append({"kind": "started", "job": job, "peer": "m", "op": "demo.collatz", "run": f"m@1:{i}"})
        history.append({"kind": "finished", "job": job, "peer": "m", "run": f"m@1:{i}", "duration": 1e-5})
        if 2 * (i + 1) == min(200_000, n):
            at_200k = rss_mib()
    peer = rss_mib() - at_200k
    emit({"bench": "dashboard_memory", "ours": round(ours, 1), "peer": round(peer, 1),
          "peer_name": "an unbounded event history (no ring buffers)", "ratio": round(ours / peer, 4) if peer else None,
          "unit": "MiB of RSS growth from event 200,000 to the last", "runs": 1, "events": n,
          "rss_mib": {str(k): round(v, 1) for k, v in samples}, "held": held,
          "events_per_s": round(n / seconds), "load": load()})


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--peers", type=int, default=4)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--only", default="1,2")
    ap.add_argument("--timeout", type=float, default=180.0, help="Seconds one batch may take before it counts as failed.")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if "1" in only:
        await section_1(args)
    if "2" in only:
        await section_2(args)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
