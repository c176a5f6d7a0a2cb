"""What travels on the Warp boards: task descriptors and op results (msgpack-able dicts).

A *run* token makes every enqueue unique: re-enqueuing a completed task id creates a new run, whose
result replaces the old one on the board, instead of being silently ignored (the reference's task
ids are single-use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from warpmesh.errors import WarpmeshError

#: Default op name used by the seed-compatible ``WarpNode(executor=fn)`` form.
EXECUTOR_OP = "warp.executor"


@dataclass(frozen=True, slots=True)
class TaskDescriptor:
    """One queued task: which op to run on which args, under which run token."""

    op: str
    args: Any
    run: str
    pin: str | None = None
    enqueued_by: str = ""

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"op": self.op, "args": self.args, "run": self.run, "by": self.enqueued_by}
        if self.pin is not None:
            wire["pin"] = self.pin
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> TaskDescriptor:
        if not isinstance(wire, dict):
            raise ValueError("task descriptor must be a map")
        op, run, pin, by = wire.get("op"), wire.get("run"), wire.get("pin"), wire.get("by", "")
        if not isinstance(op, str) or not isinstance(run, str) or not isinstance(by, str):
            raise ValueError("task descriptor needs string op, run and by")
        if pin is not None and not isinstance(pin, str):
            raise ValueError("task pin must be a peer id")
        return cls(op=op, args=wire.get("args"), run=run, pin=pin, enqueued_by=by)


@dataclass(frozen=True, slots=True)
class OpResult:
    """The outcome of one run of a task: a value, or a terminal error. Equal by content."""

    run: str
    ok: bool
    value: Any = None
    error: str | None = None
    by: str = ""
    attempts: int = 1

    @classmethod
    def success(cls, run: str, value: Any, *, by: str, attempts: int = 1) -> OpResult:
        return cls(run=run, ok=True, value=value, by=by, attempts=attempts)

    @classmethod
    def failure(cls, run: str, error: str, *, by: str, attempts: int = 1) -> OpResult:
        return cls(run=run, ok=False, error=error, by=by, attempts=attempts)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"run": self.run, "ok": self.ok, "by": self.by, "n": self.attempts}
        if self.ok:
            wire["value"] = self.value
        else:
            wire["error"] = self.error
        return wire

    @classmethod
    def from_wire(cls, wire: Any) -> OpResult:
        if not isinstance(wire, dict):
            raise ValueError("op result must be a map")
        run, ok, by, n = wire.get("run"), wire.get("ok"), wire.get("by", ""), wire.get("n", 1)
        if not isinstance(run, str) or not isinstance(ok, bool) or not isinstance(by, str):
            raise ValueError("op result needs run, ok and by")
        if not isinstance(n, int) or n < 1:
            raise ValueError("op result attempts must be a positive int")
        if ok:
            return cls(run=run, ok=True, value=wire.get("value"), by=by, attempts=n)
        error = wire.get("error")
        return cls(run=run, ok=False, error=str(error), by=by, attempts=n)

    def unwrap(self) -> Any:
        """The value, or raise :class:`TaskFailed` carrying the error."""
        if not self.ok:
            raise TaskFailed(self.error or "task failed")
        return self.value


class TaskFailed(WarpmeshError):
    """A task's run ended in a terminal failure (the error travelled on the results board)."""


class NotReplicated(WarpmeshError):
    """``enqueue`` could not confirm that another peer holds the task.

    The task *is* queued on this peer and will replicate (and run) once peers are reachable, but
    it would not survive this peer crashing before then. Retry through another peer if it must.
    """

    def __init__(self, task_id: str, run: str, reason: str) -> None:
        super().__init__(f"task {task_id!r} (run {run}) is queued only on this peer: {reason}; "
                         "it replicates once a peer is reachable - retry through another peer if it "
                         "must survive this one")
        self.task_id = task_id
        self.run = run


class TransientError(WarpmeshError):
    """Raise from an op to request a retry (with backoff, up to the configured attempt limit)."""


class Standby(WarpmeshError):
    """Raise from an op when this peer cannot run the task *yet* (a dependency that no peer can
    supply right now, such as a module nobody holds): the claim is released without a result and
    without using up an attempt, and the task is considered again after ``retry_after`` seconds
    (at the next re-claim pass), or at once when :meth:`WarpNode.wake_standby` is called.

    Unlike :class:`TransientError`, waiting this out never turns into a terminal failure.
    """

    def __init__(self, reason: str = "", *, retry_after: float = 5.0) -> None:
        super().__init__(reason)
        if not retry_after >= 0:
            raise ValueError("retry_after must be >= 0")
        self.retry_after = float(retry_after)
