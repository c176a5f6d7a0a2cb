"""Lobby presence, pure part: what each peer announced and what follows from it.

Every peer writes its own slot of a replicated map (an ``ORMap`` of LWW registers on the Quilter,
see :mod:`warpmesh.game.session`); the leader also writes the :data:`ADMISSION` slot. Slot values:

* ``host`` - this peer bootstrapped the game; ``present`` - a joiner waiting for a seat;
  ``witness`` - a joiner that only votes; ``spectate`` - wants to watch; ``vacate`` - left for good;
  ``done`` - saw the game end and may go.
* :data:`ADMISSION` - ``[players_open, spectators_open, seated]`` published by the current leader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

HOST = "host"
PRESENT = "present"
WITNESS = "witness"
SPECTATE = "spectate"
VACATE = "vacate"
DONE = "done"
#: The slot the leader publishes admission state in (not a peer id: peer ids never start with '@').
ADMISSION = "@admission"
STATUSES = frozenset({HOST, PRESENT, WITNESS, SPECTATE, VACATE, DONE})


@dataclass(frozen=True, slots=True)
class Admission:
    """What the leader last published about admission."""

    players_open: bool = True
    spectators_open: bool = False
    seated: tuple[str, ...] = ()

    @staticmethod
    def decode(obj: object) -> Admission | None:
        if not isinstance(obj, list | tuple) or len(obj) != 3:
            return None
        a, b, seated = obj
        if not isinstance(seated, list | tuple):
            return None
        return Admission(bool(a), bool(b), tuple(str(s) for s in seated))

    def encode(self) -> tuple[object, ...]:
        return (self.players_open, self.spectators_open, tuple(self.seated))


def hosts(slots: Mapping[str, object]) -> list[str]:
    """Peers that declared themselves host, lowest id first."""
    return sorted(p for p, v in slots.items() if v == HOST and not p.startswith("@"))


def duplicate_host_winner(self_id: str, slots: Mapping[str, object]) -> str | None:
    """If another declared host outranks ``self_id`` (lower id wins), its id; else None."""
    declared = hosts(slots)
    if declared and declared[0] != self_id:
        return declared[0]
    return None


def with_status(slots: Mapping[str, object], status: str, among: Iterable[str] | None = None) -> list[str]:
    """Peers whose slot says ``status`` (restricted to ``among`` if given), sorted."""
    allowed = None if among is None else set(among)
    return sorted(p for p, v in slots.items()
                  if v == status and not p.startswith("@") and (allowed is None or p in allowed))


def admission(slots: Mapping[str, object]) -> Admission | None:
    return Admission.decode(slots.get(ADMISSION))
