"""LWWRegister, MVRegister, GCounter and PNCounter semantics (and kuilt IncrementalExecutionTest's counters)."""

from __future__ import annotations

import itertools

import pytest

from warpmesh.crdt import GCounter, LWWRegister, MVRegister, PNCounter, decode, encode
from warpmesh.wire import pack, unpack

A, B, C = "a@1", "b@1", "c@1"


# --- LWWRegister -----------------------------------------------------------------------------------


def test_lww_bottom_has_no_value() -> None:
    r = LWWRegister()
    assert r.is_bottom() and r.value is None and r.timestamp is None and r.replica is None
    assert r.to_wire() == []


def test_lww_default_timestamp_is_a_lamport_step() -> None:
    a, b = LWWRegister(), LWWRegister()
    d1 = a.set(A, "first")
    assert d1.timestamp == 1 and a.value == "first"
    b.join(d1)
    d2 = b.set(B, "second")  # observed A's write, so it must win over it
    assert d2.timestamp == 2
    a.join(d2)
    assert a.value == b.value == "second"


def test_lww_concurrent_writes_tie_break_on_replica_id() -> None:
    a, b = LWWRegister(), LWWRegister()
    da = a.set(A, "from-a")
    db = b.set(B, "from-b")
    assert da.timestamp == db.timestamp == 1
    a.join(db)
    b.join(da)
    assert a == b and a.value == "from-b" and a.replica == B  # "b@1" > "a@1"


def test_lww_higher_timestamp_wins_whatever_the_replica() -> None:
    r = LWWRegister()
    r.set(B, "old", timestamp=5)
    d = r.set(A, "older", timestamp=4)  # loses: the state is unchanged, the delta is dominated
    assert r.value == "old" and d.value == "older"
    r.set(A, "new", timestamp=6)
    assert r.value == "new"


def test_lww_same_tag_different_values_still_joins_deterministically() -> None:
    # Only a reused replica id can produce this; the join must still commute.
    x, y = LWWRegister(3, A, "x"), LWWRegister(3, A, "y")
    xy, yx = x.copy(), y.copy()
    xy.join(y)
    yx.join(x)
    assert xy == yx


def test_lww_none_is_a_value_distinct_from_bottom() -> None:
    r = LWWRegister()
    r.set(A, None)
    assert not r.is_bottom() and r.value is None and decode(encode(r)) == r


def test_lww_validates_arguments() -> None:
    with pytest.raises(ValueError):
        LWWRegister(None, A, "v")
    with pytest.raises(ValueError):
        LWWRegister().set(A, "v", timestamp=-1)
    with pytest.raises(TypeError):
        LWWRegister().set("", "v")
    with pytest.raises(TypeError):
        LWWRegister().set(A, ["list"])


# --- MVRegister ------------------------------------------------------------------------------------


def test_mv_concurrent_writes_are_both_kept_then_overwritten() -> None:
    a, b = MVRegister(), MVRegister()
    da = a.write(A, "left")
    db = b.write(B, "right")
    a.join(db)
    b.join(da)
    assert a.values == b.values == ["left", "right"]
    dc = a.write(A, "merged")  # has seen both
    b.join(dc)
    assert a.values == b.values == ["merged"]


def test_mv_write_after_observing_replaces_and_stale_delta_does_not_resurrect() -> None:
    a, b = MVRegister(), MVRegister()
    d1 = a.write(A, 1)
    b.join(d1)
    d2 = b.write(B, 2)
    a.join(d2)
    a.join(d1)  # a late duplicate of the overwritten write
    assert a.values == [2]


def test_mv_equal_concurrent_values_are_listed_once() -> None:
    a, b = MVRegister(), MVRegister()
    a.join(b.write(B, "same"))
    b.join(a.write(C, "same"))  # a (as replica C) had seen B's write: replaces it
    x, y = MVRegister(), MVRegister()
    dx, dy = x.write(A, "v"), y.write(B, "v")
    x.join(dy)
    y.join(dx)
    assert x.values == ["v"] and len(x.dots) == 2


# --- GCounter / PNCounter --------------------------------------------------------------------------


def test_gcounter_value_is_the_sum_of_replica_slots() -> None:
    a, b = GCounter(), GCounter()
    a.inc(A, 3)
    b.inc(B, 2)
    b.inc(B)
    a.join(b)
    assert a.value == 6 and a.slots == {A: 3, B: 3}


def test_gcounter_delta_holds_the_absolute_slot_so_same_replica_deltas_join_as_max() -> None:
    c = GCounter()
    d1 = c.inc(A, 3)
    d2 = c.inc(A, 2)
    assert d1.slots == {A: 3} and d2.slots == {A: 5}
    r = GCounter()
    r.join(d2)
    r.join(d1)
    assert r == c and r.value == 5
    # Contributions from the same replica give their max, not their sum (kuilt §3).
    s = GCounter({A: 3})
    s.join(GCounter({A: 2}))
    assert s.value == 3


def test_incremental_results_contributions_from_five_replicas_sum_in_any_order() -> None:
    """kuilt IncrementalExecutionTest: r1..r5 with counts 1..5 give 15, non-decreasing, order- and
    duplication-independent."""
    contribs = [GCounter({f"r{i}@1": i}) for i in range(1, 6)]
    for perm in itertools.permutations(contribs):
        acc, last = GCounter(), 0
        for c in perm + perm[:2]:
            acc.join(c)
            assert acc.value >= last
            last = acc.value
        assert acc.value == 15


def test_gcounter_rejects_negative_and_overflowing_increments() -> None:
    c = GCounter()
    with pytest.raises(ValueError):
        c.inc(A, -1)
    c.inc(A, 2**64 - 1)
    with pytest.raises(OverflowError):
        c.inc(A)
    assert c.value == 2**64 - 1
    assert c.inc(B, 0).is_bottom()


def test_pncounter_increments_and_decrements() -> None:
    a, b = PNCounter(), PNCounter()
    a.inc(A, 10)
    b.dec(B, 4)
    d = a.dec(A, 1)
    b.join(a)
    a.join(b)
    assert a == b and a.value == 5
    r = PNCounter()
    r.join(d)
    assert r.value == -1 and r.decrements.value == 1 and r.increments.value == 0


@pytest.mark.parametrize("value", [b"", b"\x00packed", "ascii", "ünïcode", 7, None, ("a", 1), 1.5])
def test_lww_from_wire_fast_path_matches_the_checked_decoder(value: object) -> None:
    reg = LWWRegister(3, "a@1", value)
    back = LWWRegister.from_wire(unpack(pack(reg.to_wire())))
    assert back._sort_key() == reg._sort_key() and back == reg and back.value == reg.value


def test_lww_decoded_bytes_values_break_a_tie_as_constructed_ones_do() -> None:
    """A decoded register computes its value's key only when a tie needs it: the same winner."""
    x, y = LWWRegister(3, A, b"x-bytes"), LWWRegister(3, A, b"y")
    for left, right in itertools.permutations([x, y]):
        decoded = LWWRegister.from_wire(unpack(pack(right.to_wire())))
        a, b = left.copy(), LWWRegister.from_wire(unpack(pack(left.to_wire())))
        a.join(decoded)
        b.join(right)
        expected = max([x, y], key=lambda r: pack(r.value))
        assert a.value == b.value == expected.value and a == b == expected
