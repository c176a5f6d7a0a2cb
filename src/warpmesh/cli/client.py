"""``warpmesh submit``, ``warpmesh results`` and ``warpmesh status``: use a running Warp mesh.

A thin layer over the library's :mod:`warpmesh.client` (``MeshClient``, job ids, jobs files,
batched submission). Each command joins the mesh for a moment, through the peer named by ``--to``, as a
:class:`~warpmesh.warp.WarpNode` with ``role="client"``: it enqueues and reads like any peer but
never runs a task and is not on the ring. Before reading, it pulls every board from that peer
(:meth:`~warpmesh.warp.WarpNode.sync_from`) so it never reports a half-received board; ``status``
also waits (briefly) until it sees the same live workers as that peer. On the way out it removes
its entry from the members board and leaves with an orderly goodbye.

Job arguments on the command line (``submit OP ARGS...``) are the op's positional arguments:
``submit add 2 3`` calls ``add(2, 3)``. Each ARG is parsed as JSON if it is valid JSON (``7``,
``true``, ``null``, ``"7"``, ``[1,2]``, ``{"a":1}``) and is taken as a plain string otherwise
(``hello``, ``/tmp/x.png``). ``--kw name=VALUE`` adds a keyword argument (VALUE parsed the same
way), ``--args-json '[...]'`` gives the positional list (a non-list value is one argument). Task ids
default to a content hash of ``(op, args, pin)`` (and the keyword arguments, when there are any), so
submitting the same job twice names the same task (and runs it again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from warpmesh.cli.common import _addr_callback, load_mesh_security, mesh_options, setup_logging
from warpmesh.client import (  # noqa: F401  (re-exported: the CLI's tests and `jobs` import them from here)
    BATCH_BYTES,
    BATCH_JOBS,
    MAX_ARGS_BYTES,
    VIEW_GRACE,
    Job,
    SubmitOutcome,
    _reject_constant,
    batches,
    canonical_json,
    check_job,
    content_task_id,
    dedupe,
    jsonable,
    mesh_status,
    parse_arg,
    parse_job_line,
    read_jobs,
    result_record,
    submit_jobs,
    unserved,
)
from warpmesh.client import MeshClient as _LibraryClient
from warpmesh.errors import WarpmeshError


class ClientError(WarpmeshError, click.ClickException):
    """A failure talking to the mesh: one line naming what to do next; exit status 1."""


class MeshClient(_LibraryClient):
    """:class:`warpmesh.client.MeshClient` with the CLI's errors: exit 1, or 2 for a bad address."""

    error = ClientError

    async def __aenter__(self) -> MeshClient:
        from warpmesh.net.secret import InsecureAddressError

        try:
            await super().__aenter__()
        except InsecureAddressError as err:  # a bad combination of arguments: exit 2 (issue 9)
            raise click.UsageError(str(err)) from None
        return self


def cli_args(args: Iterable[str], args_json: str | None) -> list[Any]:
    """The positional arguments of ``submit OP ARGS...`` (see the module docstring)."""
    given = list(args)
    if args_json is not None:
        if given:
            raise click.UsageError("give either ARGS or --args-json, not both")
        try:
            value = json.loads(args_json, parse_constant=_reject_constant)
        except ValueError as err:
            raise click.BadParameter(f"not valid JSON: {err}", param_hint="--args-json") from None
        return value if isinstance(value, list) else [value]
    return [parse_arg(a) for a in given]


def cli_kwargs(items: Iterable[str]) -> dict[str, Any]:
    """``--kw name=VALUE`` options as a dict (VALUE parsed as an ARG is)."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise click.BadParameter(f"expected NAME=VALUE with NAME a Python identifier, got {item!r}",
                                     param_hint="--kw")
        if name in out:
            raise click.BadParameter(f"{name} is given twice", param_hint="--kw")
        out[name] = parse_arg(value)
    return out


# -- output helpers ------------------------------------------------------------------------------
def render_value(value: Any) -> str:
    """Compact text for a value: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(jsonable(value), ensure_ascii=False,
                                                           separators=(",", ":"))


