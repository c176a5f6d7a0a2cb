"""``warpmesh jobs`` and ``warpmesh cancel``: see and stop the jobs of a running Warp mesh.

Both join the mesh for a moment as a ``role="client"`` peer (see :mod:`warpmesh.cli.client`) and
read its boards. ``jobs`` also asks every live worker what it runs right now (the inspect channel),
so a job's state is one of ``queued`` (nobody claimed it yet), ``claimed`` (a worker noted it will
run it), ``running`` (a worker reports it running), ``done``, ``failed`` or ``cancelled``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from warpmesh.cli.client import ClientError, MeshClient, _emit_json, _prepare, _run, client_options

#: The states ``warpmesh jobs --state`` accepts, in the order a job goes through them.
STATES = ("queued", "claimed", "running", "done", "failed", "cancelled")
#: The keys of each ``warpmesh jobs --json`` object (a contract).
JOB_KEYS = ("task", "op", "state", "owner", "since", "attempts", "error", "traceback")


def job_rows(warp: Any, running: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Every job the boards know, one dict with :data:`JOB_KEYS` each, sorted by task id."""
    by_run: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for peer, peer_rows in running.items():
        for r in peer_rows:
            by_run[(r["task"], r["run"])] = (peer, r)
    queued = dict(warp.queued())
    rows: list[dict[str, Any]] = []
    for task in sorted(set(queued) | set(warp.results)):
        desc = queued.get(task)
        res = warp.results.get(task)
        row = dict.fromkeys(JOB_KEYS)
        row["task"] = task
        if res is not None and (desc is None or desc.run == res.run):
            row.update(op=desc.op if desc is not None else (res.op or None), owner=res.by, attempts=res.attempts,
                       state="done" if res.ok else "cancelled" if res.cancelled else "failed")
            if not res.ok:
                row.update(error=res.error, traceback=res.traceback)
        elif desc is not None:
            row["op"] = desc.op
            hit = by_run.get((task, desc.run))
            claimants = sorted(warp.claimants(desc.run))
            if hit is not None:
                row.update(state="running", owner=hit[0], since=hit[1]["since"], attempts=hit[1]["attempts"])
            elif claimants:
                row.update(state="claimed", owner=claimants[0])
            else:
                row["state"] = "queued"
            row["attempts"] = row["attempts"] or 0
        rows.append(row)
    return rows


@click.command()
@click.option("--state", type=click.Choice(STATES), default=None, help="Only jobs in this state.")
@click.option("--op", default=None, help="Only jobs of this op.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most this many jobs.")
@click.option("--after", default=None, metavar="TASK", help="Only jobs whose task id sorts after TASK (paging).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per job: task, op, state, owner, since, attempts, error, traceback.")
@client_options
def jobs(state: str | None, op: str | None, limit: int | None, after: str | None, as_json: bool,
         to: tuple[str, int], listen: tuple[str, int] | None, connect_timeout: float, log_level: str,
         secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
    """List the mesh's jobs with their state, owner, running since, attempts and errors."""
    secret, tls = _prepare(log_level, secret_file, tls_cert, tls_key, tls_ca)

    async def main() -> list[dict[str, Any]]:
        async with MeshClient(to, listen=listen, secret=secret, tls=tls, connect_timeout=connect_timeout) as client:
            await client.sync()
            running = await client.warp.inspect(sorted(client.warp.workers), timeout=min(2.0, connect_timeout))
            return job_rows(client.warp, running)

    rows = _run(main())
    rows = [r for r in rows if (state is None or r["state"] == state) and (op is None or r["op"] == op)
            and (after is None or r["task"] > after)]
    if limit is not None:
        rows = rows[:limit]
    if as_json:
        for r in rows:
            _emit_json(r)
        return
    _print_jobs(rows)


def _print_jobs(rows: list[dict[str, Any]]) -> None:
    import time

    def since(r: dict[str, Any]) -> str:
        return f"{max(0.0, time.time() - r['since']):.1f}s ago" if isinstance(r["since"], int | float) else ""

    if not sys.stdout.isatty():
        for r in rows:
            sys.stdout.write("\t".join((r["task"], r["op"] or "", r["state"], r["owner"] or "", since(r),
                                        str(r["attempts"]), (r["error"] or "").replace("\n", " "))) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("task", "op", "state", "owner", "since", "tries", "error"):
        table.add_column(col, overflow="fold" if col == "error" else "ellipsis")
    colours = {"done": "green", "failed": "red", "cancelled": "magenta", "running": "cyan", "claimed": "yellow",
               "queued": "white"}
    for r in rows:
        table.add_row(r["task"], r["op"] or "", f"[{colours[r['state']]}]{r['state']}[/]", r["owner"] or "",
                      since(r), str(r["attempts"]), r["error"] or "")
    console = Console(highlight=False)
    console.print(table)
    if not rows:
        console.print("no jobs")


@click.command()
@click.argument("tasks", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help='One JSON object per task: {"task", "state"}.')
@client_options
def cancel(tasks: tuple[str, ...], as_json: bool, to: tuple[str, int], listen: tuple[str, int] | None,
           connect_timeout: float, log_level: str, secret_file: Path | None, tls_cert: Path | None,
           tls_key: Path | None, tls_ca: Path | None) -> None:
    """Cancel TASKs: a queued job is removed, a running one interrupted (process and async jobs are
    stopped; inline and thread jobs are told and their result discarded); the answer records
    `cancelled`. Exit 0 when every task was cancelled or already done, 1 naming unknown tasks."""
    secret, tls = _prepare(log_level, secret_file, tls_cert, tls_key, tls_ca)

    async def main() -> dict[str, str]:
        async with MeshClient(to, listen=listen, secret=secret, tls=tls, connect_timeout=connect_timeout) as client:
            await client.sync()
            states = {t: client.warp.cancel(t) for t in dict.fromkeys(tasks)}
            if "cancelled" in states.values():
                await client.replicated(client.warp.results_board, "the cancels")
            # A mesh of cells: tasks of other cells are cancelled in their cells.
            states.update(await client.warp.router.cancel([t for t, st in states.items() if st == "unknown"],
                                                          timeout=connect_timeout))
            return states

    states = _run(main())
    for task, st in states.items():
        if as_json:
            _emit_json({"task": task, "state": st})
        else:
            sys.stdout.write(f"{task}\t{st}\n")
    unreachable = [t for t, st in states.items() if st == "unreachable"]
    if unreachable:
        raise ClientError(f"no peer of the cell of {', '.join(unreachable)} answered; retry, or cancel through a "
                          "peer of that cell (see `warpmesh status`)")
    unknown = [t for t, st in states.items() if st == "unknown"]
    if unknown:
        raise ClientError(f"unknown task(s): {', '.join(unknown)}; list the mesh's jobs with `warpmesh jobs`")
