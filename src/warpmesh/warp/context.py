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
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    reason: str = ""

    @property
    def cancelled(self) -> bool:
        """True once the run was cancelled or its deadline passed (stop and return anything)."""
        return self._cancel.is_set()

    def cancel(self, reason: str) -> None:
        if not self._cancel.is_set():
            self.reason = reason
            self._cancel.set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` s until the run is cancelled (for thread ops); True if it was."""
        return self._cancel.wait(timeout)


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("warp_job", default=None)


def current_job() -> JobContext | None:
    """The run the calling op serves (None outside an op, and in process ops)."""
    return _current.get()


def _set(ctx: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(ctx)


def _reset(token: contextvars.Token[JobContext | None]) -> None:
    _current.reset(token)
