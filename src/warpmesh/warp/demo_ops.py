"""Ops served by the peers of ``warpmesh demo`` (``--ops warpmesh.warp.demo_ops``).

``demo.collatz(n)`` returns the number of Collatz steps from ``n`` to 1: a known function of the
argument, cheap but not free, so the demo can check every answer.
"""

from __future__ import annotations

import time

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


def burn(ms: int) -> int:
    """Spin the CPU for about ``ms`` milliseconds (a CPU-bound job for benchmarks); returns ``ms``."""
    end = time.perf_counter() + ms / 1000
    x = 0
    while time.perf_counter() < end:
        x += 1
    return ms


registry.register("demo.collatz", collatz_steps, mode="inline")
registry.register("demo.burn", burn, mode="inline")
registry.register("demo.burn_process", burn, mode="process")