def _emit_json(rec: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")


def _note(message: str) -> None:
    """A message for the person at the terminal (stderr, unwrapped, no markup)."""
    click.echo(message, err=True)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def client_options(f: Any) -> Any:
    """--to, --listen and --connect-timeout, plus the mesh security options."""
    f = mesh_options(f)
    f = click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
                     help="Seconds to wait for the peer: link, boards, acknowledgements.")(f)
    f = click.option("--listen", callback=_addr_callback, metavar="HOST:PORT", default=None,
                     help="Address the mesh can reach this client on (default: this machine's address "
                          "towards --to, any free port).")(f)
    f = click.option("--to", "to", required=True, callback=_addr_callback, metavar="HOST:PORT", envvar="WARPMESH_TO",
                     help="Any live peer of the mesh (a `warpmesh node`; default: $WARPMESH_TO).")(f)
    return f


def _prepare(log_level: str, secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
             tls_ca: Path | None) -> tuple[bytes | None, Any]:
    import logging

    setup_logging(log_level)
    if log_level in ("warning", "error"):
        # Refusals and dial failures are reported as this command's own one-line error.
        logging.getLogger("warpmesh.net.tcp").setLevel(logging.ERROR)
    return load_mesh_security(secret_file, tls_cert, tls_key, tls_ca)


def _run(coro: Any, interrupted: str = "interrupted") -> Any:
    """Run a command's coroutine; Ctrl-C cancels it (commands print partial progress and exit 130)."""

    async def main() -> Any:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, task.cancel)
        return await coro

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        click.echo(f"warpmesh: {interrupted}", err=True)
        sys.exit(130)


# -- submit --------------------------------------------------------------------------------------
def _print_submit(outcome: SubmitOutcome, *, wait: bool, as_json: bool, single: bool) -> int:
    """Print the outcome; returns the exit status (0: every job answered successfully)."""
    if not wait:
        for job in outcome.jobs:
            if as_json:
                _emit_json({"task": job.task, "run": outcome.runs[job.task], "enqueued": True})
            else:
                sys.stdout.write(job.task + "\n")
        if not as_json:
            _note(f"enqueued {len(outcome.jobs)} job(s); fetch answers with `warpmesh results --to ...`")
        return 0
    failed = 0
    missing = 0
    for job in outcome.jobs:
        res = outcome.answers.get(job.task)
        if res is None:
            missing += 1
            if as_json:
                _emit_json({"task": job.task, "run": outcome.runs[job.task], "pending": True})
            continue
        failed += not res.ok
        if as_json:
            _emit_json(result_record(job.task, res))
        elif single:
            if res.ok:
                sys.stdout.write(render_value(res.value) + "\n")
            else:
                what = "was cancelled" if res.cancelled else f"failed on {res.by} after {res.attempts} attempt(s)"
                _note(f"task {job.task} {what}: {res.error}")
                if res.traceback:
                    _note("remote traceback:\n" + res.traceback.rstrip())
        elif res.ok:
            sys.stdout.write(f"{job.task}\t{render_value(res.value)}\n")
        else:
            sys.stdout.write(f"{job.task}\tFAILED: {res.error}\n")
    sys.stdout.flush()
    if missing:
        _note(f"timed out: {len(outcome.jobs) - missing} of {len(outcome.jobs)} jobs answered; the other "
                  f"{missing} stay queued and keep running (fetch their answers with `warpmesh results`)")
    elif not single and not as_json:
        _note(f"{len(outcome.jobs)} jobs answered: {len(outcome.jobs) - failed} ok, {failed} failed")
    return 1 if failed or missing else 0


