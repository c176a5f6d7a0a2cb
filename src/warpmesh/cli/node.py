"""``warpmesh node``: one long-lived mesh peer - a Warp worker plus two demo CRDT boards.

The peer joins the TCP mesh, runs a :class:`~warpmesh.warp.WarpNode` with the ops of the
``--ops`` modules, and replicates two small demo boards (an ORSet ``tags`` and an ORMap ``kv``) so
the mesh can be exercised without any ops at all.

With ``--control stdio`` it reads JSON commands on stdin, one per line, and writes JSON events on
stdout (used by ``warpmesh mesh-demo``, ``warpmesh demo`` and the process tests)::

    {"cmd": "add", "elem": "x"}          {"cmd": "remove", "elem": "x"}
    {"cmd": "put", "key": "k", "value": 1}   {"cmd": "del", "key": "k"}
    {"cmd": "enqueue", "task": "t1", "op": "demo.square", "args": 7}
    {"cmd": "enqueue_many", "items": [{"task": "t1", "op": "demo.collatz", "args": 7}, ...]}
        (with "wait": true, answered once a majority holds them: "acknowledged": true/false)
    {"cmd": "status"}    {"cmd": "results"}    {"cmd": "quit"}
    {"cmd": "wait_results", "count": 10000, "timeout": 60}
        (answered by a "results_reached" event, with "ok" and "results", once this peer's results
        board holds that many answers or the timeout passes; other commands are served meanwhile:
        a driver waits for a batch without polling the peer)

Every command is answered by an event line; ``status`` events carry the roster, the board digests
and contents, and the Warp status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from warpmesh.cli.common import (
    _addr_callback,
    load_mesh_security,
    mesh_options,
    run_until_signal,
    setup_logging,
    stdin_lines,
)
from warpmesh.errors import Unavailable

TAGS_TAG, KV_TAG = 0x11, 0x12


class DemoBoards:
    """The ``tags`` ORSet and ``kv`` ORMap every ``warpmesh node`` replicates."""

    def __init__(self, mux: Any, replica: str) -> None:
        from warpmesh.crdt import LWWRegister, ORMap, ORSet
        from warpmesh.quilt import Quilter

        self.replica = replica
        self.tags: Quilter[ORSet] = Quilter(mux.channel(TAGS_TAG), ORSet(), stream=replica)
        self.kv: Quilter[ORMap] = Quilter(mux.channel(KV_TAG), ORMap(LWWRegister), stream=replica)

    async def start(self) -> None:
        await self.tags.start()
        await self.kv.start()

    async def close(self) -> None:
        await self.tags.close()
        await self.kv.close()

    def snapshot(self) -> dict[str, Any]:
        from warpmesh.crdt import digest

        kv = self.kv.state
        return {
            "tags": sorted(self.tags.state.elements, key=repr),
            "kv": {str(k): kv.get(k).value for k in kv.keys()},  # type: ignore[union-attr]
            "tags_digest": digest(self.tags.state).hex(),
            "kv_digest": digest(kv).hex(),
        }


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


@click.command()
@click.option("--id", "node_id", required=True, help="This peer's id, unique in the mesh.")
@click.option("--listen", required=True, callback=_addr_callback, metavar="HOST:PORT",
              help="Address to listen on (port 0 picks a free port).")
@click.option("--join", multiple=True, callback=_addr_callback, metavar="HOST:PORT",
              help="A peer to join through (repeatable); the rest of the roster is learned from it.")
@click.option("--ops", "ops_modules", multiple=True, metavar="MODULE",
              help="Import MODULE and serve its @warp_op ops (repeatable), e.g. --ops mypkg.jobs; "
                   "'--ops warpmesh.workers.mesh' serves WebAssembly jobs (wasm.run).")
@click.option("--role", type=click.Choice(["worker", "client"]), default="worker", show_default=True,
              help="Workers run tasks; clients only enqueue and read.")
@click.option("--strategy", type=click.Choice(["intent", "ring"]), default="intent", show_default=True,
              help="Claim strategy: 'intent' (dibs, settles contested claims) or 'ring'.")
@click.option("--control", type=click.Choice(["none", "stdio"]), default="none", show_default=True,
              help="'stdio': read JSON commands on stdin, write JSON events on stdout.")
@click.option("--status-every", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Also print a status event every N seconds (0: only when asked).")
@click.option("--incarnation", type=click.IntRange(min=0), default=None,
              help="This boot's incarnation (default: microseconds since the epoch; with --data, above the "
                   "stored one, and an explicit one must be).")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Keep this peer's boards in DIR (SQLite): restored on restart, acknowledged only once on "
                   "disk, so acknowledged jobs survive every peer losing power at once.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, metavar="N",
              help="Run at most N jobs at once on this peer, whatever their mode (default: 64).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True, metavar="N",
              help="Tries per job (first included) for transient errors and dying worker processes.")
@click.option("--join-timeout", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              metavar="SECONDS", help="Keep retrying the --join peers this long, then exit 1 saying why.")
@click.option("--speculative", is_flag=True, default=False,
              help="Command workers (--ops warpmesh.workers.commands): warm build caches once per content key "
                   "and seed each job's own directory from them (default off: every job builds from empty).")
@click.option("--http", "http", callback=_addr_callback, metavar="HOST:PORT", default=None,
              help="Serve the read-only dashboard and /metrics here (off by default; loopback only unless a "
                   "secret or TLS is configured), e.g. --http 127.0.0.1:8080.")
@click.option("--cell", default=None, metavar="NAME",
              help="This peer's cell: peers of a cell replicate the queue and results among themselves only, "
                   "and each task is queued in the cell its id hashes to (see docs/warp.md, \"Cells\"). "
                   "Default: no cell (a mesh of one cell).")
@click.option("--cells", default=None, metavar="NAME,...",
              help="Every cell of the mesh, so a task's cell is known from the first moment (else learned "
                   "from the members board).")
@mesh_options
def node(node_id: str, listen: tuple[str, int], join: list[tuple[str, int]], ops_modules: tuple[str, ...],
         role: str, strategy: str, control: str, status_every: float, incarnation: int | None,
         data_dir: Path | None, speculative: bool, cell: str | None, cells: str | None,
         concurrency: int | None, max_attempts: int, http: tuple[str, int] | None,
         join_timeout: float, log_level: str, secret_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
         tls_ca: Path | None) -> None:
    """Run one long-lived mesh peer (a Warp worker) until interrupted."""
    setup_logging(log_level)
    cell_names = tuple(c.strip() for c in cells.split(",")) if cells else ()
    if any(not c for c in cell_names) or len(set(cell_names)) != len(cell_names):
        raise click.BadParameter(f"{cells!r}: give distinct, non-empty cell names separated by commas",
                                 param_hint="--cells")
    if cell is not None and (not cell.strip() or (cell_names and cell not in cell_names)):
        raise click.BadParameter(f"{cell!r} is not one of --cells {','.join(cell_names)}" if cell.strip()
                                 else "a cell name must not be empty", param_hint="--cell")
    secret, tls = load_mesh_security(secret_file, tls_cert, tls_key, tls_ca)
    if http is not None:
        from warpmesh.observe.http import is_loopback

        if secret is None and tls is None and not is_loopback(http[0]):
            raise click.BadParameter(f"{http[0]} is not a loopback address: the dashboard listens beyond "
                                     "loopback only with a secret or TLS (--secret-file or $WARPMESH_SECRET)",
                                     param_hint="--http")
    import importlib
    import inspect

    from warpmesh.warp import OpRegistry, load_ops_module

    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # --ops finds modules in the current directory, like `python -m`
    registry = OpRegistry()
    hooks = []  # modules may expose attach(node) to bind to the node (e.g. isolate workers)
    for module in ops_modules:
        try:
            loaded = load_ops_module(module)
        except ImportError as err:
            raise click.BadParameter(f"cannot import {module!r}: {err}", param_hint="--ops") from None
        except ValueError as err:
            raise click.ClickException(f"--ops {module}: {err}") from None
        hook = getattr(importlib.import_module(module), "attach", None)
        if not callable(hook) and not _serves_ops(loaded, module):
            raise click.BadParameter(f"{module!r} defines no @warp_op ops (decorate functions with "
                                     "warpmesh.warp.warp_op, or drop --ops)", param_hint="--ops")
        registry.update(loaded)
        if callable(hook):
            hooks.append(hook)

    async def main(stop: asyncio.Event) -> None:
        from warpmesh.aio.tuning import tune_gc_for_server
        from warpmesh.crdt import replica_id
        from warpmesh.net.secret import InsecureAddressError
        from warpmesh.peer import JoinError, open_node
        from warpmesh.quilt.store import DataDirError, IncarnationRefused
        from warpmesh.warp import WarpConfig
        from warpmesh.workers.warmcore import WorkerConfig  # the one config object of command workers

        cfg = WarpConfig(max_attempts=max_attempts, cell=cell, cells=cell_names) if concurrency is None else WarpConfig(
            max_attempts=max_attempts, max_concurrency=concurrency, thread_workers=min(16, concurrency),
            process_workers=min(concurrency, os.cpu_count() or 1), cell=cell, cells=cell_names)
        worker_config = WorkerConfig(speculative=speculative)
        boards: list[DemoBoards] = []

        def demo_boards(warp: Any) -> DemoBoards:
            boards.append(DemoBoards(warp.mux, replica_id(node_id, warp.incarnation)))
            return boards[0]

        def bind(hook: Any) -> Any:
            if "config" in inspect.signature(hook).parameters:
                return lambda warp: hook(warp, config=worker_config)
            return hook

        peer_cm = open_node(node_id, listen=listen, join=join, ops=registry, role=role, config=cfg,
                            incarnation=incarnation, secret=secret, tls=tls, strategy=strategy,
                            attach=[*(bind(h) for h in hooks), demo_boards], join_timeout=join_timeout,
                            wait_live=False, data_dir=data_dir)
        async with contextlib.AsyncExitStack() as stack:
            # Joining can take join_timeout seconds: a signal meanwhile stops quietly, as before.
            entering = asyncio.ensure_future(stack.enter_async_context(peer_cm))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({entering, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not entering.done():
                entering.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await entering
                return
            try:
                peer = entering.result()
            except (InsecureAddressError, IncarnationRefused) as err:  # a bad combination of arguments
                raise click.UsageError(str(err)) from None
            except DataDirError as err:
                raise click.ClickException(str(err)) from None
            except (JoinError, Unavailable, ValueError) as err:
                raise click.ClickException(str(err)) from None
            warp, mesh, board = peer.node, peer.mesh, boards[0]
            dashboard: dict[str, str] = {}
            if http is not None:
                from warpmesh.errors import WarpmeshError
                from warpmesh.observe.http import DashboardServer

                try:
                    server = await DashboardServer(peer.observer, http[0], http[1],
                                                   secured=secret is not None or tls is not None).start()
                except WarpmeshError as err:
                    raise click.ClickException(str(err)) from None
                stack.push_async_callback(server.close)
                dashboard["http"] = server.url
            # A dedicated peer process: start-up objects frozen, cheaper GC. A young collection
            # here finds no garbage (board entries are acyclic) yet walks every young container,
            # the 10,000-entry dicts and lists of a batch included: 3-60 ms each, 5-11% of a
            # 10k-job batch's CPU at 50,000 allocations. At 200,000 a batch runs without one.
            tune_gc_for_server(gen0=200_000)
            _emit("ready", node=node_id, address=f"{mesh.address[0]}:{mesh.address[1]}", incarnation=warp.incarnation,
                  ops=warp.registry.names(), role=role, data=None if data_dir is None else str(data_dir),
                  **dashboard)

            def status() -> None:
                _emit("status", node=node_id, roster=sorted(mesh.roster.value), **board.snapshot(),
                      warp=warp.status(), mesh=mesh.stats.as_dict(),
                      store=None if warp.store is None else warp.store.stats())

            tasks: list[asyncio.Task[Any]] = []
            if control == "stdio":
                tasks.append(asyncio.create_task(_control(board, warp, status, stop)))
            if status_every > 0:
                async def ticker() -> None:
                    while True:
                        await asyncio.sleep(status_every)
                        status()

                tasks.append(asyncio.create_task(ticker()))
            try:
                await stop.wait()
            finally:
                for t in tasks:
                    t.cancel()
        _emit("stopped", node=node_id)  # the node, its hooks, boards and links are closed

    run_until_signal(main)


def _serves_ops(loaded: Any, module: str) -> bool:
    """Whether importing ``module`` gave ops: its own ``registry``, or default-registry ops defined in it."""
    from warpmesh.warp.ops import default_registry

    if loaded is not default_registry:
        return len(loaded) > 0
    return any(getattr(getattr(loaded.resolve(n), "fn", None), "__module__", None) == module for n in loaded.names())


async def _wait_results(warp: Any, count: int, timeout: float) -> None:
    """Emit ``results_reached`` once the results board holds ``count`` answers (or at the timeout)."""
    changes = warp.results_board.changes
    with contextlib.suppress(TimeoutError):
        await changes.wait_for(lambda _: len(warp.results) >= count, timeout)
    _emit("results_reached", ok=len(warp.results) >= count, results=len(warp.results))


async def _control(boards: DemoBoards, warp: Any, status: Any, stop: asyncio.Event) -> None:
    waiters: set[asyncio.Task[None]] = set()
    async for line in stdin_lines(limit=16 * 1024 * 1024):
        try:
            cmd = json.loads(line)
            if not isinstance(cmd, dict):
                raise ValueError("a command must be a JSON object")
            what = cmd.get("cmd")
            if what in ("add", "remove", "put", "del"):
                _mutate_boards(boards, what, cmd)
            elif what == "enqueue":
                run = warp.enqueue_nowait(str(cmd["task"]), cmd.get("op"), cmd.get("args"), pin=cmd.get("pin"))
                _emit("enqueued", task=cmd["task"], run=run)
                continue
            elif what == "enqueue_many":
                warp.enqueue_many([(str(item["task"]), item.get("op"), (item.get("args"),)) for item in cmd["items"]])
                if cmd.get("wait"):
                    # Answer once a majority holds them (on disk, with --data): an acknowledged enqueue.
                    acked = await warp.submitted(timeout=float(cmd.get("timeout", 30)))
                    _emit("enqueued", count=len(cmd["items"]), acknowledged=acked)
                    continue
                _emit("enqueued", count=len(cmd["items"]))
                continue
            elif what == "status":
                status()
                continue
            elif what == "wait_results":
                count, timeout = int(cmd["count"]), float(cmd.get("timeout", 60))
                if timeout <= 0:
                    raise ValueError("timeout must be positive")
                t = asyncio.get_running_loop().create_task(_wait_results(warp, count, timeout))
                waiters.add(t)
                t.add_done_callback(waiters.discard)
                continue
            elif what == "results":
                _emit("results", results={t: {"ok": res.ok, "value": res.value, "error": res.error,
                                              "by": res.by, "run": res.run}
                                          for t, res in warp.results.items()})
                continue
            elif what == "quit":
                stop.set()
                return
            else:
                raise ValueError(f"unknown command {what!r}")
            _emit("ok", cmd=what)
        except (ValueError, KeyError, TypeError) as err:
            _emit("error", error=f"{type(err).__name__}: {err}", line=line.decode(errors="replace").strip())
    stop.set()  # stdin closed: the parent is gone


def _mutate_boards(boards: DemoBoards, what: str, cmd: dict[str, Any]) -> None:
    r = boards.replica
    if what == "add":
        elem = _hashable(cmd["elem"])
        boards.tags.mutate(lambda s: s.add(r, elem))
    elif what == "remove":
        elem = _hashable(cmd["elem"])
        boards.tags.mutate(lambda s: s.remove(elem))
    elif what == "put":
        key, value = str(cmd["key"]), _hashable(cmd["value"])
        boards.kv.mutate(lambda m: m.update(r, key, lambda cur: cur.set(r, value)))
    else:
        key = str(cmd["key"])
        boards.kv.mutate(lambda m: m.remove(key))


def _hashable(value: Any) -> Any:
    """JSON lists become tuples so they can be set elements and register values."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        raise TypeError("objects cannot be board elements or values")
    return value
