"""``Observer``: a peer's event feed on asyncio - its ring, ``events()``, and the 0x70 channel (a runtime).

Every peer started by :func:`~warpmesh.peer.open_node` has one. While anyone consumes them it
follows the node's events (``WarpNode.subscribe_events``), appends each to a bounded
:class:`~warpmesh.observe.hub.EventRing` (the node's only cost: one append), and serves them to
watchers on mux channel 0x70. A watcher (``node --http``, ``warpmesh dashboard``, ``warpmesh top``)
calls :meth:`Observer.watch`: it then subscribes to every peer of the roster and folds their events
and its own node's status into a :class:`~warpmesh.observe.board.Board`.

A slow consumer never slows the node: local readers (:meth:`Observer.events`) and remote watchers
each read the ring through their own cursor and lose the oldest events when they fall behind, and
are told how many (a ``dropped`` event locally, the frame's ``dropped`` count on the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from warpmesh.aio import cancel_and_wait
from warpmesh.observe.board import Board
from warpmesh.observe.hub import DEFAULT_CAPACITY, Cursor, Event, EventRing
from warpmesh.observe.wire import (
    OBSERVE_TAG,
    EventsMsg,
    SubscribeMsg,
    decode,
    encode_events,
    encode_subscribe,
    encode_unsubscribe,
)

__all__ = ["Observer", "event_fields"]

log = logging.getLogger(__name__)

#: Seconds between two flushes of events to remote watchers (events batch up meanwhile).
FLUSH_INTERVAL = 0.1
#: Most events in one frame to a watcher (a flush sends as many frames as it takes to catch up).
MAX_BATCH = 4096
#: Seconds between a watcher's status snapshots and re-subscriptions (a restarted peer forgets us).
WATCH_INTERVAL = 0.5
RESUBSCRIBE_EVERY = 5.0


def event_fields(event: Any) -> tuple[str, float, str | None, str | None, Mapping[str, Any]]:
    """``(kind, at, job, peer, detail)`` of a WarpCore ``WarpEvent`` (or anything shaped like one)."""
    detail = getattr(event, "detail", None)
    return (str(event.kind), float(event.at), getattr(event, "job", None), getattr(event, "peer", None),
            detail if isinstance(detail, Mapping) else {})


class Observer:
    """One peer's event feed; see the module docstring.

    ``Observer(node)`` then ``await start()``; ``record(...)`` adds an event from any other source
    (Raft, isolates); ``events()`` iterates them; ``watch()`` turns on the mesh-wide :attr:`board`.
    """

    def __init__(self, node: Any, *, capacity: int = DEFAULT_CAPACITY, tracer: Any = None) -> None:
        self.node = node
        self.self_id = str(node.self_id)
        self.ring = EventRing(capacity)
        self.board: Board | None = None
        self._channel = node.mux.channel(OBSERVE_TAG)
        self._subscribers: dict[str, Cursor] = {}
        self._watched: dict[str, float] = {}  # peer -> when we last subscribed to it
        self._confirmed: set[str] = set()  # watched peers that answered (their feed serves us)
        self._last_seq: dict[str, tuple[int, int]] = {}  # watched peer -> (origin, newest seq folded)
        #: Names this ring: sequence numbers restart with a new incarnation of the peer.
        self.origin = int(getattr(node, "incarnation", 0) or id(self))
        self._sending: set[asyncio.Task[None]] = set()
        self._board_cursor: Cursor | None = None
        self._wake = asyncio.Event()
        self._serving = asyncio.Event()  # set while some remote watcher is subscribed
        self._flush = asyncio.Event()  # set to send to watchers before the next tick
        self._unflushed = 0  # events recorded since the last flush
        self._early = max(1, capacity // 4)  # this many unflushed events: flush at once
        self._readers = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._unsubscribe: Callable[[], None] | None = None
        self._remove_handler: Callable[[], None] | None = None
        self._remove_sink: Callable[[], None] | None = None
        self._tracer = tracer
        self._started = False
        #: Frames refused on the channel, and events sent to / received from other peers.
        self.stats = {"bad_frames": 0, "sent": 0, "received": 0, "dropped_remote": 0}

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> Observer:
        """Serve the channel and the process's event bus (the node's events are followed once a
        reader, a watcher or a board wants them)."""
        if self._started:
            return self
        self._started = True
        self._remove_handler = self._channel.add_handler(self._on_frame)
        from warpmesh.observe.bus import add_sink

        self._remove_sink = add_sink(self._on_bus_event)
        self._tasks.append(asyncio.create_task(self._pump(), name=f"observe-pump-{self.self_id}"))
        return self

    async def close(self) -> None:
        """Stop serving and watching (readers of :meth:`events` end)."""
        self._feed(False)
        if self._remove_handler is not None:
            self._remove_handler()
            self._remove_handler = None
        if self._remove_sink is not None:
            self._remove_sink()
            self._remove_sink = None
        if self.board is not None and not self._channel.closed:
            for peer in list(self._watched):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._channel.send_to(peer, encode_unsubscribe()), 0.5)
        self._started = False
        self._wake.set()
        await cancel_and_wait([*self._tasks, *self._sending])
        self._tasks.clear()

    # -- recording --------------------------------------------------------------------------
    def _feed(self, on: bool) -> None:
        """Follow the node's events while anyone consumes them: an unwatched node builds no event."""
        if on and self._unsubscribe is None and self._started:
            subscribe = getattr(self.node, "subscribe_events", None)
            if subscribe is not None:
                self._unsubscribe = subscribe(self._on_node_event)
        elif not on and self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _consumers_changed(self) -> None:
        self._feed(bool(self._readers or self._subscribers or self.board is not None))

    def _on_bus_event(self, kind: str, node: str | None, detail: Mapping[str, Any]) -> None:
        self.record(kind, peer=node, detail=detail)

    def _on_node_event(self, event: Any) -> None:
        kind, at, job, peer, detail = event_fields(event)
        self.record(kind, job=job, peer=peer, detail=detail, at=at)

    def record(self, kind: str, *, job: str | None = None, peer: str | None = None,
               detail: Mapping[str, Any] | None = None, at: float | None = None) -> Event:
        """Append an event of this peer to the ring (never waits); returns it with its ``seq``."""
        when = at if at is not None else self.node.now()
        event = self.ring.append(kind, when, self.self_id, job, peer, detail)
        if self._tracer is not None:
            self._tracer.on_event(event)
        if self._readers:
            self._wake.set()
        self._unflushed += 1
        if self._unflushed == self._early:
            # A burst (a batch enqueued at once): fold and send once this loop iteration ends,
            # not at the next tick, so readers keep up instead of losing the burst's oldest.
            asyncio.get_running_loop().call_soon(self._flush_soon)
        return event

    def _flush_soon(self) -> None:
        self._unflushed = 0
        self._flush.set()
        if self.board is not None and self._board_cursor is not None:
            batch = self.ring.take(self._board_cursor)
            self.board.add_dropped(batch.dropped)
            self.board.apply_many(batch.events)

    async def events(self, *, backlog: bool = False) -> AsyncIterator[Event]:
        """This peer's events as they happen (``backlog``: first the ones the ring still holds).

        A reader that falls more than the ring's capacity behind loses the oldest events; it is
        told by an event of kind ``"dropped"`` whose ``detail["count"]`` says how many.
        """
        cursor = self.ring.cursor(from_start=backlog)
        self._readers += 1
        self._consumers_changed()
        try:
            while self._started:
                batch = self.ring.take(cursor, MAX_BATCH)
                if batch.dropped:
                    yield Event("dropped", self.node.now(), self.self_id, detail={"count": batch.dropped})
                for e in batch.events:
                    yield e
                if not batch.events and not batch.dropped:
                    self._wake.clear()
                    await self._wake.wait()
        finally:
            self._readers -= 1
            self._consumers_changed()

    # -- watching ---------------------------------------------------------------------------
    def watch(self, board: Board | None = None) -> Board:
        """Fold this peer's and every other peer's events, and this node's status, into a board."""
        if self.board is None:
            self.board = board or Board()
            self._restore_history(self.board)
            self._board_cursor = self.ring.cursor(from_start=True)
            self._consumers_changed()
            self._tasks.append(asyncio.create_task(self._watcher(), name=f"observe-watch-{self.self_id}"))
        return self.board

    def _restore_history(self, board: Board) -> None:
        """Answers already on the results board (restored from a data directory, or replicated
        before we started watching) whose events this process never saw: the newest fit."""
        results = getattr(self.node, "results", None)
        if results is None or not len(results):
            return
        ids = list(results)[-board.limits.stream:]
        rows = []
        for job in ids:
            r = results.get(job)
            if r is not None:
                rows.append((job, r.op, r.by, r.ok, r.value if r.ok else r.error))
        board.restore_answers(rows)

    def status(self) -> dict[str, Any]:
        """The node's status plus every member's role (what the board's peer list is built from)."""
        status: dict[str, Any] = dict(self.node.status())
        with contextlib.suppress(Exception):
            info = self.node.member_info()
            status["peers"] = [{"peer": p, "role": v.get("role", "?")} for p, v in sorted(info.items())]
        return status

    def refresh(self) -> None:
        """Bring the board up to date now: this node's events and status (a page asks before reading)."""
        board = self.board
        if board is None or self._board_cursor is None:
            return
        batch = self.ring.take(self._board_cursor)
        board.add_dropped(batch.dropped)
        board.apply_many(batch.events)
        now = self.node.now()
        board.observe_status(self.status(), now)
        board.tick(now)

    async def _watcher(self) -> None:
        roster = self.node.seam.roster
        while True:
            now = self.node.now()
            for peer in roster.value:
                peer = str(peer)
                if peer == self.self_id:
                    continue
                # Until a peer answers, ask again each round (our first frame can beat its feed's start);
                # then now and again, as a restarted peer has forgotten us. A peer that still serves
                # us ignores a repeat, so asking for the held backlog never duplicates events.
                every = RESUBSCRIBE_EVERY if peer in self._confirmed else 0.0
                if now - self._watched.get(peer, float("-inf")) >= every:
                    self._watched[peer] = now
                    self._send(peer, encode_subscribe(backlog=True))
            for peer in [p for p in self._watched if p not in roster.value]:
                del self._watched[peer]
                self._confirmed.discard(peer)
            try:
                self.refresh()
            except Exception:  # the board must never take the peer down
                log.exception("%s: observe board refresh failed", self.self_id)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(roster.changed(), WATCH_INTERVAL)

    def _send(self, peer: str, data: bytes) -> None:
        async def send() -> None:
            with contextlib.suppress(Exception):  # a peer gone meanwhile: its next subscription retries
                await self._channel.send_to(peer, data)

        task = asyncio.create_task(send())
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    # -- the channel ------------------------------------------------------------------------
    def _on_frame(self, sender: str, data: bytes) -> None:
        try:
            msg = decode(data)
        except ValueError as err:
            self.stats["bad_frames"] += 1
            log.debug("%s: refused an observe frame from %s: %s", self.self_id, sender, err)
            return
        if isinstance(msg, SubscribeMsg):
            if not msg.on:
                self._subscribers.pop(sender, None)
                self._consumers_changed()
            elif sender not in self._subscribers:
                self._subscribers[sender] = self.ring.cursor(from_start=msg.backlog)
                self._serving.set()
                self._consumers_changed()
                self._send(sender, encode_events((), 0, self.origin))  # at once, even if empty: "I serve you"
        elif isinstance(msg, EventsMsg):
            self._confirmed.add(sender)
            self.stats["received"] += len(msg.events)
            self.stats["dropped_remote"] += msg.dropped
            # A re-subscription (after a link dropped and came back) resends what the ring holds:
            # fold only what is newer than what we have from that ring.
            origin, last = self._last_seq.get(sender, (msg.origin, 0))
            if origin != msg.origin:
                last = 0
            fresh = [e for e in msg.events if e.seq > last] if msg.events and msg.events[0].seq <= last else msg.events
            if msg.events:
                self._last_seq[sender] = (msg.origin, max(last, msg.events[-1].seq))
            if self.board is not None:
                self.board.add_dropped(msg.dropped)
                self.board.apply_many(fresh)

    async def _pump(self) -> None:
        """Send each remote watcher the events it has not had yet, every tick or at once after a burst."""
        roster = self.node.seam.roster
        while True:
            if not self._subscribers:
                self._serving.clear()
                await self._serving.wait()  # no watcher: no timer either
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._flush.wait(), FLUSH_INTERVAL)
            self._flush.clear()
            self._unflushed = 0
            gone = [p for p in self._subscribers if p not in roster.value]
            for peer in gone:
                del self._subscribers[peer]
            if gone:
                self._consumers_changed()
            for peer, cursor in list(self._subscribers.items()):
                while True:  # frames of at most MAX_BATCH until this watcher has caught up
                    batch = self.ring.take(cursor, MAX_BATCH)
                    if not batch.events and not batch.dropped:
                        break
                    try:
                        await self._channel.send_to(peer, encode_events(batch.events, batch.dropped, self.origin))
                        self.stats["sent"] += len(batch.events)
                    except Exception as err:  # closed link: the roster drops the watcher
                        log.debug("%s: could not send events to %s: %s", self.self_id, peer, err)
                        break
                    if len(batch.events) < MAX_BATCH:
                        break
