"""HyperLogLog and MurmurHash3: test vectors, accuracy, merging, and kuilt WarpStatsTest / planner figures."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warpmesh.crdt import CrdtDecodeError, HyperLogLog, IncompatibleJoin, decode, encode, murmur3_x86_32
from warpmesh.wire import pack, unpack


def murmur_reference(data: bytes, seed: int = 0) -> int:
    """Appleby's MurmurHash3_x86_32 written out plainly, byte by byte, as an independent check."""
    mask = 0xFFFFFFFF

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & mask

    h = seed
    n = len(data)
    body = n - n % 4
    for i in range(0, body, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = rotl((k * 0xCC9E2D51) & mask, 15) * 0x1B873593 & mask
        h = (rotl(h ^ k, 13) * 5 + 0xE6546B64) & mask
    k = 0
    tail = data[body:]
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if len(tail) >= 1:
        k ^= tail[0]
        h ^= rotl((k * 0xCC9E2D51) & mask, 15) * 0x1B873593 & mask
    h ^= n
    h ^= h >> 16
    h = h * 0x85EBCA6B & mask
    h ^= h >> 13
    h = h * 0xC2B2AE35 & mask
    return h ^ (h >> 16)


@pytest.mark.parametrize(
    ("data", "seed", "expected"),
    [
        (b"hello", 0, 0x248BFA47),  # kuilt's pinned vectors (report §4.5)
        (b"test", 0, 0xBA6BD213),
        (b"", 0, 0),
        (b"", 1, 0x514E28B7),
        (b"", 0xFFFFFFFF, 0x81F16F39),
        (b"\0\0\0\0", 0, 0x2362F9DE),
        (b"aaaa", 0x9747B28C, 0x5A97808A),
        (b"Hello, world!", 0x9747B28C, 0x24884CBA),
        (b"The quick brown fox jumps over the lazy dog", 0x9747B28C, 0x2FA826CD),
    ],
)
def test_murmur3_vectors(data: bytes, seed: int, expected: int) -> None:
    assert murmur3_x86_32(data, seed) == expected
    assert murmur_reference(data, seed) == expected


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), seed=st.integers(0, 2**32 - 1))
def test_murmur3_matches_the_plain_reference(data: bytes, seed: int) -> None:
    assert murmur3_x86_32(data, seed) == murmur_reference(data, seed)
    assert murmur3_x86_32(bytearray(data), seed) == murmur3_x86_32(memoryview(data), seed)


def test_items_hash_as_utf8_bytes_or_msgpack() -> None:
    def reg(item: object) -> tuple[int, int]:
        h = HyperLogLog(14)
        d = h.add(item)
        ((i, v),) = zip(*[iter(d.to_wire()[1])] * 2)
        return i, v

    hv = 0x248BFA47
    assert reg("hello") == (hv >> 18, 18 - (hv & (2**18 - 1)).bit_length() + 1)
    assert reg("hello") == reg(b"hello")
    assert reg("ü") == reg("ü".encode())
    assert reg(12345) == reg(pack(12345))
    with pytest.raises(TypeError):
        HyperLogLog().add([1, 2])


def test_empty_sketch_estimates_zero() -> None:
    h = HyperLogLog()
    assert h.estimate() == 0.0 and h.is_bottom() and len(h) == 0


def test_within_two_percent_on_100k_distinct_items() -> None:
    h = HyperLogLog()
    for i in range(100_000):
        h.add(f"item-{i}")
    assert abs(h.estimate() - 100_000) / 100_000 < 0.02


def test_merged_sketches_equal_the_sketch_of_the_union() -> None:
    a, b, union = HyperLogLog(), HyperLogLog(), HyperLogLog()
    for i in range(0, 30_000):
        a.add(i)
        union.add(i)
    for i in range(20_000, 50_000):
        b.add(i)
        union.add(i)
    a.join(b)
    assert a == union
    assert abs(a.estimate() - 50_000) / 50_000 < 0.02


