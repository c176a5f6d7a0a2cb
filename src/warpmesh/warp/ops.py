"""Op registry: named operations every peer registers at startup, and how each one runs.

Only ``(op name, args)`` travels; every peer resolves the name in its own registry. A peer that
lacks an op stands by for that task (another peer's registry may have it) instead of failing it.

How an op runs is part of its registration:

* ``async def`` ops are awaited on the event loop;
* ``mode="inline"`` sync ops run directly on the loop: the fastest path for trivial functions, but
  they must be short (a long inline op delays heartbeats);
* ``mode="thread"`` (the default for sync ops) runs in a thread pool: for I/O-bound or GIL-releasing
  code;
* ``mode="process"`` runs in a process pool, so CPU-bound Python uses every core. The function must
  be importable by name (a module-level function).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Mode = Literal["inline", "thread", "process", "async"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class OpSpec:
    """A registered op."""

    name: str
    fn: Callable[..., Any]
    mode: Mode
    #: Exception types that count as transient (retried); everything else is terminal.
    retry_on: tuple[type[BaseException], ...] = field(default=())


class OpRegistry:
    """Name → op. Registering a name twice is an error (two peers must mean the same thing by it)."""

    def __init__(self) -> None:
        self._ops: dict[str, OpSpec] = {}

    def register(
        self,
        name: str,
        fn: Callable[..., Any],
        *,
        mode: Mode | None = None,
        retry_on: tuple[type[BaseException], ...] = (),
    ) -> OpSpec:
        """Register ``fn`` under ``name``; ``mode`` defaults to async for coroutines, else thread."""
        if not isinstance(name, str) or not name:
            raise ValueError("op name must be a non-empty string")
        if name in self._ops and self._ops[name].fn is not fn:
            raise ValueError(f"op {name!r} is already registered")
        is_async = inspect.iscoroutinefunction(fn)
        if mode is None:
            mode = "async" if is_async else "thread"
        if is_async != (mode == "async"):
            raise ValueError(f"op {name!r}: coroutine functions run as mode='async', others cannot")
        if mode == "process":
            _check_process_op(name, fn)
        spec = OpSpec(name, fn, mode, tuple(retry_on))
        self._ops[name] = spec
        return spec

    def op(self, name: str, *, mode: Mode | None = None,
           retry_on: tuple[type[BaseException], ...] = ()) -> Callable[[F], F]:
        """Decorator form of :meth:`register`."""

        def deco(fn: F) -> F:
            self.register(name, fn, mode=mode, retry_on=retry_on)
            return fn

        return deco

    def resolve(self, name: str) -> OpSpec | None:
        return self._ops.get(name)

    def names(self) -> list[str]:
        return sorted(self._ops)

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __len__(self) -> int:
        return len(self._ops)

    def update(self, other: OpRegistry) -> None:
        for spec in other._ops.values():
            self.register(spec.name, spec.fn, mode=spec.mode, retry_on=spec.retry_on)


def _check_process_op(name: str, fn: Callable[..., Any]) -> None:
    """A process op must be found by name in a fresh worker process (the pool spawns them)."""
    if "<locals>" in getattr(fn, "__qualname__", "<locals>") or "<lambda>" in getattr(fn, "__qualname__", ""):
        raise ValueError(f"op {name!r}: process ops must be module-level functions importable by name "
                         "(not lambdas or nested functions)")
    if fn.__module__ == "__main__":
        import sys

        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) is None:
            raise ValueError(f"op {name!r}: a process op defined interactively cannot be found by the worker "
                             "processes; put it in a module (a .py file) and import it from there")
        # A script run as a file works: each worker process re-imports it (as __mp_main__), so the
        # script must start its mesh under `if __name__ == "__main__":`.


#: The process-wide default registry that :func:`warp_op` fills.
default_registry = OpRegistry()


def warp_op(name: str, *, mode: Mode | None = None,
            retry_on: tuple[type[BaseException], ...] = ()) -> Callable[[F], F]:
    """Register a function as a Warp op in :data:`default_registry`::

        @warp_op("thumbnail", mode="process")
        def thumbnail(path: str) -> bytes: ...
    """
    return default_registry.op(name, mode=mode, retry_on=retry_on)


def load_ops_module(module: str) -> OpRegistry:
    """Import ``module`` (e.g. ``mypkg.jobs``) so its ``@warp_op`` registrations run; return the registry.

    A module may also expose ``registry: OpRegistry`` explicitly, which is returned instead.
    """
    import importlib

    mod = importlib.import_module(module)
    explicit = getattr(mod, "registry", None)
    if isinstance(explicit, OpRegistry):
        return explicit
    return default_registry
