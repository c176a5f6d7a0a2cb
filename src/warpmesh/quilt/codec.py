"""The Quilter's default codec: any :mod:`warpmesh.crdt` type, tagged on the wire."""

from __future__ import annotations

from typing import Any

from warpmesh.crdt import Crdt, decode, digest, encode


class CrdtCodec:
    """Encodes states and deltas as ``[TYPE_TAG, wire]``; digests are BLAKE3 of the canonical bytes."""

    def encode(self, state: Crdt) -> Any:
        return encode(state)

    def decode(self, wire: Any) -> Crdt:
        return decode(wire)

    def digest(self, state: Crdt) -> bytes:
        return digest(state)


CRDT_CODEC = CrdtCodec()
