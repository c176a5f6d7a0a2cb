"""The scheduler: pending rewrites per transaction, canonical drain order, reservation (reference §4).

``apply`` enqueues a rewrite under the key ``(scope_hash, compact_rule)``; enqueuing the same key again
replaces the payload in place and refreshes its nonce ("last wins"). ``drain`` returns the rewrites in
ascending ``(scope_hash, compact_rule, nonce)`` order, whatever order ``apply`` was called in: a
comparison sort up to :data:`SMALL_SORT_THRESHOLD` items, Echo's 20-pass LSD radix sort (16-bit digits)
above it. Both orders are identical; tests check it.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Sequence
from itertools import accumulate
from operator import attrgetter
from typing import Any

from warpmesh.engine.footprint import Footprint
from warpmesh.engine.ident import Hash, NodeKey

__all__ = ["SMALL_SORT_THRESHOLD", "PendingRewrite", "PendingTx", "radix_order", "sort_order"]

#: Echo's ``SMALL_SORT_THRESHOLD``: at most this many candidates are drained with a comparison sort.
SMALL_SORT_THRESHOLD = 1024

_be16 = struct.Struct(">H").unpack_from
_sort_key = attrgetter("scope_hash", "compact", "nonce")


class PendingRewrite:
    """A matched rewrite waiting for commit."""

    __slots__ = ("compact", "footprint", "nonce", "rule", "scope", "scope_hash")

    def __init__(self, rule: Any, compact: int, scope_hash: Hash, scope: NodeKey, footprint: Footprint) -> None:
        self.rule = rule
        self.compact = compact
        self.scope_hash = scope_hash
        self.scope = scope
        self.footprint = footprint
        self.nonce = 0

    def __repr__(self) -> str:
        return f"PendingRewrite({self.rule.name}@{self.scope[1].hex()[:12]}, nonce={self.nonce})"


class PendingTx:
    """The rewrites enqueued in one open transaction."""

    __slots__ = ("_index", "_items", "_next_nonce")

    def __init__(self) -> None:
        self._items: list[PendingRewrite] = []
        self._index: dict[tuple[bytes, int], int] = {}
        self._next_nonce = 0

    def __len__(self) -> int:
        return len(self._items)

    def enqueue(self, pr: PendingRewrite) -> None:
        """Add ``pr``; a repeat of the same ``(scope_hash, rule)`` replaces the earlier one (last wins)."""
        pr.nonce = self._next_nonce
        self._next_nonce = (self._next_nonce + 1) & 0xFFFF_FFFF
        key = (pr.scope_hash, pr.compact)
        slot = self._index.get(key)
        if slot is None:
            self._index[key] = len(self._items)
            self._items.append(pr)
        else:
            self._items[slot] = pr

    def drain(self, threshold: int | None = SMALL_SORT_THRESHOLD) -> list[PendingRewrite]:
        """All pending rewrites in canonical order; the queue is left empty and the nonce restarts.

        ``threshold`` None always uses the comparison sort.
        """
        items = self._items
        self._items = []
        self._index = {}
        self._next_nonce = 0
        if threshold is None or len(items) <= threshold:
            return sort_order(items)
        return radix_order(items)


def sort_order(items: Sequence[PendingRewrite]) -> list[PendingRewrite]:
    """Canonical order by comparison sort."""
    return sorted(items, key=_sort_key)


def radix_order(items: Sequence[PendingRewrite]) -> list[PendingRewrite]:
    """Canonical order by Echo's stable LSD radix sort: 20 passes of 16-bit digits.

    Passes, least significant first: nonce (lo, hi), compact rule (lo, hi), then the scope hash as sixteen
    big-endian byte pairs from bytes 30..32 down to 0..2. The sort permutes an index array and reads each
    pass's digits from precomputed columns. Two shortcuts leave the result unchanged: a pass whose digit
    is the same for every item is the identity permutation of a stable sort, and passes below the
    shortest most-significant digit prefix that is already unique cannot reorder anything.
    """
    n = len(items)
    if n < 2:
        return list(items)
    hashes = [pr.scope_hash for pr in items]
    # If the k most significant scope digits already tell every key apart, the less significant passes
    # cannot change the final order (they only break ties), so only those k passes run. With random
    # 256-bit scope hashes k is 2 or 3; colliding hashes fall back to all 20 passes.
    columns: list[Sequence[int]] = []
    for k in range(1, 17):
        if len({h[: 2 * k] for h in hashes}) == n:
            columns = [[_be16(h, 2 * j)[0] for h in hashes] for j in range(k - 1, -1, -1)]
            break
    else:
        nonces = [pr.nonce for pr in items]
        rules = [pr.compact for pr in items]
        columns = [
            [x & 0xFFFF for x in nonces],
            [x >> 16 for x in nonces],
            [x & 0xFFFF for x in rules],
            [x >> 16 for x in rules],
        ]
        columns += [[_be16(h, 2 * j)[0] for h in hashes] for j in range(15, -1, -1)]
    perm = list(range(n))
    for col in columns:
        if min(col) == max(col):
            continue
        # Counting pass over a sparse histogram: prefix sums over the digits present (at most n)
        # instead of all 65,536 buckets, which would dominate for the batch sizes a tick sees.
        counts = Counter(col)
        digits = sorted(counts)
        starts = dict(zip(digits, accumulate([0, *[counts[d] for d in digits[:-1]]])))
        out = [0] * n
        for i in perm:
            d = col[i]
            j = starts[d]
            out[j] = i
            starts[d] = j + 1
        perm = out
    return [items[i] for i in perm]
