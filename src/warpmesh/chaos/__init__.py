"""Chaos across real network stacks (a runtime package; Linux, root): ``./run chaos``.

:mod:`warpmesh.chaos.netns` builds a lab of network namespaces joined by a bridge and applies real
faults (links cut, nftables drops); :mod:`warpmesh.chaos.harness` runs Warp peers or a Raft KV
cluster in it under a seeded schedule of nemeses and checks what they promised.
"""

from warpmesh.chaos.harness import NEMESES, run_chaos, schedule
from warpmesh.chaos.netns import Lab, LabError, cleanup_stale, unavailable_reason

__all__ = ["NEMESES", "Lab", "LabError", "cleanup_stale", "run_chaos", "schedule", "unavailable_reason"]
