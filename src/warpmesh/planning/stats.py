"""``WarpStats``: what the mesh has seen, per op, as a CRDT map of HyperLogLog sketches (pure).

Seed 000: "a CRDT map of per-source HyperLogLog sketches. Peers gossip these sketches on the same
anti-entropy as everything else; each peer plans locally from the converged value". Execution observes
every source element under the source's op id and every element that passes a filter under the
filter's op id, so a filter's selectivity is its count over its source's.
"""

from __future__ import annotations

from typing import Any, Self

import blake3

from warpmesh.crdt.base import DIGEST_SIZE, Crdt, CrdtDecodeError, guarded_from_wire, w_list
from warpmesh.crdt.hll import DEFAULT_PRECISION, HyperLogLog
from warpmesh.wire.frame import pack

__all__ = ["STATS_CODEC", "WarpStats", "WarpStatsCodec"]


def _hashable(x: Any) -> Any:
    """Lists (as msgpack decodes sequences) as tuples, recursively: the sketch hashes either alike."""
    if isinstance(x, list | tuple):
        return tuple(_hashable(i) for i in x)
    return x


class WarpStats(Crdt):
    """Op id -> :class:`HyperLogLog` (p = 14). Join is key union with register-wise max.

    Not in the global CRDT type registry (no ``TYPE_TAG``: the wire tags are pinned protocol); it
    travels on its own Quilter channel with :data:`STATS_CODEC`.
    """

    __slots__ = ("_sketches",)

    def __init__(self, sketches: dict[str, HyperLogLog] | None = None) -> None:
        self._sketches: dict[str, HyperLogLog] = {}
        for op, h in (sketches or {}).items():
            if not isinstance(op, str) or not isinstance(h, HyperLogLog):
                raise TypeError("WarpStats maps str op ids to HyperLogLog sketches")
            self._sketches[op] = h.copy()

    @classmethod
    def empty(cls) -> WarpStats:
        """An empty map (the same as ``WarpStats()``)."""
        return cls()

    def observe(self, op: str, element: Any) -> WarpStats:
        """Record that ``element`` was seen under ``op``; return the delta (one register at most)."""
        if not isinstance(op, str) or not op:
            raise ValueError("op id must be a non-empty str")
        h = self._sketches.get(op)
        if h is None:
            h = self._sketches[op] = HyperLogLog(DEFAULT_PRECISION)
        d = WarpStats()
        d._sketches[op] = h.add(_hashable(element))
        return d

    def observe_all(self, op: str, elements: Any) -> WarpStats:
        """:meth:`observe` for many elements; one joined delta."""
        delta = WarpStats()
        for e in elements:
            delta.join(self.observe(op, e))
        return delta

    def estimated_cardinality(self, op: str) -> int:
        """Distinct elements seen under ``op`` (0 if never seen)."""
        h = self._sketches.get(op)
        return 0 if h is None else len(h)

    def ops(self) -> list[str]:
        return sorted(self._sketches)

    def join(self, other: Self) -> None:
        self._check_join(other)
        for op, h in other._sketches.items():
            mine = self._sketches.get(op)
            if mine is None:
                self._sketches[op] = h.copy()
            else:
                mine.join(h)

    def copy(self) -> WarpStats:
        return WarpStats(self._sketches)

    def is_bottom(self) -> bool:
        return all(h.is_bottom() for h in self._sketches.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WarpStats):
            return NotImplemented
        keys = {k for k, h in self._sketches.items() if not h.is_bottom()}
        okeys = {k for k, h in other._sketches.items() if not h.is_bottom()}
        return keys == okeys and all(self._sketches[k] == other._sketches[k] for k in keys)

    def to_wire(self) -> list[Any]:
        """``[[op, hll wire], ...]`` sorted by op; empty sketches are left out (canonical)."""
        return [[op, self._sketches[op].to_wire()] for op in sorted(self._sketches)
                if not self._sketches[op].is_bottom()]

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> WarpStats:
        s = cls()
        prev: str | None = None
        for item in w_list(data, "WarpStats"):
            op, h = w_list(item, "WarpStats entry", 2)
            if not isinstance(op, str) or not op:
                raise CrdtDecodeError("WarpStats op id must be a non-empty str")
            if prev is not None and op <= prev:
                raise CrdtDecodeError("WarpStats entries must be sorted by op id without repeats")
            prev = op
            s._sketches[op] = HyperLogLog.from_wire(h)
        return s

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}≈{self.estimated_cardinality(k)}" for k in self.ops())
        return f"WarpStats({inner})"


class WarpStatsCodec:
    """The Quilter codec of the statistics channel: ``to_wire`` as is; digest = BLAKE3 of its bytes."""

    def encode(self, state: WarpStats) -> Any:
        return state.to_wire()

    def decode(self, wire: Any) -> WarpStats:
        return WarpStats.from_wire(wire)

    def digest(self, state: WarpStats) -> bytes:
        return blake3.blake3(pack(state.to_wire())).digest(length=DIGEST_SIZE)


STATS_CODEC = WarpStatsCodec()
