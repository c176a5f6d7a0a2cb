"""``Draft.explain``: the plan as text (pure). One line per node with its level, the cost before and
after each rewrite, and which coordinated op forces each remaining round."""

from __future__ import annotations

from warpmesh.planning.cost import coordination_cost
from warpmesh.planning.model import Draft
from warpmesh.planning.rewrites import (
    consolidate_embroideries,
    coordinated_levels,
    defer_embroidery,
    fuse_adjacent,
    plan,
    pushdown_filters,
)
from warpmesh.planning.stats import WarpStats

__all__ = ["explain", "node_levels"]


def node_levels(d: Draft) -> dict[int, int]:
    """Level of every node: how many consensus rounds must finish before it can run."""
    coord = coordinated_levels(d)
    after: dict[int, int] = {}  # rounds completed once this node's output exists
    out: dict[int, int] = {}
    for n in d.nodes:
        ready = max((after[p] for p in n.predecessors), default=0)
        if n.id in coord:
            out[n.id] = coord[n.id]
            after[n.id] = coord[n.id] + 1
        else:
            out[n.id] = ready
            after[n.id] = ready
    return out


def _table(d: Draft) -> list[str]:
    levels = node_levels(d)
    lines = []
    for n in d.nodes:
        preds = ",".join(str(p) for p in sorted(n.predecessors)) or "-"
        mark = "  [consensus]" if n.stage.coordinated else ""
        lines.append(f"  L{levels[n.id]}  #{n.id:<3} {n.stage.label():<44} <- {preds}{mark}")
    return lines


def explain(d: Draft, stats: WarpStats | None = None, *, max_coupling: int | None = None) -> str:
    """Describe ``d`` and what :meth:`Draft.plan` does to it (see the module docstring)."""
    st = stats if stats is not None else WarpStats()
    out = [f"draft: {len(d)} nodes, cost {coordination_cost(d, st)}"]
    out += _table(d)
    out.append("rewrites (one pass each, then plan to a fixpoint):")
    cur = d
    steps = (
        ("defer_embroidery", defer_embroidery),
        ("pushdown_filters", lambda x: pushdown_filters(x, st)),
        ("fuse_adjacent", fuse_adjacent),
        ("consolidate_embroideries", lambda x: consolidate_embroideries(x, max_coupling)),
    )
    for name, step in steps:
        nxt = step(cur)
        before, after = coordination_cost(cur, st), coordination_cost(nxt, st)
        note = "" if nxt != cur else "  (no change)"
        out.append(f"  {name:<26} {before}  ->  {after}{note}")
        cur = nxt
    planned = plan(d, st, max_coupling=max_coupling)
    out.append(f"planned: {len(planned)} nodes, cost {coordination_cost(planned, st)}")
    out += _table(planned)
    levels = coordinated_levels(planned)
    rounds = sorted(((lv, n) for n in planned.nodes if (lv := levels.get(n.id)) is not None),
                    key=lambda t: (t[0], planned.nodes.index(t[1])))
    out.append(f"rounds: {len(rounds)}")
    for i, (lv, n) in enumerate(rounds, 1):
        out.append(f"  round {i} (level {lv}) #{n.id}: forced by {', '.join(n.stage.op_ids)}")
    if not rounds:
        out.append("  none: the draft is monotone (no consensus needed)")
    return "\n".join(out)
