"""Shared helpers for the TCP mesh tests: fast configs, a runner with a deadline, a raw peer.

Every socket is on 127.0.0.1 with port 0. Waits are generous (the machine is shared and slow) but
return as soon as the condition holds, so the suite stays fast when the machine is quiet.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from warpmesh import PROTOCOL_VERSION
from warpmesh.net.handshake import AdmissionRequired, Established, Failed, Handshake, PeerInfo, Role
from warpmesh.net.tcp import Address, TcpMesh, TcpMeshConfig
from warpmesh.wire.frame import Frame, StreamDecoder

T = TypeVar("T")

SECRET = b"test-cluster-secret-0123456789"
#: Fast timeouts for tests; keepalive is short so dead links are noticed quickly.
FAST = TcpMeshConfig(
    connect_timeout=3.0,
    handshake_timeout=5.0,
    keepalive_interval=0.2,
    keepalive_timeout=3.0,
    probe_timeout=1.0,
    backoff_initial=0.02,
    backoff_max=0.3,
    forget_after=30.0,
    gossip_interval=1.0,
    close_timeout=1.0,
)
WAIT = 20.0  # upper bound for any convergence wait (only reached when something is broken)


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run ``coro`` on a fresh event loop with an overall deadline."""

    async def guarded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


_seeds = itertools.count(1)


async def mesh(node_id: str, join: Iterable[Address] = (), *, secret: bytes | None = SECRET,
               incarnation: int = 1, config: TcpMeshConfig = FAST, **kw: Any) -> TcpMesh:
    m = TcpMesh(node_id, listen=kw.pop("listen", ("127.0.0.1", 0)), join=list(join), secret=secret,
                incarnation=incarnation, config=config, rng=random.Random(next(_seeds)), **kw)
    return await m.start()


async def chain(ids: Iterable[str], **kw: Any) -> list[TcpMesh]:
    """Start meshes where each joins only the previous one."""
    out: list[TcpMesh] = []
    for node_id in ids:
        out.append(await mesh(node_id, [out[-1].address] if out else [], **kw))  # type: ignore[list-item]
    return out


async def converged(meshes: Iterable[TcpMesh], ids: Iterable[str] | None = None, timeout: float = WAIT) -> None:
    ms = list(meshes)
    want = frozenset(ids) if ids is not None else frozenset(m.self_id for m in ms)
    for m in ms:
        await m.roster.wait_for(lambda r: r == want, timeout=timeout)


async def eventually(pred: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def close_all(meshes: Iterable[TcpMesh]) -> None:
    await asyncio.gather(*(m.close() for m in meshes))


def nonces(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


class RawPeer:
    """A hand-driven peer: runs the real handshake over a plain socket, then sends whatever bytes a
    test wants (garbage, oversize prefixes, silence)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hs: Handshake) -> None:
        self.reader = reader
        self.writer = writer
        self.hs = hs
        self.decoder = StreamDecoder(versions=frozenset(range(256)))
        self.frames: list[Frame] = []

    @classmethod
    async def connect(cls, target: TcpMesh, node_id: str, *, secret: bytes | None = SECRET, incarnation: int = 1,
                      versions: tuple[int, ...] = (PROTOCOL_VERSION,), listen: Address | None = None,
                      admit: Callable[[AdmissionRequired], Awaitable[None]] | None = None) -> RawPeer:
        assert target.address is not None
        reader, writer = await asyncio.open_connection(*target.address)
        hs = Handshake(Role.INITIATOR, PeerInfo(node_id, incarnation, listen, versions), secret=secret,
                       nonce_source=nonces(hash(node_id) & 0xFFFF))
        peer = cls(reader, writer, hs)
        hs.start(asyncio.get_running_loop().time())
        writer.write(hs.data_to_send())
        pending: list[Frame] = []
        while not hs.finished:
            if not pending:
                data = await asyncio.wait_for(reader.read(65536), WAIT)
                if not data:
                    break
                pending.extend(peer.decoder.feed(data))
                continue
            ev = hs.receive(pending.pop(0))
            if isinstance(ev, AdmissionRequired):
                if admit is not None:
                    await admit(ev)
                if not hs.finished:
                    hs.accept()
            writer.write(hs.data_to_send())
        writer.write(hs.data_to_send())
        peer.frames.extend(pending)
        return peer

    @property
    def established(self) -> bool:
        return isinstance(self.hs.outcome, Established)

    @property
    def failure(self) -> Failed | None:
        return self.hs.outcome if isinstance(self.hs.outcome, Failed) else None

    async def read_frames(self, timeout: float = 0.5) -> list[Frame]:
        """Every frame received so far plus those arriving within ``timeout``; stops early at EOF."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while (left := deadline - loop.time()) > 0:
                data = await asyncio.wait_for(self.reader.read(65536), left)
                if not data:
                    break
                self.frames.extend(self.decoder.feed(data))
        except TimeoutError:
            pass
        return self.frames

    async def at_eof(self, timeout: float = WAIT) -> bool:
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), timeout)
                if not data:
                    return True
        except (TimeoutError, ConnectionError):
            return False

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def close(self) -> None:
        self.writer.transport.abort()
