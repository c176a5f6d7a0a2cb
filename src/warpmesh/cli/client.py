"""``warpmesh submit``, ``warpmesh results`` and ``warpmesh status``: use a running Warp mesh.

Each command joins the mesh for a moment, through the peer named by ``--to``, as a
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
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from warpmesh.cli.common import _addr_callback, load_mesh_security, mesh_options, setup_logging
from warpmesh.errors import WarpmeshError

#: Largest packed args of one job (a descriptor must fit a mesh frame with room to spare).
MAX_ARGS_BYTES = 4 * 1024 * 1024
#: Jobs per acknowledged batch when submitting (and at most this many bytes of args).
BATCH_JOBS = 2000
BATCH_BYTES = 1024 * 1024
#: How long ``status`` waits for this client's view of the live workers to match its peer's.
VIEW_GRACE = 5.0

_QUIET_REFUSALS = frozenset({"duplicate_link", "self_connection", "shutting_down"})
_REFUSAL_HELP = {
    "bad_secret": "the cluster secrets differ; use the mesh's secret (--secret-file FILE or $WARPMESH_SECRET)",
    "version": "the two sides speak incompatible protocol versions; run the same warpmesh version",
    "duplicate_id": "another peer uses this client's id; retry",
    "stale_incarnation": "a newer incarnation of this client's id is linked; retry",
    "protocol": "the peer did not speak the mesh protocol (is it a warpmesh node? do the TLS options match?)",
    "timeout": "the handshake timed out (an overloaded peer, or mismatched TLS options)",
    "overloaded": "the peer has too many handshakes in flight; retry shortly",
}


class ClientError(WarpmeshError, click.ClickException):
    """A failure talking to the mesh: one line naming what to do next; exit status 1."""


# -- jobs: parsing and validation (pure) ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Job:
    """One job to submit: ``where`` names its origin for error messages (``jobs.jsonl:17``)."""

    task: str
    op: str
    args: list[Any]
    pin: str | None = None
    where: str = "command line"
    kwargs: dict[str, Any] | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_arg(text: str) -> Any:
    """One command-line ARG: its JSON value if it is valid JSON, else the string itself."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text


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


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_task_id(op: str, args: Any, pin: str | None = None, kwargs: dict[str, Any] | None = None) -> str:
    """``OP-<16 hex>``: a BLAKE3 hash of the canonical JSON of ``[op, args, pin]`` (plus ``kwargs``
    when there are any)."""
    import blake3

    key = [op, args, pin] + ([kwargs] if kwargs else [])
    digest = blake3.blake3(b"warpmesh.task\x00" + canonical_json(key).encode()).hexdigest()
    return f"{op}-{digest[:16]}"


def check_job(job: Job) -> None:
    """Raise ValueError naming ``job.where`` if the job cannot travel (not msgpack-able, too big)."""
    from warpmesh.wire.frame import pack

    if not job.op:
        raise ValueError(f"{job.where}: op must be a non-empty string")
    if not job.task:
        raise ValueError(f"{job.where}: task must be a non-empty string")
    try:
        size = len(pack([job.args, job.kwargs or {}]))
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{job.where}: args cannot be encoded ({err}); integers must fit in 64 bits") from None
    if size > MAX_ARGS_BYTES:
        raise ValueError(f"{job.where}: args take {size / 2**20:.1f} MiB, over the "
                         f"{MAX_ARGS_BYTES // 2**20} MiB limit; pass a reference (a path or URL) instead")


