"""Observability: one event model, a bounded hub, the dashboard, ``warpmesh top``, metrics and traces.

The pure parts (importable without asyncio): :mod:`~warpmesh.observe.hub` (the bounded event ring),
:mod:`~warpmesh.observe.board` (what a dashboard shows) and :mod:`~warpmesh.observe.wire` (the
0x70 channel's frames). The runtime parts load lazily: :class:`Observer` (a peer's feed),
:class:`DashboardServer` (HTTP: the page, server-sent events, ``/metrics``). See docs/observability.md.
"""

from warpmesh._lazy import lazy_exports
from warpmesh.observe.board import Board, BoardLimits
from warpmesh.observe.hub import Batch, Cursor, Event, EventRing

# A pure package: the runtime names resolve on first use (and are not imported for type checkers, so
# importing the cores stays free of asyncio and aiohttp).
__getattr__, __dir__ = lazy_exports(__name__, globals(), {"Observer": "warpmesh.observe.runtime",
                                                         "DashboardServer": "warpmesh.observe.http"})
__all__ = ["Batch", "Board", "BoardLimits", "Cursor", "DashboardServer", "Event", "EventRing", "Observer"]
