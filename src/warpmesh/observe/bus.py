"""The process's event bus: events from sources other than a WarpNode (Raft, isolates) (a runtime module).

Raft nodes and isolate runners are not tied to one peer's :class:`~warpmesh.observe.Observer`, so
they :func:`publish` here and every observer of the process (normally one: the peer's) records the
event. With no observer, :func:`publish` is one truth test. A publisher on another thread (isolate
runs on worker threads) is handed to the observer's event loop, never run off it.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["add_sink", "publish", "publish_raft", "sinks"]

Sink = Callable[[str, str | None, Mapping[str, Any]], None]

#: (loop, sink) of every observer in this process; a publisher checks it is non-empty first.
sinks: list[tuple[asyncio.AbstractEventLoop, Sink]] = []

#: Commit-progress events of one Raft node come at most this often (a busy log commits constantly).
RAFT_COMMIT_EVERY = 0.25
_raft_seen: weakref.WeakKeyDictionary[Any, tuple[Any, int, int, float]] = weakref.WeakKeyDictionary()


def add_sink(sink: Sink) -> Callable[[], None]:
    """Receive every published event on the running loop; returns the remover."""
    entry = (asyncio.get_running_loop(), sink)
    sinks.append(entry)

    def remove() -> None:
        if entry in sinks:
            sinks.remove(entry)

    return remove


def publish(kind: str, node: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
    """Hand an event (``node``: which node it is about) to every observer of this process."""
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for loop, sink in list(sinks):
        if loop is here:
            sink(kind, node, detail or {})
        elif loop.is_closed():  # an observer whose loop ended without closing it
            with contextlib.suppress(ValueError):
                sinks.remove((loop, sink))
        else:
            loop.call_soon_threadsafe(sink, kind, node, detail or {})


def publish_raft(raft: Any, core: Any) -> None:
    """A Raft node's leader/term change, and its commit index at most every :data:`RAFT_COMMIT_EVERY` s."""
    leader, term, commit = core.leader, int(core.term), int(core.commit)
    last = _raft_seen.get(raft)
    now = asyncio.get_running_loop().time()  # the Raft node runs on a loop (virtual under the simulator)
    detail: dict[str, Any] = {"leader": leader, "term": term, "commit": commit,
                              "role": str(getattr(core.role, "value", core.role))}
    counts = getattr(raft, "commit_latency", None)
    if counts is not None:  # cumulative, so a lost or throttled event loses no observation
        detail["commit_latency"] = {"buckets": list(counts), "sum": float(raft.commit_latency_sum)}
    if last is None or (last[0], last[1]) != (leader, term):
        _raft_seen[raft] = (leader, term, commit, now)
        publish("raft_leader", str(raft.id), detail)
    elif commit != last[2] and now - last[3] >= RAFT_COMMIT_EVERY:
        _raft_seen[raft] = (leader, term, commit, now)
        publish("raft_commit", str(raft.id), detail)
