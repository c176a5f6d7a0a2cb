"""Footprints: what a rewrite declares it will read and write (Echo ``footprint.rs``, reference §4).

A footprint lists nodes, edges, attachment slots and boundary ports, each split into read and write sets.
Two rewrites conflict when one writes what the other reads or writes (read/read never conflicts), and
when they touch any common port. The scheduler admits, in canonical order, every rewrite that does not
conflict with one already admitted in the same tick.

Entries are warp-scoped tuples (``(warp, node)``, ``(owner, warp, id, plane)``, ``(warp, port_key)``),
equal to :class:`~warpmesh.engine.ident.NodeKey` and :class:`~warpmesh.engine.attachment.AttachmentKey`.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter, or_, sub
from typing import NamedTuple

from warpmesh.engine.attachment import EDGE, NODE, PLANE_ALPHA, PLANE_BETA
from warpmesh.engine.ident import EdgeId, NodeId, WarpId, pack_port_key

__all__ = ["ActiveFootprints", "Footprint", "FootprintUnion", "footprints_conflict", "union_footprints"]

_EMPTY: frozenset = frozenset()


class Footprint:
    """The declared read/write sets of one rewrite, in warp ``warp`` unless an entry names another.

    Build it with the chaining helpers::

        Footprint(view.warp_id).read_node(scope).read_alpha(scope).write_node(target).write_alpha(target)
    """

    __slots__ = ("a_read", "a_write", "b_in", "b_out", "e_read", "e_write", "factor_mask", "n_read",
                 "n_write", "warp")

    warp: WarpId
    n_read: set[tuple[bytes, bytes]] | frozenset
    n_write: set[tuple[bytes, bytes]] | frozenset
    e_read: set[tuple[bytes, bytes]] | frozenset
    e_write: set[tuple[bytes, bytes]] | frozenset
    a_read: set[tuple[int, bytes, bytes, int]] | frozenset
    a_write: set[tuple[int, bytes, bytes, int]] | frozenset
    b_in: set[tuple[bytes, int]] | frozenset
    b_out: set[tuple[bytes, int]] | frozenset
    factor_mask: int

    def __init__(self, warp: WarpId) -> None:
        self.warp = warp
        # Every set starts as one shared empty frozenset and becomes a real set on first add: most
        # footprints use two or three of the eight, and a tick builds thousands of footprints (one
        # chained store: this runs once per candidate of every tick).
        self.n_read = self.n_write = self.e_read = self.e_write = self.a_read = self.a_write = self.b_in = \
            self.b_out = _EMPTY
        #: Echo's O(1) prefilter; ignored by the scheduler exactly as Echo's default scheduler ignores it.
        self.factor_mask = 0

    def _add(self, name: str, item: tuple) -> Footprint:
        s = getattr(self, name)
        if s is _EMPTY:
            s = set()
            setattr(self, name, s)
        s.add(item)
        return self

    def read_node(self, node: NodeId, warp: WarpId | None = None) -> Footprint:
        """Declare a node read."""
        s = self.n_read
        if s is _EMPTY:
            self.n_read = {(warp or self.warp, node)}  # a set display: no set() call and add() for the usual first item
        else:
            s.add((warp or self.warp, node))
        return self

    def write_node(self, node: NodeId, warp: WarpId | None = None) -> Footprint:
        """Declare a node write (create, replace, delete)."""
        s = self.n_write
        if s is _EMPTY:
            self.n_write = {(warp or self.warp, node)}  # a set display: no set() call and add() for the usual first item
        else:
            s.add((warp or self.warp, node))
        return self

    def read_edge(self, edge: EdgeId, warp: WarpId | None = None) -> Footprint:
        """Declare an edge read."""
        return self._add("e_read", (warp or self.warp, edge))

    def write_edge(self, edge: EdgeId, warp: WarpId | None = None) -> Footprint:
        """Declare an edge write."""
        return self._add("e_write", (warp or self.warp, edge))

    def read_alpha(self, node: NodeId, warp: WarpId | None = None) -> Footprint:
        """Declare a read of a node's alpha attachment."""
        s = self.a_read
        if s is _EMPTY:
            self.a_read = {(NODE, warp or self.warp, node, PLANE_ALPHA)}  # a set display: no set() call and add() for the usual first item
        else:
            s.add((NODE, warp or self.warp, node, PLANE_ALPHA))
        return self

    def write_alpha(self, node: NodeId, warp: WarpId | None = None) -> Footprint:
        """Declare a write of a node's alpha attachment."""
        s = self.a_write
        if s is _EMPTY:
            self.a_write = {(NODE, warp or self.warp, node, PLANE_ALPHA)}  # a set display: no set() call and add() for the usual first item
        else:
            s.add((NODE, warp or self.warp, node, PLANE_ALPHA))
        return self

    def read_beta(self, edge: EdgeId, warp: WarpId | None = None) -> Footprint:
        """Declare a read of an edge's beta attachment."""
        return self._add("a_read", (EDGE, warp or self.warp, edge, PLANE_BETA))

    def write_beta(self, edge: EdgeId, warp: WarpId | None = None) -> Footprint:
        """Declare a write of an edge's beta attachment."""
        return self._add("a_write", (EDGE, warp or self.warp, edge, PLANE_BETA))

    def read_attachment(self, key: tuple[int, bytes, bytes, int]) -> Footprint:
        """Declare a read of any attachment slot (an ``AttachmentKey``)."""
        return self._add("a_read", tuple(key))

    def port_in(self, node: NodeId, port_id: int, warp: WarpId | None = None) -> Footprint:
        """Declare an input boundary port of ``node``."""
        return self._add("b_in", (warp or self.warp, pack_port_key(node, port_id, True)))

    def port_out(self, node: NodeId, port_id: int, warp: WarpId | None = None) -> Footprint:
        """Declare an output boundary port of ``node``."""
        return self._add("b_out", (warp or self.warp, pack_port_key(node, port_id, False)))

    def in_slots(self) -> set[tuple]:
        """Patch *in* slots: every declared read and write (reference §2.6 step 2)."""
        s: set[tuple] = set()
        s.update((1, w, n) for w, n in self.n_read | self.n_write)
        s.update((2, w, e) for w, e in self.e_read | self.e_write)
        s.update((3, *k) for k in self.a_read | self.a_write)
        s.update((4, w, p) for w, p in self.b_in | self.b_out)
        return s

    def out_slots(self) -> set[tuple]:
        """Patch *out* slots: the writes (``b_out`` counts as a write)."""
        s: set[tuple] = set()
        s.update((1, w, n) for w, n in self.n_write)
        s.update((2, w, e) for w, e in self.e_write)
        s.update((3, *k) for k in self.a_write)
        s.update((4, w, p) for w, p in self.b_out)
        return s

    def __repr__(self) -> str:
        sizes = " ".join(
            f"{name}={len(getattr(self, name))}"
            for name in ("n_read", "n_write", "e_read", "e_write", "a_read", "a_write", "b_in", "b_out")
            if getattr(self, name)
        )
        return f"Footprint({sizes or 'empty'})"


