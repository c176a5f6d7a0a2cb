"""Command workers as Warp ops: ``command.run`` (one subprocess) and ``command.check`` (a recipe's
check in a worktree, in its own build directory seeded from this peer's warm cache).

``command.run`` takes ``{"argv": [...], "cwd": ..., "tree": ..., "env": {...}, "deadline": s,
"cpu_seconds": n, "memory_mb": n}`` and answers ``{"exit_code", "signal", "stdout", "stderr",
"truncated", "seconds", "rusage"}``. The child inherits the peer's environment with ``env``
applied on top. A ``tree`` is materialized from the peer's store into a fresh directory that is
removed after the job (tree entries carry no file modes: files are written 0644).

``command.check`` takes ``{"worktree": DIR, "recipe": "cargo", "warm_from": DIR?, "deadline": s?}``
and answers the ``warpmesh check`` row (``worktree``, ``status``, ``exit_code``, ``seconds``,
``rebuilt``, ``fresh``, ``warm``) plus ``warm_status``, ``seeded``, ``lock_waits`` and the tail of
stderr. With :attr:`WorkerConfig.speculative` off every check builds from an empty directory.

Serve them with ``warpmesh node --ops warpmesh.workers.commands [--speculative]``; the warm keys
a peer holds appear as ``warm`` on the members board and in ``warpmesh status``.

Runtime module (asyncio, threads, subprocesses).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warpmesh.warp.ops import OpRegistry
from warpmesh.workers.command import CommandError, CommandSpec, parse_command
from warpmesh.workers.subproc import CommandResult, run_process
from warpmesh.workers.warm import PreparedJob, WarmCache, get_recipe, prepare_job
from warpmesh.workers.warmcore import WarmError, WorkerConfig, check_status, count_lock_waits

if TYPE_CHECKING:
    from warpmesh.warp.node import WarpNode
    from warpmesh.workers.store import Store

__all__ = ["COMMAND_CHECK_OP", "COMMAND_RUN_OP", "CommandWorkers", "attach", "registry", "run_command"]

COMMAND_RUN_OP = "command.run"
COMMAND_CHECK_OP = "command.check"
#: stdout kept for a check: large enough for cargo's JSON messages of a big workspace.
CHECK_CAPTURE = 16 << 20


def _materialize(store: Store, tree_hex: str, dest: Path) -> None:
    from warpmesh.workers.ids import Kind, parse_id

    stack = [(parse_id(tree_hex), dest)]
    while stack:
        oid, at = stack.pop()
        at.mkdir(parents=True, exist_ok=True)
        for e in store.get_tree(oid):
            if e.kind is Kind.TREE:
                stack.append((e.id, at / e.name))
            else:
                (at / e.name).write_bytes(store.get_blob(e.id))


def run_command(arg: Any, *, store: Store | None = None, cancel: threading.Event | None = None,
                base_env: Mapping[str, str] | None = None) -> CommandResult:
    """Run one ``command.run`` job here (blocking); raises :class:`CommandError` on a bad argument."""
    spec: CommandSpec = parse_command(arg)
    scratch: Path | None = None
    cwd = spec.cwd
    try:
        if spec.tree is not None:
            if store is None:
                from warpmesh.workers.store import Store, default_store_dir

                store = Store(default_store_dir())
            scratch = Path(tempfile.mkdtemp(prefix="warpmesh-tree-"))
            try:
                _materialize(store, spec.tree, scratch)
            except KeyError as err:
                raise CommandError(f"command.run: tree {spec.tree[:12]} is not in this peer's store ({err})") from None
            cwd = str(scratch)
        elif cwd is not None and not os.path.isdir(cwd):
            raise CommandError(f"command.run: working directory {cwd!r} does not exist on this peer")
        env = {**(os.environ if base_env is None else base_env), **spec.env}
        return run_process(spec.argv, cwd=cwd, env=env, deadline=spec.deadline, cpu_seconds=spec.cpu_seconds,
                           memory_mb=spec.memory_mb, cancel=cancel)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


class CommandWorkers:
    """This peer's command workers: the ops, its warm cache, single-flight warming, the config."""

    def __init__(self, config: WorkerConfig | None = None, *, cache: WarmCache | None = None,
                 store: Store | None = None) -> None:
        self.config = config or WorkerConfig()
        self.cache = cache or WarmCache(self.config.cache_dir)
        self.store = store
        self.registry = OpRegistry()
        self.registry.register(COMMAND_RUN_OP, self._op_run)
        self.registry.register(COMMAND_CHECK_OP, self._op_check)
        self._node: WarpNode | None = None
        self._published: tuple[str, ...] | None = None

    def bind(self, node: WarpNode) -> None:
        """Publish this peer's warm keys on ``node``'s members board (now and after each check)."""
        self._node = node
        if getattr(node, "_started", False):
            self._publish()

    async def start(self) -> CommandWorkers:
        self._publish()
        return self

    async def close(self) -> None:
        return None

    def warm_keys(self) -> list[str]:
        """Content keys this peer holds warm."""
        return self.cache.keys()

    def _publish(self) -> None:
        keys = tuple(self.warm_keys())
        if self._node is not None and keys != self._published and hasattr(self._node, "set_member_field"):
            self._published = keys
            self._node.set_member_field("warm", list(keys))

    @staticmethod
    async def _in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        # The subprocess runs in a thread; cancelling the op kills the job's process group.
        cancel = threading.Event()
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args, cancel=cancel, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.wait([task], timeout=10.0)
            raise

    async def _op_run(self, arg: Any) -> dict[str, Any]:
        res = await self._in_thread(run_command, arg, store=self.store)
        return res.as_dict()

    async def _op_check(self, arg: Any) -> dict[str, Any]:
        out = await self._in_thread(self.check, arg)
        self._publish()
        return out

    def check(self, arg: Any, *, cancel: threading.Event | None = None) -> dict[str, Any]:
        """Run a ``command.check`` job here (blocking); see the module docstring."""
        if not isinstance(arg, Mapping) or not isinstance(arg.get("worktree"), str):
            raise CommandError("command.check takes {'worktree': DIR, 'recipe': NAME, 'warm_from': DIR?}")
        worktree = Path(arg["worktree"]).resolve()
        try:
            recipe = get_recipe(str(arg.get("recipe", "cargo")))
        except WarmError as err:
            raise CommandError(f"command.check: {err}") from None
        deadline = arg.get("deadline", 600.0)
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or deadline <= 0:
            raise CommandError("command.check: 'deadline' must be a positive number")
        row: dict[str, Any] = {"worktree": str(arg["worktree"]), "status": "error", "exit_code": None,
                               "seconds": 0.0, "rebuilt": 0, "fresh": 0, "warm": False}
        if not worktree.is_dir():
            return {**row, "warm_status": "unavailable", "error": f"{worktree} is not a directory on this peer"}
        prep: PreparedJob = prepare_job(recipe, worktree, self.config, cache=self.cache, name=worktree.name,
                                        warm_from=arg.get("warm_from"))
        try:
            res = run_process(recipe.check_argv(worktree, prep.build_dir), cwd=worktree, env=prep.env,
                              deadline=float(deadline), cancel=cancel, capture=CHECK_CAPTURE)
        except OSError as err:
            return {**row, "warm_status": prep.report.status.value, "error": str(err)}
        finally:
            if not self.config.keep_job_dirs:
                self.cache.release(prep.build_dir)
        counts = recipe.counts(res)
        return {**row, "status": check_status(res.exit_code, res.signal), "exit_code": res.exit_code,
                "seconds": round(res.seconds, 3), "rebuilt": counts.rebuilt, "fresh": counts.fresh,
                "warm": prep.seeded != "empty", "warm_status": prep.report.status.value,
                "warm_reason": prep.report.reason, "seeded": prep.seeded, "lock_waits": count_lock_waits(res.stderr),
                "rebuilt_local": counts.rebuilt_local, "rebuilt_deps": counts.rebuilt_deps,
                "stderr_tail": "\n".join(res.stderr.strip().splitlines()[-5:])}

    def warm_now(self, recipe_name: str, workspace: str | os.PathLike[str]) -> Any:
        """Start warming ``workspace`` now (speculative only); returns the report."""
        from warpmesh.workers.warm import warm_boot

        rep = warm_boot(get_recipe(recipe_name), workspace, enabled=self.config.speculative,
                        timeout=self.config.warm_timeout, cache=self.cache)
        return rep


#: Ops of ``--ops warpmesh.workers.commands`` (bound to a default :class:`CommandWorkers` by attach).
registry = OpRegistry()


def attach(node: WarpNode, config: WorkerConfig | None = None) -> CommandWorkers:
    """The ``warpmesh node --ops warpmesh.workers.commands`` hook: serve the command ops on ``node``."""
    workers = CommandWorkers(config)
    node.registry.update(workers.registry)
    workers.bind(node)
    return workers
