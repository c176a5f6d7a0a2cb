"""What travels on the Warp boards: task descriptors and op results (msgpack-able dicts).

A *run* token makes every enqueue unique: re-enqueuing a completed task id creates a new run, whose
result replaces the old one on the board, instead of being silently ignored (the reference's task
ids are single-use).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from warpmesh.errors import WarpmeshError
from warpmesh.wire.frame import FrameUndecodable, pack, unpack

#: Default op name used by the seed-compatible ``WarpNode(executor=fn)`` form.
EXECUTOR_OP = "warp.executor"


#: Largest traceback an answer carries (the tail is kept: the innermost frames say the most).
MAX_TRACEBACK = 8 * 1024


def cap_traceback(text: str | None, limit: int = MAX_TRACEBACK) -> str | None:
    """``text`` cut to its last ``limit`` bytes of UTF-8 (marked as cut), or None."""
    if not text:
        return None
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    tail = data[-(limit - 40):].decode("utf-8", "ignore")
    return f"... ({len(data) - len(tail.encode())} bytes cut)\n{tail}"


class ArgsUndecodable(WarpmeshError, ValueError):
    """A task's arguments could not be decoded (a hostile or newer enqueuer): the run fails."""


@dataclass(frozen=True, slots=True)
class TaskDescriptor:
    """One queued task: which op to call with which ``args``/``kwargs``, under which run token.

    The arguments travel packed on their own (``a``), so a descriptor whose arguments cannot be
    decoded still names its op and run, and its run fails with a recorded error instead of
    sitting in the queue forever. ``deadline`` is a wall-clock time (seconds since the epoch)
    after which the run is cancelled.
    """

    op: str
    args: tuple[Any, ...] = ()
    run: str = ""
    pin: str | None = None
    enqueued_by: str = ""
    kwargs: dict[str, Any] | None = None
    deadline: float | None = None
    #: The packed ``[args, kwargs]`` as received (None: built locally from args/kwargs).
    packed_args: bytes | None = field(default=None, compare=False, repr=False)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"op": self.op, "a": self.args_bytes(), "run": self.run, "by": self.enqueued_by}
        if self.pin is not None:
            wire["pin"] = self.pin
        if self.deadline is not None:
            wire["dl"] = self.deadline
        return wire

    def args_bytes(self) -> bytes:
        """The packed ``[args, kwargs]`` (raises TypeError when they cannot be encoded)."""
        if self.packed_args is not None:
            return self.packed_args
        return pack([list(self.args), self.kwargs or {}])

    def call_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments; raises :class:`ArgsUndecodable`."""
        if self.packed_args is None:
            return tuple(self.args), dict(self.kwargs or {})
        try:
            value = unpack(self.packed_args)
        except FrameUndecodable as err:
            raise ArgsUndecodable(f"arguments of {self.op} cannot be decoded: {err}") from None
        if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[0], list)
                or not isinstance(value[1], dict) or not all(isinstance(k, str) for k in value[1])):
            raise ArgsUndecodable(f"arguments of {self.op} cannot be decoded: expected [args list, "
                                  "kwargs map with string keys]")
        return tuple(value[0]), value[1]

    @classmethod
    def from_wire(cls, wire: Any) -> TaskDescriptor:
        if not isinstance(wire, dict):
            raise ValueError("task descriptor must be a map")
        op, run, pin, by = wire.get("op"), wire.get("run"), wire.get("pin"), wire.get("by", "")
        if not isinstance(op, str) or not isinstance(run, str) or not isinstance(by, str):
            raise ValueError("task descriptor needs string op, run and by")
        if pin is not None and not isinstance(pin, str):
            raise ValueError("task pin must be a peer id")
        dl = wire.get("dl")
        if dl is not None and (isinstance(dl, bool) or not isinstance(dl, int | float)):
            raise ValueError("task deadline must be a number")
        packed = wire.get("a")
        if not isinstance(packed, bytes):
            packed = b""  # undecodable: its run fails with ArgsUndecodable
        return cls(op=op, run=run, pin=pin, enqueued_by=by, deadline=None if dl is None else float(dl),
                   packed_args=packed)


@dataclass(frozen=True, slots=True)
class OpResult:
    """The outcome of one run of a task: a value, or a terminal error. Equal by content.

    A failure may carry the remote ``traceback`` (capped at :data:`MAX_TRACEBACK`); a cancelled
    run (``cancel`` or a passed deadline) is a failure with ``cancelled`` set.
    """

    run: str
    ok: bool
    value: Any = None
    error: str | None = None
    by: str = ""
    attempts: int = 1
    traceback: str | None = None
    cancelled: bool = False
    #: The op that ran (empty when unknown, e.g. from an older peer).
    op: str = ""

    @classmethod
    def success(cls, run: str, value: Any, *, by: str, attempts: int = 1, op: str = "") -> OpResult:
        return cls(run=run, ok=True, value=value, by=by, attempts=attempts, op=op)

    @classmethod
    def failure(cls, run: str, error: str, *, by: str, attempts: int = 1, traceback: str | None = None,
                cancelled: bool = False, op: str = "") -> OpResult:
        return cls(run=run, ok=False, error=error, by=by, attempts=attempts, traceback=cap_traceback(traceback),
                   cancelled=cancelled, op=op)

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"run": self.run, "ok": self.ok, "by": self.by, "n": self.attempts}
        if self.op:
            wire["o"] = self.op
        if self.ok:
            wire["value"] = self.value
        else:
            wire["error"] = self.error
            if self.traceback:
                wire["tb"] = self.traceback
            if self.cancelled:
                wire["cx"] = True
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
        op = wire.get("o", "")
        op = op if isinstance(op, str) else ""
        if ok:
            return cls(run=run, ok=True, value=wire.get("value"), by=by, attempts=n, op=op)
        tb = wire.get("tb")
        return cls(run=run, ok=False, error=str(wire.get("error")), by=by, attempts=n,
                   traceback=tb if isinstance(tb, str) else None, cancelled=wire.get("cx") is True, op=op)

    def unwrap(self, task_id: str = "") -> Any:
        """The value, or raise :class:`TaskFailed` carrying the error and remote traceback."""
        if not self.ok:
            raise TaskFailed(self.error or "task failed", traceback=self.traceback, task=task_id, by=self.by,
                             attempts=self.attempts, cancelled=self.cancelled)
        return self.value


class TaskFailed(WarpmeshError):
    """A task's run ended in a terminal failure (the error travelled on the results board).

    ``error`` is the one-line cause, ``traceback`` the remote traceback (None when the failure
    was not an exception in the op, e.g. a cancel); both appear in ``str(exc)``.
    """

    def __init__(self, error: str, *, traceback: str | None = None, task: str = "", by: str = "",
                 attempts: int = 1, cancelled: bool = False) -> None:
        where = f"task {task!r}" if task else "task"
        head = f"{where} failed on {by}: {error}" if by else f"{where} failed: {error}"
        super().__init__(head + (f"\n--- remote traceback ---\n{traceback.rstrip()}" if traceback else ""))
        self.error = error
        self.traceback = traceback
        self.task = task
        self.by = by
        self.attempts = attempts
        self.cancelled = cancelled


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
