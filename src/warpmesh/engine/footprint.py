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
from typing import Generic, NamedTuple, TypeVar

from warpmesh.engine.attachment import EDGE, NODE, PLANE_ALPHA, PLANE_BETA
from warpmesh.engine.ident import EdgeId, NodeId, WarpId, pack_port_key

__all__ = [
    "ActiveFootprints",
    "CompactBatch",
    "Footprint",
    "FootprintUnion",
    "compact_batch",
    "footprints_conflict",
    "union_footprints",
]

_EMPTY: frozenset = frozenset()

# A compact footprint's declarations about its one node, as bits of ``_shape`` (see Footprint).
COMPACT_NODE_READ = 1
COMPACT_NODE_WRITE = 2
COMPACT_ALPHA_READ = 4
COMPACT_ALPHA_WRITE = 8
_NR, _NW, _AR, _AW = COMPACT_NODE_READ, COMPACT_NODE_WRITE, COMPACT_ALPHA_READ, COMPACT_ALPHA_WRITE
_FRESH, _SETS = 0, -1  # ``_shape`` of a footprint with nothing declared / of one kept in explicit sets

_T = TypeVar("_T")


class _Declared(Generic[_T]):
    """One of a footprint's eight public sets: reading (or assigning) it turns a compact footprint into
    explicit sets first, so callers always see, and may mutate, the real set. The engine's hot paths read
    the private slots instead, and handle the compact form themselves."""

    __slots__ = ("_slot",)

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_" + name

    def __get__(self, fp: Footprint, owner: type | None = None) -> _T:
        if fp._shape >= 0:
            fp._spill()
        value: _T = getattr(fp, self._slot)
        return value

    def __set__(self, fp: Footprint, value: _T) -> None:
        fp._spill()
        setattr(fp, self._slot, value)


