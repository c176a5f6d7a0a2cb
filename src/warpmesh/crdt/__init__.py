"""Replicated data types: pure, deterministic delta-state CRDTs (no I/O).

Every type subclasses :class:`Crdt`: ``join`` is the in-place least upper bound, mutators mutate in
place and return a delta of the same type, equality is by value, and the wire form is canonical
(:func:`encode`, :func:`decode`, :func:`digest`). Replicas are named by :func:`replica_id`
(``node@incarnation``) so a restarted node never mints a dot it minted before. See ``docs/crdt.md``.
"""

from warpmesh.crdt.base import (
    DIGEST_SIZE,
    Crdt,
    CrdtDecodeError,
    IncompatibleJoin,
    decode,
    digest,
    encode,
    encoded_bytes,
    parse_replica_id,
    registered_types,
    replica_id,
)
from warpmesh.crdt.causal import Dot, DotContext, sync_digest
from warpmesh.crdt.counters import GCounter, PNCounter
from warpmesh.crdt.hll import HyperLogLog, murmur3_x86_32
from warpmesh.crdt.ormap import ORMap
from warpmesh.crdt.registers import LWWRegister, MVRegister
from warpmesh.crdt.sets import GSet, ORSet

__all__ = [
    "DIGEST_SIZE",
    "Crdt",
    "CrdtDecodeError",
    "Dot",
    "DotContext",
    "GCounter",
    "GSet",
    "HyperLogLog",
    "IncompatibleJoin",
    "LWWRegister",
    "MVRegister",
    "ORMap",
    "ORSet",
    "PNCounter",
    "decode",
    "digest",
    "encode",
    "encoded_bytes",
    "murmur3_x86_32",
    "parse_replica_id",
    "registered_types",
    "replica_id",
    "sync_digest",
]
