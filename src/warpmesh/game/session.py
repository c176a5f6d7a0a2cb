"""Game sessions over Raft (runtime): host, join, spectate, and seats kept by the current leader.

``game_host``, ``game_join``, ``game_node`` and ``game_spectate`` take a plain seam (TCP mesh or
memory fabric) and mux their own channels on it:

====  =======================================================================
0x40  Raft (``SeamRaftTransport``)
0x41  lobby presence: an ``ORMap`` of LWW registers on the Quilter
0x42  app channels (``GameSession.app_channel(name)``: chat, cursors ...)
0x43  liveness heartbeats of the seat steward
====  =======================================================================

The "host" is only the peer that bootstraps the cluster: after that, whichever peer is the Raft
leader runs the *steward*, which recomputes :func:`warpmesh.game.seats.plan` from replicated state
(membership, the committed seat book, presence, liveness) and carries out one step at a time. So
the host may leave or crash at any moment: a majority elects a new leader, whose steward finishes
whatever the old one left half done, and every peer's game state stays a function of the committed
log.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from warpmesh.aio.observable import Observable
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.crdt.ormap import ORMap
from warpmesh.crdt.registers import LWWRegister
from warpmesh.game import presence as pres
from warpmesh.game.errors import (
    DuplicateHostError,
    JoinTimeoutError,
    RosterFullError,
    SpectatorsClosedError,
)
from warpmesh.game.seats import (
    ChangeMembership,
    Idle,
    Pause,
    ProposeSeat,
    ProposeUnseat,
    SeatBook,
    SeatView,
    plan,
)
from warpmesh.liveness.core import HeartbeatConfig
from warpmesh.liveness.runtime import Liveness
from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import (
    DEFAULT_SUBSCRIPTION_SIZE,
    Handler,
    IncomingHub,
    PeerId,
    Seam,
    SeamClosed,
    Subscription,
)
from warpmesh.quilt.runtime import Quilter
from warpmesh.raft.config import RaftConfig
from warpmesh.raft.errors import RaftError
from warpmesh.raft.runtime import RaftNode
from warpmesh.raft.storage import InMemoryRaftStorage, RaftStorage
from warpmesh.raft.transport import SeamRaftTransport
from warpmesh.raft.turns import Reset, Serializer, SystemRecord, TurnSequencer
from warpmesh.raft.types import Role

log = logging.getLogger("warpmesh.game")

RAFT_TAG = 0x40
PRESENCE_TAG = 0x41
APP_TAG = 0x42
LIVENESS_TAG = 0x43

#: Raft timing for interactive games on a LAN (a lost leader is replaced in well under a second).
GAME_RAFT_CONFIG = RaftConfig(election_timeout_min=0.3, election_timeout_max=0.6, heartbeat_interval=0.05)

A = TypeVar("A")


class ReturnAt(enum.Enum):
    """When ``game_host`` returns: all ``peer_count`` players seated, or a majority of them."""

    FULL = "full"
    QUORUM = "quorum"


class NamedChannel(Seam):
    """A best-effort named app channel: frames are ``[len][name][payload]`` on mux tag 0x42."""

    def __init__(self, session: GameSession, name: str) -> None:
        raw = name.encode()
        if not 1 <= len(raw) <= 255:
            raise ValueError("an app channel name is 1 to 255 UTF-8 bytes")
        self.name = name
        self._prefix = bytes((len(raw),)) + raw
        self._parent = session._app
        self.hub = IncomingHub()
        self.self_id = self._parent.self_id
        self.roster = self._parent.roster
        self.max_payload = self._parent.max_payload - len(self._prefix)
        self._closed = False

    async def send_to(self, peer: PeerId, data: bytes) -> None:
        await self._parent.send_to(peer, self._prefix + data)

    async def broadcast(self, data: bytes) -> None:
        await self._parent.broadcast(self._prefix + data)

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        return self.hub.subscribe(maxsize)

    def add_handler(self, handler: Handler) -> Callable[[], None]:
        return self.hub.add_handler(handler)

    @property
    def closed(self) -> bool:
        return self._closed or self._parent.closed

    async def close(self) -> None:
        self._closed = True
        self.hub.close()


def _slots(state: ORMap[LWWRegister]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, reg in state.items():
        if isinstance(key, str):
            out[key] = reg.value
    return out


class GameSession:
    """One peer's game session: its :class:`RaftNode` (``node``), app channels, seats, presence.

    Build it with :func:`game_host`, :func:`game_join`, :func:`game_node` or
    :func:`game_spectate`. Drive the game with :meth:`sequencer` (a ``TurnSequencer`` whose events
    include the seat records); leave with :meth:`leave`; :meth:`close` is idempotent.
    """

    def __init__(self, seam: Seam, *, storage: RaftStorage | None, config: RaftConfig | None,
                 seed: int | None, target_players: int, want_witness: bool, allow_spectators: bool,
                 max_spectators: int, seat_grace: float, heartbeat: HeartbeatConfig | None) -> None:
        self.seam = seam
        self.id: str = seam.self_id
        self.mux = MuxSeam(seam)
        self._app = self.mux.channel(APP_TAG)
        self._channels: dict[str, NamedChannel] = {}
        self.storage = storage if storage is not None else InMemoryRaftStorage()
        self.config = config or GAME_RAFT_CONFIG
        self._rng = random.Random(seed if seed is not None else int.from_bytes(os.urandom(8), "big"))
        self.target_players = target_players
        self.want_witness = want_witness
        self.allow_spectators = allow_spectators
        self.max_spectators = max_spectators
        self.seat_grace = seat_grace
        self._heartbeat = heartbeat or HeartbeatConfig(interval=0.2, timeout=1.0, lost_after=seat_grace)
        self.presence: Quilter[ORMap[LWWRegister]] = Quilter(
            self.mux.channel(PRESENCE_TAG), ORMap(LWWRegister), stream="game-presence",
            rng=random.Random(self._rng.getrandbits(64)))
        self.liveness = Liveness(MuxSeam(self.mux.channel(LIVENESS_TAG)), self._heartbeat)
        self.node: RaftNode | None = None
        self._turns: TurnSequencer[Any] | None = None
        #: The committed seat book as last applied here (players, witnesses, gone).
        self.seats: Observable[tuple[tuple[str, ...], tuple[str, ...]]] = Observable(((), ()))
        self.book = SeatBook()
        #: Why the steward cannot proceed (e.g. a two-voter game that lost a peer), or None.
        self.paused: Observable[str | None] = Observable(None)
        self.steward_steps: list[str] = []
        self._absent_since: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._left = False
        self._poke = asyncio.Event()

    # -- public API -----------------------------------------------------------------------------
    @property
    def raft(self) -> RaftNode:
        """The session's :class:`RaftNode` (same as ``node``)."""
        assert self.node is not None
        return self.node

    def sequencer(self, serializer: Serializer[A] | None = None, *,
                  client_id: str | None = None) -> TurnSequencer[A]:
        """A ``TurnSequencer`` over this session's node; its events include :class:`SystemRecord`
        seat changes (``event.state`` is the :class:`SeatBook` after the change)."""
        return TurnSequencer(self.raft, serializer, client_id=client_id, system=SeatBook)

    def app_channel(self, name: str) -> Seam:
        """A best-effort named channel over the same connection (same name = same channel)."""
        ch = self._channels.get(name)
        if ch is None or ch.closed:
            ch = self._channels[name] = NamedChannel(self, name)
        return ch

    def presence_slots(self) -> dict[str, Any]:
        """The lobby presence map: peer id -> status (and the admission slot)."""
        return _slots(self.presence.state)

    async def leave(self) -> None:
        """Give up the seat for good: the leader removes this peer and the others go on."""
        self._left = True
        self._announce(pres.VACATE)
        node = self.node
        if node is not None and not node.closed:
            # Wait (briefly) until the steward removed us, so the game never waits on our vote.
            loop = asyncio.get_running_loop()
            end = loop.time() + 5.0
            while loop.time() < end and not node.closed and (
                    node.membership.value.is_voter(self.id) or node.membership.value.is_learner(self.id)):
                if node.role.value == Role.LEADER and len(node.membership.value.all_voters) > 1:
                    # The steward never evicts itself: hand leadership over first.
                    others = sorted(node.membership.value.all_voters - {self.id})
                    with contextlib.suppress(RaftError, TimeoutError):
                        await node.transfer_leadership(others[0], timeout=1.0)
                await asyncio.sleep(0.1)

    async def announce_done(self) -> None:
        """Tell the others this peer saw the game end (they may linger for it before closing)."""
        self._announce(pres.DONE)

    async def close(self) -> None:
        """Stop the node, the presence replica and the channels. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._tasks)
        if self.node is not None:
            await self.node.close()
        for ch in self._channels.values():
            await ch.close()
        with contextlib.suppress(Exception):
            await self.liveness.close()
        with contextlib.suppress(Exception):
            await self.presence.close()
        await self.mux.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _announce(self, status: str) -> None:
        me = self.id
        with contextlib.suppress(SeamClosed):
            self.presence.mutate(lambda s: s.update(me, me, lambda r: r.set(me, status)))

    def _publish_admission(self, adm: pres.Admission) -> None:
        me = self.id
        cur = pres.admission(self.presence_slots())
        if cur == adm:
            return
        value = adm.encode()
        with contextlib.suppress(SeamClosed):
            self.presence.mutate(lambda s: s.update(me, pres.ADMISSION, lambda r: r.set(me, value)))

    async def _start_base(self, status: str) -> None:
        self._app.add_handler(self._route_app)
        await self.presence.start()
        self._announce(status)
        await self.liveness.start()

    def _route_app(self, sender: PeerId, data: bytes) -> Awaitable[None] | None:
        if not data or len(data) < 1 + data[0]:
            return None
        name = bytes(data[1:1 + data[0]]).decode(errors="replace")
        ch = self._channels.get(name)
        if ch is None or ch.closed:
            return None
        return ch.hub.deliver_nowait(sender, bytes(data[1 + data[0]:]))

    async def _start_raft(self, voters: list[str], learners: list[str]) -> None:
        self.node = RaftNode(self.id, SeamRaftTransport(self.mux.channel(RAFT_TAG)), self.storage,
                             voters=voters, learners=learners, config=self.config,
                             seed=self._rng.getrandbits(64))
        await self.node.start()
        self._turns = TurnSequencer(self.node, system=SeatBook)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow(), name=f"game-{self.id}-follow"))
        self._tasks.append(loop.create_task(self._steward(), name=f"game-{self.id}-steward"))

    async def _follow(self) -> None:
        """Keep :attr:`book` equal to the committed seat book at this peer's applied index."""
        assert self._turns is not None
        async for ev in self._turns.events():
            if isinstance(ev, SystemRecord | Reset):
                book = ev.state if isinstance(ev, SystemRecord) else ev.system
                if isinstance(book, SeatBook):
                    self.book = SeatBook(book.to_obj())
                    self.seats.set((tuple(self.book.players), tuple(self.book.witnesses)))
                    self._poke.set()

    def _lost(self, now: float, members: frozenset[str]) -> frozenset[str]:
        live = self.liveness.live.value
        lost = set()
        for p in members:
            if p == self.id or p in live:
                self._absent_since.pop(p, None)
                continue
            since = self._absent_since.setdefault(p, now)
            if now - since >= self.seat_grace:
                lost.add(p)
        return frozenset(lost)

    def view(self, now: float) -> SeatView:
        """What the steward plans from (exposed for tests and the CLI's status line)."""
        node = self.raft
        m = node.membership.value
        slots = self.presence_slots()
        roster = self.seam.roster.value
        members = m.members
        policy = self.book.policy or [self.target_players, self.want_witness, self.allow_spectators,
                                      self.max_spectators]
        changing = m.joint or node.config_change_pending
        return SeatView(
            self_id=self.id, voters=m.all_voters, learners=m.learners - m.all_voters, changing=changing,
            players=tuple(self.book.players), witnesses=tuple(self.book.witnesses),
            joiners=tuple(pres.with_status(slots, pres.PRESENT, roster)),
            witness_joiners=tuple(pres.with_status(slots, pres.WITNESS, roster)),
            spectators_waiting=tuple(pres.with_status(slots, pres.SPECTATE, roster)),
            lost=self._lost(now, members), vacated=frozenset(pres.with_status(slots, pres.VACATE)),
            target_players=policy[0], want_witness=bool(policy[1]),
            allow_spectators=bool(policy[2]), max_spectators=int(policy[3]))

    async def _steward(self) -> None:
        """On the leader: carry out :func:`plan` one step at a time. Elsewhere: idle."""
        while not self._closed and not self.raft.closed:
            try:
                await self._steward_loop()
            except (RaftError, SeamClosed):
                return
            except Exception:  # a bug here must not silently stop seat keeping: log and go on
                log.exception("game %s: steward failed; restarting it", self.id)
                await asyncio.sleep(0.5)

    async def _steward_loop(self) -> None:
        node = self.raft
        assert self._turns is not None
        loop = asyncio.get_running_loop()
        tick = max(0.05, self.config.heartbeat_interval * 2)
        while not self._closed:
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), tick)
            if node.closed:
                return
            if node.role.value != Role.LEADER or node.commit_index.value < 1:
                self._pause_check(loop.time())
                continue
            if node.applied_index.value < node.commit_index.value:
                continue  # plan from the committed seat book, not a stale one
            slots = self.presence_slots()
            lower = pres.duplicate_host_winner(self.id, slots) if slots.get(self.id) == pres.HOST else None
            if lower is not None and lower not in node.membership.value.members:
                # Another host outranks us on this mesh: never admit anyone (bug 19: no two clusters).
                self.paused.set(f"{lower} hosts this game; not admitting")
                continue
            if self.book.policy is None:
                if self.target_players < 1:
                    continue  # a joiner leads before the host recorded the policy: nothing to do
                step0 = [self.target_players, self.want_witness, self.allow_spectators, self.max_spectators]
                with contextlib.suppress(RaftError, TimeoutError):
                    idx = await self._turns.propose_system(["policy", "", step0], timeout=5.0)
                    await node.applied_index.wait_for(lambda v, i=idx: v >= i, 5.0)  # type: ignore[misc]
                continue
            target, _witness, allow, max_spect = self.book.policy
            view = self.view(loop.time())
            step = plan(view)
            players_open = len([p for p in view.players if p in view.voters]) < target
            spectators = view.learners - set(view.joiners) - set(view.witness_joiners)
            spectators_open = allow and len(spectators) < max_spect
            admitted = tuple(self.book.seated) + tuple(sorted(view.learners))
            self._publish_admission(pres.Admission(players_open, spectators_open, admitted))
            if isinstance(step, Idle):
                self.paused.set(None)
                continue
            if isinstance(step, Pause):
                if self.paused.value != step.reason:
                    log.warning("game %s: %s", self.id, step.reason)
                self.paused.set(step.reason)
                continue
            self.paused.set(None)
            try:
                if isinstance(step, ChangeMembership):
                    self.steward_steps.append(step.reason)
                    await node.change_membership(step.voters, step.learners,
                                                 timeout=self.config.catchup_timeout_s + 5)
                elif isinstance(step, ProposeSeat | ProposeUnseat):
                    self.steward_steps.append(f"{step.record()[0]} {step.peer}")
                    idx = await self._turns.propose_system(step.record(), timeout=5.0)
                    await node.applied_index.wait_for(lambda v, i=idx: v >= i, 5.0)  # type: ignore[misc]
            except (RaftError, TimeoutError) as err:
                log.info("game %s: steward step %s failed (%s); replanning", self.id, step, err)
                await asyncio.sleep(tick)

    def _pause_check(self, now: float) -> None:
        """Off the leader: say why the game cannot go on when no majority of voters is reachable."""
        node = self.raft
        m = node.membership.value
        if node.leader.value is not None or not m.is_voter(self.id):
            self.paused.set(None)
            return
        gone = self._lost(now, m.all_voters)
        if gone and len(m.all_voters - gone) <= len(m.all_voters) // 2:
            self.paused.set(f"waiting for {', '.join(sorted(gone))} to come back: "
                            f"{len(m.all_voters - gone)} of {len(m.all_voters)} voters cannot commit "
                            f"anything (a two-player game needs a witness to survive a loss; host with "
                            f"--witness)")
        else:
            self.paused.set(None)

    async def _wait(self, predicate: Callable[[], bool], timeout: float,
                    check: Callable[[], None] | None = None) -> bool:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not predicate():
            if check is not None:
                check()
            if loop.time() >= end:
                return False
            await asyncio.sleep(0.02)
        return True


