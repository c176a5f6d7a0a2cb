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
    python bench/scale.py --heartbeats --peers 8,32,64   # liveness cost per peer, busy and quiet
    python bench/scale.py --mesh-upkeep --peers 8,32,64 [--baseline-src OLD/src]   # TCP keepalives + roster gossip
    python bench/scale.py --repeats 5           # medians over interleaved repeats (seeds seed..)
    python bench/scale.py --peers 64 --jobs 20000 --ack-answers   # a staged target of issue 16
    python bench/scale.py --rounds 10           # the long-lived mesh: 10 rounds of 30,000 jobs, real processes

``--rounds N`` is issue 16's other experiment, on real processes and wall time: 3 ``warpmesh node``
peers on loopback (``--round-peers``), then N rounds, each one ``warpmesh submit --file --json`` of
``--round-jobs`` (30,000) new trivial jobs (``demo.collatz``), answers left on the board, so round k
starts with (k - 1) x 30,000 answers held. One JSON line per round (seconds, jobs/s, each peer's RSS
and the answers it holds), then a summary line: ``ours`` = the last round's jobs/s, ``peer`` = the
first round's, ``ratio`` = last / first; the target is within 15% (ratio >= 0.85).

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


def one(peers: int, jobs: int, seed: int, ack_answers: bool = False, cell_size: int = 0) -> dict[str, Any]:
    """Run one size in this process and describe it."""
    from warpmesh.sim.warp import run_warp

    t0 = time.perf_counter()
    report = run_warp(seed, peers=peers, jobs=jobs, ack_answers=ack_answers, cell_size=cell_size or None)
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


def heartbeat_cost(peers: int, busy: bool, mode: str, seconds: float = 10.0) -> float:
    """Liveness bytes per peer per second in a mesh of Liveness runtimes (virtual time).

    ``busy``: every peer also broadcasts a small app frame every 0.2 s (as a working Warp peer does).
    ``mode``: ``probe`` (SWIM-style probing, the default), ``quiet`` (heartbeats to every peer not
    sent anything else in the last half interval) or ``every`` (a heartbeat to every peer every
    interval, the first liveness).
    """
    import asyncio

    from warpmesh.liveness import HeartbeatConfig, Liveness
    from warpmesh.net import MuxSeam
    from warpmesh.net.memory import MemoryFabric
    from warpmesh.sim import run_virtual

    cfg = HeartbeatConfig(interval=0.5, timeout=2.0, lost_after=10.0, probe=mode == "probe",
                          quiet_when_busy=mode == "quiet")

    async def main() -> float:
        fabric = MemoryFabric(seed=1, classify=lambda d: "beat" if d[:1] == b"\x10" else "app")
        muxes = [MuxSeam(fabric.join(f"p{i}")) for i in range(peers)]
        nodes = [await Liveness(m, cfg).start() for m in muxes]
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
        down = sum(1 for n in nodes for h in n.health.value.values() if not h.alive)
        if down:
            raise AssertionError(f"{down} false suspicions in a healthy {peers}-peer mesh ({mode})")
        for n in nodes:
            await n.close()
        await fabric.close()
        return beat / peers / seconds

    return run_virtual(main())


def heartbeat_lines(peer_counts: list[int]) -> None:
    for busy in (True, False):
        for p in peer_counts:
            ours, quiet, every = (heartbeat_cost(p, busy, mode) for mode in ("probe", "quiet", "every"))
            print(json.dumps({
                "bench": "scale_heartbeats", "peers": p, "mesh": "busy" if busy else "quiet",
                "ours": round(ours, 1), "peer": round(every, 1),
                "peer_name": "heartbeat to every peer every interval (the first liveness, same run)",
                "heartbeats_quiet_when_busy": round(quiet, 1),
                "ratio": round(ours / every, 3) if every else None,
                "unit": "liveness bytes per peer per second (payload, 1-byte mux tag included)", "runs": 1,
            }))
            sys.stdout.flush()


