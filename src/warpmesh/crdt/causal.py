"""The causal core: dots, dot contexts, and the dot store shared by ORSet, ORMap and MVRegister.

A *dot* ``(replica, seq)`` names one event: the ``seq``-th dot that ``replica`` minted. A
:class:`DotContext` is the set of dots a state has seen, kept canonical as a version vector (every
dot ``(r, 1..vv[r])``) plus a *cloud* of the dots seen out of order. Causal CRDTs pair a store of live
dots with the context; a dot in the context but not in the store was removed (Almeida et al. 2018,
§5 "causal CRDTs"; kuilt ``Dot``/``DotContext``/``DotMap``).

The replica identity rule follows from ``next_dot``: a replica mints ``vv[r] + 1``. A replica that
restarted under the same id with an empty context would mint dots its earlier life already minted,
so every boot must use a fresh id (:func:`warpmesh.crdt.base.replica_id`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar

import blake3

from warpmesh.bulk import bulk
from warpmesh.crdt.base import (
    DIGEST_SIZE,
    Crdt,
    CrdtDecodeError,
    check_replica,
    digest,
    sort_bytes,
    w_int,
    w_list,
    w_replica,
)
from warpmesh.wire.frame import pack

__all__ = ["Dot", "DotContext", "DotStore", "sync_digest"]

_SEQ_MAX = (1 << 64) - 1
#: Below this many dots touched since the last digest, tracking goes on whatever the store's size.
_TOUCH_FLOOR = 4096
_SYNC_DIGEST_DOMAIN = b"warpmesh.causal-digest.v1"


class Dot(NamedTuple):
    """One event: the ``seq``-th (from 1) dot minted by ``replica``."""

    replica: str
    seq: int


class DotContext:
    """The set of dots a state has seen: a version vector plus a cloud, compacted and canonical.

    Invariant (which makes equality and the wire form canonical): every cloud dot ``(r, s)`` has
    ``s > vv[r] + 1``; no ``vv`` entry is 0. Adding dots in any order yields the same representation.

    The cloud is held as runs: per replica, a flat ascending list ``[lo0, end0, lo1, end1, ...]`` of
    half-open intervals that neither overlap nor touch. A delta's context is usually one run (a
    peer's batch of fresh dots, or the dots a dequeue retires), so decoding and joining it cost
    O(runs), not one object and one set insertion per dot as a set of dots did.
    """

    __slots__ = ("_runs", "_size", "_vv")

    def __init__(self, vv: Mapping[str, int] | None = None, cloud: Iterable[Dot] = ()) -> None:
        self._vv: dict[str, int] = {}
        self._runs: dict[str, list[int]] = {}
        self._size = 0  # number of dots covered: sum(vv) + the runs' lengths
        if vv:
            for r, n in vv.items():
                check_replica(r)
                if type(n) is not int or n < 0 or n > _SEQ_MAX:
                    raise ValueError(f"version vector entry for {r!r} must be an int >= 0, got {n!r}")
                if n:
                    self._add_range(r, 1, n + 1)
        for d in cloud:
            self.add(d)

    # --- queries ---------------------------------------------------------------------------------

    @property
    def vv(self) -> Mapping[str, int]:
        """The version vector (read-only view): ``vv[r] = n`` covers dots ``(r, 1..n)``."""
        return MappingProxyType(self._vv)

    @property
    def cloud(self) -> frozenset[Dot]:
        """The dots seen beyond the version vector (a snapshot)."""
        return frozenset(self._cloud_dots())

    def _cloud_dots(self) -> Iterator[Dot]:
        for r, runs in self._runs.items():
            for seq in _run_seqs(runs):
                yield Dot(r, seq)

    def contains(self, dot: tuple[str, int]) -> bool:
        """Whether ``dot`` has been seen."""
        r, seq = dot
        if seq <= self._vv.get(r, 0):
            return True
        runs = self._runs.get(r)
        # Inside a run exactly when an odd number of bounds are <= seq (bounds are half-open).
        return runs is not None and bisect_right(runs, seq) & 1 == 1

    __contains__ = contains

    def size(self) -> int:
        """How many dots the context covers (O(1))."""
        return self._size

    def is_empty(self) -> bool:
        return self._size == 0

    def max_seq(self, replica: str) -> int:
        """The contiguous high-water mark ``vv[replica]`` (0 if unseen)."""
        return self._vv.get(replica, 0)

    def top_seq(self, replica: str) -> int:
        """The highest sequence number seen of ``replica``, contiguous or not (0 if unseen)."""
        runs = self._runs.get(replica)
        return runs[-1] - 1 if runs else self._vv.get(replica, 0)

    def next_dot(self, replica: str) -> Dot:
        """The next dot ``replica`` mints: ``(replica, vv[replica] + 1)``. Does not add it.

        By the compaction invariant ``vv[r] + 1`` is never in the cloud, so the result is never a dot
        this context has seen.
        """
        seq = self._vv.get(replica, 0) + 1
        if seq > _SEQ_MAX:
            raise OverflowError(f"replica {replica!r} has no dots left (64-bit sequence exhausted)")
        return Dot(replica, seq)

    def iter_dots(self) -> Iterator[tuple[str, int]]:
        """Every dot covered, as ``(replica, seq)`` tuples (O(size)). Order unspecified."""
        for r, n in self._vv.items():
            for seq in range(1, n + 1):
                yield (r, seq)
        yield from self._cloud_dots()

    def iter_dots_within(self, other: DotContext) -> Iterator[tuple[str, int]]:
        """The dots of this context that ``other`` may have seen: every dot at or below ``other``'s
        highest sequence number of its replica (a superset of the common dots, found by skipping
        whole ranges). A fresh delta's dots lie beyond what a receiver has seen: nothing to visit."""
        for r, n in self._vv.items():
            top = other.top_seq(r)
            for seq in range(1, min(n, top) + 1):
                yield (r, seq)
        for r, runs in self._runs.items():
            top = other.top_seq(r)
            for i in range(0, len(runs), 2):
                lo = runs[i]
                if lo > top:
                    break
                for seq in range(lo, min(runs[i + 1], top + 1)):
                    yield (r, seq)

    def replicas(self) -> set[str]:
        """Every replica that has a dot in this context."""
        out = set(self._vv)
        out.update(self._runs)
        return out

    # --- updates ---------------------------------------------------------------------------------

    def add(self, dot: tuple[str, int]) -> bool:
        """Record ``dot`` as seen; True if it was new."""
        r, seq = dot
        check_replica(r)
        if type(seq) is not int or not 1 <= seq <= _SEQ_MAX:
            raise ValueError(f"dot sequence numbers start at 1, got {seq!r}")
        return self._add(dot if type(dot) is Dot else Dot(r, seq))

    def _add(self, d: tuple[str, int]) -> bool:
        r, seq = d
        v = self._vv.get(r, 0)
        if seq <= v:
            return False
        if seq == v + 1 and r not in self._runs:
            self._vv[r] = seq  # the common case: the next dot in order, nothing out of order
            self._size += 1
            return True
        return self._add_range(r, seq, seq + 1) > 0

    def _add_range(self, r: str, lo: int, end: int) -> int:
        """Cover ``(r, lo..end-1)``; restore the invariant; return how many dots were new."""
        vv = self._vv
        v = vv.get(r, 0)
        if lo <= v:
            lo = v + 1
        if lo >= end:
            return 0
        runs = self._runs.get(r)
        if runs is not None and lo == runs[-1]:
            runs[-1] = end  # continues the last run (a batch minting dots in order): nothing to merge
            self._size += end - lo
            return end - lo
        if runs is None:
            if lo == v + 1:
                vv[r] = end - 1
            else:
                self._runs[r] = [lo, end]
            self._size += end - lo
            return end - lo
        # Runs k0..k1 overlap or touch [lo, end): merge them with it into one run.
        k0 = bisect_left(runs, lo) >> 1
        k1 = (bisect_right(runs, end) - 1) >> 1
        if k0 > k1:
            runs[2 * k0:2 * k0] = [lo, end]
            added = end - lo
        else:
            covered = 0
            for k in range(k0, k1 + 1):
                covered += runs[2 * k + 1] - runs[2 * k]
            new_lo, new_end = min(lo, runs[2 * k0]), max(end, runs[2 * k1 + 1])
            runs[2 * k0:2 * k1 + 2] = [new_lo, new_end]
            added = new_end - new_lo - covered
        if runs[0] == v + 1:
            # The first run now continues the vector: move it in.
            vv[r] = runs[1] - 1
            del runs[:2]
            if not runs:
                del self._runs[r]
        self._size += added
        return added

    def join(self, other: DotContext) -> None:
        """Union with ``other`` (in place); cost O(|other.vv| + runs of ``other``), amortized."""
        if other is self:
            return
        vv = self._vv
        for r, n in other._vv.items():
            if n > vv.get(r, 0):
                self._add_range(r, 1, n + 1)
        for r, runs in other._runs.items():
            for i in range(0, len(runs), 2):
                self._add_range(r, runs[i], runs[i + 1])

    def compact(self) -> None:
        """Restore the canonical form. The form is maintained by every update, so this only checks it."""
        for r, runs in self._runs.items():
            assert runs and runs[0] > self._vv.get(r, 0) + 1, f"runs of {r!r} not compact"

    def copy(self) -> DotContext:
        c = DotContext.__new__(DotContext)
        c._vv = dict(self._vv)
        c._runs = {r: list(runs) for r, runs in self._runs.items()}
        c._size = self._size
        return c

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DotContext):
            return NotImplemented
        return self._vv == other._vv and self._runs == other._runs

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        cloud = sorted(self._cloud_dots())
        return f"DotContext(vv={dict(sorted(self._vv.items()))!r}, cloud={cloud!r})"

    # --- wire ------------------------------------------------------------------------------------
    #
    # [[replica, vv_max, [cloud seqs ascending]], ...] sorted by the replica's msgpack bytes. Causal
    # types refer to a dot's replica by its index in this list (a store dot is always in the context).

    def wire_table(self) -> tuple[list[Any], dict[str, int]]:
        """The canonical wire form and the replica → index map that stores use for their dots."""
        names = set(self._vv)
        names.update(self._runs)
        ordered = sorted(names, key=pack)
        vv, all_runs = self._vv, self._runs
        rows = [[r, vv.get(r, 0), list(_run_seqs(all_runs.get(r, ())))] for r in ordered]
        return rows, {r: i for i, r in enumerate(ordered)}

    def to_wire(self) -> list[Any]:
        return self.wire_table()[0]

    @classmethod
    def from_wire_table(cls, data: Any) -> tuple[DotContext, list[str]]:
        """Decode the wire form; also return the replica names by index. Raises CrdtDecodeError."""
        rows = w_list(data, "dot context")
        ctx = cls()
        names: list[str] = []
        seen: set[str] = set()
        for row in rows:
            row = w_list(row, "dot context entry", 3)
            r = w_replica(row[0])
            if r in seen:
                raise CrdtDecodeError(f"replica {r!r} appears twice in a dot context")
            seen.add(r)
            n = w_int(row[1], "version vector entry", 0, _SEQ_MAX)
            seqs = w_list(row[2], "cloud")
            if n == 0 and not seqs:
                raise CrdtDecodeError(f"dot context entry for {r!r} is empty")
            runs: list[int] = []
            prev = n + 1
            for seq in seqs:
                # Canonical: strictly ascending and never contiguous with the vector.
                if type(seq) is not int or seq > _SEQ_MAX:
                    w_int(seq, "cloud sequence number", 1, _SEQ_MAX)  # raises, naming the problem
                if seq <= prev:
                    raise CrdtDecodeError(f"cloud of {r!r} is not canonical (ascending, beyond vv + 1)")
                if runs and runs[-1] == seq:
                    runs[-1] = seq + 1
                else:
                    runs += (seq, seq + 1)
                prev = seq
            if n:
                ctx._vv[r] = n
            if runs:
                ctx._runs[r] = runs
                ctx._size += sum(runs[i + 1] - runs[i] for i in range(0, len(runs), 2))
            ctx._size += n
            names.append(r)
        return ctx, names

    @classmethod
    def from_wire(cls, data: Any) -> DotContext:
        return cls.from_wire_table(data)[0]


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Marks "no value" in dot → key lookups (keys may legitimately be any hashable, including None).
_MISSING: Any = object()


