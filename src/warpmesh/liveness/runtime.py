"""Asyncio runtime of the failure detector: heartbeats out, every inbound frame counted as alive.

``Liveness(mux)`` sends a tiny heartbeat on mux channel :data:`HEARTBEAT_TAG` each ``interval`` to
every roster peer (with ``HeartbeatConfig.quiet_when_busy``, only to those that have not received
another frame from us, on any channel of the mux, in the last half interval), and watches *all* inbound traffic on the parent seam: any frame is a sign of life, so
a busy mesh sends almost no heartbeats (they used to cost every peer one frame per peer per
interval, growing with the mesh). It publishes:

* ``live``: the peers work may be routed to (self, plus roster peers that are Healthy or Recovered);
* ``health``: every tracked peer's :class:`~warpmesh.liveness.core.PeerHealth`;
* :meth:`events`: a stream of :class:`~warpmesh.liveness.core.LivenessEvent`.

Beacons: a node may attach a small opaque value to its heartbeats (:meth:`Liveness.set_beacon`;
Warp's is the digest of the worker set it sees). A changed beacon is announced at once to every
connected peer, and the heartbeats of the next few intervals carry it (later ones are bare pings);
a peer met for the first time, or heard again after silence, is sent it too. Beacons are not
acknowledged: a node that doubts what it holds of a peer's beacon asks for it
(:meth:`Liveness.ask_beacons`, answered at most twice per interval per asker), so a lost
announcement costs one question, not a replicated board entry per change. Per change this is N - 1
small frames (a replicated entry cost N - 1 deltas, N - 1 acks, and repairs).

With ``HeartbeatConfig.probe`` the periodic heartbeats give way to SWIM-style probing
(:mod:`warpmesh.liveness.probe`): each interval one probe to the peer we have the oldest news of,
helpers when it does not answer, a suspicion told to every peer when it stays silent. A quiet mesh
then costs each peer about two frames per interval, not N - 1.

Frames on the heartbeat channel: ``PING [beacon | None]`` (kind 1) and ``ASK None`` (kind 2), and in
probe mode ``PROBE``, ``PROBE_REQ``, ``RELAYED`` and ``SUSPECT`` (kinds 3-6, see the probe module).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from warpmesh.aio.observable import Observable
from warpmesh.aio.queue import ClosableQueue, QueueClosed
from warpmesh.aio.tasks import cancel_and_wait
from warpmesh.liveness.core import FailureDetector, HeartbeatConfig, LivenessEvent, PeerHealth
from warpmesh.liveness.probe import PROBE, PROBE_REQ, RELAYED, SUSPECT, Outgoing, Prober
from warpmesh.net.mux import MuxSeam
from warpmesh.net.seam import PeerId, SeamClosed
from warpmesh.wire.frame import FrameError, decode_frame, encode_frame

log = logging.getLogger("warpmesh.liveness")

#: Mux channel carrying heartbeats (see docs/architecture.md for the tag map).
HEARTBEAT_TAG = 0x10
_PING_KIND = 1
_ASK_KIND = 2
_PING = encode_frame(_PING_KIND, None)
_ASK = encode_frame(_ASK_KIND, None)
_EVENT_QUEUE = 1024
#: Largest beacon accepted from a peer (Warp's is 8 bytes).
MAX_BEACON = 256
#: Periodic heartbeats that carry a changed beacon after its announcement.
_BEACON_BEATS = 3


class Liveness:
    """Heartbeat failure detection over a :class:`~warpmesh.net.mux.MuxSeam`."""

    def __init__(self, mux: MuxSeam, config: HeartbeatConfig | None = None, *,
                 rng: random.Random | None = None) -> None:
        self.config = config or HeartbeatConfig()
        self.detector = FailureDetector(self.config)
        self._mux = mux
        self._seam = mux.parent
        self._channel = mux.channel(HEARTBEAT_TAG)
        self.self_id: PeerId = self._seam.self_id
        #: The SWIM-style prober (``HeartbeatConfig.probe``), else None. ``rng`` picks its helpers
        #: (seeded from our id by default, so a simulation replays).
        self.prober: Prober | None = None
        if self.config.probe:
            self.prober = Prober(self.self_id, self.config, rng or random.Random(f"probe:{self.self_id}"))
        self.live: Observable[frozenset[PeerId]] = Observable(frozenset({self.self_id}))
        self.health: Observable[dict[PeerId, PeerHealth]] = Observable({})
        self._listeners: list[ClosableQueue[LivenessEvent]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.heartbeats_sent = 0
        #: Heartbeats not sent because the peer had just received another frame from us.
        self.heartbeats_skipped = 0
        self._sent_at: dict[PeerId, float] = {}  # peer -> when we last sent it any frame
        self._broadcast_at = float("-inf")  # when we last broadcast any frame
        #: Times this node noticed it had been stalled (and excused its peers' silence).
        self.stalls = 0
        self._removers: list[Any] = []
        #: Our beacon (announced, then carried by a few heartbeats), and the newest heard from each peer.
        self.beacon: bytes | None = None
        self.beacons: dict[PeerId, bytes] = {}
        #: Called with (peer, beacon) when a peer's beacon is new or changed.
        self.on_beacon: Callable[[PeerId, bytes], None] | None = None
        self._ping = _PING  # our heartbeat with the beacon
        self._beacon_until = float("-inf")  # periodic heartbeats carry the beacon until then
        self._asked_at: dict[PeerId, float] = {}  # peer -> when we last asked it for its beacon
        self._answered_at: dict[PeerId, float] = {}  # peer -> when we last answered its question
        self._sends: set[asyncio.Task[None]] = set()
        #: Beacon traffic: announcements (one per change, to every peer), questions and answers.
        self.beacon_stats: dict[str, int] = dict.fromkeys(
            ("announced", "asked", "answered", "changed", "bad_frames"), 0)

    async def start(self) -> Liveness:
        loop = asyncio.get_running_loop()
        if self.config.quiet_when_busy and not self.config.probe and self._mux.on_send is None:
            self._mux.on_send = self._note_sent
        # Every inbound frame on the seam is a sign of life, observed inline (no queue, no task).
        self._removers = [
            self._seam.add_handler(self._on_frame),
            self._channel.add_handler(self._on_heartbeat),
        ]
        self._tasks = [
            loop.create_task(self._beat(), name=f"liveness-beat-{self.self_id}"),
            loop.create_task(self._watch_roster(), name=f"liveness-roster-{self.self_id}"),
        ]
        return self

    async def __aenter__(self) -> Liveness:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def events(self) -> AsyncIterator[LivenessEvent]:
        """A new stream of every transition from now on (bounded; a reader must keep up or close)."""
        q: ClosableQueue[LivenessEvent] = ClosableQueue(_EVENT_QUEUE)
        self._listeners.append(q)

        async def gen() -> AsyncIterator[LivenessEvent]:
            try:
                while True:
                    try:
                        yield await q.get()
                    except QueueClosed:
                        return
            finally:
                q.close()
                if q in self._listeners:
                    self._listeners.remove(q)

        return gen()

    def state(self, peer: PeerId) -> PeerHealth | None:
        return self.detector.state(peer)

    def stats(self) -> dict[str, Any]:
        """Counters as JSON-ready data: the mode, rounds sent, stalls, beacon traffic, and in probe
        mode the prober's (probes, helper requests, relays, suspicions raised and believed, refutations)."""
        out: dict[str, Any] = {"mode": "probe" if self.prober is not None else "heartbeat",
                               "rounds_sent": self.heartbeats_sent, "stalls": self.stalls,
                               "beacons": dict(self.beacon_stats)}
        if self.prober is not None:
            out["probe"] = dict(self.prober.stats)
        else:
            out["heartbeats_skipped"] = self.heartbeats_skipped
        return out

    # -- beacons ----------------------------------------------------------------------------
    def set_beacon(self, beacon: bytes) -> None:
        """Attach ``beacon`` to our heartbeats; a change is announced to every roster peer at once."""
        if len(beacon) > MAX_BEACON:
            raise ValueError(f"a beacon is at most {MAX_BEACON} bytes, not {len(beacon)}")
        if beacon == self.beacon:
            return
        self.beacon = beacon
        self._ping = encode_frame(_PING_KIND, beacon)
        self._beacon_until = float("inf")  # until the next periodic beat dates it
        if self._tasks:  # started
            self.beacon_stats["announced"] += 1
            self._send_soon(None, self._ping)

    def ask_beacons(self, peers: Iterable[PeerId]) -> int:
        """Ask each of ``peers`` for its beacon, unless asked within the last interval; how many asked."""
        if not self._tasks:
            return 0
        now = asyncio.get_running_loop().time()
        asked = 0
        for peer in peers:
            if peer == self.self_id or now - self._asked_at.get(peer, float("-inf")) < self.config.interval:
                continue
            self._asked_at[peer] = now
            self._send_soon(peer, _ASK)
            asked += 1
        self.beacon_stats["asked"] += asked
        return asked

    def _send_soon(self, peer: PeerId | None, frame: bytes) -> None:
        async def send() -> None:
            try:
                if peer is None:
                    await self._channel.broadcast(frame)
                else:
                    await self._channel.send_to(peer, frame)
            except Exception:  # an unreachable or closed peer: its next heartbeat or question retries
                pass

        task = asyncio.get_running_loop().create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _on_heartbeat(self, sender: PeerId, data: bytes) -> None:
        try:
            frame = decode_frame(data, max_size=MAX_BEACON + 16)
        except FrameError:
            self.beacon_stats["bad_frames"] += 1
            return
        if frame.kind == _PING_KIND or frame.kind == PROBE:
            if frame.kind == PROBE:
                self._send_soon(sender, self._current_ping(asyncio.get_running_loop().time()))  # the answer
            if frame.body is None:
                return
            if not isinstance(frame.body, bytes):
                self.beacon_stats["bad_frames"] += 1
                return
            if self.beacons.get(sender) != frame.body:
                self.beacons[sender] = frame.body
                self.beacon_stats["changed"] += 1
                if self.on_beacon is not None:
                    self.on_beacon(sender, frame.body)
        elif self.prober is not None and frame.kind in (PROBE_REQ, RELAYED, SUSPECT):
            self._on_probe_frame(sender, frame.kind, frame.body)
        elif frame.kind == _ASK_KIND:
            now = asyncio.get_running_loop().time()
            # At most two answers per interval to one asker: a hostile peer cannot make us flood.
            if self.beacon is not None and now - self._answered_at.get(sender, float("-inf")) >= self.config.interval / 2:
                self._answered_at[sender] = now
                self.beacon_stats["answered"] += 1
                self._send_soon(sender, self._ping)
        else:
            self.beacon_stats["bad_frames"] += 1

    # -- probing (HeartbeatConfig.probe) ------------------------------------------------------
    def _current_ping(self, now: float) -> bytes:
        # A fresh beacon rides on the next few heartbeats (in case its announcement was lost);
        # after that, a peer that doubts it asks.
        return self._ping if now < self._beacon_until else _PING

    def _on_probe_frame(self, sender: PeerId, kind: int, body: Any) -> None:
        prober = self.prober
        assert prober is not None
        now = asyncio.get_running_loop().time()
        if kind == PROBE_REQ:
            self._send_out(prober.on_probe_request(sender, body, now, self.detector))
        elif kind == RELAYED:
            prober.on_relayed(body)
        else:
            verdict = prober.on_suspect(body, now)
            if verdict == "refute":
                log.info("%s: %s suspects us; telling every peer we live", self.self_id, sender)
                self._send_soon(None, self._current_ping(now))
            elif verdict == "believe":
                ev = self.detector.suspect(body, now)
                if ev is not None:
                    log.info("%s: %s suspects %s, and we have not heard from it either", self.self_id,
                             sender, body)
                    prober.stats["believed"] += 1
                    self._emit([ev])

    def _probe_round(self, now: float) -> None:
        prober = self.prober
        assert prober is not None
        out, failed = prober.tick(now, self.detector)
        events: list[LivenessEvent] = []
        for target in failed:
            ev = self.detector.suspect(target, now)
            if ev is not None:
                events.append(ev)
                out.append(prober.suspected(target))
        self._emit(events)
        self._send_out(out)
        if out:
            self.heartbeats_sent += 1

    def _send_out(self, out: list[Outgoing]) -> None:
        if not out:
            return
        # A fresh beacon rides on our probes as on heartbeats.
        fresh = self.beacon is not None and asyncio.get_running_loop().time() < self._beacon_until
        for o in out:
            body = self.beacon if o.kind == PROBE and fresh else o.body
            self._send_soon(o.to, encode_frame(o.kind, body))

    # -- internals --------------------------------------------------------------------------
    def _emit(self, events: list[LivenessEvent]) -> None:
        if not events:
            return
        for ev in events:
            if self.beacon is not None and ev.new.alive and ev.old is not None and not ev.old.alive:
                # Back after silence: it may have missed announcements meanwhile.
                self._send_soon(ev.peer, self._ping)
            level = logging.INFO if ev.new.alive else logging.WARNING
            log.log(level, "%s: peer %s %s -> %s", self.self_id, ev.peer,
                    ev.old.value if ev.old else "-", ev.new.value)
            for q in list(self._listeners):
                if not q.closed and not q.put_nowait(ev):
                    # A listener that stopped reading loses events, loudly: liveness must not stall.
                    log.error("%s: liveness listener is not reading; closing it", self.self_id)
                    q.close()
        self._publish()

    def _publish(self) -> None:
        self.health.set(self.detector.states())
        roster = self._seam.roster.value
        alive = self.detector.alive()
        self.live.set(frozenset(p for p in roster if p == self.self_id or p in alive))

    def _on_frame(self, sender: PeerId, _data: bytes) -> None:
        now = asyncio.get_running_loop().time()
        ev = self.detector.heard(sender, now)
        if ev is not None:
            self._emit([ev])
        if self.prober is not None and self.prober.relaying:
            self._send_out(self.prober.heard(sender, now))

    def _note_sent(self, peer: PeerId | None) -> None:
        now = asyncio.get_running_loop().time()
        if peer is None:
            self._broadcast_at = now
        else:
            self._sent_at[peer] = now

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.interval
        last = loop.time()
        while True:
            now = loop.time()
            # A beat that wakes late means this node was stalled; do not blame peers for it.
            stalled = now - last - interval
            if stalled > interval:
                self.detector.pause(stalled)
                if self.prober is not None:
                    self.prober.pause(stalled)
                self.stalls += 1
            last = now
            self._emit(self.detector.tick(now))
            if self._beacon_until == float("inf"):
                self._beacon_until = now + _BEACON_BEATS * interval
            ping = self._current_ping(now)
            try:
                if self.prober is not None:
                    self._probe_round(now)
                elif self.config.quiet_when_busy:
                    await self._beat_quietly(now - interval / 2, ping)
                else:
                    # Every connected peer, whether the roster lists it yet or not (a joining peer may not).
                    await self._channel.broadcast(ping)
                    self.heartbeats_sent += 1
            except SeamClosed:
                return
            await asyncio.sleep(interval)

    async def _beat_quietly(self, recent: float, ping: bytes) -> None:
        # A frame sent since ``recent`` (half an interval ago) already told the peer we live (it counts
        # every frame), so its silence clock stays within 1.5 intervals without losses.
        others = self._seam.roster.value - {self.self_id}
        due = [p for p in sorted(others)
               if max(self._sent_at.get(p, float("-inf")), self._broadcast_at) <= recent]
        self.heartbeats_skipped += len(others) - len(due)
        if not due:
            return
        if len(due) == len(others):
            await self._channel.broadcast(ping)
        else:
            for peer in due:
                await self._channel.send_to(peer, ping)
        self.heartbeats_sent += 1

    async def _watch_roster(self) -> None:
        loop = asyncio.get_running_loop()
        async for roster in self._seam.roster.updates():
            now = loop.time()
            events: list[LivenessEvent] = []
            for peer in sorted(roster):
                if peer != self.self_id:
                    ev = self.detector.track(peer, now)
                    if ev is not None:
                        events.append(ev)
                        if self.beacon is not None:
                            self._send_soon(peer, self._ping)  # a newcomer has missed our announcement
            if self.prober is not None:
                self.prober.set_peers(roster)
            for peer in self.detector.tracked():
                if peer not in roster:
                    self.detector.untrack(peer)
                    self.beacons.pop(peer, None)
                    self._asked_at.pop(peer, None)
                    self._answered_at.pop(peer, None)
            self._emit(events)
            self._publish()

    async def close(self) -> None:
        for remove in self._removers:
            remove()
        self._removers.clear()
        if self._mux.on_send == self._note_sent:
            self._mux.on_send = None
        await cancel_and_wait(self._tasks, swallow=(SeamClosed,))
        self._tasks.clear()
        await cancel_and_wait(list(self._sends), swallow=(SeamClosed,))
        for q in self._listeners:
            q.close()
