"""A minimal lattice for exercising the Quilter independently of warpmesh.crdt: key -> max int."""

from __future__ import annotations

from typing import Any

import blake3

from warpmesh.wire import pack


class MaxMap:
    def __init__(self, items: dict[str, int] | None = None) -> None:
        self.items = dict(items or {})

    def join(self, other: MaxMap) -> None:
        for k, v in other.items.items():
            if v > self.items.get(k, -1):
                self.items[k] = v

    def copy(self) -> MaxMap:
        return MaxMap(self.items)

    def is_bottom(self) -> bool:
        return not self.items

    def put(self, key: str, value: int) -> MaxMap:
        delta = MaxMap({key: value})
        self.join(delta)
        return delta

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MaxMap) and self.items == other.items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"MaxMap({self.items})"


class MaxMapCodec:
    def encode(self, state: MaxMap) -> Any:
        return sorted(state.items.items())

    def decode(self, wire: Any) -> MaxMap:
        if not isinstance(wire, list):
            raise ValueError("not a list")
        out = {}
        for pair in wire:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)
                    and isinstance(pair[1], int)):
                raise ValueError("bad pair")
            out[pair[0]] = pair[1]
        return MaxMap(out)

    def digest(self, state: MaxMap) -> bytes:
        return blake3.blake3(pack(self.encode(state))).digest(16)


CODEC = MaxMapCodec()