def mesh_upkeep(peers: int, seconds: float) -> float:
    """Bytes per peer per second a settled, quiet TCP mesh of ``peers`` sends to keep itself up
    (keepalives, roster gossip; no DATA), default :class:`TcpMeshConfig`, all on loopback in this
    process. Counted from the links' ``bytes_out``, so the same code measures an older tree."""
    import asyncio
    import random

    from warpmesh.net.tcp import TcpMesh

    async def main() -> float:
        ms: list[TcpMesh] = []
        first = await TcpMesh("p00", listen=("127.0.0.1", 0), join=[], incarnation=1, rng=random.Random(0)).start()
        ms.append(first)
        for i in range(1, peers):
            ms.append(await TcpMesh(f"p{i:02d}", listen=("127.0.0.1", 0), join=[first.address], incarnation=1,
                                    rng=random.Random(i)).start())
        want = frozenset(m.self_id for m in ms)
        for m in ms:
            await m.roster.wait_for(lambda r: r == want, timeout=120)
        await asyncio.sleep(3.0)  # the join's own gossip settles

        def out() -> int:
            return sum(ps.bytes_out for m in ms for ps in m.stats.peers.values())

        b0 = out()
        await asyncio.sleep(seconds)
        cost = (out() - b0) / peers / seconds
        for m in ms:
            await m.close()
        return cost

    return asyncio.run(main())


def mesh_upkeep_lines(peer_counts: list[int], seconds: float, baseline_src: str | None) -> None:
    for p in peer_counts:
        ours = mesh_upkeep(p, seconds)
        base = None
        if baseline_src:
            code = (f"import json, sys; sys.path.insert(0, {baseline_src!r}); sys.path.insert(1, {os.path.dirname(os.path.abspath(__file__))!r}); "
                    f"import scale; print(json.dumps(scale.mesh_upkeep({p}, {seconds})))")
            env = {**os.environ, "PYTHONPATH": baseline_src}
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
            base = float(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else None
        print(json.dumps({
            "bench": "scale_mesh_upkeep", "peers": p, "ours": round(ours, 1),
            "peer": None if base is None else round(base, 1),
            "peer_name": f"the same mesh on the tree at {baseline_src}" if baseline_src else None,
            "ratio": round(ours / base, 3) if base else None,
            "unit": "TCP payload bytes per peer per second of a settled quiet mesh (keepalives, roster gossip)",
            "seconds": seconds, "runs": 1,
        }))
        sys.stdout.flush()


def run_child(peers: int, jobs: int, seed: int, timeout: float, ack_answers: bool = False,
              cell_size: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", f"{peers},{jobs},{seed},{int(ack_answers)},{cell_size}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "failures": [f"did not finish within {timeout:.0f} s"], "bytes_per_job": None}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        return {"ok": False, "failures": [f"exit {out.returncode}: {out.stderr[-500:]}"], "bytes_per_job": None}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _rss_mib(pid: int) -> float | None:
    """Resident memory of a process, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


async def _rounds(rounds: int, round_jobs: int, peers: int, timeout: float) -> list[dict[str, Any]]:
    """Issue 16's long-lived mesh: ``rounds`` submits of ``round_jobs`` new jobs into one mesh."""
    import asyncio
    import tempfile

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from warp_vs_peers import WarpCluster

    from warpmesh.warp.demo_ops import collatz_steps

    out: list[dict[str, Any]] = []
    cluster = WarpCluster(peers)
    await cluster.start()
    try:
        first = cluster.procs[0]
        assert first.address is not None
        with tempfile.TemporaryDirectory(prefix="warp-rounds-") as tmp:
            for r in range(rounds):
                base = r * round_jobs
                path = os.path.join(tmp, f"round-{r + 1}.jsonl")
                with open(path, "w") as f:
                    for i in range(round_jobs):
                        f.write(json.dumps({"op": "demo.collatz", "args": [base + i + 1],
                                            "task": f"r{r + 1}-{i}"}) + "\n")
                cmd = [sys.executable, "-m", "warpmesh.cli.app", "submit", "--to", first.address, "--file", path,
                       "--json", "--timeout", str(timeout)]
                t0 = time.perf_counter()
                proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                            stderr=asyncio.subprocess.PIPE)
                stdout, stderr = await proc.communicate()
                seconds = time.perf_counter() - t0
                answers = [json.loads(line) for line in stdout.splitlines() if line.strip()]
                wrong = sum(1 for a in answers
                            if not a.get("ok") or a.get("value") != collatz_steps(base + int(a["task"].split("-")[1]) + 1))
                statuses = [await p.status(timeout) for p in cluster.procs]
                line = {"bench": "scale_rounds", "round": r + 1, "jobs": round_jobs, "seconds": round(seconds, 3),
                        "jobs_per_s": round(round_jobs / seconds, 1), "exit_status": proc.returncode,
                        "answered": len(answers), "wrong": wrong,
                        "answers_held": [s["warp"]["results"] for s in statuses],
                        "duplicates": statuses[0]["warp"]["counters"]["duplicates"],
                        "rss_mib": [_rss_mib(p.proc.pid) if p.proc is not None else None for p in cluster.procs],
                        "loadavg_1m": round(os.getloadavg()[0], 2)}
                if proc.returncode != 0:
                    line["stderr"] = stderr.decode(errors="replace")[-500:]
                print(json.dumps(line))
                sys.stdout.flush()
                out.append(line)
    finally:
        await cluster.stop()
    return out


