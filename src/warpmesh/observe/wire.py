"""Frames of the observability channel (mux tag 0x70): subscribe to a peer's events (pure).

A watcher (a dashboard, ``warpmesh top``) sends ``SUBSCRIBE`` to every peer it wants events from;
each such peer then sends it ``EVENTS`` batches (with how many events the watcher missed because it
fell behind the peer's ring).
``UNSUBSCRIBE`` (or the watcher leaving the roster) stops the flow. Frames are
``[version][kind][msgpack body]`` (:mod:`warpmesh.wire`); a malformed one raises ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from warpmesh.observe.hub import Event
from warpmesh.wire.frame import FrameError, decode_frame, encode_frame

__all__ = ["EVENTS", "OBSERVE_TAG", "SUBSCRIBE", "UNSUBSCRIBE", "EventsMsg", "SubscribeMsg", "decode",
           "encode_events", "encode_subscribe", "encode_unsubscribe"]

#: The mux channel of dashboards' event feeds (0x70-0x7F are observability's, docs/architecture.md).
OBSERVE_TAG = 0x70
SUBSCRIBE, UNSUBSCRIBE, EVENTS = 1, 2, 3


@dataclass(frozen=True, slots=True)
class SubscribeMsg:
    """Start (``on``) or stop sending events to the sender; ``backlog``: also the events still held."""

    on: bool
    backlog: bool = False


@dataclass(frozen=True, slots=True)
class EventsMsg:
    """A batch of the sender's events; ``dropped``: how many this watcher missed before them.

    ``origin`` names the sender's ring (its incarnation): sequence numbers are only comparable
    within one origin, which lets a watcher drop events it already has after re-subscribing.
    """

    events: tuple[Event, ...]
    dropped: int
    origin: int = 0


def encode_subscribe(backlog: bool = False) -> bytes:
    """A ``SUBSCRIBE`` frame."""
    return encode_frame(SUBSCRIBE, {"b": backlog})


def encode_unsubscribe() -> bytes:
    """An ``UNSUBSCRIBE`` frame."""
    return encode_frame(UNSUBSCRIBE, {})


def encode_events(events: tuple[Event, ...] | list[Event], dropped: int, origin: int = 0) -> bytes:
    """An ``EVENTS`` frame."""
    return encode_frame(EVENTS, {"d": dropped, "o": origin, "e": [e.to_wire() for e in events]})


def decode(data: bytes) -> SubscribeMsg | EventsMsg:
    """Decode one frame of the channel; ValueError names what is wrong."""
    try:
        frame = decode_frame(data)
    except FrameError as err:
        raise ValueError(f"bad observe frame: {err}") from None
    body = frame.body
    if not isinstance(body, dict):
        raise ValueError("an observe frame's body is a map")
    if frame.kind == SUBSCRIBE:
        return SubscribeMsg(on=True, backlog=bool(body.get("b", False)))
    if frame.kind == UNSUBSCRIBE:
        return SubscribeMsg(on=False)
    if frame.kind == EVENTS:
        dropped, events, origin = body.get("d", 0), body.get("e"), body.get("o", 0)
        if not isinstance(dropped, int) or dropped < 0 or not isinstance(events, list) or not isinstance(origin, int):
            raise ValueError("bad EVENTS body")
        return EventsMsg(tuple(Event.from_wire(w) for w in events), dropped, origin)
    raise ValueError(f"unknown observe frame kind {frame.kind}")
