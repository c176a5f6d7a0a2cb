"""The Draft model (seed 000, "A Draft is the plan"): an immutable dependency graph of symbolic stages.

Pure: nothing here executes or touches I/O. A :class:`Draft` is a tuple of :class:`DraftNode` in
topological order; every builder and rewrite returns a new draft.

A ``BATCHED_EMBROIDER`` node commits several independent embroideries in one consensus round. Its
members keep their own inputs: ``DraftNode.inputs`` holds, per member, the ``(node id, port)`` pairs
that feed it, and a successor names the member it reads through the port (member index; every other
stage has the single port 0). The reference kept only the union of predecessors, which loses which
branch feeds which member (and so what the batch computes); :meth:`Draft.vertices` expands the ports
back into one vertex per member, the graph that equivalence, cost and execution work on.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from warpmesh.errors import WarpmeshError

if TYPE_CHECKING:
    from warpmesh.planning.cost import CoordinationCost
    from warpmesh.planning.stats import WarpStats

__all__ = [
    "Draft",
    "DraftError",
    "DraftNode",
    "Stage",
    "StageKind",
    "Vertex",
    "Warp",
]


class DraftError(WarpmeshError, ValueError):
    """A draft or stage that is malformed (empty op ids, unknown predecessors, a cycle...)."""


class StageKind(enum.Enum):
    """What a stage does. ``EMBROIDER`` and ``BATCHED_EMBROIDER`` are coordinated (consensus)."""

    SOURCE = "source"
    MAP = "map"
    FILTER = "filter"
    FUSED_MAP = "fused_map"
    FUSED_FILTER = "fused_filter"
    EMBROIDER = "embroider"
    BATCHED_EMBROIDER = "batched_embroider"


_MULTI = {StageKind.FUSED_MAP, StageKind.FUSED_FILTER, StageKind.BATCHED_EMBROIDER}
_COORDINATED = {StageKind.EMBROIDER, StageKind.BATCHED_EMBROIDER}


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of a draft: a kind and the op ids it applies (one, or several once fused/batched)."""

    kind: StageKind
    op_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.kind, StageKind):
            raise DraftError(f"stage kind must be a StageKind, got {self.kind!r}")
        if not self.op_ids or not all(isinstance(o, str) and o for o in self.op_ids):
            raise DraftError("a stage needs at least one op id, each a non-empty str")
        if len(self.op_ids) > 1 and self.kind not in _MULTI:
            raise DraftError(f"a {self.kind.name} stage has exactly one op id")

    @classmethod
    def of(cls, kind: StageKind, *op_ids: str) -> Stage:
        return cls(kind, tuple(op_ids))

    @property
    def op_id(self) -> str:
        """The first op id (the only one for simple stages)."""
        return self.op_ids[0]

    @property
    def coordinated(self) -> bool:
        return self.kind in _COORDINATED

    @property
    def is_source(self) -> bool:
        return self.kind is StageKind.SOURCE

    @property
    def is_map(self) -> bool:
        return self.kind in (StageKind.MAP, StageKind.FUSED_MAP)

    @property
    def is_filter(self) -> bool:
        return self.kind in (StageKind.FILTER, StageKind.FUSED_FILTER)

    @property
    def ports(self) -> int:
        """Outputs this stage has: one per member of a batch, else one."""
        return len(self.op_ids) if self.kind is StageKind.BATCHED_EMBROIDER else 1

    def member(self, port: int) -> Stage:
        """The stage member ``port`` runs (a plain EMBROIDER for a batch member, else self)."""
        if self.kind is StageKind.BATCHED_EMBROIDER:
            return Stage(StageKind.EMBROIDER, (self.op_ids[port],))
        return self

    def label(self) -> str:
        ops = ",".join(self.op_ids)
        return f"{self.kind.name}({ops})"


Port = tuple[int, int]


