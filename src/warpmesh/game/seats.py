"""Seats, pure part: who plays, in which order, and what the leader should change next.

:class:`SeatBook` is the replicated record of seats. It is driven only by committed system records
(``["seat", peer, role]`` and ``["unseat", peer, reason]``), so every peer holds the same book at the
same log position, and it travels inside TurnSequencer snapshots (seats survive compaction).

:func:`plan` is the leader's decision procedure: given the Raft membership, the seat book, presence
and liveness, it returns the one next step (a membership change, a seat record to commit, or a
pause with its reason). The runtime carries it out and asks again; because the plan is recomputed
from replicated state every time, a leader that crashes halfway leaves nothing a successor cannot
finish.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PLAYER = "player"
WITNESS = "witness"
#: Reasons of an unseat record.
LOST = "lost"
LEFT = "left"


def _policy(obj: Any) -> list[Any]:
    target, witness, allow, max_spect = obj
    if type(target) is not int or target < 1 or type(max_spect) is not int or max_spect < 0:
        raise ValueError(f"bad policy {obj!r}")
    return [target, bool(witness), bool(allow), max_spect]


class SeatBook:
    """Seated players in admission order, witnesses, and everyone who lost a seat."""

    __slots__ = ("gone", "players", "policy", "witnesses")

    def __init__(self, obj: Any = None) -> None:
        self.players: list[str] = []
        self.witnesses: list[str] = []
        self.gone: list[tuple[str, str]] = []
        #: ``[target_players, want_witness, allow_spectators, max_spectators]`` as the host set it
        #: (replicated, so whichever peer leads later runs the steward with the same policy).
        self.policy: list[Any] | None = None
        if obj is not None:
            try:
                players, witnesses, gone, policy = obj
                self.players = [str(p) for p in players]
                self.witnesses = [str(w) for w in witnesses]
                self.gone = [(str(p), str(r)) for p, r in gone]
                self.policy = _policy(policy) if policy is not None else None
            except (TypeError, ValueError) as err:
                raise ValueError(f"malformed seat book: {err}") from err

    def apply(self, record: Any) -> None:
        """Apply a committed record; malformed or redundant records change nothing."""
        if not isinstance(record, list | tuple) or len(record) != 3:
            return
        op, peer, arg = record
        if not isinstance(peer, str):
            return
        if op == "policy" and self.policy is None:
            try:
                self.policy = _policy(arg)
            except (TypeError, ValueError):
                return
        elif op == "seat" and peer not in self.players and peer not in self.witnesses:
            (self.witnesses if arg == WITNESS else self.players).append(peer)
        elif op == "unseat" and (peer in self.players or peer in self.witnesses):
            if peer in self.players:
                self.players.remove(peer)
            else:
                self.witnesses.remove(peer)
            self.gone.append((peer, str(arg)))

    def to_obj(self) -> list[Any]:
        return [list(self.players), list(self.witnesses), [list(g) for g in self.gone], self.policy]

    @property
    def seated(self) -> tuple[str, ...]:
        return tuple(self.players) + tuple(self.witnesses)

    def __repr__(self) -> str:
        return f"SeatBook(players={self.players}, witnesses={self.witnesses}, gone={self.gone})"


@dataclass(frozen=True, slots=True)
class SeatView:
    """What the leader knows when it plans (all sets are peer ids)."""

    self_id: str
    voters: frozenset[str]
    learners: frozenset[str]
    #: A configuration change is in flight (joint or uncommitted): wait.
    changing: bool
    players: tuple[str, ...]
    witnesses: tuple[str, ...]
    #: Peers announcing ``present`` / ``witness`` / ``spectate`` that are currently connected.
    joiners: tuple[str, ...] = ()
    witness_joiners: tuple[str, ...] = ()
    spectators_waiting: tuple[str, ...] = ()
    #: Members whose liveness says Lost, or who announced ``vacate``.
    lost: frozenset[str] = frozenset()
    vacated: frozenset[str] = frozenset()
    target_players: int = 2
    want_witness: bool = False
    allow_spectators: bool = False
    max_spectators: int = 0
    #: Admission of new players stays open after the game started (seat replacement).
    replace_seats: bool = True


@dataclass(frozen=True, slots=True)
class ChangeMembership:
    voters: frozenset[str]
    learners: frozenset[str]
    reason: str


@dataclass(frozen=True, slots=True)
class ProposeSeat:
    peer: str
    role: str

    def record(self) -> list[str]:
        return ["seat", self.peer, self.role]


@dataclass(frozen=True, slots=True)
class ProposeUnseat:
    peer: str
    reason: str

    def record(self) -> list[str]:
        return ["unseat", self.peer, self.reason]


@dataclass(frozen=True, slots=True)
class Pause:
    """Nothing can be done safely; ``reason`` says why (shown to users)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Idle:
    pass