class Footprint:
    """The declared read/write sets of one rewrite, in warp ``warp`` unless an entry names another.

    Build it with the chaining helpers::

        Footprint(view.warp_id).read_node(scope).read_alpha(scope).write_node(target).write_alpha(target)

    Most rules declare a node and its alpha attachment and nothing else, and a tick builds one footprint
    per candidate that lives until its commit. Such a footprint is kept *compact*: the one node (``_one``
    in warp ``_cw``) and which of node read/write and alpha read/write were declared (bits of ``_shape``),
    with every set still empty, so the only container it costs is itself (two sets and two key tuples
    per candidate were most of what the cyclic GC walked while a tick was being matched). The first
    declaration of anything else, or any read of the public sets, turns it into explicit sets for good
    (:meth:`_spill`); both forms declare exactly the same entries.

    The slots are filled as the form needs them (``__init__`` runs once per candidate): a fresh footprint
    (``_shape`` 0) has only ``warp``, ``_shape`` and ``factor_mask``; a compact one (``_shape`` > 0) also
    ``_one`` and ``_cw``; one in explicit sets (``_shape`` -1) has the eight sets and ``_one`` None.
    """

    __slots__ = ("_a_read", "_a_write", "_b_in", "_b_out", "_cw", "_e_read", "_e_write", "_n_read", "_n_write",
                 "_one", "_shape", "factor_mask", "warp")

    n_read: _Declared[set[tuple[bytes, bytes]] | frozenset] = _Declared()
    n_write: _Declared[set[tuple[bytes, bytes]] | frozenset] = _Declared()
    e_read: _Declared[set[tuple[bytes, bytes]] | frozenset] = _Declared()
    e_write: _Declared[set[tuple[bytes, bytes]] | frozenset] = _Declared()
    a_read: _Declared[set[tuple[int, bytes, bytes, int]] | frozenset] = _Declared()
    a_write: _Declared[set[tuple[int, bytes, bytes, int]] | frozenset] = _Declared()
    b_in: _Declared[set[tuple[bytes, int]] | frozenset] = _Declared()
    b_out: _Declared[set[tuple[bytes, int]] | frozenset] = _Declared()

    warp: WarpId
    factor_mask: int
    _n_read: set[tuple[bytes, bytes]] | frozenset
    _n_write: set[tuple[bytes, bytes]] | frozenset
    _e_read: set[tuple[bytes, bytes]] | frozenset
    _e_write: set[tuple[bytes, bytes]] | frozenset
    _a_read: set[tuple[int, bytes, bytes, int]] | frozenset
    _a_write: set[tuple[int, bytes, bytes, int]] | frozenset
    _b_in: set[tuple[bytes, int]] | frozenset
    _b_out: set[tuple[bytes, int]] | frozenset
    _one: bytes | None
    _cw: bytes
    _shape: int

    def __init__(self, warp: WarpId) -> None:
        self.warp = warp
        self._shape = _FRESH
        #: Echo's O(1) prefilter; ignored by the scheduler exactly as Echo's default scheduler ignores it.
        self.factor_mask = 0

    def _spill(self) -> None:
        """Turn a fresh or compact footprint into the explicit sets it stands for; they are used from now on
        (a no-op on a footprint already in sets)."""
        shape = self._shape
        if shape < 0:
            return
        # Every set starts as one shared empty frozenset and becomes a real set on first add: most
        # footprints in sets still use only two or three of the eight.
        self._n_read = self._n_write = self._e_read = self._e_write = self._a_read = self._a_write = \
            self._b_in = self._b_out = _EMPTY
        if shape > 0:
            w, n = self._cw, self._one
            assert n is not None
            if shape & _NR:
                self._n_read = {(w, n)}
            if shape & _NW:
                self._n_write = {(w, n)}
            if shape & _AR:
                self._a_read = {(NODE, w, n, PLANE_ALPHA)}
            if shape & _AW:
                self._a_write = {(NODE, w, n, PLANE_ALPHA)}
        self._one = None
        self._shape = _SETS

    def _add(self, name: str, item: tuple) -> Footprint:
        self._spill()
        s = getattr(self, name)
        if s is _EMPTY:
            s = set()
            setattr(self, name, s)
        s.add(item)
        return self

    def read_node(self, node: NodeId, warp: WarpId | None = None) -> Footprint:
        """Declare a node read."""
        w = warp or self.warp
        shape = self._shape  # the compact form while it fits (inline: once or twice per candidate)
        if shape == _FRESH:
            self._one, self._cw, self._shape = node, w, _NR
            return self
        if shape > 0 and node == self._one and w == self._cw:
            self._shape = shape | _NR
            return self
        return self._add("_n_read", (w, node))

    def write_node(self, node: NodeId, warp: WarpId | None = None) -> Footprint:
        """Declare a node write (create, replace, delete)."""
        w = warp or self.warp
        shape = self._shape  # the compact form while it fits (inline: once or twice per candidate)
        if shape == _FRESH:
            self._one, self._cw, self._shape = node, w, _NW
            return self
        if shape > 0 and node == self._one and w == self._cw:
            self._shape = shape | _NW
            return self
        return self._add("_n_write", (w, node))

    def read_edge(self, edge: EdgeId, warp: WarpId | None = None) -> Footprint:
        """Declare an edge read."""
        return self._add("_e_read", (warp or self.warp, edge))

    def write_edge(self, edge: EdgeId, warp: WarpId | None = None) -> Footprint:
        """Declare an edge write."""
        return self._add("_e_write", (warp or self.warp, edge))

    def read_alpha(self, node: NodeId, warp: WarpId | None = None) -> Footprint:
        """Declare a read of a node's alpha attachment."""
        w = warp or self.warp
        shape = self._shape  # the compact form while it fits (inline: once or twice per candidate)
        if shape == _FRESH:
            self._one, self._cw, self._shape = node, w, _AR
            return self
        if shape > 0 and node == self._one and w == self._cw:
            self._shape = shape | _AR
            return self
        return self._add("_a_read", (NODE, w, node, PLANE_ALPHA))

    def write_alpha(self, node: NodeId, warp: WarpId | None = None) -> Footprint:
        """Declare a write of a node's alpha attachment."""
        w = warp or self.warp
        shape = self._shape  # the compact form while it fits (inline: once or twice per candidate)
        if shape == _FRESH:
            self._one, self._cw, self._shape = node, w, _AW
            return self
        if shape > 0 and node == self._one and w == self._cw:
            self._shape = shape | _AW
            return self
        return self._add("_a_write", (NODE, w, node, PLANE_ALPHA))

    def read_beta(self, edge: EdgeId, warp: WarpId | None = None) -> Footprint:
        """Declare a read of an edge's beta attachment."""
        return self._add("_a_read", (EDGE, warp or self.warp, edge, PLANE_BETA))

    def write_beta(self, edge: EdgeId, warp: WarpId | None = None) -> Footprint:
        """Declare a write of an edge's beta attachment."""
        return self._add("_a_write", (EDGE, warp or self.warp, edge, PLANE_BETA))

    def read_attachment(self, key: tuple[int, bytes, bytes, int]) -> Footprint:
        """Declare a read of any attachment slot (an ``AttachmentKey``)."""
        return self._add("_a_read", tuple(key))

    def port_in(self, node: NodeId, port_id: int, warp: WarpId | None = None) -> Footprint:
        """Declare an input boundary port of ``node``."""
        return self._add("_b_in", (warp or self.warp, pack_port_key(node, port_id, True)))

    def port_out(self, node: NodeId, port_id: int, warp: WarpId | None = None) -> Footprint:
        """Declare an output boundary port of ``node``."""
        return self._add("_b_out", (warp or self.warp, pack_port_key(node, port_id, False)))

    # Membership tests that do not spill a fresh or compact footprint (the guard's per-access checks); each
    # short-circuits on a fresh one's zero shape before reading a slot it does not have.
    def reads_or_writes_node(self, warp: bytes, node: bytes) -> bool:
        """Whether ``(warp, node)`` is a declared node read or write."""
        if self._shape >= 0:
            return self._shape & (_NR | _NW) != 0 and node == self._one and warp == self._cw
        k = (warp, node)
        return k in self._n_read or k in self._n_write

    def writes_node(self, warp: bytes, node: bytes) -> bool:
        """Whether ``(warp, node)`` is a declared node write."""
        if self._shape >= 0:
            return self._shape & _NW != 0 and node == self._one and warp == self._cw
        return (warp, node) in self._n_write

    def reads_or_writes_alpha(self, warp: bytes, node: bytes) -> bool:
        """Whether the alpha slot of ``(warp, node)`` is a declared attachment read or write."""
        if self._shape >= 0:
            return self._shape & (_AR | _AW) != 0 and node == self._one and warp == self._cw
        k = (NODE, warp, node, PLANE_ALPHA)
        # Writes first: executors mostly read the atom they rewrite (and a_read is then empty).
        return k in self._a_write or k in self._a_read

    def writes_attachment(self, key: tuple[int, bytes, bytes, int]) -> bool:
        """Whether the attachment slot ``key`` is a declared write."""
        if self._shape >= 0:
            return (self._shape & _AW != 0 and key[0] == NODE and key[3] == PLANE_ALPHA and key[2] == self._one
                    and key[1] == self._cw)
        return key in self._a_write

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
    a._spill()
    b._spill()
    if a._n_write and not (a._n_write.isdisjoint(b._n_write) and a._n_write.isdisjoint(b._n_read)):
        return True
    if b._n_write and not b._n_write.isdisjoint(a._n_read):
        return True
    if a._e_write and not (a._e_write.isdisjoint(b._e_write) and a._e_write.isdisjoint(b._e_read)):
        return True
    if b._e_write and not b._e_write.isdisjoint(a._e_read):
        return True
    if a._a_write and not (a._a_write.isdisjoint(b._a_write) and a._a_write.isdisjoint(b._a_read)):
        return True
    if b._a_write and not b._a_write.isdisjoint(a._a_read):
        return True
    if a._b_in or a._b_out:
        bp = b._b_in | b._b_out
        if bp and not (bp.isdisjoint(a._b_in) and bp.isdisjoint(a._b_out)):
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
        fp._spill()
        nw = fp._n_write
        if nw and not (nw.isdisjoint(self.n_written) and nw.isdisjoint(self.n_read)):
            return False
        if fp._n_read and not fp._n_read.isdisjoint(self.n_written):
            return False
        ew = fp._e_write
        if ew and not (ew.isdisjoint(self.e_written) and ew.isdisjoint(self.e_read)):
            return False
        if fp._e_read and not fp._e_read.isdisjoint(self.e_written):
            return False
        aw = fp._a_write
        if aw and not (aw.isdisjoint(self.a_written) and aw.isdisjoint(self.a_read)):
            return False
        if fp._a_read and not fp._a_read.isdisjoint(self.a_written):
            return False
        b_in, b_out = fp._b_in, fp._b_out
        if (b_in or b_out) and not (b_in.isdisjoint(self.ports) and b_out.isdisjoint(self.ports)):
            return False
        self.n_written |= nw
        self.n_read |= fp._n_read
        if ew or fp._e_read:
            self.e_written |= ew
            self.e_read |= fp._e_read
        self.a_written |= aw
        self.a_read |= fp._a_read
        if b_in or b_out:
            self.ports |= b_in
            self.ports |= b_out
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


