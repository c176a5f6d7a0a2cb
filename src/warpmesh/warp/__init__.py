"""Warp: the leaderless scheduler. A roomful of peers shares a pile of jobs with nobody in charge.

* :class:`WarpNode` - one peer: replicated queue and results board, ring ownership, claiming.
* :class:`TaskRing` - the consistent-hash ring (pure).
* :mod:`warpmesh.warp.claim` - who runs a contested task (pure).
* :class:`OpRegistry`, :func:`warp_op` - named ops every peer registers.
* :func:`current_job` - inside an op: its task, run, attempt and ``cancelled`` flag.

Core (pure) modules: ``ring``, ``claim``, ``steal``, ``policy``, ``model``, ``context``.
"""

from warpmesh.warp.claim import ClaimStrategy
from warpmesh.warp.context import JobContext, current_job
from warpmesh.warp.model import (
    ArgsUndecodable,
    NotReplicated,
    OpResult,
    Standby,
    TaskDescriptor,
    TaskFailed,
    TransientError,
)
from warpmesh.warp.node import COUNTER_NAMES, Results, WarpConfig, WarpNode
from warpmesh.warp.ops import OpRegistry, OpSpec, default_registry, load_ops_module, warp_op
from warpmesh.warp.ring import DEFAULT_VNODES, TaskRing

__all__ = [
    "COUNTER_NAMES",
    "DEFAULT_VNODES",
    "ArgsUndecodable",
    "ClaimStrategy",
    "JobContext",
    "NotReplicated",
    "OpRegistry",
    "OpResult",
    "OpSpec",
    "Results",
    "Standby",
    "TaskDescriptor",
    "TaskFailed",
    "TaskRing",
    "TransientError",
    "WarpConfig",
    "WarpNode",
    "current_job",
    "default_registry",
    "load_ops_module",
    "warp_op",
]
