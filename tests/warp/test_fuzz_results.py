"""Fuzz (issue 9): ops returning random Python values. Whatever an op returns or raises, the node
answers every job - the value, or a clear error - and keeps serving."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warpmesh.net.memory import MemoryFabric
from warpmesh.sim import run_virtual
from warpmesh.warp import OpRegistry, WarpNode

from .harness import FAST


class Odd:
    """An object msgpack knows nothing about."""


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=False),
    st.text(max_size=20), st.binary(max_size=20), st.just(Odd()), st.just(math.nan), st.complex_numbers(max_magnitude=9),
    st.frozensets(st.integers(0, 5), max_size=3),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.sets(st.integers(0, 9), max_size=3),
                            st.dictionaries(st.one_of(st.text(max_size=5), st.integers(0, 9)), inner, max_size=3)),
    max_leaves=12,
)
outcomes = st.one_of(values.map(lambda v: ("return", v)),
                     st.sampled_from([ValueError, KeyError, SystemExit, RecursionError, ZeroDivisionError])
                     .map(lambda e: ("raise", e)))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["inline", "thread", "async"]), outcomes), min_size=1, max_size=6))
def test_every_job_is_answered_and_the_node_keeps_serving(jobs: list[tuple[str, tuple[str, Any]]]) -> None:
    reg = OpRegistry()
    for i, (mode, (kind, payload)) in enumerate(jobs):
        def fn(kind: str = kind, payload: Any = payload) -> Any:
            if kind == "raise":
                raise payload("fuzzed")
            return payload

        if mode == "async":
            async def afn(f: Any = fn) -> Any:
                return f()
            reg.register(f"op{i}", afn)
        else:
            reg.register(f"op{i}", fn, mode=mode)  # type: ignore[arg-type]
    reg.register("alive", lambda: "yes", mode="inline")

    async def main() -> None:
        fabric = MemoryFabric(seed=3)
        node = await WarpNode(fabric.join("n"), registry=reg, config=FAST).start()
        for i in range(len(jobs)):
            await node.enqueue(f"t{i}", f"op{i}")
        for i, (_, (kind, _payload)) in enumerate(jobs):
            rec = await node.outcome(f"t{i}", timeout=10)
            if not rec.ok:
                assert rec.error and ("not encodable" in rec.error or kind == "raise"), rec.error
                assert kind == "return" or rec.traceback
        await node.enqueue("alive", "alive")
        assert await node.result("alive", timeout=10) == "yes"
        assert node.queue_depth <= len(jobs) + 1
        await node.close()
        await fabric.close()

    run_virtual(main())
