"""The coordination cost model (seed 000, "What it costs"): pure arithmetic over a draft and stats.

``rounds`` counts coordinated nodes (after consolidation, the dependency depth); ``coupling`` is the
largest batch; ``coordinated_volume`` sums, over coordinated members, the estimated elements entering
each, computed per branch: every source feeding it contributes its cardinality times the selectivity
of each filter on the way (reference bug 4 multiplied one branch's baseline by every branch's filters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from warpmesh.planning.model import Draft, Port
from warpmesh.planning.stats import WarpStats

__all__ = ["CoordinationCost", "coordination_cost", "member_volumes"]


@dataclass(frozen=True, order=True, slots=True)
class CoordinationCost:
    """Ordered lexicographically: fewer rounds first, then smaller coupling, then lower volume."""

    rounds: int
    coupling: int
    coordinated_volume: int

    def __str__(self) -> str:
        return f"rounds={self.rounds} coupling={self.coupling} volume={self.coordinated_volume}"


def member_volumes(d: Draft, stats: WarpStats | None = None) -> dict[Port, int]:
    """Estimated elements entering each coordinated member ``(node id, port)``."""
    st = stats if stats is not None else WarpStats()
    flows: dict[Port, dict[int, float]] = {}  # vertex -> source node id -> expected elements
    out: dict[Port, int] = {}
    for v in d.vertices():
        if v.stage.is_source:
            flows[(v.node, v.port)] = {v.node: float(st.estimated_cardinality(v.stage.op_id))}
            continue
        inflow: dict[int, float] = {}
        for p in sorted(v.inputs):
            for src, amount in flows[p].items():
                inflow[src] = inflow.get(src, 0.0) + amount
        if v.stage.coordinated:
            out[(v.node, v.port)] = math.floor(sum(inflow.values()) + 1e-9)
        elif v.stage.is_filter:
            base = sum(st.estimated_cardinality(d.node(s).stage.op_id) for s in inflow)
            for op in v.stage.op_ids:
                seen = st.estimated_cardinality(op)
                if seen > 0 and base > 0:
                    sel = min(1.0, seen / base)
                    inflow = {s: a * sel for s, a in inflow.items()}
        flows[(v.node, v.port)] = inflow
    return out


def coordination_cost(d: Draft, stats: WarpStats | None = None) -> CoordinationCost:
    """Score ``d``: (rounds, coupling, coordinated volume); (0, 0, 0) for a monotone draft."""
    coordinated = [n for n in d.nodes if n.stage.coordinated]
    if not coordinated:
        return CoordinationCost(0, 0, 0)
    return CoordinationCost(
        rounds=len(coordinated),
        coupling=max(n.stage.ports for n in coordinated),
        coordinated_volume=sum(member_volumes(d, stats).values()),
    )
