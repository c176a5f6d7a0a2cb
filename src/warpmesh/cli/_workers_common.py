"""Options and helpers shared by the ``run`` and ``fold`` commands."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: The last guest log lines of this process: a trap usually follows the line that says why.
_recent_guest: deque[str] = deque(maxlen=8)


class _Recorder(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _recent_guest.append(record.getMessage())


def check_wasm(data: bytes, name: str, hint: str) -> bytes:
    """Refuse bytes that are neither a binary module (``\\0asm``) nor WAT text, saying so."""
    if not data.startswith(b"\0asm"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise click.BadParameter(f"{name} is not a WebAssembly module: it neither starts with the "
                                     "binary magic \\0asm nor is WAT text", param_hint=hint) from None
    return data


def store_options(fn: F) -> F:
    """--store, --salt and the limit options."""
    fn = click.option("--deadline", type=click.FloatRange(min=0.001), default=30.0, show_default=True,
                      help="Wall-clock budget per job, in seconds (not part of the cache key).")(fn)
    fn = click.option("--memory", "memory_mib", type=click.IntRange(min=1, max=4096), default=64,
                      show_default=True, help="Memory cap per job, in MiB (part of the cache key).")(fn)
    fn = click.option("--fuel", type=click.IntRange(min=1, max=2**63 - 1), default=1_000_000_000,
                      show_default=True, help="Fuel per job, about one per wasm instruction (part of the cache key).")(fn)
    fn = click.option("--salt", default="", help="Opaque salt; a different salt re-keys (and reruns) everything.")(fn)
    fn = click.option("--trace", "trace_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                      help="Append one JSON line per run (hit, run, flight-wait, error, cycle) to this file.")(fn)
    fn = click.option("--store", "store_dir", type=click.Path(file_okay=False, path_type=Path), envvar="WARPMESH_STORE",
                      default=None, help="Store directory (default: $WARPMESH_STORE or the per-user cache dir).")(fn)
    return fn


def open_runner(store_dir: Path | None, trace_path: Path | None = None) -> Any:
    """A runner on the chosen store; guest log lines go to stderr as ``guest: ...``."""
    import json
    import logging
    import threading
    import time

    from warpmesh.workers import HostConfig, IsolateHost, Runner, Store, StoreError, default_store_dir

    guest_log = logging.getLogger("warpmesh.guest")
    if not guest_log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("guest: %(message)s"))
        guest_log.addHandler(handler)
        guest_log.setLevel(logging.INFO)
        guest_log.propagate = False
        guest_log.addHandler(_Recorder())

    root = store_dir or default_store_dir()
    try:
        store = Store(root)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    host = IsolateHost(HostConfig(artifact_dir=root / "compiled"))
    trace = None
    if trace_path is not None:
        try:
            sink = trace_path.open("a", encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot open trace file {trace_path}: {exc.strerror}") from None
        lock = threading.Lock()

        def trace(fields: dict[str, Any]) -> None:
            line = json.dumps({"t": round(time.time() * 1e3, 3), **fields})
            with lock:
                sink.write(line + "\n")
                sink.flush()

    return Runner(store, host, trace=trace), host


def limits(fuel: int, memory_mib: int, deadline: float) -> Any:
    from warpmesh.workers import Limits

    return Limits(fuel=fuel, memory_bytes=memory_mib * 1024 * 1024, deadline_s=deadline)


def job_failed(exc: Exception) -> click.ClickException:
    """The error to show for a failed job: when a guest trapped right after logging a failure (a
    fold whose child failed), the cause comes first and the trap after it."""
    kind = getattr(getattr(exc, "kind", None), "value", None)
    cause = next((m for m in reversed(_recent_guest) if "fail" in m or "error" in m), None)
    if kind == "trap" and cause is not None:
        return click.ClickException(f"job failed: {cause} (the guest then trapped: {exc})")
    return click.ClickException(f"job failed: {exc}")