def parse_job_line(line: str, where: str) -> Job:
    """One line of a jobs file: ``{"op": ..., "args": [...], "kwargs": {...}, "task": ..., "pin": ...}``.

    ``args`` is the list of positional arguments; a non-list value is one argument (older files).
    """
    try:
        obj = json.loads(line, parse_constant=_reject_constant)
    except ValueError as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object like {{\"op\": \"name\", \"args\": ...}}")
    unknown = sorted(set(obj) - {"op", "args", "kwargs", "task", "pin"})
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} (allowed: task, op, args, kwargs, pin)")
    op = obj.get("op")
    if not isinstance(op, str) or not op:
        raise ValueError(f"{where}: \"op\" must be a non-empty string")
    pin = obj.get("pin")
    if pin is not None and (not isinstance(pin, str) or not pin):
        raise ValueError(f"{where}: \"pin\" must be a peer id (a non-empty string)")
    args = obj.get("args", [])
    args = args if isinstance(args, list) else [args]
    kwargs = obj.get("kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"{where}: \"kwargs\" must be an object of keyword arguments")
    task = obj.get("task")
    if task is None:
        task = content_task_id(op, args, pin, kwargs)
    elif not isinstance(task, str) or not task:
        raise ValueError(f"{where}: \"task\" must be a non-empty string")
    job = Job(task=task, op=op, args=args, pin=pin, where=where, kwargs=kwargs or None)
    check_job(job)
    return job


