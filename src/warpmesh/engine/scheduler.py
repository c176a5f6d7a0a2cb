"""The scheduler: pending rewrites per transaction, canonical drain order, reservation (reference §4).

``apply`` enqueues a rewrite under the key ``(scope_hash, compact_rule)``; enqueuing the same key again
replaces the payload in place and refreshes its nonce ("last wins"). ``drain`` returns the rewrites in
ascending ``(scope_hash, compact_rule, nonce)`` order, whatever order ``apply`` was called in: a
comparison sort up to :data:`SMALL_SORT_THRESHOLD` items, Echo's 20-pass LSD radix sort (16-bit digits)
above it. Both orders are identical; tests check it.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any, NamedTuple

from warpmesh.engine.footprint import Footprint
from warpmesh.engine.ident import Hash

__all__ = [
    "SMALL_SORT_THRESHOLD",
    "Drained",
    "PendingRewrite",
    "PendingTx",
    "canonical_perm",
    "radix_order",
    "sort_order",
]

#: Echo's ``SMALL_SORT_THRESHOLD``: at most this many candidates are drained with a comparison sort.
SMALL_SORT_THRESHOLD = 1024

_be16 = struct.Struct(">H").unpack_from
_tnew = tuple.__new__  # builds named tuples without their Python-level __new__ (hot path only)


class PendingRewrite(NamedTuple):
    """A matched rewrite waiting for commit (an immutable record: a tick builds thousands, so it is a
    tuple built in C rather than an object with a Python ``__init__``)."""

    rule: Any
    compact: int
    scope_hash: Hash
    #: The scope's warp and local id, kept apart: a ``(warp, id)`` tuple per candidate would be one more
    #: object for the cyclic GC to count while a tick is being matched.
    warp: bytes
    local: bytes
    footprint: Footprint
    #: Enqueue order within the transaction; :meth:`PendingTx.enqueue` assigns it.
    nonce: int = 0

    @property
    def scope(self) -> tuple[bytes, bytes]:
        """``(warp, local id)`` (equal to the scope's ``NodeKey``)."""
        return (self[3], self[4])

    def __repr__(self) -> str:
        return f"PendingRewrite({self.rule.name}@{self.local.hex()[:12]}, nonce={self.nonce})"


# Column getters by field position (C-level itemgetters; the field order above is fixed).
_compact = itemgetter(1)
_scope_hash = itemgetter(2)
_nonce = itemgetter(6)


_WIDTH = 6  # fields per rewrite in PendingTx._flat: rule, compact, scope_hash, warp, local, footprint


class Drained(NamedTuple):
    """A transaction's pending rewrites in canonical order, as columns (``records()`` rebuilds the rows)."""

    rules: list[Any]
    compacts: list[int]
    scope_hashes: list[Hash]
    warps: list[bytes]
    locals_: list[bytes]
    footprints: list[Footprint]
    nonces: list[int]

    def records(self) -> list[PendingRewrite]:
        """The rows, as :class:`PendingRewrite` records."""
        return list(map(_tnew, repeat(PendingRewrite), zip(*self)))


class PendingTx:
    """The rewrites enqueued in one open transaction.

    They are kept as one flat list, six fields per rewrite, rather than a record each: a tick enqueues
    thousands that all live until its commit, and a tuple per rewrite (it holds the footprint, so the
    cyclic GC never untracks it) was one more object for every collection triggered while a tick is
    being matched to walk. The nonces are kept only once one differs from the rewrite's position
    (a replacement): until then rewrite ``i`` has nonce ``i``.
    """

    __slots__ = ("_collisions", "_flat", "_index", "_next_nonce", "_nonces")

    def __init__(self) -> None:
        self._flat: list[Any] = []
        self._nonces: list[int] | None = None
        self._index: dict[bytes, int] = {}  # scope_hash -> slot of the first rule enqueued with it
        self._collisions: dict[tuple[bytes, int], int] = {}  # (scope_hash, rule) -> slot, for any other rule
        self._next_nonce = 0

    def __len__(self) -> int:
        return len(self._flat) // _WIDTH

    def add(self, rule: Any, compact: int, scope_hash: Hash, warp: bytes, local: bytes,
            footprint: Footprint) -> None:
        """``enqueue(PendingRewrite(rule, compact, scope_hash, warp, local, footprint))`` without building
        the record (apply's path)."""
        nonce = self._next_nonce
        self._next_nonce = (nonce + 1) & 0xFFFF_FFFF
        flat = self._flat
        n = len(flat) // _WIDTH
        # Indexed by scope_hash alone (a bytes key: no tuple to build and hash per rewrite); two rules
        # sharing a scope hash would need a BLAKE3 collision, and are still told apart below.
        slot = self._index.setdefault(scope_hash, n)
        if slot == n and self._nonces is None and nonce == n:
            flat += (rule, compact, scope_hash, warp, local, footprint)  # one C-level extend, no record kept
            return
        if slot != n and flat[slot * _WIDTH + 1] != compact:
            slot = self._collisions.setdefault((scope_hash, compact), n)
        self._put(slot, n, nonce, (rule, compact, scope_hash, warp, local, footprint))

    def _put(self, slot: int, n: int, nonce: int, fields: tuple[Any, ...]) -> None:
        """Append (``slot == n``) or replace (last wins) a rewrite, with its nonce."""
        nonces = self._nonces
        if nonces is None:
            nonces = self._nonces = list(range(n))
        if slot == n:
            self._flat += fields
            nonces.append(nonce)
        else:
            self._flat[slot * _WIDTH:(slot + 1) * _WIDTH] = fields
            nonces[slot] = nonce

    def enqueue(self, pr: PendingRewrite) -> PendingRewrite:
        """Add ``pr`` with the next nonce and return the queued record; a repeat of the same
        ``(scope_hash, rule)`` replaces the earlier one (last wins)."""
        nonce = self._next_nonce
        self.add(*pr[:6])
        return _tnew(PendingRewrite, (*pr[:6], nonce))

    def drain_columns(self, threshold: int | None = SMALL_SORT_THRESHOLD) -> Drained:
        """All pending rewrites in canonical order, as columns; the queue is left empty and the nonce
        restarts. ``threshold`` None always uses the comparison sort (see :func:`canonical_perm`)."""
        flat, nonces = self._flat, self._nonces
        self._flat = []
        self._nonces = None
        self._index = {}
        self._collisions = {}
        self._next_nonce = 0
        rules, compacts, hashes, warps, locals_, fps = [flat[i::_WIDTH] for i in range(_WIDTH)]
        n = len(rules)
        perm = canonical_perm(hashes, compacts, list(range(n)) if nonces is None else nonces, threshold)
        if not n or warps.count(warps[0]) != n:  # (one warp, the usual tick: the same in any order)
            warps = list(map(warps.__getitem__, perm))
        return Drained(list(map(rules.__getitem__, perm)), list(map(compacts.__getitem__, perm)),
                       list(map(hashes.__getitem__, perm)), warps,
                       list(map(locals_.__getitem__, perm)), list(map(fps.__getitem__, perm)),
                       # nonce i is row i's position until a replacement (see the class docstring)
                       perm if nonces is None else list(map(nonces.__getitem__, perm)))

    def drain(self, threshold: int | None = SMALL_SORT_THRESHOLD) -> list[PendingRewrite]:
        """All pending rewrites in canonical order (see :meth:`drain_columns`), as records."""
        return self.drain_columns(threshold).records()


def canonical_perm(hashes: list[bytes], compacts: list[int], nonces: list[int],
                   threshold: int | None = SMALL_SORT_THRESHOLD) -> list[int]:
    """The permutation putting rows in ascending ``(scope_hash, compact, nonce)`` order, by comparison sort
    up to ``threshold`` rows (always, if None) and by Echo's radix sort above; both give the same order."""
    n = len(hashes)
    if threshold is not None and n > threshold:
        return _radix_perm(hashes, compacts, nonces)
    if len(set(hashes)) == n:
        # Distinct scope hashes decide the order alone; the rule and nonce never break a tie.
        return sorted(range(n), key=hashes.__getitem__)
    return sorted(range(n), key=list(zip(hashes, compacts, nonces)).__getitem__)


def sort_order(items: Sequence[PendingRewrite]) -> list[PendingRewrite]:
    """Canonical order by comparison sort."""
    perm = canonical_perm(list(map(_scope_hash, items)), list(map(_compact, items)), list(map(_nonce, items)), None)
    return list(map(items.__getitem__, perm))


def radix_order(items: Sequence[PendingRewrite]) -> list[PendingRewrite]:
    """Canonical order by Echo's stable LSD radix sort (see :func:`_radix_perm`)."""
    perm = _radix_perm(list(map(_scope_hash, items)), list(map(_compact, items)), list(map(_nonce, items)))
    return list(map(items.__getitem__, perm))


def _radix_perm(hashes: list[bytes], rules: list[int], nonces: list[int]) -> list[int]:
    """Canonical order by Echo's stable LSD radix sort: 20 passes of 16-bit digits.

    Passes, least significant first: nonce (lo, hi), compact rule (lo, hi), then the scope hash as sixteen
    big-endian byte pairs from bytes 30..32 down to 0..2. Each pass stably reorders an index array by one
    precomputed digit column; the reorder is done by CPython's stable sort keyed on the digit (the very
    permutation a counting pass produces, computed in C). Two shortcuts leave the result unchanged: a pass
    whose digit is the same for every item is the identity permutation of a stable sort, and passes below
    the shortest most-significant digit prefix that is already unique cannot reorder anything.
    """
    n = len(hashes)
    if n < 2:
        return list(range(n))
    if set(map(len, hashes)) == {32}:
        words = array("I", b"".join(hashes))  # eight 32-bit words per hash
        if sys.byteorder == "little":
            words.byteswap()
        prefix = words[0::8]  # each hash's first two digits as one big-endian number
        if len(set(prefix)) == n:
            # The two most significant digits already tell every key apart: the LSD passes reduce to
            # those two, and two stable passes over digits 1 then 0 are one stable pass over their
            # composite, the 32-bit prefix.
            return sorted(range(n), key=prefix.__getitem__)
    digits = _digit_table(hashes)
    # If the k most significant scope digits already tell every key apart, the less significant passes
    # cannot change the final order (they only break ties), so only those k passes run. With random
    # 256-bit scope hashes k is 2 or 3; colliding hashes fall back to all 20 passes.
    columns: list[Sequence[int]] = []
    top = digits(0)
    for k in range(1, 17):
        if k == 1:
            unique = len(set(top)) == n
        elif k == 2:
            unique = len(set(zip(top, digits(1)))) == n
        else:
            unique = len({h[: 2 * k] for h in hashes}) == n
        if unique:
            columns = [digits(j) for j in range(k - 1, -1, -1)]
            break
    else:
        columns = [
            [x & 0xFFFF for x in nonces],
            [x >> 16 for x in nonces],
            [x & 0xFFFF for x in rules],
            [x >> 16 for x in rules],
        ]
        columns += [digits(j) for j in range(15, -1, -1)]
    perm = list(range(n))
    for col in columns:
        if min(col) == max(col):
            continue
        perm.sort(key=col.__getitem__)
    return perm


def _digit_table(hashes: list[bytes]) -> Callable[[int], Sequence[int]]:
    """``digits(j)``: the j-th big-endian 16-bit digit of every hash, as one column."""
    if set(map(len, hashes)) == {32}:
        table = array("H", b"".join(hashes))
        if sys.byteorder == "little":
            table.byteswap()
        return lambda j: table[j::16]
    return lambda j: [_be16(h, 2 * j)[0] for h in hashes]
