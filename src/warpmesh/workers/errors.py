"""Typed job failures.

A job either produces a result reference or fails with one :class:`JobError`. ``kind`` is a stable
label (also what a guest sees as the prefix of an error message), so callers can branch on it
without parsing text. Failures are never memoized.
"""

from __future__ import annotations

from enum import StrEnum

from warpmesh.errors import WarpmeshError


class FailureKind(StrEnum):
    """Why a job failed."""

    #: The guest trapped (``unreachable``, out-of-bounds access, ``proc_exit``, stack overflow ...).
    TRAP = "trap"
    #: The guest used up its fuel (deterministic CPU budget; part of the cache key).
    FUEL_EXHAUSTED = "fuel_exhausted"
    #: The guest ran past its wall-clock deadline (epoch interruption).
    DEADLINE = "deadline"
    #: The guest needed more memory than its cap (at instantiation, or it trapped at the cap).
    MEMORY_LIMIT = "memory_limit"
    #: The guest returned without calling ``out``.
    MISSING_OUT = "missing_out"
    #: The guest called ``out`` a second time.
    DOUBLE_OUT = "double_out"
    #: The module is malformed, lacks the required exports, or imports something not provided.
    MODULE_REJECTED = "module_rejected"
    #: The worker (module or named op) is not available on this host.
    WORKER_NOT_FOUND = "worker_not_found"
    #: Running the request would wait on itself; the message lists the cycle.
    CYCLE = "cycle"
    #: Nested runs went deeper than the host's ``max_depth``.
    DEPTH_EXCEEDED = "depth_exceeded"
    #: A named (Python) op raised.
    OP_FAILED = "op_failed"
    #: The request itself is malformed (missing object, bad argument ...).
    BAD_REQUEST = "bad_request"
    #: The host could not run the job (instance pool exhausted, host closed ...). Retry later.
    HOST_ERROR = "host_error"


class JobError(WarpmeshError):
    """A job failed. ``kind`` says why (see :class:`FailureKind`), the message says what happened."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.detail = message

    def __reduce__(self) -> tuple[type, tuple[FailureKind, str]]:
        return (type(self), (self.kind, self.detail))
