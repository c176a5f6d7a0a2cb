"""Sets: the grow-only :class:`GSet` and the add-wins observed-remove :class:`ORSet`."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any, Self

from warpmesh.crdt.base import (
    Crdt,
    CrdtDecodeError,
    check_replica,
    element_key,
    guarded_from_wire,
    key_element,
    sort_bytes,
    w_list,
    wire_element,
)
from warpmesh.crdt.causal import Dot, DotContext, DotStore

__all__ = ["GSet", "ORSet"]


class GSet(Crdt):
    """Grow-only set; join is union. ``add`` returns the singleton delta."""

    TYPE_TAG = 3
    __slots__ = ("_items", "_sorted")

    def __init__(self, elements: Iterable[Any] = ()) -> None:
        self._items: dict[Hashable, Any] = {}
        self._sorted: list[Hashable] | None = None
        for e in elements:
            self._items.setdefault(element_key(e), e)

    def add(self, e: Any) -> GSet:
        """Add ``e``; return the delta ``{e}``."""
        k = element_key(e)
        if k not in self._items:
            self._items[k] = e
            self._sorted = None
        d = GSet.__new__(GSet)
        d._items = {k: e}
        d._sorted = None
        return d

    def __contains__(self, e: object) -> bool:
        try:
            return element_key(e) in self._items
        except TypeError:
            return False

    def _keys(self) -> list[Hashable]:
        if self._sorted is None:
            self._sorted = sorted(self._items, key=sort_bytes)
        return self._sorted

    def __iter__(self) -> Iterator[Any]:
        """Elements in canonical order (by msgpack bytes)."""
        items = self._items
        return iter([items[k] for k in self._keys()])

    def __len__(self) -> int:
        return len(self._items)

    @property
    def elements(self) -> frozenset[Any]:
        return frozenset(self._items.values())

    def join(self, other: Self) -> None:
        self._check_join(other)
        items = self._items
        for k, e in other._items.items():
            if k not in items:
                items[k] = e
                self._sorted = None

    def copy(self) -> GSet:
        c = GSet.__new__(GSet)
        c._items = dict(self._items)
        c._sorted = self._sorted
        return c

    def is_bottom(self) -> bool:
        return not self._items

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GSet):
            return NotImplemented
        return self._items.keys() == other._items.keys()

    def to_wire(self) -> list[Any]:
        items = self._items
        return [items[k] for k in self._keys()]

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> GSet:
        g = cls()
        for v in w_list(data, "GSet"):
            k, e = wire_element(v)
            if k in g._items:
                raise CrdtDecodeError("GSet element appears twice")
            g._items[k] = e
        return g

    def __repr__(self) -> str:
        return f"GSet({list(self)!r})"


def _none(a: None, b: None) -> None:
    return None


def _same(v: Any) -> Any:
    return v


class ORSet(Crdt):
    """Add-wins observed-remove set (causal; an ORSWOT: no tombstones, removals live in the context).

    ``add`` returns ``{e: {new dot}}`` with context ``{e's superseded dots, new dot}``: both parts are
    needed, or an element removed elsewhere can come back (kuilt #2044). ``remove`` returns an empty
    store whose context is ``e``'s live dots. A concurrent add mints a dot the remover never saw, so
    the add wins. Mutators and delta joins cost O(1) / O(delta) in the size of the set.
    """

    TYPE_TAG = 4
    __slots__ = ("_ds",)

    def __init__(self) -> None:
        self._ds: DotStore[None] = DotStore()

    @classmethod
    def _wrap(cls, ds: DotStore[None]) -> ORSet:
        s = cls.__new__(cls)
        s._ds = ds
        return s

    def _with_store(self, ds: DotStore[None]) -> ORSet:
        """A set around ``ds`` (used by difference repair)."""
        return ORSet._wrap(ds)

    # --- mutators --------------------------------------------------------------------------------

    def add(self, replica: str, e: Any) -> ORSet:
        """Add ``e`` under a new dot minted by ``replica``; return the delta."""
        check_replica(replica)
        k = element_key(e)
        ds = self._ds
        old = ds.store.get(k)
        dot = ds.ctx.next_dot(replica)
        delta: DotStore[None] = DotStore()
        if old:
            for d in list(old):
                ds.remove_dot(d)
                delta.ctx._add(d)
        ds.ctx._add(dot)
        ds.add_dot(k, dot, None)
        delta.ctx._add(dot)
        delta.add_dot(k, dot, None)
        return ORSet._wrap(delta)

    def remove(self, e: Any) -> ORSet:
        """Remove ``e`` (its observed dots); return the delta. Removing an absent element is the identity."""
        k = element_key(e)
        delta: DotStore[None] = DotStore()
        for d in self._ds.remove_key(k):
            delta.ctx._add(d)
        return ORSet._wrap(delta)

    def remove_all(self, elements: Iterable[Any]) -> ORSet:
        """Remove every element of ``elements``; return one delta covering all of them."""
        keys = [element_key(e) for e in elements]
        delta: DotStore[None] = DotStore()
        for k in keys:
            for d in self._ds.remove_key(k):
                delta.ctx._add(d)
        return ORSet._wrap(delta)

    # --- queries ---------------------------------------------------------------------------------

    def __contains__(self, e: object) -> bool:
        try:
            return element_key(e) in self._ds.store
        except TypeError:
            return False

    def __iter__(self) -> Iterator[Any]:
        """Elements in canonical order (by msgpack bytes)."""
        return iter([k if type(k) is str else key_element(k) for k in self._ds.sorted_keys()])

    def __len__(self) -> int:
        return len(self._ds.store)

    @property
    def elements(self) -> frozenset[Any]:
        return frozenset(k if type(k) is str else key_element(k) for k in self._ds.store)

    def dots(self, e: Any) -> frozenset[Dot]:
        """The live dots of ``e`` (more than one after concurrent adds)."""
        return frozenset(self._ds.store.get(element_key(e), ()))

    @property
    def context(self) -> DotContext:
        """A copy of the causal context (every dot this state has seen)."""
        return self._ds.ctx.copy()

    # --- lattice and wire ------------------------------------------------------------------------

    def join(self, other: Self) -> None:
        self._check_join(other)
        self._ds.join(other._ds, _none, _same)

    def copy(self) -> ORSet:
        return ORSet._wrap(self._ds.copy(_same))

    def is_bottom(self) -> bool:
        return self._ds.is_bottom()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ORSet):
            return NotImplemented
        return self._ds == other._ds

    def to_wire(self) -> list[Any]:
        return self._ds.to_wire(key_element, None)

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> ORSet:
        return cls._wrap(DotStore.from_wire(data, wire_element, None, "ORSet"))

    def __repr__(self) -> str:
        return f"ORSet({list(self)!r})"
