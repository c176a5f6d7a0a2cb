"""Bulk sections: where a pure core announces "I am about to allocate a lot", and nothing more.

Building the wire form of a 100k-key map or committing an engine tick allocates ~10^6 containers that
all stay alive; CPython's cyclic collector, triggered by each allocation burst, re-walks the whole heap
and can make such work several times slower. Whether to pause it is process policy, which a core must
not decide (and toggling the process-wide ``gc`` from a core raced under thread pools). So a core only
marks the section::

    with bulk(len(self.store)):
        ...

and a runtime decides what a bulk section does by installing a guard, e.g.
:class:`warpmesh.aio.tuning.GcPause` (see :func:`warpmesh.aio.tuning.install_gc_pause`). With no guard
installed a bulk section does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

__all__ = ["BULK_THRESHOLD", "bulk", "current_guard", "set_guard"]

#: Sections over fewer entries than this skip the guard (the deltas on the hot path stay cheap).
BULK_THRESHOLD = 2048

_guard: Callable[[], AbstractContextManager[object]] | None = None


def set_guard(
    guard: Callable[[], AbstractContextManager[object]] | None,
) -> Callable[[], AbstractContextManager[object]] | None:
    """Install ``guard`` (a factory of context managers) for bulk sections; return the previous one."""
    global _guard
    previous, _guard = _guard, guard
    return previous


def current_guard() -> Callable[[], AbstractContextManager[object]] | None:
    """The installed guard factory, or None."""
    return _guard


@contextmanager
def bulk(size: int | None = None) -> Iterator[None]:
    """Mark a section that allocates about ``size`` entries (None: always bulk; see the module docstring)."""
    guard = _guard
    if guard is None or (size is not None and size <= BULK_THRESHOLD):
        yield
        return
    with guard():
        yield
