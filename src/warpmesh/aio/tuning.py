"""Process-level tuning for dedicated warpmesh server processes (``warpmesh node``, ``kv serve``)."""

from __future__ import annotations

import gc


def tune_gc_for_server(gen0: int = 50_000) -> None:
    """Make CPython's cyclic GC cheaper for a long-running server process.

    A peer keeps tens of thousands of long-lived objects (CRDT boards, Raft logs); with the default
    thresholds (700, 10, 10) the collector runs hundreds of times a second under load and each full
    collection walks all of them, pausing the event loop for tens of milliseconds (measured: ~20%
    of a loaded Raft leader's time, ~3 ms per job on a Warp peer). This freezes everything
    allocated at start-up (never collected, never walked) and collects the youngest generation
    every ``gen0`` allocations instead of 700. Call it once in a dedicated process; a library
    embedded in a larger application should leave GC policy to that application.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0, 20, 20)
