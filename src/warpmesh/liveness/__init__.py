"""Liveness: a heartbeat failure detector per peer (pure core) and its asyncio runtime.

Any inbound frame from a peer counts as a sign of life. States: Healthy, Unresponsive (silent for
``timeout``), Recovered (heard again after being Unresponsive or Lost), Lost (silent for
``lost_after``). Unlike the reference, a Lost peer that speaks again is readmitted.
``Liveness`` (the runtime) loads on first use (see docs/architecture.md).
"""

from typing import TYPE_CHECKING

from warpmesh._lazy import lazy_exports
from warpmesh.liveness.core import (
    FailureDetector,
    HeartbeatConfig,
    LivenessEvent,
    PeerHealth,
)

if TYPE_CHECKING:
    from warpmesh.liveness.runtime import Liveness

__getattr__, __dir__ = lazy_exports(__name__, globals(), {"Liveness": "warpmesh.liveness.runtime"})

__all__ = ["FailureDetector", "HeartbeatConfig", "Liveness", "LivenessEvent", "PeerHealth"]
