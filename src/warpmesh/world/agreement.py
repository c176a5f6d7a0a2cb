"""Hash agreement (pure): which peer computed what for each tick, decided from the Raft log alone.

Every replica feeds the same ``REPORT``/``RESTORED`` entries in the same log order into an
:class:`Agreement`, so every replica reaches the same verdicts at the same log index without another
message. For each tick the *majority* is the (commit, state root, patch digest) triple reported by a
quorum of the voting members (more than half). A report that differs from the majority declares its
peer **diverged** at that tick (with the hash parts that differ); a diverged peer's further reports are
ignored until it announces ``RESTORED`` (it loaded a majority snapshot), after which its first report
that matches the majority marks it **repaired**. Every divergence is counted, never silently healed.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Agreement", "Event", "Hashes", "PeerState"]

#: An undecided tick stops holding back a peer's later verdicts once a tick this much newer is decided.
SLACK = 8
#: Ticks of reports kept after their majority is known (late reports of older ticks are dropped).
WINDOW = 256


@dataclass(frozen=True, slots=True)
class Hashes:
    """What one peer computed for one committed tick."""

    commit: bytes
    state_root: bytes
    patch_digest: bytes

    def differing(self, other: Hashes) -> tuple[str, ...]:
        """Names of the parts that differ from ``other``."""
        return tuple(n for n in ("commit", "state_root", "patch_digest") if getattr(self, n) != getattr(other, n))


@dataclass(frozen=True, slots=True)
class Event:
    """``diverged`` (with ``parts``), ``repaired``: decided at log position, identical on every replica."""

    kind: str
    peer: str
    tick: int
    parts: tuple[str, ...] = ()


@dataclass(slots=True)
class PeerState:
    status: str = "ok"  # ok | diverged | repairing
    since: int = 0  # tick it diverged at, or tick it restored to
    last_tick: int = 0  # newest tick it reported
    restored: int = -1  # newest tick it restored to (its reports up to there are stale)
    queue: list[int] = field(default_factory=list)  # its reported ticks not judged yet, ascending


@dataclass
class Agreement:
    """See the module docstring. ``members`` are the voting peers that define the majority."""

    members: frozenset[str]
    reports: dict[int, dict[str, Hashes]] = field(default_factory=dict)
    majority: dict[int, Hashes] = field(default_factory=dict)
    peers: dict[str, PeerState] = field(default_factory=dict)
    detected: int = 0
    repaired: int = 0

    @classmethod
    def of(cls, members: Iterable[str]) -> Agreement:
        return cls(frozenset(members))

    @property
    def quorum(self) -> int:
        return len(self.members) // 2 + 1

    def peer(self, peer: str) -> PeerState:
        st = self.peers.get(peer)
        if st is None:
            st = self.peers[peer] = PeerState()
        return st

    def standing(self) -> dict[str, list[int | str]]:
        """Every peer's status (and the counters), to carry in a snapshot."""
        out: dict[str, list[int | str]] = {p: [s.status, s.since, s.last_tick, s.restored]
                                           for p, s in sorted(self.peers.items())}
        out[""] = [self.detected, self.repaired]
        return out

    def load_standing(self, standing: dict[str, list[int | str]]) -> None:
        """Continue from a snapshot's :meth:`standing` (reports and majorities start empty)."""
        self.reports.clear()
        self.majority.clear()
        self.peers = {}
        for p, v in standing.items():
            if p == "":
                self.detected, self.repaired = int(v[0]), int(v[1])
            elif len(v) == 4 and v[0] in ("ok", "diverged", "repairing"):
                self.peers[p] = PeerState(str(v[0]), int(v[1]), int(v[2]), int(v[3]))

    def decided(self, tick: int) -> Hashes | None:
        """The majority's hashes for ``tick``, once a quorum agreed."""
        return self.majority.get(tick)

    def reporters(self, tick: int) -> set[str]:
        return set(self.reports.get(tick, ()))

    def report(self, peer: str, tick: int, hashes: Hashes) -> list[Event]:
        """Feed one REPORT entry; returns the events it decides.

        A peer's reports are judged in tick order: a report whose majority is known waits while the
        same peer's report of an earlier tick is undecided, so a divergence is always declared at the
        first tick that differs, even if later ticks reach their majority first. An earlier tick that
        stays undecided while a tick ``SLACK`` later is decided (its voters died) is skipped.
        """
        st = self.peer(peer)
        if st.status == "diverged" or tick <= st.restored:
            return []  # known bad, or computed before its restore
        known = self.majority.get(tick)
        if known is None and self.majority and tick < max(self.majority) - WINDOW:
            return []  # older than the window
        bucket = self.reports.setdefault(tick, {})
        if peer in bucket and st.status == "ok":
            return []  # a replay re-reporting a tick it already reported
        bucket[peer] = hashes
        st.last_tick = max(st.last_tick, tick)
        if tick not in st.queue:
            insort(st.queue, tick)
        if known is None:
            votes: dict[Hashes, int] = {}
            for p, h in bucket.items():
                if p in self.members:
                    votes[h] = votes.get(h, 0) + 1
            winner = next((h for h, n in votes.items() if n >= self.quorum), None)
            if winner is None:
                return []
            self.majority[tick] = winner
            self._prune(tick)
            events: list[Event] = []
            for p in sorted(self.peers):
                events += self._drain(p)
            return events
        return self._drain(peer)

    def _drain(self, peer: str) -> list[Event]:
        st = self.peers[peer]
        events: list[Event] = []
        newest = max(self.majority, default=0)
        while st.queue and st.status != "diverged":
            t = st.queue[0]
            maj = self.majority.get(t)
            if maj is None and newest < t + SLACK:
                break
            st.queue.pop(0)
            h = self.reports.get(t, {}).get(peer)
            if maj is not None and h is not None:
                events += self._judge(peer, t, h, maj)
        if st.status == "diverged":
            st.queue.clear()
        return events

    def restored(self, peer: str, tick: int) -> list[Event]:
        """Feed one RESTORED entry: ``peer`` now holds the majority's state of ``tick``."""
        st = self.peer(peer)
        st.restored = max(st.restored, tick)
        st.queue = [t for t in st.queue if t > tick]
        if st.status == "diverged":
            st.status, st.since = "repairing", tick
        return []

    def _judge(self, peer: str, tick: int, h: Hashes, maj: Hashes) -> list[Event]:
        st = self.peer(peer)
        if h == maj:
            if st.status == "repairing" and tick > st.since:
                st.status, st.since = "ok", tick
                self.repaired += 1
                return [Event("repaired", peer, tick)]
            return []
        if st.status == "diverged":
            return []
        st.status, st.since = "diverged", tick
        self.detected += 1
        return [Event("diverged", peer, tick, h.differing(maj))]

    def _prune(self, tick: int) -> None:
        floor = tick - WINDOW
        if floor <= 0 or min(self.majority) > floor:
            return
        for t in [t for t in self.majority if t < floor]:
            del self.majority[t]
        for t in [t for t in self.reports if t < floor]:
            del self.reports[t]
