"""Counters: the grow-only :class:`GCounter` and the increment/decrement :class:`PNCounter`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from warpmesh.crdt.base import (
    Crdt,
    CrdtDecodeError,
    check_replica,
    guarded_from_wire,
    w_int,
    w_list,
    w_replica,
)
from warpmesh.wire.frame import pack

__all__ = ["GCounter", "PNCounter"]

_SLOT_MAX = (1 << 64) - 1


def _check_amount(n: object) -> int:
    if type(n) is not int or n < 0:
        raise ValueError(f"counter amounts must be ints >= 0, got {n!r}")
    return n


class GCounter(Crdt):
    """Grow-only counter: one slot per replica, join is the slot-wise max, value is the sum.

    ``inc`` returns a delta holding the replica's new *absolute* slot value, so joining two deltas
    of the same replica gives the larger, exactly like the mutations they came from.
    """

    TYPE_TAG = 1
    __slots__ = ("_slots", "_total")

    def __init__(self, slots: Mapping[str, int] | None = None) -> None:
        self._slots: dict[str, int] = {}
        self._total = 0
        for r, n in (slots or {}).items():
            check_replica(r)
            if _check_amount(n) > _SLOT_MAX:
                raise OverflowError("a counter slot must fit in 64 bits")
            if n:
                self._slots[r] = n
                self._total += n

    def inc(self, replica: str, n: int = 1) -> GCounter:
        """Add ``n >= 0`` to ``replica``'s slot; return the delta ``{replica: new slot value}``."""
        check_replica(replica)
        _check_amount(n)
        new = self._slots.get(replica, 0) + n
        if new > _SLOT_MAX:
            raise OverflowError(f"counter slot of {replica!r} would exceed 2**64-1")
        d = GCounter()
        if new:
            self._total += n
            self._slots[replica] = new
            d._slots[replica] = new
            d._total = new
        return d

    @property
    def value(self) -> int:
        return self._total

    @property
    def slots(self) -> dict[str, int]:
        """A copy of the per-replica slots."""
        return dict(self._slots)

    def join(self, other: Self) -> None:
        self._check_join(other)
        slots = self._slots
        for r, n in other._slots.items():
            old = slots.get(r, 0)
            if n > old:
                slots[r] = n
                self._total += n - old

    def copy(self) -> GCounter:
        c = GCounter()
        c._slots = dict(self._slots)
        c._total = self._total
        return c

    def is_bottom(self) -> bool:
        return not self._slots

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GCounter):
            return NotImplemented
        return self._slots == other._slots

    def to_wire(self) -> list[Any]:
        """``[[replica, slot], ...]`` sorted by the replica's msgpack bytes; zero slots never appear."""
        return [[r, self._slots[r]] for r in sorted(self._slots, key=pack)]

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> GCounter:
        c = cls()
        for row in w_list(data, "GCounter"):
            row = w_list(row, "GCounter slot", 2)
            r = w_replica(row[0])
            n = w_int(row[1], "GCounter slot value", 1, _SLOT_MAX)
            if r in c._slots:
                raise CrdtDecodeError(f"GCounter slot {r!r} appears twice")
            c._slots[r] = n
            c._total += n
        return c

    def __repr__(self) -> str:
        return f"GCounter({dict(sorted(self._slots.items()))!r})"


class PNCounter(Crdt):
    """Counter with increments and decrements: two GCounters, value = P - N."""

    TYPE_TAG = 2
    __slots__ = ("_n", "_p")

    def __init__(self, p: GCounter | None = None, n: GCounter | None = None) -> None:
        self._p = p.copy() if p is not None else GCounter()
        self._n = n.copy() if n is not None else GCounter()

    def inc(self, replica: str, n: int = 1) -> PNCounter:
        """Add ``n >= 0``; return the delta."""
        d = PNCounter()
        d._p = self._p.inc(replica, n)
        return d

    def dec(self, replica: str, n: int = 1) -> PNCounter:
        """Subtract ``n >= 0``; return the delta."""
        d = PNCounter()
        d._n = self._n.inc(replica, n)
        return d

    @property
    def value(self) -> int:
        return self._p.value - self._n.value

    @property
    def increments(self) -> GCounter:
        """A copy of the increments (P) counter."""
        return self._p.copy()

    @property
    def decrements(self) -> GCounter:
        """A copy of the decrements (N) counter."""
        return self._n.copy()

    def join(self, other: Self) -> None:
        self._check_join(other)
        self._p.join(other._p)
        self._n.join(other._n)

    def copy(self) -> PNCounter:
        return PNCounter(self._p, self._n)

    def is_bottom(self) -> bool:
        return self._p.is_bottom() and self._n.is_bottom()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PNCounter):
            return NotImplemented
        return self._p == other._p and self._n == other._n

    def to_wire(self) -> list[Any]:
        """``[P slots, N slots]`` (each as in :meth:`GCounter.to_wire`)."""
        return [self._p.to_wire(), self._n.to_wire()]

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> PNCounter:
        p, n = w_list(data, "PNCounter", 2)
        c = cls()
        c._p = GCounter.from_wire(p)
        c._n = GCounter.from_wire(n)
        return c

    def __repr__(self) -> str:
        return f"PNCounter(value={self.value}, p={self._p!r}, n={self._n!r})"
