"""``warpmesh sim``: deterministic simulations over many seeds, each failure with its replay command."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from warpmesh.sim.harness import SimReport, sweep


def _seed_range(seed: int | None, seeds: int, start: int) -> range:
    if seed is not None:
        # --seed replays one seed: a sweep option next to it is a mistake, not something to ignore.
        ctx = click.get_current_context(silent=True)
        given = [f"--{n}" for n in ("seeds", "start") if ctx is not None
                 and ctx.get_parameter_source(n) not in (None, click.core.ParameterSource.DEFAULT)]
        if given:
            raise click.UsageError(f"--seed runs exactly one seed; drop {' and '.join(given)} (or drop --seed "
                                   "to sweep)")
        return range(seed, seed + 1)
    return range(start, start + seeds)


def run_sweep(name: str, run: Callable[[int], SimReport], seed_list: range, *, as_json: bool,
              fail_fast: bool) -> int:
    """Run a sweep with a progress bar (or JSON lines); return the process exit code."""
    console = Console(stderr=True)
    started = time.perf_counter()
    failures: list[SimReport] = []

    if as_json:
        def emit(r: SimReport) -> None:
            print(json.dumps(r.as_dict(), sort_keys=True), flush=True)
            if not r.ok:
                failures.append(r)

        reports = sweep(run, seed_list, on_report=emit, fail_fast=fail_fast)
    else:
        with Progress(TextColumn(f"[bold]sim {name}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                      console=console, transient=len(seed_list) == 1) as progress:
            task = progress.add_task(name, total=len(seed_list), failed=0)

            def tick(r: SimReport) -> None:
                if not r.ok:
                    failures.append(r)
                    progress.console.print(f"[red]seed {r.seed} failed[/red]: {r.failures[0]}")
                    progress.console.print(f"  replay: [bold]{r.replay}[/bold]")
                progress.update(task, advance=1, failed=len(failures))

            reports = sweep(run, seed_list, on_report=tick, fail_fast=fail_fast)
        elapsed = time.perf_counter() - started
        if len(reports) == 1:  # a replay: its report is the command's output, so stdout
            print(json.dumps(reports[0].as_dict(), sort_keys=True, indent=2), flush=True)
        console.print(f"{len(reports)} seed(s), {len(failures)} failed, {elapsed:.1f} s")
        for r in failures[:20]:
            console.print(f"  seed {r.seed}: {'; '.join(r.failures)}\n    replay: {r.replay}")
    return 1 if failures else 0


def seed_options(f: Callable[..., object]) -> Callable[..., object]:
    """The options every simulation command shares."""
    f = click.option("--fail-fast", is_flag=True, help="Stop at the first failing seed.")(f)
    f = click.option("--json", "as_json", is_flag=True, help="Print one JSON line per seed.")(f)
    f = click.option("--start", type=click.IntRange(min=0), default=0, show_default=True,
                     help="First seed of the sweep.")(f)
    f = click.option("--seeds", type=click.IntRange(min=1), default=100, show_default=True,
                     help="How many consecutive seeds to run.")(f)
    f = click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Run exactly this one seed (replays a reported failure).")(f)
    return f


@click.group()
def sim() -> None:
    """Deterministic simulations: many seeds, invariant checks, one-command replay of any failure."""


@sim.command("crdt")
@seed_options
@click.option("--peers", type=click.IntRange(min=2, max=64), default=5, show_default=True)
@click.option("--ops", type=click.IntRange(min=1), default=120, show_default=True,
              help="Random mutations per run.")
@click.option("--types", default="all", show_default=True,
              help="Comma-separated CRDT types to replicate (gcounter,pncounter,gset,orset,lww,"
                   "mvregister,ormap,ormap_counters,hll) or 'all'.")
@click.option("--no-crashes", is_flag=True, help="Never crash peers.")
@click.option("--no-partitions", is_flag=True, help="Never partition the network.")
@click.option("--max-drop", type=click.FloatRange(0.0, 0.9), default=0.3, show_default=True,
              help="Upper bound of the per-run random drop probability.")
def sim_crdt(seed: int | None, seeds: int, start: int, as_json: bool, fail_fast: bool, peers: int,
             ops: int, types: str, no_crashes: bool, no_partitions: bool, max_drop: float) -> None:
    """CRDT convergence: random mutations on every peer under random faults, then heal and quiesce.

    Checks that every replica is equal, and equal to the join of all mutations (bounded below by
    what surviving replicas minted when peers crash).
    """
    from warpmesh.sim.crdt import KIND_NAMES, run_crdt

    if types != "all":
        unknown = sorted(set(types.split(",")) - set(KIND_NAMES))
        if unknown:
            raise click.BadParameter(f"unknown type(s) {', '.join(unknown)}", param_hint="--types")

    def run(s: int) -> SimReport:
        return run_crdt(s, peers=peers, ops=ops, types=types, crashes=not no_crashes,
                        partitions=not no_partitions, max_drop=max_drop)

    sys.exit(run_sweep("crdt", run, _seed_range(seed, seeds, start), as_json=as_json, fail_fast=fail_fast))


@sim.command("warp")
@seed_options
@click.option("--peers", type=click.IntRange(min=3, max=128), default=8, show_default=True)
@click.option("--jobs", type=click.IntRange(min=3), default=1000, show_default=True)
@click.option("--no-churn", is_flag=True, help="Keep membership steady throughout (expect zero duplicates).")
@click.option("--strategy", type=click.Choice(["intent", "ring"]), default="intent", show_default=True)
@click.option("--ack-answers", is_flag=True,
              help="A client reads, checks and acknowledges answers as they land, so boards stay small.")
@click.option("--cell-size", type=click.IntRange(min=3), default=None,
              help="Split the peers into cells of about this many (WarpConfig.cell): each job is queued, run "
                   "and answered within one cell, forwarded there from any peer.")
def sim_warp(seed: int | None, seeds: int, start: int, as_json: bool, fail_fast: bool, peers: int, jobs: int,
             no_churn: bool, strategy: str, ack_answers: bool, cell_size: int | None) -> None:
    """Warp scheduling under churn: joins, leaves, crashes, restarts and partitions over lossy links.

    Checks zero lost jobs, zero wrong answers and zero duplicates at steady membership, and reports
    the duplicate rate under churn (summarised over the sweep).
    """
    from warpmesh.sim.warp import run_warp

    rates: list[float] = []
    err = Console(stderr=True)

    def run(s: int) -> SimReport:
        started = time.perf_counter()
        shown = 0.0

        def progress(enqueued: int, total: int, phase: str, virtual: float) -> None:
            # Big runs take minutes: a line on stderr every 10% (stdout stays the report).
            nonlocal shown
            if jobs >= 10_000 and (phase != "churn" or enqueued / total >= shown + 0.1):
                shown = enqueued / total
                err.print(f"sim warp seed {s}: {enqueued:,}/{total:,} jobs enqueued ({phase}), "
                          f"{virtual:.0f} s virtual, {time.perf_counter() - started:.0f} s", highlight=False)

        report = run_warp(s, peers=peers, jobs=jobs, churn=not no_churn, strategy=strategy,
                          ack_answers=ack_answers, cell_size=cell_size, on_progress=progress)
        if report.ok:
            rates.append(report.metrics["churn_duplicate_rate"])
        return report

    code = run_sweep("warp", run, _seed_range(seed, seeds, start), as_json=as_json, fail_fast=fail_fast)
    if rates and not as_json:
        ordered = sorted(rates)
        Console(stderr=True).print(
            f"duplicate rate under churn: median {ordered[len(ordered) // 2]:.2%}, "
            f"max {ordered[-1]:.2%} over {len(rates)} passing seed(s)")
    sys.exit(code)


# The Raft workload's command lives with the Raft area (warpmesh.cli.sim_raft).
from warpmesh.cli.sim_raft import sim_raft  # noqa: E402

sim.add_command(sim_raft)

# The game workload's command lives with the game area (warpmesh.cli.sim_game).
from warpmesh.cli.sim_game import sim_game  # noqa: E402

sim.add_command(sim_game)

# The planning workload's command lives with the planning area (warpmesh.cli.sim_planning).
from warpmesh.cli.sim_planning import sim_planning  # noqa: E402

sim.add_command(sim_planning)

from warpmesh.cli.sim_world import sim_world  # noqa: E402

sim.add_command(sim_world)
