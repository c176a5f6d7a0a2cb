"""Run one command job as a subprocess that nothing outlives.

The child starts in its own session and process group, with ``RLIMIT_CPU`` / ``RLIMIT_AS`` when the
job asks for them. stdout and stderr are drained by two threads into size-capped buffers (the rest
is read and counted, never kept, so a chatty child can neither block nor exhaust memory). On the
deadline or a cancellation the whole group gets SIGTERM, then, after a grace period, SIGKILL; after
the leader exits, any member still in the group is killed too, so no process of the job keeps
running (or keeps holding a build tool's lock) once :func:`run_process` returns. A process that
leaves the group on purpose (``setsid``) is beyond reach, as with any process-group supervisor.

Runtime module: subprocesses, threads, the wall clock.
"""

from __future__ import annotations

import contextlib
import os
import signal as _signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from warpmesh.errors import WarpmeshError
from warpmesh.workers.command import MAX_CAPTURE

__all__ = ["GRACE_SECONDS", "CommandResult", "SpawnError", "run_process"]

#: Seconds between SIGTERM and SIGKILL of a job's process group.
GRACE_SECONDS = 2.0


class SpawnError(WarpmeshError, OSError):
    """The command could not be started (missing executable, bad working directory...)."""


@dataclass
class CommandResult:
    """How a command job ended. :meth:`as_dict` is the ``command.run`` result."""

    exit_code: int | None
    signal: str | None
    stdout: str
    stderr: str
    truncated: bool
    seconds: float
    rusage: dict[str, float] = field(default_factory=dict)
    #: The deadline expired (the group was killed); not part of the wire result.
    timed_out: bool = False
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def as_dict(self) -> dict[str, Any]:
        return {"exit_code": self.exit_code, "signal": self.signal, "stdout": self.stdout,
                "stderr": self.stderr, "truncated": self.truncated, "seconds": round(self.seconds, 6),
                "rusage": dict(self.rusage)}


class _Capture:
    """Drain one pipe in a thread; keep at most ``cap`` bytes."""

    def __init__(self, pipe: IO[bytes], cap: int) -> None:
        self.buf = bytearray()
        self.dropped = 0
        self._pipe, self._cap = pipe, cap
        self.thread = threading.Thread(target=self._drain, daemon=True, name="warpmesh-capture")
        self.thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self._pipe.read1(65536):  # type: ignore[attr-defined]
                room = self._cap - len(self.buf)
                if room > 0:
                    self.buf += chunk[:room]
                self.dropped += max(0, len(chunk) - max(room, 0))
        with contextlib.suppress(OSError):
            self._pipe.close()

    def text(self) -> str:
        return self.buf.decode("utf-8", errors="replace")


def _limiter(cpu_seconds: int | None, memory_mb: int | None) -> Any:
    if cpu_seconds is None and memory_mb is None:
        return None
    import resource

    def apply() -> None:  # runs in the child between fork and exec: C calls only
        if cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        if memory_mb is not None:
            limit = memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def kill_group(pgid: int, sig: int = _signal.SIGKILL) -> bool:
    """Signal every process of group ``pgid``; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a recycled id owned by someone else
        return False
    return True


def run_process(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None, deadline: float | None = None,
                cpu_seconds: int | None = None, memory_mb: int | None = None,
                cancel: threading.Event | None = None, grace: float = GRACE_SECONDS,
                capture: int = MAX_CAPTURE) -> CommandResult:
    """Run ``argv`` to completion, the deadline or ``cancel``; see the module docstring.

    ``env`` is the child's whole environment (``None``: inherit). Raises :class:`SpawnError` if
    the command cannot start.
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
            preexec_fn=_limiter(cpu_seconds, memory_mb),
        )
    except FileNotFoundError as err:
        raise SpawnError(f"cannot run {argv[0]!r}: {err.strerror} (is it installed and on PATH?)") from None
    except (PermissionError, NotADirectoryError, OSError) as err:
        raise SpawnError(f"cannot run {argv[0]!r} in {cwd or os.getcwd()}: {err}") from None
    assert proc.stdout is not None and proc.stderr is not None
    out, err_cap = _Capture(proc.stdout, capture), _Capture(proc.stderr, capture)
    pgid = proc.pid  # start_new_session: the child leads its own group
    timed_out = cancelled = False
    try:
        status, usage = _wait(proc.pid, start + deadline if deadline is not None else None, cancel)
        if status is None:  # deadline or cancel: TERM the group, then KILL it
            timed_out = not (cancel is not None and cancel.is_set())
            cancelled = not timed_out
            kill_group(pgid, _signal.SIGTERM)
            status, usage = _wait(proc.pid, time.monotonic() + grace, None)
            if status is None:
                kill_group(pgid, _signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # interrupted while waiting: the job must not outlive us either
        kill_group(pgid)
        with contextlib.suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        proc.returncode = -9
        raise
    kill_group(pgid)  # members that outlived the leader (daemons, `cmd &`) go with it
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    for cap in (out, err_cap):
        cap.thread.join(timeout=5.0)
    seconds = time.monotonic() - start
    sig = _signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    rusage = {"utime": round(usage.ru_utime, 6), "stime": round(usage.ru_stime, 6), "maxrss_kb": usage.ru_maxrss}
    return CommandResult(exit_code=code, signal=sig, stdout=out.text(), stderr=err_cap.text(),
                         truncated=bool(out.dropped or err_cap.dropped), seconds=seconds, rusage=rusage,
                         timed_out=timed_out, cancelled=cancelled)


def _wait(pid: int, until: float | None, cancel: threading.Event | None) -> tuple[Any, Any]:
    """Poll ``pid`` until it exits (returns its status and rusage) or ``until``/``cancel`` (None)."""
    pause = 0.001
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got:
            return status, usage
        if cancel is not None and cancel.is_set():
            return None, None
        now = time.monotonic()
        if until is not None and now >= until:
            return None, None
        step = pause if until is None else min(pause, max(until - now, 0.0))
        if cancel is not None:
            cancel.wait(step)
        else:
            time.sleep(step)
        pause = min(pause * 2, 0.02)
