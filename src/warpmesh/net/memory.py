"""In-memory fabric: many seams in one process, with seeded per-link faults and crash/restart.

Designed for tests and the deterministic simulator (run it on a
:class:`~warpmesh.sim.loop.VirtualTimeLoop`), it also works on a normal asyncio loop.

Each directed link ``a -> b`` has :class:`LinkFaults`: drop and duplicate probabilities, a base
latency with jitter, and a reorder probability (an extra random delay that lets later frames
overtake). Without reordering a link is FIFO. Partitions block links one way or both ways; a blocked
frame is dropped and counted. A crash closes the peer's seam abruptly and drops frames still in
flight to it; a restart joins the same id again with a higher incarnation.

The roster every seam sees is the set of live (joined, not crashed) peers. A partition does not
change it: like a half-open TCP link, only a failure detector on top notices the silence.

All randomness comes from one ``random.Random(seed)``; send order and the loop's clock decide the
rest, so a run is reproducible from its seed.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from warpmesh.aio.observable import Observable
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.errors import PayloadTooLarge  # raised by send_to/broadcast; re-exported for callers
from warpmesh.net.seam import (
    IncomingHub,
    PeerId,
    PeerUnreachable,
    Seam,
    SeamClosed,
)
from warpmesh.wire.frame import DEFAULT_MAX_FRAME

#: Frames a link holds in flight before ``send_to`` waits (the analogue of a socket send buffer).
DEFAULT_LINK_CAPACITY = 4096


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """Fault model of one directed link. Probabilities are per frame, times in seconds."""

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0005
    jitter: float = 0.0
    reorder_delay: float = 0.02

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability {p} must be within [0, 1]")
        for name in ("delay", "jitter", "reorder_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


PERFECT = LinkFaults(delay=0.0)


class _Link:
    """One directed link: frames scheduled by due time, delivered in due-time order."""

    __slots__ = (
        "capacity_waiters", "dst", "heap_due", "in_flight", "last_due", "on_heap", "pending", "pump",
        "ready", "seq", "src", "waiting", "wake",
    )

    def __init__(self, src: PeerId, dst: PeerId) -> None:
        self.src = src
        self.dst = dst
        self.in_flight = 0
        self.last_due = 0.0
        self.seq = 0
        # (due, seq, destination incarnation, data): seq breaks ties so equal due times stay FIFO
        # (asyncio's timer heap does not order equal deadlines).
        self.pending: list[tuple[float, int, int, bytes]] = []
        self.on_heap = False  # an entry for this link is on the fabric's due heap, at heap_due
        self.heap_due = 0.0
        self.waiting: Awaitable[None] | None = None  # a delivery that had to wait, finished by the pump
        self.ready: deque[tuple[int, bytes]] = deque()  # (destination incarnation, data)
        self.wake: asyncio.Future[None] | None = None
        self.pump: asyncio.Task[None] | None = None
        self.capacity_waiters: deque[asyncio.Future[None]] = deque()


class MemorySeam(Seam):
    """A peer's seam on a :class:`MemoryFabric`."""

    def __init__(self, fabric: MemoryFabric, peer_id: PeerId, incarnation: int) -> None:
        self._fabric = fabric
        self.self_id = peer_id
        self.incarnation = incarnation
        self.roster = Observable(frozenset(fabric._live))
        self.max_payload = fabric.max_payload
        self.hub = IncomingHub()
        self._closed = False

    async def send_to(self, peer: PeerId, data: bytes) -> None:
        if self._closed:
            raise SeamClosed(f"{self.self_id} is closed")
        await self._fabric._send(self, peer, bytes(data))

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Leave the fabric gracefully (peers see the roster shrink)."""
        self._fabric._remove(self.self_id, self)

    def _shut(self) -> None:
        self._closed = True
        self.hub.close()


class MemoryFabric:
    """A simulated network of seams. One instance is one mesh.

    ``quantum`` (seconds, 0 for exact): frames are delivered at the first multiple of ``quantum`` at
    or after their due time, so the many frames of a large simulated mesh that fall due within one
    quantum share one loop step (order is unchanged: by due time, FIFO per link unless reordered).
    A quantum well under the links' delay only adds that much latency.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        faults: LinkFaults = PERFECT,
        max_payload: int = DEFAULT_MAX_FRAME,
        link_capacity: int = DEFAULT_LINK_CAPACITY,
        classify: Callable[[bytes], str] | None = None,
        quantum: float = 0.0,
    ) -> None:
        if quantum < 0:
            raise ValueError(f"quantum must be >= 0, not {quantum}")
        self.rng = random.Random(seed)
        self.quantum = quantum
        #: Optional ``payload -> kind`` used to split :attr:`bytes_by_kind` (simulations pass one
        #: that reads the mux tag and frame kind, so bytes on the wire can be attributed).
        self.classify = classify
        #: Payload bytes handed to ``send_to``, by the kind ``classify`` gives (empty without it).
        self.bytes_by_kind: Counter[str] = Counter()
        self.default_faults = faults
        self.max_payload = max_payload
        self.link_capacity = link_capacity
        self._live: dict[PeerId, MemorySeam] = {}
        self._incarnations: Counter[PeerId] = Counter()
        self._faults: dict[tuple[PeerId, PeerId], LinkFaults] = {}
        self._blocked: set[tuple[PeerId, PeerId]] = set()
        self._links: dict[tuple[PeerId, PeerId], _Link] = {}
        # Links with frames in flight, by the due time of their head frame: (due, seq, link). One
        # asyncio timer (for the earliest) serves them all; a timer per link made the loop's own
        # heap (ordered by Python-level comparisons) the simulator's largest cost at 64 peers.
        self._due: list[tuple[float, int, _Link]] = []
        self._due_seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = float("inf")
        #: Counters: sent, delivered, duplicated, dropped_random, dropped_partition, dropped_crash.
        self.stats: Counter[str] = Counter()
        #: Payload bytes handed to ``send_to`` (per-peer totals are in ``bytes_sent_by``).
        self.bytes_sent = 0
        self.bytes_sent_by: Counter[PeerId] = Counter()

    # -- membership -------------------------------------------------------------------------
    def join(self, peer_id: PeerId) -> MemorySeam:
        """Bring a peer up (a restart if it ran before: its incarnation increases)."""
        if peer_id in self._live:
            raise ValueError(f"peer {peer_id!r} is already live on this fabric")
        self._incarnations[peer_id] += 1
        seam = MemorySeam(self, peer_id, self._incarnations[peer_id])
        self._live[peer_id] = seam
        self._publish_roster()
        return seam

    def crash(self, peer_id: PeerId) -> None:
        """Kill a peer abruptly: its seam closes and frames in flight to it are lost."""
        seam = self._live.get(peer_id)
        if seam is not None:
            self._remove(peer_id, seam)

    def restart(self, peer_id: PeerId) -> MemorySeam:
        """Crash (if live) and join again with a new incarnation."""
        self.crash(peer_id)
        return self.join(peer_id)

    def _remove(self, peer_id: PeerId, seam: MemorySeam) -> None:
        if self._live.get(peer_id) is not seam:
            return
        del self._live[peer_id]
        seam._shut()
        for key, link in list(self._links.items()):
            if peer_id in key:
                self.stats["dropped_crash"] += len(link.ready) + len(link.pending)
                link.ready.clear()
                link.pending.clear()
                link.on_heap = False
                link.in_flight = 0
                self._release_capacity(link)
        self._publish_roster()

    def _publish_roster(self) -> None:
        roster = frozenset(self._live)
        for seam in self._live.values():
            seam.roster.set(roster)

    @property
    def live(self) -> frozenset[PeerId]:
        return frozenset(self._live)

    def seam(self, peer_id: PeerId) -> MemorySeam:
        return self._live[peer_id]

    # -- faults -----------------------------------------------------------------------------
    def set_faults(self, faults: LinkFaults, src: PeerId | None = None, dst: PeerId | None = None) -> None:
        """Set the fault model of ``src -> dst``; ``None`` for both sets the default for all links."""
        if src is None and dst is None:
            self.default_faults = faults
            self._faults.clear()
        elif src is None or dst is None:
            raise ValueError("give both src and dst, or neither")
        else:
            self._faults[(src, dst)] = faults

    def faults(self, src: PeerId, dst: PeerId) -> LinkFaults:
        return self._faults.get((src, dst), self.default_faults)

    def partition(self, side_a: set[PeerId] | frozenset[PeerId], side_b: set[PeerId] | frozenset[PeerId],
                  *, one_way: bool = False) -> None:
        """Block frames from ``side_a`` to ``side_b`` (and back, unless ``one_way``)."""
        for a in side_a:
            for b in side_b:
                if a != b:
                    self._blocked.add((a, b))
                    if not one_way:
                        self._blocked.add((b, a))

    def isolate(self, peer_id: PeerId) -> None:
        """Cut ``peer_id`` off from every other peer, both ways (including peers that join later)."""
        others = set(self._incarnations) - {peer_id}
        self.partition({peer_id}, others)

    def heal(self) -> None:
        """Remove every partition."""
        self._blocked.clear()

    def blocked(self, src: PeerId, dst: PeerId) -> bool:
        return (src, dst) in self._blocked

    def calm(self) -> None:
        """Heal partitions and make every link perfect (for the final quiescence of a simulation)."""
        self.heal()
        self.set_faults(replace(self.default_faults, drop=0.0, duplicate=0.0, reorder=0.0))

    # -- delivery ---------------------------------------------------------------------------
    async def _send(self, seam: MemorySeam, dst: PeerId, data: bytes) -> None:
        if len(data) > self.max_payload:
            raise PayloadTooLarge(f"{len(data)} bytes exceeds the {self.max_payload}-byte limit")
        target = self._live.get(dst)
        if target is None:
            raise PeerUnreachable(dst)
        src = seam.self_id
        self.stats["sent"] += 1
        self.bytes_sent += len(data)
        self.bytes_sent_by[src] += len(data)
        if self.classify is not None:
            self.bytes_by_kind[self.classify(data)] += len(data)
        if (src, dst) in self._blocked:
            self.stats["dropped_partition"] += 1
            return
        key = (src, dst)
        link = self._links.get(key)
        if link is None:
            link = self._links[key] = _Link(src, dst)
        while link.in_flight >= self.link_capacity:
            fut = asyncio.get_running_loop().create_future()
            link.capacity_waiters.append(fut)
            await fut
            if self._live.get(dst) is not target:
                raise PeerUnreachable(dst)
        f = self.faults(src, dst) if src != dst else PERFECT
        rng = self.rng
        if f.drop and rng.random() < f.drop:
            self.stats["dropped_random"] += 1
            return
        copies = 2 if (f.duplicate and rng.random() < f.duplicate) else 1
        if copies == 2:
            self.stats["duplicated"] += 1
        loop = asyncio.get_running_loop()
        now = loop.time()
        for _ in range(copies):
            due = now + f.delay + (rng.random() * f.jitter if f.jitter else 0.0)
            if f.reorder and rng.random() < f.reorder:
                due += rng.random() * f.reorder_delay
            else:
                due = max(due, link.last_due)  # FIFO unless this frame was picked to be reordered
                link.last_due = due
            link.in_flight += 1
            link.seq += 1
            heapq.heappush(link.pending, (due, link.seq, target.incarnation, data))
        self._schedule(link, loop)

    def _schedule(self, link: _Link, loop: asyncio.AbstractEventLoop) -> None:
        if not link.pending:
            return
        head = link.pending[0][0]
        if link.on_heap and link.heap_due <= head:
            return
        # An earlier entry for this link (if any) stays on the heap and is skipped when popped.
        link.on_heap, link.heap_due = True, head
        self._due_seq += 1
        heapq.heappush(self._due, (head, self._due_seq, link))
        at = self._slot(head)
        if at < self._timer_at:
            self._arm(loop, at)

    def _slot(self, due: float) -> float:
        q = self.quantum
        if not q:
            return due
        return max(due, math.ceil(due / q) * q)  # never before ``due`` (float rounding)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        # While firing, nothing arms the timer (-inf): it is armed once, for the new head, at the end.
        self._timer, self._timer_at = None, float("-inf")
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._due
        # Links scheduled while these deliveries run (a handler that answers at once) wait for the
        # next loop step, as they would with a timer of their own.
        last = self._due_seq
        try:
            while due and due[0][0] <= now and due[0][1] <= last:
                at, _, link = heapq.heappop(due)
                if link.on_heap and link.heap_due == at:
                    link.on_heap = False
                    self._arrive(link)
        finally:
            while due and not (due[0][2].on_heap and due[0][2].heap_due == due[0][0]):
                heapq.heappop(due)  # stale entries
            self._timer_at = float("inf")
            if due:
                self._arm(loop, self._slot(due[0][0]))

    def _arrive(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        moved = False
        busy = link.pump is not None and not link.pump.done()
        while link.pending and link.pending[0][0] <= now:
            _, _, incarnation, data = heapq.heappop(link.pending)
            target = self._live.get(link.dst)
            if target is None or target.incarnation != incarnation:
                self.stats["dropped_crash"] += 1
                link.in_flight = max(0, link.in_flight - 1)
                continue
            if not busy and not link.ready:
                # Fast path: nothing ahead of this frame on the link, deliver it right here.
                waiting = target.hub.deliver_nowait(link.src, data)
                if waiting is None:
                    self.stats["delivered"] += 1
                    link.in_flight = max(0, link.in_flight - 1)
                    continue
                link.waiting = waiting  # the pump finishes it before anything behind it
                self.stats["delivered"] += 1
                link.in_flight = max(0, link.in_flight - 1)
                busy = True
                moved = True
                continue
            link.ready.append((incarnation, data))
            moved = True
        self._release_capacity(link)
        self._schedule(link, loop)
        if not moved:
            return
        if link.pump is None or link.pump.done():
            link.pump = asyncio.get_running_loop().create_task(self._pump(link))
        elif link.wake is not None and not link.wake.done():
            link.wake.set_result(None)

    async def _pump(self, link: _Link) -> None:
        # Deliver in arrival order, waiting for room in the receiver's subscriptions (backpressure).
        while True:
            if link.waiting is not None:
                waiting, link.waiting = link.waiting, None
                await waiting
                self._release_capacity(link)
            while link.ready:
                incarnation, data = link.ready.popleft()
                target = self._live.get(link.dst)
                if target is not None and target.incarnation == incarnation:
                    await target.hub.deliver(link.src, data)
                    self.stats["delivered"] += 1
                else:
                    self.stats["dropped_crash"] += 1
                link.in_flight = max(0, link.in_flight - 1)
                self._release_capacity(link)
            link.wake = asyncio.get_running_loop().create_future()
            await link.wake
            link.wake = None

    def _release_capacity(self, link: _Link) -> None:
        while link.capacity_waiters and link.in_flight < self.link_capacity:
            fut = link.capacity_waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def close(self) -> None:
        """Crash every peer and stop every link pump."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, float("inf")
        self._due.clear()
        for link in self._links.values():
            link.on_heap = False
        for peer in sorted(self._live):
            self.crash(peer)
        pumps = [link.pump for link in self._links.values() if link.pump is not None]
        await cancel_and_wait(pumps, swallow=())
