"""``World``: a :class:`~warpmesh.world.replica.Replica` bound to a :class:`RaftNode` and a fetch channel.

* Raft runs on mux channel ``0x60`` (:data:`WORLD_RAFT_CHANNEL`); intents, tick boundaries, hash
  reports and restore notices are its entries.
* Snapshots are fetched on ``0x61`` (:data:`WORLD_FETCH_CHANNEL`) in chunks of :data:`CHUNK_BYTES`:
  ``[REQ, rid, tick]`` -> ``[CHUNK, rid, tick, seq, total, bytes]``\\* or ``[GONE, rid]``.

The apply loop feeds committed entries to the replica; after each committed tick it proposes its
report. When the agreement declares *this* peer diverged, the loop stops, fetches the majority's
snapshot of the diverged tick from a peer that agreed (verifying it against the majority's hashes),
computes the structural diff, restores, announces ``RESTORED`` and replays the log from the snapshot's
index; its next matching report marks it repaired. Every ``snapshot_every`` ticks, once the majority
confirmed this peer's hash, the state is published to Raft (log compaction; new and lagging peers
install it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from warpmesh.aio.observable import Observable
from warpmesh.errors import WarpmeshError
from warpmesh.net.seam import PeerUnreachable, Seam, SeamClosed
from warpmesh.raft.errors import RaftClosed, RaftError
from warpmesh.raft.runtime import CommittedEntry, CommittedInstall, CommittedInternal, RaftNode
from warpmesh.raft.types import Role
from warpmesh.wire.frame import FrameError, pack, unpack
from warpmesh.world.agreement import Event
from warpmesh.world.codec import (
    WorldCodecError,
    WorldSnapshot,
    decode_snapshot,
    encode_intents,
    encode_reports,
    encode_restored,
    encode_snapshot,
    encode_tick,
)
from warpmesh.world.replica import Replica, SnapshotMismatch, Step

__all__ = ["CHUNK_BYTES", "WORLD_FETCH_CHANNEL", "WORLD_RAFT_CHANNEL", "World", "WorldError"]

log = logging.getLogger("warpmesh.world")

WORLD_RAFT_CHANNEL = 0x60
WORLD_FETCH_CHANNEL = 0x61
CHUNK_BYTES = 256 * 1024
_REQ, _CHUNK, _GONE = 1, 2, 3


class WorldError(WarpmeshError, RuntimeError):
    """A world operation failed (closed, or repair impossible for now)."""


class World:
    """One peer of a replicated world. ``members`` are the voting peers (they define the majority).

    ``on_tick(tick, snapshot)`` is called after every locally committed tick; ``on_event(dict)`` for
    every verdict (``diverged``/``repaired``, from the agreement) and for this peer's own repair steps
    (``restoring`` with the structural diff).
    """

    def __init__(self, node: RaftNode, fetch: Seam, members: Iterable[str], *, workers: int = 1,
                 snapshot_every: int = 64, corrupt_at: Iterable[int] = (), keep: int = 8,
                 on_tick: Callable[[int, Any], None] | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.node = node
        self.id = node.id
        self.fetch = fetch
        self.replica = Replica(node.id, members, workers=workers, corrupt_at=corrupt_at, keep=keep)
        self.snapshot_every = snapshot_every
        self.on_tick = on_tick
        self.on_event = on_event
        #: Newest locally committed tick.
        self.tick: Observable[int] = Observable(0)
        #: Log index up to which entries were fed to the replica (agreement included).
        self.applied: Observable[int] = Observable(0)
        self.stats: Counter[str] = Counter()
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[Any]] = set()
        self._candidates: list[int] = []
        self._repair: int | None = None
        self._rewind = False
        self._outgoing: list[tuple[int, bytes, bytes, bytes]] = []
        self._restored: int | None = None
        self._reporting = False
        self._rids = itertools.count(1)
        self._fetches: dict[int, asyncio.Queue[list[Any]]] = {}
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> World:
        loop = asyncio.get_running_loop()
        snap = self.node.snapshot
        if snap is not None and snap.index > self.replica.index:
            self.replica.restore(decode_snapshot(snap.data), installed=True)
            self.tick.set(self.replica.tick)
        self._sub = self.fetch.subscribe()
        self._tasks.append(loop.create_task(self._run(), name=f"world-{self.id}-apply"))
        self._tasks.append(loop.create_task(self._serve(), name=f"world-{self.id}-fetch"))
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._sub.close()
        for t in [*self._tasks, *self._bg]:
            t.cancel()
        for t in [*self._tasks, *self._bg]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # ------------------------------------------------------------------ API
    async def submit(self, intents: list[bytes], *, timeout: float | None = 5.0) -> int:
        """Order ``intents`` (one Raft entry); returns its log index once committed."""
        idx, _ = await self.node.propose(encode_intents(self.id, intents), timeout=timeout)
        return idx

    async def advance(self, *, timeout: float | None = 5.0) -> int:
        """Propose the next tick boundary and wait until this peer committed it; returns the tick."""
        n = self.replica.tick + 1
        await self.node.propose(encode_tick(n), timeout=timeout)
        await self.tick.wait_for(lambda v: v >= n, timeout)
        return n

    async def run_ticker(self, ticks: int | None = None, *, lockstep: bool = True, interval: float = 0.0,
                         grace: float = 0.2, window: int = 4) -> None:
        """While this peer leads, propose tick boundaries until ``ticks``. Lockstep: tick N+1 only after
        every member reported tick N (or a majority did and ``grace`` passed), so a divergence is
        decided before the next tick. Pipelined: up to ``window`` ticks ahead of the majority."""
        loop = asyncio.get_running_loop()
        while not self._closed and (ticks is None or self.replica.tick < ticks):
            if self.node.role.value != Role.LEADER or self._repair is not None:
                await asyncio.sleep(0.05)
                continue
            n = self.replica.tick
            ag = self.replica.agreement
            try:
                if lockstep and n > 0:
                    deadline: float | None = None
                    give_up = loop.time() + 2.0  # a member that never reports must not stall the world
                    while not self._closed and ag.reporters(n) < ag.members and loop.time() < give_up:
                        now = loop.time()
                        if ag.decided(n) is not None:
                            deadline = deadline or now + grace
                            if now >= deadline:
                                break
                        wait = (deadline or give_up) - now
                        if wait < 1e-3:  # within the loop's clock resolution: the timer would not advance it
                            break
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.applied.changed(), wait)
                elif not lockstep:
                    while not self._closed and n - max(ag.majority, default=0) >= window:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.applied.changed(), 1.0)
                await self.node.propose(encode_tick(n + 1), timeout=1.0)
                await self.tick.wait_for(lambda v, n=n: v >= n + 1, 2.0)  # type: ignore[misc]
            except (RaftError, TimeoutError):
                await asyncio.sleep(0.02)
                continue
            if interval:
                await asyncio.sleep(interval)

    # ------------------------------------------------------------------ apply loop
    async def _run(self) -> None:
        try:
            while not self._closed:
                self._rewind = False
                async for item in self.node.committed_from(self.replica.index + 1):
                    if self._rewind:
                        break  # a repair restored an older state: replay from its index
                    if isinstance(item, CommittedEntry):
                        step = self.replica.apply(item.index, item.data)
                        self._after(step)
                    elif isinstance(item, CommittedInternal):
                        self.replica.skip(item.index)
                    elif isinstance(item, CommittedInstall):
                        self._install(item.snapshot.data)
                    self.applied.set(item.index)
                else:
                    return
        except (RaftClosed, asyncio.CancelledError):
            return

    def _install(self, data: bytes) -> None:
        try:
            snap = decode_snapshot(data)
        except WorldCodecError:
            log.error("%s: undecodable Raft snapshot ignored", self.id)
            return
        repairing = self.replica.halted
        self.replica.restore(snap, installed=True)
        self.tick.set(snap.tick)
        self.stats["installs"] += 1
        if self.on_event is not None:
            self.on_event({"event": "installed", "peer": self.id, "tick": snap.tick,
                           "commit": snap.last.hash.hex() if snap.last is not None else None})
        if self._repair is not None and repairing:
            # Raft installed the leader's snapshot, which was confirmed by the majority before it was
            # published: that is a repair too (announced, so the agreement can prove it).
            tick, self._repair = self._repair, None
            self._repaired_from(tick, snap, None, self.node.leader.value or "raft")

    def _after(self, step: Step) -> None:
        if step.committed is not None:
            s = step.committed
            self.tick.set(step.tick)
            self.stats["ticks"] += 1
            self._outgoing.append((step.tick, s.hash, s.state_root, s.patch_digest))
            if not self._reporting:
                self._reporting = True
                self._spawn(self._report())
            if self.snapshot_every and step.tick % self.snapshot_every == 0:
                self._candidates.append(step.tick)
            if self.on_tick is not None:
                self.on_tick(step.tick, s)
        for ev in step.events:
            self._event(ev)
        if self._candidates:
            self._maybe_publish()

    def _event(self, ev: Event) -> None:
        if ev.peer == self.id and ev.kind == "diverged" and self._repair is None:
            self._repair = ev.tick
            self.replica.halted = True
            self._spawn(self._repair_loop(ev.tick))
        if self.on_event is not None:
            out: dict[str, Any] = {"event": ev.kind, "peer": ev.peer, "tick": ev.tick}
            if ev.parts:
                out["parts"] = list(ev.parts)
            self.on_event(out)

    def _maybe_publish(self) -> None:
        ag = self.replica.agreement
        keep: list[int] = []
        for t in self._candidates:
            maj = ag.decided(t)
            mine = ag.reports.get(t, {}).get(self.id)
            if maj is None or mine is None:
                keep.append(t)
                continue
            snap = self.replica.snapshot(t)
            if maj == mine and snap is not None and snap.last is not None and snap.last.hash == maj.commit:
                self.replica.confirm(t)
                with contextlib.suppress(RaftError):
                    if self.node.publish_snapshot(snap.index, encode_snapshot(snap)):
                        self.stats["snapshots"] += 1
        self._candidates = keep[-4:]

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def _report(self) -> None:
        """Propose this peer's reports in tick order: one entry at a time, carrying every report
        made while the previous one was in flight (so the log never holds tick N+1 before N)."""
        try:
            while (self._outgoing or self._restored is not None) and not self._closed:
                if self._restored is not None:
                    # After a restore: announce it before any report computed from the restored state.
                    tick, self._restored = self._restored, None
                    await self._propose(encode_restored(self.id, tick))
                    continue
                items, self._outgoing = self._outgoing, []
                data = encode_reports(self.id, items)
                self.stats["report_entries"] += 1
                self.stats["report_bytes"] += len(data)
                await self._propose(data)
        finally:
            self._reporting = False

    async def _propose(self, data: bytes) -> None:
        for _ in range(5):
            try:
                await self.node.propose(data, timeout=2.0)
                return
            except (TimeoutError, RaftError) as err:
                if isinstance(err, RaftClosed) or self._closed:
                    return
                await asyncio.sleep(0.05)

    # ------------------------------------------------------------------ repair
    async def _repair_loop(self, tick: int) -> None:
        while not self._closed and self._repair == tick:
            await self._do_repair(tick)

    async def _do_repair(self, tick: int) -> None:
        """Fetch, verify, diff, restore; leaves ``_repair`` set (and is retried) until it worked."""
        ag = self.replica.agreement
        if self.node.role.value == Role.LEADER:
            # The ticker of a repairing peer is paused: let a healthy peer lead meanwhile.
            target = next((p for p in sorted(ag.members) if p != self.id and ag.peer(p).status == "ok"), None)
            if target is not None:
                with contextlib.suppress(RaftError, TimeoutError):
                    await self.node.transfer_leadership(target, timeout=1.0)
        maj = ag.decided(tick)
        sources = sorted(p for p, h in ag.reports.get(tick, {}).items() if h == maj and p != self.id)
        if not sources:
            sources = sorted(p for p in ag.members if p != self.id)
        for peer in sources:
            try:
                snap = await self._fetch(peer, tick)
            except (TimeoutError, WorldCodecError, PeerUnreachable, SeamClosed) as err:
                log.info("%s: snapshot fetch from %s failed: %r", self.id, peer, err)
                continue
            if snap is None:
                log.info("%s: %s no longer holds tick %d nor a checkpoint before it", self.id, peer, tick)
                continue
            try:
                self.replica.verify(snap)
            except SnapshotMismatch as err:
                log.warning("%s: %s (from %s)", self.id, err, peer)
                continue
            if self._repair != tick:
                return  # repaired meanwhile (a Raft install)
            diff = self.replica.diff_against(snap)
            self.replica.restore(snap)
            self._rewind = True
            self.tick.set(snap.tick)
            self._repair = None
            self._repaired_from(tick, snap, diff, peer)
            return
        await asyncio.sleep(0.2)  # nobody could serve it yet: the loop retries

    def _repaired_from(self, tick: int, snap: WorldSnapshot, diff: Any, source: str) -> None:
        self.stats["restores"] += 1
        if self.on_event is not None:
            self.on_event({"event": "restoring", "peer": self.id, "tick": tick, "from": source,
                           "snapshot_tick": snap.tick, "diff": diff})
        self._outgoing = []  # computed from the state just replaced
        self._restored = snap.tick
        if not self._reporting:
            self._reporting = True
            self._spawn(self._report())

    async def _fetch(self, peer: str, tick: int, timeout: float = 1.0) -> WorldSnapshot | None:
        rid = next(self._rids)
        q: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._fetches[rid] = q
        try:
            await self.fetch.send_to(peer, pack([_REQ, rid, tick]))
            parts: dict[int, bytes] = {}
            total = None
            while total is None or len(parts) < total:
                msg = await asyncio.wait_for(q.get(), timeout)
                if msg[0] == _GONE:
                    return None
                _, _, _t, seq, n, chunk = msg
                total = n
                parts[seq] = chunk
            self.stats["fetched_bytes"] += sum(len(p) for p in parts.values())
            return decode_snapshot(b"".join(parts[i] for i in range(total)))
        finally:
            self._fetches.pop(rid, None)

    async def _serve(self) -> None:
        try:
            async for sender, data in self._sub:
                try:
                    msg = unpack(data)
                except (FrameError, ValueError, TypeError):
                    self.stats["fetch_refused"] += 1
                    continue
                if type(msg) is not list or not msg or type(msg[0]) is not int or len(msg) < 2 \
                        or type(msg[1]) is not int:
                    self.stats["fetch_refused"] += 1
                    continue
                if msg[0] == _REQ and len(msg) == 3 and type(msg[2]) is int:
                    self._spawn(self._answer(sender, msg[1], msg[2]))
                elif msg[0] in (_CHUNK, _GONE):
                    q = self._fetches.get(msg[1])
                    ok = msg[0] == _GONE or (len(msg) == 6 and type(msg[3]) is int and type(msg[4]) is int
                                             and 0 <= msg[3] < msg[4] and type(msg[5]) is bytes)
                    if q is not None and ok:
                        q.put_nowait(msg)
                    elif not ok:
                        self.stats["fetch_refused"] += 1
        except (SeamClosed, asyncio.CancelledError):
            return

    async def _answer(self, peer: str, rid: int, tick: int) -> None:
        snap = self.replica.serve(tick)
        try:
            if snap is None:
                await self.fetch.send_to(peer, pack([_GONE, rid]))
                return
            data = encode_snapshot(snap)
            n = max(1, -(-len(data) // CHUNK_BYTES))
            for i in range(n):
                await self.fetch.send_to(peer, pack([_CHUNK, rid, tick, i, n, data[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES]]))
            self.stats["served_bytes"] += len(data)
        except (PeerUnreachable, SeamClosed, ValueError):
            return