Step = ChangeMembership | ProposeSeat | ProposeUnseat | Pause | Idle


def _first(candidates: Iterable[str], exclude: Iterable[str]) -> str | None:
    ex = set(exclude)
    for c in sorted(candidates):
        if c not in ex:
            return c
    return None


def plan(v: SeatView) -> Step:
    """The leader's next step (see the module docstring). Order: reconcile the seat book with the
    committed membership, then evict lost or departed members, then admit."""
    if v.changing:
        return Idle()
    seated = set(v.players) | set(v.witnesses)
    departed = (v.lost | v.vacated) - {v.self_id}
    # 1. Seat records follow membership (a crashed leader may have changed one but not the other).
    for peer in sorted(v.voters - seated):
        if peer in departed:
            break  # evict first; the seat record would be undone at once
        role = WITNESS if peer in v.witness_joiners else PLAYER
        return ProposeSeat(peer, role)
    for peer in [*v.players, *v.witnesses]:
        if peer not in v.voters:
            return ProposeUnseat(peer, LEFT if peer in v.vacated else LOST)
    # 2. Evict departed voters, if the rest can still commit the change.
    gone_voters = v.voters & departed
    if gone_voters:
        keep = v.voters - gone_voters
        # Joint consensus needs a majority of the old voters to accept the change; a voter that
        # left gracefully is still running and still votes, only a lost one does not.
        reachable = v.voters - (gone_voters & v.lost)
        if not keep or len(reachable) <= len(v.voters) // 2:
            names = ", ".join(sorted(gone_voters))
            return Pause(f"waiting for {names} to come back: {len(keep)} of {len(v.voters)} voters "
                         f"cannot commit anything (a two-player game needs a witness to survive a loss; "
                         f"host with --witness)")
        return ChangeMembership(keep, v.learners - departed, f"evict {', '.join(sorted(gone_voters))}")
    gone_learners = v.learners & departed
    if gone_learners:
        return ChangeMembership(v.voters, v.learners - gone_learners,
                                f"drop spectator(s) {', '.join(sorted(gone_learners))}")
    # 3. Admit: players up to the target, then a witness, then spectators.
    players = [p for p in v.players if p in v.voters]
    if len(players) < v.target_players:
        # A joiner may already be a learner (a promotion that timed out catching up): retry it.
        j = _first(v.joiners, v.voters | departed)
        if j is not None:
            return ChangeMembership(v.voters | {j}, v.learners - {j}, f"admit player {j}")
    if v.want_witness and not [w for w in v.witnesses if w in v.voters]:
        w = _first(v.witness_joiners, v.voters | departed)
        if w is not None:
            return ChangeMembership(v.voters | {w}, v.learners - {w}, f"admit witness {w}")
    if v.allow_spectators:
        # Joiners on their way to a seat are learners too; they are not spectators.
        spectators = v.learners - v.voters - set(v.joiners) - set(v.witness_joiners)
        if len(spectators) < v.max_spectators:
            s = _first(v.spectators_waiting, v.voters | v.learners | departed)
            if s is not None:
                return ChangeMembership(v.voters, v.learners | {s}, f"admit spectator {s}")
    return Idle()
