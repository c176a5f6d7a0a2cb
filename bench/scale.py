"""How the Warp mesh's wire cost grows with peers and jobs (issue 16), in virtual time.

Runs ``warpmesh sim warp`` (:func:`warpmesh.sim.warp.run_warp`: steady phase, then churn - crashes,
restarts, leaves, joins, partitions over lossy links - then quiescence, every answer checked) for
each ``peers x jobs`` size, each in its own process (so peak memory is per run), and prints one JSON
line per size:

* ``bytes_per_job`` and ``bytes_per_job_by_kind`` (delta, ack, digest, summary, difference,
  full_state, frontier, resend_request, heartbeat, control), ``frames_per_job``;
* ``full_states_sent`` (whole-state frames; causal boards are repaired by difference instead);
* ``wall_s`` (wall seconds of the simulation), ``virtual_s``, ``peak_rss_mib``;
* ``lost``, ``wrong``, ``steady_duplicates`` (must all be 0) and the churn the seed produced.

Headline: ``ours`` = bytes per job at this size; ``peer`` = bytes per job of the base size (the first
of ``--peers`` x the first of ``--jobs``, default 8 x 1,000) measured in the same invocation, so
``ratio`` is the growth factor. Issue 16's targets: 8 x 10,000 within 1.5x, 32 x 1,000 within 2x of
8 x 1,000. The issue's "before" figures (seed 1) are carried as ``issue_before``.

    python bench/scale.py                       # quick subset: 8 and 16 peers x 1,000 jobs
    python bench/scale.py --peers 8,16,32,64 --jobs 1000,10000,100000 --timeout 3600
    python bench/scale.py --quick               # smoke: 4 peers x 100 jobs
    python bench/scale.py --heartbeats --peers 8,32,64   # heartbeat cost per peer, busy and quiet
    python bench/scale.py --repeats 5           # medians over interleaved repeats (seeds seed..)
    python bench/scale.py --peers 64 --jobs 20000 --ack-answers   # a staged target of issue 16

Churn follows run time, so single seeds are noisy: quote medians of repeats (``--repeats``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

#: Issue 16's table, seed 1, before the scale work (bytes per job).
ISSUE_BEFORE = {"8x1000": 3786, "32x1000": 19853, "8x10000": 23564}


def one(peers: int, jobs: int, seed: int, ack_answers: bool = False) -> dict[str, Any]:
    """Run one size in this process and describe it."""
    from warpmesh.sim.warp import run_warp

    t0 = time.perf_counter()
    report = run_warp(seed, peers=peers, jobs=jobs, ack_answers=ack_answers)
    wall = time.perf_counter() - t0
    m = report.metrics
    per_job = {k: round(v / jobs, 1) for k, v in sorted(m.get("bytes_by_kind", {}).items())}
    return {
        "ok": report.ok,
        "failures": report.failures[:3],
        "bytes_per_job": m.get("bytes_per_job"),
        "bytes_per_job_by_kind": per_job,
        "frames_per_job": round(sum(m.get("frames_by_kind", {}).values()) / jobs, 1),
        "full_states_sent": m.get("full_states_sent"),
        "wall_s": round(wall, 1),
        "virtual_s": m.get("virtual_seconds"),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "lost": m.get("lost"),
        "wrong": m.get("wrong"),
        "steady_duplicates": m.get("steady_duplicates"),
        "churn_events": m.get("churn_events"),
        "replay": report.replay,
    }


def heartbeat_cost(peers: int, busy: bool, skip: bool, seconds: float = 5.0) -> float:
    """Heartbeat bytes per peer per second in a mesh of Liveness runtimes (virtual time).

    ``busy``: every peer also broadcasts a small app frame every 0.2 s (as a working Warp peer does).
    ``skip=False`` restores the old behaviour (a heartbeat to every peer every interval) for comparison.
    """
    import asyncio

    from warpmesh.liveness import HeartbeatConfig, Liveness
    from warpmesh.net import MuxSeam
    from warpmesh.net.memory import MemoryFabric
    from warpmesh.sim import run_virtual

    async def main() -> float:
        fabric = MemoryFabric(seed=1, classify=lambda d: "beat" if d[:1] == b"\x10" else "app")
        muxes = [MuxSeam(fabric.join(f"p{i}")) for i in range(peers)]
        nodes = [await Liveness(m, HeartbeatConfig(interval=0.5, timeout=2.0, lost_after=10.0, quiet_when_busy=True)).start() for m in muxes]
        if not skip:
            for m in muxes:
                m.on_send = None  # nothing reports sends: every peer is due every interval
        apps = [m.channel(0x42) for m in muxes]
        for ch in apps:
            ch.add_handler(lambda _s, _d: None)
        await asyncio.sleep(1.0)
        b0 = fabric.bytes_by_kind["beat"]
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            if busy:
                for ch in apps:
                    await ch.broadcast(b"work")
            await asyncio.sleep(0.2)
        beat = fabric.bytes_by_kind["beat"] - b0
        for n in nodes:
            await n.close()
        await fabric.close()
        return beat / peers / seconds

    return run_virtual(main())


def heartbeat_lines(peer_counts: list[int]) -> None:
    for busy in (True, False):
        for p in peer_counts:
            ours, old = heartbeat_cost(p, busy, True), heartbeat_cost(p, busy, False)
            print(json.dumps({
                "bench": "scale_heartbeats", "peers": p, "mesh": "busy" if busy else "quiet",
                "ours": round(ours, 1), "peer": round(old, 1),
                "peer_name": "heartbeat to every peer every interval (the previous liveness, same run)",
                "ratio": round(ours / old, 3) if old else None,
                "unit": "heartbeat bytes per peer per second (payload, 1-byte mux tag included)", "runs": 1,
            }))
            sys.stdout.flush()


def run_child(peers: int, jobs: int, seed: int, timeout: float, ack_answers: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", f"{peers},{jobs},{seed},{int(ack_answers)}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "failures": [f"did not finish within {timeout:.0f} s"], "bytes_per_job": None}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"ok": False, "failures": [f"exit {out.returncode}: {out.stderr[-500:]}"], "bytes_per_job": None}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _ints(text: str, what: str, least: int) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--{what}: expected comma-separated integers like 8,32, got {text!r}") from None
    if not values or min(values) < least:
        raise SystemExit(f"--{what}: every value must be >= {least}")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="8,16", help="comma-separated peer counts (first: the base size)")
    ap.add_argument("--jobs", default="1000", help="comma-separated job counts (first: the base size)")
    ap.add_argument("--seed", type=int, default=1, help="first seed (repeat r uses seed + r)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved repeats per size; medians are quoted")
    ap.add_argument("--timeout", type=float, default=1800.0, help="wall seconds allowed per run")
    ap.add_argument("--ack-answers", action="store_true",
                    help="a client acknowledges answers as they land (boards stay small; issue 16's staged runs)")
    ap.add_argument("--heartbeats", action="store_true",
                    help="instead: heartbeat bytes per peer per second at each --peers, busy and quiet meshes")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 peers x 100 jobs, once")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: "peers,jobs,seed"
    args = ap.parse_args(argv)
    if args.one:
        peers, jobs, seed, ack = (int(x) for x in args.one.split(","))
        print(json.dumps(one(peers, jobs, seed, bool(ack))))
        return 0
    if args.quick:
        args.peers, args.jobs, args.repeats = "4", "100", 1
    peer_counts = _ints(args.peers, "peers", 3)
    if args.heartbeats:
        heartbeat_lines(peer_counts)
        return 0
    job_counts = _ints(args.jobs, "jobs", 3)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    sizes = [(p, j) for j in job_counts for p in peer_counts]
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {s: [] for s in sizes}
    for r in range(args.repeats):  # interleaved: every size once per repeat
        for p, j in sizes:
            runs[(p, j)].append(run_child(p, j, args.seed + r, args.timeout, args.ack_answers))

    def median_of(key: str, results: list[dict[str, Any]]) -> float | None:
        vals = [x[key] for x in results if x.get(key) is not None]
        return round(statistics.median(vals), 1) if vals else None

    base = median_of("bytes_per_job", runs[sizes[0]])
    for p, j in sizes:
        results = runs[(p, j)]
        ours = median_of("bytes_per_job", results)
        first = results[0]
        line: dict[str, Any] = {
            "bench": "scale",
            "peers": p,
            "jobs": j,
            "ack_answers": args.ack_answers,
            "ours": ours,
            "peer": base,
            "peer_name": f"this mesh at {sizes[0][0]} peers x {sizes[0][1]} jobs (same invocation)",
            "ratio": round(ours / base, 3) if ours is not None and base else None,
            "unit": "bytes on the wire per job (all links, virtual time)",
            "runs": len(results),
            "seeds": [args.seed + r for r in range(len(results))],
            "ok": all(x.get("ok") for x in results),
            "failures": [f for x in results for f in x.get("failures", [])][:3],
            "wall_s": median_of("wall_s", results),
            "virtual_s": median_of("virtual_s", results),
            "peak_rss_mib": max((x.get("peak_rss_mib") or 0 for x in results), default=None),
            "full_states_sent": median_of("full_states_sent", results),
            "frames_per_job": median_of("frames_per_job", results),
            "bytes_per_job_by_kind": first.get("bytes_per_job_by_kind"),
            "lost": max((x.get("lost") or 0 for x in results), default=0),
            "wrong": max((x.get("wrong") or 0 for x in results), default=0),
            "steady_duplicates": max((x.get("steady_duplicates") or 0 for x in results), default=0),
            "churn_events": first.get("churn_events"),
            "issue_before": ISSUE_BEFORE.get(f"{p}x{j}"),
            "cpus": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        }
        print(json.dumps(line))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
