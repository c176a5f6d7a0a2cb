"""Mutators and delta joins cost O(1) / O(delta), independent of the size of the state.

Measured deterministically, not by the clock: we count the Python lines executed inside
``warpmesh.crdt`` for one operation on a small and on a large state. Any loop over the state would
show up as thousands more lines. (``bench/crdt_ops.py`` measures the same operations in time.)
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import pytest

import warpmesh.crdt
from warpmesh.crdt import GSet, LWWRegister, ORMap, ORSet

CRDT_DIR = os.path.dirname(warpmesh.crdt.__file__)


def lines_executed(fn: Callable[[], Any]) -> int:
    count = 0

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return local

    def global_(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename.startswith(CRDT_DIR) else None

    previous = sys.gettrace()
    sys.settrace(global_)
    try:
        fn()
    finally:
        sys.settrace(previous)
    return count


def busy_board(n: int) -> tuple[ORMap[LWWRegister], ORMap[LWWRegister]]:
    """A results board of ``n`` keys written by three replicas, some removed, and a peer's copy that
    has seen only part of the history (so its context has a cloud)."""
    rng = random.Random(n)
    writers = [ORMap(LWWRegister) for _ in range(3)]
    deltas = []
    for i in range(n):
        w = rng.randrange(3)
        deltas.append(writers[w].update(f"w{w}@1", f"task-{i}", lambda r, w=w, i=i: r.set(f"w{w}@1", i)))
        if i % 7 == 0:
            deltas.append(writers[w].remove(f"task-{i}"))
    local = ORMap(LWWRegister)
    for d in deltas:
        local.join(d)
    peer = ORMap(LWWRegister)
    for d in deltas:
        if rng.random() < 0.9:
            peer.join(d)
    return local, peer


def board_costs(n: int) -> dict[str, int]:
    local, peer = busy_board(n)
    costs = {}
    key = "task-3"
    costs["put"] = lines_executed(lambda: local.update("me@1", "new-task", lambda r: r.set("me@1", "v")))
    put_delta = peer.update("w1@1", key, lambda r: r.set("w1@1", "again"))
    costs["join put delta"] = lines_executed(lambda: local.join(put_delta))
    rm_delta = peer.remove("task-5")
    costs["join remove delta"] = lines_executed(lambda: local.join(rm_delta))
    costs["remove"] = lines_executed(lambda: local.remove("new-task"))
    costs["get"] = lines_executed(lambda: local.get(key))
    return costs


def queue_costs(n: int) -> dict[str, int]:
    q, peer = ORSet(), ORSet()
    for i in range(n):
        peer.join(q.add("a@1", f"t{i}"))
    costs = {}
    costs["add"] = lines_executed(lambda: q.add("a@1", "fresh"))
    costs["re-add"] = lines_executed(lambda: q.add("a@1", "t1"))
    costs["remove"] = lines_executed(lambda: q.remove("t2"))
    d = peer.add("b@1", "other")
    costs["join add delta"] = lines_executed(lambda: q.join(d))
    d = peer.remove("t7")
    costs["join remove delta"] = lines_executed(lambda: q.join(d))
    return costs


@pytest.mark.parametrize("costs", [board_costs, queue_costs], ids=["ORMap[LWW]", "ORSet"])
def test_operation_cost_is_flat_in_state_size(costs: Callable[[int], dict[str, int]]) -> None:
    small, large = costs(100), costs(20_000)
    for op, c in small.items():
        # Equal up to a few lines of data-dependent branching; a scan would add >= 20,000.
        assert large[op] <= c + 20, (op, small, large)
        assert c < 400, (op, c)


def test_full_state_join_is_linear_not_quadratic() -> None:
    def cost(n: int) -> int:
        a, b = ORSet(), ORSet()
        for i in range(n):
            a.add("a@1", f"x{i}")
            b.add("b@1", f"y{i}")
        return lines_executed(lambda: a.join(b))

    c1, c4 = cost(500), cost(2000)
    assert c4 < 5 * c1, (c1, c4)


def test_gset_join_of_a_delta_is_flat() -> None:
    def cost(n: int) -> int:
        g = GSet(range(n))
        return lines_executed(lambda: g.join(GSet(["new"])))

    assert cost(20_000) == cost(100)


def test_bulk_operations_restore_the_garbage_collector() -> None:
    import gc

    from warpmesh.crdt import CrdtDecodeError, decode, encode

    big = ORSet()
    for i in range(3000):
        big.add("a@1", f"t{i}")
    wire = encode(big)
    bad = [wire[0], [wire[1][0], [*wire[1][1], ["dup", [[0, 5]]], ["dup", [[0, 6]]]]]]
    assert gc.isenabled()
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            assert decode(wire) == big and big.copy() == big
            with pytest.raises(CrdtDecodeError):
                decode(bad)
            assert gc.isenabled() == enabled
        finally:
            gc.enable()


def test_key_order_is_patched_not_re_sorted_after_a_few_changes() -> None:
    def cost(n: int) -> int:
        m, _ = busy_board(n)
        m.keys()  # establish the order
        m.update("me@1", "zz-new", lambda r: r.set("me@1", 1))
        m.remove("task-3")
        return lines_executed(m._ds.sorted_keys)

    small, large = cost(100), cost(20_000)
    assert large <= small + 60, (small, large)  # O(k log n), not O(n log n)