class DotStore(Generic[V]):
    """A causal map ``key → {dot: value}`` with its context and a ``dot → key`` index.

    The common kernel of ORSet (values None), ORMap (values are CRDTs) and MVRegister (one key).
    Invariants: every store dot is in ``ctx``; a dot lives under at most one key; no key maps to an
    empty dict. The index lets a small delta retire dots in O(delta) instead of scanning the store.
    """

    __slots__ = ("_acc", "_added", "_removed", "_sorted", "_touched", "ctx", "index", "store")

    def __init__(self) -> None:
        self.store: dict[Hashable, dict[Dot, V]] = {}
        self.index: dict[Dot, Hashable] = {}
        self.ctx = DotContext()
        # The incremental sync digest (see alive_digest): the XOR of the alive dots' hashes as of the
        # last digest, and the dots added or removed since, each with whether it was alive then.
        # Both None until a first digest (deltas never pay for the tracking), or after so many
        # touches that a full pass is as cheap as replaying them.
        self._acc: int | None = None
        self._touched: dict[Dot, bool] | None = None
        # Canonical key order, maintained lazily: keys added / removed since the list was last
        # brought up to date are patched in with binary search when someone asks for the order.
        self._sorted: list[Hashable] | None = None
        self._added: set[Hashable] = set()
        self._removed: set[Hashable] = set()

    # --- primitive edits (keep index and key order in step) ----------------------------------------

    def _key_added(self, key: Hashable) -> None:
        if self._sorted is not None:
            if key in self._removed:
                self._removed.discard(key)
            else:
                self._added.add(key)
                self._check_backlog()

    def _key_removed(self, key: Hashable) -> None:
        if self._sorted is not None:
            if key in self._added:
                self._added.discard(key)
            else:
                self._removed.add(key)
                self._check_backlog()

    def _check_backlog(self) -> None:
        # Past this many pending edits a fresh sort is cheaper than patching one by one.
        sorted_ = self._sorted
        if sorted_ is not None and len(self._added) + len(self._removed) > max(64, len(sorted_) >> 3):
            self._sorted = None
            self._added.clear()
            self._removed.clear()

    def add_dot(self, key: Hashable, dot: Dot, value: V) -> None:
        t = self._touched
        if t is not None and dot not in t:
            t[dot] = dot in self.index
            self._cap_touched(t)
        contribs = self.store.get(key)
        if contribs is None:
            contribs = self.store[key] = {}
            self._key_added(key)
        contribs[dot] = value
        self.index[dot] = key

    def remove_dot(self, dot: tuple[str, int]) -> None:
        key = self.index.pop(dot)  # type: ignore[call-overload]
        t = self._touched
        if t is not None and dot not in t:
            t[dot] = True  # type: ignore[index]  # it was alive: the pop above found it
            self._cap_touched(t)
        contribs = self.store[key]
        del contribs[dot]  # type: ignore[arg-type]
        if not contribs:
            del self.store[key]
            self._key_removed(key)

    def remove_key(self, key: Hashable) -> dict[Dot, V]:
        contribs = self.store.pop(key, None)
        if contribs is None:
            return {}
        self._key_removed(key)
        index = self.index
        for d in contribs:
            del index[d]
        self._touch_all(contribs, True)  # alive until now
        return contribs

    def _touch_all(self, dots: Iterable[Dot], alive: bool) -> None:
        """Record ``dots`` as touched since the last digest (see alive_digest), ``alive`` before."""
        t = self._touched
        if t is not None:
            for d in dots:
                if d not in t:
                    t[d] = alive
            self._cap_touched(t)

    def _cap_touched(self, touched: dict[Dot, bool]) -> None:
        # Past as many touched dots as alive ones (and the floor), one full pass at the next digest
        # costs less than replaying the touches: stop tracking until then.
        if len(touched) > _TOUCH_FLOOR and len(touched) > len(self.index):
            self._acc = self._touched = None

    def alive_digest(self, tag: int) -> bytes:
        """A 16-byte digest of this store's context and alive dots, for anti-entropy (see
        :func:`sync_digest`), computed incrementally: after the first call, a call costs the dots
        added or removed since the previous one plus the context's size, not the store's size.

        Every write mints a new dot for an immutable contribution (ORMap, ORSet, MVRegister), so the
        context and the set of alive dots determine the state: replicas that hold the same ones hold
        equal states, and digest alike. The alive set enters as the XOR of 128-bit BLAKE3 hashes of
        its dots, which a dot's arrival or retirement toggles.
        """
        index = self.index
        acc = self._acc
        touched = self._touched
        if acc is None or touched is None:
            acc = 0
            for d in index:
                acc ^= _dot_hash(d)
        else:
            for d, was_alive in touched.items():
                if was_alive is not (d in index):
                    acc ^= _dot_hash(d)
        self._acc = acc
        self._touched = {}
        body = pack([tag, self.ctx.wire_table()[0], acc.to_bytes(16, "little")])
        return blake3.blake3(_SYNC_DIGEST_DOMAIN + body).digest(length=DIGEST_SIZE)

    def sorted_keys(self) -> list[Hashable]:
        """Keys in canonical order (by the elements' msgpack bytes).

        O(n log n) the first time; afterwards O(k log n) for k keys added or removed since (plus
        the list moves), so listing the keys of a large, busy map stays cheap.
        """
        order = self._sorted
        if order is None:
            order = self._sorted = sorted(self.store, key=sort_bytes)
            return order
        if self._removed:
            for k in self._removed:
                del order[bisect_left(order, sort_bytes(k), key=sort_bytes)]
            self._removed.clear()
        if self._added:
            for k in self._added:
                insort(order, k, key=sort_bytes)
            self._added.clear()
        return order

    # --- lattice ---------------------------------------------------------------------------------

    def join(self, other: DotStore[V], join_value: Callable[[V, V], V],
             copy_value: Callable[[V], V] | None) -> None:
        """In-place causal join (see :meth:`_join`). ``copy_value`` None: ``other`` is given up (see
        :meth:`warpmesh.crdt.base.Crdt.absorb`), so its values are taken as they are, and a key new
        to this store takes ``other``'s own dict of contributions."""
        with bulk(len(other.store)):
            self._join(other, join_value, copy_value)

    def _join(self, other: DotStore[V], join_value: Callable[[V, V], V],
              copy_value: Callable[[V], V] | None) -> None:
        """In-place causal join (the DotMap join of Almeida et al. §5.2, lifted over keys).

        A dot survives if both sides hold it under the same key, or one side holds it and the other
        has not seen it. Cost: O(|other.store| + min(|other.ctx|, |self.store dots|)) plus the context
        join, so a k-dot delta costs O(k) whatever the size of this state.
        """
        if other is self:
            return
        s_index, o_index, o_ctx, s_ctx = self.index, other.index, other.ctx, self.ctx
        # 1. Retire our dots that the other side has seen but does not hold under the same key.
        if o_ctx.size() <= len(s_index):
            doomed = [d for d in o_ctx.iter_dots_within(s_ctx) if d in s_index]
        else:
            doomed = [d for d in s_index if o_ctx.contains(d)]
        for d in doomed:
            if o_index.get(d, _MISSING) != s_index[d]:
                self.remove_dot(d)
        # 2. Adopt the other side's dots we have never seen; join values held under a common dot.
        store = self.store
        contains = s_ctx.contains
        for key, contribs in other.store.items():
            mine = store.get(key)
            if mine is None and copy_value is None and not any(contains(d) for d in contribs):
                # A key new to us whose dots we have never seen (most of a received delta): take
                # the delta's own dict, as add_dot per dot would have built it.
                store[key] = contribs
                self._key_added(key)
                for d in contribs:
                    s_index[d] = key
                self._touch_all(contribs, False)  # not alive before
                continue
            for d, v in contribs.items():
                if mine is not None and d in mine:
                    mine[d] = join_value(mine[d], v)
                elif not s_ctx.contains(d):
                    self.add_dot(key, d, v if copy_value is None else copy_value(v))
                    if mine is None:
                        mine = store[key]
        # 3. Everything either side has seen.
        s_ctx.join(o_ctx)

    def copy(self, copy_value: Callable[[V], V]) -> DotStore[V]:
        with bulk(len(self.store)):
            return self._copy(copy_value)

    def _copy(self, copy_value: Callable[[V], V]) -> DotStore[V]:
        c: DotStore[V] = DotStore.__new__(DotStore)
        c.store = {k: {d: copy_value(v) for d, v in contribs.items()} for k, contribs in self.store.items()}
        c.index = dict(self.index)
        c.ctx = self.ctx.copy()
        c._sorted = None if self._sorted is None else list(self._sorted)
        c._added = set(self._added)
        c._removed = set(self._removed)
        c._acc = self._acc
        c._touched = None if self._touched is None else dict(self._touched)
        return c

    def is_bottom(self) -> bool:
        return not self.store and self.ctx.is_empty()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DotStore):
            return NotImplemented
        return self.store == other.store and self.ctx == other.ctx

    __hash__ = None  # type: ignore[assignment]

    # --- wire ------------------------------------------------------------------------------------

    def to_wire(self, key_wire: Callable[[Hashable], Any], value_wire: Callable[[V], Any] | None) -> list[Any]:
        """``[ctx, [[key, [[ri, seq(, value)], ...]], ...]]`` with keys and dots in canonical order."""
        with bulk(len(self.store)):
            return self._to_wire(key_wire, value_wire)

    def _to_wire(self, key_wire: Callable[[Hashable], Any], value_wire: Callable[[V], Any] | None) -> list[Any]:
        ctx_rows, table = self.ctx.wire_table()
        names = [row[0] for row in ctx_rows]
        entries = []
        store = self.store
        for k in self.sorted_keys():
            contribs = store[k]
            if len(contribs) == 1:  # the common case: skip the sort
                for d, v in contribs.items():
                    item = [table[d[0]], d[1]]
                    if value_wire is not None:
                        item.append(value_wire(v))
                    items = [item]
            else:
                items = sorted([table[d[0]], d[1]] for d in contribs)
                if value_wire is not None:
                    for item in items:
                        item.append(value_wire(contribs[(names[item[0]], item[1])]))  # type: ignore[index]
            entries.append([key_wire(k), items])
        return [ctx_rows, entries]

    @classmethod
    def from_wire(
        cls,
        data: Any,
        key_from_wire: Callable[[Any], tuple[Hashable, Any]],
        value_from_wire: Callable[[Any], V] | None,
        what: str,
    ) -> DotStore[V]:
        """Validate and build. ``value_from_wire`` None means dots carry no value (stored as None)."""
        size = len(data[1]) if type(data) is list and len(data) == 2 and type(data[1]) is list else 0
        with bulk(size):
            ds = cls._from_wire_fast(data, key_from_wire, value_from_wire)
            if ds is not None:
                return ds
            return cls._from_wire(data, key_from_wire, value_from_wire, what)

    @classmethod
    def _from_wire_fast(
        cls,
        data: Any,
        key_from_wire: Callable[[Any], tuple[Hashable, Any]],
        value_from_wire: Callable[[Any], V] | None,
    ) -> DotStore[V] | None:
        """:meth:`_from_wire` for well-formed input: the same checks inline, or None at the first
        doubt (then the checked decoder runs and names what is wrong). Every delta a peer receives
        is decoded here, so the per-dot checks are kept to plain type and range tests."""
        if type(data) is not list or len(data) != 2 or type(data[1]) is not list:
            return None
        try:
            ctx, names = DotContext.from_wire_table(data[0])
        except CrdtDecodeError:
            return None
        ds: DotStore[V] = cls()
        ds.ctx = ctx
        store, index = ds.store, ds.index
        contains = ctx.contains
        n_names = len(names)
        width = 2 if value_from_wire is None else 3
        for entry in data[1]:
            if type(entry) is not list or len(entry) != 2:
                return None
            items = entry[1]
            if type(items) is not list or not items:
                return None
            k0 = entry[0]
            if type(k0) is str and k0.isascii():
                key: Hashable = k0  # the common case (task ids): its own key
            else:
                key = key_from_wire(k0)[0]
            if key in store:
                return None
            contribs: dict[Dot, V] = {}
            for item in items:
                if type(item) is not list or len(item) != width:
                    return None
                ri, seq = item[0], item[1]
                if type(ri) is not int or type(seq) is not int or not (0 <= ri < n_names and 1 <= seq <= _SEQ_MAX):
                    return None
                dot = Dot(names[ri], seq)
                if dot in index or not contains(dot):
                    return None
                contribs[dot] = None if value_from_wire is None else value_from_wire(item[2])  # type: ignore[assignment]
                index[dot] = key
            store[key] = contribs
        return ds

    @classmethod
    def _from_wire(
        cls,
        data: Any,
        key_from_wire: Callable[[Any], tuple[Hashable, Any]],
        value_from_wire: Callable[[Any], V] | None,
        what: str,
    ) -> DotStore[V]:
        top = w_list(data, what, 2)
        ctx, names = DotContext.from_wire_table(top[0])
        ds: DotStore[V] = cls()
        ds.ctx = ctx
        width = 2 if value_from_wire is None else 3
        for entry in w_list(top[1], f"{what} entries"):
            entry = w_list(entry, f"{what} entry", 2)
            key, _ = key_from_wire(entry[0])
            if key in ds.store:
                raise CrdtDecodeError(f"{what} key appears twice")
            items = w_list(entry[1], f"{what} dots")
            if not items:
                raise CrdtDecodeError(f"{what} key has no dots")
            for item in items:
                item = w_list(item, f"{what} dot", width)
                ri = w_int(item[0], "replica index", 0, len(names) - 1)
                s = w_int(item[1], "dot sequence number", 1, _SEQ_MAX)
                dot = Dot(names[ri], s)
                if dot in ds.index:
                    raise CrdtDecodeError(f"dot {dot} appears twice in one {what}")
                if not ctx.contains(dot):
                    raise CrdtDecodeError(f"{what} holds dot {dot} that its own context has not seen")
                value: Any = None if value_from_wire is None else value_from_wire(item[2])
                ds.add_dot(key, dot, value)
        return ds


