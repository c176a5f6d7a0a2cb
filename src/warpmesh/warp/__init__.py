"""Warp: the leaderless scheduler. A roomful of peers shares a pile of jobs with nobody in charge.

* :class:`WarpNode` - one peer: the asyncio runtime (boards, pools, timers) around ...
* :class:`WarpCore` - ... the protocol as a pure state machine (claims, answers, stealing).
* :class:`WarpEvent` - what a peer tells observers (:meth:`WarpNode.subscribe_events`).
* :class:`TaskRing` - the consistent-hash ring (pure).
* :mod:`warpmesh.warp.claim` - who runs a contested task (pure).
* :class:`OpRegistry`, :func:`warp_op` - named ops every peer registers.
* :func:`current_job` - inside an op: its task, run, attempt and ``cancelled`` flag.

Core (pure) modules: ``core``, ``events``, ``ring``, ``claim``, ``steal``, ``policy``, ``model`` (``context`` holds a thread event: runtime). They are
imported eagerly; the runtime names (``WarpNode`` ...) load on first use, so importing
``warpmesh.warp.ring`` does not start asyncio (see docs/architecture.md).
"""

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
from warpmesh.warp.claim import ClaimStrategy
from warpmesh.warp.model import (
    ArgsUndecodable,
    NotReplicated,
    OpResult,
    Standby,
    TaskDescriptor,
    TaskFailed,
    TransientError,
)
from warpmesh.warp.ring import DEFAULT_VNODES, TaskRing

if TYPE_CHECKING:
    from warpmesh.warp.context import JobContext, current_job
    from warpmesh.warp.core import COUNTER_NAMES, WarpConfig, WarpCore
    from warpmesh.warp.events import WarpEvent
    from warpmesh.warp.node import Results, WarpNode
    from warpmesh.warp.ops import OpRegistry, OpSpec, default_registry, load_ops_module, warp_op

__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    {
        "JobContext": "warpmesh.warp.context",
        "current_job": "warpmesh.warp.context",
        "COUNTER_NAMES": "warpmesh.warp.core",
        "Results": "warpmesh.warp.node",
        "WarpConfig": "warpmesh.warp.core",
        "WarpCore": "warpmesh.warp.core",
        "WarpEvent": "warpmesh.warp.events",
        "WarpNode": "warpmesh.warp.node",
        "OpRegistry": "warpmesh.warp.ops",
        "OpSpec": "warpmesh.warp.ops",
        "default_registry": "warpmesh.warp.ops",
        "load_ops_module": "warpmesh.warp.ops",
        "warp_op": "warpmesh.warp.ops",
    },
)

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
    "WarpCore",
    "WarpEvent",
    "WarpNode",
    "current_job",
    "default_registry",
    "load_ops_module",
    "warp_op",
]
