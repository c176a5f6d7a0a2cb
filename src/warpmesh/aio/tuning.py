"""Process-level tuning for warpmesh runtimes: GC policy (``warpmesh node``, ``kv serve``, the engine CLI).

Pure cores only mark bulk sections (:mod:`warpmesh.bulk`); this module decides what they do.
"""

from __future__ import annotations

import gc
import threading
from types import TracebackType

from warpmesh import bulk

__all__ = ["GcPause", "install_gc_pause", "tune_gc_for_server"]


class GcPause:
    """Pause the cyclic garbage collector while at least one ``GcPause`` section is open.

    Sections may nest and may run on several threads at once (Warp's pools encode and decode boards
    concurrently): a count under a lock makes the first section disable the collector and the last one
    re-enable it, and only if it was enabled when the first began, so one thread's exit never
    re-enables the collector under another thread's section nor overrides a caller's own policy.
    Nothing a bulk section allocates forms cycles, so deferring collection loses nothing.
    """

    _lock = threading.Lock()
    _depth = 0
    _was_enabled = False
    #: Set by :func:`tune_gc_for_server` (a dedicated peer process). When the last open section
    #: ends, everything allocated so far moves to the permanent generation (``gc.freeze``), so the
    #: collector never walks a bulk section's objects (boards' entries, all long-lived and acyclic)
    #: again: after a 10,000-entry delta, the first young collection had walked every one of them
    #: (about 15 ms a time on a Warp peer, 7-15% of its CPU under load). Every ``unfreeze_every``-th
    #: end moves them all back to the oldest generation instead, so cycles that died meanwhile
    #: (frozen with the rest) are still reclaimed, by the collector's next full pass.
    freeze: bool = False
    unfreeze_every: int = 32
    _ends = 0

    def __enter__(self) -> GcPause:
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                cls._was_enabled = gc.isenabled()
                gc.disable()
            cls._depth += 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0 and cls._was_enabled:
                if cls.freeze:
                    cls._ends += 1
                    if cls._ends >= cls.unfreeze_every:
                        cls._ends = 0
                        gc.unfreeze()
                    else:
                        gc.freeze()
                gc.enable()


def install_gc_pause() -> None:
    """Make every bulk section (:func:`warpmesh.bulk.bulk`) in this process pause the cyclic GC.

    Idempotent. Runtimes that do bulk work (the Quilter runtime, the server entry points, the engine
    CLI) call it; a library embedded in a larger application may call ``warpmesh.bulk.set_guard(None)``
    afterwards to keep GC policy to itself.
    """
    bulk.set_guard(GcPause)


def tune_gc_for_server(gen0: int = 50_000) -> None:
    """Make CPython's cyclic GC cheaper for a long-running server process.

    A peer keeps tens of thousands of long-lived objects (CRDT boards, Raft logs); with the default
    thresholds (700, 10, 10) the collector runs hundreds of times a second under load and each full
    collection walks all of them, pausing the event loop for tens of milliseconds (measured: ~20%
    of a loaded Raft leader's time, ~3 ms per job on a Warp peer). This freezes everything
    allocated at start-up (never collected, never walked) and collects the youngest generation
    every ``gen0`` allocations instead of 700, pauses the collector in bulk sections and freezes what
    they built (see :attr:`GcPause.freeze`). Call it once
    in a dedicated process; a library embedded in a larger application should leave GC policy to that
    application.
    """
    install_gc_pause()
    GcPause.freeze = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, 20, 20)
