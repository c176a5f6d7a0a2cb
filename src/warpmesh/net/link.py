"""One TCP connection of a :class:`~warpmesh.net.tcp.TcpMesh` (its send queue and writer), and the
addresses the mesh keeps links to.

Runtime: a :class:`Link` lives on the event loop; what it means to receive a frame is decided in
:mod:`warpmesh.net.linkframe`, who gets admitted in :mod:`warpmesh.net.admission`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from warpmesh import PROTOCOL_VERSION
from warpmesh.errors import Closed
from warpmesh.net import joining
from warpmesh.net.address import format_address
from warpmesh.net.handshake import Address, PeerInfo
from warpmesh.net.linkframe import BYE, PING, PONG
from warpmesh.net.linkstats import PeerStats
from warpmesh.net.meshconfig import TcpMeshConfig
from warpmesh.net.seam import PeerId
from warpmesh.wire.frame import encode_frame, length_prefixed


class LinkClosed(Closed):
    """The link closed (or is retiring) while a sender waited on it."""


class Target:
    """An address we keep a link to: a ``--join`` seed or a peer learned from gossip or a handshake."""

    __slots__ = ("addr", "dialing", "forgotten", "is_self", "known_inc", "last_seen", "last_warned",
                 "outcome", "outcome_detail", "outcome_repeats", "peer_id", "seed", "task")

    def __init__(self, addr: Address, *, seed: bool, peer_id: PeerId | None, now: float) -> None:
        self.addr = addr
        self.seed = seed
        self.peer_id = peer_id
        self.known_inc = -1
        self.last_seen = now
        self.dialing = False
        self.is_self = False
        self.forgotten = False
        self.last_warned: str | None = None
        self.task: asyncio.Task[None] | None = None
        #: The last dial's result (see warpmesh.net.joining), its detail, and how often in a row.
        self.outcome = joining.PENDING
        self.outcome_detail = ""
        self.outcome_repeats = 0

    def note_outcome(self, kind: str) -> None:
        """Record one dial's outcome (counting repeats of the same one)."""
        self.outcome_repeats = self.outcome_repeats + 1 if kind == self.outcome else 1
        self.outcome = kind