def _run_seqs(runs: list[int] | tuple[()]) -> Iterator[int]:
    """The sequence numbers of a replica's runs (a flat ``[lo0, end0, lo1, end1, ...]`` list)."""
    for i in range(0, len(runs), 2):
        yield from range(runs[i], runs[i + 1])


def _dot_hash(d: tuple[str, int]) -> int:
    """A dot's 128-bit hash (deterministic on every peer, unlike Python's ``hash``)."""
    return int.from_bytes(blake3.blake3(d[0].encode() + b"\x00" + d[1].to_bytes(8, "little")).digest(length=16),
                          "little")


def sync_digest(x: Crdt) -> bytes:
    """The digest anti-entropy compares (:class:`warpmesh.quilt.codec.CrdtCodec`): equal states give
    equal digests.

    For causal states (an ORMap, ORSet or MVRegister: a :class:`DotStore` inside) it is
    :meth:`DotStore.alive_digest`, maintained as the state changes, so comparing a big, busy board
    costs what changed since the last comparison, not the board (issue 16). Other states digest
    their canonical bytes (:func:`warpmesh.crdt.base.digest`).
    """
    ds = getattr(x, "_ds", None)
    if type(ds) is DotStore:
        return ds.alive_digest(x.TYPE_TAG)
    return digest(x)
