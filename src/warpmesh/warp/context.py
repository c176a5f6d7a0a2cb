"""``warp.current_job()``: what an op knows about the run it is serving.

An op may look at :func:`current_job` to learn its task id, run token and attempt, and poll
``current_job().cancelled`` to stop early when the run was cancelled (``node.cancel``, ``warpmesh
cancel``) or its deadline passed. Inline and thread ops cannot be interrupted from outside: they
are told this way, and whatever they return afterwards is discarded. Process ops run in another
process and see no context (``current_job()`` is None there); they are killed instead.
"""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field

__all__ = ["JobContext", "current_job"]


@dataclass
class JobContext:
    """The run an op is serving."""

    task: str
    run: str
    op: str
    attempt: int = 1
    # The event a thread op may block on is made only when one does (wait_cancelled): every run
    # gets a context, and an Event (a Condition and its lock) per trivial job cost ~10% of its time.
    _cancel: threading.Event | None = field(default=None, repr=False)
    reason: str = ""
    _flag: bool = field(default=False, repr=False)

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled or its deadline passed (stop and return anything)."""
        return self._flag

    def cancel(self, reason: str) -> None:
        if not self._flag:
            self.reason = reason
            self._flag = True
            event = self._cancel
            if event is not None:
                event.set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` s until the run is cancelled (for thread ops); True if it was."""
        event = self._cancel
        if event is None:
            with _event_lock:
                event = self._cancel
                if event is None:
                    event = self._cancel = threading.Event()
        # Set after publishing the event: a cancel either sees the event or is seen here.
        if self._flag:
            event.set()
        return event.wait(timeout)


_event_lock = threading.Lock()

_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("warp_job", default=None)


def current_job() -> JobContext | None:
    """The run the calling op serves (None outside an op, and in process ops)."""
    return _current.get()


def _set(ctx: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(ctx)


def _reset(token: contextvars.Token[JobContext | None]) -> None:
    _current.reset(token)