def _session(seam: Seam, kw: dict[str, Any], *, target: int, witness: bool = False,
             allow_spectators: bool = False, max_spectators: int = 0) -> GameSession:
    return GameSession(seam, storage=kw.get("storage"), config=kw.get("config"), seed=kw.get("seed"),
                       target_players=target, want_witness=witness, allow_spectators=allow_spectators,
                       max_spectators=max_spectators, seat_grace=kw.get("seat_grace", 3.0),
                       heartbeat=kw.get("heartbeat"))


async def _guard(s: GameSession, body: Awaitable[Any]) -> GameSession:
    try:
        await body
    except BaseException:
        await s.close()
        raise
    return s


async def game_host(seam: Seam, peer_count: int, *, return_at: ReturnAt = ReturnAt.FULL,
                    allow_spectators: bool = False, max_spectators: int = 0, witness: bool = False,
                    storage: RaftStorage | None = None, config: RaftConfig | None = None,
                    seed: int | None = None, host_declaration_timeout: float = 2.0,
                    admission_timeout: float | None = None, seat_grace: float = 3.0,
                    heartbeat: HeartbeatConfig | None = None) -> GameSession:
    """Host a game for ``peer_count`` players (this peer is the first). Returns when all of them
    (``ReturnAt.FULL``) or a majority (``ReturnAt.QUORUM``; the rest are admitted in the background)
    are seated. Raises :class:`DuplicateHostError` if a peer with a lower id hosts on this mesh, and
    :class:`JoinTimeoutError` if ``admission_timeout`` passes first."""
    if peer_count < 1:
        raise ValueError("peer_count must be at least 1")
    if max_spectators < 0:
        raise ValueError("max_spectators must be >= 0")
    kw = {"storage": storage, "config": config, "seed": seed, "seat_grace": seat_grace, "heartbeat": heartbeat}
    s = _session(seam, kw, target=peer_count, witness=witness, allow_spectators=allow_spectators,
                 max_spectators=max_spectators)

    async def body() -> None:
        await s._start_base(pres.HOST)
        # Duplicate-host check: sync presence with every connected peer (bounded), then compare.
        peers = sorted(seam.peers())
        if peers:
            await asyncio.gather(*(s.presence.sync_with(p, timeout=host_declaration_timeout) for p in peers),
                                 return_exceptions=True)
        winner = pres.duplicate_host_winner(s.id, s.presence_slots())
        if winner is not None:
            raise DuplicateHostError(f"{winner} already hosts a game on this mesh (the lowest id wins); "
                                     f"join it instead ('warpmesh game join')")
        await s._start_raft([s.id], [])
        need = peer_count if return_at == ReturnAt.FULL else peer_count // 2 + 1
        ok = await s._wait(lambda: len(s.book.players) >= need, admission_timeout or float("inf"))
        if not ok:
            raise JoinTimeoutError(f"only {len(s.book.players)} of {need} players joined in time; "
                                   f"start the other peers with 'warpmesh game join'")

    return await _guard(s, body())


