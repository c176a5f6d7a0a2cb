"""Drafts: the coordination planner (seed 000, "Choosing how to run a job"; docs/planning.md).

Core modules (pure, no asyncio or clock): :mod:`~warpmesh.planning.model` (``Warp``, ``Draft``,
``DraftNode``, ``Stage``, ``StageKind``), :mod:`~warpmesh.planning.rewrites`,
:mod:`~warpmesh.planning.cost` (``CoordinationCost``), :mod:`~warpmesh.planning.stats`
(``WarpStats``), :mod:`~warpmesh.planning.explain` and :mod:`~warpmesh.planning.interpret` (what a
draft computes). The runtime (:mod:`~warpmesh.planning.runtime`: ``IncrementalResult``,
``ConvergentExecution``, ``PlanningNode``) is imported lazily on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
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

__getattr__, __dir__ = lazy_exports(__name__, globals(), dict.fromkeys(
    ("ConvergentExecution", "ExecutionReport", "IncrementalResult", "LocalBackend", "PlanningNode"),
    "warpmesh.planning.runtime"))

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