def read_jobs(stream: TextIO, name: str) -> list[Job]:
    """Every job of a JSON-lines stream (blank lines and ``#`` comments skipped); ValueError names the line."""
    jobs: list[Job] = []
    for n, line in enumerate(stream, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        jobs.append(parse_job_line(text, f"{name}:{n}"))
    return jobs


def dedupe(jobs: list[Job]) -> tuple[list[Job], int]:
    """Drop repeats of an identical job (same task, op, args, pin); a task id reused for a
    different job is an error naming both lines. Returns the jobs in first-seen order and the
    number dropped."""
    seen: dict[str, Job] = {}
    out: list[Job] = []
    for job in jobs:
        prev = seen.get(job.task)
        if prev is None:
            seen[job.task] = job
            out.append(job)
        elif ((prev.op, canonical_json([prev.args, prev.kwargs]), prev.pin)
              != (job.op, canonical_json([job.args, job.kwargs]), job.pin)):
            raise ValueError(f"{job.where}: task {job.task!r} was already given for another job at {prev.where}")
    return out, len(jobs) - len(out)


def batches(jobs: list[Job], max_jobs: int = BATCH_JOBS, max_bytes: int = BATCH_BYTES) -> Iterator[list[Job]]:
    """Consecutive runs of jobs small enough to travel as one acknowledged delta."""
    from warpmesh.wire.frame import pack

    batch: list[Job] = []
    size = 0
    for job in jobs:
        cost = len(pack([job.args, job.kwargs or {}])) + len(job.task) + len(job.op) + 64
        if batch and (len(batch) >= max_jobs or size + cost > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(job)
        size += cost
    if batch:
        yield batch


# -- output helpers ------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """A JSON-encodable copy of a msgpack value: bytes become ``{"$base64": "..."}``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {k if isinstance(k, str) else canonical_json(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def render_value(value: Any) -> str:
    """Compact text for a value: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(jsonable(value), ensure_ascii=False,
                                                           separators=(",", ":"))


def result_record(task: str, res: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"task": task, "ok": res.ok, "by": res.by, "run": res.run, "attempts": res.attempts}
    if res.ok:
        rec["value"] = jsonable(res.value)
    else:
        rec["error"] = res.error
        rec["traceback"] = res.traceback
        if res.cancelled:
            rec["cancelled"] = True
    return rec


def _emit_json(rec: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")


def _note(message: str) -> None:
    """A message for the person at the terminal (stderr, unwrapped, no markup)."""
    click.echo(message, err=True)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


# -- joining the mesh ----------------------------------------------------------------------------
def _client_id() -> str:
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"cli-{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _local_host_towards(to: tuple[str, int]) -> str:
    """The local address this machine uses to reach ``to`` (what peers can dial us back on)."""
    host, port = to
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as err:
        raise ClientError(f"unknown host {host!r} in --to: {err.strerror}; check the address") from None
    family, _, _, _, sockaddr = infos[0]
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect(sockaddr)  # UDP connect sends nothing; it only picks the route
            return str(s.getsockname()[0])
    except OSError as err:
        raise ClientError(f"no route to {host}:{port}: {err.strerror or err}") from None


def _fmt(addr: tuple[str, int]) -> str:
    from warpmesh.net.tcp import format_address

    return format_address(addr)


async def _probe(to: tuple[str, int], timeout: float) -> str | None:
    """Why a plain TCP connection to ``to`` fails (None: it opens)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(*to), timeout)
    except TimeoutError:
        return f"{_fmt(to)} did not answer within {timeout:.0f} s (wrong address, or a firewall?)"
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else (str(err) or type(err).__name__)
        return (f"cannot reach {_fmt(to)}: {reason}; is a `warpmesh node` listening there? "
                "(its 'ready' line shows the address)")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


class MeshClient:
    """A short-lived ``role="client"`` peer joined through one address (``async with``)."""

    def __init__(self, to: tuple[str, int], *, listen: tuple[str, int] | None, secret: bytes | None,
                 tls: Any, connect_timeout: float) -> None:
        self.to = to
        self.listen = listen
        self.secret = secret
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.node_id = _client_id()
        self.mesh: Any = None
        self.warp: Any = None
        #: The node id behind ``--to`` (known once linked).
        self.entry: str = ""

    async def __aenter__(self) -> MeshClient:
        from warpmesh.net.secret import InsecureAddressError, check_addresses
        from warpmesh.net.tcp import TcpMesh, boot_incarnation
        from warpmesh.warp import OpRegistry, WarpNode

        inc = boot_incarnation()
        try:
            check_addresses(self.secret, dial=[self.to[0]])
            listen = self.listen or (_local_host_towards(self.to), 0)
            self.mesh = TcpMesh(self.node_id, listen=listen, join=[self.to], secret=self.secret,
                                incarnation=inc, tls=self.tls)
        except InsecureAddressError as err:  # a bad combination of arguments: exit 2 (issue 9)
            raise click.UsageError(str(err)) from None
        except ValueError as err:
            raise ClientError(str(err)) from None
        try:
            try:
                await self.mesh.start()
            except OSError as err:
                raise ClientError(f"cannot listen on {_fmt(listen)}: {err.strerror or err}; pick another "
                                  "--listen address") from None
            self.entry = await self._linked()
            self.warp = WarpNode(self.mesh, registry=OpRegistry(), role="client", incarnation=inc)
            await self.warp.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self.warp is not None:
            await self.warp.close()
            self.warp = None
        if self.mesh is not None:
            await self.mesh.close()
            self.mesh = None

    async def _linked(self) -> str:
        """Wait for the link to ``--to``; fail fast, with the reason, when it cannot come up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        stats = self.mesh.stats
        probed: str | None = None
        reachable = False
        while True:
            peer = self.mesh.known_peers().get(self.to)
            if peer is not None and peer in self.mesh.roster.value:
                return str(peer)
            refusals = {code: n for code, n in stats.refusals.items() if n and code not in _QUIET_REFUSALS}
            if refusals:
                code = sorted(refusals)[0]
                raise ClientError(f"{_fmt(self.to)} refused the mesh handshake ({code}): "
                                  f"{_REFUSAL_HELP.get(code, 'see the peer log')}")
            if stats.dial_failures and not reachable and probed is None:
                probed = await _probe(self.to, min(5.0, max(0.5, deadline - loop.time())))
                if probed is not None:
                    raise ClientError(probed)
                reachable = True
            if loop.time() >= deadline:
                if not reachable:
                    probed = await _probe(self.to, 5.0)
                    if probed is not None:
                        raise ClientError(probed)
                hint = ("the TCP connection opens but the mesh handshake does not complete; check that "
                        "the --tls-* options and the secret match the mesh's, and that the peer is not "
                        "overloaded")
                raise ClientError(f"no link to {_fmt(self.to)} within {self.connect_timeout:g} s: {hint} "
                                  "(or raise --connect-timeout)")
            await asyncio.sleep(0.05)

    async def sync(self, *, boards: str = "all") -> None:
        """Pull the boards (``"all"`` or just ``"members"``) from the entry peer before reading."""
        try:
            if boards == "all":
                await self.warp.sync_from(self.entry, timeout=self.connect_timeout)
            else:
                await self.warp.members.sync_with(self.entry, timeout=self.connect_timeout)
        except TimeoutError:
            raise ClientError(f"{self.entry} ({_fmt(self.to)}) did not send its boards within "
                              f"{self.connect_timeout:g} s; it may be overloaded (raise --connect-timeout) "
                              "or gone") from None

    async def views_agree(self, grace: float = VIEW_GRACE) -> bool:
        """Wait up to ``grace`` s until this client sees the live workers its entry peer publishes."""
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while True:
            entry = self.warp.member_info().get(self.entry)
            if entry is None or entry.get("view") == self.warp.view:
                return True
            if loop.time() >= until:
                return False
            await asyncio.sleep(0.05)

    async def replicated(self, board: Any, what: str) -> None:
        """Wait until a majority of the other peers hold every change made on ``board`` so far."""
        need = self.warp.holders_needed()
        if not await board.replicated(timeout=self.connect_timeout, count=need):
            raise ClientError(f"no majority of the mesh ({need} peer(s) besides this client) acknowledged "
                              f"{what} within {self.connect_timeout:g} s")


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
@dataclass
class SubmitOutcome:
    jobs: list[Job]
    runs: dict[str, str]
    answers: dict[str, Any]
    acknowledged: int
    timed_out: bool = False


async def submit_jobs(client: MeshClient, jobs: list[Job], *, wait: bool, timeout: float | None,
                      progress: Any = None, deadline: float | None = None) -> SubmitOutcome:
    """Enqueue ``jobs`` in acknowledged batches; with ``wait``, collect every answer."""
    warp = client.warp
    runs: dict[str, str] = {}
    pending: dict[str, str] = {}  # task -> the run whose answer we wait for
    answers: dict[str, Any] = {}
    done = asyncio.Event()
    bar_ack = progress.add_task("acknowledged", total=len(jobs)) if progress is not None else None
    bar_ans = progress.add_task("answered", total=len(jobs), visible=wait) if progress is not None else None

    def on_results(task_ids: list[str]) -> None:
        got = 0
        for t in task_ids:
            run = pending.get(t)
            if run is None:
                continue
            res = warp.results.get(t)
            if res is not None and res.run == run:
                answers[t] = res
                del pending[t]
                got += 1
        if got and progress is not None:
            progress.advance(bar_ans, got)
        if not pending and len(runs) == len(jobs):
            done.set()

    remove = warp.add_result_listener(on_results) if wait else (lambda: None)
    outcome = SubmitOutcome(jobs, runs, answers, 0)
    try:
        for batch in batches(jobs):
            for job in batch:
                run = warp.enqueue_call(job.task, job.op, job.args, job.kwargs, pin=job.pin, deadline=deadline)
                runs[job.task] = run
                if wait:
                    pending[job.task] = run
            try:
                await client.replicated(warp.queue, "the submitted jobs")
            except ClientError as err:
                sent = len(runs) - outcome.acknowledged
                raise ClientError(
                    f"{err.message}: {outcome.acknowledged} of {len(jobs)} jobs were enqueued and acknowledged "
                    f"before that, the next {sent} may or may not have reached the mesh, and the other "
                    f"{len(jobs) - len(runs)} were not sent (resubmitting re-runs the acknowledged ones)"
                ) from None
            outcome.acknowledged = len(runs)
            if progress is not None:
                progress.update(bar_ack, completed=outcome.acknowledged)
        if not wait:
            return outcome
        on_results(list(pending))  # anything that arrived through a full state meanwhile
        if pending:
            try:
                async with asyncio.timeout(timeout):
                    await done.wait()
            except TimeoutError:
                outcome.timed_out = True
        return outcome
    finally:
        remove()


def unserved(client: MeshClient, jobs: list[Job]) -> str | None:
    """Why some job cannot run on the live workers (an unknown op or pin), or None."""
    info = client.warp.member_info()
    live = sorted(client.warp.workers)
    served: set[str] = set()
    for p in live:
        served.update(info.get(p, {}).get("ops", ()))
    for job in jobs:
        if job.pin is not None:
            if job.pin not in live:
                return (f"{job.where}: pin {job.pin!r} is not a live worker (live: {', '.join(live) or 'none'})")
            if job.op not in info.get(job.pin, {}).get("ops", ()):
                return f"{job.where}: worker {job.pin!r} does not serve op {job.op!r}"
        elif job.op not in served:
            return (f"{job.where}: no live worker serves op {job.op!r} (served: {', '.join(sorted(served)) or 'none'}); "
                    "check the name")
    return None


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
        async with MeshClient(to, listen=listen, secret=secret, tls=tls, connect_timeout=connect_timeout) as client:
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
            rows: list[dict[str, Any]] = []
            for t in wanted:
                res = warp.results.get(t)
                if res is not None and (t not in queued or queued[t].run == res.run):
                    rows.append(result_record(t, res))
                elif t in queued:
                    rows.append({"task": t, "pending": True, "run": queued[t].run})
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
def mesh_status(client: MeshClient, views_agree: bool) -> dict[str, Any]:
    """A snapshot of the whole mesh as this client sees it after syncing (for ``warpmesh status``)."""
    from warpmesh.warp import COUNTER_NAMES

    warp = client.warp
    info = warp.member_info()
    live = warp.workers
    ring = warp.ring
    health = {p: h.value for p, h in warp.liveness.health.value.items()}
    queued_by: dict[str, int] = {}
    claimed_by: dict[str, int] = {}
    depth = 0
    for task_id, desc in warp.queued():
        depth += 1
        owner = desc.pin if desc.pin is not None else ring.owner(task_id)
        key = owner if owner is not None else "(no live worker)"
        queued_by[key] = queued_by.get(key, 0) + 1
        for peer in warp.claimants(desc.run):
            claimed_by[peer] = claimed_by.get(peer, 0) + 1
    roster = sorted(client.mesh.roster.value - {client.node_id})
    executions = warp.counters_by_peer("executions")
    failures = warp.counters_by_peer("failures")
    shares = ring.shares()
    # Workers gone for longer than the failure detector's lost_after leave the members board (and
    # this list); their executions stay in the mesh-wide counters.
    names = sorted(set(roster) | set(live) | {p for p, v in info.items() if v.get("role") == "worker"}
                   - {client.node_id})
    peers = []
    for p in names:
        entry = info.get(p, {})
        if p in live:
            state = "live"
        elif p in roster:
            state = health.get(p, "linked")
        else:
            state = "away"
        peers.append({
            "peer": p, "role": entry.get("role", "?"), "state": state,
            "ring_share": round(shares.get(p, 0.0), 4), "queued": queued_by.get(p, 0),
            "claimed": claimed_by.get(p, 0), "executions": executions.get(p, 0), "failures": failures.get(p, 0),
            "ops": entry.get("ops", []), "warm": list(entry.get("warm", [])),
        })
    return {
        "entry": client.entry,
        "client": client.node_id,
        "roster": roster,
        "live_workers": sorted(live),
        "views_agree": views_agree,
        "ring_shares": {p: round(s, 4) for p, s in shares.items()},
        "queue_depth": depth,
        "unowned": queued_by.get("(no live worker)", 0),
        "claimed": sum(claimed_by.values()),
        "results": len(warp.results),
        "counters": {n: warp.counter(n) for n in COUNTER_NAMES},
        "peers": peers,
    }


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
            return mesh_status(client, agree)

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
    for col in ("peer", "role", "state", "ring share", "queued", "claimed", "executions", "failures"):
        table.add_column(col, justify="left" if col in ("peer", "role", "state") else "right")
    colours = {"live": "green", "away": "red", "unresponsive": "yellow", "lost": "red"}
    for p in snap["peers"]:
        colour = colours.get(p["state"], "white")
        table.add_row(p["peer"], p["role"], f"[{colour}]{p['state']}[/]",
                      f"{100 * p['ring_share']:.1f}%" if p["role"] == "worker" else "",
                      str(p["queued"]), str(p["claimed"]), str(p["executions"]), str(p["failures"]))
    console.print(table)
    console.print("mesh-wide: " + ", ".join(f"{name} {c[name]}" for name in c))
    for p in (p for p in snap["peers"] if p.get("warm")):
        console.print(f"warm on {p['peer']}: " + ", ".join(p["warm"]))
    if not snap["views_agree"]:
        console.print(f"[yellow]note:[/] this client does not see the same live workers as {snap['entry']} "
                      f"(a peer joining or leaving, or one this machine cannot reach)")
