"""SWIM-style probing: a failure detector whose cost per peer stays flat as the mesh grows.

Heartbeats to every peer cost each peer N - 1 frames per interval in a quiet mesh. Here (after Das,
Gupta and Motivala, "SWIM", DSN 2002) each peer, once per interval, probes the one peer it has the
oldest news of (heard from, or probed, longest ago). The probed peer answers at once; any frame from
it counts. No answer within a quarter of ``timeout``: ``probe_helpers`` other peers are asked to
probe it too and relay its answer. No answer, direct or relayed, within ``timeout``: the prober
suspects it (:meth:`FailureDetector.suspect`) and, if that made it Unresponsive, tells every peer.
A peer told that it is suspected answers by broadcasting a heartbeat (SWIM's refutation, without
incarnation numbers: every frame from it already counts). A receiver believes a suspicion only if it
has not heard from the suspect itself within ``timeout``.

Pure and deterministic: the clock comes in as ``now``, randomness from the ``rng`` given, and what to
send comes out as :class:`Outgoing`. :class:`~warpmesh.liveness.runtime.Liveness` binds it to a mux
channel. Per peer and interval: one probe out, about one probe in, one answer each; helpers and
suspicions only when a peer stops answering.

Frames (on the heartbeat channel; ``PING`` and ``ASK`` are the runtime's): ``PROBE [beacon | None]``
(answer with a ``PING``), ``PROBE_REQ target`` (probe ``target`` for me), ``RELAYED target``
(``target`` answered the probe you asked for), ``SUSPECT target``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from warpmesh.liveness.core import FailureDetector, HeartbeatConfig

PROBE = 3
PROBE_REQ = 4
RELAYED = 5
SUSPECT = 6
#: Longest peer id accepted in a probe frame.
MAX_ID = 256


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A frame to send: ``to`` one peer, or every connected peer when ``None``."""

    to: str | None
    kind: int
    body: Any


