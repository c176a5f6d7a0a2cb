"""Fork-join execution of nested runs with a bounded number of *running* jobs.

``parallelism`` slots bound how many jobs execute at once. A job holds a slot only while it
executes; when it waits for nested runs (``run`` / ``run_many``) it gives its slot back first, so a
parent waiting on children never holds a slot and a chain of any depth cannot starve itself of
workers -- the deadlock a bounded pool of blocking workers has.

A waiting parent does not just sleep: it *helps*, running its own not-yet-started children on its
own thread (each child takes a slot like any job), while idle pool threads take the others. It
sleeps only when every child has been taken by some thread, i.e. when each child is running and
will finish (the dependency graph is acyclic: cycles are refused before anything waits, see
:mod:`warpmesh.workers.runner`). Helping keeps the common case free of thread hand-offs.

Helping nests a child's stack frames on top of its parent's. Past ``inline_limit`` nested levels a
thread stops helping and hands its children to the pool, spawning an extra (temporary) pool thread
when none is idle, so deep chains spread over threads instead of overflowing one stack.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

#: Stack size for pool threads; nested guests (helping) stack wasm and Python frames.
THREAD_STACK_BYTES = 64 * 1024 * 1024


class Latch:
    """A one-shot completion signal, cheaper than ``threading.Event`` (one lock, no condition)."""

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            self._lock.release()
            return True
        return False

    def is_set(self) -> bool:
        return self._set


class Slots:
    """A counting semaphore whose uncontended acquire/release is one lock round trip.

    ``threading.Semaphore`` takes a Condition (several Python-level calls) on every operation; every
    job takes and gives back a slot, so that cost was paid a few times per job.
    """

    __slots__ = ("_cv", "_lock", "_value", "_waiting")

    def __init__(self, n: int) -> None:
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._value = n
        self._waiting = 0

    def acquire(self) -> None:
        with self._lock:
            if self._value > 0:
                self._value -= 1
                return
            self._waiting += 1
            try:
                while self._value <= 0:
                    self._cv.wait()
            finally:
                self._waiting -= 1
            self._value -= 1

    def release(self) -> None:
        with self._lock:
            self._value += 1
            if self._waiting:
                self._cv.notify()


class Task:
    """A unit of work that exactly one thread runs (whoever claims it first)."""

    __slots__ = ("_done", "claimed", "error", "fn", "result")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.claimed = False
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = Latch()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self._done.set()

    def wait(self) -> None:
        self._done.wait()

    @property
    def done(self) -> bool:
        return self._done.is_set()


class Pool:
    """Slots plus a shared queue of claimable tasks and a small set of pool threads."""

    def __init__(self, parallelism: int, *, inline_limit: int = 24, idle_exit_s: float = 2.0) -> None:
        if parallelism < 1:
            raise ValueError("parallelism must be at least 1")
        self.parallelism = parallelism
        self.inline_limit = inline_limit
        self.idle_exit_s = idle_exit_s
        self.slots = Slots(parallelism)
        self._cv = threading.Condition(threading.Lock())
        self._queue: deque[Task] = deque()
        self._threads = 0
        self._idle = 0
        self._closed = False
        self._local = threading.local()

    # -- nesting depth of the current thread ---------------------------------------------------------

    def _nesting(self) -> int:
        return getattr(self._local, "nesting", 0)

    def nesting(self) -> int:
        """How many jobs the calling thread is executing (nested by helping); 0 outside any job."""
        return self._nesting()

    def run_inline(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on this thread holding one slot (the way a job executes)."""
        self.slots.acquire()
        self._local.nesting = self._nesting() + 1
        try:
            return fn()
        finally:
            self._local.nesting -= 1
            self.slots.release()

    def _claim(self, task: Task) -> bool:
        with self._cv:
            if task.claimed:
                return False
            task.claimed = True
            return True

    # -- fork-join ----------------------------------------------------------------------------------

    def join_all(self, tasks: Sequence[Task], *, spread: bool = True) -> None:
        """Run ``tasks`` (in parallel where possible) and return when all are done.

        The caller must not hold a slot. Each task's ``fn`` must take its own slot to execute (see
        :meth:`run_inline`); task errors are left on the tasks. With ``spread=False`` (cheap tasks,
        for which a thread hand-off costs more than it saves) they run one after another on this
        thread, unless it is nested too deep to help.
        """
        if not tasks:
            return
        if (len(tasks) == 1 or not spread) and self._nesting() < self.inline_limit:
            for task in tasks:
                task.claimed = True
                task.run()
            return
        with self._cv:
            self._queue.extend(tasks)
            self._wake(len(tasks))
        if self._nesting() < self.inline_limit:
            for task in tasks:
                if self._claim(task):
                    task.run()
        else:
            # Too deep to help: make sure some thread is free to take our children.
            with self._cv:
                self._wake(len(tasks), force_spawn=True)
        for task in tasks:
            task.wait()

    def _wake(self, n: int, force_spawn: bool = False) -> None:
        # Called with the lock held. Wake idle threads and lazily start pool threads up to
        # `parallelism`; a caller too deep to help may add one thread beyond that when none is idle.
        self._cv.notify(min(n, self._idle))
        spawn = min(n - self._idle, self.parallelism - self._threads)
        if force_spawn and self._idle == 0:
            spawn = max(spawn, 1)
        for _ in range(max(spawn, 0)):
            self._spawn()

    def _spawn(self) -> None:
        self._threads += 1
        old = threading.stack_size()
        try:
            with contextlib.suppress(ValueError, RuntimeError):  # platform refuses: keep its default
                threading.stack_size(THREAD_STACK_BYTES)
            t = threading.Thread(target=self._worker, name="warpmesh-worker", daemon=True)
        finally:
            threading.stack_size(old)
        t.start()

    def _worker(self) -> None:
        while True:
            with self._cv:
                task = None
                while task is None:
                    while self._queue and self._queue[0].claimed:
                        self._queue.popleft()  # already run by a helping parent
                    if self._queue:
                        task = self._queue.popleft()
                        task.claimed = True
                        break
                    if self._closed:
                        self._threads -= 1
                        return
                    self._idle += 1
                    woke = self._cv.wait(self.idle_exit_s)
                    self._idle -= 1
                    if not woke and not self._queue and self._threads > self.parallelism:
                        self._threads -= 1
                        return
            task.run()

    def close(self) -> None:
        """Let pool threads exit once the queue is empty."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    @property
    def threads(self) -> int:
        return self._threads
