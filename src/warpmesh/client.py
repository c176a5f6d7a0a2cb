"""A client of a running Warp mesh: :func:`connect` (a runtime module).

``async with warpmesh.connect("127.0.0.1:7000") as client`` joins the mesh through that peer as a
:class:`~warpmesh.warp.WarpNode` with ``role="client"``: it enqueues and reads like any peer but never
runs a task and is not on the ring. It pulls the boards from its entry peer before reading, so it
never reports a half-received board, and on the way out removes its members entry and leaves with
an orderly goodbye. ``warpmesh submit``, ``results`` and ``status`` are built on :class:`MeshClient`.

Task ids default to :func:`content_task_id`: a content hash of ``(op, args, pin)`` (and the keyword
arguments, when there are any), so submitting the same job twice names the same task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from warpmesh.errors import Unavailable

if TYPE_CHECKING:
    from warpmesh.net.tls import TlsConfig
    from warpmesh.warp.model import OpResult

__all__ = ["ConnectError", "MeshClient", "canonical_json", "connect", "content_task_id", "mesh_status", "parse_address",
           "resolve_security"]

#: Largest packed args of one job (a descriptor must fit a mesh frame with room to spare).
MAX_ARGS_BYTES = 4 * 1024 * 1024
#: Jobs per acknowledged batch when submitting (and at most this many bytes of args).
BATCH_JOBS = 2000
BATCH_BYTES = 1024 * 1024
#: How long ``status`` waits for this client's view of the live workers to match its peer's.
VIEW_GRACE = 5.0

#: Handshake refusals that are part of normal life (a duplicate link settles itself).
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


class ConnectError(Unavailable):
    """The mesh could not be reached or did not answer in time; ``message`` says what to do next."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- job ids (pure) --------------------------------------------------------------------------------
def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: one text per value, the input of :func:`content_task_id`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_task_id(op: str, args: Any, pin: str | None = None, kwargs: dict[str, Any] | None = None) -> str:
    """``OP-<16 hex>``: a BLAKE3 hash of the canonical JSON of ``[op, args, pin]`` (plus ``kwargs``
    when there are any)."""
    import blake3

    key = [op, args, pin] + ([kwargs] if kwargs else [])
    digest = blake3.blake3(b"warpmesh.task\x00" + canonical_json(key).encode()).hexdigest()
    return f"{op}-{digest[:16]}"


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``"[v6]:PORT"``) or a ``(host, port)`` pair as a pair; ValueError if malformed."""
    if isinstance(address, tuple):
        host, port = address
        return str(host), int(port)
    host, sep, port_text = str(address).rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host, int(port_text)


def resolve_security(secret: bytes | str | None = None, secret_file: str | os.PathLike[str] | None = None,
                     tls_cert: str | os.PathLike[str] | None = None, tls_key: str | os.PathLike[str] | None = None,
                     tls_ca: str | os.PathLike[str] | None = None) -> tuple[bytes | None, TlsConfig | None]:
    """The cluster secret and TLS config from the places the CLI reads them.

    ``secret`` wins, then ``secret_file``, then ``$WARPMESH_SECRET`` (``None`` everywhere: a
    loopback-only mesh). TLS needs all three PEM files or none. Raises
    :class:`~warpmesh.net.secret.SecretError` (a bad secret) or ``ValueError`` (TLS files missing
    or unreadable).
    """
    from warpmesh.net.secret import load_secret

    if secret is not None:
        key: bytes | None = secret.encode() if isinstance(secret, str) else bytes(secret)
    else:
        key = load_secret(secret_file)
    given = [p for p in (tls_cert, tls_key, tls_ca) if p is not None]
    if not given:
        return key, None
    if len(given) != 3:
        raise ValueError("TLS needs all of tls_cert, tls_key and tls_ca")
    import ssl

    from warpmesh.net.tls import mesh_tls

    try:
        tls = mesh_tls(ca_file=Path(tls_ca), cert_file=Path(tls_cert), key_file=Path(tls_key))  # type: ignore[arg-type]
    except (ssl.SSLError, OSError) as err:
        raise ValueError(f"cannot load the TLS files: {err}; check the cert, key and CA (PEM files; "
                         "see docs/mesh.md)") from None
    return key, tls


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


def jsonable(value: Any) -> Any:
    """A JSON-encodable copy of a msgpack value: bytes become ``{"$base64": "..."}``."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {k if isinstance(k, str) else canonical_json(jsonable(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


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


