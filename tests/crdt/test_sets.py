"""GSet and ORSet semantics, including the ported kuilt ``WorkQueueTest`` scenarios (ORSet queue)."""

from __future__ import annotations

import itertools

import pytest

from warpmesh.crdt import Dot, GSet, ORSet, decode, digest, encode

A, B, C = "a@1", "b@1", "c@1"


def sync(*replicas: ORSet) -> None:
    """Full-state exchange until every replica holds the join of all."""
    total = ORSet()
    for r in replicas:
        total.join(r)
    for r in replicas:
        r.join(total)


# --- GSet ------------------------------------------------------------------------------------------


def test_gset_add_returns_singleton_delta_and_join_is_union() -> None:
    a, b = GSet(), GSet()
    d = a.add("x")
    assert list(d) == ["x"] and len(d) == 1
    b.add("y")
    a.join(b)
    assert a.elements == {"x", "y"}
    assert "x" in a and "q" not in a and [1] not in a  # unhashable queries are simply absent


def test_gset_iterates_in_canonical_order_whatever_the_insertion_order() -> None:
    elems = ["b", "a", "aa", 3, -1, b"z", (1, 2), None, True]
    one, two = GSet(elems), GSet(reversed(elems))
    assert list(one) == list(two)
    assert encode(one) == encode(two)


def test_values_python_conflates_are_distinct_elements() -> None:
    g = GSet([1, True, 1.0, 0.0, -0.0])
    assert len(g) == 5
    assert decode(encode(g)) == g
    assert GSet([1]) != GSet([True]) and digest(GSet([1])) != digest(GSet([True]))
    s = ORSet()
    s.add(A, 1)
    assert 1 in s and True not in s and 1.0 not in s


@pytest.mark.parametrize("bad", [[1], {"a": 1}, {1}, 2**64, -(2**63) - 1, object(), "\ud800", (1, [2]), bytearray(b"x")])
def test_unacceptable_elements_are_refused_at_the_mutator(bad: object) -> None:
    with pytest.raises(TypeError):
        GSet().add(bad)
    s = ORSet()
    with pytest.raises(TypeError):
        s.add(A, bad)
    with pytest.raises(TypeError):
        s.remove(bad)
    assert s.is_bottom()


def test_tuples_travel_as_arrays_and_come_back_as_tuples() -> None:
    g = GSet([("job", 7, (b"x", None))])
    back = decode(encode(g))
    assert list(back) == [("job", 7, (b"x", None))]


# --- ORSet -----------------------------------------------------------------------------------------


def test_add_delta_carries_the_new_dot_and_the_superseded_dots() -> None:
    s = ORSet()
    s.add(A, "x")
    d1 = s.add(B, "x")  # B has seen A's add: supersedes it
    assert set(d1.context.iter_dots()) == {(A, 1), (B, 1)}
    d = s.add(A, "x")
    assert d.dots("x") == {Dot(A, 2)}
    assert set(d.context.iter_dots()) == {(B, 1), (A, 2)}
    assert s.dots("x") == {Dot(A, 2)}


def test_remove_delta_is_empty_store_with_the_live_dots_as_context() -> None:
    s = ORSet()
    s.add(A, "x")
    d = s.remove("x")
    assert len(d) == 0 and set(d.context.iter_dots()) == {(A, 1)}
    assert "x" not in s


def test_removing_an_absent_element_is_the_identity() -> None:
    s = ORSet()
    s.add(A, "y")
    before = s.copy()
    d = s.remove("x")
    assert d.is_bottom() and s == before
    assert s.remove_all(["x", "z"]).is_bottom() and s == before


def test_concurrent_add_wins_over_remove() -> None:
    a, b = ORSet(), ORSet()
    b.join(a.add(A, "task"))
    rm = b.remove("task")  # B removes what it saw...
    add = a.add(A, "task")  # ...while A re-adds concurrently
    a.join(rm)
    b.join(add)
    assert "task" in a and "task" in b and a == b


def test_remove_wins_over_what_it_observed() -> None:
    a, b = ORSet(), ORSet()
    b.join(a.add(A, "task"))
    a.join(b.remove("task"))
    assert "task" not in a and a == b


