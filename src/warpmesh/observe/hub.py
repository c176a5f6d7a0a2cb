"""The event ring: a bounded, sequence-numbered log of observed events with independent readers (pure).

Every event a peer observes (a job enqueued, started, finished; a peer lost; a Raft leader change)
is appended to one :class:`EventRing` of fixed capacity. Appending never waits and never fails: when
the ring is full the oldest event is overwritten. Each reader holds a :class:`Cursor` (just the next
sequence number it wants); a reader that fell further behind than the ring holds loses the events
it missed and is told how many (:attr:`Batch.dropped`). So a slow dashboard costs the node one
append per event and a flat amount of memory, never a wait.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_CAPACITY", "Batch", "Cursor", "Event", "EventRing"]

#: Events one ring keeps for its readers (a reader further behind than this loses the oldest).
#: A peer holds them only while someone watches it: about 5 MB when full.
DEFAULT_CAPACITY = 16384


@dataclass(frozen=True, slots=True)
class Event:
    """One observed event: ``kind`` (``"finished"``, ``"peer_lost"`` ...) seen by ``node`` at ``at``.

    ``seq`` is its number in the ring of the peer that recorded it (0 until recorded); ``job`` and
    ``peer`` name what it is about, ``detail`` carries the rest (op, duration, error, term ...).
    """

    kind: str
    at: float
    node: str
    job: str | None = None
    peer: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0

    def to_wire(self) -> list[Any]:
        """A compact msgpack-able list (see :meth:`from_wire`)."""
        return [self.seq, self.kind, self.at, self.node, self.job, self.peer, dict(self.detail)]

    @classmethod
    def from_wire(cls, wire: Any) -> Event:
        """The event from :meth:`to_wire`'s list; ValueError if it is malformed."""
        if not isinstance(wire, (list, tuple)) or len(wire) != 7:
            raise ValueError("an event is a list of 7 fields")
        seq, kind, at, node, job, peer, detail = wire
        if not isinstance(seq, int) or not isinstance(kind, str) or not isinstance(at, (int, float)):
            raise ValueError("bad event header")
        if not isinstance(node, str) or not (job is None or isinstance(job, str)):
            raise ValueError("bad event node or job")
        if not (peer is None or isinstance(peer, str)) or not isinstance(detail, dict):
            raise ValueError("bad event peer or detail")
        return cls(kind=kind, at=float(at), node=node, job=job, peer=peer, detail=detail, seq=seq)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (the page's and ``--json``'s form)."""
        return {"seq": self.seq, "kind": self.kind, "at": self.at, "node": self.node, "job": self.job,
                "peer": self.peer, "detail": dict(self.detail)}


@dataclass(frozen=True, slots=True)
class Batch:
    """What a reader got: the events in order, and how many it missed before them (overwritten)."""

    events: tuple[Event, ...]
    dropped: int


@dataclass(slots=True)
class Cursor:
    """One reader's position: the sequence number of the next event it wants."""

    next_seq: int
    #: Events this reader has lost in total (overwritten before it read them).
    dropped: int = 0


class EventRing:
    """A bounded ring of :class:`Event` numbered from 1; see the module docstring."""

    __slots__ = ("_events", "_next", "capacity")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._events: deque[Event] = deque(maxlen=capacity)
        self._next = 1

    def __len__(self) -> int:
        return len(self._events)

    @property
    def next_seq(self) -> int:
        """The number the next appended event gets."""
        return self._next

    @property
    def first_seq(self) -> int:
        """The number of the oldest event still held (``next_seq`` when empty)."""
        return self._next - len(self._events)

    def append(self, kind: str, at: float, node: str, job: str | None = None, peer: str | None = None,
               detail: Mapping[str, Any] | None = None) -> Event:
        """Record an event (overwriting the oldest when full) and return it with its ``seq``."""
        event = Event(kind=kind, at=at, node=node, job=job, peer=peer,
                      detail={} if detail is None else detail, seq=self._next)
        self._next += 1
        self._events.append(event)  # deque(maxlen) drops the oldest itself
        return event

    def cursor(self, *, from_start: bool = False) -> Cursor:
        """A new reader: of events appended from now on, or (``from_start``) of every event still held."""
        return Cursor(self.first_seq if from_start else self._next)

    def take(self, cursor: Cursor, limit: int | None = None) -> Batch:
        """The events ``cursor`` has not read yet (at most ``limit``), advancing it past them.

        Events overwritten since the reader's last take count in the batch's ``dropped``.
        """
        first = self.first_seq
        dropped = 0
        if cursor.next_seq < first:
            dropped = first - cursor.next_seq
            cursor.next_seq = first
            cursor.dropped += dropped
        available = self._next - cursor.next_seq
        n = available if limit is None else max(0, min(limit, available))
        if n == 0:
            return Batch((), dropped)
        start = cursor.next_seq - first
        events = self._events
        out = tuple(events[i] for i in range(start, start + n))
        cursor.next_seq += n
        return Batch(out, dropped)

    def pending(self, cursor: Cursor) -> int:
        """How many events ``cursor`` could take now (held ones only)."""
        return self._next - max(cursor.next_seq, self.first_seq)
