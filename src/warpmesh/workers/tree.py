"""The canonical tree encoding.

A tree is a set of uniquely named entries, each naming a blob or a tree by id. Its canonical
encoding (what its id hashes, see :mod:`warpmesh.workers.ids`) is::

    count   u32 big-endian
    entries sorted by name (bytewise, UTF-8), each:
        kind      u8   (1 = blob, 2 = tree)
        name_len  u16 big-endian
        name      name_len bytes of UTF-8
        id        32 bytes

Names are 1..1024 bytes of valid UTF-8 without ``/`` or NUL and are not ``.`` or ``..``. Decoding
is strict (sorted, unique, exact length), so every tree has exactly one encoding and re-encoding a
decoded tree gives back the same bytes.

Pure core: no I/O, no clock.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from warpmesh.errors import WarpmeshError
from warpmesh.workers.ids import ID_LEN, Kind, Ref, tree_id

#: Longest entry name accepted, in UTF-8 bytes.
MAX_NAME = 1024

_HEAD = struct.Struct(">BH")
_COUNT = struct.Struct(">I")


class TreeError(WarpmeshError, ValueError):
    """A tree (or an entry of one) is not canonical or not well formed."""


class TreeEntry(NamedTuple):
    """One named entry of a tree."""

    name: str
    kind: Kind
    id: bytes

    @property
    def ref(self) -> Ref:
        return Ref(self.kind, self.id)


def check_name(name: str | bytes) -> bytes:
    """Validate an entry name and return its UTF-8 bytes."""
    hit = _valid_names.get(name)
    if hit is not None:
        return hit
    raw = _check_name(name)
    if len(_valid_names) >= 65536:
        _valid_names.clear()
    _valid_names[name] = raw
    return raw


#: Names seen valid recently (names repeat a lot: "in", "post", "children", file names ...).
_valid_names: dict[str | bytes, bytes] = {}


def _check_name(name: str | bytes) -> bytes:
    if isinstance(name, str):
        raw = name.encode("utf-8", "surrogatepass")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TreeError(f"entry name {name!r} is not valid UTF-8") from None
    else:
        raw = bytes(name)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TreeError(f"entry name {raw!r} is not valid UTF-8") from None
    if not raw:
        raise TreeError("entry names must not be empty")
    if len(raw) > MAX_NAME:
        raise TreeError(f"entry name is {len(raw)} bytes, the limit is {MAX_NAME}")
    if b"/" in raw or b"\x00" in raw:
        raise TreeError(f"entry name {raw.decode('utf-8')!r} contains '/' or NUL")
    if raw in (b".", b".."):
        raise TreeError(f"entry name {raw.decode('utf-8')!r} is reserved")
    return raw


def _entries_of(entries: Iterable[TreeEntry] | Mapping[str, Ref]) -> list[tuple[bytes, TreeEntry]]:
    if isinstance(entries, Mapping):
        items = [TreeEntry(name, ref.kind, ref.id) for name, ref in entries.items()]
    else:
        items = list(entries)
    keyed: list[tuple[bytes, TreeEntry]] = []
    for e in items:
        kind = e.kind
        if kind.__class__ is not Kind:
            if kind not in (1, 2):
                raise TreeError(f"entry {e.name!r} has unknown kind {kind!r}")
            kind = Kind(kind)
        oid = e.id
        if oid.__class__ is not bytes:
            if not isinstance(oid, bytearray):
                raise TreeError(f"entry {e.name!r} id must be {ID_LEN} bytes")
            oid = bytes(oid)
        if len(oid) != ID_LEN:
            raise TreeError(f"entry {e.name!r} id must be {ID_LEN} bytes")
        keyed.append((check_name(e.name), e if (kind is e.kind and oid is e.id) else TreeEntry(e.name, kind, oid)))
    keyed.sort(key=lambda pair: pair[0])
    for (a, _), (b, _) in itertools.pairwise(keyed):
        if a == b:
            raise TreeError(f"duplicate entry name {a.decode('utf-8')!r}")
    return keyed


def encode_tree(entries: Iterable[TreeEntry] | Mapping[str, Ref]) -> bytes:
    """Validate, sort and encode entries (given in any order) into the canonical tree bytes."""
    keyed = _entries_of(entries)
    parts = [_COUNT.pack(len(keyed))]
    for raw, e in keyed:
        parts.append(_HEAD.pack(e.kind, len(raw)))
        parts.append(raw)
        parts.append(e.id)
    return b"".join(parts)


def make_tree(entries: Iterable[TreeEntry] | Mapping[str, Ref]) -> tuple[bytes, bytes]:
    """Encode entries and return ``(tree id, canonical encoding)``."""
    data = encode_tree(entries)
    return tree_id(data), data


def make_tree_sorted(entries: Iterable[TreeEntry] | Mapping[str, Ref]
                     ) -> tuple[bytes, bytes, tuple[TreeEntry, ...]]:
    """:func:`make_tree` plus the entries as :func:`decode_tree` would return them (sorted,
    normalized), so a store can remember the decoded tree without decoding it."""
    keyed = _entries_of(entries)
    parts = [_COUNT.pack(len(keyed))]
    for raw, e in keyed:
        parts.append(_HEAD.pack(e.kind, len(raw)))
        parts.append(raw)
        parts.append(e.id)
    data = b"".join(parts)
    return tree_id(data), data, tuple(e for _, e in keyed)


def decode_tree(data: bytes | bytearray | memoryview) -> tuple[TreeEntry, ...]:
    """Decode canonical tree bytes. Raises :class:`TreeError` on anything non-canonical."""
    buf = bytes(data)
    if len(buf) < _COUNT.size:
        raise TreeError("tree encoding is truncated (no entry count)")
    (count,) = _COUNT.unpack_from(buf, 0)
    pos = _COUNT.size
    out: list[TreeEntry] = []
    prev: bytes | None = None
    for i in range(count):
        if pos + _HEAD.size > len(buf):
            raise TreeError(f"tree encoding is truncated in entry {i}")
        kind_raw, name_len = _HEAD.unpack_from(buf, pos)
        pos += _HEAD.size
        if kind_raw not in (1, 2):
            raise TreeError(f"entry {i} has unknown kind {kind_raw}")
        end = pos + name_len + ID_LEN
        if end > len(buf):
            raise TreeError(f"tree encoding is truncated in entry {i}")
        raw = buf[pos : pos + name_len]
        check_name(raw)
        if prev is not None and raw <= prev:
            raise TreeError(f"entries are not strictly sorted at entry {i} ({raw!r})")
        prev = raw
        out.append(TreeEntry(raw.decode("utf-8"), Kind(kind_raw), buf[pos + name_len : end]))
        pos = end
    if pos != len(buf):
        raise TreeError(f"{len(buf) - pos} trailing bytes after the last tree entry")
    return tuple(out)


#: The empty tree's canonical encoding and id.
EMPTY_TREE_BYTES = _COUNT.pack(0)
EMPTY_TREE_ID = tree_id(EMPTY_TREE_BYTES)
