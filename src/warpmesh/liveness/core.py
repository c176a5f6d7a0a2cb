"""Pure heartbeat failure detector: inbound frames and the clock in, state transitions out.

Per peer::

    Healthy --(silent > timeout)--> Unresponsive --(silent > lost_after)--> Lost
       ^                                 |                                   |
       |                              (heard)                             (heard)
       |                                 v                                   |
       +---(heard throughout a further timeout)--- Recovered <---------------+

``Recovered`` counts as alive (the peer is back); it settles to ``Healthy`` once the peer has kept
talking for a whole ``timeout``, and falls back to ``Unresponsive`` if it goes silent again. The
reference stops a detector after ``Lost`` and so never readmits the peer; here ``Lost`` is just a
state, and the next frame from the peer brings it back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class PeerHealth(enum.Enum):
    """Health of one peer as seen by this node."""

    HEALTHY = "healthy"
    UNRESPONSIVE = "unresponsive"
    RECOVERED = "recovered"
    LOST = "lost"

    @property
    def alive(self) -> bool:
        """Whether work should be routed to a peer in this state."""
        return self in (PeerHealth.HEALTHY, PeerHealth.RECOVERED)


@dataclass(frozen=True, slots=True)
class HeartbeatConfig:
    """Detector timing, in seconds.

    The defaults suit a LAN: a heartbeat every 0.5 s, a peer is Unresponsive after 2 s of silence
    (four missed beats, so one lost packet never trips it) and Lost after 30 s.
    """

    interval: float = 0.5
    timeout: float = 2.0
    lost_after: float = 30.0
    #: Skip the heartbeat to a peer that received another frame from us in the last half interval
    #: (any frame is a sign of life): a busy mesh then sends almost no heartbeats, and a peer's
    #: heartbeat traffic stops growing with the mesh while work flows. (It was opt-in while a
    #: seeded steal test changed outcome with it; that test's lossy-link scenario, rerun over 40
    #: seeds with it on, never ran a task twice and always stole.)
    quiet_when_busy: bool = True
    #: SWIM-style probing instead of heartbeats to every peer (:mod:`warpmesh.liveness.probe`): each
    #: interval a node probes the one peer it has the oldest news of, asks ``probe_helpers`` others
    #: to probe it too when it does not answer within a quarter of ``timeout``, and suspects it (and
    #: says so to every peer) when no answer, direct or relayed, came within ``timeout``. A quiet
    #: mesh then costs each peer about two frames per interval however many peers it has, where
    #: heartbeats cost N - 1. Silence alone no longer makes a peer Unresponsive in this mode.
    probe: bool = True
    #: Peers asked to probe an unanswering peer on our behalf (SWIM's k).
    probe_helpers: int = 3

    def __post_init__(self) -> None:
        if self.probe_helpers < 0:
            raise ValueError(f"probe_helpers must be >= 0, not {self.probe_helpers}")
        if not 0 < self.interval < self.timeout:
            raise ValueError(f"need 0 < interval ({self.interval}) < timeout ({self.timeout})")
        if self.lost_after <= self.timeout:
            raise ValueError(f"lost_after ({self.lost_after}) must exceed timeout ({self.timeout})")


@dataclass(frozen=True, slots=True)
class LivenessEvent:
    """A peer changed state at time ``at``."""

    peer: str
    old: PeerHealth | None
    new: PeerHealth
    at: float


class _Peer:
    __slots__ = ("last_heard", "since", "state")

    def __init__(self, now: float) -> None:
        self.state = PeerHealth.HEALTHY
        self.last_heard = now
        self.since = now  # when the current state began


class FailureDetector:
    """Tracks the health of a set of peers. All times are ``now`` arguments; no clock is read."""

    def __init__(self, config: HeartbeatConfig | None = None) -> None:
        self.config = config or HeartbeatConfig()
        self._peers: dict[str, _Peer] = {}

    def track(self, peer: str, now: float) -> LivenessEvent | None:
        """Start watching ``peer`` (given the benefit of the doubt: Healthy until silent)."""
        if peer in self._peers:
            return None
        self._peers[peer] = _Peer(now)
        return LivenessEvent(peer, None, PeerHealth.HEALTHY, now)

    def untrack(self, peer: str) -> None:
        """Forget ``peer`` (it left the roster)."""
        self._peers.pop(peer, None)

    def tracked(self) -> list[str]:
        return sorted(self._peers)

    def state(self, peer: str) -> PeerHealth | None:
        p = self._peers.get(peer)
        return None if p is None else p.state

    def states(self) -> dict[str, PeerHealth]:
        return {peer: p.state for peer, p in sorted(self._peers.items())}

    def alive(self) -> frozenset[str]:
        return frozenset(peer for peer, p in self._peers.items() if p.state.alive)

    def last_heard(self, peer: str) -> float | None:
        p = self._peers.get(peer)
        return None if p is None else p.last_heard

    def heard(self, peer: str, now: float) -> LivenessEvent | None:
        """Record a sign of life from ``peer``; returns the transition it caused, if any."""
        p = self._peers.get(peer)
        if p is None:
            return None
        p.last_heard = max(p.last_heard, now)
        if p.state in (PeerHealth.UNRESPONSIVE, PeerHealth.LOST):
            return self._move(peer, p, PeerHealth.RECOVERED, now)
        return None

    def suspect(self, peer: str, now: float) -> LivenessEvent | None:
        """``peer`` did not answer a probe (ours, or another peer's rumour): Unresponsive, unless
        we heard from it ourselves within ``timeout`` (our own link to it is then evidence enough)."""
        p = self._peers.get(peer)
        if p is None or not p.state.alive or now - p.last_heard <= self.config.timeout:
            return None
        return self._move(peer, p, PeerHealth.UNRESPONSIVE, now)

    def pause(self, seconds: float) -> None:
        """This node itself was stalled for ``seconds`` (GC, a long task, a suspended VM).

        Peers' frames may be sitting unread in our own buffers, so the stall is not counted against
        them: their silence clocks are moved forward by the pause (never past their real state).
        """
        if seconds <= 0:
            return
        for p in self._peers.values():
            p.last_heard += seconds

    def tick(self, now: float) -> list[LivenessEvent]:
        """Apply timeouts; returns transitions in peer order."""
        if self.config.probe:
            return self._tick_probing(now)
        cfg = self.config
        events: list[LivenessEvent] = []
        for peer, p in sorted(self._peers.items()):
            silent = now - p.last_heard
            if p.state in (PeerHealth.HEALTHY, PeerHealth.RECOVERED) and silent > cfg.timeout:
                events.append(self._move(peer, p, PeerHealth.UNRESPONSIVE, now))
            elif p.state is PeerHealth.UNRESPONSIVE and silent > cfg.lost_after:
                events.append(self._move(peer, p, PeerHealth.LOST, now))
            elif p.state is PeerHealth.RECOVERED and now - p.since >= cfg.timeout:
                events.append(self._move(peer, p, PeerHealth.HEALTHY, now))
        return events

    def _tick_probing(self, now: float) -> list[LivenessEvent]:
        # Probe mode: silence is no evidence (a quiet peer is heard from about once per N intervals);
        # only suspicions make a peer Unresponsive (:meth:`suspect`). An Unresponsive peer unheard
        # for a further ``lost_after - timeout`` is Lost, as it would be after silence.
        cfg = self.config
        events: list[LivenessEvent] = []
        for peer, p in sorted(self._peers.items()):
            if p.state is PeerHealth.UNRESPONSIVE and now - max(p.since, p.last_heard) > cfg.lost_after - cfg.timeout:
                events.append(self._move(peer, p, PeerHealth.LOST, now))
            elif p.state is PeerHealth.RECOVERED and now - p.since >= cfg.timeout:
                events.append(self._move(peer, p, PeerHealth.HEALTHY, now))
        return events

    def next_deadline(self, now: float) -> float | None:
        """The earliest time at which :meth:`tick` could change something (for timer scheduling)."""
        cfg = self.config
        best: float | None = None
        for p in self._peers.values():
            if cfg.probe:
                if p.state is PeerHealth.RECOVERED:
                    t = p.since + cfg.timeout
                elif p.state is PeerHealth.UNRESPONSIVE:
                    t = max(p.since, p.last_heard) + cfg.lost_after - cfg.timeout
                else:
                    continue
            elif p.state in (PeerHealth.HEALTHY, PeerHealth.RECOVERED):
                t = p.last_heard + cfg.timeout
                if p.state is PeerHealth.RECOVERED:
                    t = min(t, p.since + cfg.timeout)
            elif p.state is PeerHealth.UNRESPONSIVE:
                t = p.last_heard + cfg.lost_after
            else:
                continue
            best = t if best is None else min(best, t)
        return best

    @staticmethod
    def _move(peer: str, p: _Peer, new: PeerHealth, now: float) -> LivenessEvent:
        old, p.state, p.since = p.state, new, now
        return LivenessEvent(peer, old, new, now)