@dataclass(frozen=True, slots=True)
class DraftNode:
    """A node of the graph: ``id``, its stage and the ids it depends on.

    ``inputs`` holds one frozenset of ``(predecessor id, port)`` per member (see the module
    docstring); left empty it defaults to port 0 of every predecessor for each member.
    """

    id: int
    stage: Stage
    predecessors: frozenset[int] = frozenset()
    inputs: tuple[frozenset[Port], ...] = field(default=(), compare=True)

    def __post_init__(self) -> None:
        if type(self.id) is not int or self.id < 0:
            raise DraftError(f"node id must be a non-negative int, got {self.id!r}")
        preds = frozenset(self.predecessors)
        object.__setattr__(self, "predecessors", preds)
        n = self.stage.ports
        if not self.inputs:
            default = frozenset((p, 0) for p in preds)
            object.__setattr__(self, "inputs", (default,) * n)
        else:
            ins = tuple(frozenset(i) for i in self.inputs)
            if len(ins) != n:
                raise DraftError(f"node {self.id} has {n} member(s) but {len(ins)} input set(s)")
            if frozenset(p for i in ins for p, _ in i) != preds:
                raise DraftError(f"node {self.id}: inputs name predecessors other than {sorted(preds)}")
            object.__setattr__(self, "inputs", ins)

    def __repr__(self) -> str:
        return f"DraftNode({self.id}, {self.stage.label()}, {sorted(self.predecessors)})"


@dataclass(frozen=True, slots=True)
class Vertex:
    """One member of a node (the whole node unless it is a batch): the unit of execution and cost."""

    node: int
    port: int
    stage: Stage
    inputs: frozenset[Port]