def test_remove_that_saw_one_of_two_concurrent_adds_keeps_the_other() -> None:
    a, b, c = ORSet(), ORSet(), ORSet()
    da = a.add(A, "x")
    db = b.add(B, "x")
    c.join(da)
    rm = c.remove("x")  # saw only A's add
    for r in (a, b, c):
        r.join(da)
        r.join(db)
        r.join(rm)
    assert all(r.dots("x") == {Dot(B, 1)} for r in (a, b, c))


def test_superseded_dots_in_the_add_delta_keep_removed_elements_removed() -> None:
    """kuilt #2044: without the superseded dots, a re-add followed by a remove resurrected the element."""
    a, p = ORSet(), ORSet()
    p.join(a.add(A, "x"))
    re_add = a.add(A, "x")
    rm = a.remove("x")
    p.join(re_add)
    p.join(rm)
    assert "x" not in p and p == a


def test_deltas_applied_in_any_order_with_repeats_converge() -> None:
    a = ORSet()
    deltas = [a.add(A, "x"), a.add(A, "y"), a.remove("x"), a.add(A, "z"), a.remove_all(["y", "z"]), a.add(A, "y")]
    for perm in itertools.islice(itertools.permutations(deltas), 0, 720, 37):
        r = ORSet()
        for d in perm + perm[:2]:
            r.join(d.copy())
        assert r == a and list(r) == ["y"]


def test_remove_all_retires_every_named_element_in_one_delta() -> None:
    s = ORSet()
    for e in "abcd":
        s.add(A, e)
    d = s.remove_all(["a", "c", "zz"])
    assert list(s) == ["b", "d"] and d.context.size() == 2


# --- WorkQueueTest (kuilt-warp, ORSet<TaskId> queue): ported scenarios --------------------------------


def test_workqueue_enqueued_task_is_visible_on_every_peer_after_merge() -> None:
    a, b, c = ORSet(), ORSet(), ORSet()
    a.add(A, "t1")
    b.add(B, "t2")
    sync(a, b, c)
    assert a.elements == b.elements == c.elements == {"t1", "t2"}


def test_workqueue_completed_task_removal_propagates() -> None:
    a, b = ORSet(), ORSet()
    b.join(a.add(A, "t1"))
    a.join(b.remove("t1"))
    assert len(a) == len(b) == 0


def test_workqueue_concurrent_enqueue_and_dequeue_add_wins() -> None:
    a, b = ORSet(), ORSet()
    a.add(A, "t1")
    sync(a, b)
    b.remove("t1")
    a.add(A, "t1")  # re-enqueued concurrently
    sync(a, b)
    assert "t1" in a and "t1" in b


def test_workqueue_same_task_enqueued_twice_is_one_entry() -> None:
    a, b = ORSet(), ORSet()
    a.add(A, "t1")
    b.add(B, "t1")
    sync(a, b)
    assert len(a) == 1 and len(a.dots("t1")) == 2
    a.remove("t1")  # a remove that saw both adds removes the task for good
    sync(a, b)
    assert "t1" not in b


def test_workqueue_merge_is_commutative_idempotent_and_three_way_safe() -> None:
    a, b, c = ORSet(), ORSet(), ORSet()
    a.add(A, "t1")
    b.add(B, "t2")
    c.add(C, "t3")
    c.join(a)
    c.remove("t1")
    results = []
    for order in itertools.permutations([a, b, c]):
        r = ORSet()
        for s in order:
            r.join(s)
            r.join(s)
        results.append(r)
    assert all(r == results[0] for r in results)
    assert results[0].elements == {"t2", "t3"}


def test_workqueue_partitioned_peers_converge_after_heal() -> None:
    a, b = ORSet(), ORSet()
    for i in range(50):
        a.add(A, f"a{i}")
        b.add(B, f"b{i}")
    for i in range(0, 50, 2):
        a.remove(f"a{i}")
        b.remove(f"b{i}")
    sync(a, b)
    assert a == b and len(a) == 50
    assert digest(a) == digest(b)
