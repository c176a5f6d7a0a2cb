"""Deterministic simulation: production runtimes under a virtual clock, on a seeded faulty network.

* :mod:`warpmesh.sim.loop` - ``VirtualTimeLoop``: an asyncio loop whose clock jumps to the next timer.
* :mod:`warpmesh.net.memory` - the in-memory fabric the simulated peers talk over.
* workloads (``warpmesh.sim.crdt`` ...) build N peers from one integer seed, inject faults, check
  invariants, and on failure print the one command that replays exactly that run.
"""

from warpmesh.sim.loop import SimulationStalled, VirtualTimeLoop, run_virtual

__all__ = ["SimulationStalled", "VirtualTimeLoop", "run_virtual"]
