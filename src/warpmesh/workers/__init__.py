"""Isolate workers: memoized, content-addressed jobs in WebAssembly sandboxes.

* :class:`Store` -- the local content-addressed store (BLAKE3 ids, canonical trees, files + SQLite,
  pins, garbage collection, the memo table).
* :class:`Runner` -- memoized, single-flight, cycle-checked execution of :class:`JobRequest` s,
  nested to any depth through ``run`` / ``run_many``.
* :class:`IsolateHost` -- runs guest modules under the guest ABI v1 (docs/guest-abi.md) with a
  memory cap, fuel and a deadline.
* :mod:`warpmesh.workers.fold` -- the recursive directory fold, as isolates and in plain Python.
* Command workers (loaded on first use): :func:`run_command` / :func:`run_process` (a subprocess
  in its own process group, killed whole), :func:`warm_boot` and :class:`WarmCache` (build caches
  by content key, per-job seeded directories), :class:`CommandWorkers` (the ``command.run`` and
  ``command.check`` Warp ops).

See docs/workers.md.
"""

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
from warpmesh.workers.canonical import CanonicalError
from warpmesh.workers.errors import FailureKind, JobError
from warpmesh.workers.ids import Kind, Ref, blob_id, tree_id
from warpmesh.workers.request import JobRequest, Limits, OpWorker, WasmWorker
from warpmesh.workers.tree import TreeEntry

if TYPE_CHECKING:
    from warpmesh.workers.command import CommandError, CommandSpec
    from warpmesh.workers.commands import CommandWorkers, run_command
    from warpmesh.workers.host import HostConfig, IsolateHost
    from warpmesh.workers.runner import JobContext, LocalResults, ResultsBackend, Runner, RunResult
    from warpmesh.workers.store import CorruptObject, ObjectNotFound, Store, StoreError, default_store_dir
    from warpmesh.workers.subproc import CommandResult, run_process
    from warpmesh.workers.warm import CargoRecipe, GenericRecipe, WarmCache, warm_boot
    from warpmesh.workers.warmcore import WarmReport, WarmStatus, WorkerConfig

# The host (wasmtime), runner and store (SQLite) and the command workers are runtimes: they load on
# first use, so the content ids and request codecs import without wasmtime.
_LAZY_EXPORTS = {
    "warpmesh.workers.host": ("HostConfig", "IsolateHost"),
    "warpmesh.workers.runner": ("JobContext", "LocalResults", "ResultsBackend", "Runner", "RunResult"),
    "warpmesh.workers.store": ("CorruptObject", "ObjectNotFound", "Store", "StoreError", "default_store_dir"),
    "warpmesh.workers.command": ("CommandError", "CommandSpec"),
    "warpmesh.workers.commands": ("CommandWorkers", "run_command"),
    "warpmesh.workers.subproc": ("CommandResult", "run_process"),
    "warpmesh.workers.warm": ("CargoRecipe", "GenericRecipe", "WarmCache", "warm_boot"),
    "warpmesh.workers.warmcore": ("WarmReport", "WarmStatus", "WorkerConfig"),
}
__getattr__, __dir__ = lazy_exports(
    __name__, globals(), {name: module for module, names in _LAZY_EXPORTS.items() for name in names}
)

__all__ = [
    "CanonicalError",
    "CargoRecipe",
    "CommandError",
    "CommandResult",
    "CommandSpec",
    "CommandWorkers",
    "CorruptObject",
    "FailureKind",
    "GenericRecipe",
    "HostConfig",
    "IsolateHost",
    "JobContext",
    "JobError",
    "JobRequest",
    "Kind",
    "Limits",
    "LocalResults",
    "ObjectNotFound",
    "OpWorker",
    "Ref",
    "ResultsBackend",
    "RunResult",
    "Runner",
    "Store",
    "StoreError",
    "TreeEntry",
    "WarmCache",
    "WarmReport",
    "WarmStatus",
    "WasmWorker",
    "WorkerConfig",
    "blob_id",
    "default_store_dir",
    "run_command",
    "run_process",
    "tree_id",
    "warm_boot",
]
