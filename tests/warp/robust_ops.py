"""Module-level ops for ``test_robust.py`` (process ops must be importable by name)."""

from __future__ import annotations

import os


def crash(code: int = 1) -> None:
    """Kill the worker process running it, as an OOM kill or a segfault would."""
    os._exit(code)


def square(x: int) -> int:
    return x * x


def nap(seconds: float) -> str:
    import time

    time.sleep(seconds)
    return "rested"
