"""A process pool driven by the event loop: one pipe per worker process, no helper threads.

``concurrent.futures.ProcessPoolExecutor`` hands each call through two threads of the parent (a
queue feeder and a result manager) and wakes the loop from them: about 200 µs of the parent's CPU
per call, competing with the jobs for the cores. It also cannot tell its workers apart, so stopping
one call means killing the whole pool, and every sibling run starts over. Here the loop writes each
call straight to an idle worker's pipe and reads the answer when the pipe is readable, and a call
can be stopped by killing exactly the process that runs it (:meth:`PoolCall.kill`).

Workers are started with the ``spawn`` method (a fresh interpreter: no inherited locks or loop
state), on demand up to ``size``, and replaced when one dies. Functions travel by reference, as
with any pickle-based pool: they must be importable in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import pickle
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from warpmesh.errors import Closed, WarpmeshError

__all__ = ["PoolCall", "ProcessPool", "RemoteTraceback", "WorkerDied"]


class WorkerDied(WarpmeshError):
    """The worker process running a call ended before answering (killed, crashed, out of memory)."""

    def __init__(self, exitcode: int | None) -> None:
        self.exitcode = exitcode
        how = "still running" if exitcode is None else (
            f"killed by signal {-exitcode}" if exitcode < 0 else f"exit code {exitcode}")
        super().__init__(f"the worker process died ({how})")


class RemoteTraceback(WarpmeshError):
    """The traceback of an exception raised in a worker process (set as the ``__cause__`` of the
    exception re-raised here)."""

    def __init__(self, tb: str) -> None:
        self.tb = tb
        super().__init__(tb)

    def __str__(self) -> str:
        return self.tb


def _worker_main(conn: Connection) -> None:
    """A worker's loop: read a pickled ``(fn, args, kwargs)``, answer ``(ok, value, traceback)``."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides what stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe or is gone
        tb = ""
        try:
            fn, args, kwargs = pickle.loads(data)
            out: tuple[bool, Any, str] = (True, fn(*args, **kwargs), "")
        except BaseException as err:  # SystemExit too: it is the call's outcome, not the worker's
            tb = "".join(traceback.format_exception(err))
            out = (False, err, tb)
        try:
            payload = pickle.dumps(out, pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            what = "result" if out[0] else "exception"
            why = RuntimeError(f"the call's {what} cannot be sent back from the worker process: {err!r}")
            payload = pickle.dumps((False, why, tb), pickle.HIGHEST_PROTOCOL)
        try:
            conn.send_bytes(payload)
        except OSError:
            return


class PoolCall:
    """One call submitted to a :class:`ProcessPool`: await :meth:`result`, or :meth:`kill` it."""

    __slots__ = ("_pool", "_worker", "args", "fn", "future", "kwargs")

    def __init__(self, pool: ProcessPool, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 future: asyncio.Future[Any]) -> None:
        self._pool = pool
        self._worker: _Worker | None = None
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.future = future

    @property
    def started(self) -> bool:
        """Whether a worker process has been handed the call."""
        return self._worker is not None

    async def result(self) -> Any:
        """The call's value; its exception (with the worker's traceback as ``__cause__``), or
        :class:`WorkerDied` if its process ended first."""
        return await self.future

    def kill(self) -> None:
        """Stop the call: a waiting call is dropped, a running one's process is killed (and replaced
        when work needs it). The other calls are not touched. Awaiting :meth:`result` then raises
        :class:`asyncio.CancelledError`."""
        self.future.cancel()
        self._pool._kill(self)


class _Worker:
    __slots__ = ("call", "conn", "proc")

    def __init__(self, proc: Any, conn: Connection) -> None:
        self.proc = proc
        self.conn = conn
        self.call: PoolCall | None = None


class ProcessPool:
    """Up to ``size`` worker processes running calls submitted from the running event loop."""

    def __init__(self, size: int, *, context: Any = None) -> None:
        if size < 1:
            raise ValueError("a process pool needs at least one worker")
        self.size = size
        self._ctx = context if context is not None else multiprocessing.get_context("spawn")
        self._workers: set[_Worker] = set()
        self._idle: list[_Worker] = []
        self._waiting: collections.deque[PoolCall] = collections.deque()
        self._closed = False
        #: Worker processes started so far (replacements included).
        self.started = 0

    @property
    def busy(self) -> int:
        """Calls running in a worker process now."""
        return sum(1 for w in self._workers if w.call is not None)

    def submit(self, fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> PoolCall:
        """Queue ``fn(*args, **kwargs)`` for the next free worker; returns its :class:`PoolCall`."""
        if self._closed:
            raise Closed("the process pool is closed")
        call = PoolCall(self, fn, args, kwargs or {}, asyncio.get_running_loop().create_future())
        self._waiting.append(call)
        self._dispatch()
        return call

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Submit ``fn(*args, **kwargs)`` and await its value."""
        return await self.submit(fn, args, kwargs).result()

    def start_workers(self) -> None:
        """Start every worker process now (their interpreters boot while the caller goes on), not
        on the first calls."""
        while len(self._workers) < self.size and not self._closed:
            self._idle.append(self._spawn())

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Kill every worker process; calls not finished are cancelled. (``with ProcessPool(n) as
        pool:`` closes it on the way out.)"""
        if self._closed:
            return
        self._closed = True
        for call in self._waiting:
            call.future.cancel()
        self._waiting.clear()
        workers, self._workers, self._idle = list(self._workers), set(), []
        for w in workers:
            if w.call is not None:
                w.call.future.cancel()
            self._retire(w, kill=True)
        for w in workers:
            w.proc.join(1.0)  # a killed process exits at once; joined so that none is left a zombie

    # -- internals ------------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True, name="warpmesh-pool-worker")
        proc.start()
        child.close()
        w = _Worker(proc, parent)
        self._workers.add(w)
        self.started += 1
        asyncio.get_running_loop().add_reader(parent.fileno(), self._on_readable, w)
        return w

    def _dispatch(self) -> None:
        while self._waiting and not self._closed:
            if self._idle:
                w = self._idle.pop()
            elif len(self._workers) < self.size:
                w = self._spawn()
            else:
                return
            call = self._waiting.popleft()
            if call.future.done():
                self._idle.append(w)  # killed before it started
                continue
            try:
                payload = pickle.dumps((call.fn, call.args, call.kwargs), pickle.HIGHEST_PROTOCOL)
            except Exception as err:
                self._idle.append(w)
                call.future.set_exception(err)
                continue
            w.call, call._worker = call, w
            try:
                # The worker is idle and reading: even a payload larger than the pipe's buffer is
                # taken as fast as it is written.
                w.conn.send_bytes(payload)
            except OSError:
                self._lost(w)

    def _on_readable(self, w: _Worker) -> None:
        try:
            data = w.conn.recv_bytes()
        except (EOFError, OSError):
            self._lost(w)
            return
        call, w.call = w.call, None
        if w in self._workers:
            self._idle.append(w)
        if call is not None:
            call._worker = None
            if not call.future.done():
                self._settle(call, data)
        self._dispatch()

    @staticmethod
    def _settle(call: PoolCall, data: bytes) -> None:
        try:
            ok, value, tb = pickle.loads(data)
        except Exception as err:
            call.future.set_exception(RuntimeError(f"the answer of {_name(call.fn)} cannot be read here: {err!r}"))
            return
        if ok:
            call.future.set_result(value)
            return
        if not isinstance(value, BaseException):
            value = RuntimeError(repr(value))
        elif isinstance(value, KeyboardInterrupt):
            # Re-raised here it would stop the event loop: the call raised it, not this process.
            value = RuntimeError(f"{_name(call.fn)} raised KeyboardInterrupt")
        if tb:
            value.__cause__ = RemoteTraceback(tb)
        call.future.set_exception(value)

    def _lost(self, w: _Worker) -> None:
        """The worker's pipe ended: its process died (or was killed). Its call fails with the exit
        status once the process is reaped."""
        call, w.call = w.call, None
        if call is not None:
            call._worker = None

        def exited() -> None:
            if call is not None and not call.future.done():
                call.future.set_exception(WorkerDied(w.proc.exitcode))

        self._drop(w, kill=False, then=exited)

    def _drop(self, w: _Worker, *, kill: bool, then: Callable[[], None] | None = None) -> None:
        """Take the worker out of service (see :meth:`_retire`); a replacement starts if work is waiting."""
        self._workers.discard(w)
        with contextlib.suppress(ValueError):
            self._idle.remove(w)
        self._retire(w, kill=kill, then=then)
        self._dispatch()

    def _retire(self, w: _Worker, *, kill: bool, then: Callable[[], None] | None = None) -> None:
        """Close the worker's pipe (and kill it); once its process has exited, reap it (no zombie
        is left) and call ``then``."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_reader(w.conn.fileno())
        with contextlib.suppress(OSError):
            w.conn.close()
        if kill:
            with contextlib.suppress(Exception):
                w.proc.kill()
        w.proc.join(0)
        if w.proc.exitcode is not None or self._closed:
            if then is not None:
                then()
            return
        sentinel = w.proc.sentinel  # readable once the process has exited

        def reap() -> None:
            loop.remove_reader(sentinel)
            # The sentinel closes as the process exits, a moment before it can be waited for.
            w.proc.join(0.5)
            if then is not None:
                then()

        loop.add_reader(sentinel, reap)

    def _kill(self, call: PoolCall) -> None:
        w = call._worker
        if w is None:
            with contextlib.suppress(ValueError):
                self._waiting.remove(call)
            return
        call._worker = None
        w.call = None
        self._drop(w, kill=True)


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
