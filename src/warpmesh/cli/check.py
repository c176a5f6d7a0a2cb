"""``warpmesh check`` (a recipe's check in many worktrees, as command jobs on a local mesh) and
``warpmesh cache ls|gc`` (the warm caches of this machine)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

RECIPES = ["cargo", "cargo-build", "cargo-test", "wheelhouse"]
_ROW_KEYS = ("worktree", "status", "exit_code", "seconds", "rebuilt", "fresh", "warm")


def _cache_option(fn: Any) -> Any:
    return click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), envvar="WARPMESH_WARM",
                        default=None, help="Warm cache root (default: $WARPMESH_WARM or the per-user cache dir).")(fn)


@click.command()
@click.argument("worktrees", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--speculative", is_flag=True, default=False,
              help="Warm the recipe's cache once (concurrently with mesh start-up) and seed every job's own "
                   "build directory from it. Off: every worktree builds from an empty directory.")
@click.option("--recipe", type=click.Choice(RECIPES), default="cargo", show_default=True, help="What to check with.")
@click.option("--warm-from", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Workspace to warm from (default: the first worktree).")
@click.option("--jobs", type=click.IntRange(min=1, max=64), default=None,
              help="Checks running at once (default: one per worktree, at most 4).")
@click.option("--deadline", type=click.FloatRange(min=0.1), default=600.0, show_default=True,
              help="Seconds per check; the check's whole process group is killed after it.")
@click.option("--warm-timeout", type=click.FloatRange(min=0.1), default=600.0, show_default=True,
              help="Seconds for the warm-up; a job waits for it only while it runs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per worktree, then a summary line.")
@_cache_option
def check(worktrees: tuple[Path, ...], speculative: bool, recipe: str, warm_from: Path | None, jobs: int | None,
          deadline: float, warm_timeout: float, as_json: bool, cache_dir: Path | None) -> None:
    """Run the recipe's check in every WORKTREE as command jobs on a local mesh.

    Prints, per worktree, the status (passed, failed, error), the exit code, the seconds and how
    many units were rebuilt vs fresh, then a summary. Exit status 0 when every worktree passed.
    """
    from warpmesh.workers.warmcore import WorkerConfig

    config = WorkerConfig(speculative=speculative, cache_dir=str(cache_dir) if cache_dir else None,
                          warm_timeout=warm_timeout)
    source = (warm_from or worktrees[0]).resolve()
    start = time.monotonic()
    rows, warm_status = _run_checks(config, recipe, source, [w.resolve() for w in worktrees],
                                    jobs or min(len(worktrees), 4), deadline)
    summary = {"worktrees": len(rows), "passed": sum(r["status"] == "passed" for r in rows),
               "failed": sum(r["status"] != "passed" for r in rows),
               "seconds": round(time.monotonic() - start, 3), "warm_status": warm_status}
    if as_json:
        for r in rows:
            sys.stdout.write(json.dumps({k: r[k] for k in _ROW_KEYS}) + "\n")
        sys.stdout.write(json.dumps({"summary": summary}) + "\n")
    else:
        _print(rows, summary)
    if summary["failed"]:
        sys.exit(1)


def _run_checks(config: Any, recipe: str, source: Path, worktrees: list[Path], jobs: int,
                deadline: float) -> tuple[list[dict[str, Any]], str]:
    import asyncio
    import threading

    from warpmesh.net.memory import MemoryFabric
    from warpmesh.warp import WarpConfig, WarpNode
    from warpmesh.workers.commands import COMMAND_CHECK_OP, CommandWorkers
    from warpmesh.workers.warmcore import WarmStatus

    workers = CommandWorkers(config)
    warm_report: list[Any] = []
    # Warming starts first and runs beside mesh start-up and enqueueing; jobs needing the same
    # key join this one flight (and wait only while it runs).
    warmer = threading.Thread(target=lambda: warm_report.append(workers.warm_now(recipe, source)), daemon=True)
    warmer.start()

    async def main() -> list[dict[str, Any]]:
        fabric = MemoryFabric(seed=0)
        node = WarpNode(fabric.join("check"), registry=workers.registry,
                        config=WarpConfig(max_concurrency=jobs, steal=False))
        workers.bind(node)
        await node.start()
        try:
            tasks = [f"check-{i}" for i in range(len(worktrees))]
            for t, wt in zip(tasks, worktrees, strict=True):
                await node.enqueue(t, COMMAND_CHECK_OP, {"worktree": str(wt), "recipe": recipe,
                                                         "warm_from": str(source), "deadline": deadline})
            out = []
            for t, wt in zip(tasks, worktrees, strict=True):
                res = await node.result(t, timeout=deadline + config.warm_timeout + 60)
                if res.ok and isinstance(res.value, dict):
                    out.append(res.value)
                else:
                    out.append({"worktree": str(wt), "status": "error", "exit_code": None, "seconds": 0.0,
                                "rebuilt": 0, "fresh": 0, "warm": False, "error": res.error})
            return out
        finally:
            await node.close()
            await fabric.close()

    rows = asyncio.run(main())
    warmer.join(timeout=config.warm_timeout + 5)
    status = warm_report[0].status.value if warm_report else WarmStatus.UNAVAILABLE.value
    if warm_report and warm_report[0].status is WarmStatus.UNAVAILABLE:
        click.echo(f"warpmesh check: warm boot unavailable ({warm_report[0].reason}); checks ran cold", err=True)
    return rows, status


def _print(rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("worktree", "status", "exit", "seconds", "rebuilt", "fresh", "warm"):
        table.add_column(col, justify="left" if col in ("worktree", "status") else "right")
    colours = {"passed": "green", "failed": "red", "error": "yellow"}
    for r in rows:
        table.add_row(r["worktree"], f"[{colours[r['status']]}]{r['status']}[/]", str(r["exit_code"]),
                      f"{r['seconds']:.2f}", str(r["rebuilt"]), str(r["fresh"]), "yes" if r["warm"] else "no")
    console.print(table)
    console.print(f"{summary['passed']}/{summary['worktrees']} passed in {summary['seconds']:.2f} s "
                  f"(warm boot: {summary['warm_status']})")
    for r in rows:
        if r["status"] != "passed" and (r.get("stderr_tail") or r.get("error")):
            console.print(f"[bold]{r['worktree']}[/]:\n{r.get('error') or r.get('stderr_tail')}", markup=False)


@click.group()
def cache() -> None:
    """This machine's warm caches: list them, collect old ones."""


