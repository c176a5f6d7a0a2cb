"""One peer of a Warp mesh, started and stopped in one line: :func:`open_node` (a runtime module).

``async with warpmesh.open_node("a", listen="127.0.0.1:7000", ops=["mypkg.jobs"]) as peer`` listens on
TCP (or joins an in-memory :class:`~warpmesh.net.memory.MemoryFabric` with ``fabric=``), joins the
mesh through its ``join`` seeds, runs a :class:`~warpmesh.warp.WarpNode` serving the ops, and on
exit closes the node, then the mesh. Raft/KV is not assembled here: a KV store needs its own
cluster membership and data directory (``warpmesh kv serve``, :class:`~warpmesh.kv.KVClient`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warpmesh.errors import Unavailable

if TYPE_CHECKING:
    from warpmesh.net.memory import MemoryFabric
    from warpmesh.net.tls import TlsConfig
    from warpmesh.observe.hub import Event
    from warpmesh.warp.claim import ClaimStrategy
    from warpmesh.warp.model import OpResult
    from warpmesh.warp.node import WarpConfig, WarpNode
    from warpmesh.warp.ops import OpRegistry

__all__ = ["JoinError", "Peer", "open_node"]


class JoinError(Unavailable):
    """The peer could not join the mesh through its seeds (the message names each seed and why)."""


@dataclass
class Peer:
    """A running peer: its :class:`~warpmesh.warp.WarpNode` and the mesh it sits on."""

    #: The Warp node (enqueue, results, cancel, status ...).
    node: WarpNode
    #: The transport seam: a ``TcpMesh`` or a ``MemorySeam``.
    mesh: Any
    #: The peer's event feed (:class:`~warpmesh.observe.Observer`): ``events()``, dashboards' channel 0x70.
    observer: Any = None

    @property
    def id(self) -> str:
        """This peer's node id."""
        return str(self.node.self_id)

    @property
    def address(self) -> str | None:
        """``"HOST:PORT"`` others join through (None on a memory fabric)."""
        addr = getattr(self.mesh, "address", None)
        if addr is None:
            return None
        from warpmesh.net.tcp import format_address

        return format_address(addr)

    async def enqueue(self, task_id: str, op: str | None = None, /, *args: Any, pin: str | None = None,
                      run: str | None = None, deadline: float | None = None, **kwargs: Any) -> str:
        """:meth:`WarpNode.enqueue <warpmesh.warp.WarpNode.enqueue>`: returns the run once a majority holds it."""
        return await self.node.enqueue(task_id, op, *args, pin=pin, run=run, deadline=deadline, **kwargs)

    async def result(self, task_id: str, timeout: float | None = None) -> Any:
        """The task's value; raises :class:`~warpmesh.warp.TaskFailed` if its run failed."""
        return await self.node.result(task_id, timeout)

    async def outcome(self, task_id: str, timeout: float | None = None) -> OpResult:
        """The task's whole answer record (:class:`~warpmesh.warp.OpResult`)."""
        return await self.node.outcome(task_id, timeout)

    def status(self) -> dict[str, Any]:
        """The node's status (as ``warpmesh node`` reports it)."""
        return self.node.status()

    def events(self, *, backlog: bool = False) -> AsyncIterator[Event]:
        """This peer's events as they happen (:class:`~warpmesh.observe.Event`: job enqueued, started,
        finished ...; peer lost ...), from a bounded buffer: a consumer that falls behind loses the
        oldest and gets a ``"dropped"`` event saying how many, and never slows the node. ``backlog``:
        first the events the buffer still holds."""
        if self.observer is None:
            raise RuntimeError("this peer has no event feed (open it with warpmesh.open_node)")
        return self.observer.events(backlog=backlog)


def _registry(ops: OpRegistry | Iterable[str] | None) -> OpRegistry | None:
    """An :class:`OpRegistry` from a registry or module names (None: every ``@warp_op`` of the process)."""
    from warpmesh.warp.ops import OpRegistry, load_ops_module

    if ops is None or isinstance(ops, OpRegistry):
        return ops
    if isinstance(ops, str):
        raise TypeError("ops takes a list of module names (or an OpRegistry), not one string")
    registry = OpRegistry()
    for module in ops:
        registry.update(load_ops_module(module))
    return registry


async def wait_joined(mesh: Any, timeout: float) -> None:
    """Wait until ``mesh`` (a ``TcpMesh`` with seeds) has joined; :class:`JoinError` says why it could not."""
    from warpmesh.net.joining import join_verdict

    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        verdict = join_verdict(mesh.seed_outcomes(), linked=len(mesh.roster.value) > 1,
                               elapsed=loop.time() - started, timeout=timeout)
        if verdict.state == "joined":
            return
        if verdict.state == "failed":
            raise JoinError(verdict.reason)
        await asyncio.sleep(0.05)