def test_precision_mismatch_raises_value_error_and_leaves_the_sketch_alone() -> None:
    a, b = HyperLogLog(14), HyperLogLog(12)
    a.add("x")
    b.add("y")
    before = a.copy()
    with pytest.raises(ValueError):
        a.join(b)
    with pytest.raises(IncompatibleJoin):
        a.join(b)
    assert a == before
    for bad in (3, 19, 14.0, True):
        with pytest.raises(ValueError):
            HyperLogLog(bad)  # type: ignore[arg-type]


def test_add_delta_is_one_register_or_bottom() -> None:
    h = HyperLogLog()
    d = h.add("doc")
    assert len(d.to_wire()[1]) == 2 and not d.is_bottom()
    assert h.add("doc").is_bottom()  # nothing changed
    assert len(pack(encode(d))) <= 10


def test_sparse_and_dense_forms_are_one_canonical_state() -> None:
    p = 8  # m = 256: small enough to cross both thresholds quickly
    grow, deltas = HyperLogLog(p), HyperLogLog(p)
    formats = set()
    for i in range(2000):
        deltas.join(grow.add(i))
        wire = grow.to_wire()
        formats.add(type(wire[1]))
        assert decode(unpack(pack(encode(grow)))) == grow
    assert formats == {list, bytes}
    assert deltas == grow
    # A dense encoding of a sparse state is accepted and re-encodes canonically.
    small = HyperLogLog(p)
    small.add("x")
    dense_wire = [p, small.copy()._as_bytes()]
    back = HyperLogLog.from_wire(dense_wire)
    assert back == small and back.to_wire() == small.to_wire()


@pytest.mark.parametrize(
    "bad",
    [
        [14, b"\x00" * 100],  # wrong register count
        [8, b"\x30" * 256],  # rank above 33 - p
        [8, [1, 1, 1, 2]],  # repeated index
        [8, [2, 1, 1, 1]],  # not ascending
        [8, [256, 1]],  # index out of range
        [8, [0, 0]],  # zero rank listed
        [8, [0]],  # odd length
        [3, []],
        [19, []],
        [8],
    ],
)
def test_from_wire_refuses_malformed_sketches(bad: object) -> None:
    with pytest.raises(CrdtDecodeError):
        HyperLogLog.from_wire(bad)


# --- WarpStatsTest and the planner's cardinalities (kuilt §2.5, §2.6) ---------------------------------


def test_warpstats_500_elements_within_5_percent() -> None:
    h = HyperLogLog()
    for i in range(500):
        h.add(f"elem-{i}")
    assert abs(h.estimate() - 500) / 500 <= 0.05


def test_warpstats_100_identical_elements_estimate_at_most_5() -> None:
    h = HyperLogLog()
    for _ in range(100):
        h.add("same")
    assert h.estimate() <= 5


def test_warpstats_join_of_deltas_equals_full_state() -> None:
    h, acc = HyperLogLog(), HyperLogLog()
    for i in range(3000):
        acc.join(h.add(f"e{i}"))
    assert acc == h


def test_planner_golden_cardinalities() -> None:
    """kuilt PlannerGoNoGoTest: HLL(doc_1..1000) = 1006 and HLL(doc_{20i}, i = 1..50) = 50."""
    docs, filtered = HyperLogLog(), HyperLogLog()
    for i in range(1, 1001):
        docs.add(f"doc_{i}")
    for i in range(1, 51):
        filtered.add(f"doc_{20 * i}")
    assert round(docs.estimate()) == 1006
    assert round(filtered.estimate()) == 50
    # Merged two-peer sketches (300 docs seen by both) read the same as one peer seeing all.
    a, b = HyperLogLog(), HyperLogLog()
    for i in range(1, 651):
        a.add(f"doc_{i}")
    for i in range(351, 1001):
        b.add(f"doc_{i}")
    a.join(b)
    assert a == docs and round(a.estimate()) == 1006