class Link:
    """One TCP connection: handshake, then (if admitted) a link with a send queue and a writer.

    The mesh (:class:`~warpmesh.net.tcp.TcpMesh`) owns the life cycle; a link owns its queues: DATA
    frames wait in ``q`` (bounded by the config), control frames in ``ctl`` (written first).
    """

    __slots__ = (
        "burst", "closed", "config", "ctl", "established", "initiator", "last_ping", "last_rx",
        "last_tx", "listen", "loop", "max_data", "owed_since", "peer", "ping_seq", "pongs", "pstats", "q",
        "q_bytes", "reader", "reading_blocked", "remote", "retiring", "roster_sent_at", "self_id", "send_bye",
        "space", "target", "task", "version", "wake", "writer", "writer_task",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, self_id: PeerId,
                 config: TcpMeshConfig, max_payload: int, initiator: bool, target: Target | None) -> None:
        self.self_id = self_id
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.reader = reader
        self.writer = writer
        self.initiator = initiator
        self.target = target
        peername = writer.get_extra_info("peername")
        self.remote: Address | None = (str(peername[0]), int(peername[1])) if peername else None
        self.peer: PeerInfo | None = None
        self.listen: Address | None = None
        self.version = PROTOCOL_VERSION
        #: Largest DATA payload this link may carry: both ends' frame limits, less the header.
        self.max_data = max_payload
        self.established = False
        self.retiring = False
        self.send_bye: dict[str, str] | None = None
        self.closed = False
        self.reading_blocked = False
        self.pstats: PeerStats | None = None
        self.q: deque[bytes] = deque()
        self.q_bytes = 0
        self.ctl: deque[bytes] = deque()
        self.space: deque[asyncio.Future[None]] = deque()
        self.wake: asyncio.Future[None] | None = None
        #: True from a frame written by :meth:`write_now` until the loop turns: later frames of the
        #: same burst queue up for the writer, which coalesces them into one write.
        self.burst = False
        self.writer_task: asyncio.Task[None] | None = None
        self.task: asyncio.Task[Any] | None = None
        self.last_rx = self.last_tx = self.loop.time()
        #: When the link last became *owed* news: our first frame other than a PONG after its last
        #: frame. While this is newer than ``last_rx`` the link is pinged and, if silent, closed; an
        #: idle link costs nothing (keepalives no longer grow with the number of links). Silence is
        #: timed from here, so an idle link we speak to again gets a whole interval to answer.
        self.owed_since = self.last_rx
        self.last_ping = float("-inf")
        self.roster_sent_at = float("-inf")  # when we last answered a roster digest on this link
        self.ping_seq = 0
        self.pongs: dict[int, asyncio.Future[None]] = {}

    @property
    def peer_id(self) -> PeerId:
        """The authenticated peer's id (only after admission)."""
        assert self.peer is not None
        return self.peer.node_id

    def initiator_id(self) -> PeerId:
        """The id of the side that dialled this connection."""
        return self.self_id if self.initiator else self.peer_id

    def describe(self) -> str:
        """``peer@address (dialled|accepted)`` for log lines."""
        who = self.peer.node_id if self.peer else "?"
        where = format_address(self.remote) if self.remote else "?"
        return f"{who}@{where} ({'dialled' if self.initiator else 'accepted'})"

    # -- sending ------------------------------------------------------------------------
    def kick(self) -> None:
        """Wake the writer."""
        w = self.wake
        if w is not None and not w.done():
            w.set_result(None)

    def write_now(self, frame: bytes) -> bool:
        """Hand a DATA frame straight to the transport if the writer is parked with nothing queued,
        nothing is buffered unsent, and no frame went this way since the loop last turned; False
        (nothing done) otherwise, and the caller queues it. A lone frame then reaches the socket
        at once instead of one loop iteration later, when the writer task would have woken for it
        (on a loaded host that wake-up costs tens of microseconds per message). Order is kept: the
        frames queued before it were all handed to the transport already."""
        wake = self.wake
        if (wake is None or wake.done() or self.burst or self.q or self.ctl or self.closed or self.retiring
                or self.writer.transport.get_write_buffer_size()):
            return False
        self.writer.write(frame)
        self._asked()
        self.burst = True
        self.loop.call_soon(self._end_burst)
        ps = self.pstats
        if ps is not None:
            ps.frames_out += 1
            ps.bytes_out += len(frame)
        self.last_tx = self.loop.time()
        return True

    def _asked(self) -> None:
        if self.owed_since <= self.last_rx:
            self.owed_since = self.loop.time()

    @property
    def owed(self) -> bool:
        """We sent the peer something (not a PONG) since it last spoke."""
        return self.owed_since > self.last_rx

    def _end_burst(self) -> None:
        self.burst = False

    async def put(self, frame: bytes) -> None:
        """Queue a DATA frame, waiting while the queue is full (at least one frame always fits)."""
        cfg = self.config
        while self.q and (len(self.q) >= cfg.send_queue_frames or self.q_bytes >= cfg.send_queue_bytes):
            if self.closed or self.retiring:
                raise LinkClosed
            fut = self.loop.create_future()
            self.space.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                fut.cancel()
                self.release_space()
                raise
        if self.closed or self.retiring:
            raise LinkClosed
        self.q.append(frame)
        self.q_bytes += len(frame)
        self._asked()
        self.kick()

    def release_space(self) -> None:
        """Wake senders waiting for room in the queue (all of them once the link is going away)."""
        cfg = self.config
        space = self.space
        while space and (self.closed or self.retiring or (len(self.q) < cfg.send_queue_frames
                                                          and self.q_bytes < cfg.send_queue_bytes)):
            fut = space.popleft()
            if not fut.done():
                fut.set_result(None)
                if not (self.closed or self.retiring):
                    return

    def send_ctl(self, kind: int, body: Any) -> int:
        """Queue a control frame; it is written ahead of queued DATA frames. Returns its size."""
        if self.closed:
            return 0
        frame = length_prefixed(encode_frame(kind, body, version=self.version))
        self.ctl.append(frame)
        if kind != PONG:
            self._asked()
        self.kick()
        return len(frame)

    async def probe(self, timeout: float) -> bool:
        """True if the peer answers a PING within ``timeout`` (or is visibly sending to us)."""
        if self.closed:
            return False
        if self.reading_blocked and self.loop.time() - self.last_rx < self.config.keepalive_timeout:
            return True  # we are not reading because our subscriber is slow, and it did talk recently
        self.ping_seq += 1
        n = self.ping_seq
        fut = self.pongs[n] = self.loop.create_future()
        self.send_ctl(PING, n)
        try:
            await asyncio.wait_for(fut, timeout)
            return not self.closed
        except (TimeoutError, LinkClosed):
            return False
        finally:
            self.pongs.pop(n, None)

    async def write_loop(self, batch: int) -> None:
        """Drain the queues: control frames first, then DATA, coalesced into writes of about ``batch``
        bytes; then, when retiring, say BYE and half-close. Raises what the transport raises."""
        conn = self
        loop = conn.loop
        w = conn.writer
        ps = conn.pstats
        assert ps is not None
        while True:
            if not conn.ctl and not conn.q:
                if conn.retiring or conn.closed:
                    break
                conn.wake = loop.create_future()
                await conn.wake
                conn.wake = None
                continue
            parts: list[bytes] = []
            ctl = conn.ctl
            while ctl:
                parts.append(ctl.popleft())
            q = conn.q
            size = 0
            nframes = 0
            while q and size < batch:
                f = q.popleft()
                parts.append(f)
                size += len(f)
                nframes += 1
            conn.q_bytes -= size
            if conn.space:
                conn.release_space()
            if conn.closed:
                break
            if len(parts) == 1:
                w.write(parts[0])
                nbytes = len(parts[0])
            else:
                # One system call for the whole batch (3.12+ transports scatter-gather it with
                # sendmsg; 3.11 joins the parts once).
                w.writelines(parts)
                nbytes = sum(map(len, parts))
            ps.frames_out += nframes
            ps.bytes_out += nbytes
            conn.last_tx = loop.time()
            await w.drain()
        if conn.retiring and not conn.closed:
            if conn.send_bye is not None:
                w.write(length_prefixed(encode_frame(BYE, conn.send_bye, version=conn.version)))
                await w.drain()
            if w.can_write_eof():
                w.write_eof()
            else:
                w.close()


__all__ = ["Link", "LinkClosed", "Target"]
