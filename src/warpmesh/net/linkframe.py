"""The frames of an established mesh link and what each one means, as plain data (a pure core).

After the handshake (:mod:`warpmesh.net.handshake`, kinds 0x01-0x0F) a link carries
``[u32 length][frame]`` with the kinds below. :func:`decode_link_frame` turns one decoded
:class:`~warpmesh.wire.frame.Frame` into one event for the runtime to act on; a frame whose body does
not fit its kind becomes :class:`Malformed` with the reason the runtime counts, never an exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from warpmesh.wire.frame import Frame

DATA = 0x10  #: body: bin, one seam payload
PING = 0x11  #: body: int; answered by PONG with the same int
PONG = 0x12
ROSTER = 0x13  #: body: {"peers": [[id, incarnation, host, port], ...]} (the sender's live links + itself)
BYE = 0x14  #: body: {"code", "reason"}; the sender sends nothing after it

#: A DATA frame is ``[u32 len][version][kind][0xc6 bin32][u32 n][payload]``: always bin32, so the
#: header is a constant 11 bytes and encoding a payload costs one concatenation:
#: ``DATA_HEADER.pack(n + DATA_OVERHEAD, version, DATA, 0xC6, n) + payload``.
DATA_HEADER = struct.Struct(">IBBBI")


@dataclass(frozen=True, slots=True)
class Data:
    """A seam payload for the subscribers."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """Answer with a PONG carrying ``seq`` (0 when the PING carried no integer)."""

    seq: int


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to our PING ``seq``; ``None`` when it carried no integer (matches no PING)."""

    seq: int | None


@dataclass(frozen=True, slots=True)
class Gossip:
    """A ROSTER frame's body, still unchecked (see :func:`warpmesh.net.roster.parse_roster`)."""

    body: Any


@dataclass(frozen=True, slots=True)
class Bye:
    """The peer closes the link; ``code`` is ``"leaving"`` when it shuts down for good."""

    code: Any


@dataclass(frozen=True, slots=True)
class Malformed:
    """A frame refused and counted under ``reason`` (``bad_body``, ``unknown_kind``)."""

    reason: str


LinkEvent = Data | Ping | Pong | Gossip | Bye | Malformed


def decode_link_frame(frame: Frame) -> LinkEvent:
    """What one link frame asks of the runtime. Never raises: a bad body is :class:`Malformed`."""
    kind = frame.kind
    body = frame.body
    if kind == DATA:
        return Data(body) if type(body) is bytes else Malformed("bad_body")
    if kind == PING:
        return Ping(body if type(body) is int else 0)
    if kind == PONG:
        return Pong(body if type(body) is int else None)
    if kind == ROSTER:
        return Gossip(body)
    if kind == BYE:
        return Bye(body.get("code") if isinstance(body, dict) else None)
    return Malformed("unknown_kind")


__all__ = [
    "BYE",
    "DATA",
    "DATA_HEADER",
    "PING",
    "PONG",
    "ROSTER",
    "Bye",
    "Data",
    "Gossip",
    "LinkEvent",
    "Malformed",
    "Ping",
    "Pong",
    "decode_link_frame",
]
