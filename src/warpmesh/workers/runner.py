"""Memoized, single-flight execution of job requests, nested to any depth.

:class:`Runner` is the front door: it turns a worker plus arguments into a canonical
:class:`~warpmesh.workers.request.JobRequest`, answers it from the results backend when it can, and
otherwise runs it exactly once however many callers ask concurrently.

* **Memoization.** A request's key is its tree id. A successful result is published to the
  :class:`ResultsBackend` (by default the store's memo table) under that key, so the same request
  never runs twice. Failures are never published, nor are results of jobs that saw a nested run fail
  (they may have swallowed a transient failure); such results are returned but marked
  ``clean=False``, and the mark propagates to every ancestor.
* **Single-flight.** Concurrent identical requests share one execution (a :class:`Flight`).
* **Cycles.** Every job carries the stack of request keys above it. A nested request already on the
  stack fails at once with :attr:`FailureKind.CYCLE`, naming the cycle. Joining another thread's
  flight is checked against a waits-for graph, so two chains that would wait on each other through
  single-flight also fail with a named cycle instead of deadlocking.
* **Nesting without deadlock.** Nested runs go through a :class:`~warpmesh.workers.scheduler.Pool`
  whose slots are released while a parent waits (see that module).

A later mesh layer plugs in here: ``results`` can publish to and look up in the replicated results
board, and ``fetch`` can pull a missing module (or result object) from a peer -- its bytes are
verified against the id by :meth:`Store.put_verified` *before* anything uses them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from warpmesh.observe import bus as observe_bus
from warpmesh.workers import abi
from warpmesh.workers.abi import RunSpec, SizedEntry, WorkerKind
from warpmesh.workers.canonical import build_tree, value_to_blob
from warpmesh.workers.errors import FailureKind, JobError
from warpmesh.workers.host import HostConfig, IsolateHost
from warpmesh.workers.ids import ID_LEN, Kind, Ref, blob_id, short
from warpmesh.workers.request import JobRequest, Limits, OpWorker, WasmWorker, Worker
from warpmesh.workers.scheduler import Latch, Pool, Task
from warpmesh.workers.store import CorruptObject, ObjectNotFound, Store, StoreError
from warpmesh.workers.tree import EMPTY_TREE_ID, TreeEntry

log = logging.getLogger("warpmesh.workers")
guest_log = logging.getLogger("warpmesh.guest")

# Enum members as module constants (an enum class attribute access costs ~0.2 µs in CPython 3.11).
_BLOB, _TREE = Kind.BLOB, Kind.TREE
_WASM, _OP = WorkerKind.WASM, WorkerKind.OP

#: Default bound on nested-run depth (the length of the request stack).
DEFAULT_MAX_DEPTH = 128
#: Nested jobs whose workers take less than this (their own work, nested waits excluded) run one
#: after another on the asking thread rather than spread over the pool.
SPREAD_MIN_S = 0.005


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one request."""

    key: bytes
    ref: Ref
    size: int
    #: "run" (executed here), "memo" (answered from the results backend) or "flight" (joined a
    #: concurrent identical run).
    source: str
    #: False when the job saw a nested run fail; such results are not memoized.
    clean: bool = True

    @property
    def hit(self) -> bool:
        """True when nothing was executed for this call."""
        return self.source != "run"


class ResultsBackend(Protocol):
    """Where memoized results live. Must be thread-safe; lookups may be best-effort."""

    def lookup(self, key: bytes) -> Ref | None: ...

    def lookup_many(self, keys: list[bytes]) -> dict[bytes, Ref]:
        """The results known for some of ``keys`` (a batch of :meth:`lookup`)."""
        ...

    def publish(self, key: bytes, ref: Ref) -> None: ...


class LocalResults:
    """The store's memo table, fronted by a small in-memory map."""

    def __init__(self, store: Store, cache_entries: int = 65536) -> None:
        self.store = store
        self._cache: dict[bytes, Ref] = {}
        self._cache_entries = cache_entries

    def lookup(self, key: bytes) -> Ref | None:
        ref = self._cache.get(key)
        if ref is not None and self.store.kind_of(ref.id) is ref.kind:
            return ref
        ref = self.store.memo_get(key)
        if ref is not None:
            self._remember(key, ref)
        return ref

    def lookup_many(self, keys: list[bytes]) -> dict[bytes, Ref]:
        found: dict[bytes, Ref] = {}
        rest = []
        for k in keys:
            ref = self._cache.get(k)
            if ref is not None and self.store.kind_of(ref.id) is ref.kind:
                found[k] = ref
            else:
                rest.append(k)
        if rest:
            more = self.store.memo_get_many(rest)
            for k, ref in more.items():
                self._remember(k, ref)
            found.update(more)
        return found

    def publish(self, key: bytes, ref: Ref) -> None:
        self.store.memo_put(key, ref)
        self._remember(key, ref)

    def _remember(self, key: bytes, ref: Ref) -> None:
        if len(self._cache) >= self._cache_entries:
            self._cache.clear()
        self._cache[key] = ref


