"""Lazy package exports: a package ``__init__`` names its runtime exports without importing them.

Importing a pure core (``warpmesh.raft.core``) runs its package's ``__init__`` first; if that
``__init__`` imported the package's runtime eagerly, every core would drag asyncio, sockets or SQLite
in with it. A package lists its runtime names here instead; the first attribute access imports the
owning module and caches the value in the package namespace::

    __getattr__, __dir__ = lazy_exports(__name__, globals(), {"Quilter": "warpmesh.quilt.runtime"})

and repeats the same names under ``if TYPE_CHECKING:`` imports so type checkers and IDEs see them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package`` that import ``exports[name]`` on first use.

    ``exports`` maps an exported name to the module that defines it. ``namespace`` is the package's
    ``globals()``: a resolved name is stored there, so later look-ups never reach ``__getattr__``.
    """
    table = dict(exports)

    def __getattr__(name: str) -> Any:
        module_name = table.get(name)
        if module_name is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