async def _settle(node: WarpNode, mesh: Any, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until the node hears every linked peer, so a first ``enqueue``
    finds the majority it needs instead of failing with ``NotReplicated``."""
    loop = asyncio.get_running_loop()
    until = loop.time() + timeout
    while not mesh.roster.value <= node.liveness.live.value and loop.time() < until:
        await asyncio.sleep(0.02)


def _address(value: str | tuple[str, int]) -> tuple[str, int]:
    from warpmesh.client import parse_address

    return parse_address(value)


@contextlib.asynccontextmanager
async def open_node(node_id: str, *, listen: str | tuple[str, int] = ("127.0.0.1", 0),
                    join: Iterable[str | tuple[str, int]] = (), fabric: MemoryFabric | None = None,
                    ops: OpRegistry | Iterable[str] | None = None, role: str = "worker",
                    config: WarpConfig | None = None, incarnation: int | None = None,
                    secret: bytes | str | None = None, secret_file: str | os.PathLike[str] | None = None,
                    tls_cert: str | os.PathLike[str] | None = None, tls_key: str | os.PathLike[str] | None = None,
                    tls_ca: str | os.PathLike[str] | None = None, tls: TlsConfig | None = None,
                    strategy: ClaimStrategy | str | None = None,
                    attach: Iterable[Callable[[WarpNode], Any]] = (), join_timeout: float = 30.0,
                    wait_live: bool = True, data_dir: str | os.PathLike[str] | None = None) -> AsyncIterator[Peer]:
    """Start a peer, yield its :class:`Peer` handle, close everything on exit.

    * transport: TCP on ``listen`` (``"HOST:PORT"``, port 0 picks one; see :attr:`Peer.address`),
      joining through the ``join`` seeds (waits up to ``join_timeout`` s, else :class:`JoinError`);
      or, with ``fabric=``, a seam on that in-memory fabric (tests, notebooks).
    * ops: an :class:`~warpmesh.warp.OpRegistry`, or module names imported for their ``@warp_op``
      ops (as ``--ops``); default: every ``@warp_op`` of this process.
    * security (TCP): ``secret``, else ``secret_file``, else ``$WARPMESH_SECRET``; TLS from the three
      PEM files (or a ready ``tls`` config). Without a secret only loopback addresses are allowed
      (:class:`~warpmesh.net.secret.InsecureAddressError`).
    * ``config`` is a :class:`~warpmesh.warp.WarpConfig`, ``strategy`` a claim strategy
      (``"intent"`` or ``"ring"``); ``role="client"`` never runs tasks.
    * ``attach``: callables ``hook(node)`` (an ``--ops`` module's ``attach``) returning None or an
      object with ``start()``/``close()``: started before the node, closed after it.
    * ``wait_live``: before yielding, wait (up to ``join_timeout``) until the node hears every linked
      peer, so a first ``enqueue`` finds its majority.
    * ``data_dir``: keep the boards in this directory (SQLite): restored on restart before the peer
      talks, and acknowledged only once on disk. The incarnation then comes from the directory (an
      explicit ``incarnation`` must exceed the stored one). A corrupt or foreign directory raises
      :class:`~warpmesh.quilt.store.DataDirError`.
    """
    from warpmesh.net.mux import MuxSeam
    from warpmesh.warp.claim import ClaimStrategy
    from warpmesh.warp.node import WarpNode

    registry = _registry(ops)
    mesh: Any
    seeds: list[tuple[str, int]] = []
    store: Any = None
    if data_dir is not None:
        from warpmesh.quilt.store import NodeStore

        store = NodeStore.open(data_dir, node_id)
        if fabric is None:
            from warpmesh.net.seam import boot_incarnation

            try:
                incarnation = store.claim_incarnation(incarnation, default=boot_incarnation())
            except BaseException:
                store.disk.close()
                raise
    if fabric is not None:
        mesh = fabric.join(node_id)
    else:
        from warpmesh.client import resolve_security
        from warpmesh.net.tcp import TcpMesh, boot_incarnation

        key, tls_files = resolve_security(secret, secret_file, tls_cert, tls_key, tls_ca)
        seeds = [_address(j) for j in join]
        where = _address(listen)
        incarnation = incarnation if incarnation is not None else boot_incarnation()
        mesh = TcpMesh(node_id, listen=where, join=seeds, secret=key, incarnation=incarnation,
                       tls=tls if tls is not None else tls_files)
        try:
            await mesh.start()
        except OSError as err:
            raise Unavailable(f"cannot listen on {where[0]}:{where[1]}: {err.strerror or err}") from None
    node: WarpNode | None = None
    mux: MuxSeam | None = None
    observer: Any = None
    attached: list[Any] = []
    try:
        if fabric is None and seeds:
            await wait_joined(mesh, join_timeout)
        mux = MuxSeam(mesh)  # one reader of the seam: the node's boards and the app's channels share it
        node = WarpNode(mesh, registry=registry, role=role, config=config, incarnation=incarnation, mux=mux,
                        strategy=None if strategy is None else ClaimStrategy(strategy), data_dir=store)
        for hook in attach:
            extra = hook(node)
            if extra is not None:
                attached.append(extra)
                await extra.start()
        from warpmesh.observe.runtime import Observer
        from warpmesh.observe.tracing import job_tracer

        observer = Observer(node, tracer=job_tracer(node_id))
        await observer.start()  # before the node: its first events are recorded too
        await node.start()
        if wait_live:
            await _settle(node, mesh, join_timeout)
        yield Peer(node, mesh, observer)
    finally:
        if observer is not None:
            await observer.close()
        if node is not None:
            await node.close()
        elif store is not None:
            store.disk.close()  # the node never took it over
        for extra in reversed(attached):
            await extra.close()
        if mux is not None:
            await mux.close()
        await mesh.close()