def rounds_lines(rounds: int, round_jobs: int, peers: int, timeout: float) -> int:
    """Run the rounds experiment and print its summary line; exit status 1 if a round failed."""
    import asyncio

    results = asyncio.run(_rounds(rounds, round_jobs, peers, timeout))
    first, last = results[0]["jobs_per_s"], results[-1]["jobs_per_s"]
    ok = all(r["exit_status"] == 0 and r["answered"] == round_jobs and r["wrong"] == 0 for r in results)
    print(json.dumps({
        "bench": "scale_rounds_summary", "ours": last, "peer": first,
        "peer_name": "the first round's jobs/s (same mesh, same invocation)",
        "ratio": round(last / first, 3), "target_ratio": 0.85, "met": ok and last / first >= 0.85,
        "unit": "jobs/s (submit --file --json of each round, answers left on the board)",
        "rounds": rounds, "round_jobs": round_jobs, "peers": peers, "ok": ok,
        "jobs_per_s": [r["jobs_per_s"] for r in results],
        "rss_mib_first_last": [results[0]["rss_mib"], results[-1]["rss_mib"]],
        "answers_held_last": results[-1]["answers_held"],
        "cpus": os.cpu_count(), "python": platform.python_version()}))
    return 0 if ok else 1


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
    ap.add_argument("--mesh-upkeep", action="store_true",
                    help="instead: TCP keepalive and roster-gossip bytes per peer per second at each --peers")
    ap.add_argument("--upkeep-seconds", type=float, default=30.0, help="(--mesh-upkeep) seconds measured per size")
    ap.add_argument("--baseline-src", default=None,
                    help="(--mesh-upkeep) a src/ directory of another tree to measure in the same run")
    ap.add_argument("--rounds", type=int, default=0,
                    help="instead: this many rounds of --round-jobs into one long-lived mesh of real processes")
    ap.add_argument("--round-jobs", type=int, default=30_000, help="(--rounds) jobs per round")
    ap.add_argument("--round-peers", type=int, default=3, help="(--rounds) warpmesh node processes")
    ap.add_argument("--quick", action="store_true", help="smoke run: 4 peers x 100 jobs, once")
    ap.add_argument("--cell-size", type=int, default=0,
                    help="split meshes of more peers than this into cells of about this many (0: no cells)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: "peers,jobs,seed,ack,cell_size"
    args = ap.parse_args(argv)
    if args.one:
        peers, jobs, seed, ack, cell_size = (int(x) for x in args.one.split(","))
        print(json.dumps(one(peers, jobs, seed, bool(ack), cell_size)))
        return 0
    if args.rounds:
        if args.rounds < 1 or args.round_jobs < 1 or args.round_peers < 1:
            ap.error("--rounds, --round-jobs and --round-peers must be >= 1")
        if args.quick:
            args.rounds, args.round_jobs = 2, 200
        return rounds_lines(args.rounds, args.round_jobs, args.round_peers, min(args.timeout, 600.0))
    if args.quick:
        args.peers, args.jobs, args.repeats = "4", "100", 1
    peer_counts = _ints(args.peers, "peers", 3)
    if args.heartbeats:
        heartbeat_lines(peer_counts)
        return 0
    if args.mesh_upkeep:
        mesh_upkeep_lines(peer_counts, args.upkeep_seconds, args.baseline_src)
        return 0
    job_counts = _ints(args.jobs, "jobs", 3)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    sizes = [(p, j) for j in job_counts for p in peer_counts]
    runs: dict[tuple[int, int], list[dict[str, Any]]] = {s: [] for s in sizes}
    for r in range(args.repeats):  # interleaved: every size once per repeat
        for p, j in sizes:
            runs[(p, j)].append(run_child(p, j, args.seed + r, args.timeout, args.ack_answers, args.cell_size))

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
            "cell_size": args.cell_size if args.cell_size and p > args.cell_size else None,
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