#: Fetches an object this host lacks (from a peer, say): returns its bytes or ``None``.
ObjectFetcher = Callable[[Ref], bytes | None]

#: A named op: a Python function of the job's context returning the result (a Ref, or bytes/str
#: stored as a blob).
OpFunction = Callable[["JobContext"], Ref | bytes | str]


class Flight:
    """One in-progress execution that identical concurrent requests wait on."""

    __slots__ = ("done", "error", "key", "result", "waiters", "worker")

    def __init__(self, key: bytes, worker: Worker) -> None:
        self.key = key
        self.worker = worker
        #: How many callers joined this flight instead of running the request themselves.
        self.waiters = 0
        #: Set when the flight ends; made by the first caller that joins (most flights have none).
        self.done: Latch | None = None
        self.result: RunResult | None = None
        self.error: JobError | None = None

    @property
    def desc(self) -> str:
        """What runs, for messages (``wasm:<module>`` or ``op:<name@version>``)."""
        return self.worker.describe()


class _Flights:
    """The single-flight table plus the waits-for graph between flights."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.table: dict[bytes, Flight] = {}
        # parent key -> {child key: how many of the parent's batches wait on it}
        self.waits: dict[bytes, dict[bytes, int]] = {}

    def get(self, key: bytes) -> Flight | None:
        """The flight running ``key``, if any."""
        with self.lock:
            return self.table.get(key)

    def describe(self, key: bytes) -> str:
        f = self.table.get(key)
        return f"{f.desc}[{short(key)}]" if f is not None else f"[{short(key)}]"

    def begin(self, key: bytes, worker: Worker, stack: tuple[bytes, ...]) -> tuple[Flight, bool]:
        """Own a new flight for ``key``, or join the running one if that cannot deadlock."""
        with self.lock:
            flight = self.table.get(key)
            if flight is None:
                flight = self.table[key] = Flight(key, worker)
                return flight, True
            path = self._path_to(key, set(stack))
            if path is not None:
                # `key` (running elsewhere) waits, transitively, on a request in our stack.
                start = stack.index(path[-1])
                cycle = [*stack[start:], *path]
                raise JobError(FailureKind.CYCLE, "requests wait on each other: "
                               + " -> ".join(self.describe(k) for k in cycle))
            flight.waiters += 1
            if flight.done is None:
                flight.done = Latch()  # under the lock, so finish() sees it
            return flight, False

    def _path_to(self, start: bytes, targets: set[bytes]) -> list[bytes] | None:
        # Depth-first search over waits-for edges; returns start..target if some target is reached.
        seen = {start}
        todo: list[list[bytes]] = [[start]]
        while todo:
            path = todo.pop()
            for nxt in self.waits.get(path[-1], ()):
                if nxt in targets:
                    return [*path, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append([*path, nxt])
        return None

    def add_waits(self, parent: bytes, children: list[bytes]) -> None:
        with self.lock:
            c = self.waits.get(parent)
            if c is None:
                c = self.waits[parent] = {}
            for k in children:
                c[k] = c.get(k, 0) + 1

    def remove_waits(self, parent: bytes, children: list[bytes]) -> None:
        with self.lock:
            c = self.waits.get(parent)
            if c is None:
                return
            for k in children:
                n = c.get(k, 0) - 1
                if n > 0:
                    c[k] = n
                else:
                    c.pop(k, None)
            if not c:
                del self.waits[parent]

    def finish(self, flight: Flight, result: RunResult | None, error: JobError | None) -> None:
        with self.lock:
            self.table.pop(flight.key, None)
            done = flight.done  # no one can join any more
        flight.result = result
        flight.error = error
        if done is not None:
            done.set()


class _Prepared:
    """A request whose key is computed and whose small objects are stored."""

    __slots__ = ("key", "request")

    def __init__(self, request: JobRequest, key: bytes) -> None:
        self.request = request
        self.key = key


class JobContext:
    """What one running job sees: its request, and the host operations (for guests and Python ops)."""

    def __init__(self, runner: Runner, request: JobRequest, key: bytes, stack: tuple[bytes, ...]) -> None:
        self.runner = runner
        self.request = request
        self.key = key
        #: Keys of the enclosing requests, outermost first, ending with this job's own key.
        self.stack = stack
        self.depth = len(stack) - 1
        #: False once a nested run this job asked for has failed.
        self.clean = True
        #: Seconds this job spent waiting on its nested runs (its own cost is the rest).
        self.nested_s = 0.0
        self._args: tuple[TreeEntry, ...] | None = None

    # -- Python-friendly API (named ops) -----------------------------------------------------------

    @property
    def args(self) -> dict[str, TreeEntry]:
        """The args tree's entries by name."""
        return {e.name: e for e in self._arg_entries()}

    def arg_bytes(self, name: str) -> bytes:
        """The bytes of the blob argument ``name``."""
        entry = self.args.get(name)
        if entry is None:
            raise JobError(FailureKind.BAD_REQUEST, f"missing argument {name!r}")
        if entry.kind is not _BLOB:
            raise JobError(FailureKind.BAD_REQUEST, f"argument {name!r} is a tree, expected a blob")
        return self.runner.store.get_blob(entry.id)

    def run(self, worker: Worker | bytes | str, args: Mapping[str, Any] | Ref | None = None) -> RunResult:
        """Run a nested request (inheriting this job's salt and limits); raises JobError."""
        (res,) = self.run_many([(worker, args)])
        if isinstance(res, JobError):
            raise res
        return res

    def run_many(self, items: Sequence[tuple[Worker | bytes | str, Mapping[str, Any] | Ref | None]]
                 ) -> list[RunResult | JobError]:
        """Run nested requests in parallel; results in order, one error per failed element."""
        reqs: list[_Prepared | JobError] = []
        for worker, args in items:
            try:
                reqs.append(self.runner._prepare(self.runner._make_request(
                    worker, args, salt=self.request.salt, limits=self.request.limits), nested=True))
            except JobError as exc:
                reqs.append(exc)
        return self._nested(reqs)

    # -- GuestServices (the ABI) -------------------------------------------------------------------

    def _arg_entries(self) -> tuple[TreeEntry, ...]:
        if self._args is None:
            self._args = self.runner._get_tree(self.request.args)
        return self._args

    def _sized(self, entries: tuple[TreeEntry, ...]) -> list[SizedEntry]:
        stat = self.runner.store.stat
        out = []
        for e in entries:
            st = stat(e.id)
            out.append(SizedEntry(e.name, e.kind, e.id, st[1] if st is not None else 0))
        return out

    def job_info(self) -> bytes:
        w = self.request.worker
        if isinstance(w, WasmWorker):
            wk, wid = _WASM, w.module
        else:
            wk, wid = _OP, blob_id(w.spec.encode("utf-8"))
        args = self.request.args
        # The args part (entries with their sizes) depends only on the args tree: the same args
        # under another salt or parent encode once. Sizes of objects not here yet are never cached.
        cache = self.runner._job_args
        hit = cache.get(args)
        if hit is None:
            sized = self._sized(self._arg_entries())
            hit = len(sized), abi.encode_entries(sized)[4:]
            if all(e.size or self.runner.store.has(e.id) for e in sized):
                if len(cache) >= 65536:
                    cache.clear()
                cache[args] = hit
        return abi.encode_job_parts(self.depth, wk, wid, args, self.request.salt, *hit)

    def get(self, oid: bytes, offset: int = 0, max_len: int | None = None) -> bytes:
        data = self.runner._get_blob(oid)
        if offset or max_len is not None:
            end = len(data) if max_len is None else offset + max_len
            return data[offset:end]
        return data

    def put_blob(self, data: bytes) -> bytes:
        return self.runner.store.put_blob(data)

    def put_tree(self, entries: tuple[TreeEntry, ...]) -> bytes:
        return self.runner.store.put_tree(entries)

    def tree(self, oid: bytes) -> list[SizedEntry]:
        return self._sized(self.runner._get_tree(oid))

    def tree_response(self, oid: bytes) -> bytes:
        """``abi.encode_entries(self.tree(oid))``, encoded once per tree while it and its entries are here.

        A tree's entries and the sizes of objects are fixed by their ids, so the encoding only
        changes when the tree or an entry leaves the store (the general path then answers
        not_found or size 0): a remembered encoding is used only while all of them are present.
        """
        runner = self.runner
        stat = runner.store.stat
        hit = runner._tree_resp.get(oid)
        if hit is not None and stat(oid) is not None and all(stat(i) is not None for i in hit[1]):
            return hit[0]
        sized = self._sized(runner._get_tree(oid))
        data = abi.encode_entries(sized)
        if all(stat(e.id) is not None for e in sized):
            cache = runner._tree_resp
            if len(cache) >= 65536:
                cache.clear()
            cache[oid] = data, tuple(e.id for e in sized)
        return data

    def check_out(self, ref: Ref) -> None:
        got = self.runner.store.kind_of(ref.id)
        if got is None:
            raise ObjectNotFound(f"out names {ref}, which is not in the store; put it first")
        if got is not ref.kind:
            raise abi.AbiError(f"out names {ref} but {short(ref.id)} is a {got.name.lower()}")

    def log(self, text: str) -> None:
        guest_log.info("%s %s: %s", self.request.worker.describe(), short(self.key), text)

    def run_specs(self, specs: Sequence[RunSpec]) -> list[tuple[Ref, int] | JobError]:
        reqs: list[_Prepared | JobError] = []
        for spec in specs:
            try:
                reqs.append(self.runner._prepare(self._spec_request(spec), nested=True))
            except JobError as exc:
                reqs.append(exc)
        return [r if isinstance(r, JobError) else (r.ref, r.size) for r in self._nested(reqs)]

    def _spec_request(self, spec: RunSpec) -> JobRequest:
        store = self.runner.store
        worker: Worker
        if spec.worker_kind is _WASM:
            assert isinstance(spec.worker, bytes)
            worker = self.runner._wasm_workers.get(spec.worker)  # type: ignore[assignment]
            if worker is None:
                worker = WasmWorker(spec.worker)
                if len(self.runner._wasm_workers) >= 4096:
                    self.runner._wasm_workers.clear()
                self.runner._wasm_workers[spec.worker] = worker
        else:
            assert isinstance(spec.worker, str)
            worker = _op_worker(spec.worker)
        if spec.args_tree is not None:
            if store.kind_of(spec.args_tree) is not _TREE:
                raise JobError(FailureKind.BAD_REQUEST, f"args tree {short(spec.args_tree)} is not in the store")
            args = spec.args_tree
        else:
            try:
                args = store.put_tree(spec.args_entries or ())
            except (StoreError, ValueError) as exc:
                raise JobError(FailureKind.BAD_REQUEST, f"args: {exc}") from None
        return JobRequest(worker, args, self.request.salt, self.request.limits, self.runner.host.engine_tag)

    def _nested(self, reqs: list[_Prepared | JobError]) -> list[RunResult | JobError]:
        pool = self.runner.pool
        pool.slots.release()  # a waiting parent holds no slot
        t0 = time.perf_counter()
        try:
            results = self.runner._resolve_many(reqs, self.stack)
        finally:
            self.nested_s += time.perf_counter() - t0
            pool.slots.acquire()
        for r in results:
            if isinstance(r, JobError) or not r.clean:
                self.clean = False
        return results


