"""ORMap: a map with add-wins keys whose values are CRDTs."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Generic, Self, TypeVar

from warpmesh.crdt.base import (
    Crdt,
    CrdtDecodeError,
    IncompatibleJoin,
    check_replica,
    element_key,
    guarded_from_wire,
    key_element,
    registered_types,
    w_int,
    w_list,
    w_tagged,
    wire_element,
)
from warpmesh.crdt.causal import Dot, DotContext, DotStore

__all__ = ["ORMap"]

V = TypeVar("V", bound=Crdt)


def _join_into(mine: Crdt, theirs: Crdt) -> Crdt:
    mine.join(theirs)
    return mine


def _copy(v: Crdt) -> Crdt:
    return v.copy()


def _encode_value(v: Crdt) -> list[Any]:
    return [v.TYPE_TAG, v.to_wire()]


class ORMap(Crdt, Generic[V]):
    """Map with add-wins keys; each key holds *contributions* ``{dot: value}`` (kuilt #2086).

    - ``put(r, k, v)`` mints a dot whose value is ``v ⊔ (r's own previous contributions at k)`` and
      supersedes only r's own dots: other replicas' contributions stay. So two peers that both wrote
      a task's result each leave one contribution, and the key reads as their join.
    - ``remove(k)`` retires the dots it has observed; a concurrent ``put`` mints a dot the remover
      never saw, so the key survives with that contribution (add wins).
    - ``get(k)`` is the join of the contributions (a fresh object: mutating it does not touch the map).

    Mutators cost O(contributions at the key); joining a k-dot delta costs O(k).
    Values must all be of ``value_type``; the wire form carries each value tagged, and decoding
    checks every tag against the map's value type. Nested ORMaps are not supported (compose keys
    as tuples instead).
    """

    TYPE_TAG = 7
    __slots__ = ("_ds", "_vt")

    def __init__(self, value_type: type[V]) -> None:
        if not isinstance(value_type, type) or not issubclass(value_type, Crdt) or value_type is Crdt:
            raise TypeError(f"ORMap value_type must be a Crdt subclass, got {value_type!r}")
        if issubclass(value_type, ORMap):
            raise TypeError("ORMap values cannot be ORMaps: use tuple keys to nest")
        if registered_types().get(getattr(value_type, "TYPE_TAG", -1)) is not value_type:
            raise TypeError(f"{value_type.__name__} is not a registered CRDT type (no TYPE_TAG)")
        self._vt: type[V] = value_type
        self._ds: DotStore[V] = DotStore()

    @classmethod
    def _wrap(cls, vt: type[V], ds: DotStore[V]) -> ORMap[V]:
        m = cls.__new__(cls)
        m._vt = vt
        m._ds = ds
        return m

    def _with_store(self, ds: DotStore[V]) -> ORMap[V]:
        """A map of this one's value type around ``ds`` (used by difference repair)."""
        return ORMap._wrap(self._vt, ds)

    @property
    def value_type(self) -> type[V]:
        return self._vt

    # --- mutators --------------------------------------------------------------------------------

    def put(self, replica: str, key: Any, value: V) -> ORMap[V]:
        """Contribute ``value`` at ``key`` under a new dot; return the delta.

        The new contribution is ``value`` joined with ``replica``'s own previous contributions at the
        key, which it supersedes; other replicas' contributions are kept.
        """
        check_replica(replica)
        k = element_key(key)
        if type(value) is not self._vt:
            raise TypeError(f"ORMap value must be a {self._vt.__name__}, got {type(value).__name__}")
        ds = self._ds
        contribs = ds.store.get(k)
        new_val = value.copy()
        own: list[Dot] = []
        if contribs:
            # Check before mutating anything, so an incompatible value leaves the map untouched.
            first = next(iter(contribs.values()))
            err = first._join_error(value)
            if err is not None:
                raise IncompatibleJoin(err)
            own = [d for d in contribs if d[0] == replica]
            for d in own:
                new_val.join(contribs[d])
        dot = ds.ctx.next_dot(replica)
        delta: DotStore[V] = DotStore()
        for d in own:
            ds.remove_dot(d)
            delta.ctx._add(d)
        ds.ctx._add(dot)
        ds.add_dot(k, dot, new_val)
        delta.ctx._add(dot)
        delta.add_dot(k, dot, new_val.copy())
        return ORMap._wrap(self._vt, delta)

    def update(self, replica: str, key: Any, fn: Callable[[V], V]) -> ORMap[V]:
        """Put ``fn(current)``, where ``current`` is a copy of the key's joined value (bottom if absent)
        and ``fn`` returns a delta of the value, e.g. ``lambda reg: reg.set(replica, result)``.
        """
        current = self.get(key)
        if current is None:
            current = self._vt()
        return self.put(replica, key, fn(current))

    def update_many(self, replica: str, updates: Iterable[tuple[Any, Callable[[V], V]]]) -> ORMap[V]:
        """:meth:`update` for many distinct keys at once; return one delta covering all of them.

        Equivalent to one :meth:`update` per ``(key, fn)`` with the deltas joined, at a fraction of
        the cost (one delta is built instead of one per key, and joined once by the caller). Every
        ``fn`` is called and every value checked before anything changes, so an exception (a
        repeated key included, ``ValueError``) leaves the map untouched.
        """
        check_replica(replica)
        ds = self._ds
        store = ds.store
        vt = self._vt
        staged: list[tuple[Hashable, V, list[Dot]]] = []
        seen: set[Hashable] = set()
        for key, fn in updates:
            k = element_key(key)
            if k in seen:
                raise ValueError(f"update_many: key {key!r} appears twice")
            seen.add(k)
            contribs = store.get(k)
            if contribs:
                it = iter(contribs.values())
                current = next(it).copy()
                for v in it:
                    current.join(v)
            else:
                current = vt()
            value = fn(current)
            if type(value) is not vt:
                raise TypeError(f"ORMap value must be a {vt.__name__}, got {type(value).__name__}")
            new_val = value.copy()
            own: list[Dot] = []
            if contribs:
                err = next(iter(contribs.values()))._join_error(value)
                if err is not None:
                    raise IncompatibleJoin(err)
                own = [d for d in contribs if d[0] == replica]
                for d in own:
                    new_val.join(contribs[d])
            staged.append((k, new_val, own))
        # Nothing below can fail: apply, building the one delta as we go.
        delta: DotStore[V] = DotStore()
        dctx = delta.ctx
        ctx = ds.ctx
        for k, new_val, own in staged:
            dot = ctx.next_dot(replica)
            for d in own:
                ds.remove_dot(d)
                dctx._add(d)
            ctx._add(dot)
            ds.add_dot(k, dot, new_val)
            dctx._add(dot)
            delta.add_dot(k, dot, new_val.copy())
        return ORMap._wrap(vt, delta)

    def remove(self, key: Any) -> ORMap[V]:
        """Retire every observed contribution at ``key``; return the delta (bottom if absent)."""
        k = element_key(key)
        delta: DotStore[V] = DotStore()
        for d in self._ds.remove_key(k):
            delta.ctx._add(d)
        return ORMap._wrap(self._vt, delta)

    def remove_all(self, keys: Iterable[Any]) -> ORMap[V]:
        """Remove every key of ``keys``; return one delta covering all of them."""
        ks = [element_key(key) for key in keys]
        delta: DotStore[V] = DotStore()
        for k in ks:
            for d in self._ds.remove_key(k):
                delta.ctx._add(d)
        return ORMap._wrap(self._vt, delta)

    # --- queries ---------------------------------------------------------------------------------

    def get(self, key: Any) -> V | None:
        """The join of the key's contributions (a new object), or None if the key is absent."""
        try:
            contribs = self._ds.store.get(element_key(key))
        except TypeError:
            return None
        if not contribs:
            return None
        it = iter(contribs.values())
        out = next(it).copy()
        for v in it:
            out.join(v)
        return out

    def peek(self, key: Any) -> V | None:
        """The key's value without a copy when one contribution holds it (the common case), else
        the join of its contributions as :meth:`get` returns it; None if the key is absent.

        For hot read paths only: the object returned may be the map's own, so never mutate it. A
        key rewritten since (locally or by a join) holds a new object, so callers may cache what
        they derived from a value by its identity.
        """
        if type(key) is str and key.isascii():
            contribs = self._ds.store.get(key)  # its own internal key (element_key), on the hot path
        else:
            try:
                contribs = self._ds.store.get(element_key(key))
            except TypeError:
                return None
        if not contribs:
            return None
        if len(contribs) == 1:
            for v in contribs.values():
                return v
        return self.get(key)  # concurrent contributions: their join, a new object

    def contributions(self, key: Any) -> dict[Dot, V]:
        """Copies of the key's contributions by dot (one per replica that put it concurrently)."""
        contribs = self._ds.store.get(element_key(key), {})
        return {d: v.copy() for d, v in contribs.items()}

    def __contains__(self, key: object) -> bool:
        if type(key) is str and key.isascii():
            return key in self._ds.store
        try:
            return element_key(key) in self._ds.store
        except TypeError:
            return False

    def keys(self) -> list[Any]:
        """Keys in canonical order (by msgpack bytes)."""
        return [k if type(k) is str else key_element(k) for k in self._ds.sorted_keys()]

    def iter_keys(self) -> Iterator[Any]:
        """Keys in no promised order, without sorting: for reading a delta's keys on a hot path
        (a decoded delta holds them in wire order, which is the canonical one)."""
        for k in self._ds.store:
            yield k if type(k) is str else key_element(k)

    def items(self) -> list[tuple[Any, V]]:
        """``(key, joined value)`` pairs in canonical key order."""
        return [(key_element(k), self._joined(k)) for k in self._ds.sorted_keys()]

    def values(self) -> list[V]:
        """Joined values in canonical key order."""
        return [self._joined(k) for k in self._ds.sorted_keys()]

    def _joined(self, k: Hashable) -> V:
        it = iter(self._ds.store[k].values())
        out = next(it).copy()
        for v in it:
            out.join(v)
        return out

    def __iter__(self) -> Any:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._ds.store)

    @property
    def context(self) -> DotContext:
        """A copy of the causal context."""
        return self._ds.ctx.copy()

    # --- lattice and wire ------------------------------------------------------------------------

    def _join_error(self, other: Crdt) -> str | None:
        err = super()._join_error(other)
        if err is not None:
            return err
        assert isinstance(other, ORMap)
        if other._vt is not self._vt:
            return f"cannot join ORMap[{self._vt.__name__}] with ORMap[{other._vt.__name__}]"
        # Every value that will be joined with one of ours must be compatible with it (e.g. HLL
        # precisions). Within one state the contributions at a key are mutually compatible.
        mine_store = self._ds.store
        for k, contribs in other._ds.store.items():
            mine = mine_store.get(k)
            if mine:
                first = next(iter(mine.values()))
                for v in contribs.values():
                    err = first._join_error(v)
                    if err is not None:
                        return err
        return None

    def join(self, other: Self) -> None:
        self._check_join(other)
        self._ds.join(other._ds, _join_into, _copy)  # type: ignore[arg-type]  # V is a Crdt

    def absorb(self, other: Self) -> None:
        """:meth:`join`, adopting ``other``'s values instead of copies (see :meth:`Crdt.absorb`):
        a peer joins every received delta, so a copy per entry per peer is saved."""
        self._check_join(other)
        self._ds.join(other._ds, _join_into, None)  # type: ignore[arg-type]  # V is a Crdt

    def copy(self) -> ORMap[V]:
        return ORMap._wrap(self._vt, self._ds.copy(_copy))  # type: ignore[arg-type]

    def is_bottom(self) -> bool:
        return self._ds.is_bottom()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ORMap):
            return NotImplemented
        return self._vt is other._vt and self._ds == other._ds

    def to_wire(self) -> list[Any]:
        """``[value_tag, ctx, [[key, [[ri, seq, [tag, value]], ...]], ...]]`` in canonical order."""
        return [self._vt.TYPE_TAG, *self._ds.to_wire(key_element, _encode_value)]

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> ORMap[Any]:
        top = w_list(data, "ORMap", 3)
        tag = w_int(top[0], "ORMap value tag", 0, 0x7F)
        vt = registered_types().get(tag)
        if vt is None or vt is ORMap:
            raise CrdtDecodeError(f"ORMap value tag {tag} names no acceptable value type")

        # This decoder is guarded already: values are decoded by the value type's own unguarded
        # decoder, and the usual tag check runs only when the tag is not the expected one.
        expected_tag = vt.TYPE_TAG
        raw = getattr(vt.from_wire.__func__, "__wrapped__", None)  # type: ignore[attr-defined]

        def value_from_wire(v: Any) -> Crdt:
            if raw is not None and type(v) is list and len(v) == 2 and type(v[0]) is int and v[0] == expected_tag:
                return raw(vt, v[1])  # type: ignore[no-any-return]
            return w_tagged(v, vt, "ORMap value")

        ds = DotStore.from_wire(top[1:], wire_element, value_from_wire, "ORMap")
        for contribs in ds.store.values():
            it = iter(contribs.values())
            first = next(it)
            for v in it:
                err = first._join_error(v)
                if err is not None:
                    raise CrdtDecodeError(f"ORMap contributions at one key cannot be joined: {err}")
        return cls._wrap(vt, ds)  # type: ignore[arg-type]  # decoded values are of the declared type

    def __repr__(self) -> str:
        body = ", ".join(f"{k!r}: {v!r}" for k, v in self.items())
        return f"ORMap[{self._vt.__name__}]({{{body}}})"