@cache.command("ls")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@_cache_option
def cache_ls(as_json: bool, cache_dir: Path | None) -> None:
    """List warm caches: content key, recipe, size, last use."""
    from warpmesh.workers.warm import WarmCache

    wc = WarmCache(cache_dir)
    entries = wc.entries()
    if as_json:
        sys.stdout.write(json.dumps({"root": str(wc.root), "caches": entries}) + "\n")
        return
    if not entries:
        click.echo(f"no warm caches under {wc.root}")
    for e in entries:
        age = time.time() - e["last_used"]
        click.echo(f"{e['key']}  {e['recipe']}  {e['size'] / 1e6:.1f} MB  used {age / 3600:.1f} h ago  {e['workspace']}")


@cache.command("gc")
@click.option("--max-size", "max_mb", type=click.FloatRange(min=0), default=None,
              help="Keep at most this many MB of caches (least recently used go first).")
@click.option("--max-age", "max_days", type=click.FloatRange(min=0), default=14.0, show_default=True,
              help="Delete caches unused for this many days.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@_cache_option
def cache_gc(max_mb: float | None, max_days: float, as_json: bool, cache_dir: Path | None) -> None:
    """Delete warm caches by age and size (a cache being warmed or seeded is never deleted)."""
    from warpmesh.workers.warm import WarmCache

    wc = WarmCache(cache_dir)
    deleted = wc.gc(max_bytes=None if max_mb is None else int(max_mb * 1e6), max_age=max_days * 86400)
    if as_json:
        sys.stdout.write(json.dumps({"root": str(wc.root), "deleted": deleted, "kept": wc.keys()}) + "\n")
        return
    click.echo(f"deleted {len(deleted)} cache(s), kept {len(wc.keys())} under {wc.root}")
