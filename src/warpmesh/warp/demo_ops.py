"""Ops served by the peers of ``warpmesh demo`` (``--ops warpmesh.warp.demo_ops``).

``demo.collatz(n)`` returns the number of Collatz steps from ``n`` to 1: a known function of the
argument, cheap but not free, so the demo can check every answer.
"""

from __future__ import annotations

from warpmesh.warp.ops import OpRegistry

registry = OpRegistry()


def collatz_steps(n: int) -> int:
    """Steps of ``n -> n/2 if even else 3n+1`` until 1 (``n >= 1``)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"collatz needs a positive integer, got {n!r}")
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


#: Loop iterations per nominal millisecond of ``burn`` (about 1 ms of CPU on the 2-core machines
#: this project is measured on). The work is fixed, not timed: a CPU-bound job must cost the same
#: CPU whichever executor runs it, even when processes outnumber cores.
LOOPS_PER_MS = 30_000


def burn(ms: int) -> int:
    """A CPU-bound job of fixed work, about ``ms`` milliseconds of CPU here; returns ``ms``."""
    x = 0
    for i in range(ms * LOOPS_PER_MS):
        x += i * i
    return ms


registry.register("demo.collatz", collatz_steps, mode="inline")
registry.register("demo.burn", burn, mode="inline")
registry.register("demo.burn_process", burn, mode="process")