def footprints_conflict(a: Footprint, b: Footprint) -> bool:
    """Whether two footprints conflict under the read/write matrix (used to attribute rejections)."""
    if a.n_write and not (a.n_write.isdisjoint(b.n_write) and a.n_write.isdisjoint(b.n_read)):
        return True
    if b.n_write and not b.n_write.isdisjoint(a.n_read):
        return True
    if a.e_write and not (a.e_write.isdisjoint(b.e_write) and a.e_write.isdisjoint(b.e_read)):
        return True
    if b.e_write and not b.e_write.isdisjoint(a.e_read):
        return True
    if a.a_write and not (a.a_write.isdisjoint(b.a_write) and a.a_write.isdisjoint(b.a_read)):
        return True
    if b.a_write and not b.a_write.isdisjoint(a.a_read):
        return True
    if a.b_in or a.b_out:
        bp = b.b_in | b.b_out
        if bp and not (bp.isdisjoint(a.b_in) and bp.isdisjoint(a.b_out)):
            return True
    return False


class ActiveFootprints:
    """The union of admitted footprints within one tick (Echo's ``ActiveFootprints``)."""

    __slots__ = ("a_read", "a_written", "e_read", "e_written", "n_read", "n_written", "ports")

    def __init__(self) -> None:
        self.n_written: set[tuple[bytes, bytes]] = set()
        self.n_read: set[tuple[bytes, bytes]] = set()
        self.e_written: set[tuple[bytes, bytes]] = set()
        self.e_read: set[tuple[bytes, bytes]] = set()
        self.a_written: set[tuple[int, bytes, bytes, int]] = set()
        self.a_read: set[tuple[int, bytes, bytes, int]] = set()
        self.ports: set[tuple[bytes, int]] = set()

    def try_reserve(self, fp: Footprint) -> bool:
        """Admit ``fp`` if it conflicts with nothing admitted so far (check, then mark; no partial marks)."""
        nw = fp.n_write
        if nw and not (nw.isdisjoint(self.n_written) and nw.isdisjoint(self.n_read)):
            return False
        if fp.n_read and not fp.n_read.isdisjoint(self.n_written):
            return False
        ew = fp.e_write
        if ew and not (ew.isdisjoint(self.e_written) and ew.isdisjoint(self.e_read)):
            return False
        if fp.e_read and not fp.e_read.isdisjoint(self.e_written):
            return False
        aw = fp.a_write
        if aw and not (aw.isdisjoint(self.a_written) and aw.isdisjoint(self.a_read)):
            return False
        if fp.a_read and not fp.a_read.isdisjoint(self.a_written):
            return False
        if (fp.b_in or fp.b_out) and not (fp.b_in.isdisjoint(self.ports) and fp.b_out.isdisjoint(self.ports)):
            return False
        self.n_written |= nw
        self.n_read |= fp.n_read
        if ew or fp.e_read:
            self.e_written |= ew
            self.e_read |= fp.e_read
        self.a_written |= aw
        self.a_read |= fp.a_read
        if fp.b_in or fp.b_out:
            self.ports |= fp.b_in
            self.ports |= fp.b_out
        return True


