"""Strict canonical conversion of Python values into content-addressed objects.

Job arguments (and anything else that feeds a cache key) must mean the same bytes on every host and
in every run. So only values with one obvious byte form are accepted:

=====================  ====================================================
``bytes``-like         a blob of those bytes
``str``                a blob of its UTF-8 encoding
``int`` (not ``bool``) a blob of its decimal ASCII digits (``-12`` -> ``b"-12"``)
:class:`Ref`           the referenced object, as is
``Mapping[str, ...]``  a tree; each key is an entry name, each value converted recursively
=====================  ====================================================

Everything else -- floats, ``bool``, ``None``, lists, sets, functions, arbitrary objects -- raises
:class:`CanonicalError` naming the offending path. Nothing is ever hashed by identity, ``repr`` or
pickling (the joblib/Prefect failure mode where a changed closure silently reuses a stale result).

Two inputs that produce the same bytes (``5`` and ``"5"``) are the same input: the cache key is
exactly what the worker can observe.

Pure core: returns the objects to store instead of storing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from warpmesh.errors import WarpmeshError
from warpmesh.workers.ids import Kind, Ref, blob_id
from warpmesh.workers.tree import TreeEntry, TreeError, check_name, make_tree

#: One object to store: (kind, id, bytes). Listed children first, so storing in order always works.
PendingObject = tuple[Kind, bytes, bytes]


class CanonicalError(WarpmeshError, TypeError):
    """A value has no canonical byte form; the message names its path and what to pass instead."""


def value_to_blob(value: Any, path: str = "value") -> bytes:
    """The canonical bytes of a scalar argument value."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise CanonicalError(f"{path}: string is not valid Unicode ({exc.reason})") from None
    if isinstance(value, bool):
        raise CanonicalError(f"{path}: bool has no canonical byte form here; pass 'true'/'false' "
                             "or 1/0 explicitly")
    if isinstance(value, int):
        return str(value).encode("ascii")
    if isinstance(value, float):
        raise CanonicalError(f"{path}: float {value!r} has no single canonical text form; pass "
                             "str(x), repr(x) or struct.pack(...) so the bytes are explicit")
    raise CanonicalError(f"{path}: cannot hash {type(value).__name__} {_brief(value)} canonically; pass "
                         "bytes, str, int, a Ref, or a mapping of those")


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def build_value(value: Any, path: str = "value") -> tuple[Ref, list[PendingObject]]:
    """Convert one value into a ref plus the objects that must be stored for it (children first)."""
    if isinstance(value, Ref):
        if value.kind not in (Kind.BLOB, Kind.TREE) or len(value.id) != 32:
            raise CanonicalError(f"{path}: malformed Ref {value!r}")
        return Ref(Kind(value.kind), bytes(value.id)), []
    if isinstance(value, Mapping):
        return build_tree(value, path)
    data = value_to_blob(value, path)
    oid = blob_id(data)
    return Ref(Kind.BLOB, oid), [(Kind.BLOB, oid, data)]


def build_tree(values: Mapping[str, Any], path: str = "args") -> tuple[Ref, list[PendingObject]]:
    """Convert a mapping into a tree ref plus the objects to store (children before parents)."""
    pending: list[PendingObject] = []
    entries: list[TreeEntry] = []
    for name, value in values.items():
        if not isinstance(name, str):
            raise CanonicalError(f"{path}: entry names must be str, got {type(name).__name__} {name!r}")
        sub = f"{path}.{name}"
        try:
            check_name(name)
        except TreeError as exc:
            raise CanonicalError(f"{sub}: {exc}") from None
        ref, objs = build_value(value, sub)
        pending.extend(objs)
        entries.append(TreeEntry(name, ref.kind, ref.id))
    oid, data = make_tree(entries)
    pending.append((Kind.TREE, oid, data))
    return Ref(Kind.TREE, oid), pending
