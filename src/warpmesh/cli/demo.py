"""``warpmesh demo``: N local peer processes share a pile of jobs, nobody in charge.

Starts ``--peers`` ``warpmesh node`` processes on loopback serving ``warpmesh.warp.demo_ops``,
enqueues ``--jobs`` jobs through one peer (each computes a known function of its argument), shows
live progress per peer, optionally SIGKILLs one peer mid-run, then checks every answer.

Every peer keeps its boards in a data directory (``--data DIR``, else a temporary one). With
``--power-cut``, when about half the answers are in, every peer is SIGKILLed at once and restarted
on its directory; the answers then still all come, and the ones already shown stay as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from warpmesh.cli.procs import NodeProcess, NodeProcessError
from warpmesh.warp.demo_ops import collatz_steps

OPS_MODULE = "warpmesh.warp.demo_ops"

#: Printed once under the summary: what the table's columns and the summary's counts mean.
LEGEND = (
    "columns: ran = jobs this peer executed; queue = jobs waiting in its replica of the queue; results = "
    "answers it holds (every peer's, replicated); live workers = peers it sees alive.\n"
    "summary: lost = jobs never answered; wrong = answers that differ from the expected value; "
    "duplicates = jobs run twice (only when a peer dies mid-job); failovers = jobs re-claimed after "
    "their claimer died."
)


def _peer_table(statuses: dict[str, dict[str, Any] | None], killed: set[str]) -> Table:
    table = Table(box=None, pad_edge=False)
    for col in ("peer", "state", "ran", "queue", "results", "live workers"):
        table.add_column(col, justify="right" if col in ("ran", "queue", "results") else "left")
    for name, st in statuses.items():
        if name in killed:
            table.add_row(name, "[red]killed[/red]", "", "", "", "")
            continue
        if st is None:
            table.add_row(name, "starting", "", "", "", "")
            continue
        w = st["warp"]
        table.add_row(name, "[green]up[/green]", str(st.get("ran_here", 0)), str(w["queue_depth"]),
                      str(w["results"]), str(len(w["live_workers"])))
    return table


async def run_demo(console: Console | None, *, peers: int, jobs: int, kill_one: bool,
                   timeout: float, power_cut: bool = False, data: Path | None = None) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        root = data if data is not None else Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="warpmesh-demo-")))
        return await _run_demo(console, peers=peers, jobs=jobs, kill_one=kill_one, timeout=timeout,
                               power_cut=power_cut, root=root)


async def _run_demo(console: Console | None, *, peers: int, jobs: int, kill_one: bool,
                    timeout: float, power_cut: bool, root: Path) -> dict[str, Any]:
    names = [f"peer-{i + 1}" for i in range(peers)]
    procs: dict[str, NodeProcess] = {}
    killed: set[str] = set()
    restarted = 0
    power_cut_at: int | None = None
    shown: dict[str, Any] = {}

    def spawn(name: str, join: list[str]) -> NodeProcess:
        return NodeProcess(name, NodeProcess.command(name, "127.0.0.1:0", join, "--ops", OPS_MODULE,
                                                     "--data", str(root / name)))

    statuses: dict[str, dict[str, Any] | None] = dict.fromkeys(names)
    progress = Progress(TextColumn("[bold]jobs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    bar = progress.add_task("jobs", total=jobs)
    live = Live(Group(progress, _peer_table(statuses, killed)), console=console, refresh_per_second=8,
                transient=False) if console is not None else None
    try:
        if live is not None:
            live.start()
        async def boot(up: list[str]) -> None:
            first = await spawn(up[0], []).start()
            procs[up[0]] = first
            assert first.address is not None
            rest = [spawn(n, [first.address]) for n in up[1:]]
            for p in await asyncio.gather(*(p.start() for p in rest)):
                procs[p.node_id] = p
            views: dict[str, list[str]] = {}

            async def mesh_formed() -> None:
                while True:
                    for n in up:
                        views[n] = (await procs[n].status())["warp"]["live_workers"]
                    if all(len(v) == len(up) for v in views.values()):
                        return
                    await asyncio.sleep(0.1)

            try:
                await asyncio.wait_for(mesh_formed(), min(timeout, 60.0))
            except TimeoutError:
                seen = "; ".join(f"{n} sees {', '.join(v)}" for n, v in sorted(views.items()))
                raise NodeProcessError(f"the {len(up)} peers did not all see each other within 60 s ({seen})") \
                    from None

        await boot(names)
        args = {f"job-{i}": i + 1 for i in range(jobs)}
        started = time.perf_counter()
        items = [{"task": t, "op": "demo.collatz", "args": a} for t, a in args.items()]
        victim = names[-1] if kill_one and peers > 1 else None
        # With faults to inject, the jobs go in twentieths, held at 20% until the kill and at 60%
        # until the power cut; each fault comes right after a fresh twentieth was acknowledged, so
        # it hits jobs in flight (on a fast machine, every answer could otherwise be in before the
        # first look, and the fault would hit an idle mesh).
        step = max(1, jobs // 20) if victim is not None or power_cut else 5000
        enqueued = 0

        def enqueue_upto() -> int:
            if victim is not None and victim not in killed:
                return max(step, jobs // 5)
            if power_cut and power_cut_at is None:
                return max(step, jobs * 3 // 5)
            return jobs

        async def enqueue_next() -> None:
            nonlocal enqueued
            chunk = items[enqueued:enqueued + step]
            # Acknowledged: a majority holds the jobs on disk, so even a power cut keeps them.
            answer = await procs[names[0]].call({"cmd": "enqueue_many", "items": chunk, "wait": True}, timeout=60)
            if not answer.get("acknowledged"):
                raise NodeProcessError(f"no majority acknowledged jobs {enqueued}..{enqueued + len(chunk) - 1} "
                                       "within 30 s")
            enqueued += len(chunk)

        done = 0
        deadline = started + timeout
        while True:
            while enqueued < min(jobs, enqueue_upto()):
                await enqueue_next()
            for name, p in procs.items():
                if name in killed:
                    continue
                st = await p.status()
                by_peer = st["warp"].get("executions_by_peer", {})
                st["ran_here"] = by_peer.get(name, 0)
                statuses[name] = st
            survivor = next(s for n, s in statuses.items() if n not in killed and s is not None)
            done = survivor["warp"]["results"]
            progress.update(bar, completed=done)
            if live is not None:
                live.update(Group(progress, _peer_table(statuses, killed)))
            if victim is not None and victim not in killed and done >= jobs * 0.1:
                if enqueued < jobs:
                    await enqueue_next()
                procs[victim].kill()
                killed.add(victim)
            if power_cut and power_cut_at is None and done >= jobs * 0.5 and (done < jobs or enqueued < jobs):
                if enqueued < jobs:
                    await enqueue_next()
                # What a client was shown so far must survive the cut unchanged.
                shown = (await procs[next(n for n in names if n not in killed)].call(
                    {"cmd": "results"}, timeout=60))["results"]
                power_cut_at = len(shown)
                up = [n for n in names if n not in killed]
                for n in up:
                    procs[n].kill()  # every peer at once: no goodbye, no flush
                await asyncio.gather(*(procs[n].stop() for n in up), return_exceptions=True)
                await boot(up)
                restarted = len(up)
                continue
            if done >= jobs:
                break
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.1)
        seconds = time.perf_counter() - started
        survivors = [n for n in names if n not in killed]
        answer = await procs[survivors[0]].call({"cmd": "results"}, timeout=60)
        results = answer["results"]
        # Counters are batched (0.1 s) and answered tasks leave the queues once a majority holds
        # them: let the mesh settle a moment so the summary is not a half-updated snapshot.
        settle_until = time.perf_counter() + 3.0
        while True:
            final = await procs[survivors[0]].status()
            w = final["warp"]
            if (w["counters"]["executions"] >= len(results) and w["queue_depth"] == 0) \
                    or time.perf_counter() > settle_until:
                break
            await asyncio.sleep(0.1)
        statuses[survivors[0]] = {**final, "ran_here": w.get("executions_by_peer", {}).get(survivors[0], 0)}
        wrong = [t for t, r in results.items() if t in args and (not r["ok"] or r["value"] != collatz_steps(args[t]))]
        # An answer shown before the power cut that is gone or different now is wrong too.
        wrong += [t for t, r in shown.items() if t not in wrong and (t not in results or results[t]["value"] != r["value"])]
        lost = [t for t in args if t not in results]
        counters = final["warp"]["counters"]
        by_peer = final["warp"].get("executions_by_peer", {})
        return {
            "peers": peers,
            "jobs": jobs,
            "completed": len(results),
            "lost": len(lost),
            "wrong": len(wrong),
            "duplicates": counters["duplicates"],
            "executions": counters["executions"],
            "failovers": counters["failovers"],
            "killed": sorted(killed),
            "executions_by_peer": by_peer,
            "seconds": round(seconds, 3),
            "jobs_per_s": round(len(results) / seconds, 1) if seconds > 0 else None,
            "restarted": restarted,
            "power_cut_at": power_cut_at,
        }
    finally:
        if live is not None:
            live.stop()
            if console is not None and not console.is_terminal:
                console.print()  # a non-terminal Live leaves the cursor at the end of its last line
        await asyncio.gather(*(p.stop() for p in procs.values()), return_exceptions=True)


@click.command()
@click.option("--peers", type=click.IntRange(min=1, max=32), default=4, show_default=True,
              help="Peer processes to start on loopback.")
@click.option("--jobs", type=click.IntRange(min=1, max=1_000_000), default=2000, show_default=True)
@click.option("--kill-one", is_flag=True, help="SIGKILL one peer when 10% of the jobs are done.")
@click.option("--power-cut", is_flag=True,
              help="When about half the answers are in, SIGKILL every peer at once and restart them all on "
                   "their data directories (combinable with --kill-one).")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Keep the peers' data directories in DIR (DIR/peer-1, ...; default: a temporary directory).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="Give up waiting for answers after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line with the summary.")
def demo(peers: int, jobs: int, kill_one: bool, power_cut: bool, data: Path | None, timeout: float,
         as_json: bool) -> None:
    """Share a pile of jobs among local peer processes with no scheduler, and check every answer."""
    console = None if as_json else Console()
    try:
        summary = asyncio.run(run_demo(console, peers=peers, jobs=jobs, kill_one=kill_one, timeout=timeout,
                                       power_cut=power_cut, data=data))
    except NodeProcessError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        assert console is not None
        ok = summary["lost"] == 0 and summary["wrong"] == 0
        colour = "green" if ok else "red"
        console.print(
            f"[{colour}]{summary['completed']}/{summary['jobs']} jobs answered[/{colour}], "
            f"lost {summary['lost']}, wrong {summary['wrong']}, duplicates {summary['duplicates']}, "
            f"failovers {summary['failovers']}; {summary['seconds']} s, {summary['jobs_per_s']} jobs/s"
            + (f"; killed {', '.join(summary['killed'])}" if summary["killed"] else "")
            + (f"; power cut at {summary['power_cut_at']} answers, {summary['restarted']} peers restarted"
               if summary["power_cut_at"] is not None else ""))
        console.print("executions by peer: " + ", ".join(f"{p} {n}" for p, n in sorted(summary["executions_by_peer"].items())))
        console.print(LEGEND, style="dim", highlight=False)
    sys.exit(0 if summary["lost"] == 0 and summary["wrong"] == 0 else 1)
