"""The runtime side of cells: forwarding tasks to the cell that queues them, answers back.

:mod:`warpmesh.warp.route` defines the cells, the rendezvous rule and the messages; this module is
the part of a :class:`~warpmesh.warp.node.WarpNode` that sends and answers them. Both sides live in
every peer: as a *submitter* it forwards the tasks of other cells and collects their answers; as a
peer of a cell it queues what others forward and pushes the answers back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from warpmesh.aio.observable import Observable
from warpmesh.net.seam import PeerUnreachable, Seam, SeamClosed
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
        self._fetches: dict[int, str | None] = {}
        #: Forwarded tasks -> (cell, run), until their answer arrives.
        self.waiting: dict[str, tuple[str | None, str]] = {}
        self._accepted: set[str] = set()
        #: Answers of forwarded tasks (task -> its answer), until acknowledged (or, with
        #: ``WarpConfig.result_ttl``, that long after they arrived, as the cells expire theirs).
        self.answers: dict[str, OpResult] = {}
        self._answered_at: dict[str, float] = {}
        #: Bumps whenever an answer arrives here.
        self.changes: Observable[int] = Observable(0)
        # Forwarded, not accepted yet, per cell: each cell's own forwarder retries them in the
        # background, so a cell that is down never holds up the others.
        self._backlog: dict[str | None, list[_Pending]] = {}
        self._backlog_event: dict[str | None, asyncio.Event] = {}
        self._forwarders: dict[str | None, asyncio.Task[None]] = {}
        #: Tasks forwarded to this peer -> (submitter, run): their answers are pushed back.
        self._reply_to: dict[str, tuple[str, str]] = {}
        self._push: dict[str, list[tuple[str, bytes]]] = {}
        self._cells_key: Any = None
        self._cells: tuple[str | None, ...] = ()
        self.stats: dict[str, int] = dict.fromkeys(
            ("forwarded", "accepted_here", "answers_sent", "answers_pushed", "answers_fetched", "bad_frames",
             "retries"), 0)
        self._acks: dict[str | None, list[str]] = {}
        self._ack_tasks: set[asyncio.Task[Any]] = set()
        self._replies: dict[int, asyncio.Future[route.Message]] = {}
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

    def only_cell(self) -> bool:
        """Whether this peer's cell is the only one known: nothing is forwarded (a mesh without
        cells). Enqueues ask this once per batch, not :meth:`target` per task."""
        cells = self.cells()
        return not cells or cells == (self.node.config.cell,)

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
        self._remove = self.channel.add_handler(self._on_frame)

    async def close(self) -> None:
        tasks = [*self._tasks, *self._forwarders.values(), *self._inflight]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._remove is not None:
            self._remove()
            self._remove = None
        for fut in self._replies.values():
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
        self._backlog.setdefault(cell, []).append(pending)
        event = self._backlog_event.get(cell)
        if event is None:
            event = self._backlog_event[cell] = asyncio.Event()
        event.set()
        if cell not in self._forwarders or self._forwarders[cell].done():
            self._forwarders[cell] = asyncio.get_running_loop().create_task(
                self._forwarder(cell), name=f"warp-route-{self.node.self_id}-{cell}")
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
        batches = [p.done for backlog in self._backlog.values() for p in backlog]
        if not batches:
            return True
        done, _ = await asyncio.wait([asyncio.shield(f) for f in batches], timeout=timeout)
        return len(done) == len(batches)

    async def _forwarder(self, cell: str | None) -> None:
        # ``cell``'s batches, oldest first, all that wait at once; what no peer accepts waits a
        # moment and is offered again.
        backlog, event = self._backlog[cell], self._backlog_event[cell]
        while True:
            if not backlog:
                event.clear()
                await event.wait()
            if not await self._offer(cell, list(backlog)):
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
        backlog = self._backlog[cell]
        for p in batches:
            with contextlib.suppress(ValueError):
                backlog.remove(p)
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
        return await self._request(cell, lambda seq: route.encode_submit(seq, tasks))

    async def _request(self, cell: str | None, build: Callable[[int], bytes]) -> tuple[bool, str]:
        """Send ``build(seq)`` to live peers of ``cell`` until one ACCEPTs it (see :meth:`_submit`);
        a refusal sends it on to the others until ``replicate_timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.node.config.replicate_timeout
        reason = f"no peer of cell {cell!r} accepted it within {self.node.config.replicate_timeout} s"
        while (left := deadline - loop.time()) > 0:
            reply = await self._ask(cell, build, left)
            if isinstance(reply, route.Accept):
                if reply.ok:
                    return True, ""
                reason = f"cell {cell!r}: {reply.reason}"
            elif not self.live_peers(cell):
                reason = f"no live peer of cell {cell!r} is reachable"
        return False, reason

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
            self._answered_at[task_id] = self.node.now()
            got.append(task_id)
        if got:
            self.changes.set(self.changes.value + 1)
            self.node._notify_results(got)

    def expire(self, now: float) -> None:
        """Forget forwarded answers held longer than ``result_ttl`` (None: kept until acknowledged)."""
        ttl = self.node.config.result_ttl
        if ttl is None or not self._answered_at:
            return
        for task_id in [t for t, at in self._answered_at.items() if now - at >= ttl]:
            del self._answered_at[task_id]
            self.answers.pop(task_id, None)

    def ack(self, task_id: str) -> bool:
        """Acknowledge the answer of a task of another cell: dropped here, removed from its cell's
        board (the ACK is resent until a peer of the cell confirms it). False for a task of this
        peer's own cell: the caller acknowledges it on its own board."""
        entry = self.waiting.pop(task_id, None)
        self._accepted.discard(task_id)
        res = self.answers.pop(task_id, None)
        self._answered_at.pop(task_id, None)
        cell = entry[0] if entry is not None else self.target(task_id)
        if cell == self.node.config.cell and entry is None and res is None:
            return False
        self._acks.setdefault(cell, []).append(task_id)
        if len(self._acks) == 1 and len(self._acks[cell]) == 1:
            asyncio.get_running_loop().call_soon(self._flush_acks)
        return True

    def _flush_acks(self) -> None:
        acks, self._acks = self._acks, {}
        for cell, tasks in acks.items():
            for chunk in route.chunks(tasks):
                task = self._spawn(self._send_ack(cell, chunk))
                self._ack_tasks.add(task)
                task.add_done_callback(self._ack_tasks.discard)

    async def _send_ack(self, cell: str | None, tasks: list[str]) -> None:
        ok, reason = await self._request(cell, lambda seq: route.encode_ack(seq, tasks))
        if not ok:
            log.warning("%s: %d acknowledgement(s) did not reach cell %r: %s", self.node.self_id, len(tasks),
                        cell, reason)

    async def acks_sent(self, timeout: float | None = None) -> bool:
        """Wait until every acknowledgement sent to another cell was confirmed (or given up)."""
        pending = list(self._ack_tasks)
        if not pending:
            return True
        done, _ = await asyncio.wait(pending, timeout=timeout)
        return len(done) == len(pending)

    async def fetch(self, task_ids: Iterable[str], timeout: float = 5.0) -> tuple[dict[str, OpResult], dict[str, str]]:
        """Ask the cells of ``task_ids`` (other than this peer's) for their answers: ``(answers,
        queued)``, where ``queued`` maps the tasks queued there without an answer to their run.
        Tasks of an unreachable cell, or unknown there, are in neither."""
        answers: dict[str, OpResult] = {}
        queued: dict[str, str] = {}
        for cell, tasks in self._by_other_cell(task_ids).items():
            for chunk in route.chunks(tasks):
                reply = await self._ask(cell, functools.partial(_fetch_frame, chunk), timeout)
                if not isinstance(reply, route.Answers):
                    continue
                for task_id, raw in reply.answers:
                    with contextlib.suppress(FrameUndecodable, ValueError):
                        answers[task_id] = OpResult.from_wire(unpack(raw))
                for task_id, run in reply.queued:
                    queued[task_id] = run.decode(errors="replace")
        return answers, queued

    def _by_other_cell(self, task_ids: Iterable[str]) -> dict[str | None, list[str]]:
        """``task_ids`` of cells other than this peer's, by cell."""
        by_cell: dict[str | None, list[str]] = {}
        own = self.node.config.cell
        for t in dict.fromkeys(task_ids):
            cell = self.target(t)
            if cell != own:
                by_cell.setdefault(cell, []).append(t)
        return by_cell

    async def counts(self, timeout: float = 5.0) -> dict[str, dict[str, int]]:
        """The other cells' counters (each cell keeps its own): name -> peer -> count, summed over
        the cells that answered within ``timeout`` (a cell with no live peer is left out)."""
        out: dict[str, dict[str, int]] = {}
        own = self.node.config.cell
        for cell in self.cells():
            if cell == own:
                continue
            reply = await self._ask(cell, route.encode_counts, timeout)
            if isinstance(reply, route.Counted):
                for name, by_peer in reply.counts.items():
                    row = out.setdefault(name, {})
                    for peer, n in by_peer.items():
                        row[peer] = row.get(peer, 0) + n
        return out

    async def cancel(self, task_ids: Iterable[str], reason: str = "cancelled",
                     timeout: float = 5.0) -> dict[str, str]:
        """Cancel tasks of other cells in their cells: task -> ``cancelled``, ``done`` or ``unknown``
        as :meth:`WarpNode.cancel` said there (``unreachable`` when no peer of the cell answered
        within ``timeout``). Tasks of this peer's own cell are left to the caller."""
        states: dict[str, str] = {}
        for cell, tasks in self._by_other_cell(task_ids).items():
            for chunk in route.chunks(tasks):
                reply = await self._ask(cell, functools.partial(_cancel_frame, [(t, reason) for t in chunk]), timeout)
                got = {} if not isinstance(reply, route.Cancelled) else {
                    t: st.decode(errors="replace") for t, st in reply.states}
                for t in chunk:
                    states[t] = got.get(t, "unreachable")
                    if states[t] in ("cancelled", "done"):
                        self.waiting.pop(t, None)  # its answer (cancelled) is fetched like any other
        return states

    async def _ask(self, cell: str | None, build: Callable[[int], bytes], timeout: float) -> route.Message | None:
        """Send ``build(seq)`` to live peers of ``cell`` (again every ``resend_after``, to another
        peer when there is one, and after a wait when none is live yet: a client hears the other
        cells' peers a moment after it joins) until one replies under that seq; None on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        step = max(0.01, self.node.config.quilter.resend_after)
        fut: asyncio.Future[route.Message] = loop.create_future()
        seqs: list[int] = []
        try:
            while (left := deadline - loop.time()) > 0:
                peers = self.live_peers(cell)
                if peers:
                    self._seq += 1
                    seqs.append(self._seq)
                    self._replies[self._seq] = fut
                    with contextlib.suppress(PeerUnreachable, SeamClosed):
                        await self.channel.send_to(peers[0], build(self._seq))
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(fut), min(step, left))
            return None
        finally:
            for seq in seqs:
                self._replies.pop(seq, None)

    # -- cell side -----------------------------------------------------------------------------
    def _on_frame(self, sender: str, data: bytes) -> None:
        try:
            msg = route.decode(data)
        except ValueError as err:
            self.stats["bad_frames"] += 1
            log.warning("%s: dropped a routing frame from %s: %s", self.node.self_id, sender, err)
            return
        if isinstance(msg, route.Accept | route.Answers | route.Counted | route.Cancelled):
            # A reply to one of our requests (see _ask).
            reply = self._replies.get(msg.seq)
            if reply is not None and not reply.done():
                reply.set_result(msg)
        if isinstance(msg, route.Answers):
            if msg.seq == 0 or msg.seq in self._fetches:
                self._fetches.pop(msg.seq, None)
                self.stats["answers_pushed" if msg.seq == 0 else "answers_fetched"] += len(msg.answers)
                self._got_answers(msg.answers)
        elif isinstance(msg, route.Submit):
            self._accept(sender, msg)
        elif isinstance(msg, route.Fetch):
            found = self._held(msg.tasks)
            answered = {t for t, _ in found}
            node = self.node
            queued = [(t, d.run) for t in msg.tasks if t not in answered and (d := node._descriptor(t)) is not None]
            self._send_soon(sender, route.encode_answers(msg.seq, found, queued))
        elif isinstance(msg, route.Ack):
            node = self.node
            for task_id in msg.tasks:
                if task_id in node.results_board.state:
                    node.core.ack(task_id)
            node._drain()
            self._send_soon(sender, route.encode_accept(msg.seq, True))
        elif isinstance(msg, route.Counts):
            node = self.node
            names = sorted(str(k) for k in node.counters.state.keys())
            self._send_soon(sender, route.encode_counted(msg.seq, {n: node.counters_by_peer(n) for n in names}))
        elif isinstance(msg, route.Cancel):
            self._spawn(self._cancel_here(sender, msg))
        elif isinstance(msg, route.Hello):
            cells = [c for c in self.cells() if c is not None]
            self._send_soon(sender, route.encode_cell(msg.seq, self.node.config.cell, cells))

    async def _cancel_here(self, sender: str, msg: route.Cancel) -> None:
        node = self.node
        states = [(t, node.cancel(t, reason=r.decode(errors="replace"))) for t, r in msg.tasks]
        if any(st == "cancelled" for _, st in states) and node.results_board.core.peers:
            # Answer once a majority of the cell holds the cancels (as a local cancel is waited for).
            await node.results_board.replicated(timeout=node.config.replicate_timeout, count=node.holders_needed())
        await self._send_quietly(sender, route.encode_cancelled(msg.seq, states))

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
        if wait and not node.queue.core.peers and not node.cell_known():
            # Just (re)started: alone in its cell only as far as it knows; acknowledging now would
            # leave the task on this peer alone.
            ok, reason = False, "this peer does not know the peers of its cell yet"
        elif wait and node.queue.core.peers:
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

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return task

    async def _send_quietly(self, peer: str, data: bytes) -> None:
        with contextlib.suppress(PeerUnreachable, SeamClosed):
            await self.channel.send_to(peer, data)


def _fetch_frame(tasks: list[str], seq: int) -> bytes:
    return route.encode_fetch(seq, tasks)


def _cancel_frame(items: list[tuple[str, str]], seq: int) -> bytes:
    return route.encode_cancel(seq, items)


async def ask_cell(channel: Seam, peer: str, timeout: float) -> tuple[str | None, tuple[str, ...]] | None:
    """Ask ``peer`` (over ``channel``, the mux's routing channel) which cell it is of: ``(cell,
    cells)``, or None when it did not say within ``timeout`` (a peer of a release without cells).
    What a client calls before it builds its node, to join its entry peer's cell."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[route.Cell] = loop.create_future()

    def on_frame(sender: str, data: bytes) -> None:
        if sender != peer or fut.done():
            return
        with contextlib.suppress(ValueError):
            msg = route.decode(data)
            if isinstance(msg, route.Cell):
                fut.set_result(msg)

    remove = channel.add_handler(on_frame)
    deadline = loop.time() + timeout
    try:
        while (left := deadline - loop.time()) > 0:
            with contextlib.suppress(PeerUnreachable, SeamClosed):
                await channel.send_to(peer, route.encode_hello(1))
            with contextlib.suppress(TimeoutError):
                reply = await asyncio.wait_for(asyncio.shield(fut), min(0.25, left))
                return reply.cell, reply.cells
        return None
    finally:
        remove()
