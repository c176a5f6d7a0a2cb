"""Roster gossip as plain functions: what a ROSTER frame says, and what a peer does with it (a pure core).

A peer of a TCP mesh sends its live links (and itself) to a peer it links with, and to a peer whose
periodic :func:`roster_digest` differs from its own; a receiver dials the peers it did not know. :func:`parse_roster` checks a frame body entry by entry, and
:func:`merge_roster` decides, for each valid entry, whether it names a peer already linked
(:attr:`Action.SEEN`), one to dial (:attr:`Action.LEARN`) or one that may not be dialled without a
cluster secret (:attr:`Action.BLOCKED`). The runtime (:class:`~warpmesh.net.tcp.TcpMesh`) carries the verdicts out.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from warpmesh.net.address import WILDCARDS, is_loopback
from warpmesh.net.handshake import Address

#: Entries accepted in one ROSTER frame (a larger mesh needs a different membership design anyway).
MAX_ROSTER = 4096
#: Longest node id in an entry, in characters (the handshake caps ids at 255 UTF-8 bytes).
_MAX_ID = 255


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """One live peer as gossip names it: id, incarnation and the address to dial it at."""

    peer: str
    incarnation: int
    address: Address


def encode_roster(entries: Iterable[RosterEntry]) -> dict[str, Any]:
    """The body of a ROSTER frame: ``{"peers": [[id, incarnation, host, port], ...]}``."""
    return {"peers": [[e.peer, e.incarnation, e.address[0], e.address[1]] for e in entries]}


def roster_digest(entries: Iterable[RosterEntry]) -> bytes:
    """16 bytes naming a set of entries, whatever their order (two peers that list the same live
    peers at the same incarnations and addresses have the same digest)."""
    h = hashlib.blake2b(digest_size=16)
    for e in sorted(entries, key=lambda e: (e.peer, e.incarnation, e.address)):
        h.update(f"{e.peer}\x00{e.incarnation}\x00{e.address[0]}\x00{e.address[1]}\n".encode())
    return h.digest()


def _valid(e: Any) -> bool:
    return (isinstance(e, list) and len(e) == 4 and isinstance(e[0], str) and 0 < len(e[0]) <= _MAX_ID
            and type(e[1]) is int and e[1] >= 0 and isinstance(e[2], str) and type(e[3]) is int
            and 0 < e[3] <= 0xFFFF)


def parse_roster(body: Any) -> tuple[list[RosterEntry], int] | None:
    """The valid entries of a ROSTER body and how many entries were malformed.

    ``None`` when the body as a whole is unusable (not ``{"peers": [...]}``, or more than
    :data:`MAX_ROSTER` entries): the runtime counts that frame once and ignores it.
    """
    entries = body.get("peers") if isinstance(body, dict) else None
    if not isinstance(entries, list) or len(entries) > MAX_ROSTER:
        return None
    good = [RosterEntry(e[0], e[1], (e[2], e[3])) for e in entries if _valid(e)]
    return good, len(entries) - len(good)


class Action(enum.Enum):
    """What to do with one gossiped entry."""

    #: The peer is linked at this incarnation or a newer one: it is alive, refresh its addresses.
    SEEN = "seen"
    #: Dial it (unknown, or announced with a newer incarnation than the one linked).
    LEARN = "learn"
    #: Not on loopback and there is no cluster secret: never dial it (warn once).
    BLOCKED = "blocked"


class RosterVerdict(NamedTuple):
    """The :class:`Action` for one gossiped entry."""

    action: Action
    entry: RosterEntry


def merge_roster(entries: Iterable[RosterEntry], *, self_id: str, sender: str, linked: Mapping[str, int],
                 has_secret: bool) -> list[RosterVerdict]:
    """What to do with each gossiped entry, in order.

    ``linked`` maps each peer holding a link slot to that link's incarnation. Entries naming us or the
    sender (known from its own handshake) and wildcard hosts (the sender should have resolved them; we
    do not guess) yield nothing.
    """
    out: list[RosterVerdict] = []
    for e in entries:
        pid = e.peer
        if pid in (self_id, sender) or e.address[0] in WILDCARDS:
            continue
        if not has_secret and not is_loopback(e.address[0]):
            out.append(RosterVerdict(Action.BLOCKED, e))
            continue
        inc = linked.get(pid)
        out.append(RosterVerdict(Action.SEEN if inc is not None and inc >= e.incarnation else Action.LEARN, e))
    return out


__all__ = [
    "MAX_ROSTER",
    "Action",
    "RosterEntry",
    "RosterVerdict",
    "encode_roster",
    "merge_roster",
    "parse_roster",
    "roster_digest",
]