async def game_join(seam: Seam, *, witness: bool = False, timeout: float = 10.0,
                    wait_for_seat: bool = False,
                    storage: RaftStorage | None = None, config: RaftConfig | None = None,
                    seed: int | None = None, seat_grace: float = 3.0,
                    heartbeat: HeartbeatConfig | None = None) -> GameSession:
    """Join the game on this mesh; returns once this peer's seat is *committed* (it was admitted as
    a learner, caught up, promoted, and the promotion and seat record committed). ``witness=True``
    asks for a voting seat that does not play. Raises :class:`RosterFullError` (unless
    ``wait_for_seat``: then it waits, up to ``timeout``, to replace a player whose seat is lost) or
    :class:`JoinTimeoutError`."""
    kw = {"storage": storage, "config": config, "seed": seed, "seat_grace": seat_grace, "heartbeat": heartbeat}
    s = _session(seam, kw, target=0)

    def check() -> None:
        adm = pres.admission(s.presence_slots())
        if wait_for_seat or witness:
            return
        if adm is not None and not adm.players_open and s.id not in adm.seated \
                and s.node is not None and not s.node.membership.value.is_voter(s.id):
            raise RosterFullError(f"every seat is taken ({', '.join(adm.seated)}); "
                                  f"watch instead ('warpmesh game watch') or wait for a new game")

    async def body() -> None:
        await s._start_base(pres.WITNESS if witness else pres.PRESENT)
        await s._start_raft([], [s.id])
        ok = await s._wait(lambda: s.id in s.book.seated, timeout, check)
        if not ok:
            raise JoinTimeoutError(f"not admitted within {timeout:g} s; is a host running on this mesh "
                                   f"('warpmesh game host')?")

    return await _guard(s, body())


