"""``TcpMesh``: the real transport, a full mesh of authenticated TCP (optionally TLS) links.

One :class:`TcpMesh` is one peer's :class:`~warpmesh.net.seam.Seam`. Every pair of live peers shares
exactly one link; everything above (``MuxSeam``, anti-entropy, liveness, Raft) runs unchanged on this
or on :class:`~warpmesh.net.memory.MemoryFabric`.

This module is the runtime that owns sockets, tasks and timers. The rules it carries out are pure
functions elsewhere: :mod:`~warpmesh.net.admission` (who is admitted), :mod:`~warpmesh.net.linkframe`
(what a link frame means), :mod:`~warpmesh.net.roster` (gossip merge), :mod:`~warpmesh.net.address`,
:mod:`~warpmesh.net.meshconfig` (config, backoff) and :mod:`~warpmesh.net.linkstats` (counters); one
connection's queues and writer are :class:`~warpmesh.net.link.Link`. Their public names are
re-exported here.

Link life cycle (``docs/mesh.md`` has the full protocol):

1. **Dial or accept.** A peer dials its ``join`` seeds and every peer it learns about from roster
   gossip. A connector task per target address keeps trying with exponential backoff and jitter
   while there is no link to that target's peer.
2. **Handshake** (:mod:`warpmesh.net.handshake`): ids, incarnations, versions, listen addresses and a
   mutual HMAC proof of the cluster secret. Then the host *admits* the peer: a peer using our id, a
   stale incarnation, or a second link between the same two processes is refused with a reason.
   When both sides dial at once, the link dialled by the smaller id wins on both sides. A link
   whose peer restarted (a higher incarnation arrives) is probed and replaced if it does not answer.
3. **Serve.** ``[u32 length][frame]`` in both directions: DATA (seam payloads), PING/PONG
   (keepalive when idle, and probes), ROSTER (gossip: every live peer's id, incarnation and listen
   address; sent to a newly linked peer and to a peer whose ROSTER_DIGEST differs from ours, while
   every ``gossip_interval`` one random linked peer gets our 16-byte ROSTER_DIGEST, so upkeep per
   peer does not grow with the square of the mesh), BYE (graceful close). Writes go through a bounded per-link queue that one writer task
   drains, coalescing queued frames into one ``write`` and one ``drain``; the first frame of a burst
   on an idle link skips the queue and goes to the socket at once (``Link.write_now``). Reads deliver into the
   :class:`~warpmesh.net.seam.IncomingHub`, waiting while a subscriber is full: a slow reader slows
   the TCP stream (the kernel's flow control pushes back to the sender), nothing is dropped.
4. **Close.** EOF, a reset, a keepalive timeout or an oversize length prefix (the stream cannot be
   resynchronised) closes the link; the roster drops the peer and the connector redials. A link
   replaced by a better one is *retired*: its queued frames are flushed and it is read to EOF.

Hostile bytes never raise out of a read loop: oversize, truncated, undecodable frames and unknown
kinds are refused and counted in :attr:`TcpMesh.stats`. Logging goes to ``warpmesh.net.tcp``;
refusals are logged at WARNING with their reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from warpmesh import PROTOCOL_VERSION
from warpmesh.aio.observable import Observable
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.errors import PayloadTooLarge
from warpmesh.net import admission, joining
from warpmesh.net.address import WILDCARDS, format_address, parse_address, resolve_listen
from warpmesh.net.handshake import (
    REFUSE,
    Address,
    AdmissionRequired,
    Established,
    Failed,
    Handshake,
    PeerInfo,
    Refusal,
    Role,
)
from warpmesh.net.link import Link, LinkClosed, Target
from warpmesh.net.linkframe import (
    BYE,
    DATA,
    DATA_HEADER,
    PING,
    PONG,
    ROSTER,
    ROSTER_DIGEST,
    Event,
    decode_link_frame,
)
from warpmesh.net.linkstats import MeshStats, PeerStats
from warpmesh.net.meshconfig import TcpMeshConfig, backoff_delay
from warpmesh.net.roster import (
    MAX_ROSTER,
    Action,
    RosterEntry,
    encode_roster,
    merge_roster,
    parse_roster,
    roster_digest,
)
from warpmesh.net.seam import (
    IncomingHub,
    PeerId,
    PeerUnreachable,
    Seam,
    SeamClosed,
    boot_incarnation,  # re-exported: the README and the CLI import it from here
)
from warpmesh.net.secret import check_addresses
from warpmesh.net.tls import TlsConfig
from warpmesh.wire.frame import (
    DATA_OVERHEAD,
    DEFAULT_MAX_FRAME,
    Frame,
    StreamDecoder,
    encode_frame,
    length_prefixed,
)

log = logging.getLogger("warpmesh.net.tcp")

_DATA_OVERHEAD = DATA_OVERHEAD  # frame header + msgpack bin32 header (the length prefix is not in the limit)
#: Before a peer is authenticated we buffer at most this much of one frame (handshake frames are tiny).
HANDSHAKE_MAX_FRAME = 64 * 1024
_ALL_VERSIONS = frozenset(range(256))
_READ_CHUNK = 256 * 1024

#: Refusal codes that are routine (races, our own address, shutdown): logged at DEBUG, not WARNING.
_QUIET = frozenset({Refusal.DUPLICATE_LINK.value, Refusal.SELF.value, Refusal.SHUTTING_DOWN.value})


class TcpMesh(Seam):
    """A peer of a TCP mesh. ``await start()`` to listen and join; ``await close()`` to leave.

    Parameters:
        node_id: this peer's id, unique in the mesh.
        listen: ``(host, port)`` to listen on; port 0 picks a free port (see :attr:`address`).
        join: seed addresses; joining through any one live peer learns the whole roster.
        secret: the cluster secret (:func:`warpmesh.net.secret.load_secret`); without one only
            loopback addresses may be listened on or dialled.
        incarnation: this boot's incarnation, higher than any earlier boot of ``node_id`` (a
            restarted peer replaces its predecessor's links by having a higher one); see
            :func:`boot_incarnation`.
        tls: optional TLS contexts; the handshake still runs inside TLS.
        max_frame: largest frame accepted or sent (payload limit is 7 bytes less).
        advertise: the address other peers should dial (default: the bound listen address; a
            wildcard host is replaced by the address each peer sees us connect from).
        config: timeouts, backoff and buffer sizes.
        rng: randomness for backoff jitter (seed it for reproducible tests).
        nonce_source: ``n -> n random bytes`` for handshake nonces (default ``os.urandom``).
    """

    def __init__(
        self,
        node_id: PeerId,
        *,
        listen: Address = ("127.0.0.1", 0),
        join: Iterable[Address] = (),
        secret: bytes | None = None,
        incarnation: int,
        tls: TlsConfig | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        advertise: Address | None = None,
        config: TcpMeshConfig | None = None,
        rng: random.Random | None = None,
        nonce_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not isinstance(node_id, str) or not node_id or len(node_id.encode()) > 255:
            raise ValueError("node_id must be a non-empty string of at most 255 UTF-8 bytes")
        if type(incarnation) is not int or not 0 <= incarnation < 1 << 63:
            raise ValueError("incarnation must be an integer in [0, 2^63)")
        if max_frame < 1024:
            raise ValueError("max_frame must be at least 1024 bytes")
        self.self_id = node_id
        self.incarnation = incarnation
        self.listen = (listen[0], int(listen[1]))
        self.join = [(h, int(p)) for h, p in join]
        self.secret = secret or None
        self.tls = tls
        self.max_frame = max_frame
        self.max_payload = max_frame - _DATA_OVERHEAD
        self.config = config or TcpMeshConfig()
        self._q_frames = self.config.send_queue_frames
        self._q_bytes = self.config.send_queue_bytes
        self.rng = rng or random.Random()
        self._nonce_source = nonce_source
        self._advertise = advertise
        check_addresses(self.secret, listen=[self.listen[0]],
                        dial=[h for h, _ in self.join] + ([advertise[0]] if advertise else []))
        self.roster: Observable[frozenset[PeerId]] = Observable(frozenset({node_id}))
        self.hub = IncomingHub()
        self.stats = MeshStats()
        #: The bound listen address (after :meth:`start`).
        self.address: Address | None = None
        self._advertised: Address | None = None
        self._server: asyncio.Server | None = None
        self._started = False
        self._closed = False
        self._slots: dict[PeerId, Link] = {}
        self._conns: set[Link] = set()
        self._targets: dict[Address, Target] = {}
        #: The newest incarnation of each peer we know of (linked, or named by a roster we received):
        #: a peer dialling us that is newer than this is a newcomer the others may not know.
        self._known_inc: dict[PeerId, int] = {}
        self._locks: dict[PeerId, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changes: Observable[int] = Observable(0)
        self._pending_handshakes = 0
        self._ticker: asyncio.Task[None] | None = None
        self._self_addrs: set[Address] = set()
        self._warned: set[Address] = set()

    # ------------------------------------------------------------------------------------------
    # Seam API
    # ------------------------------------------------------------------------------------------
    async def start(self) -> TcpMesh:
        """Listen and start dialling the seeds. Returns self (``mesh = await TcpMesh(...).start()``)."""
        if self._started:
            raise RuntimeError("TcpMesh.start() called twice")
        self._started = True
        host, port = self.listen
        self._server = await asyncio.start_server(
            self._on_accept, host or None, port, reuse_address=True,
            ssl=self.tls.server if self.tls else None,
            ssl_handshake_timeout=self.config.handshake_timeout if self.tls else None,
        )
        sock = self._server.sockets[0].getsockname()
        self.address = (str(sock[0]), int(sock[1]))
        adv = self._advertise or (host if host not in WILDCARDS else "", self.address[1])
        self._advertised = (adv[0], int(adv[1]))
        self._self_addrs = {self.address, self._advertised}
        log.info("%s listening on %s (incarnation %d, tls=%s)", self.self_id, format_address(self.address),
                 self.incarnation, "on" if self.tls else "off")
        loop = asyncio.get_running_loop()
        for addr in self.join:
            self._target(addr, seed=True, peer_id=None, now=loop.time())
        self._ticker = self._spawn(self._tick())
        return self

    async def send_to(self, peer: PeerId, data: bytes) -> None:
        if self._closed:
            raise SeamClosed(f"{self.self_id} is closed")
        n = len(data)
        if n > self.max_payload:
            raise PayloadTooLarge(f"{n} bytes exceeds the {self.max_payload}-byte limit")
        if peer == self.self_id:
            await self.hub.deliver(peer, bytes(data))
            return
        conn = self._slots.get(peer)
        if conn is None or not conn.established:
            raise PeerUnreachable(peer)
        if n > conn.max_data:
            raise PayloadTooLarge(f"{n} bytes exceeds the {conn.max_data}-byte limit of {peer!r}")
        frame = DATA_HEADER.pack(n + _DATA_OVERHEAD, conn.version, DATA, 0xC6, n) + data
        if conn.write_now(frame):
            return
        q = conn.q
        if len(q) < self._q_frames and conn.q_bytes < self._q_bytes and not conn.space and not conn.retiring:
            # Fast path (room, and nobody waiting ahead of us): append without a coroutine hop.
            q.append(frame)
            conn.q_bytes += len(frame)
            wake = conn.wake
            if wake is not None and not wake.done():
                wake.set_result(None)
            return
        try:
            await conn.put(frame)
        except LinkClosed:
            raise PeerUnreachable(peer) from None

    async def broadcast(self, data: bytes) -> None:
        """Send to every linked peer (encoded once); peers whose link closes meanwhile are skipped."""
        if self._closed:
            raise SeamClosed(f"{self.self_id} is closed")
        n = len(data)
        if n > self.max_payload:
            raise PayloadTooLarge(f"{n} bytes exceeds the {self.max_payload}-byte limit")
        frame = DATA_HEADER.pack(n + _DATA_OVERHEAD, PROTOCOL_VERSION, DATA, 0xC6, n) + data
        for peer in sorted(self._slots):
            conn = self._slots.get(peer)
            if conn is None or not conn.established:
                continue
            if n > conn.max_data:  # this peer accepts smaller frames: skip it, counted
                if conn.pstats is not None:
                    conn.pstats.oversize_skipped += 1
                continue
            try:
                await conn.put(frame)
            except LinkClosed:
                continue

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Leave the mesh: say BYE on every link, flush queues briefly, close everything."""
        if not self._stop_accepting():
            return
        for conn in list(self._conns):
            if conn.established and not conn.closed:
                self._retire(conn, bye={"code": "leaving", "reason": f"{self.self_id} is shutting down"})
            else:
                self._close_conn(conn, "shutdown")
        self._changed()  # idle connectors see the mesh closed and return
        # Retired links flush, say BYE and half-close; each peer answers by closing its end, so the
        # link's task ends on EOF. Closing a socket with unread input would send RST and could make
        # the peer discard our last frames, hence the wait.
        serving = [c.task for c in self._conns if c.task is not None and not c.task.done()]
        if serving:
            await asyncio.wait(serving, timeout=self.config.close_timeout)
        await self._stopped("shutdown", wait_server=True)
        log.info("%s closed", self.self_id)

    async def abort(self) -> None:
        """Stop at once without BYE or flushing, as a crashed process would (for fault injection)."""
        if self._stop_accepting():
            await self._stopped("aborted", wait_server=False)

    def _stop_accepting(self) -> bool:
        """Mark the mesh closed and stop listening; False if it already was."""
        if self._closed:
            return False
        self._closed = True
        if self._server is not None:
            self._server.close()
        return True

    async def _stopped(self, reason: str, *, wait_server: bool) -> None:
        """Close what is left (counted under ``reason``), end every task, close the hub, empty the roster."""
        for conn in list(self._conns):
            self._close_conn(conn, reason)
        await cancel_and_wait([t for t in self._tasks if not t.done()])
        if wait_server and self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), self.config.close_timeout)
        self.hub.close()
        self.roster.set(frozenset({self.self_id}))

    async def __aenter__(self) -> TcpMesh:
        if not self._started:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------
    # Introspection and fault injection
    # ------------------------------------------------------------------------------------------
    def links(self) -> dict[PeerId, dict[str, Any]]:
        """Established links: peer -> incarnation, listen address, direction, queued frames."""
        return {
            pid: {"incarnation": c.peer.incarnation if c.peer else None,
                  "listen": c.listen, "dialled": c.initiator, "queued": len(c.q)}
            for pid, c in sorted(self._slots.items()) if c.established
        }

    def seed_outcomes(self) -> list[joining.SeedOutcome]:
        """What happened at each ``join`` seed so far (a seed whose peer is linked is ``ok``), in
        ``join`` order; :func:`warpmesh.net.joining.join_verdict` decides from these."""
        out = []
        for addr in self.join:
            t = self._targets.get(addr)
            if t is None:
                out.append(joining.SeedOutcome(format_address(addr)))
                continue
            kind = joining.SELF if t.is_self else t.outcome
            conn = self._slots.get(t.peer_id) if t.peer_id is not None else None
            if conn is not None and conn.established:
                kind = joining.OK
            out.append(joining.SeedOutcome(format_address(addr), kind, t.outcome_detail, t.outcome_repeats))
        return out

    def known_peers(self) -> dict[Address, PeerId | None]:
        """Addresses this peer keeps (or tries to keep) a link to, with the peer id if known."""
        return {addr: t.peer_id for addr, t in sorted(self._targets.items()) if not t.is_self}

    def drop_link(self, peer: PeerId) -> bool:
        """Abort the TCP connection to ``peer`` abruptly (as a network fault would); it reconnects."""
        conn = self._slots.get(peer)
        if conn is None:
            return False
        self._close_conn(conn, "dropped")
        return True

    # ------------------------------------------------------------------------------------------
    # Internals: tasks, targets, connectors
    # ------------------------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _changed(self) -> None:
        self._changes.set(self._changes.value + 1)

    def _publish_roster(self) -> None:
        live = {pid for pid, c in self._slots.items() if c.established}
        before = self.roster.value
        self.roster.set(frozenset(live | {self.self_id}))
        if self.roster.value != before:
            log.info("%s roster: %s", self.self_id, sorted(self.roster.value))
        self._changed()

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(self.config, attempt, self.rng.random())

    def _target(self, addr: Address, *, seed: bool, peer_id: PeerId | None, now: float,
                defer: bool = False) -> Target | None:
        if addr in self._self_addrs and not seed:
            return None
        t = self._targets.get(addr)
        if t is None:
            t = self._targets[addr] = Target(addr, seed=seed, peer_id=peer_id, now=now)
        else:
            t.seed = t.seed or seed
            if peer_id is not None:
                t.peer_id = peer_id
            t.last_seen = max(t.last_seen, now)
        if t.task is None and not t.is_self and not self._closed:
            t.task = self._spawn(self._connector(t, defer=defer))
        return t

    def _wanted(self, t: Target) -> bool:
        """Should the connector for ``t`` dial now?"""
        if self._closed or t.is_self or t.forgotten:
            return False
        if t.peer_id is None:
            return True
        conn = self._slots.get(t.peer_id)
        if conn is None:
            return True
        # A link exists; dial only if gossip announced a newer incarnation than the linked one.
        return conn.peer is not None and conn.peer.incarnation < t.known_inc

    async def _connector(self, t: Target, *, defer: bool = False) -> None:
        """Keep a link to ``t``: dial with backoff while there is none."""
        attempt = 0
        delay_next = defer  # learned from gossip: the peer may be dialling us right now
        try:
            while not self._closed and not t.forgotten and not t.is_self:
                if not self._wanted(t):
                    version = self._changes.version
                    await self._changes.changed(version)
                    delay_next = True  # a link just went away: both ends redial, so spread them out
                    attempt = 0
                    continue
                if delay_next or attempt:
                    delay = self._backoff(attempt)
                    if attempt == 0 and t.peer_id is not None and t.peer_id < self.self_id:
                        delay += self.config.dial_defer  # let the smaller id dial first
                    await asyncio.sleep(delay)
                    if not self._wanted(t):
                        continue
                delay_next = False
                outcome = await self._dial(t)
                if outcome != "established":  # established is noted when linked (see _note_linked)
                    t.note_outcome(outcome)
                if outcome in ("established", Refusal.DUPLICATE_LINK.value):
                    # A link existed (or another one won the race): redial only after it goes away.
                    attempt = 0
                    delay_next = True
                elif outcome == Refusal.SELF.value:
                    t.is_self = True
                    self._self_addrs.add(t.addr)
                    return
                else:
                    attempt += 1
        finally:
            t.task = None

    async def _dial(self, t: Target) -> str:
        host, port = t.addr
        self.stats.dials += 1
        t.dialing = True
        try:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        host, port,
                        ssl=self.tls.client if self.tls else None,
                        server_hostname=(self.tls.server_hostname or host) if self.tls else None,
                        ssl_handshake_timeout=self.config.handshake_timeout if self.tls else None,
                    ),
                    self.config.connect_timeout + (self.config.handshake_timeout if self.tls else 0.0),
                )
            except (OSError, TimeoutError, ssl.SSLError) as err:
                self.stats.dial_failures += 1
                msg = f"{type(err).__name__}: {err}"
                t.outcome_detail = msg
                if t.last_warned != msg:
                    t.last_warned = msg
                    log.log(logging.INFO if t.seed else logging.DEBUG, "%s cannot reach %s: %s", self.self_id,
                            format_address(t.addr), msg)
                return joining.REFUSED if isinstance(err, ConnectionRefusedError) else joining.UNREACHABLE
            return await self._run_conn(reader, writer, initiator=True, target=t)
        finally:
            t.dialing = False

    def _on_accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: asyncio (3.11) logs an error when the task it creates for
        # a coroutine callback is cancelled, so the connection runs in a task we own instead.
        self.stats.accepted += 1
        if self._closed:
            writer.close()
            return
        self._spawn(self._run_conn(reader, writer, initiator=False, target=None))

    # ------------------------------------------------------------------------------------------
    # Internals: one connection
    # ------------------------------------------------------------------------------------------
    async def _run_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                        initiator: bool, target: Target | None) -> str:
        """Handshake, then serve the link until it closes. Returns "established" or a refusal code."""
        conn = Link(reader, writer, self_id=self.self_id, config=self.config, max_payload=self.max_payload,
                    initiator=initiator, target=target)
        conn.task = asyncio.current_task()
        self._conns.add(conn)
        try:
            result = await self._handshake(conn)
            if not isinstance(result, tuple):
                return result
            await self._serve(conn, *result)
            return "established"
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not take the whole mesh down; log it loudly and drop the link
            log.exception("%s: unexpected error on connection %s", self.self_id, conn.describe())
            return "error"
        finally:
            self._close_conn(conn, "ended")
            self._conns.discard(conn)

    async def _handshake(self, conn: Link) -> str | tuple[StreamDecoder, deque[Frame | bytes]]:
        loop = conn.loop
        cfg = self.config
        assert self._advertised is not None
        inbound = not conn.initiator
        if inbound:
            if self._pending_handshakes >= cfg.max_pending_handshakes:
                self._refuse_raw(conn, Refusal.OVERLOADED, f"{self.self_id} has too many pending handshakes")
                return Refusal.OVERLOADED.value
            self._pending_handshakes += 1
        try:
            hs = Handshake(
                Role.INITIATOR if conn.initiator else Role.RESPONDER,
                PeerInfo(self.self_id, self.incarnation, self._advertised, (PROTOCOL_VERSION,), self.max_frame),
                secret=self.secret, nonce_source=self._nonce_source, timeout=cfg.handshake_timeout,
            )
            hs.start(loop.time())
            # The responder talks to strangers: buffer at most a small frame until they prove the
            # secret. The initiator may receive link frames right behind WELCOME, so it must accept
            # full-size frames (it dialled an address it chose).
            decoder = StreamDecoder(max_size=HANDSHAKE_MAX_FRAME if inbound else self.max_frame,
                                    versions=_ALL_VERSIONS, stats=self.stats.handshake_frames)
            frames: deque[Frame | bytes] = deque()
            self._write_raw(conn, hs.data_to_send())
            while not hs.finished:
                if not frames:
                    remaining = hs.deadline - loop.time()
                    try:
                        if remaining <= 0:
                            raise TimeoutError
                        data = await asyncio.wait_for(conn.reader.read(_READ_CHUNK), remaining)
                    except TimeoutError:
                        hs.expire(hs.deadline)
                        break
                    except (ConnectionError, OSError, ssl.SSLError) as err:
                        log.debug("%s: connection %s failed during handshake: %s", self.self_id,
                                  conn.describe(), err)
                        return "reset"
                    if not data:
                        decoder.eof()
                        log.debug("%s: %s closed during the handshake", self.self_id, conn.describe())
                        return "eof"
                    refused_before = decoder.stats.refused_total
                    frames.extend(decoder.feed(data))
                    if decoder.broken is not None or decoder.stats.refused_total != refused_before:
                        why = decoder.broken or "an undecodable frame"
                        hs.refuse(Refusal.PROTOCOL, f"malformed handshake: {why}")
                        break
                    continue
                item = frames.popleft()
                assert isinstance(item, Frame)  # no data_kind yet: every item is a Frame
                ev = hs.receive(item)
                if isinstance(ev, AdmissionRequired):
                    try:
                        code, reason = await asyncio.wait_for(
                            self._admit(conn, ev.peer), max(0.0, hs.deadline - loop.time()))
                    except TimeoutError:
                        hs.expire(hs.deadline)
                        break
                    if hs.finished:  # pragma: no cover - defensive
                        break
                    if code is None:
                        hs.accept()
                    else:
                        hs.refuse(code, reason)
                self._write_raw(conn, hs.data_to_send())
            self._write_raw(conn, hs.data_to_send())
            outcome = hs.outcome
            if isinstance(outcome, Established):
                if conn.target is not None:
                    conn.target.dialing = False
                if self._slots.get(outcome.peer.node_id) is not conn or self._closed:
                    return "superseded"  # retired while waiting for WELCOME
                decoder.max_size = self.max_frame
                decoder.versions = (outcome.version,)
                decoder.data_kind = DATA
                return decoder, frames
            assert isinstance(outcome, Failed)
            self._on_refused(conn, hs, outcome)
            if conn.peer is not None and self._slots.get(conn.peer.node_id) is conn:
                del self._slots[conn.peer.node_id]  # admitted as initiator, then refused by the peer
                self._changed()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.writer.drain(), 1.0)
            return outcome.code
        finally:
            if inbound:
                self._pending_handshakes -= 1

    def _write_raw(self, conn: Link, data: bytes) -> None:
        if data and not conn.writer.is_closing():
            conn.writer.write(data)

    def _refuse_raw(self, conn: Link, code: Refusal, reason: str) -> None:
        self.stats.refused_by_us[code.value] += 1
        if conn.initiator:
            self.stats.refused_dialling[code.value] += 1
        log.warning("%s refused %s: %s", self.self_id, conn.describe(), reason)
        self._write_raw(conn, length_prefixed(encode_frame(REFUSE, {"code": code.value, "reason": reason})))

    def _on_refused(self, conn: Link, hs: Handshake, outcome: Failed) -> None:
        peer = hs.peer.node_id if hs.peer else "?"
        where = format_address(conn.remote) if conn.remote else "?"
        level = logging.DEBUG if outcome.code in _QUIET else logging.WARNING
        if conn.target is not None:
            conn.target.outcome_detail = outcome.reason
        if conn.initiator:
            self.stats.refused_dialling[outcome.code] += 1
        if outcome.by_peer:
            self.stats.refused_by_peer[outcome.code] += 1
            log.log(level, "%s was refused by %s at %s [%s]: %s", self.self_id, peer, where, outcome.code,
                    outcome.reason)
        else:
            self.stats.refused_by_us[outcome.code] += 1
            log.log(level, "%s refused %s at %s [%s]: %s", self.self_id, peer, where, outcome.code,
                    outcome.reason)

    # -- admission ----------------------------------------------------------------------------
    async def _admit(self, conn: Link, peer: PeerInfo) -> tuple[Refusal | None, str]:
        """Host policy after the peer proved the secret (decided by :mod:`warpmesh.net.admission`)."""
        if self._closed:
            return Refusal.SHUTTING_DOWN, f"{self.self_id} is shutting down"
        pid = peer.node_id
        conn.peer = peer  # authenticated: from here on the connection is known by the peer's id
        refused = admission.check_identity(self.self_id, self.incarnation, peer)
        if refused is not None:
            return refused.code, refused.reason
        lock = self._locks.get(pid)
        if lock is None:
            lock = self._locks[pid] = asyncio.Lock()
        async with lock:
            if self._closed:
                return Refusal.SHUTTING_DOWN, f"{self.self_id} is shutting down"
            old = self._slots.get(pid)
            if old is conn:  # pragma: no cover - a connection is admitted once
                old = None
            existing = None
            if old is not None:
                assert old.peer is not None
                existing = admission.Existing(old.peer.incarnation, old.established, old.initiator_id())
            probe = admission.Probe.NOT_YET
            while True:
                decision = admission.decide(self.self_id, peer, initiator=conn.initiator_id(), old=existing,
                                            dialing=self._dialing(pid), probe=probe)
                if not isinstance(decision, admission.ProbeOld):
                    break
                assert old is not None
                if not await old.probe(self.config.probe_timeout):
                    probe = admission.Probe.SILENT
                else:
                    probe = admission.Probe.ANSWERED if self._slots.get(pid) is old else admission.Probe.GONE
            if isinstance(decision, admission.Refuse):
                return decision.code, decision.reason
            if old is not None:
                self._replace(old, conn, decision.old)
            if conn.closed:
                return Refusal.PROTOCOL, "connection closed during admission"
            conn.listen = resolve_listen(peer.listen, conn.remote)
            self._slots[pid] = conn
            self._changed()
            return None, ""

    def _dialing(self, pid: PeerId) -> bool:
        return any(t.dialing and t.peer_id == pid for t in self._targets.values())

    def _replace(self, old: Link, new: Link, how: admission.OldLink) -> None:
        """Carry out what admitting ``new`` does to ``old`` (see :class:`warpmesh.net.admission.OldLink`)."""
        Old = admission.OldLink
        if how is Old.KEEP:
            return
        if how is Old.CLOSE_DEAD:
            log.info("%s: link to %s did not answer a probe; replacing it with %s", self.self_id,
                     old.describe(), new.describe())
        if how in (Old.CLOSE_DEAD, Old.CLOSE_RESTARTED, Old.CLOSE_DUPLICATE):
            self._close_conn(old, how.value)
        elif how is Old.RETIRE_NEWER:
            self._retire(old, bye={"code": Refusal.DUPLICATE_LINK.value, "reason": "replaced by a newer link"})
        else:
            self._retire(old, bye={"code": Refusal.DUPLICATE_LINK.value,
                                   "reason": f"the link dialled by {min(self.self_id, old.peer_id)} wins"})

    # -- serving a link -----------------------------------------------------------------------
    async def _serve(self, conn: Link, decoder: StreamDecoder, frames: deque[Frame | bytes]) -> None:
        loop = conn.loop
        pid = conn.peer_id
        ps = self.stats.peer(pid)
        conn.pstats = ps
        decoder.stats = ps.frames
        assert conn.peer is not None
        conn.max_data = min(self.max_frame, conn.peer.max_frame) - _DATA_OVERHEAD
        conn.established = True
        conn.last_rx = conn.last_tx = loop.time()
        ps.links += 1
        assert conn.peer is not None
        if ps.links > 1:
            log.info("%s reconnected to %s (incarnation %d, link #%d)", self.self_id, conn.describe(),
                     conn.peer.incarnation, ps.links)
        else:
            log.info("%s linked to %s (incarnation %d)", self.self_id, conn.describe(), conn.peer.incarnation)
        newcomer = self._note_known(conn.peer_id, conn.peer.incarnation) and not conn.initiator
        self._note_linked(conn)
        conn.writer_task = self._spawn(self._writer(conn))
        self._publish_roster()
        self._send_roster(conn)
        if newcomer and conn.listen is not None:
            self._announce(conn)
        reason = "eof"
        try:
            if frames:
                await self._process(conn, frames)
            reader = conn.reader
            while not conn.closed:
                data = await reader.read(_READ_CHUNK)
                if not data:
                    if not conn.closed:  # after our own abort a partial frame is not the peer's fault
                        decoder.eof()
                    break
                conn.last_rx = loop.time()
                ps.bytes_in += len(data)
                got = decoder.feed_fast(data)
                if got:
                    await self._process(conn, got)
                    # Time spent waiting for a slow subscriber is not the peer's silence.
                    conn.last_rx = loop.time()
                if decoder.broken is not None:
                    reason = "oversize_frame"
                    log.warning("%s: closing link to %s: %s (a stream cannot resynchronise after a bad "
                                "length prefix; it will reconnect)", self.self_id, conn.describe(),
                                decoder.broken)
                    break
        except (ConnectionError, OSError, ssl.SSLError) as err:
            reason = "reset"
            log.debug("%s: link to %s failed: %s", self.self_id, conn.describe(), err)
        finally:
            wt = conn.writer_task
            if reason == "eof" and conn.retiring and wt is not None and not wt.done():
                # The peer finished first; let our writer flush what is queued before closing.
                with contextlib.suppress(Exception):
                    await asyncio.wait([wt], timeout=self.config.close_timeout)
            self._close_conn(conn, reason)

    async def _process(self, conn: Link, frames: Iterable[Frame | bytes]) -> None:
        hub = self.hub
        pid = conn.peer_id
        ps = conn.pstats
        assert ps is not None
        for f in frames:
            if type(f) is bytes:  # a DATA payload from the decoder's fast path
                payload = f
            else:
                assert isinstance(f, Frame)
                event, value = decode_link_frame(f)
                if event is not Event.DATA:
                    self._on_control(conn, ps, event, value)
                    continue
                payload = value
            ps.frames_in += 1
            conn.reading_blocked = True
            try:
                await hub.deliver(pid, payload)
            finally:
                conn.reading_blocked = False

    def _on_control(self, conn: Link, ps: PeerStats, event: Event, value: Any) -> None:
        if event is Event.PING:
            self.stats.control_bytes_out["pong"] += conn.send_ctl(PONG, value)
        elif event is Event.PONG:
            fut = conn.pongs.get(value) if value is not None else None
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif event is Event.GOSSIP:
            self._on_roster(conn, value)
        elif event is Event.GOSSIP_DIGEST:
            self._on_roster_digest(conn, value)
        elif event is Event.BYE:
            self._on_bye(conn, value)
        else:
            ps.frames.refused[value] += 1

    async def _writer(self, conn: Link) -> None:
        try:
            await conn.write_loop(self.config.write_batch_bytes)
        except (ConnectionError, OSError, RuntimeError, ssl.SSLError) as err:
            log.debug("%s: write to %s failed: %s", self.self_id, conn.describe(), err)
            self._close_conn(conn, "reset")

    def _retire(self, conn: Link, *, bye: dict[str, str] | None) -> None:
        """Take ``conn`` out of service gracefully: flush its queue, say BYE, read it to EOF."""
        if conn.closed or conn.retiring:
            return
        conn.retiring = True
        conn.send_bye = bye
        if conn.peer is not None and self._slots.get(conn.peer.node_id) is conn:
            del self._slots[conn.peer.node_id]
            self._note_unlinked(conn)
        conn.release_space()
        conn.kick()
        self._publish_roster()

    def _close_conn(self, conn: Link, reason: str) -> None:
        """Close ``conn`` now (idempotent): drop it from the roster, wake everyone waiting on it."""
        if conn.closed:
            return
        conn.closed = True
        if conn.established:
            self.stats.links_closed[reason] += 1
            if conn.pstats is not None and conn.q:
                conn.pstats.frames_lost += len(conn.q)
            if reason not in ("ended", "shutdown"):
                log.info("%s: link to %s closed (%s)", self.self_id, conn.describe(), reason)
        conn.q.clear()
        conn.q_bytes = 0
        conn.release_space()
        conn.kick()
        for fut in conn.pongs.values():
            if not fut.done():
                fut.set_exception(LinkClosed())
        if reason in ("ended", "eof", "shutdown"):
            conn.writer.close()  # flushes what the transport still buffers, then FIN
        else:
            conn.writer.transport.abort()  # a fault: drop everything, RST
        if conn.peer is not None and self._slots.get(conn.peer.node_id) is conn:
            del self._slots[conn.peer.node_id]
            if conn.established:
                self._note_unlinked(conn)
            self._publish_roster()

    def _note_linked(self, conn: Link) -> None:
        now = conn.loop.time()
        assert conn.peer is not None
        pid = conn.peer_id
        if conn.target is not None:
            conn.target.peer_id = pid
            conn.target.last_warned = None
            conn.target.note_outcome(joining.OK)
            conn.target.outcome_detail = ""
        if conn.listen is not None:
            t = self._target(conn.listen, seed=False, peer_id=pid, now=now)
            if t is not None:
                t.known_inc = max(t.known_inc, conn.peer.incarnation)
        # Addresses this id used before (a restart on a new port) are stale unless they are seeds.
        for addr, t in list(self._targets.items()):
            if t.peer_id == pid and not t.seed and addr != conn.listen and t is not conn.target:
                self._forget(t)
            elif t.peer_id == pid:
                t.last_seen = now

    def _note_unlinked(self, conn: Link) -> None:
        now = conn.loop.time()
        for t in self._targets.values():
            if t.peer_id == conn.peer_id:
                t.last_seen = now

    def _forget(self, t: Target) -> None:
        t.forgotten = True
        self._targets.pop(t.addr, None)
        if t.task is not None:
            t.task.cancel()

    def _on_bye(self, conn: Link, code: Any) -> None:
        log.info("%s: %s said BYE (%s)", self.self_id, conn.describe(), code)
        if code == "leaving" and conn.peer is not None:
            for t in list(self._targets.values()):
                if t.peer_id == conn.peer_id and not t.seed:
                    self._forget(t)
        self._retire(conn, bye=None)

    # -- roster gossip ------------------------------------------------------------------------
    def _roster_entries(self) -> list[RosterEntry]:
        assert self._advertised is not None
        live = [RosterEntry(pid, c.peer.incarnation, c.listen) for pid, c in sorted(self._slots.items())
                if c.established and c.listen is not None and c.peer is not None]
        return [RosterEntry(self.self_id, self.incarnation, self._advertised), *live]

    def _roster_body(self) -> dict[str, Any]:
        return encode_roster(self._roster_entries())

    def _send_roster(self, conn: Link) -> None:
        self.stats.control_bytes_out["roster"] += conn.send_ctl(ROSTER, self._roster_body())

    def _note_known(self, peer: PeerId, incarnation: int) -> bool:
        """Remember ``peer`` at ``incarnation``; True when that is newer than anything we knew."""
        if self._known_inc.get(peer, -1) >= incarnation:
            return False
        self._known_inc[peer] = incarnation
        return True

    def _announce(self, conn: Link) -> None:
        """A peer none of our gossip named dialled us (it joins through us): tell every other linked
        peer, in one entry, so they dial it now rather than after its own dials or a digest round."""
        assert conn.peer is not None and conn.listen is not None
        body = encode_roster([RosterEntry(conn.peer_id, conn.peer.incarnation, conn.listen)])
        for pid, c in sorted(self._slots.items()):
            if pid != conn.peer_id and c.established and not c.closed:
                self.stats.control_bytes_out["roster"] += c.send_ctl(ROSTER, body)

    def _gossip_now(self) -> None:
        """Periodic anti-entropy: our roster's digest to one random linked peer. Changes travel
        without it (a newcomer gets our roster on linking and dials everyone in it, and they
        learn it from its dial); this repairs what that misses (a peer one side cannot dial)."""
        if self._closed:
            return
        linked = [c for _pid, c in sorted(self._slots.items()) if c.established and not c.closed]
        if not linked:
            return
        conn = linked[self.rng.randrange(len(linked))]
        self.stats.control_bytes_out["roster_digest"] += conn.send_ctl(
            ROSTER_DIGEST, roster_digest(self._roster_entries()))

    def _on_roster_digest(self, conn: Link, digest: bytes) -> None:
        if digest == roster_digest(self._roster_entries()):
            return
        now = conn.loop.time()
        # At most one answer per second per link: a peer repeating a digest cannot make us flood it.
        if now - conn.roster_sent_at < 1.0:
            return
        conn.roster_sent_at = now
        self._send_roster(conn)

    def _on_roster(self, conn: Link, body: Any) -> None:
        ps = conn.pstats
        assert ps is not None
        parsed = parse_roster(body)
        if parsed is None:
            ps.frames.refused["bad_roster"] += 1
            return
        entries, bad = parsed
        if bad:
            ps.frames.refused["bad_roster"] += bad
        now = conn.loop.time()
        for e in entries:
            self._note_known(e.peer, e.incarnation)
        linked = {pid: c.peer.incarnation for pid, c in self._slots.items() if c.peer is not None}
        for action, e in merge_roster(entries, self_id=self.self_id, sender=conn.peer_id, linked=linked,
                                      has_secret=bool(self.secret)):
            if action is Action.SEEN:
                for t in self._targets.values():
                    if t.peer_id == e.peer:
                        t.last_seen = now
            elif action is Action.BLOCKED:
                if e.address in self._warned:
                    continue
                self._warned.add(e.address)
                log.warning("%s: not dialling %s at %s learned from %s: no cluster secret, so only loopback "
                            "addresses may be used", self.self_id, e.peer, format_address(e.address),
                            conn.peer_id)
            else:
                learned = self._target(e.address, seed=False, peer_id=e.peer, now=now, defer=True)
                if learned is not None:
                    learned.known_inc = max(learned.known_inc, e.incarnation)
                    learned.last_seen = now
        self._changed()

    # -- periodic work ------------------------------------------------------------------------
    async def _tick(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        period = min(cfg.keepalive_interval, cfg.probe_timeout) / 2
        last_gossip = loop.time()
        while not self._closed:
            await asyncio.sleep(period)
            now = loop.time()
            for conn in list(self._conns):
                if not conn.established or conn.closed:
                    continue
                # Only a link that owes us news (we sent it something since it last spoke) is
                # pinged, and closed if it stays silent: an idle link costs no keepalives, so
                # their number does not grow with the mesh. Whatever next uses an idle link (a
                # liveness probe reaches every peer in turn) makes it owed, and a dead one is found.
                if not conn.owed:
                    continue
                silent = now - conn.owed_since
                if silent > cfg.keepalive_timeout and not conn.reading_blocked:
                    log.warning("%s: no frame from %s for %.1f s; closing the link", self.self_id,
                                conn.describe(), now - conn.last_rx)
                    self._close_conn(conn, "keepalive_timeout")
                elif (silent >= cfg.keepalive_interval and now - conn.last_ping >= cfg.keepalive_interval
                      and not conn.retiring):
                    conn.last_ping = now
                    self.stats.control_bytes_out["ping"] += conn.send_ctl(PING, 0)
            if now - last_gossip >= cfg.gossip_interval:
                last_gossip = now
                self._gossip_now()
            for t in list(self._targets.values()):
                if (not t.seed and not t.dialing and (t.peer_id is None or t.peer_id not in self._slots)
                        and now - t.last_seen > cfg.forget_after):
                    log.info("%s: forgetting %s at %s (unreachable for %.0f s)", self.self_id, t.peer_id,
                             format_address(t.addr), now - t.last_seen)
                    self._forget(t)


__all__ = [
    "BYE",
    "DATA",
    "MAX_ROSTER",
    "PING",
    "PONG",
    "ROSTER",
    "Address",
    "MeshStats",
    "PeerStats",
    "TcpMesh",
    "TcpMeshConfig",
    "TlsConfig",
    "boot_incarnation",
    "format_address",
    "parse_address",
]