class _Probe:
    __slots__ = ("helped", "relayed", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.helped = False  # helpers asked
        self.relayed = False  # a helper relayed an answer


class Prober:
    """Decides whom to probe, when to ask helpers, whom to suspect, and what to relay."""

    def __init__(self, self_id: str, config: HeartbeatConfig, rng: random.Random) -> None:
        self.self_id = self_id
        self.config = config
        self._rng = rng
        self._peers: set[str] = set()
        self._probed_at: dict[str, float] = {}
        self._inflight: dict[str, _Probe] = {}
        #: target -> {requester: until}: probes we run for others, answered when target speaks.
        self._relays: dict[str, dict[str, float]] = {}
        self._down_probe_at = float("-inf")  # the last probe of a peer we hold Unresponsive or Lost
        self._refuted_at = float("-inf")
        #: Counts: probes sent, helper requests sent, relays sent, suspicions raised (by us) and
        #: believed (from others), refutations, bad probe frames.
        self.stats: dict[str, int] = dict.fromkeys(
            ("probes", "helper_requests", "relayed", "suspected", "believed", "refuted", "bad_frames"), 0)

    # -- membership ------------------------------------------------------------------------
    def set_peers(self, peers: Iterable[str]) -> None:
        """The peers to watch (the roster without ourselves)."""
        self._peers = set(peers) - {self.self_id}
        for table in (self._probed_at, self._inflight, self._relays):
            for gone in [p for p in table if p not in self._peers]:
                del table[gone]

    def pause(self, seconds: float) -> None:
        """We were stalled: our probes' deadlines move with the stall (their answers may be unread)."""
        for probe in self._inflight.values():
            probe.started += seconds

    @property
    def relaying(self) -> bool:
        """Whether we probe someone on another peer's behalf (so inbound frames may need relaying)."""
        return bool(self._relays)

    @property
    def inflight(self) -> frozenset[str]:
        """Peers with a probe of ours awaiting an answer."""
        return frozenset(self._inflight)

    # -- the clock -------------------------------------------------------------------------
    def tick(self, now: float, detector: FailureDetector) -> tuple[list[Outgoing], list[str]]:
        """Advance to ``now``: the frames to send, and the peers whose probe failed (to suspect)."""
        cfg = self.config
        out: list[Outgoing] = []
        failed: list[str] = []
        for target, probe in sorted(self._inflight.items()):
            heard = detector.last_heard(target)
            if probe.relayed or (heard is not None and heard >= probe.started):
                del self._inflight[target]
                continue
            age = now - probe.started
            if age >= cfg.timeout:
                del self._inflight[target]
                failed.append(target)
            elif not probe.helped and age >= cfg.timeout / 4:
                probe.helped = True
                if (state := detector.state(target)) is not None and state.alive:
                    helpers = sorted(self._peers - {target})
                    for helper in self._rng.sample(helpers, min(cfg.probe_helpers, len(helpers))):
                        out.append(Outgoing(helper, PROBE_REQ, target))
                        self.stats["helper_requests"] += 1
        for target, requesters in list(self._relays.items()):
            for requester in [r for r, until in requesters.items() if until <= now]:
                del requesters[requester]
            if not requesters:
                del self._relays[target]
        out.extend(self._next_probes(now, detector))
        return out, failed

    def _next_probes(self, now: float, detector: FailureDetector) -> list[Outgoing]:
        # The alive peer we have the oldest news of, if older than an interval; and, at most once per
        # timeout, the down peer with the oldest news (so a healed partition is noticed even in a
        # quiet mesh, without spending a probe per interval on peers that cannot answer).
        cfg = self.config
        oldest_up: tuple[float, str] | None = None
        oldest_down: tuple[float, str] | None = None
        for peer in self._peers:
            if peer in self._inflight:
                continue
            heard = detector.last_heard(peer)
            news = max(float("-inf") if heard is None else heard, self._probed_at.get(peer, float("-inf")))
            state = detector.state(peer)
            key = (news, peer)
            if state is not None and state.alive:
                if oldest_up is None or key < oldest_up:
                    oldest_up = key
            elif oldest_down is None or key < oldest_down:
                oldest_down = key
        out: list[Outgoing] = []
        if oldest_up is not None and oldest_up[0] <= now - cfg.interval:
            out.append(self._probe(oldest_up[1], now))
        if oldest_down is not None and now - self._down_probe_at >= cfg.timeout:
            self._down_probe_at = now
            out.append(self._probe(oldest_down[1], now))
        return out

    def _probe(self, target: str, now: float) -> Outgoing:
        self._probed_at[target] = now
        self._inflight[target] = _Probe(now)
        self.stats["probes"] += 1
        return Outgoing(target, PROBE, None)

    # -- frames in -------------------------------------------------------------------------
    def heard(self, sender: str, now: float) -> list[Outgoing]:
        """Any frame from ``sender``: relay it to those who asked us to probe it."""
        requesters = self._relays.pop(sender, None)
        if not requesters:
            return []
        out = [Outgoing(r, RELAYED, sender) for r, until in sorted(requesters.items()) if until > now]
        self.stats["relayed"] += len(out)
        return out

    def on_probe_request(self, sender: str, target: Any, now: float, detector: FailureDetector) -> list[Outgoing]:
        """``sender`` asks us to probe ``target``."""
        if not self._valid(target) or target == self.self_id or target not in self._peers or sender == target:
            return []
        heard = detector.last_heard(target)
        if heard is not None and now - heard <= self.config.interval / 2:
            self.stats["relayed"] += 1
            return [Outgoing(sender, RELAYED, target)]  # heard it just now: no need to ask again
        requesters = self._relays.setdefault(target, {})
        first = not requesters
        requesters[sender] = now + self.config.timeout
        if not first:
            return []  # a probe for another requester is on its way; its answer serves both
        self.stats["probes"] += 1
        return [Outgoing(target, PROBE, None)]

    def on_relayed(self, target: Any) -> None:
        """A helper relays ``target``'s answer to our probe."""
        if not self._valid(target):
            return
        probe = self._inflight.get(target)
        if probe is not None:
            probe.relayed = True

    def on_suspect(self, target: Any, now: float) -> Literal["refute", "believe"] | None:
        """Another peer suspects ``target``: returns ``"refute"`` when it is us (broadcast a
        heartbeat now), ``"believe"`` when the caller should :meth:`FailureDetector.suspect` it."""
        if not self._valid(target):
            return None
        if target == self.self_id:
            if now - self._refuted_at < self.config.interval / 2:
                return None  # one refutation answers a burst of suspicions
            self._refuted_at = now
            self.stats["refuted"] += 1
            return "refute"
        return "believe" if target in self._peers else None

    def suspected(self, target: str) -> Outgoing:
        """The broadcast telling every peer that our probe of ``target`` failed."""
        self.stats["suspected"] += 1
        return Outgoing(None, SUSPECT, target)

    def _valid(self, target: Any) -> bool:
        if isinstance(target, str) and 0 < len(target) <= MAX_ID:
            return True
        self.stats["bad_frames"] += 1
        return False


__all__ = ["PROBE", "PROBE_REQ", "RELAYED", "SUSPECT", "Outgoing", "Prober"]