@click.command()
@click.argument("op", required=False)
@click.argument("args", nargs=-1)
@click.option("--args-json", default=None, metavar="JSON",
              help="The op's positional arguments as a JSON list (a non-list value is one argument).")
@click.option("--kw", "kw", multiple=True, metavar="NAME=VALUE",
              help="A keyword argument of the op (repeatable); VALUE is parsed as an ARG is.")
@click.option("--deadline", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Cancel each job that has not finished this many seconds after it was submitted.")
@click.option("--task", "task_id", default=None, help="Task id (default: a content hash of op, args and pin).")
@click.option("--pin", default=None, metavar="NODE", help="Run only on this node (it waits while the node is away).")
@click.option("--file", "jobs_file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              default=None, help='JSON lines, one job each: {"op": ..., "args": ..., "task": ..., "pin": ...} '
                                 "('-' reads stdin).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for the answers and print them, or print the task ids and return.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop waiting after this many seconds (default: no limit); unanswered jobs keep running.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per job.")
@click.option("--allow-unserved", is_flag=True,
              help="Queue jobs whose op (or pin) no live worker serves yet, for a worker that will.")
@client_options
def submit(op: str | None, args: tuple[str, ...], args_json: str | None, kw: tuple[str, ...], deadline: float | None,
           task_id: str | None, pin: str | None,
           jobs_file: Path | None, wait: bool, timeout: float | None, as_json: bool, allow_unserved: bool,
           to: tuple[str, int],
           listen: tuple[str, int] | None, connect_timeout: float, log_level: str, secret_file: Path | None,
           tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None) -> None:
    """Submit jobs to a running mesh: `submit --to HOST:PORT OP [ARGS...]` or `--file jobs.jsonl`.

    The ARGS are the op's positional arguments (`submit add 2 3` calls add(2, 3)), each parsed as
    JSON if it is valid JSON, else taken as a string; `--kw name=VALUE` adds keyword arguments.
    Exit status: 0 when every job was answered without
    error, 1 when a job failed, timed out or the mesh could not be reached, 2 for bad input.
    """
    if jobs_file is not None:
        if op is not None or args_json is not None or task_id is not None or pin is not None or kw:
            raise click.UsageError("--file cannot be combined with OP/ARGS, --args-json, --kw, --task or --pin")
        name = "<stdin>" if str(jobs_file) == "-" else str(jobs_file)
        try:
            if str(jobs_file) == "-":
                jobs = read_jobs(sys.stdin, name)
            else:
                with open(jobs_file, encoding="utf-8") as fh:
                    jobs = read_jobs(fh, name)
        except OSError as err:
            raise click.BadParameter(f"cannot read {name}: {err.strerror or err}", param_hint="--file") from None
        except UnicodeDecodeError as err:
            raise click.BadParameter(f"{name} is not UTF-8 text ({err.reason})", param_hint="--file") from None
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--file") from None
        if not jobs:
            raise click.BadParameter(f"{name} holds no jobs", param_hint="--file")
    else:
        if op is None:
            raise click.UsageError("name an OP (and its ARGS), or give --file jobs.jsonl")
        value = cli_args(args, args_json)
        kwargs = cli_kwargs(kw) or None
        job = Job(task=task_id or content_task_id(op, value, pin, kwargs), op=op, args=value, pin=pin, kwargs=kwargs)
        try:
            check_job(job)
        except ValueError as err:
            raise click.UsageError(str(err)) from None
        jobs = [job]
    try:
        jobs, dropped = dedupe(jobs)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--file") from None
    secret, tls = _prepare(log_level, secret_file, tls_cert, tls_key, tls_ca)
    if dropped and not as_json:
        _note(f"{dropped} repeated job(s) dropped (identical task, op and args)")

    async def main() -> int:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        err = _stderr_console()
        show = len(jobs) > 1 and err.is_terminal
        progress = Progress(TextColumn("{task.description:>12}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=err, transient=True, disable=not show)
        async with MeshClient(to, listen=listen, secret=secret, tls=tls, connect_timeout=connect_timeout,
                              board_history=False) as client:
            # Results stream to us as deltas, so only the members board is pulled before submitting;
            # seeing the same workers as the peer means every runner's answer comes straight here.
            await client.sync(boards="members")
            agree = await client.views_agree()
            if agree and not allow_unserved:
                problem = unserved(client, jobs)
                if problem is not None:
                    raise ClientError(f"{problem}; nothing was submitted (--allow-unserved queues such jobs "
                                      "for a worker that will serve them)")
            with progress:
                outcome = await submit_jobs(client, jobs, wait=wait, timeout=timeout, progress=progress,
                                            deadline=deadline)
            return _print_submit(outcome, wait=wait, as_json=as_json, single=len(jobs) == 1 and jobs_file is None)

    sys.exit(_run(main(), "interrupted: the jobs already submitted keep running on the mesh; see them with "
                          "`warpmesh jobs`, fetch answers with `warpmesh results` or stop them with "
                          "`warpmesh cancel TASK...`"))


# -- results -------------------------------------------------------------------------------------
@click.command()
@click.argument("tasks", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per task.")
@click.option("--ack", is_flag=True, help="Acknowledge (remove from every peer) the answers printed.")
@client_options
def results(tasks: tuple[str, ...], as_json: bool, ack: bool, to: tuple[str, int], listen: tuple[str, int] | None,
            connect_timeout: float, log_level: str, secret_file: Path | None, tls_cert: Path | None,
            tls_key: Path | None, tls_ca: Path | None) -> None:
    """Print answers from the mesh's results board (all of them, or the TASKs named).

    A task named but not answered shows as `pending` (still queued) or `unknown`; a failed task
    named shows its remote traceback (`--json` always carries it). Exit status 0
    when every task named has an answer, 1 otherwise.
    """
    secret, tls = _prepare(log_level, secret_file, tls_cert, tls_key, tls_ca)

    async def main() -> int:
        async with MeshClient(to, listen=listen, secret=secret, tls=tls, connect_timeout=connect_timeout) as client:
            await client.sync()
            warp = client.warp
            queued = dict(warp.queued())
            wanted = list(dict.fromkeys(tasks)) if tasks else sorted(warp.results)
            # Tasks of other cells (a mesh of cells): asked of their cells.
            far, far_queued = await warp.router.fetch([t for t in wanted if t not in warp.results and t not in queued],
                                                      timeout=connect_timeout)
            rows: list[dict[str, Any]] = []
            for t in wanted:
                res = warp.results.get(t) or far.get(t)
                if res is not None and (t not in queued or queued[t].run == res.run):
                    rows.append(result_record(t, res))
                elif t in queued:
                    rows.append({"task": t, "pending": True, "run": queued[t].run})
                elif t in far_queued:
                    rows.append({"task": t, "pending": True, "run": far_queued[t]})
                else:
                    rows.append({"task": t, "unknown": True})
            _print_results(rows, as_json)
            if tasks and not as_json:
                for r in rows:
                    if r.get("traceback"):
                        sys.stdout.write(f"--- {r['task']}: remote traceback ---\n{r['traceback'].rstrip()}\n")
            answered = [r["task"] for r in rows if "ok" in r]
            if ack and answered:
                for t in answered:
                    warp.ack(t)
                await client.replicated(warp.results_board, "the acknowledgements")
                if not await warp.router.acks_sent(connect_timeout):
                    raise ClientError("no peer of a task's cell confirmed its acknowledgement in time; "
                                         "run `warpmesh results --ack` again")
                if not as_json:
                    _note(f"acknowledged {len(answered)} answer(s)")
            return 0 if len(answered) == len(rows) or not tasks else 1

    sys.exit(_run(main()))


def _print_results(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for r in rows:
            _emit_json(r)
        sys.stdout.flush()
        return

    def status_and_text(r: dict[str, Any]) -> tuple[str, str]:
        if r.get("pending"):
            return "pending", ""
        if r.get("unknown"):
            return "unknown", ""
        if r["ok"]:
            return "ok", render_value(r["value"])
        return "cancelled" if r.get("cancelled") else "failed", str(r["error"])

    if not sys.stdout.isatty():
        for r in rows:
            status, text = status_and_text(r)
            sys.stdout.write("\t".join((r["task"], status, text.replace("\n", " "), r.get("by", ""))) + "\n")
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("task", "status", "answer", "by", "tries"):
        table.add_column(col, overflow="fold" if col == "answer" else "ellipsis")
    colours = {"ok": "green", "failed": "red", "cancelled": "magenta", "pending": "yellow", "unknown": "dim"}
    for r in rows:
        status, text = status_and_text(r)
        table.add_row(r["task"], f"[{colours[status]}]{status}[/]", text if len(text) <= 200 else text[:197] + "...",
                      r.get("by", ""), str(r.get("attempts", "")))
    console = Console(highlight=False)
    console.print(table)
    if not rows:
        console.print("no answers on the board")


# -- status --------------------------------------------------------------------------------------
@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@client_options
def status(as_json: bool, to: tuple[str, int], listen: tuple[str, int] | None, connect_timeout: float,
           log_level: str, secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
           tls_ca: Path | None) -> None:
    """Show the mesh: peers, live workers, ring shares, queue depth, claims and mesh-wide counters."""
    secret, tls = _prepare(log_level, secret_file, tls_cert, tls_key, tls_ca)

    async def main() -> dict[str, Any]:
        async with MeshClient(to, listen=listen, secret=secret, tls=tls, connect_timeout=connect_timeout) as client:
            await client.sync()
            agree = await client.views_agree()
            return mesh_status(client, agree, await client.warp.router.counts(connect_timeout))

    snap = _run(main())
    if as_json:
        _emit_json(snap)
        return
    _print_status(snap)


def _print_status(snap: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    c = snap["counters"]
    console.print(f"[bold]mesh via {snap['entry']}[/]: {len(snap['live_workers'])} live worker(s), "
                  f"queue {snap['queue_depth']} ({snap['claimed']} claimed"
                  + (f", {snap['unowned']} with no live owner" if snap["unowned"] else "")
                  + f"), {snap['results']} answer(s) on the board")
    table = Table(box=None, pad_edge=False, header_style="bold")
    # A mesh of cells: a cell column, and the ring shares and queue are the entry's cell's.
    cells = any(p.get("cell") is not None for p in snap["peers"])
    for col in ("peer", *(("cell",) if cells else ()), "role", "state", "ring share", "queued", "claimed",
                "executions", "failures"):
        table.add_column(col, justify="left" if col in ("peer", "cell", "role", "state") else "right")
    colours = {"live": "green", "away": "red", "unresponsive": "yellow", "lost": "red"}
    for p in snap["peers"]:
        colour = colours.get(p["state"], "white")
        table.add_row(p["peer"], *((str(p.get("cell") or "-"),) if cells else ()), p["role"],
                      f"[{colour}]{p['state']}[/]",
                      f"{100 * p['ring_share']:.1f}%" if p["role"] == "worker" else "",
                      str(p["queued"]), str(p["claimed"]), str(p["executions"]), str(p["failures"]))
    console.print(table)
    console.print("mesh-wide: " + ", ".join(f"{name} {c[name]}" for name in c))
    for p in (p for p in snap["peers"] if p.get("warm")):
        console.print(f"warm on {p['peer']}: " + ", ".join(p["warm"]))
    if not snap["views_agree"]:
        console.print(f"[yellow]note:[/] this client does not see the same live workers as {snap['entry']} "
                      f"(a peer joining or leaving, or one this machine cannot reach)")
