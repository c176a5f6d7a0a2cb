"""Quilter runtime: binds a :class:`~warpmesh.quilt.core.QuilterCore` to a seam with asyncio.

``Quilter(seam, state, stream=replica_id)`` replicates ``state`` with every peer on ``seam``
(normally one :class:`~warpmesh.net.mux.MuxSeam` channel). ``mutate(fn)`` is synchronous: it applies
the mutation locally at once and wakes a single sender task, which coalesces everything mutated
meanwhile into one delta frame. When the network is slower than the mutations, the pending delta
simply grows by joining, so memory stays bounded by the size of the state.

Short-lived clients (``warpmesh results``/``status``) use :meth:`Quilter.sync_with`, which returns
once this replica holds everything one peer held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from warpmesh.aio.observable import Observable
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.aio.tuning import install_gc_pause
from warpmesh.net.seam import PeerUnreachable, Seam, SeamClosed
from warpmesh.quilt.core import QuilterConfig, QuilterCore, StateCodec

if TYPE_CHECKING:
    from warpmesh.quilt.store import BoardStore

S = TypeVar("S")
log = logging.getLogger("warpmesh.quilt")



def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)

class Quilter(Generic[S]):
    """Replicate one CRDT state over a seam by delta anti-entropy.

    ``history=False`` makes a partial replica: it follows what is written from when it joins and
    never fetches or repairs older state (see :mod:`warpmesh.quilt.core`); for short-lived readers
    that want only what happens next, such as ``warpmesh submit`` waiting for its own answers.
    """

    def __init__(
        self,
        seam: Seam,
        state: S,
        *,
        stream: str,
        codec: StateCodec[S] | None = None,
        config: QuilterConfig | None = None,
        rng: random.Random | None = None,
        coalesce_delay: float = 0.0,
        store: BoardStore | None = None,
        history: bool = True,
    ) -> None:
        install_gc_pause()  # full states of big boards are bulk sections: pause the cyclic GC in them
        if codec is None:
            from warpmesh.quilt.codec import CRDT_CODEC

            codec = CRDT_CODEC  # type: ignore[assignment]
        self.seam = seam
        self.coalesce_delay = coalesce_delay
        #: A longer hold than ``coalesce_delay`` the owner sets while more changes are due soon (a
        #: busy Warp peer's answers): they leave in one delta, with the acks due meanwhile.
        #: :meth:`hurry` ends a hold at once and clears it.
        self.linger = 0.0
        self._hurry: asyncio.Future[None] | None = None
        self.core: QuilterCore[S] = QuilterCore(
            seam.self_id, stream, state, codec, config=config, rng=rng, history=history  # type: ignore[arg-type]
        )
        #: The state's version; bumps on every local or remote change. Await it to react to changes.
        self.changes: Observable[int] = Observable(0)
        # Bumped after every batch of received frames (digests change no state, so `changes` misses them).
        self._progress: Observable[int] = Observable(0)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._remove_handler: Callable[[], None] | None = None
        self._closed = False
        self._ack_waiters: list[tuple[int, bool, int | None, asyncio.Future[None]]] = []
        self.send_failures = 0
        #: Durable storage of this board (None: memory only). It restores the state here, before
        #: any frame, and from then on acks (and local writes) count only once they are on disk.
        self.store = store
        self._durable_seq = 0  # our own batches on disk up to here
        self._flushed: deque[tuple[int, int]] = deque()  # (our batch seq, state version it was cut at)
        if store is not None:
            store.attach(self)

    @property
    def state(self) -> S:
        """The local replica (read it; change it only through :meth:`mutate`)."""
        return self.core.state

    async def start(self) -> Quilter[S]:
        loop = asyncio.get_running_loop()
        # Frames are handled inline as they are delivered: no queue, no task per frame.
        if self.store is not None:
            self.store.node._start()
        self._remove_handler = self.seam.add_handler(self._on_frame)
        self.core.roster_changed(self.seam.roster.value, loop.time())
        name = f"{self.seam.self_id}/{self.core.stream}"
        self._tasks = [
            loop.create_task(self._pump(), name=f"quilt-send-{name}"),
            loop.create_task(self._timers(), name=f"quilt-timer-{name}"),
            loop.create_task(self._roster(), name=f"quilt-roster-{name}"),
        ]
        self._wake.set()
        return self

    async def __aenter__(self) -> Quilter[S]:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def hurry(self) -> None:
        """Clear :attr:`linger` and send what a hold keeps back now."""
        self.linger = 0.0
        if self._hurry is not None:
            _settle(self._hurry)

    def mutate(self, fn: Callable[[S], S]) -> S:
        """Apply ``fn(state) -> delta`` now; the delta is replicated by the sender task (read-only: do not
        change the delta returned)."""
        if self._closed:
            raise SeamClosed("quilter is closed")
        delta = self.core.mutate(fn)
        self.changes.set(self.core.version)
        self._wake.set()
        return delta

    async def wait_for(self, predicate: Callable[[S], bool], timeout: float | None = None) -> S:
        """Wait until ``predicate(state)`` holds (checked after every change)."""

        async def _wait() -> S:
            while not predicate(self.core.state):
                await self.changes.changed()
            return self.core.state

        return await asyncio.wait_for(_wait(), timeout) if timeout is not None else await _wait()

    def request_sync(self, peer: str) -> None:
        """Send our state to ``peer`` asking for its own (see :meth:`QuilterCore.request_sync`)."""
        self.core.request_sync(peer)
        self._wake.set()

    async def sync_with(self, peer: str, *, timeout: float | None = None, retry_every: float = 2.0) -> None:
        """Wait until this replica holds every update ``peer`` held when it answered.

        Sends :meth:`request_sync` and waits for the answer (``peer``'s full state, or a digest
        proving we already hold it), asking again every ``retry_every`` seconds in case a frame
        was lost. Raises :class:`TimeoutError` after ``timeout``.
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                asked = loop.time()
                self.request_sync(peer)
                expired = False

                def expire() -> None:
                    nonlocal expired
                    expired = True
                    self._progress.set(self._progress.value + 1)

                # One timer per round (no nested wait_for: its float remainders can spin a virtual clock).
                handle = loop.call_later(retry_every, expire)
                try:
                    while (self.core.synced_at(peer) or float("-inf")) < asked and not expired:
                        await self._progress.changed()
                finally:
                    handle.cancel()
                if not expired:
                    return

    async def replicated(self, seq: int | None = None, timeout: float | None = None, *,
                         majority: bool = False, count: int | None = None) -> bool:
        """Wait until a live peer - or, with ``majority``, enough peers for a majority of the roster
        counting us, or with ``count``, that many peers - holds our batches up to ``seq`` (default:
        everything mutated so far).

        Returns False on timeout; True at once when no peer is connected. The roster is read at
        every check, so a peer leaving can complete the wait. With a :attr:`store`, our own copy
        counts only once on disk (alone: True once there), and peers with stores ack only then.
        """
        core = self.core
        if seq is None:
            seq = core.pending_seq if core.has_pending_delta else core.seq
        if self._ack_satisfied(seq, majority, count):
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ack_waiters.append((seq, majority, count, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._ack_waiters = [w for w in self._ack_waiters if w[3] is not fut]

    def is_replicated(self, seq: int, *, majority: bool = False) -> bool:
        """Whether :meth:`replicated` would return at once for ``seq`` (no waiting)."""
        return self._ack_satisfied(seq, majority)

    def _ack_satisfied(self, seq: int, majority: bool, count: int | None = None) -> bool:
        core = self.core
        if self.store is not None and (seq > self._durable_seq or self.store.node.failed is not None):
            return False  # our own copy counts only once it is on disk
        if not core.peers:
            return True
        if seq > core.seq:
            return False
        need = count if count is not None else core.majority_others() if majority else 1
        return core.acked_count(seq) >= need

    def _persisted(self, version: int) -> None:
        # The store made the state as of ``version`` durable: so every batch of ours cut by then.
        self.core.persisted(version)
        if self._settle_durable():
            self._release_ack_waiters()
        if self.core.has_pending:
            self._wake.set()

    def cut_batch(self) -> None:
        """Flush the pending local delta into a batch now (its frames leave with the pump's next turn).

        The store calls it before each commit, so a commit holds every local change as the batch
        wire the peers get (one encoding), and covers the state version it returns."""
        core = self.core
        core.flush(asyncio.get_running_loop().time())
        self._note_flushed()
        if core.outbox and not self._closed:
            self._wake.set()

    def _note_flushed(self) -> None:
        core = self.core
        if core.seq > (self._flushed[-1][0] if self._flushed else self._durable_seq):
            self._flushed.append((core.seq, core.version))
            if self._settle_durable():
                self._release_ack_waiters()

    def _settle_durable(self) -> bool:
        moved = False
        done = self.core.persisted_version
        while self._flushed and self._flushed[0][1] <= done:
            self._durable_seq = self._flushed.popleft()[0]
            moved = True
        return moved

    def _release_ack_waiters(self) -> None:
        for seq, majority, count, fut in self._ack_waiters:
            if not fut.done() and self._ack_satisfied(seq, majority, count):
                fut.set_result(None)

    # -- tasks ------------------------------------------------------------------------------
    def _after_input(self) -> None:
        self.changes.set(self.core.version)
        self._release_ack_waiters()
        if self.core.outbox or self.core.has_pending:
            self._wake.set()

    def _on_frame(self, sender: str, data: bytes) -> None:
        if self._closed:
            return
        self.core.receive(sender, data, asyncio.get_running_loop().time())
        self._after_input()
        self._progress.set(self._progress.value + 1)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        seam = self.seam
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.linger > self.coalesce_delay:
                hurry = self._hurry = loop.create_future()
                timer = loop.call_later(self.linger, _settle, hurry)
                await hurry
                timer.cancel()
                self._hurry = None
            elif self.coalesce_delay > 0:
                await asyncio.sleep(self.coalesce_delay)
            else:
                await asyncio.sleep(0)  # let the rest of this loop iteration's mutations join in
            core.flush(loop.time())
            if self.store is not None:
                self._note_flushed()
            for peer, frame in core.take_outbox():
                try:
                    if peer is None:
                        await seam.broadcast(frame)
                    else:
                        await seam.send_to(peer, frame)
                except PeerUnreachable:
                    self.send_failures += 1
                except SeamClosed:
                    return
                except ValueError as err:  # payload too large for the transport
                    self.send_failures += 1
                    log.error("%s: cannot send a %d-byte quilt frame: %s", seam.self_id, len(frame), err)

    async def _timers(self) -> None:
        loop = asyncio.get_running_loop()
        core = self.core
        step = min(core.config.resend_after, core.config.anti_entropy_interval) / 2
        while True:
            now = loop.time()
            core.tick(now)
            self._after_input()
            await asyncio.sleep(max(0.0, min(core.next_deadline() - now, step)) or step)

    async def _roster(self) -> None:
        loop = asyncio.get_running_loop()
        async for roster in self.seam.roster.updates():
            self.core.roster_changed(roster, loop.time())
            self._after_input()

    async def close(self) -> None:
        """Stop replicating (pending local mutations not yet sent are flushed best-effort first)."""
        if self._closed:
            return
        self._closed = True
        if self.core.has_pending and not self.seam.closed:
            self.core.flush(asyncio.get_running_loop().time())
            for peer, frame in self.core.take_outbox():
                with contextlib.suppress(PeerUnreachable, SeamClosed, ValueError):
                    if peer is None:
                        await self.seam.broadcast(frame)
                    else:
                        await self.seam.send_to(peer, frame)
        if self._remove_handler is not None:
            self._remove_handler()
            self._remove_handler = None
        await cancel_and_wait(self._tasks, swallow=(SeamClosed,))
        self._tasks.clear()
        if self.store is not None:
            await self.store.node._detach()
