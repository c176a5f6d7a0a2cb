"""Repair that costs the difference: summaries of causal states and the deltas they call for.

Two replicas of a causal CRDT (an :class:`~warpmesh.crdt.ormap.ORMap` or
:class:`~warpmesh.crdt.sets.ORSet`, i.e. a :class:`~warpmesh.crdt.causal.DotStore` with a context) that
differ can be reconciled without shipping either state whole (the join decomposition of Enes et al.,
"Efficient Synchronization of State-based CRDTs", with a range-hashed digest in the manner of
Cassandra's and Riak's Merkle-tree repair):

1. The replica that may lack something, A, sends a :class:`Summary`: its causal context ``C_A`` (a
   version vector plus a cloud: small) and, for ``2**bits`` buckets of dots, a 64-bit hash of the dots
   it holds alive in each bucket.
2. The other replica, B, answers with a :class:`Difference`:

   * a delta holding B's entries whose dots A has not seen, with the context ``C_B \\ C_A`` (so A also
     learns of B's removals of dots it never saw and cannot be given them back later by a stale delta);
   * ``C_B`` itself, and for every bucket whose hash differs from the hash of B's own alive dots that A
     has seen, the list of those dots. A dot that A held alive when it summarized (in ``C_A``), that B
     has seen (in ``C_B``) and that is not in B's list for its bucket was removed at B: A retires it.

   When a bucket's hashes agree, A's alive dots there are exactly B's alive dots that A has seen, so no
   removal is missing in it. Joining the difference and the retirements gives A exactly what joining B's
   whole state would (a dot names one immutable contribution: mutators mint a new dot for every write).

The cost is the size of the contexts, ``8 * 2**bits`` bytes of bucket hashes, the entries A lacks, and a
list of dots per bucket where the replicas disagree: proportional to the difference, not to the state.
Everything here is pure and deterministic (hashes are computed, never Python's randomized ``hash``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from warpmesh.crdt.base import CrdtDecodeError, w_int, w_list
from warpmesh.crdt.causal import Dot, DotContext, DotStore

__all__ = [
    "CausalState",
    "Difference",
    "Summary",
    "bucket_bits_for",
    "context_minus",
    "difference_for",
    "retirements",
    "summarize",
]

_M64 = (1 << 64) - 1
MAX_BUCKET_BITS = 16


class CausalState(Protocol):
    """A CRDT backed by one :class:`DotStore` that can be rebuilt around another (ORMap, ORSet)."""

    _ds: DotStore[Any]

    def _with_store(self, ds: DotStore[Any]) -> Any: ...


def is_causal(state: object) -> bool:
    """Whether ``state`` supports difference repair (has a dot store and can wrap another)."""
    return isinstance(getattr(state, "_ds", None), DotStore) and hasattr(state, "_with_store")


def _mix(x: int) -> int:
    # SplitMix64's finalizer: spreads structured inputs (consecutive sequence numbers) over 64 bits.
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _M64
    return x ^ (x >> 31)


class _DotHasher:
    """Deterministic 64-bit dot hashes, caching each replica's name hash."""

    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: dict[str, int] = {}

    def __call__(self, replica: str, seq: int) -> int:
        base = self._names.get(replica)
        if base is None:
            base = self._names[replica] = _mix(zlib.crc32(replica.encode()) | (len(replica) << 32))
        return _mix((base + seq * 0x9E3779B97F4A7C15) & _M64)


