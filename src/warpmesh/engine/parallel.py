"""Running shard batches on a pool of processes (or threads): the opt-in road to real parallelism.

The engine core never starts processes or threads. Inside one interpreter its ``workers`` are logical:
they decide how rewrites are spread over deltas (and the canonical merge proves that spread is
invisible), but they all run on one core because pure-Python executors hold the GIL. To use more cores,
pass an executor object built here::

    from concurrent.futures import ProcessPoolExecutor
    from warpmesh.engine.parallel import PoolExecutor

    with ProcessPoolExecutor(4) as pool:
        engine = Engine(store, root, workers=4, executor=PoolExecutor(pool))

Each tick the engine groups the admitted rewrites into ``workers`` batches of whole shards and ships each
batch with a *footprint slice* of the graph (exactly what the footprint guard lets each executor read),
never the whole store. Results come back as op lists and go through the same canonical merge, so the
commit hash is identical to a serial run. It pays off only when executors do real work (on this machine
a batch round trip costs roughly a millisecond, plus pickling each slice and op); see ``docs/engine.md``.

Rules whose executors run in a pool must be picklable: module-level functions or instances of
module-level classes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

__all__ = ["PoolExecutor"]


class PoolExecutor:
    """Adapts a :class:`concurrent.futures.Executor` to the engine's ``ShardExecutor`` protocol.

    The pool is owned by the caller (create it once, reuse it for many ticks, shut it down yourself).
    With a ``ThreadPoolExecutor`` nothing is pickled; that helps only on a free-threaded interpreter or
    when executors spend their time in code that releases the GIL.
    """

    def __init__(self, pool: Executor) -> None:
        self.pool = pool

    def run(self, fn: Callable[[Any], Any], batches: list[Any]) -> list[Any]:
        """``[fn(b) for b in batches]``, evaluated on the pool, results in batch order."""
        if len(batches) == 1:
            return [fn(batches[0])]  # nothing to overlap: skip the round trip
        return list(self.pool.map(fn, batches))
