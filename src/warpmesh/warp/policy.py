"""Pure decisions of a Warp worker about one run: retry or fail, deadlines, and what may travel.

No I/O, no clock and no global randomness: the node passes in the wall-clock time and its seeded
RNG, so the simulator drives these decisions exactly as a real peer does.
"""

from __future__ import annotations

import random
from typing import Any

from warpmesh.wire.frame import pack

#: Largest packed result one answer may carry (a board delta must fit a mesh frame with room to
#: spare; larger values belong in a store, with a reference in the answer).
MAX_RESULT_BYTES = 4 * 1024 * 1024

#: Longest error line an answer carries (the traceback holds the rest, capped too).
MAX_ERROR_CHARS = 1000

#: The types an op may return without a codec.
ENCODABLE = "return lists, dicts, str, bytes, numbers, bool or None, or register a codec"


def describe(err: BaseException) -> str:
    """``Type: message`` (or just ``Type``) for an exception, on one line."""
    text = " ".join(str(err).split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + f"... ({len(text) - MAX_ERROR_CHARS} characters cut)"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _offender(value: Any, depth: int = 0) -> str:
    """The name of the first type inside ``value`` msgpack cannot encode (best effort)."""
    if depth > 50:
        return type(value).__name__
    if isinstance(value, dict):
        for k, v in value.items():
            for item in (k, v):
                try:
                    pack(item)
                except (TypeError, ValueError, OverflowError):
                    return _offender(item, depth + 1)
    elif isinstance(value, list | tuple):
        for item in value:
            try:
                pack(item)
            except (TypeError, ValueError, OverflowError):
                return _offender(item, depth + 1)
    if isinstance(value, int) and not isinstance(value, bool):
        return "int over 64 bits"
    return type(value).__name__


def encode_result(op: str, value: Any, limit: int = MAX_RESULT_BYTES) -> tuple[bytes | None, str | None]:
    """Pack an op's return value: ``(bytes, None)``, or ``(None, why it cannot travel)``."""
    try:
        data = pack(value)
    except (TypeError, ValueError, OverflowError, RecursionError):
        return None, f"result of {op} is not encodable: {_offender(value)}; {ENCODABLE}"
    if len(data) > limit:
        return None, (f"result of {op} is {len(data) / 2**20:.1f} MiB, over the {limit / 2**20:g} MiB limit; "
                      "return a reference (a path, URL or store key) instead")
    return data, None


def should_retry(attempts: int, max_attempts: int, *, transient: bool) -> bool:
    """Whether a run that failed on attempt ``attempts`` (1-based) is tried again."""
    return transient and attempts < max_attempts


def backoff(attempts: int, base: float, rng: random.Random) -> float:
    """Seconds to wait before attempt ``attempts + 1``: exponential, jittered by ±50%."""
    return float(base * (2 ** (attempts - 1)) * rng.uniform(0.5, 1.5))


def deadline_left(deadline: float | None, wall_now: float) -> float | None:
    """Seconds until ``deadline`` (a wall-clock time; <= 0: passed), or None when there is none."""
    return None if deadline is None else deadline - wall_now


def crash_message(op: str, attempts: int) -> str:
    """The error of a process op whose worker process died on every attempt."""
    return (f"the worker process running {op} died (killed, out of memory, os._exit or a crash) on each of "
            f"{attempts} attempt(s); a new process took its place, and the other jobs went on")
