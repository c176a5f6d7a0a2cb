"""A linearizability checker for KV histories (Wing & Gong's search with Lowe's memoization, as in
Porcupine), partitioned by key: a history is linearizable iff each key's sub-history is.

Record each operation with :class:`History`: ``invoke`` when the client calls, ``ok`` with the
result when it returns, ``unknown`` when it failed with an unknown outcome (a timed-out write may or
may not have taken effect: it is treated as pending forever, may linearize at any point after its
call, and its result constrains nothing). Then :func:`check` returns a :class:`CheckResult`.

The model is one register per key: ``get`` -> value (``None`` = absent), ``put v``, ``del`` ->
existed, ``cas exp new`` -> swapped.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

_INF = float("inf")


@dataclass
class Op:
    id: int
    client: str
    op: str  # "get" | "put" | "del" | "cas"
    key: str
    args: tuple[Any, ...]
    call: float
    ret: float = _INF
    output: Any = None
    known: bool = False  # False: no result yet / unknown outcome


@dataclass
class CheckResult:
    ok: bool
    keys: int = 0
    ops: int = 0
    bad_key: str | None = None
    detail: str = ""
    #: Search steps taken (a measure of how hard the history was).
    steps: int = 0


class History:
    """A concurrent history being recorded (times from any monotonic clock)."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._ids = itertools.count()

    def invoke(self, client: str, op: str, key: str, *args: Any, at: float) -> Op:
        o = Op(next(self._ids), client, op, key, tuple(args), at)
        self.ops.append(o)
        return o

    @staticmethod
    def ok(o: Op, output: Any, *, at: float) -> None:
        o.ret = at
        o.output = output
        o.known = True

    @staticmethod
    def unknown(o: Op) -> None:
        o.ret = _INF
        o.known = False


def _step(state: Any, o: Op) -> tuple[bool, Any]:
    """Apply ``o`` to the register ``state``: (is the output consistent?, next state)."""
    if o.op == "get":
        return ((not o.known) or o.output == state), state
    if o.op == "put":
        return True, o.args[0]
    if o.op == "del":
        return ((not o.known) or bool(o.output) == (state is not None)), None
    if o.op == "cas":
        exp, new = o.args
        swapped = state == exp
        if o.known and bool(o.output) != swapped:
            return False, state
        return True, (new if swapped else state)
    raise ValueError(f"unknown op {o.op!r}")


class _Node:
    __slots__ = ("match", "next", "op", "prev", "ret")

    def __init__(self, op: Op | None, ret: bool) -> None:
        self.op = op
        self.ret = ret
        self.prev: _Node | None = None
        self.next: _Node | None = None
        self.match: _Node | None = None


def _check_key(ops: list[Op], initial: Any = None, max_steps: int = 5_000_000) -> tuple[bool, int]:
    events: list[tuple[float, int, Op]] = []
    for o in ops:
        events.append((o.call, 0, o))
        events.append((o.ret, 1, o))
    # Calls before returns at equal times: concurrent at the boundary (the permissive reading).
    events.sort(key=lambda e: (e[0], e[1], e[2].id))
    head = _Node(None, False)
    prev = head
    calls: dict[int, _Node] = {}
    for _, is_ret, o in events:
        n = _Node(o, bool(is_ret))
        n.prev = prev
        prev.next = n
        prev = n
        if is_ret:
            c = calls[o.id]
            c.match = n
        else:
            calls[o.id] = n
    index = {o.id: i for i, o in enumerate(ops)}
    state = initial
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[_Node, Any]] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > max_steps:
            raise RuntimeError("linearizability search exceeded its step budget")
        assert entry is not None
        if not entry.ret:
            op = entry.op
            assert op is not None
            o = op
            ok, new_state = _step(state, o)
            if ok:
                bit = 1 << index[o.id]
                key = (linearized | bit, new_state)
                if key not in cache:
                    cache.add(key)
                    stack.append((entry, state))
                    state = new_state
                    linearized |= bit
                    _lift(entry)
                    entry = head.next
                    continue
            entry = entry.next
        else:
            if not stack:
                return False, steps
            top, state = stack.pop()
            assert top.op is not None
            linearized &= ~(1 << index[top.op.id])
            _unlift(top)
            entry = top.next
    return True, steps


def _lift(call: _Node) -> None:
    call.prev.next = call.next  # type: ignore[union-attr]
    if call.next is not None:
        call.next.prev = call.prev
    ret = call.match
    assert ret is not None
    ret.prev.next = ret.next  # type: ignore[union-attr]
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    ret = call.match
    assert ret is not None
    ret.prev.next = ret  # type: ignore[union-attr]
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call  # type: ignore[union-attr]
    if call.next is not None:
        call.next.prev = call


def check(history: History | list[Op], *, initial: dict[str, Any] | None = None) -> CheckResult:
    """Check a KV history; ``initial`` gives the values keys had before it began (default absent)."""
    ops = history.ops if isinstance(history, History) else history
    by_key: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        if o.op == "get" and not o.known:
            continue  # a read that never returned constrains nothing
        by_key[o.key].append(o)
    total = 0
    for key in sorted(by_key):
        kops = by_key[key]
        ok, steps = _check_key(kops, (initial or {}).get(key))
        total += steps
        if not ok:
            return CheckResult(False, len(by_key), len(ops), key,
                               f"key {key!r}: {len(kops)} operations admit no linearization", total)
    return CheckResult(True, len(by_key), len(ops), None, "", total)
