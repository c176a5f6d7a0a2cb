"""Admission: which authenticated connection becomes a peer's link (a pure core).

After a peer proves the cluster secret (:class:`~warpmesh.net.handshake.AdmissionRequired`) the host
decides whether to admit the connection. A mesh keeps exactly one link per pair of processes, and
both ends of a race must reach the same answer without talking:

* a peer using our own id is ourselves (same incarnation) or a second live node with our id;
* an older incarnation than the linked one is stale;
* a live link to an older incarnation is probed first: a silent one is replaced, an answering one
  means two live nodes share an id;
* two links between the same two processes (simultaneous dials): the one dialled by the smaller id
  wins on both sides; a side that dialled twice gave up on its first link.

:func:`check_identity` and :func:`decide` are plain functions; the runtime
(:class:`~warpmesh.net.tcp.TcpMesh`) probes when told to, and closes or retires the old link.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from warpmesh.net.handshake import PeerInfo, Refusal


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refuse the new connection with ``code`` and a ``reason`` for the peer's operator."""

    code: Refusal
    reason: str


@dataclass(frozen=True, slots=True)
class ProbeOld:
    """Ping the old link first, then decide again with the probe's result."""


class OldLink(enum.Enum):
    """What becomes of the link already holding the peer's slot when the new one is admitted."""

    KEEP = "keep"  #: there is none (or it already went away)
    CLOSE_DEAD = "replaced_dead"  #: it did not answer a probe: close it now
    CLOSE_RESTARTED = "replaced_restarted"  #: not yet established, and its peer restarted: close it
    CLOSE_DUPLICATE = "duplicate_link"  #: not yet established, and it lost the race: close it
    RETIRE_NEWER = "newer"  #: the same side dialled again: flush it, say BYE, retire it
    RETIRE_LOST = "lost"  #: it lost the race (dialled by the larger id): flush it, say BYE, retire it


@dataclass(frozen=True, slots=True)
class Admit:
    """Admit the new connection, after doing ``old`` to the link it replaces."""

    old: OldLink = OldLink.KEEP


Decision = Refuse | ProbeOld | Admit


class Probe(enum.Enum):
    """The result of probing the old link (see :class:`ProbeOld`)."""

    NOT_YET = "not_yet"
    ANSWERED = "answered"
    SILENT = "silent"
    GONE = "gone"  #: it answered, but left the slot while we waited


@dataclass(frozen=True, slots=True)
class Existing:
    """The link already in the peer's slot, as admission sees it."""

    incarnation: int
    established: bool
    #: The id of the side that dialled it.
    initiator: str


def check_identity(self_id: str, incarnation: int, peer: PeerInfo) -> Refuse | None:
    """Refuse a peer that uses our own id: ourselves (same incarnation) or a duplicate node."""
    if peer.node_id != self_id:
        return None
    if peer.incarnation == incarnation:
        return Refuse(Refusal.SELF, f"{self_id} connected to itself")
    return Refuse(Refusal.DUPLICATE_ID, (
        f"node id {peer.node_id!r} is already in use by a live node (incarnations {peer.incarnation} and "
        f"{incarnation}); give every node a unique --id"))


def decide(self_id: str, peer: PeerInfo, *, initiator: str, old: Existing | None, dialing: bool,
           probe: Probe = Probe.NOT_YET) -> Decision:
    """Admit, refuse, or probe first: the policy for a new connection to ``peer`` (not our own id).

    ``initiator`` is the id of the side that dialled the new connection, ``old`` the other
    connection holding the peer's slot (if any), ``dialing`` whether we are dialling the peer
    ourselves right now.
    """
    pid = peer.node_id
    if old is None:
        if initiator == pid and self_id < pid and dialing:
            return Refuse(Refusal.DUPLICATE_LINK,
                          f"{self_id} is dialling {pid} itself; the link dialled by {self_id} wins")
        return Admit()
    if peer.incarnation < old.incarnation:
        return Refuse(Refusal.STALE_INCARNATION, (
            f"{pid!r} incarnation {peer.incarnation} is older than the connected incarnation {old.incarnation}"))
    if old.established:
        if probe is Probe.NOT_YET:
            return ProbeOld()
        if probe is Probe.SILENT:
            return Admit(OldLink.CLOSE_DEAD)
        if probe is Probe.GONE:
            return Admit()
    if peer.incarnation > old.incarnation:
        if not old.established:
            return Admit(OldLink.CLOSE_RESTARTED)
        return Refuse(Refusal.DUPLICATE_ID, (
            f"node id {pid!r} is already connected (incarnation {old.incarnation}) and answers pings; two "
            f"live nodes share the id {pid!r}: give every node a unique --id"))
    # Same process, two connections (simultaneous dials). Keep the one dialled by the smaller id;
    # if both were dialled by the same side, it gave up on the old one: keep the new one.
    preferred = min(self_id, pid)
    if initiator == old.initiator and old.established:
        return Admit(OldLink.RETIRE_NEWER)
    if initiator == preferred and old.initiator != preferred:
        return Admit(OldLink.RETIRE_LOST if old.established else OldLink.CLOSE_DUPLICATE)
    return Refuse(Refusal.DUPLICATE_LINK,
                  f"{self_id} already has a link to {pid}; the link dialled by {old.initiator} is kept")


__all__ = ["Admit", "Decision", "Existing", "OldLink", "Probe", "ProbeOld", "Refuse", "check_identity", "decide"]
