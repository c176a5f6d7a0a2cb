"""The frames of an established mesh link and what each one means, as plain data (a pure core).

After the handshake (:mod:`warpmesh.net.handshake`, kinds 0x01-0x0F) a link carries
``[u32 length][frame]`` with the kinds below. :func:`decode_link_frame` turns one decoded
:class:`~warpmesh.wire.frame.Frame` into one :class:`LinkEvent` for the runtime to act on; a frame whose
body does not fit its kind becomes :attr:`Event.MALFORMED` with the reason the runtime counts, never an
exception.
"""

from __future__ import annotations

import enum
import struct
from typing import Any, NamedTuple

from warpmesh.wire.frame import Frame

DATA = 0x10  #: body: bin, one seam payload
PING = 0x11  #: body: int; answered by PONG with the same int
PONG = 0x12
ROSTER = 0x13  #: body: {"peers": [[id, incarnation, host, port], ...]} (the sender's live links + itself)
BYE = 0x14  #: body: {"code", "reason"}; the sender sends nothing after it
#: body: bin, :func:`warpmesh.net.roster.roster_digest` of the sender's roster; a receiver whose own
#: roster differs answers with a ROSTER (periodic anti-entropy costs 16 bytes when nothing differs).
ROSTER_DIGEST = 0x15

#: A DATA frame is ``[u32 len][version][kind][0xc6 bin32][u32 n][payload]``: always bin32, so the
#: header is a constant 11 bytes and encoding a payload costs one concatenation:
#: ``DATA_HEADER.pack(n + DATA_OVERHEAD, version, DATA, 0xC6, n) + payload``.
DATA_HEADER = struct.Struct(">IBBBI")


class Event(enum.Enum):
    """What a link frame asks of the runtime; the value each carries is in :class:`LinkEvent`."""

    DATA = "data"  #: value: the payload (bytes) for the subscribers
    PING = "ping"  #: value: the int to answer with in a PONG (0 when the PING carried none)
    PONG = "pong"  #: value: the int of our PING it answers, or ``None`` (then it matches none)
    GOSSIP = "gossip"  #: value: the ROSTER body, unchecked (see :func:`warpmesh.net.roster.parse_roster`)
    GOSSIP_DIGEST = "gossip_digest"  #: value: the ROSTER_DIGEST's bytes
    BYE = "bye"  #: value: the BYE's code (``"leaving"`` when the peer shuts down for good), or ``None``
    MALFORMED = "malformed"  #: value: the reason it is refused and counted (``bad_body``, ``unknown_kind``)


class LinkEvent(NamedTuple):
    """One decoded link frame: its :class:`Event` and the value that goes with it."""

    event: Event
    value: Any


def decode_link_frame(frame: Frame) -> LinkEvent:
    """What one link frame asks of the runtime. Never raises: a bad body is :attr:`Event.MALFORMED`."""
    kind = frame.kind
    body = frame.body
    if kind == DATA:
        return LinkEvent(Event.DATA, body) if type(body) is bytes else LinkEvent(Event.MALFORMED, "bad_body")
    if kind == PING:
        return LinkEvent(Event.PING, body if type(body) is int else 0)
    if kind == PONG:
        return LinkEvent(Event.PONG, body if type(body) is int else None)
    if kind == ROSTER:
        return LinkEvent(Event.GOSSIP, body)
    if kind == ROSTER_DIGEST:
        return (LinkEvent(Event.GOSSIP_DIGEST, body) if type(body) is bytes and 0 < len(body) <= 64
                else LinkEvent(Event.MALFORMED, "bad_body"))
    if kind == BYE:
        return LinkEvent(Event.BYE, body.get("code") if isinstance(body, dict) else None)
    return LinkEvent(Event.MALFORMED, "unknown_kind")


__all__ = [
    "BYE",
    "DATA",
    "DATA_HEADER",
    "PING",
    "PONG",
    "ROSTER",
    "ROSTER_DIGEST",
    "Event",
    "LinkEvent",
    "decode_link_frame",
]