class FootprintUnion(NamedTuple):
    """Each of the eight sets of a footprint, united over a batch of footprints."""

    n_read: set[tuple[bytes, bytes]]
    n_write: set[tuple[bytes, bytes]]
    e_read: set[tuple[bytes, bytes]]
    e_write: set[tuple[bytes, bytes]]
    a_read: set[tuple[int, bytes, bytes, int]]
    a_write: set[tuple[int, bytes, bytes, int]]
    b_in: set[tuple[bytes, int]]
    b_out: set[tuple[bytes, int]]


_FIELDS = ("n_read", "n_write", "e_read", "e_write", "a_read", "a_write", "b_in", "b_out")
_GET = [attrgetter(name) for name in _FIELDS]


def union_footprints(fps: Sequence[Footprint]) -> tuple[FootprintUnion, bool]:
    """The union of ``fps`` per set, and whether no two of them conflict.

    When no two conflict, reserving them one by one in order admits every one, so a tick can decide
    admission for the whole batch at once. The test runs in C-level set operations: writes must be
    pairwise disjoint (their sizes add up to the size of their union), no write may be read by another
    footprint (each footprint's reads minus its own writes, united, must miss every write), and no port
    may be used by two footprints.
    """
    n = len(fps)
    parts = [list(map(get, fps)) for get in _GET]
    # A kind no footprint used is the shared empty frozenset everywhere: count() finds that by identity.
    union = FootprintUnion(*[set() if p.count(_EMPTY) == n else set().union(*p) for p in parts])
    free = True
    for r, w in ((0, 1), (2, 3), (4, 5)):
        writes = union[w]
        if not writes:
            continue
        if sum(map(len, parts[w])) != len(writes):
            free = False
            break
        if not writes.isdisjoint(union[r]):
            # Some footprint reads a written item; that is fine only if it is its own write.
            others = set().union(*map(sub, parts[r], parts[w]))
            if not writes.isdisjoint(others):
                free = False
                break
    if free and (union.b_in or union.b_out):
        ports = list(map(or_, parts[6], parts[7]))
        free = sum(map(len, ports)) == len(set().union(*ports))
    return union, free
