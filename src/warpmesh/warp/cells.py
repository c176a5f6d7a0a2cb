"""The runtime side of cells: forwarding tasks to the cell that queues them, answers back.

:mod:`warpmesh.warp.route` defines the cells, the rendezvous rule and the messages; this module is
the part of a :class:`~warpmesh.warp.node.WarpNode` that sends and answers them. Both sides live in
every peer: as a *submitter* it forwards the tasks of other cells and collects their answers; as a
peer of a cell it queues what others forward and pushes the answers back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from warpmesh.aio.observable import Observable
from warpmesh.net.seam import PeerUnreachable, SeamClosed
from warpmesh.warp import route
from warpmesh.warp.model import NotReplicated, OpResult, TaskDescriptor
from warpmesh.wire.frame import FrameUndecodable, pack, unpack

if TYPE_CHECKING:
    from warpmesh.warp.node import WarpNode

log = logging.getLogger("warpmesh.warp")

#: Forwarded tasks whose answer this peer pushes back, at most (the oldest are forgotten first:
#: their submitters still fetch).
MAX_REPLY_TO = 200_000


class _Pending:
    """A forwarded batch of one cell waiting for a peer of it to accept it."""

    __slots__ = ("cell", "done", "error", "tasks")

    def __init__(self, cell: str | None, tasks: list[tuple[str, bytes]]) -> None:
        self.cell = cell
        self.tasks = tasks
        self.done = asyncio.get_running_loop().create_future()
        self.error = ""


class CellRouter:
    """Forwards ``node``'s tasks of other cells and serves the tasks other peers forward to it."""

    def __init__(self, node: WarpNode) -> None:
        self.node = node
        self.channel = node.mux.channel(route.ROUTE_TAG)
        self.rng = random.Random(f"route:{node.replica}")
        self._seq = 0
        self._accepts: dict[int, asyncio.Future[tuple[bool, str]]] = {}
        self._fetches: dict[int, str | None] = {}
        #: Forwarded tasks -> (cell, run), until their answer arrives.
        self.waiting: dict[str, tuple[str | None, str]] = {}
        self._accepted: set[str] = set()
        #: Answers of forwarded tasks (task -> its answer), until acknowledged.
        self.answers: dict[str, OpResult] = {}
        #: Bumps whenever an answer arrives here.
        self.changes: Observable[int] = Observable(0)
        self._backlog: list[_Pending] = []  # forwarded, not accepted yet: retried in the background
        self._backlog_event = asyncio.Event()
        #: Tasks forwarded to this peer -> (submitter, run): their answers are pushed back.
        self._reply_to: dict[str, tuple[str, str]] = {}
        self._push: dict[str, list[tuple[str, bytes]]] = {}
        self._cells_key: Any = None
        self._cells: tuple[str | None, ...] = ()
        self.stats: dict[str, int] = dict.fromkeys(
            ("forwarded", "accepted_here", "answers_sent", "answers_pushed", "answers_fetched", "bad_frames",
             "retries"), 0)
        self._tasks: list[asyncio.Task[Any]] = []
        self._poll_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._remove: Any = None

    # -- which cell ---------------------------------------------------------------------------
    def cells(self) -> tuple[str | None, ...]:
        """The cells that have workers, as the members board lists them (cached per version)."""
        info = self.node.core.mesh_member_info()
        if info is not self._cells_key:
            found = {v.get("cell") for v in info.values() if v.get("role") == "worker"}
            found.update(self.node.config.cells)
            if self.node.role == "worker":
                found.add(self.node.config.cell)
            self._cells = tuple(sorted(found, key=lambda c: (c is not None, c or "")))
            self._cells_key = info
        return self._cells

    def target(self, task_id: str, pin: str | None = None) -> str | None:
        """The cell that queues ``task_id`` (a pinned task: its pin's cell)."""
        own = self.node.config.cell
        if pin is not None:
            entry = self.node.core.mesh_member_info().get(pin)
            return own if entry is None else entry.get("cell")
        cells = self.cells()
        if not cells or cells == (own,):
            return own
        return route.cell_for(task_id, cells)

    def live_peers(self, cell: str | None) -> list[str]:
        """Live workers of ``cell``, in a random order."""
        info = self.node.core.mesh_member_info()
        live = self.node.liveness.live.value
        peers = sorted(p for p in live if p != self.node.self_id and (e := info.get(p)) is not None
                       and e.get("cell") == cell and e.get("role") == "worker")
        self.rng.shuffle(peers)
        return peers

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._remove = self.channel.add_handler(self._on_frame)
        self._tasks = [loop.create_task(self._forwarder(), name=f"warp-route-{self.node.self_id}")]

    async def close(self) -> None:
        for t in [*self._tasks, *self._inflight]:
            t.cancel()
        for t in [*self._tasks, *self._inflight]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._remove is not None:
            self._remove()
            self._remove = None
        for fut in self._accepts.values():
            if not fut.done():
                fut.cancel()

    # -- submitter side ------------------------------------------------------------------------
    def forward(self, cell: str | None, items: list[tuple[str, TaskDescriptor]]) -> _Pending:
        """Forward ``items`` (all of ``cell``) in the background; the returned batch's ``done``
        resolves once a peer of the cell accepted them (retried until then)."""
        tasks = [(task_id, pack(desc.to_wire())) for task_id, desc in items]
        for task_id, desc in items:
            self.waiting[task_id] = (cell, desc.run)
            self._accepted.discard(task_id)
            self.answers.pop(task_id, None)
        pending = _Pending(cell, tasks)
        if self._poll_task is None or self._poll_task.done():
            # Asks for missing answers while any forwarded task waits for one (no timer otherwise).
            poll = self._poll_task = asyncio.get_running_loop().create_task(
                self._poller(), name=f"warp-route-poll-{self.node.self_id}")
            self._tasks.append(poll)
        self._backlog.append(pending)
        self._backlog_event.set()
        self.stats["forwarded"] += len(items)
        return pending

    async def enqueue(self, cell: str | None, task_id: str, desc: TaskDescriptor) -> str:
        """Forward one task and wait (``replicate_timeout``) until its cell holds it on a majority."""
        pending = self.forward(cell, [(task_id, desc)])
        timeout = self.node.config.replicate_timeout
        try:
            await asyncio.wait_for(asyncio.shield(pending.done), timeout)
        except TimeoutError:
            raise NotReplicated(task_id, desc.run, pending.error or f"no peer of cell {cell!r} accepted it within "
                                f"{timeout} s") from None
        return desc.run

    async def settled(self, timeout: float | None = None) -> bool:
        """Wait until every forwarded batch was accepted; False on timeout."""
        batches = [p.done for p in self._backlog]
        if not batches:
            return True
        done, _ = await asyncio.wait([asyncio.shield(f) for f in batches], timeout=timeout)
        return len(done) == len(batches)

    async def _forwarder(self) -> None:
        # One batch at a time per cell, oldest first; a batch that no peer accepts waits and retries.
        while True:
            if not self._backlog:
                self._backlog_event.clear()
                await self._backlog_event.wait()
            by_cell: dict[str | None, list[_Pending]] = {}
            for p in self._backlog:
                by_cell.setdefault(p.cell, []).append(p)
            results = await asyncio.gather(*(self._offer(cell, ps) for cell, ps in by_cell.items()))
            if not all(results):
                self.stats["retries"] += 1
                await asyncio.sleep(min(1.0, self.node.config.replicate_timeout / 4))

    async def _offer(self, cell: str | None, batches: list[_Pending]) -> bool:
        """Offer ``batches`` to the peers of ``cell``; True once they accepted them all."""
        tasks = [t for p in batches for t in p.tasks]
        for chunk in route.chunks(tasks):
            ok, reason = await self._submit(cell, chunk)
            if not ok:
                for p in batches:
                    p.error = reason
                return False
        for p in batches:
            with contextlib.suppress(ValueError):
                self._backlog.remove(p)
            for task_id, _ in p.tasks:
                if task_id in self.waiting:
                    self._accepted.add(task_id)
            if not p.done.done():
                p.done.set_result(None)
        return True

    async def _submit(self, cell: str | None, tasks: list[tuple[str, bytes]]) -> tuple[bool, str]:
        """Send ``tasks`` to a live peer of ``cell`` until one accepts them or ``replicate_timeout``
        passes. Routing frames travel unacknowledged, so an unanswered SUBMIT is sent again every
        ``resend_after`` (to another peer if there is one): any peer's ACCEPT of any copy counts,
        and a peer queues a run it already holds only once."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.node.config.replicate_timeout
        step = max(0.01, self.node.config.quilter.resend_after)
        fut: asyncio.Future[tuple[bool, str]] = loop.create_future()
        seqs: list[int] = []
        reason = f"no peer of cell {cell!r} accepted it within {self.node.config.replicate_timeout} s"
        try:
            while (left := deadline - loop.time()) > 0:
                peers = self.live_peers(cell)
                if not peers:
                    return False, f"no live peer of cell {cell!r} is reachable"
                self._seq += 1
                seqs.append(self._seq)
                self._accepts[self._seq] = fut
                with contextlib.suppress(PeerUnreachable, SeamClosed):
                    await self.channel.send_to(peers[0], route.encode_submit(self._seq, tasks))
                try:
                    ok, why = await asyncio.wait_for(asyncio.shield(fut), min(step, left))
                except TimeoutError:
                    continue
                if ok:
                    return True, ""
                reason = f"{peers[0]} (cell {cell!r}): {why}"
                fut = loop.create_future()  # a refusal: try the others until the deadline
                for seq in seqs:
                    self._accepts[seq] = fut
            return False, reason
        finally:
            for seq in seqs:
                self._accepts.pop(seq, None)

    async def _poller(self) -> None:
        every = self.node.config.route_poll
        asked: dict[str, float] = {}  # task -> when its answer was last asked for
        loop = asyncio.get_running_loop()
        while self.waiting:
            await asyncio.sleep(every)
            now = loop.time()
            by_cell: dict[str | None, list[str]] = {}
            for task_id, (cell, _) in self.waiting.items():
                if task_id in self._accepted:
                    first = asked.setdefault(task_id, now)  # the push gets one poll interval first
                    if now - first >= every:
                        by_cell.setdefault(cell, []).append(task_id)
            for task_id in [t for t in asked if t not in self.waiting]:
                del asked[task_id]
            for cell, tasks in by_cell.items():
                peers = self.live_peers(cell)
                if not peers:
                    continue
                for chunk in route.chunks(tasks):
                    self._seq += 1
                    self._fetches[self._seq] = cell
                    with contextlib.suppress(PeerUnreachable, SeamClosed):
                        await self.channel.send_to(peers[0], route.encode_fetch(self._seq, chunk))
                    if len(self._fetches) > 1000:
                        self._fetches.pop(next(iter(self._fetches)))

    def _got_answers(self, answers: Iterable[tuple[str, bytes]]) -> None:
        got: list[str] = []
        for task_id, raw in answers:
            want = self.waiting.get(task_id)
            if want is None:
                continue
            try:
                res = OpResult.from_wire(unpack(raw))
            except (FrameUndecodable, ValueError):
                self.stats["bad_frames"] += 1
                continue
            if res.run != want[1]:
                continue  # an older run's answer: the current one is still due
            del self.waiting[task_id]
            self._accepted.discard(task_id)
            self.answers[task_id] = res
            got.append(task_id)
        if got:
            self.changes.set(self.changes.value + 1)
            self.node._notify_results(got)

    def ack(self, task_id: str) -> bool:
        """Acknowledge a forwarded task's answer: dropped here, removed from its cell's board.
        False if this peer forwarded no such task."""
        res = self.answers.pop(task_id, None)
        cell = None
        if res is None:
            entry = self.waiting.pop(task_id, None)
            if entry is None:
                return False
            self._accepted.discard(task_id)
            cell = entry[0]
        else:
            cell = self.target(task_id)
        peers = self.live_peers(cell)
        if peers:
            self._seq += 1
            data = route.encode_ack(self._seq, [task_id])
            self._spawn(self._send_quietly(peers[0], data))
        return True

    # -- cell side -----------------------------------------------------------------------------
    def _on_frame(self, sender: str, data: bytes) -> None:
        try:
            msg = route.decode(data)
        except ValueError as err:
            self.stats["bad_frames"] += 1
            log.warning("%s: dropped a routing frame from %s: %s", self.node.self_id, sender, err)
            return
        if isinstance(msg, route.Accept):
            fut = self._accepts.get(msg.seq)
            if fut is not None and not fut.done():
                fut.set_result((msg.ok, msg.reason))
        elif isinstance(msg, route.Answers):
            if msg.seq == 0 or msg.seq in self._fetches:
                self._fetches.pop(msg.seq, None)
                self.stats["answers_pushed" if msg.seq == 0 else "answers_fetched"] += len(msg.answers)
                self._got_answers(msg.answers)
        elif isinstance(msg, route.Submit):
            self._accept(sender, msg)
        elif isinstance(msg, route.Fetch):
            found = self._held(msg.tasks)
            self._send_soon(sender, route.encode_answers(msg.seq, found))
        elif isinstance(msg, route.Ack):
            node = self.node
            for task_id in msg.tasks:
                if task_id in node.results_board.state:
                    node.core.ack(task_id)
            node._drain()

    def _held(self, tasks: Iterable[str]) -> list[tuple[str, bytes]]:
        board = self.node.results_board.state
        found = []
        for task_id in tasks:
            reg = board.get(task_id)
            if reg is not None and isinstance(reg.value, bytes):
                found.append((task_id, reg.value))
        return found

    def _accept(self, sender: str, msg: route.Submit) -> None:
        node = self.node
        if node.role != "worker":
            self._send_soon(sender, route.encode_accept(msg.seq, False, "a client queues no tasks"))
            return
        descs: list[tuple[str, TaskDescriptor]] = []
        try:
            for task_id, raw in msg.tasks:
                descs.append((task_id, TaskDescriptor.from_wire(unpack(raw))))
        except (FrameUndecodable, ValueError) as err:
            self.stats["bad_frames"] += 1
            self._send_soon(sender, route.encode_accept(msg.seq, False, f"bad task descriptor: {err}"))
            return
        fresh = []
        for task_id, desc in descs:
            held = node._descriptor(task_id)
            if (held is not None and held.run == desc.run) or node._result_run(task_id) == desc.run:
                continue  # already queued or answered under this run (a retry): queue it once
            fresh.append((task_id, desc))
        for task_id, desc in descs:
            self._reply_to[task_id] = (sender, desc.run)
        while len(self._reply_to) > MAX_REPLY_TO:
            self._reply_to.pop(next(iter(self._reply_to)))
        if fresh:
            node._enqueue_descriptors(fresh)
        self.stats["accepted_here"] += len(fresh)
        already = [t for t, d in descs if node._result_run(t) == d.run]
        if already:
            self.answered(already)
        # A resent SUBMIT finds its tasks queued already: it is confirmed once they are replicated too.
        self._spawn(self._confirm(sender, msg.seq, len(already) < len(descs)))

    async def _confirm(self, sender: str, seq: int, wait: bool) -> None:
        node = self.node
        ok, reason = True, ""
        if wait and node.queue.core.peers:
            need = node.holders_needed()
            reachable = len(node.core.live - {node.self_id})
            if reachable < need:
                ok, reason = False, f"only {reachable} other peer(s) of the cell reachable, a majority needs {need}"
            elif not await node.queue.replicated(timeout=node.config.replicate_timeout, count=need):
                ok, reason = False, "no majority of the cell acknowledged it in time"
        await self._send_quietly(sender, route.encode_accept(seq, ok, reason))

    @property
    def pushes_due(self) -> bool:
        """Whether some task forwarded here still waits for its answer to be pushed back."""
        return bool(self._reply_to)

    def answered(self, task_ids: Iterable[str]) -> None:
        """Answers for ``task_ids`` landed on this peer's board: push those forwarded here back."""
        if not self._reply_to:
            return
        board = self.node.results_board.state
        first = not self._push
        for task_id in task_ids:
            entry = self._reply_to.get(task_id)
            if entry is None:
                continue
            reg = board.get(task_id)
            raw = reg.value if reg is not None and isinstance(reg.value, bytes) else None
            if raw is None:
                continue
            del self._reply_to[task_id]
            self._push.setdefault(entry[0], []).append((task_id, raw))
        if first and self._push:
            asyncio.get_running_loop().call_soon(self._flush_push)

    def _flush_push(self) -> None:
        push, self._push = self._push, {}
        for peer, answers in push.items():
            self.stats["answers_sent"] += len(answers)
            for chunk in route.chunks(answers):
                self._send_soon(peer, route.encode_answers(0, chunk))

    def _send_soon(self, peer: str, data: bytes) -> None:
        self._spawn(self._send_quietly(peer, data))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _send_quietly(self, peer: str, data: bytes) -> None:
        with contextlib.suppress(PeerUnreachable, SeamClosed):
            await self.channel.send_to(peer, data)
