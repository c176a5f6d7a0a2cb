"""HyperLogLog cardinality sketches (a CRDT: join is the register-wise max) and MurmurHash3 x86_32.

Compatible with kuilt's ``HyperLogLog`` (report §4.5): MurmurHash3_x86_32 with seed 0 over the UTF-8
bytes of a str (bytes as-is; any other element over its msgpack bytes), the register index is the
top ``p`` bits of the hash, and a register keeps the largest rank ρ (position of the first 1-bit in
the remaining ``32 - p`` bits, or ``32 - p + 1`` if they are all 0). The estimate is Flajolet et
al.'s with linear counting below ``2.5 m``; no large-range correction (with a 32-bit hash it would
matter only above ~10^8 distinct items) and no HLL++ bias table. Relative standard error ≈ 1.04/√m
(0.81 % at the default p = 14).
"""

from __future__ import annotations

import math
import struct
from typing import Any, Self

from warpmesh.crdt.base import Crdt, CrdtDecodeError, element_key, guarded_from_wire, w_int, w_list
from warpmesh.wire.frame import pack

__all__ = ["HyperLogLog", "murmur3_x86_32"]

_M32 = 0xFFFFFFFF
_C1 = 0xCC9E2D51
_C2 = 0x1B873593
_WORDS = [struct.Struct(f"<{i}I") for i in range(64)]


def murmur3_x86_32(data: bytes | bytearray | memoryview, seed: int = 0) -> int:
    """MurmurHash3_x86_32 (Appleby) of ``data`` with ``seed``, as an unsigned 32-bit int.

    Pure Python, ~1.5 µs for a short key: the 4-byte blocks are decoded in one ``struct`` call and
    mixed in a tight loop with local constants.
    """
    n = len(data)
    nblocks = n >> 2
    h = seed & _M32
    if nblocks:
        if nblocks < 64:
            words = _WORDS[nblocks].unpack_from(data)
        else:
            words = struct.unpack_from(f"<{nblocks}I", data)
        for k in words:
            k = (k * _C1) & _M32
            k = ((k << 15) | (k >> 17)) & _M32
            h ^= (k * _C2) & _M32
            h = ((h << 13) | (h >> 19)) & _M32
            h = (h * 5 + 0xE6546B64) & _M32
    if n & 3:
        k = int.from_bytes(data[nblocks << 2 :], "little")
        k = (k * _C1) & _M32
        k = ((k << 15) | (k >> 17)) & _M32
        h ^= (k * _C2) & _M32
    # fmix32
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def _item_bytes(item: Any) -> bytes:
    t = type(item)
    if t is str:
        encoded: bytes = item.encode("utf-8")
        return encoded
    if t is bytes:
        raw: bytes = item
        return raw
    element_key(item)  # validates (TypeError for unacceptable items)
    return pack(item)


MIN_PRECISION = 4
MAX_PRECISION = 18
DEFAULT_PRECISION = 14


