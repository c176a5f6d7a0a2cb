"""The :class:`Crdt` contract, the type registry, tagged encoding, digests and replica identity.

Every replicated type is a join-semilattice with in-place ``join`` and delta-returning mutators
(delta-state CRDTs, Almeida, Shoker and Baquero, "Delta State Replicated Data Types", 2018). A type
travels as ``[TYPE_TAG, to_wire()]``; ``to_wire`` is canonical, so equal states encode to identical
bytes and the BLAKE3 :func:`digest` of a state identifies it (anti-entropy compares digests).

Elements, keys and register values are *msgpack scalars*: ``None``, ``bool``, ``int`` (64-bit
msgpack range), ``float``, ``str`` (UTF-8 encodable), ``bytes``, and tuples of these. Two values are
the same element exactly when their msgpack encodings are identical, so ``1``, ``1.0`` and ``True``
are three distinct elements and ``0.0`` differs from ``-0.0``. Python would conflate them, and two
replicas that inserted them in different orders would then hold "equal" states with different bytes
and never agree on a digest.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Self, TypeVar

import blake3

from warpmesh.errors import DecodeError, WarpmeshError
from warpmesh.wire.frame import pack, unpack

__all__ = [
    "DIGEST_SIZE",
    "Crdt",
    "CrdtDecodeError",
    "IncompatibleJoin",
    "decode",
    "digest",
    "encode",
    "encoded_bytes",
    "parse_replica_id",
    "registered_types",
    "replica_id",
]

#: Length of :func:`digest` in bytes (128 bits: collisions are not a practical concern).
DIGEST_SIZE = 16

#: Deepest tuple nesting accepted in an element; deeper values are refused rather than recursed.
MAX_ELEMENT_DEPTH = 32

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1


class CrdtDecodeError(DecodeError):
    """Wire data does not describe a valid state of the expected type (garbage or a hostile peer)."""


class IncompatibleJoin(WarpmeshError, ValueError):
    """Two states cannot be joined (different types, ORMap value types or HLL precisions).

    Raised by ``join`` *before* anything is mutated, so the receiving state is left untouched.
    """


_REGISTRY: dict[int, type[Crdt]] = {}


class Crdt(ABC):
    """A state-based CRDT whose mutators return deltas.

    Laws (property-tested for every subclass): ``join`` is commutative, associative and idempotent;
    for a mutator ``m``, ``s.copy().join(m(s))`` equals ``s`` after ``m``; ``decode(encode(x)) == x``;
    ``digest(x) == digest(y)`` exactly when ``x == y``.
    """

    __slots__ = ()

    #: Unique small integer naming the type on the wire. Subclasses that set it are registered.
    TYPE_TAG: ClassVar[int]

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        tag = cls.__dict__.get("TYPE_TAG")
        if tag is None:
            return
        if type(tag) is not int or not 0 <= tag <= 0x7F:
            raise TypeError(f"{cls.__name__}.TYPE_TAG must be an int in 0..127, got {tag!r}")
        other = _REGISTRY.get(tag)
        if other is not None and other.__qualname__ != cls.__qualname__:
            raise TypeError(f"TYPE_TAG {tag} of {cls.__name__} is already used by {other.__name__}")
        _REGISTRY[tag] = cls

    @abstractmethod
    def join(self, other: Self) -> None:
        """Replace this state with the least upper bound of itself and ``other`` (in place)."""

    def absorb(self, other: Self) -> None:
        """:meth:`join` ``other``, which the caller gives up: this state may keep parts of it.

        For a state nobody else holds, such as a delta just decoded from the wire: joining it then
        need not copy what it adopts. ``other`` may be read right after the call (say, for its keys)
        but must not be kept. The default is :meth:`join`.
        """
        self.join(other)

    @abstractmethod
    def copy(self) -> Self:
        """An independent copy: mutating either never affects the other."""

    @abstractmethod
    def is_bottom(self) -> bool:
        """True for the initial (empty) state, the identity of ``join``."""

    @abstractmethod
    def to_wire(self) -> Any:
        """Canonical msgpack-able structure: equal states give identical structures."""

    @classmethod
    @abstractmethod
    def from_wire(cls, data: Any) -> Self:
        """Validate and build a state from :meth:`to_wire` output. Raises :class:`CrdtDecodeError`."""

    @abstractmethod
    def __eq__(self, other: object) -> bool: ...

    def _join_error(self, other: Crdt) -> str | None:
        """Why ``self.join(other)`` is impossible, or None. Must not mutate. Overridden for nesting."""
        if type(other) is not type(self):
            return f"cannot join {type(self).__name__} with {type(other).__name__}"
        return None

    def _check_join(self, other: Crdt) -> None:
        err = self._join_error(other)
        if err is not None:
            raise IncompatibleJoin(err)


def registered_types() -> dict[int, type[Crdt]]:
    """A copy of the tag → type registry."""
    return dict(_REGISTRY)


def encode(x: Crdt) -> list[Any]:
    """The tagged wire form ``[TYPE_TAG, x.to_wire()]``."""
    return [x.TYPE_TAG, x.to_wire()]


def decode(data: Any) -> Crdt:
    """Build a state from :func:`encode` output, dispatching on the tag. Raises :class:`CrdtDecodeError`."""
    if type(data) is not list or len(data) != 2:
        raise CrdtDecodeError("a CRDT must travel as [type_tag, state]")
    tag = data[0]
    if type(tag) is not int:
        raise CrdtDecodeError(f"type tag must be an int, got {type(tag).__name__}")
    cls = _REGISTRY.get(tag)
    if cls is None:
        raise CrdtDecodeError(f"unknown CRDT type tag {tag}")
    return cls.from_wire(data[1])


def encoded_bytes(x: Crdt) -> bytes:
    """The msgpack bytes of :func:`encode` (canonical: equal states give identical bytes)."""
    return pack(encode(x))


def digest(x: Crdt) -> bytes:
    """16-byte BLAKE3 digest of :func:`encoded_bytes`: equal states ⇔ equal digests."""
    return blake3.blake3(encoded_bytes(x)).digest(length=DIGEST_SIZE)


# --- replica identity ---------------------------------------------------------------------------------


def replica_id(node_id: str, incarnation: int) -> str:
    """The replica id ``"{node_id}@{incarnation}"`` under which a node mints dots and timestamps.

    Each boot of a node must use a fresh, strictly larger incarnation (the mesh handshake's per-boot
    incarnation number). A restarted node that reused its old replica id would restart its dot
    counter at 1 and mint dots its previous life already minted; two different adds carrying one dot
    annihilate each other on join (kuilt #2077 lost 919 of 1200 tasks this way).
    """
    if type(node_id) is not str or not node_id:
        raise ValueError("node_id must be a non-empty string")
    if type(incarnation) is not int or incarnation < 0:
        raise ValueError(f"incarnation must be a non-negative int, got {incarnation!r}")
    return f"{node_id}@{incarnation}"


def parse_replica_id(rid: str) -> tuple[str, int]:
    """Inverse of :func:`replica_id`. Raises ValueError if ``rid`` has no ``@incarnation`` suffix."""
    node, sep, inc = rid.rpartition("@")
    if not sep or not node or not inc.isdigit():
        raise ValueError(f"not a replica id of the form node@incarnation: {rid!r}")
    return node, int(inc)


def check_replica(replica: object) -> str:
    """Validate a replica id argument of a mutator."""
    if type(replica) is not str or not replica:
        raise TypeError(f"replica must be a non-empty str, got {replica!r}")
    return replica


# --- elements -------------------------------------------------------------------------------------------
#
# Internally an element is identified by a *key*: the element itself when it is a str (the common
# case: task ids, op ids), otherwise its msgpack bytes. A str never equals a bytes object, so the two
# key spaces cannot collide, and two keys are equal exactly when the encodings are.


def _check_value(v: object, depth: int) -> None:
    t = type(v)
    if t is str:
        if not v.isascii():  # type: ignore[attr-defined]
            try:
                v.encode("utf-8")  # type: ignore[attr-defined]
            except UnicodeEncodeError:
                raise TypeError("str elements must be encodable as UTF-8 (no lone surrogates)") from None
    elif t is int:
        if not _INT_MIN <= v <= _INT_MAX:  # type: ignore[operator]
            raise TypeError(f"int {v} is outside the msgpack range [-2**63, 2**64-1]")
    elif t is tuple:
        if depth >= MAX_ELEMENT_DEPTH:
            raise TypeError(f"tuples nested deeper than {MAX_ELEMENT_DEPTH} are not accepted")
        for item in v:  # type: ignore[attr-defined]
            _check_value(item, depth + 1)
    elif t not in (bytes, float, bool, type(None)):
        raise TypeError(
            f"elements, keys and values must be None, bool, int, float, str, bytes or tuples of "
            f"these; got {t.__name__}"
        )


def element_key(v: object) -> Hashable:
    """Validate ``v`` as an element and return its internal key. Raises TypeError if not acceptable."""
    if type(v) is str and v.isascii():
        return v
    _check_value(v, 0)
    if type(v) is str:
        return v
    return pack(v)


def key_element(k: Hashable) -> Any:
    """The element an internal key stands for (inverse of :func:`element_key`)."""
    if type(k) is str:
        return k
    return _tuplify(unpack(k))  # type: ignore[arg-type]


def sort_bytes(k: Hashable) -> bytes:
    """The canonical sort key of an internal key: the element's msgpack bytes."""
    return k if type(k) is bytes else pack(k)


def _tuplify(v: Any) -> Any:
    if type(v) is list:
        return tuple(_tuplify(x) for x in v)
    return v


def wire_element(v: Any, what: str = "element") -> tuple[Hashable, Any]:
    """Validate a decoded element (arrays become tuples); return ``(key, element)``. CrdtDecodeError."""
    try:
        e = _from_wire_value(v, 0)
        return element_key(e), e
    except TypeError as err:
        raise CrdtDecodeError(f"invalid {what}: {err}") from None


def _from_wire_value(v: Any, depth: int) -> Any:
    if type(v) is list:
        if depth >= MAX_ELEMENT_DEPTH:
            raise TypeError(f"arrays nested deeper than {MAX_ELEMENT_DEPTH} are not accepted")
        return tuple(_from_wire_value(x, depth + 1) for x in v)
    return v


# --- wire validation helpers (all raise CrdtDecodeError) -------------------------------------------------


def w_list(v: Any, what: str, length: int | None = None) -> list[Any]:
    if type(v) is not list:
        raise CrdtDecodeError(f"{what} must be an array, got {type(v).__name__}")
    if length is not None and len(v) != length:
        raise CrdtDecodeError(f"{what} must have {length} items, got {len(v)}")
    return v


def w_int(v: Any, what: str, lo: int = _INT_MIN, hi: int = _INT_MAX) -> int:
    if type(v) is not int:
        raise CrdtDecodeError(f"{what} must be an int, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise CrdtDecodeError(f"{what} {v} is outside {lo}..{hi}")
    return v


def w_replica(v: Any, what: str = "replica id") -> str:
    if type(v) is not str or not v:
        raise CrdtDecodeError(f"{what} must be a non-empty str")
    return v


def w_tagged(v: Any, expected: type[Crdt], what: str) -> Crdt:
    """Decode a nested tagged value and check it is exactly of type ``expected``."""
    lst = w_list(v, what, 2)
    if lst[0] != expected.TYPE_TAG or type(lst[0]) is not int:
        raise CrdtDecodeError(f"{what} has tag {lst[0]!r}, expected {expected.TYPE_TAG} ({expected.__name__})")
    return expected.from_wire(lst[1])


T = TypeVar("T", bound=Crdt)

_CONVERTED = (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)


def guarded_from_wire(fn: Callable[[type[T], Any], T]) -> Callable[[type[T], Any], T]:
    """Wrap a ``from_wire`` so that no exception but :class:`CrdtDecodeError` escapes.

    The validators above name what is wrong; this is the backstop that keeps the contract even where
    a check was missed.
    """

    def wrapper(cls: type[T], data: Any) -> T:
        try:
            return fn(cls, data)
        except CrdtDecodeError:
            raise
        except _CONVERTED as err:
            raise CrdtDecodeError(f"malformed {cls.__name__}: {type(err).__name__}: {err}") from None

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]  # for a caller already inside a guard
    return wrapper