class Draft:
    """An immutable plan: nodes in topological order. Build it with :meth:`Warp.shuttle`."""

    __slots__ = ("_by_id", "_nodes")

    def __init__(self, nodes: Iterable[DraftNode]) -> None:
        ns = tuple(nodes)
        by_id: dict[int, DraftNode] = {}
        for n in ns:
            if not isinstance(n, DraftNode):
                raise DraftError(f"a draft holds DraftNode values, got {n!r}")
            if n.id in by_id:
                raise DraftError(f"duplicate node id {n.id}")
            for p in n.predecessors:
                if p not in by_id:
                    raise DraftError(f"node {n.id} depends on {p}, which is not before it")
            for ins in n.inputs:
                for p, port in ins:
                    if not 0 <= port < by_id[p].stage.ports:
                        raise DraftError(f"node {n.id} reads port {port} of node {p}, which has no such port")
            if n.stage.is_source and n.predecessors:
                raise DraftError(f"source node {n.id} cannot have predecessors")
            by_id[n.id] = n
        self._nodes = ns
        self._by_id = by_id

    # -- inspectors ---------------------------------------------------------------------------
    @property
    def nodes(self) -> tuple[DraftNode, ...]:
        return self._nodes

    @property
    def stages(self) -> tuple[Stage, ...]:
        return tuple(n.stage for n in self._nodes)

    def node(self, node_id: int) -> DraftNode:
        return self._by_id[node_id]

    @property
    def is_monotone(self) -> bool:
        """True when no stage needs consensus (batches count)."""
        return not any(n.stage.coordinated for n in self._nodes)

    @property
    def embroideries(self) -> tuple[Stage, ...]:
        """Every coordinated stage, batched ones included, in node order."""
        return tuple(n.stage for n in self._nodes if n.stage.coordinated)

    @property
    def embroidery(self) -> Stage | None:
        """The only coordinated stage, or None when there are none or several."""
        e = self.embroideries
        return e[0] if len(e) == 1 else None

    @property
    def max_id(self) -> int:
        return max((n.id for n in self._nodes), default=-1)

    def successors(self) -> dict[int, list[int]]:
        """Node id -> ids of the nodes that depend on it, in node order."""
        out: dict[int, list[int]] = {n.id: [] for n in self._nodes}
        for n in self._nodes:
            for p in sorted(n.predecessors):
                out[p].append(n.id)
        return out

    def vertices(self) -> Iterator[Vertex]:
        """Member-level vertices in topological order (a batch of k gives k vertices)."""
        for n in self._nodes:
            for port in range(n.stage.ports):
                yield Vertex(n.id, port, n.stage.member(port), n.inputs[port])

    def sink_ancestors(self) -> dict[Port, frozenset[str]]:
        """Each sink vertex (an output no vertex reads) -> the op ids of every stage it depends on,
        its own included: what that output computes, whatever the draft's shape."""
        anc: dict[Port, frozenset[str]] = {}
        read: set[Port] = set()
        for v in self.vertices():
            ops = set(v.stage.op_ids)
            for p in v.inputs:
                ops |= anc[p]
                read.add(p)
            anc[(v.node, v.port)] = frozenset(ops)
        return {p: ops for p, ops in anc.items() if p not in read}

    def components(self) -> list[list[DraftNode]]:
        """Weakly connected components, each in node order, ordered by their first node."""
        parent: dict[int, int] = {n.id: n.id for n in self._nodes}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for n in self._nodes:
            for p in n.predecessors:
                a, b = find(n.id), find(p)
                if a != b:
                    parent[max(a, b)] = min(a, b)
        groups: dict[int, list[DraftNode]] = {}
        for n in self._nodes:
            groups.setdefault(find(n.id), []).append(n)
        return sorted(groups.values(), key=lambda g: self._nodes.index(g[0]))

    # -- builders -------------------------------------------------------------------------------
    def _append(self, kind: StageKind, op: str) -> Draft:
        if not self._nodes:
            raise DraftError("cannot extend an empty draft; start with Warp.shuttle(op)")
        last = self._nodes[-1]
        inputs = frozenset((last.id, k) for k in range(last.stage.ports))
        node = DraftNode(self.max_id + 1, Stage.of(kind, op), frozenset({last.id}), (inputs,))
        return Draft((*self._nodes, node))

    def map(self, op: str) -> Draft:
        """Apply ``op`` to every element (free: no coordination)."""
        return self._append(StageKind.MAP, op)

    def filter(self, op: str) -> Draft:
        """Keep the elements ``op`` accepts (free)."""
        return self._append(StageKind.FILTER, op)

    def embroider(self, op: str) -> Draft:
        """Seal the elements reaching here through consensus, then apply ``op`` to the agreed batch."""
        return self._append(StageKind.EMBROIDER, op)

    def combine(self, other: Draft) -> Draft:
        """Both drafts side by side, unconnected. ``other``'s ids are offset past this draft's largest
        id (not by its node count: ids are not dense after consolidation, reference bug 3)."""
        off = self.max_id + 1
        moved = [
            DraftNode(n.id + off, n.stage, frozenset(p + off for p in n.predecessors),
                      tuple(frozenset((p + off, k) for p, k in ins) for ins in n.inputs))
            for n in other._nodes
        ]
        return Draft((*self._nodes, *moved))

    # -- rewrites, cost and explanation live in their own core modules ----------------------
    def defer_embroidery(self) -> Draft:
        from warpmesh.planning.rewrites import defer_embroidery

        return defer_embroidery(self)

    def pushdown_filters(self) -> Draft:
        from warpmesh.planning.rewrites import pushdown_filters

        return pushdown_filters(self)

    def fuse_adjacent(self) -> Draft:
        from warpmesh.planning.rewrites import fuse_adjacent

        return fuse_adjacent(self)

    def consolidate_embroideries(self) -> Draft:
        from warpmesh.planning.rewrites import consolidate_embroideries

        return consolidate_embroideries(self)

    def optimize(self) -> Draft:
        from warpmesh.planning.rewrites import optimize

        return optimize(self)

    def plan(self, stats: WarpStats | None = None, *, max_coupling: int | None = None) -> Draft:
        from warpmesh.planning.rewrites import plan

        return plan(self, stats, max_coupling=max_coupling)

    def is_equivalent_to(self, other: Draft) -> bool:
        from warpmesh.planning.rewrites import equivalent

        return equivalent(self, other)

    def coordination_cost(self, stats: WarpStats | None = None) -> CoordinationCost:
        from warpmesh.planning.cost import coordination_cost

        return coordination_cost(self, stats)

    def explain(self, stats: WarpStats | None = None, *, max_coupling: int | None = None) -> str:
        from warpmesh.planning.explain import explain

        return explain(self, stats, max_coupling=max_coupling)

    # -- value semantics ----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Draft) and self._nodes == other._nodes

    def __hash__(self) -> int:
        return hash(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __repr__(self) -> str:
        return "Draft([" + ", ".join(repr(n) for n in self._nodes) + "])"


class Warp:
    """Entry point of the planning API, as in the seed: ``Warp.shuttle(op)`` starts a draft."""

    @staticmethod
    def shuttle(op: str) -> Draft:
        """A draft with one source node (id 0) that yields the elements of ``op``."""
        return Draft((DraftNode(0, Stage.of(StageKind.SOURCE, op)),))

