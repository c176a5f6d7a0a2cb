"""Module-level functions for ``test_procpool.py`` (a worker process imports them by name)."""

from __future__ import annotations

import os
import time


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def exit_with(code: int) -> None:
    """End the worker process as an OOM kill or a segfault would: no answer, no cleanup."""
    os._exit(code)


def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def pid() -> int:
    return os.getpid()


def unpicklable_result() -> object:
    return lambda: None


def interrupt() -> None:
    raise KeyboardInterrupt


def sys_exit() -> None:
    raise SystemExit(3)