# -- joining the mesh ------------------------------------------------------------------------------
def _client_id() -> str:
    host = socket.gethostname().split(".")[0][:40] or "host"
    return f"cli-{host}-{os.getpid()}-{secrets.token_hex(3)}"


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
    """A ``role="client"`` peer joined through one address (``async with``).

    Errors are raised as :attr:`error` (``ConnectError``; the CLI substitutes its own exit-1 error).
    A bad combination of arguments (a non-loopback address without a secret) raises
    :class:`~warpmesh.net.secret.InsecureAddressError`.
    """

    #: The exception class raised for every failure to reach or hear from the mesh.
    error: type[Exception] = ConnectError

    def __init__(self, to: tuple[str, int], *, listen: tuple[str, int] | None = None, secret: bytes | None = None,
                 tls: Any = None, connect_timeout: float = 15.0, board_history: bool = True) -> None:
        self.to = to
        #: False: the boards (the members board aside) follow only what is written from now on
        #: (``WarpNode(board_history=False)``): for enqueueing and awaiting one's own answers.
        self.board_history = board_history
        self.listen = listen
        self.secret = secret
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.node_id = _client_id()
        self.mesh: Any = None
        self.warp: Any = None
        self._mux: Any = None
        #: The node id behind ``to`` (known once linked).
        self.entry: str = ""

    def _local_host_towards(self, to: tuple[str, int]) -> str:
        """The local address this machine uses to reach ``to`` (what peers can dial us back on)."""
        host, port = to
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as err:
            raise self.error(f"unknown host {host!r} in --to: {err.strerror}; check the address") from None
        family, _, _, _, sockaddr = infos[0]
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect(sockaddr)  # UDP connect sends nothing; it only picks the route
                return str(s.getsockname()[0])
        except OSError as err:
            raise self.error(f"no route to {host}:{port}: {err.strerror or err}") from None

    async def __aenter__(self) -> MeshClient:
        from warpmesh.net.mux import MuxSeam
        from warpmesh.net.secret import InsecureAddressError, check_addresses
        from warpmesh.net.tcp import TcpMesh, boot_incarnation
        from warpmesh.warp import OpRegistry, WarpConfig, WarpNode
        from warpmesh.warp.cells import ask_cell
        from warpmesh.warp.route import ROUTE_TAG

        inc = boot_incarnation()
        try:
            check_addresses(self.secret, dial=[self.to[0]])
            listen = self.listen or (self._local_host_towards(self.to), 0)
            self.mesh = TcpMesh(self.node_id, listen=listen, join=[self.to], secret=self.secret,
                                incarnation=inc, tls=self.tls)
        except InsecureAddressError:
            raise
        except ValueError as err:
            raise self.error(str(err)) from None
        try:
            try:
                await self.mesh.start()
            except OSError as err:
                raise self.error(f"cannot listen on {_fmt(listen)}: {err.strerror or err}; pick another "
                                 "--listen address") from None
            self.entry = await self._linked()
            # In a mesh of cells, join the entry peer's cell: what this client reads (the queue, the
            # claims, the answers) is that cell's, and tasks of other cells are forwarded to them.
            self._mux = MuxSeam(self.mesh)
            told = await ask_cell(self._mux.channel(ROUTE_TAG), self.entry, min(2.0, self.connect_timeout))
            cell, cells = told if told is not None else (None, ())
            self.warp = WarpNode(self.mesh, registry=OpRegistry(), role="client", incarnation=inc,
                                 board_history=self.board_history, mux=self._mux,
                                 config=WarpConfig(cell=cell, cells=cells if cell is None or cell in cells else ()))
            await self.warp.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Leave the mesh: the Warp node first (it removes its members entry), then the links."""
        if self.warp is not None:
            await self.warp.close()
            self.warp = None
        if self._mux is not None:
            await self._mux.close()
            self._mux = None
        if self.mesh is not None:
            await self.mesh.close()
            self.mesh = None

    async def _linked(self) -> str:
        """Wait for the link to ``to``; fail fast, with the reason, when it cannot come up."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        stats = self.mesh.stats
        probed: str | None = None
        reachable = False
        while True:
            peer = self.mesh.known_peers().get(self.to)
            if peer is not None and peer in self.mesh.roster.value:
                return str(peer)
            # Only refusals on links we dialled: a stranger dialling our listening port (a stale peer
            # of another mesh that once had this address) says nothing about the peer we asked for.
            refusals = {code: n for code, n in stats.refused_dialling.items()
                        if n and code not in _QUIET_REFUSALS}
            if refusals:
                code = sorted(refusals)[0]
                raise self.error(f"{_fmt(self.to)} refused the mesh handshake ({code}): "
                                 f"{_REFUSAL_HELP.get(code, 'see the peer log')}")
            if stats.dial_failures and not reachable and probed is None:
                probed = await _probe(self.to, min(5.0, max(0.5, deadline - loop.time())))
                if probed is not None:
                    raise self.error(probed)
                reachable = True
            if loop.time() >= deadline:
                if not reachable:
                    probed = await _probe(self.to, 5.0)
                    if probed is not None:
                        raise self.error(probed)
                hint = ("the TCP connection opens but the mesh handshake does not complete; check that "
                        "the --tls-* options and the secret match the mesh's, and that the peer is not "
                        "overloaded")
                raise self.error(f"no link to {_fmt(self.to)} within {self.connect_timeout:g} s: {hint} "
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
            raise self.error(f"{self.entry} ({_fmt(self.to)}) did not send its boards within "
                             f"{self.connect_timeout:g} s; it may be overloaded (raise --connect-timeout) "
                             "or gone") from None

    async def views_agree(self, grace: float = VIEW_GRACE) -> bool:
        """Wait up to ``grace`` s until this client sees the live workers its entry peer publishes."""
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        while True:
            entry = self.warp.member_info().get(self.entry)
            if entry is None or entry.get("view") == self.warp.view or entry.get("cell") != self.warp.config.cell:
                return True  # (views are per cell: a peer of another cell announces its cell's)
            if loop.time() >= until:
                return False
            await asyncio.sleep(0.05)

    async def replicated(self, board: Any, what: str) -> None:
        """Wait until a majority of the other peers hold every change made on ``board`` so far."""
        need = self.warp.holders_needed()
        if board is self.warp.queue and not await self.warp.router.settled(self.connect_timeout):
            raise self.error(f"no peer of the cell that queues them (see docs/warp.md, \"Cells\") accepted {what} "
                             f"within {self.connect_timeout:g} s")
        if not await board.replicated(timeout=self.connect_timeout, count=need):
            raise self.error(f"no majority of the mesh ({need} peer(s) besides this client) acknowledged "
                             f"{what} within {self.connect_timeout:g} s")

    # -- the library surface (what :func:`connect` yields) ------------------------------------------
    @property
    def node(self) -> Any:
        """The client's :class:`~warpmesh.warp.WarpNode` (``role="client"``)."""
        return self.warp

    async def submit(self, op: str, /, *args: Any, task: str | None = None, pin: str | None = None,
                     deadline: float | None = None, **kwargs: Any) -> str:
        """Enqueue ``op(*args, **kwargs)`` and return its task id (default :func:`content_task_id`)
        once a majority of the mesh holds it; raises :attr:`error` if none acknowledged in time."""
        task_id = task or content_task_id(op, list(args), pin, kwargs or None)
        self.warp.enqueue_call(task_id, op, args, kwargs or None, pin=pin, deadline=deadline)
        await self.replicated(self.warp.queue, f"task {task_id}")
        return task_id

    async def enqueue(self, task_id: str, op: str, /, *args: Any, pin: str | None = None,
                      deadline: float | None = None, **kwargs: Any) -> str:
        """Enqueue ``op(*args, **kwargs)`` as ``task_id``; returns its run token once a majority holds it."""
        run: str = self.warp.enqueue_call(task_id, op, args, kwargs or None, pin=pin, deadline=deadline)
        await self.replicated(self.warp.queue, f"task {task_id}")
        return run

    async def outcome(self, task_id: str, timeout: float | None = None) -> OpResult:
        """Wait for the answer record of ``task_id`` (its latest run)."""
        res: OpResult = await self.warp.outcome(task_id, timeout)
        return res

    async def result(self, task_id: str, timeout: float | None = None) -> Any:
        """Wait for ``task_id``'s value; raises :class:`~warpmesh.warp.TaskFailed` if its run failed."""
        return await self.warp.result(task_id, timeout)

    async def status(self) -> dict[str, Any]:
        """The mesh as this client sees it after pulling every board (the ``warpmesh status --json`` object)."""
        await self.sync()
        agree = await self.views_agree()
        return mesh_status(self, agree, await self.warp.router.counts(self.connect_timeout))


def mesh_status(client: MeshClient, views_agree: bool,
                other_cells: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """A snapshot of the whole mesh as this client sees it after syncing (the ``warpmesh status --json`` object).

    ``other_cells``: the other cells' counters (``router.counts()``) in a mesh of cells, each cell
    keeping its own; the counters shown are the sums."""
    from warpmesh.warp import COUNTER_NAMES

    warp = client.warp
    info = warp.member_info()
    # With cells, the ring and the queue below are this client's cell's; the workers are every cell's.
    live = warp.workers if len(warp.router.cells()) <= 1 else warp.mesh_workers
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
    far = other_cells or {}
    executions = {**far.get("executions", {}), **warp.counters_by_peer("executions")}
    failures = {**far.get("failures", {}), **warp.counters_by_peer("failures")}
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
            "ops": entry.get("ops", []), "warm": list(entry.get("warm", [])), "cell": entry.get("cell"),
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
        "counters": {n: warp.counter(n) + sum(far.get(n, {}).values()) for n in COUNTER_NAMES},
        "peers": peers,
    }


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
            except client.error as err:
                sent = len(runs) - outcome.acknowledged
                raise client.error(
                    f"{getattr(err, 'message', err)}: {outcome.acknowledged} of {len(jobs)} jobs were enqueued and acknowledged "
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
    live = sorted(client.warp.mesh_workers)  # every cell's: a task is forwarded to its cell
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


def connect(address: str | tuple[str, int], *, secret: bytes | str | None = None,
            secret_file: str | os.PathLike[str] | None = None, tls_cert: str | os.PathLike[str] | None = None,
            tls_key: str | os.PathLike[str] | None = None, tls_ca: str | os.PathLike[str] | None = None,
            listen: str | tuple[str, int] | None = None, connect_timeout: float = 15.0) -> MeshClient:
    """A client of the mesh reached through ``address`` (``"HOST:PORT"``), to use as ``async with``.

    The secret and TLS files are read as the CLI reads them (``secret``, else ``secret_file``, else
    ``$WARPMESH_SECRET``). Inside the block: ``await client.submit(op, *args)`` (returns the task
    id), ``enqueue``, ``result``, ``outcome`` and ``status()``. Raises :class:`ConnectError` when the
    peer cannot be reached.
    """
    key, tls = resolve_security(secret, secret_file, tls_cert, tls_key, tls_ca)
    return MeshClient(parse_address(address), listen=None if listen is None else parse_address(listen),
                      secret=key, tls=tls, connect_timeout=connect_timeout)
