"""The Quilter's default codec: any :mod:`warpmesh.crdt` type, tagged on the wire."""

from __future__ import annotations

from typing import Any

from warpmesh.crdt import Crdt, decode, encode, sync_digest


class CrdtCodec:
    """Encodes states and deltas as ``[TYPE_TAG, wire]``; digests are :func:`warpmesh.crdt.sync_digest`
    (kept up to date as a causal board changes, so a digest round on a big board costs what changed)."""

    def encode(self, state: Crdt) -> Any:
        return encode(state)

    def decode(self, wire: Any) -> Crdt:
        return decode(wire)

    def digest(self, state: Crdt) -> bytes:
        return sync_digest(state)


CRDT_CODEC = CrdtCodec()
