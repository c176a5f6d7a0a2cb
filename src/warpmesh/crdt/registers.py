"""Registers: last-writer-wins :class:`LWWRegister` and causal multi-value :class:`MVRegister`."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Self

from warpmesh.crdt.base import (
    Crdt,
    CrdtDecodeError,
    check_replica,
    element_key,
    guarded_from_wire,
    sort_bytes,
    w_int,
    w_list,
    w_replica,
    wire_element,
)
from warpmesh.crdt.causal import Dot, DotContext, DotStore
from warpmesh.wire.frame import pack

__all__ = ["LWWRegister", "MVRegister"]

_TS_MAX = (1 << 64) - 1


#: An LWW key not computed yet: a bytes value's key is its msgpack bytes (see _sort_key).
_UNPACKED: Any = object()


class LWWRegister(Crdt):
    """Last-writer-wins register ``(timestamp, replica, value)``; join keeps the larger ``(timestamp, replica)``.

    ``set`` defaults to a Lamport step (current timestamp + 1), so a write that has observed another
    write wins over it; concurrent writes are ordered by timestamp, then by replica id. With replica
    ids unique per incarnation, ``(timestamp, replica)`` names one write. Should two writes ever share
    it (a replica id reused across restarts), the larger value's msgpack bytes break the tie, so join
    stays a deterministic lattice. Bottom holds no value (``value`` is None, ``timestamp`` is None).
    """

    TYPE_TAG = 5
    __slots__ = ("_key", "_replica", "_ts", "_value")

    def __init__(self, timestamp: int | None = None, replica: str | None = None, value: Any = None) -> None:
        self._ts: int | None = None
        self._replica = ""
        self._value: Any = None
        self._key: Hashable = None
        if timestamp is None:
            if replica is not None or value is not None:
                raise ValueError("an LWWRegister with a value needs a timestamp and a replica")
            return
        if type(timestamp) is not int or not 0 <= timestamp <= _TS_MAX:
            raise ValueError(f"timestamp must be an int in 0..2**64-1, got {timestamp!r}")
        self._ts = timestamp
        self._replica = check_replica(replica)
        # Bytes are always a valid element, and their key is needed only on a tie (see _sort_key).
        self._key = _UNPACKED if type(value) is bytes else element_key(value)
        self._value = value

    def set(self, replica: str, value: Any, timestamp: int | None = None) -> LWWRegister:
        """Write ``value``; return the delta (the written register).

        ``timestamp`` defaults to the current timestamp + 1 (1 on bottom). An explicit timestamp lower
        than the current one loses to it: the state is unchanged and the delta is dominated.
        """
        if timestamp is None:
            timestamp = 1 if self._ts is None else self._ts + 1
        d = LWWRegister(timestamp, replica, value)
        self.join(d)
        return d

    @property
    def value(self) -> Any:
        return self._value

    @property
    def timestamp(self) -> int | None:
        return self._ts

    @property
    def replica(self) -> str | None:
        return self._replica if self._ts is not None else None

    def _wins_over(self, other: LWWRegister) -> bool:
        if other._ts is None:
            return False
        if self._ts is None:
            return True
        if other._ts != self._ts:
            return other._ts > self._ts
        if other._replica != self._replica:
            return other._replica > self._replica
        return sort_bytes(other._sort_key()) > sort_bytes(self._sort_key())

    def _sort_key(self) -> Hashable:
        """The value's element key (its msgpack bytes unless an ASCII str), computed on first need:
        only equality and a tie of (timestamp, replica) read it, so a decoded register skips it."""
        k = self._key
        if k is _UNPACKED:
            k = self._key = pack(self._value)
        return k

    def join(self, other: Self) -> None:
        self._check_join(other)
        if self._wins_over(other):
            self._ts, self._replica, self._value, self._key = other._ts, other._replica, other._value, other._key

    def copy(self) -> LWWRegister:
        c = LWWRegister.__new__(LWWRegister)
        c._ts, c._replica, c._value, c._key = self._ts, self._replica, self._value, self._key
        return c

    def is_bottom(self) -> bool:
        return self._ts is None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LWWRegister):
            return NotImplemented
        return self._ts == other._ts and self._replica == other._replica and self._sort_key() == other._sort_key()

    def to_wire(self) -> list[Any]:
        """``[]`` for bottom, else ``[timestamp, replica, value]``."""
        if self._ts is None:
            return []
        return [self._ts, self._replica, self._value]

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> LWWRegister:
        if type(data) is list and len(data) == 3:
            ts, rep, v = data
            tv = type(v)
            if (type(ts) is int and 0 <= ts <= _TS_MAX and type(rep) is str and rep
                    and (tv is bytes or (tv is str and v.isascii()))):
                # The common case (board values are packed bytes): what the checks below conclude.
                r = cls.__new__(cls)
                r._ts, r._replica, r._value = ts, rep, v
                r._key = v if tv is str else _UNPACKED
                return r
        lst = w_list(data, "LWWRegister")
        r = cls()
        if not lst:
            return r
        if len(lst) != 3:
            raise CrdtDecodeError("LWWRegister must be [] or [timestamp, replica, value]")
        r._ts = w_int(lst[0], "LWW timestamp", 0, _TS_MAX)
        r._replica = w_replica(lst[1])
        r._key, r._value = wire_element(lst[2], "LWW value")
        return r

    def __repr__(self) -> str:
        if self._ts is None:
            return "LWWRegister()"
        return f"LWWRegister({self._ts}, {self._replica!r}, {self._value!r})"


def _max_value(a: tuple[Hashable, Any], b: tuple[Hashable, Any]) -> tuple[Hashable, Any]:
    # Two writes under one dot happen only if a replica id was reused; keep the larger encoding so
    # the join stays deterministic.
    return a if sort_bytes(a[0]) >= sort_bytes(b[0]) else b


def _same(v: Any) -> Any:
    return v


_ONLY = 0  # the single key of the underlying dot store


class MVRegister(Crdt):
    """Multi-value register (causal): a write replaces every value it has seen; concurrent writes
    are all kept until a later write that has seen them replaces them.

    ``values`` lists the distinct current values in canonical order (by msgpack bytes).
    """

    TYPE_TAG = 6
    __slots__ = ("_ds",)

    def __init__(self) -> None:
        self._ds: DotStore[tuple[Hashable, Any]] = DotStore()

    @classmethod
    def _wrap(cls, ds: DotStore[tuple[Hashable, Any]]) -> MVRegister:
        r = cls.__new__(cls)
        r._ds = ds
        return r

    def write(self, replica: str, value: Any) -> MVRegister:
        """Replace the observed values with ``value`` under a new dot; return the delta."""
        check_replica(replica)
        kv = (element_key(value), value)
        ds = self._ds
        dot = ds.ctx.next_dot(replica)
        delta: DotStore[tuple[Hashable, Any]] = DotStore()
        for d in ds.remove_key(_ONLY):
            delta.ctx._add(d)
        ds.ctx._add(dot)
        ds.add_dot(_ONLY, dot, kv)
        delta.ctx._add(dot)
        delta.add_dot(_ONLY, dot, kv)
        return MVRegister._wrap(delta)

    @property
    def values(self) -> list[Any]:
        contribs = self._ds.store.get(_ONLY)
        if not contribs:
            return []
        distinct = {k: v for k, v in contribs.values()}
        return [distinct[k] for k in sorted(distinct, key=sort_bytes)]

    @property
    def dots(self) -> dict[Dot, Any]:
        """The live writes by dot."""
        return {d: kv[1] for d, kv in self._ds.store.get(_ONLY, {}).items()}

    @property
    def context(self) -> DotContext:
        """A copy of the causal context."""
        return self._ds.ctx.copy()

    def join(self, other: Self) -> None:
        self._check_join(other)
        self._ds.join(other._ds, _max_value, _same)

    def copy(self) -> MVRegister:
        return MVRegister._wrap(self._ds.copy(_same))

    def is_bottom(self) -> bool:
        return self._ds.is_bottom()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MVRegister):
            return NotImplemented
        a, b = self._ds, other._ds
        if a.ctx != b.ctx:
            return False
        ca, cb = a.store.get(_ONLY, {}), b.store.get(_ONLY, {})
        return ca.keys() == cb.keys() and all(ca[d][0] == cb[d][0] for d in ca)

    def to_wire(self) -> list[Any]:
        """``[ctx, [[ri, seq, value], ...]]``: the context and the live writes sorted by dot."""
        ctx_rows, table = self._ds.ctx.wire_table()
        contribs = self._ds.store.get(_ONLY, {})
        writes = sorted([table[d[0]], d[1], kv[1]] for d, kv in contribs.items()) if contribs else []
        return [ctx_rows, writes]

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> MVRegister:
        top = w_list(data, "MVRegister", 2)
        ctx, names = DotContext.from_wire_table(top[0])
        ds: DotStore[tuple[Hashable, Any]] = DotStore()
        ds.ctx = ctx
        for item in w_list(top[1], "MVRegister writes"):
            item = w_list(item, "MVRegister write", 3)
            ri = w_int(item[0], "replica index", 0, len(names) - 1)
            dot = Dot(names[ri], w_int(item[1], "dot sequence number", 1))
            if dot in ds.index:
                raise CrdtDecodeError(f"dot {dot} appears twice in an MVRegister")
            if not ctx.contains(dot):
                raise CrdtDecodeError(f"MVRegister holds dot {dot} that its own context has not seen")
            ds.add_dot(_ONLY, dot, wire_element(item[2], "MVRegister value"))
        return cls._wrap(ds)

    def __repr__(self) -> str:
        return f"MVRegister({self.values!r})"
