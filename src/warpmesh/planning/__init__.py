"""Drafts: the coordination planner (seed 000, "Choosing how to run a job"; docs/planning.md).

Core modules (pure, no asyncio or clock): :mod:`~warpmesh.planning.model` (``Warp``, ``Draft``,
``DraftNode``, ``Stage``, ``StageKind``), :mod:`~warpmesh.planning.rewrites`,
:mod:`~warpmesh.planning.cost` (``CoordinationCost``), :mod:`~warpmesh.planning.stats`
(``WarpStats``), :mod:`~warpmesh.planning.explain` and :mod:`~warpmesh.planning.interpret` (what a
draft computes). The runtime (:mod:`~warpmesh.planning.runtime`: ``IncrementalResult``,
``ConvergentExecution``, ``PlanningNode``) is imported lazily on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from warpmesh.planning.cost import CoordinationCost
from warpmesh.planning.model import Draft, DraftError, DraftNode, Stage, StageKind, Warp
from warpmesh.planning.stats import WarpStats

if TYPE_CHECKING:
    from warpmesh.planning.runtime import (
        ConvergentExecution,
        ExecutionReport,
        IncrementalResult,
        LocalBackend,
        PlanningNode,
    )

_RUNTIME = ("ConvergentExecution", "ExecutionReport", "IncrementalResult", "LocalBackend", "PlanningNode")

__all__ = [
    "ConvergentExecution",
    "CoordinationCost",
    "Draft",
    "DraftError",
    "DraftNode",
    "ExecutionReport",
    "IncrementalResult",
    "LocalBackend",
    "PlanningNode",
    "Stage",
    "StageKind",
    "Warp",
    "WarpStats",
]


def __getattr__(name: str) -> Any:
    if name in _RUNTIME:
        from warpmesh.planning import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'warpmesh.planning' has no attribute {name!r}")