class HyperLogLog(Crdt):
    """A HyperLogLog sketch with ``2**precision`` registers; ``add`` returns a one-register delta.

    Registers are kept sparse (a dict) while few are set and dense (a bytearray) after, so deltas and
    small sketches stay small. Joining sketches of different precisions raises ValueError
    (:class:`~warpmesh.crdt.base.IncompatibleJoin`) before anything changes.
    """

    TYPE_TAG = 8
    __slots__ = ("_dense", "_m", "_p", "_sparse")

    def __init__(self, precision: int = DEFAULT_PRECISION) -> None:
        if type(precision) is not int or not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise ValueError(f"HyperLogLog precision must be an int in {MIN_PRECISION}..{MAX_PRECISION}")
        self._p = precision
        self._m = 1 << precision
        self._sparse: dict[int, int] | None = {}
        self._dense: bytearray | None = None

    @property
    def precision(self) -> int:
        return self._p

    def _threshold(self) -> int:
        # Past this many set registers a dict costs more memory and time than the flat array.
        return max(16, self._m >> 5)

    def _densify(self) -> bytearray:
        if self._dense is None:
            regs = bytearray(self._m)
            for i, v in (self._sparse or {}).items():
                regs[i] = v
            self._dense = regs
            self._sparse = None
        return self._dense

    def _set_max(self, i: int, v: int) -> bool:
        if self._dense is not None:
            if v > self._dense[i]:
                self._dense[i] = v
                return True
            return False
        sparse = self._sparse
        assert sparse is not None
        if v > sparse.get(i, 0):
            sparse[i] = v
            if len(sparse) > self._threshold():
                self._densify()
            return True
        return False

    def add(self, item: Any) -> HyperLogLog:
        """Observe ``item``; return the delta (one register, or bottom if nothing changed)."""
        h = murmur3_x86_32(_item_bytes(item))
        q = 32 - self._p
        i = h >> q
        rho = q - (h & ((1 << q) - 1)).bit_length() + 1
        d = HyperLogLog(self._p)
        if self._set_max(i, rho):
            d._sparse[i] = rho  # type: ignore[index]
        return d

    def _nonzero(self) -> dict[int, int]:
        if self._dense is None:
            return dict(self._sparse or {})
        return {i: v for i, v in enumerate(self._dense) if v}

    def estimate(self) -> float:
        """Estimated number of distinct items observed (a float; 0.0 for an empty sketch)."""
        m = self._m
        if self._dense is not None:
            regs = self._dense
            counts = [regs.count(v) for v in range(34 - self._p)]
            zeros = counts[0]
            total = math.fsum(c * 2.0**-v for v, c in enumerate(counts))
        else:
            sparse = self._sparse or {}
            zeros = m - len(sparse)
            total = zeros + math.fsum(2.0**-v for v in sparse.values())
        if m == 16:
            alpha = 0.673
        elif m == 32:
            alpha = 0.697
        elif m == 64:
            alpha = 0.709
        else:
            alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / total
        if raw <= 2.5 * m:
            return m * math.log(m / zeros) if zeros else raw
        return raw

    def __len__(self) -> int:
        """``round(estimate())``."""
        return round(self.estimate())

    def _join_error(self, other: Crdt) -> str | None:
        err = super()._join_error(other)
        if err is None and other._p != self._p:  # type: ignore[attr-defined]
            return f"cannot join HyperLogLog precisions {self._p} and {other._p}"  # type: ignore[attr-defined]
        return err

    def join(self, other: Self) -> None:
        self._check_join(other)
        if other._dense is None:
            for i, v in (other._sparse or {}).items():
                self._set_max(i, v)
            return
        if self._dense is None:
            mine = self._sparse or {}
            self._dense = bytearray(other._dense)
            self._sparse = None
            for i, v in mine.items():
                self._set_max(i, v)
            return
        if self._dense != other._dense:
            self._dense = bytearray(map(max, self._dense, other._dense))

    def copy(self) -> HyperLogLog:
        c = HyperLogLog.__new__(HyperLogLog)
        c._p, c._m = self._p, self._m
        c._sparse = None if self._sparse is None else dict(self._sparse)
        c._dense = None if self._dense is None else bytearray(self._dense)
        return c

    def is_bottom(self) -> bool:
        if self._dense is None:
            return not self._sparse
        return not any(self._dense)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HyperLogLog):
            return NotImplemented
        if self._p != other._p:
            return False
        if self._dense is None and other._dense is None:
            return self._sparse == other._sparse
        return self._as_bytes() == other._as_bytes()

    def _as_bytes(self) -> bytes:
        if self._dense is not None:
            return bytes(self._dense)
        regs = bytearray(self._m)
        for i, v in (self._sparse or {}).items():
            regs[i] = v
        return bytes(regs)

    def to_wire(self) -> list[Any]:
        """``[precision, registers]``: registers as a flat ``[index, rank, ...]`` list (ascending index)
        while that is smaller (4 × set registers < m), else as ``m`` bytes, one per register.
        """
        nz = self._nonzero()
        if 4 * len(nz) < self._m:
            flat: list[int] = []
            for i in sorted(nz):
                flat.append(i)
                flat.append(nz[i])
            return [self._p, flat]
        return [self._p, self._as_bytes()]

    @classmethod
    @guarded_from_wire
    def from_wire(cls, data: Any) -> HyperLogLog:
        p_raw, regs = w_list(data, "HyperLogLog", 2)
        p = w_int(p_raw, "HyperLogLog precision", MIN_PRECISION, MAX_PRECISION)
        h = cls(p)
        top = 33 - p  # largest possible rank
        if type(regs) is bytes:
            if len(regs) != h._m:
                raise CrdtDecodeError(f"HyperLogLog registers must be {h._m} bytes, got {len(regs)}")
            if regs and max(regs) > top:
                raise CrdtDecodeError(f"HyperLogLog register exceeds the largest rank {top}")
            nz = h._m - regs.count(0)
            if nz > h._threshold():
                h._dense = bytearray(regs)
                h._sparse = None
            else:
                h._sparse = {i: v for i, v in enumerate(regs) if v}
            return h
        flat = w_list(regs, "HyperLogLog registers")
        if len(flat) % 2:
            raise CrdtDecodeError("sparse HyperLogLog registers must be [index, rank] pairs")
        prev = -1
        for j in range(0, len(flat), 2):
            i = w_int(flat[j], "HyperLogLog register index", 0, h._m - 1)
            v = w_int(flat[j + 1], "HyperLogLog rank", 1, top)
            if i <= prev:
                raise CrdtDecodeError("sparse HyperLogLog register indexes must ascend")
            prev = i
            h._set_max(i, v)
        return h

    def __repr__(self) -> str:
        return f"HyperLogLog(precision={self._p}, estimate={self.estimate():.1f})"