async def game_node(seam: Seam, voter_ids: list[str] | tuple[str, ...] | frozenset[str], *,
                    storage: RaftStorage | None = None, config: RaftConfig | None = None,
                    seed: int | None = None, seat_grace: float = 3.0,
                    heartbeat: HeartbeatConfig | None = None) -> GameSession:
    """Roster-given bootstrap: every peer passes the same voters and Raft elects symmetrically. Returns
    at once (seats are recorded by the first leader, in id order)."""
    voters = sorted(set(voter_ids))
    if seam.self_id not in voters:
        raise ValueError(f"{seam.self_id!r} is not among the voters {voters}")
    kw = {"storage": storage, "config": config, "seed": seed, "seat_grace": seat_grace, "heartbeat": heartbeat}
    s = _session(seam, kw, target=len(voters))

    async def body() -> None:
        await s._start_base(pres.PRESENT)
        await s._start_raft(voters, [])

    return await _guard(s, body())


async def game_spectate(seam: Seam, *, timeout: float = 10.0, storage: RaftStorage | None = None,
                        config: RaftConfig | None = None, seed: int | None = None,
                        heartbeat: HeartbeatConfig | None = None) -> GameSession:
    """Watch the game: a permanent learner (never promoted), returned once admitted and holding the
    log. Raises :class:`SpectatorsClosedError` or :class:`JoinTimeoutError`."""
    kw = {"storage": storage, "config": config, "seed": seed, "heartbeat": heartbeat}
    s = _session(seam, kw, target=0)

    def admitted() -> bool:
        node = s.node
        return (node is not None and node.membership.value.is_learner(s.id)
                and node.applied_index.value > 0)

    closed_since: list[float] = []

    def check() -> None:
        adm = pres.admission(s.presence_slots())
        if adm is None or adm.spectators_open or s.id in adm.seated:
            closed_since.clear()
            return
        # Refuse only once admission has stayed closed for a while: a leader mid-change may
        # publish a momentary "closed" that the next round corrects.
        now = asyncio.get_running_loop().time()
        if not closed_since:
            closed_since.append(now)
        if now - closed_since[0] >= 1.0:
            raise SpectatorsClosedError("this game takes no (more) spectators; ask the host to allow "
                                        "them ('warpmesh game host --spectators N')")

    async def body() -> None:
        await s._start_base(pres.SPECTATE)
        await s._start_raft([], [s.id])
        if not await s._wait(admitted, timeout, check):
            raise JoinTimeoutError(f"not admitted as a spectator within {timeout:g} s; is a host running "
                                   f"on this mesh?")

    return await _guard(s, body())
