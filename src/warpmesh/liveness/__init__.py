"""Liveness: a heartbeat failure detector per peer (pure core) and its asyncio runtime.

Any inbound frame from a peer counts as a sign of life. States: Healthy, Unresponsive (silent for
``timeout``), Recovered (heard again after being Unresponsive or Lost), Lost (silent for
``lost_after``). Unlike the reference, a Lost peer that speaks again is readmitted.
"""

from warpmesh.liveness.core import (
    FailureDetector,
    HeartbeatConfig,
    LivenessEvent,
    PeerHealth,
)
from warpmesh.liveness.runtime import Liveness

__all__ = ["FailureDetector", "HeartbeatConfig", "Liveness", "LivenessEvent", "PeerHealth"]
