"""Object ids: BLAKE3 with one derived key per object kind (domain separation).

An object is a *blob* (opaque bytes) or a *tree* (a canonical, sorted list of named references to
other objects, see :mod:`warpmesh.workers.tree`). Its id is a 32-byte keyed BLAKE3 hash whose key is
derived from a context string naming the kind, so a blob and a tree with the same bytes can never
share an id, and no other use of BLAKE3 in warpmesh can collide with an object id.

Pure core: no I/O, no clock.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

import blake3

#: Length of every object id, in bytes.
ID_LEN = 32

#: BLAKE3 ``derive_key`` context strings (frozen: changing one re-keys every object).
_BLOB_CONTEXT = "warpmesh 2026-11 workers object id v1 blob"
_TREE_CONTEXT = "warpmesh 2026-11 workers object id v1 tree"

_BLOB_KEY = blake3.blake3(derive_key_context=_BLOB_CONTEXT).digest()
_TREE_KEY = blake3.blake3(derive_key_context=_TREE_CONTEXT).digest()


class Kind(IntEnum):
    """What an object is. The numeric values are part of the tree encoding and of the guest ABI."""

    BLOB = 1
    TREE = 2


class Ref(NamedTuple):
    """A typed reference to an object: its kind and its 32-byte id."""

    kind: Kind
    id: bytes

    @property
    def hex(self) -> str:
        """The id as 64 lowercase hex digits."""
        return self.id.hex()

    def __str__(self) -> str:
        return f"{self.kind.name.lower()} {self.id.hex()}"


def blob_id(data: bytes | bytearray | memoryview) -> bytes:
    """The id of a blob holding ``data``."""
    return blake3.blake3(data, key=_BLOB_KEY).digest()


def tree_id(encoded: bytes | bytearray | memoryview) -> bytes:
    """The id of a tree whose canonical encoding is ``encoded`` (see :func:`tree.encode_tree`)."""
    return blake3.blake3(encoded, key=_TREE_KEY).digest()


def object_id(kind: Kind, data: bytes | bytearray | memoryview) -> bytes:
    """The id of an object of ``kind`` whose stored bytes are ``data``."""
    return blob_id(data) if kind is Kind.BLOB else tree_id(data)


def parse_id(text: str) -> bytes:
    """Parse a full 64-hex-digit id. Raises ``ValueError`` naming what was wrong."""
    s = text.strip().lower()
    if len(s) != 2 * ID_LEN:
        raise ValueError(f"an object id is {2 * ID_LEN} hex digits, got {len(s)}: {text!r}")
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise ValueError(f"not a hex object id: {text!r}") from None


def short(id_: bytes) -> str:
    """A 12-hex-digit abbreviation for logs and error messages."""
    return id_.hex()[:12]