def bucket_bits_for(alive: int) -> int:
    """Buckets for a state of ``alive`` dots: about 16 dots per bucket, at most ``2**16`` buckets."""
    return min(MAX_BUCKET_BITS, max(0, (alive // 16).bit_length()))


def _bucket_sums(dots: Iterable[tuple[str, int]], bits: int) -> list[int]:
    h = _DotHasher()
    sums = [0] * (1 << bits)
    shift = 64 - bits
    for r, s in dots:
        x = h(r, s)
        b = x >> shift if bits else 0
        sums[b] = (sums[b] + x) & _M64
    return sums


@dataclass(frozen=True, slots=True)
class Summary:
    """What a replica holds, compactly: its context and hashes of its alive dots by bucket."""

    ctx: DotContext
    bits: int
    hashes: tuple[int, ...]

    def to_wire(self) -> list[Any]:
        return [self.ctx.to_wire(), self.bits, b"".join(x.to_bytes(8, "big") for x in self.hashes)]

    @classmethod
    def from_wire(cls, data: Any) -> Summary:
        """Decode and validate; raises :class:`CrdtDecodeError` on anything malformed."""
        top = w_list(data, "summary", 3)
        ctx = DotContext.from_wire(top[0])
        bits = w_int(top[1], "summary bucket bits", 0, MAX_BUCKET_BITS)
        blob = top[2]
        if type(blob) is not bytes or len(blob) != 8 << bits:
            raise CrdtDecodeError(f"summary needs {8 << bits} bytes of bucket hashes")
        hashes = tuple(int.from_bytes(blob[i:i + 8], "big") for i in range(0, len(blob), 8))
        return cls(ctx, bits, hashes)


def summarize(state: CausalState) -> Summary:
    """The summary of ``state`` (cost: one pass over its alive dots)."""
    ds = state._ds
    bits = bucket_bits_for(len(ds.index))
    return Summary(ds.ctx.copy(), bits, tuple(_bucket_sums(ds.index, bits)))


def context_minus(mine: DotContext, theirs: DotContext) -> DotContext:
    """The dots ``mine`` has seen and ``theirs`` has not (as a context)."""
    out = DotContext()
    for r, n in mine.vv.items():
        have = theirs.max_seq(r)
        for s in range(have + 1, n + 1):
            if not theirs.contains((r, s)):
                out._add(Dot(r, s))
    for d in mine.cloud:
        if not theirs.contains(d):
            out._add(d)
    return out


@dataclass(frozen=True, slots=True)
class Difference:
    """What a summarized replica lacks of ours (see the module docstring)."""

    delta: Any  # a state of the same type: entries unseen by the asker, context C_mine \\ C_asker
    ctx: DotContext  # our whole context
    bits: int  # the bucket count of the summary this answers
    alive: dict[int, list[tuple[str, int]]]  # bucket -> our alive dots the asker has seen, where hashes differ
    #: Whether we lack something the asker holds (its context has dots ours has not, or a bucket
    #: differs): the caller then asks for the reverse difference.
    we_lack: bool

    def is_empty(self) -> bool:
        return self.delta._ds.is_bottom() and not self.alive

    def to_wire(self, encode_delta: Any) -> list[Any]:
        rows, table = self.ctx.wire_table()
        alive = [[b, [x for r, s in dots for x in (table[r], s)]] for b, dots in sorted(self.alive.items())]
        return [encode_delta(self.delta), rows, self.bits, alive]

    @staticmethod
    def from_wire(data: Any, decode_delta: Any) -> tuple[Any, DotContext, int, dict[int, list[Dot]]]:
        """Decode ``[delta, ctx, bits, [[bucket, [ri, seq, ...]], ...]]``; raises on malformed input."""
        top = w_list(data, "difference", 4)
        delta = decode_delta(top[0])
        ctx, names = DotContext.from_wire_table(top[1])
        bits = w_int(top[2], "difference bucket bits", 0, MAX_BUCKET_BITS)
        alive: dict[int, list[Dot]] = {}
        for entry in w_list(top[3], "difference buckets"):
            entry = w_list(entry, "difference bucket", 2)
            b = w_int(entry[0], "bucket", 0, (1 << bits) - 1)
            flat = w_list(entry[1], "bucket dots")
            if len(flat) % 2 or b in alive:
                raise CrdtDecodeError("malformed bucket of a difference")
            dots = []
            for i in range(0, len(flat), 2):
                ri = w_int(flat[i], "replica index", 0, len(names) - 1)
                s = w_int(flat[i + 1], "dot sequence number", 1, _M64)
                dot = Dot(names[ri], s)
                if not ctx.contains(dot):
                    raise CrdtDecodeError(f"difference lists dot {dot} outside its own context")
                dots.append(dot)
            alive[b] = dots
        return delta, ctx, bits, alive


def difference_for(state: CausalState, summary: Summary) -> Difference:
    """What the replica that sent ``summary`` lacks of ``state``."""
    ds = state._ds
    theirs = summary.ctx
    missing = context_minus(ds.ctx, theirs)
    delta_ds: DotStore[Any] = DotStore()
    delta_ds.ctx = missing
    index = ds.index
    store = ds.store
    if not missing.is_empty():
        for d, key in index.items():
            if not theirs.contains(d):
                delta_ds.add_dot(key, d, _copy(store[key][d]))
    # Our alive dots that the asker has seen, by bucket, hashed as the asker hashed its alive dots.
    bits = summary.bits
    shift = 64 - bits
    h = _DotHasher()
    sums = [0] * (1 << bits)
    members: dict[int, list[tuple[str, int]]] = {}
    for d in index:
        if theirs.contains(d):
            x = h(d[0], d[1])
            b = x >> shift if bits else 0
            sums[b] = (sums[b] + x) & _M64
            members.setdefault(b, []).append(d)
    alive = {b: sorted(members.get(b, [])) for b in range(1 << bits) if sums[b] != summary.hashes[b]}
    we_lack = bool(alive) or not context_minus(theirs, ds.ctx).is_empty()
    return Difference(state._with_store(delta_ds), ds.ctx.copy(), bits, alive, we_lack)


def _copy(value: Any) -> Any:
    return value.copy() if value is not None else None


def retirements(state: CausalState, asked: DotContext, their_ctx: DotContext, bits: int,
                alive: dict[int, list[Dot]]) -> Any:
    """A delta retiring our dots that the other replica has seen and no longer holds.

    ``asked`` is the context of the summary the difference answered: only dots in it are judged (the
    other replica listed only those; a dot we received since, e.g. in the difference itself, is not
    in its lists and must not be retired for that). Only buckets listed in ``alive`` are examined
    (elsewhere the hashes agreed); ``bits`` is the summary's bucket count. The delta has an empty store
    and the retired dots as its context.
    """
    ds = state._ds
    out: DotStore[Any] = DotStore()
    if alive:
        shift = 64 - bits
        h = _DotHasher()
        keep = {b: set(dots) for b, dots in alive.items()}
        for d in ds.index:
            if not their_ctx.contains(d) or not asked.contains(d):
                continue
            b = h(d[0], d[1]) >> shift if bits else 0
            held = keep.get(b)
            if held is not None and d not in held:
                out.ctx._add(Dot(d[0], d[1]))
    return state._with_store(out)
