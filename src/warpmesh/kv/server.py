"""``KVServer``: one replica of the key-value store (a RaftNode + the KV state machine + the client
protocol), and :func:`open_kv_node`, which builds the whole stack on a TCP mesh with SQLite storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.kv import protocol as P
from warpmesh.kv.state import KVStateMachine, encode_cas, encode_delete, encode_put
from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import Seam, SeamClosed
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import NotLeader, RaftClosed, RaftError, SessionExpired
from warpmesh.raft.runtime import RaftNode
from warpmesh.raft.statemachine import ReplicatedStateMachine
from warpmesh.raft.storage import RaftStorage
from warpmesh.raft.transport import RAFT_CHANNEL, SeamRaftTransport
from warpmesh.raft.types import DedupKey
from warpmesh.wire.frame import FrameError

log = logging.getLogger("warpmesh.kv")

#: Requests served concurrently per server; more wait (the client's own timeout bounds the wait).
MAX_INFLIGHT = 8192


class KVServer:
    """Serves the client protocol on ``channel`` for the replica ``node``."""

    def __init__(self, node: RaftNode, channel: Seam, *, snapshot_every: int = 10_000,
                 request_timeout: float = 5.0) -> None:
        self.node = node
        self.channel = channel
        self.kv = KVStateMachine()
        self.rsm = ReplicatedStateMachine(node, self.kv, snapshot_every=snapshot_every)
        self.request_timeout = request_timeout
        self.stats: Counter[str] = Counter()
        self._sem = asyncio.Semaphore(MAX_INFLIGHT)
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> KVServer:
        await self.rsm.start()
        self._sub = self.channel.subscribe()
        self._task = asyncio.get_running_loop().create_task(self._serve(), name=f"kv-{self.node.id}")
        return self

    async def close(self) -> None:
        await cancel_and_wait([self._task, *self._handlers])
        await self.rsm.close()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sender, data = await self._sub.get()
            except SeamClosed:
                return
            try:
                req = P.decode_request(data)
            except (FrameError, P.BadFrame):
                self.stats["refused"] += 1
                continue
            await self._sem.acquire()
            t = loop.create_task(self._handle(sender, req))
            self._handlers.add(t)
            t.add_done_callback(self._done)

    def _done(self, t: asyncio.Task[None]) -> None:
        self._handlers.discard(t)
        self._sem.release()

    async def _handle(self, sender: str, req: list[Any]) -> None:
        rid, op, key, a, b, client, seq, floor = req
        status, info = P.OK, ""
        result: Any = None
        try:
            result = await self._execute(op, key, a, b, client, seq, floor)
            if isinstance(result, list) and result and result[0] == "error":
                status, result, info = P.ERROR, None, str(result[1])
        except SessionExpired as err:
            status, info = P.EXPIRED, str(err)
        except (TimeoutError, RaftError, RaftClosed, NotLeader) as err:
            status, info = P.RETRY, f"{type(err).__name__}: {err}"
        except (ValueError, TypeError) as err:
            status, info = P.ERROR, str(err)
        self.stats[f"status:{status}"] += 1
        try:
            await self.channel.send_to(sender, P.encode_response(rid, status, result, self.node.leader.value,
                                                                 info))
        except Exception:  # the client went away; it will retry elsewhere
            self.stats["reply_dropped"] += 1

    async def _execute(self, op: str, key: str, a: Any, b: Any, client: str, seq: int, floor: int) -> Any:
        t = self.request_timeout
        if op == "hello":
            m = self.node.membership.value
            return [sorted(m.all_voters), sorted(m.learners)]
        if op == "get":
            return list(await self.rsm.read(lambda sm: sm.get_with_revision(key), timeout=t))
        if op == "sget":
            return list(self.kv.get_with_revision(key))
        if op == "state":
            import blake3

            return [self.rsm.applied.value, blake3.blake3(self.kv.snapshot()).hexdigest(), len(self.kv.data)]
        dk = DedupKey(client, seq, floor)
        if op == "put":
            cmd = encode_put(key, a)
        elif op == "del":
            cmd = encode_delete(key)
        else:
            cmd = encode_cas(key, a, b)
        return await self.rsm.execute(cmd, key=dk, timeout=t)


class KVNode:
    """A running KV replica on a TCP mesh: mesh + Raft + server. Build with :func:`open_kv_node`."""

    def __init__(self, mesh: Any, node: RaftNode, server: KVServer) -> None:
        self.mesh = mesh
        self.node = node
        self.server = server

    async def close(self) -> None:
        await self.server.close()
        await self.node.close()
        with contextlib.suppress(Exception):
            await self.mesh.close()


async def open_kv_node(node_id: str, *, listen: tuple[str, int], peers: dict[str, tuple[str, int]],
                       data_dir: str | Path, secret: bytes | None = None,
                       config: RaftConfig | None = None, snapshot_every: int = 10_000,
                       storage: RaftStorage | None = None, tls: Any = None) -> KVNode:
    """Start one replica: TCP mesh on ``listen`` joining ``peers`` (every member, ``id -> address``,
    self included), SQLite storage in ``data_dir``, Raft on channel 0x20, clients on 0x21."""
    from warpmesh.net.tcp import TcpMesh, boot_incarnation
    from warpmesh.raft.storage import SqliteRaftStorage

    if node_id not in peers:
        raise ValueError(f"--peers must include this node ({node_id})")
    data = Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    store = storage or SqliteRaftStorage(data / "raft.sqlite", node_id=node_id)
    mesh = TcpMesh(node_id, listen=listen, join=[a for p, a in sorted(peers.items()) if p != node_id],
                   secret=secret, incarnation=boot_incarnation(), tls=tls)
    try:
        await mesh.start()
        mux = MuxSeam(mesh)
        node = RaftNode(node_id, SeamRaftTransport(mux.channel(RAFT_CHANNEL)), store,
                        voters=sorted(peers), config=config)
        await node.start()
        server = await KVServer(node, mux.channel(P.KV_CHANNEL), snapshot_every=snapshot_every).start()
    except BaseException:
        with contextlib.suppress(Exception):
            await mesh.close()
        store.close()
        raise
    return KVNode(mesh, node, server)
