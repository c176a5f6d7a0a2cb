"""``KVClient``: async get/put/cas/delete against a KV cluster; finds the leader, retries safely.

The client joins the cluster's mesh as a peer (authenticated with the cluster secret, like any
node) but is never a Raft member. Each write carries a dedup key from the client's own session
``(client id, seq, floor)``; when a response does not arrive in ``attempt_timeout`` (a node died, a
leader changed), the same request is re-sent - to the leader the servers name, or to the next
server - and the servers' session table applies it exactly once. Reads are linearizable by default
(readIndex on the server); ``stale=True`` reads one replica's local state.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Iterable
from typing import Any

from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.errors import WarpmeshError
from warpmesh.kv import protocol as P
from warpmesh.net.joining import all_refused
from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import PeerUnreachable, Seam, SeamClosed
from warpmesh.raft.runtime import wait_future
from warpmesh.wire.frame import FrameError


class KVError(WarpmeshError):
    """A request failed for good: invalid, timed out after every retry, or session expired."""


class KVUnreachable(KVError, WarpmeshError, ConnectionError):
    """Every server address refused the connection: nothing is listening there (raised at once,
    not after the whole timeout)."""


class KVTimeout(KVError, TimeoutError):
    """No server completed the request within the client's timeout. For a write the outcome is
    unknown; retrying it with the same client is safe (it is applied at most once)."""


def parse_addresses(addresses: Iterable[str | tuple[str, int]]) -> list[tuple[str, int]]:
    out = []
    for a in addresses:
        if isinstance(a, tuple):
            out.append((a[0], int(a[1])))
            continue
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address {a!r} must be HOST:PORT")
        out.append((host, int(port)))
    if not out:
        raise ValueError("give at least one server address")
    return out


class KVClient:
    """A KV client. Use ``async with KVClient([...]) as kv:`` (or ``await kv.connect()``).

    ``seam`` lets tests and the simulator pass an existing seam (e.g. a MemoryFabric peer) instead
    of opening a TCP mesh connection to ``addresses``.
    """

    def __init__(self, addresses: Iterable[str | tuple[str, int]] = (), *, secret: bytes | None = None,
                 timeout: float = 30.0, attempt_timeout: float = 1.0, client_id: str | None = None,
                 seam: Seam | None = None, listen: tuple[str, int] = ("127.0.0.1", 0),
                 seed: int | None = None, tls: Any = None) -> None:
        self.addresses = parse_addresses(addresses) if seam is None else []
        if secret is None and seam is None:
            # The CLI honours $WARPMESH_SECRET; so does the library (a client started in the
            # servers' shell would otherwise be refused as "bad_secret" and time out).
            from warpmesh.net.secret import load_secret

            secret = load_secret()
        self.secret = secret
        self.tls = tls
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self._rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
        self.client_id = client_id or f"kvc-{self._rng.getrandbits(64):016x}"
        self._given_seam = seam
        self._listen = listen
        self._mesh: Any = None
        self._channel: Seam | None = None
        self._mux: MuxSeam | None = None
        self._rid = 0
        self._seq = 0
        self._outstanding: dict[int, None] = {}
        self._pending: dict[int, asyncio.Future[list[Any]]] = {}
        self._servers: list[str] = []
        self._leader: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self.retries = 0
        #: One attempt of an operator request may wait this long (a catch-up or a transfer is slow).
        self.admin_attempt_timeout = max(attempt_timeout, 10.0)

    async def __aenter__(self) -> KVClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> KVClient:
        if self._channel is not None:
            return self
        if self._given_seam is not None:
            seam = self._given_seam
        else:
            from warpmesh.net.tcp import TcpMesh, boot_incarnation

            self._mesh = seam = TcpMesh(self.client_id, listen=self._listen, join=self.addresses,
                                        secret=self.secret, incarnation=boot_incarnation(), tls=self.tls)
            await self._mesh.start()
        self._mux = MuxSeam(seam)
        self._channel = self._mux.channel(P.KV_CHANNEL)
        self._sub = self._channel.subscribe()
        self._reader = asyncio.get_running_loop().create_task(self._read(), name=f"{self.client_id}-read")
        await self._discover(self.timeout)
        return self

    async def close(self) -> None:
        await cancel_and_wait([self._reader])
        for f in self._pending.values():
            if not f.done():
                f.set_exception(KVError("client closed"))
        if self._mux is not None:
            with contextlib.suppress(Exception):
                await self._mux.close()
        if self._mesh is not None:
            with contextlib.suppress(Exception):
                await self._mesh.close()

    # -- API ------------------------------------------------------------------------------------
    async def get(self, key: str, *, stale: bool = False) -> bytes | None:
        value, _rev = await self.get_with_revision(key, stale=stale)
        return value

    async def get_with_revision(self, key: str, *, stale: bool = False) -> tuple[bytes | None, int]:
        r = await self._call("sget" if stale else "get", key)
        return (None if r[0] is None else bytes(r[0])), int(r[1])

    async def put(self, key: str, value: bytes | str) -> int:
        """Set ``key``; returns the new revision (the log index it was applied at)."""
        return int(await self._call("put", key, _b(value)))

    async def delete(self, key: str) -> bool:
        """Remove ``key``; returns whether it existed."""
        return bool(await self._call("del", key))

    async def cas(self, key: str, expected: bytes | str | None, new: bytes | str | None
                  ) -> tuple[bool, bytes | None]:
        """Set ``key`` to ``new`` (None deletes) only if it currently holds ``expected`` (None =
        absent). Returns ``(swapped, value now)``."""
        r = await self._call("cas", key, None if expected is None else _b(expected),
                             None if new is None else _b(new))
        return bool(r[0]), (None if r[1] is None else bytes(r[1]))

    async def replica_state(self, node: str, *, timeout: float = 2.0) -> tuple[int, str, int] | None:
        """``(applied index, state digest, key count)`` of one replica (None if it did not answer):
        replicas that applied the same index must report the same digest."""
        if self._channel is None:
            await self.connect()
        r = await self._attempt(node, "state", None, None, None, 0, 0, timeout)
        if r is None or r[1] != P.OK:
            return None
        return int(r[2][0]), str(r[2][1]), int(r[2][2])

    async def get_from(self, node: str, key: str, *, timeout: float = 2.0) -> tuple[bytes | None, int] | None:
        """One replica's local (possibly stale) value of ``key``; None if it did not answer."""
        if self._channel is None:
            await self.connect()
        r = await self._attempt(node, "sget", key, None, None, 0, 0, timeout)
        if r is None or r[1] != P.OK:
            return None
        return (None if r[2][0] is None else bytes(r[2][0])), int(r[2][1])

    # -- operator API (etcdctl's member/endpoint/move-leader/snapshot; see docs/raft.md) ------------
    async def member_list(self) -> dict[str, Any]:
        """``{"leader": id, "members": [{"id", "address", "role", "match_index",
        "last_contact_s"}]}``, from the leader."""
        return dict(await self._call("members", None))

    async def member_add(self, node: str, address: str, *, learner: bool = False) -> dict[str, Any]:
        """Add ``node`` (at ``address``) as a learner; it is promoted to voter once it has caught up,
        unless ``learner``. Adding a node that is already a member succeeds and says so
        (``"added": False``). Start the node itself with ``kv serve --join``."""
        return dict(await self._call("add", node, address, {"learner": learner}))

    async def member_promote(self, node: str) -> dict[str, Any]:
        """Make the learner ``node`` a voter (refused if it has not caught up)."""
        return dict(await self._call("promote", node))

    async def member_remove(self, node: str) -> dict[str, Any]:
        """Remove ``node``; refused (:class:`KVError` with the reason) if the cluster would be left
        without a quorum of live voters. Removing the leader moves leadership first."""
        return dict(await self._call("remove", node))

    async def transfer_leader(self, node: str | None = None) -> dict[str, Any]:
        """Hand leadership to ``node`` (default: the most up-to-date live voter):
        ``{"leader": new, "previous": old, "detail"}``."""
        return dict(await self._call("transfer", node))

    async def status(self, *, timeout: float = 2.0) -> dict[str, Any]:
        """Every member's status, asked of each directly: ``{"nodes": [{"id", "role", "leader",
        "term", "commit_index", "applied_index", "log_entries", "snapshot_index", "data_bytes",
        "healthy"}]}``. A member that does not answer has ``"healthy": False`` and ``None`` fields."""
        if self._channel is None:
            await self.connect()
        with contextlib.suppress(KVTimeout):
            await self._discover(min(self.timeout, 5.0))
        ids = sorted(set(self._servers))

        assert self._channel is not None
        channel = self._channel

        async def one(node: str) -> dict[str, Any]:
            # A member we have no link to yet (the mesh learns it by gossip) gets a moment.
            with contextlib.suppress(TimeoutError):
                await channel.roster.wait_for(lambda r: node in r, timeout)
            r = await self._attempt(node, "status", None, None, None, 0, 0, timeout)
            if r is not None and r[1] == P.OK and isinstance(r[2], dict):
                return dict(r[2])
            return {"id": node, "role": None, "leader": None, "term": None, "commit_index": None,
                    "applied_index": None, "log_entries": None, "snapshot_index": None,
                    "data_bytes": None, "healthy": False}

        return {"nodes": list(await asyncio.gather(*(one(n) for n in ids)))}

    async def snapshot(self) -> tuple[int, bytes]:
        """A consistent snapshot of the store taken through the leader: ``(index, state bytes)``
        (see :mod:`warpmesh.kv.backup` to write and restore it)."""
        r = await self._call("snapsave", None)
        return int(r[0]), bytes(r[1])

    async def snapshot_save(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Save a consistent snapshot to ``path`` (written atomically, with its index and a
        checksum); returns ``{"file", "index", "bytes", "checksum", "keys"}``."""
        from warpmesh.kv.backup import write_backup

        index, data = await self.snapshot()
        return write_backup(path, index, data)

    @property
    def servers(self) -> list[str]:
        return list(self._servers)

    # -- machinery ------------------------------------------------------------------------------
    def _targets(self) -> list[str]:
        if self._channel is None:
            return []
        live = self._channel.roster.value
        servers = [s for s in self._servers if s in live] or sorted(live - {self.client_id})
        return servers

    def _pick(self, attempt: int) -> str | None:
        targets = self._targets()
        if not targets:
            return None
        if self._leader in targets and attempt < 2:
            return self._leader
        return targets[(attempt + self._rng.randrange(len(targets))) % len(targets)]

    async def _discover(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        assert self._channel is not None
        while loop.time() < deadline:
            peers = sorted(self._channel.roster.value - {self.client_id})
            # Ask every peer at once (other clients share the mesh and never answer).
            tries = [loop.create_task(self._attempt(p, "hello", None, None, None, 0, 0,
                                                    min(self.attempt_timeout, 0.5))) for p in peers]
            for fut in asyncio.as_completed(tries):
                r = await fut
                if r is not None and r[1] == P.OK:
                    voters, learners = r[2]
                    self._servers = sorted(set(voters) | set(learners))
                    self._leader = r[3]
                    for t in tries:
                        t.cancel()
                    return
            if self._mesh is not None and not peers and all_refused(self._mesh.seed_outcomes(), min_attempts=2):
                raise KVUnreachable(f"no KV server is listening at {self._where()}: every connection was "
                                    "refused; start the cluster (warpmesh kv up starts a local one)")
            await asyncio.sleep(0.05)
        raise KVTimeout(f"no KV server answered within {timeout:.1f}s at {self._where()}; are "
                        "the nodes running, and is the cluster secret the same?")

    def _where(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.addresses) or "the given seam"

    async def _attempt(self, target: str, op: str, key: str | None, a: Any, b: Any, seq: int, floor: int,
                       timeout: float) -> list[Any] | None:
        assert self._channel is not None
        self._rid += 1
        rid = self._rid
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            await self._channel.send_to(target, P.encode_request(
                rid, op, key, a, b, self.client_id if seq else None, seq, floor))
            return await wait_future(fut, timeout)
        except (TimeoutError, PeerUnreachable, SeamClosed):
            return None
        finally:
            self._pending.pop(rid, None)

    async def _call(self, op: str, key: str | None, a: Any = None, b: Any = None) -> Any:
        if self._channel is None:
            await self.connect()
        seq = floor = 0
        if op in P.WRITE_OPS:
            self._seq += 1
            seq = self._seq
            self._outstanding[seq] = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        attempt = 0
        # A write whose outcome stays unknown (timeout) is left outstanding on purpose: the floor must
        # never pass it, so a late copy can never be applied after the server forgot it.
        while loop.time() < deadline:
            if seq:
                floor = next(iter(self._outstanding))
            target = self._pick(attempt)
            if target is None:
                await asyncio.sleep(0.05)
                attempt += 1
                continue
            # Operator requests may take long on the leader (a catch-up, a transfer): one attempt
            # may use the remaining time.
            per = self.attempt_timeout if op not in P.ADMIN_OPS else self.admin_attempt_timeout
            r = await self._attempt(target, op, key, a, b, seq, floor,
                                    min(per, max(0.01, deadline - loop.time())))
            if r is None:
                attempt += 1
                self.retries += 1
                if self._leader == target:
                    self._leader = None
                continue
            _rid, status, result, leader, info = r
            if leader:
                self._leader = leader
                if leader not in self._servers:
                    # A member added after we connected (the cluster grew): route to it too.
                    self._servers = sorted({*self._servers, leader})
            if status == P.OK:
                if seq:
                    self._outstanding.pop(seq, None)
                return result
            if status == P.ERROR:
                if seq:
                    self._outstanding.pop(seq, None)
                raise KVError(info if op in P.ADMIN_OPS else f"{op} {key!r}: {info}")
            if status == P.EXPIRED:
                self._outstanding.pop(seq, None)
                raise KVError(f"{op} {key!r}: {info}")
            attempt += 1
            self.retries += 1
            await asyncio.sleep(min(0.05 * attempt, 0.25))
        if op in P.ADMIN_OPS:
            raise KVTimeout(f"no leader completed {P.ADMIN_NAMES.get(op, op)}"
                            + (f" {key}" if key else "") + f" within {self.timeout:.1f}s; is a majority "
                            "of the voters up? (`warpmesh kv status` asks each node)")
        raise KVTimeout(f"{op} {key!r} did not complete within {self.timeout:.1f}s"
                        + (" (the write may or may not have been applied)" if seq else ""))

    async def _read(self) -> None:
        while True:
            try:
                _sender, data = await self._sub.get()
            except SeamClosed:
                return
            try:
                r = P.decode_response(data)
            except (FrameError, P.BadFrame):
                continue
            fut = self._pending.get(r[0])
            if fut is not None and not fut.done():
                fut.set_result(r)


def _b(v: bytes | str) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v)
    # bytes(5) would silently store five NUL bytes.
    raise TypeError(f"a KV value must be bytes or str, not {type(v).__name__}; encode it first "
                    "(e.g. str(value) or json.dumps(value))")
