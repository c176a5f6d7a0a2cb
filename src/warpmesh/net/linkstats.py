"""Counters of a TCP mesh and of each peer's links (a pure core: plain data the runtime updates)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from warpmesh.wire.frame import FrameStats


@dataclass(slots=True)
class PeerStats:
    """Counters of one peer's links (summed over reconnections)."""

    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    #: Links established with this peer; every one after the first is a reconnect.
    links: int = 0
    #: DATA frames accepted by ``send_to`` but still queued when the link died.
    frames_lost: int = 0
    #: Broadcasts not sent to this peer because they exceed the frame limit it advertised.
    oversize_skipped: int = 0
    #: Frames refused on this peer's links, by reason (see :class:`~warpmesh.wire.frame.FrameError`).
    frames: FrameStats = field(default_factory=FrameStats)

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON-ready data."""
        return {"frames_in": self.frames_in, "bytes_in": self.bytes_in, "frames_out": self.frames_out,
                "bytes_out": self.bytes_out, "links": self.links, "frames_lost": self.frames_lost,
                "oversize_skipped": self.oversize_skipped,
                "frames_refused": dict(self.frames.refused)}


@dataclass(slots=True)
class MeshStats:
    """Observability counters of a :class:`TcpMesh`."""

    peers: dict[str, PeerStats] = field(default_factory=dict)
    #: Handshakes we refused, by code (bad_secret, version, duplicate_id, ...).
    refused_by_us: Counter[str] = field(default_factory=Counter)
    #: Handshakes the other side refused, by code.
    refused_by_peer: Counter[str] = field(default_factory=Counter)
    #: Refusals (by either side) on links this mesh dialled, by code. A client reads this, not
    #: :attr:`refusals`: an inbound stranger refused on its listening port (a stale peer redialling
    #: an address that is now ours) says nothing about the peer it asked for.
    refused_dialling: Counter[str] = field(default_factory=Counter)
    #: Frames refused before the peer was authenticated, by reason.
    handshake_frames: FrameStats = field(default_factory=FrameStats)
    #: Links closed, by reason (eof, reset, keepalive_timeout, oversize_frame, replaced, ...).
    links_closed: Counter[str] = field(default_factory=Counter)
    dials: int = 0
    dial_failures: int = 0
    accepted: int = 0
    #: Bytes of the control frames we sent, by kind (ping, pong, roster, roster_digest): the mesh's
    #: own upkeep, apart from the DATA its users send.
    control_bytes_out: Counter[str] = field(default_factory=Counter)

    def peer(self, peer: str) -> PeerStats:
        """The counters of ``peer``'s links, created on first use."""
        ps = self.peers.get(peer)
        if ps is None:
            ps = self.peers[peer] = PeerStats()
        return ps

    @property
    def reconnects(self) -> int:
        """Links established to a peer that had a link before."""
        return sum(max(0, p.links - 1) for p in self.peers.values())

    @property
    def refusals(self) -> Counter[str]:
        """All handshake refusals (ours and the peers'), by code."""
        return self.refused_by_us + self.refused_by_peer

    @property
    def frames_refused(self) -> Counter[str]:
        """Every refused frame, by reason, over all connections."""
        total = Counter(self.handshake_frames.refused)
        for p in self.peers.values():
            total.update(p.frames.refused)
        return total

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON-ready data (the ``stats`` of ``--json`` outputs)."""
        return {
            "peers": {k: v.as_dict() for k, v in sorted(self.peers.items())},
            "refused_by_us": dict(self.refused_by_us),
            "refused_by_peer": dict(self.refused_by_peer),
            "refused_dialling": dict(self.refused_dialling),
            "frames_refused": dict(self.frames_refused),
            "links_closed": dict(self.links_closed),
            "reconnects": self.reconnects,
            "dials": self.dials,
            "dial_failures": self.dial_failures,
            "accepted": self.accepted,
            "control_bytes_out": dict(self.control_bytes_out),
        }


__all__ = ["MeshStats", "PeerStats"]