def _cost_key(worker: Worker) -> object:
    """What a worker's cost is filed under: a wasm worker's module id, an op worker itself.

    The module id's hash is cached by bytes, while a worker dataclass hashes in Python code, and
    the cost table is consulted for every job.
    """
    return worker.module if isinstance(worker, WasmWorker) else worker


def _op_worker(spec: str) -> OpWorker:
    name, _, version = spec.partition("@")
    try:
        return OpWorker(name, version or "1")
    except ValueError as exc:
        raise JobError(FailureKind.BAD_REQUEST, str(exc)) from None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 2


class Runner:
    """Runs job requests with memoization, single-flight, cycle detection and bounded parallelism."""

    def __init__(self, store: Store, host: IsolateHost | None = None, *, parallelism: int | None = None,
                 results: ResultsBackend | None = None, fetch: ObjectFetcher | None = None,
                 max_depth: int = DEFAULT_MAX_DEPTH, trace: Callable[[dict[str, Any]], None] | None = None,
                 inline_limit: int = 24) -> None:
        self.store = store
        self._own_host = host is None
        self.host = host or IsolateHost(HostConfig(artifact_dir=store.root / "compiled"))
        self.pool = Pool(parallelism or _usable_cpus(), inline_limit=inline_limit)
        self.results: ResultsBackend = results or LocalResults(store)
        self.fetch = fetch
        self.max_depth = max_depth
        self.trace = trace
        #: The single-flight table (``flights.get(key)`` shows a running request and its waiters).
        self.flights = _Flights()
        self._ops: dict[str, OpFunction] = {}
        self._recent: dict[bytes, Ref] = {}  # results this runner produced (see _resolve)
        self._executions = 0
        self._count_lock = threading.Lock()
        self._cost: dict[object, float] = {}  # _cost_key(worker) -> typical seconds of its own work per job
        self._cost_seen: dict[object, list[float]] = {}  # _cost_key(worker) -> its last three observations
        self._job_args: dict[bytes, tuple[int, bytes]] = {}  # args tree id -> its part of `job` (see job_info)
        # tree id -> (its `tree` response, its entries' ids) (see JobContext.tree_response)
        self._tree_resp: dict[bytes, tuple[bytes, tuple[bytes, ...]]] = {}
        self._wasm_workers: dict[bytes, WasmWorker] = {}  # module id -> its (immutable) worker object

    @property
    def executions(self) -> int:
        """Number of jobs this runner actually executed (not answered from memo or a shared flight)."""
        return self._executions

    def close(self) -> None:
        """Stop pool threads (and the host, if this runner created it)."""
        self.pool.close()
        if self._own_host:
            self.host.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- registration and requests ---------------------------------------------------------------------

    def register_op(self, name: str, fn: OpFunction, version: str = "1") -> OpWorker:
        """Register a Python function as the named op ``name@version``; bump the version whenever
        its behaviour changes, since the version (not the code) is what the cache key sees."""
        worker = OpWorker(name, version)
        if worker.spec in self._ops:
            raise ValueError(f"op {worker.spec} is already registered")
        self._ops[worker.spec] = fn
        return worker

    def put_module(self, wasm: bytes | str | os.PathLike[str]) -> bytes:
        """Store a module (bytes, or a path to a .wasm file) and return its id (the worker name)."""
        data = Path(wasm).read_bytes() if isinstance(wasm, str | os.PathLike) else bytes(wasm)
        return self.store.put_blob(data)

    def request(self, worker: Worker | bytes | str, args: Mapping[str, Any] | Ref | None = None, *,
                salt: bytes | str = b"", limits: Limits | None = None) -> JobRequest:
        """Build (and store the parts of) a canonical request. Values are converted strictly, see
        :mod:`warpmesh.workers.canonical`; an unhashable value raises ``CanonicalError``."""
        salt_bytes = value_to_blob(salt, "salt")
        salt_id = self.store.put_blob(salt_bytes)
        return self._make_request(worker, args, salt=salt_id, limits=limits or Limits())

    def _make_request(self, worker: Worker | bytes | str, args: Mapping[str, Any] | Ref | None, *,
                      salt: bytes, limits: Limits) -> JobRequest:
        if isinstance(worker, bytes):
            if len(worker) != ID_LEN:
                raise JobError(FailureKind.BAD_REQUEST, "a wasm worker is named by its 32-byte module id")
            worker = WasmWorker(worker)
        elif isinstance(worker, str):
            worker = _op_worker(worker)
        if args is None:
            args_id = EMPTY_TREE_ID
        elif isinstance(args, Ref):
            if args.kind is not _TREE or self.store.kind_of(args.id) is not _TREE:
                raise JobError(FailureKind.BAD_REQUEST, f"args must be a stored tree, got {args}")
            args_id = args.id
        else:
            ref, pending = build_tree(args)
            for kind, oid, data in pending:
                self.store.put_computed(kind, oid, data)
            args_id = ref.id
        return JobRequest(worker, args_id, salt, limits, self.host.engine_tag)

    def _prepare(self, request: JobRequest, *, nested: bool = False) -> _Prepared:
        w = request.worker
        if isinstance(w, WasmWorker) and self.store.kind_of(w.module) is not _BLOB \
                and not self._fetch_into_store(Ref(_BLOB, w.module)):
            raise JobError(FailureKind.WORKER_NOT_FOUND,
                           f"module {short(w.module)} is not in the store; store it first (Runner.put_module, "
                           "or 'warpmesh run MODULE.wasm')")
        if nested:
            # A nested request's tree is never read back (its key is all the memo and single-flight
            # use), so only top-level requests are stored: storing one tree per nested job was half
            # of the index rows a fold wrote.
            return _Prepared(request, request.key)
        key, pending = request.plan()
        for kind, oid, data in pending:
            self.store.put_computed(kind, oid, data)
        return _Prepared(request, key)

    # -- running ---------------------------------------------------------------------------------------

    def run(self, worker: Worker | bytes | str, args: Mapping[str, Any] | Ref | None = None, *,
            salt: bytes | str = b"", limits: Limits | None = None) -> RunResult:
        """Run one request to completion on the calling thread (nested runs fan out). Raises JobError."""
        return self.run_request(self.request(worker, args, salt=salt, limits=limits))

    def run_request(self, request: JobRequest) -> RunResult:
        """Run one prepared request (see :meth:`request`); its result is durable when this returns."""
        self._check_not_nested()
        try:
            return self._resolve(self._prepare(request), ())
        finally:
            self.store.flush()

    def run_many(self, requests: Sequence[JobRequest]) -> list[RunResult | JobError]:
        """Run top-level requests in parallel; results in order, one error per failed element."""
        self._check_not_nested()
        reqs: list[_Prepared | JobError] = []
        for r in requests:
            try:
                reqs.append(self._prepare(r))
            except JobError as exc:
                reqs.append(exc)
        try:
            return self._resolve_many(reqs, ())
        finally:
            self.store.flush()

    def _check_not_nested(self) -> None:
        # A job calling the top-level API would keep its slot while waiting (and escape cycle
        # detection): nested runs must go through the job's context.
        if self.pool.nesting() > 0:
            raise RuntimeError("Runner.run called from inside a running job; use ctx.run / ctx.run_many "
                               "of the job's JobContext for nested runs")

    async def run_async(self, request: JobRequest) -> RunResult:
        """:meth:`run_request` from asyncio, on a worker thread."""
        return await asyncio.get_running_loop().run_in_executor(None, self.run_request, request)

    def _lookup(self, key: bytes) -> Ref | None:
        try:
            ref = self.results.lookup(key)
        except Exception as exc:  # a results backend is best-effort: a failed lookup is a miss
            log.warning("results lookup failed (treated as a miss): %s", exc)
            return None
        if ref is None:
            return None
        if self.store.kind_of(ref.id) is ref.kind or self._fetch_into_store(ref):
            return ref
        return None

    def _fetch_into_store(self, ref: Ref) -> bool:
        if self.fetch is None:
            return False
        data = self.fetch(ref)
        if data is None:
            return False
        try:
            self.store.put_verified(ref, data)  # verified before anything can use it
        except (CorruptObject, StoreError, ValueError) as exc:
            log.warning("refused fetched bytes for %s: %s", ref, exc)
            return False
        return True

    def _get_blob(self, oid: bytes) -> bytes:
        if not self.store.has(oid):
            self._fetch_into_store(Ref(_BLOB, oid))
        return self.store.get_blob(oid)

    def _get_tree(self, oid: bytes) -> tuple[TreeEntry, ...]:
        if not self.store.has(oid):
            self._fetch_into_store(Ref(_TREE, oid))
        return self.store.get_tree(oid)

    def _emit(self, **fields: Any) -> None:
        try:
            self.trace(fields)  # type: ignore[misc]
        except Exception:  # tracing must never fail a job
            log.exception("trace callback failed")

    def _hit(self, key: bytes, ref: Ref, stack: tuple[bytes, ...], t0: float) -> RunResult:
        st = self.store.stat(ref.id)
        if observe_bus.sinks:  # a dashboard in this process counts memo hits and misses
            observe_bus.publish("memo_hit", None, {"key": key.hex()[:16]})
        if self.trace is not None:
            self._emit(req=key.hex(), parent=stack[-1].hex() if stack else None, depth=len(stack),
                       outcome="hit", total_us=(time.perf_counter() - t0) * 1e6)
        return RunResult(key, ref, st[1] if st else 0, "memo")

    def _resolve(self, prep: _Prepared, stack: tuple[bytes, ...], looked_up: bool = False) -> RunResult:
        t0 = time.perf_counter()
        key = prep.key
        if not looked_up:
            ref = self._lookup(key)
            if ref is not None:
                return self._hit(key, ref, stack, t0)
        worker = prep.request.worker
        if key in stack:
            desc = worker.describe()
            start = stack.index(key)
            chain = [*stack[start:], key]
            if self.trace is not None:
                self._emit(req=key.hex(), parent=stack[-1].hex(), depth=len(stack), outcome="cycle")
            raise JobError(FailureKind.CYCLE, "request runs itself: " + " -> ".join(
                self.flights.describe(k) if k != key else f"{desc}[{short(k)}]" for k in chain))
        if len(stack) >= self.max_depth:
            raise JobError(FailureKind.DEPTH_EXCEEDED,
                           f"nested runs are {len(stack)} deep, the limit is {self.max_depth}")
        flight, owner = self.flights.begin(key, worker, stack)
        if not owner:
            assert flight.done is not None
            flight.done.wait()
            if self.trace is not None:
                self._emit(req=key.hex(), parent=stack[-1].hex() if stack else None, depth=len(stack),
                           outcome="flight-wait", total_us=(time.perf_counter() - t0) * 1e6)
            if flight.error is not None:
                raise flight.error
            assert flight.result is not None
            r = flight.result
            return RunResult(r.key, r.ref, r.size, "flight", r.clean)
        # A flight of this process may have finished between our lookup and begin(): its result is
        # in `_recent` (published before its flight left the table), so re-check there.
        ref = self._recent.get(key)
        if ref is not None:
            result = self._hit(key, ref, stack, t0)
            self.flights.finish(flight, result, None)
            return result
        ctx = JobContext(self, prep.request, key, (*stack, key))
        observed = bool(observe_bus.sinks)  # a dashboard in this process: misses and runs in flight
        if observed:
            observe_bus.publish("memo_miss", None, {"key": key.hex()[:16]})
            observe_bus.publish("isolate_started", None, {"key": key.hex()[:16]})
        try:
            started = time.perf_counter()
            try:
                ref, stats = self.pool.run_inline(lambda: self._execute(ctx))
            finally:
                if observed:
                    observe_bus.publish("isolate_finished", None, {"key": key.hex()[:16]})
            self._observe_cost(_cost_key(prep.request.worker), time.perf_counter() - started - ctx.nested_s)
            st = self.store.stat(ref.id)
            result = RunResult(key, ref, st[1] if st else 0, "run", ctx.clean)
            if ctx.clean:
                if len(self._recent) >= 65536:
                    self._recent.clear()
                self._recent[key] = ref
                try:
                    self.results.publish(key, ref)
                except Exception as exc:  # best-effort, like the lookup
                    log.warning("results publish failed (result not memoized): %s", exc)
        except JobError as exc:
            self.flights.finish(flight, None, exc)
            if self.trace is not None:
                self._emit(req=key.hex(), parent=stack[-1].hex() if stack else None, depth=len(stack),
                           outcome="error", error=exc.kind.value, total_us=(time.perf_counter() - t0) * 1e6)
            raise
        except BaseException as exc:
            err = JobError(FailureKind.HOST_ERROR, f"{type(exc).__name__}: {exc}")
            self.flights.finish(flight, None, err)
            log.exception("job %s failed inside the host", short(key))
            raise err from exc
        self.flights.finish(flight, result, None)
        if self.trace is not None:
            self._emit(req=key.hex(), parent=stack[-1].hex() if stack else None, depth=len(stack),
                       outcome="run", worker=worker.describe(), total_us=(time.perf_counter() - t0) * 1e6, **stats)
        return result

    def _observe_cost(self, worker: object, seconds: float) -> None:
        # `worker` is the worker's _cost_key.
        # The median of the last three: one job preempted for a few ms on a loaded machine no
        # longer makes a cheap worker look costly (and its siblings fight over the GIL on threads),
        # while a worker that really got costly is seen as such by its second costly job.
        seen = self._cost_seen.get(worker)
        if seen is None:
            seen = self._cost_seen[worker] = []
        seen.append(seconds)
        if len(seen) > 3:
            del seen[0]
        if len(seen) == 3:
            a, b, c = seen
            # the median of three, without sorting a list
            self._cost[worker] = max(min(a, b), min(max(a, b), c))
        else:
            self._cost[worker] = max(seen)

    def _execute(self, ctx: JobContext) -> tuple[Ref, dict[str, Any]]:
        with self._count_lock:
            self._executions += 1
        worker = ctx.request.worker
        if isinstance(worker, WasmWorker):
            mid = worker.module
            if not self.store.has(mid) and not self._fetch_into_store(Ref(_BLOB, mid)):
                raise JobError(FailureKind.WORKER_NOT_FOUND,
                               f"module {short(mid)} is not in the store; store it first (Runner.put_module, "
                               "or 'warpmesh run MODULE.wasm')")
            loaded = self.host.load(mid, lambda: self.store.get_blob(mid))
            ref, stats = self.host.execute(loaded, ctx, ctx.request.limits, measure=self.trace is not None)
            if stats is None:
                return ref, {}
            return ref, {"fuel": stats.fuel_used, "instantiate_us": round(stats.instantiate_us, 1),
                         "guest_us": round(stats.total_us, 1)}
        fn = self._ops.get(worker.spec)
        if fn is None:
            raise JobError(FailureKind.WORKER_NOT_FOUND, f"no op {worker.spec} is registered on this host")
        try:
            out = fn(ctx)
        except JobError:
            raise
        except Exception as exc:
            raise JobError(FailureKind.OP_FAILED, f"op {worker.spec} raised {type(exc).__name__}: {exc}") from exc
        if isinstance(out, Ref):
            ctx.check_out(out)
            return out, {}
        if isinstance(out, bytes | str):
            return Ref(_BLOB, self.store.put_blob(value_to_blob(out, "op result"))), {}
        raise JobError(FailureKind.OP_FAILED, f"op {worker.spec} returned {type(out).__name__}; "
                       "return a Ref, bytes or str")

    def _lookup_many(self, keys: list[bytes]) -> dict[bytes, Ref]:
        try:
            many = getattr(self.results, "lookup_many", None)
            found = many(keys) if many is not None else {
                k: r for k in keys if (r := self.results.lookup(k)) is not None}
        except Exception as exc:  # best-effort: a failed lookup is a miss
            log.warning("results lookup failed (treated as a miss): %s", exc)
            return {}
        return {k: r for k, r in found.items()
                if self.store.kind_of(r.id) is r.kind or self._fetch_into_store(r)}

    def _resolve_many(self, reqs: list[_Prepared | JobError], stack: tuple[bytes, ...]
                      ) -> list[RunResult | JobError]:
        results: list[RunResult | JobError | None] = [None] * len(reqs)
        todo: list[tuple[int, _Prepared]] = []
        hits = self._lookup_many([p.key for p in reqs if not isinstance(p, JobError)])
        for i, prep in enumerate(reqs):
            if isinstance(prep, JobError):
                results[i] = prep
                continue
            ref = hits.get(prep.key)
            if ref is not None:  # answer hits here, without a task
                st = self.store.stat(ref.id)
                results[i] = RunResult(prep.key, ref, st[1] if st else 0, "memo")
                continue
            todo.append((i, prep))
        if not todo:
            return results  # type: ignore[return-value]
        keys = [p.key for _, p in todo]
        parent = stack[-1] if stack else None
        if parent is not None:
            self.flights.add_waits(parent, keys)
        # Jobs cheaper than a thread hand-off run one after another on this thread: under the
        # GIL, spreading them only adds contention. A worker not measured yet is spread.
        cost = self._cost
        spread = len(todo) > 1 and any(cost.get(_cost_key(p.request.worker), SPREAD_MIN_S) >= SPREAD_MIN_S
                                       for _, p in todo)
        try:
            if not spread and self.pool.nesting() < self.pool.inline_limit:
                # The pool would run them in order on this thread anyway: skip its task objects.
                for i, prep in todo:
                    try:
                        results[i] = self._resolve(prep, stack, looked_up=True)
                    except JobError as exc:
                        results[i] = exc
                    except BaseException as exc:
                        results[i] = JobError(FailureKind.HOST_ERROR, f"{type(exc).__name__}: {exc}")
            else:
                tasks = [(i, Task(lambda p=prep: self._resolve(p, stack, looked_up=True)))  # type: ignore[misc]
                         for i, prep in todo]
                self.pool.join_all([t for _, t in tasks], spread=spread)
                for i, task in tasks:
                    if task.error is None:
                        results[i] = task.result
                    elif isinstance(task.error, JobError):
                        results[i] = task.error
                    else:
                        results[i] = JobError(FailureKind.HOST_ERROR, f"{type(task.error).__name__}: {task.error}")
        finally:
            if parent is not None:
                self.flights.remove_waits(parent, keys)
        return results  # type: ignore[return-value]