_FIELDS = ("_n_read", "_n_write", "_e_read", "_e_write", "_a_read", "_a_write", "_b_in", "_b_out")
_GET = [attrgetter(name) for name in _FIELDS]
_shape_of = attrgetter("_shape")
_one_of = attrgetter("_one")
_cw_of = attrgetter("_cw")


class CompactBatch(NamedTuple):
    """A batch of compact footprints that all declare the same things (``shape``) about one node each,
    in one warp: ``locals_[i]`` is footprint ``i``'s node."""

    warp: bytes
    shape: int
    locals_: list[bytes]

    @property
    def reads_or_writes_nodes(self) -> bool:
        return self.shape & (_NR | _NW) != 0

    @property
    def writes_nodes(self) -> bool:
        return self.shape & _NW != 0

    @property
    def reads_or_writes_alpha(self) -> bool:
        return self.shape & (_AR | _AW) != 0

    @property
    def writes_alpha(self) -> bool:
        return self.shape & _AW != 0

    def conflict_free(self) -> bool:
        """No two footprints of the batch conflict: every footprint touches only its own node's entries,
        so distinct nodes never overlap, and footprints that only read never conflict."""
        return self.shape & (_NW | _AW) == 0 or len(set(self.locals_)) == len(self.locals_)


def compact_batch(fps: Sequence[Footprint]) -> CompactBatch | None:
    """``fps`` as a :class:`CompactBatch` if all are compact with one shape and one warp (the usual tick:
    one rule's footprints), else None. A C-level pass per column; nothing is spilled."""
    if not fps:
        return None
    shapes = set(map(_shape_of, fps))
    if len(shapes) != 1:
        return None
    shape = shapes.pop()
    if shape <= 0:
        return None
    warps = set(map(_cw_of, fps))
    if len(warps) != 1:
        return None
    return CompactBatch(warps.pop(), shape, list(map(_one_of, fps)))


def union_footprints(fps: Sequence[Footprint]) -> tuple[FootprintUnion, bool]:
    """The union of ``fps`` per set, and whether no two of them conflict.

    When no two conflict, reserving them one by one in order admits every one, so a tick can decide
    admission for the whole batch at once. The test runs in C-level set operations: writes must be
    pairwise disjoint (their sizes add up to the size of their union), no write may be read by another
    footprint (each footprint's reads minus its own writes, united, must miss every write), and no port
    may be used by two footprints. Compact footprints are spilled into explicit sets first.
    """
    for fp in fps:
        if fp._shape >= 0:
            fp._spill()
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
