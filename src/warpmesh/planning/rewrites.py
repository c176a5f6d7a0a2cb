"""Pure rewrites of a :class:`~warpmesh.planning.model.Draft` (seed 000, "Making the plan better").

Every rewrite returns a draft that computes the same result (:func:`equivalent` holds). Differences
from the reference (kuilt-warp.md §2.3, §7):

* ``defer_embroidery`` and ``pushdown_filters`` rebuild only components that *are* simple paths (one
  source at the head, no batch, at most one embroider); anything else is left alone, so they never
  invent or drop a dependency (bugs 1 and 2) and are idempotent on every draft.
* ``consolidate_embroideries`` keeps each member's own inputs (ports), optionally splits a level into
  the fewest batches that respect ``max_coupling``, and reorders nodes topologically when a batch moves
  ahead of a branch's later nodes.
* ``plan`` uses the statistics: the filters of a path run most selective first.
* ``equivalent`` also compares, per sink, the set of ops it depends on (bug 2's detector).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Iterable

from warpmesh.planning.model import Draft, DraftError, DraftNode, Port, Stage, StageKind
from warpmesh.planning.stats import WarpStats

__all__ = [
    "consolidate_embroideries",
    "defer_embroidery",
    "equivalent",
    "fuse_adjacent",
    "optimize",
    "plan",
    "pushdown_filters",
    "selectivity",
    "topo_sorted",
]

#: Rewrite passes before ``optimize`` gives up looking for a fixpoint (each pass only shortens or
#: reorders paths, so real drafts settle in two or three).
MAX_PASSES = 64


def topo_sorted(nodes: Iterable[DraftNode]) -> list[DraftNode]:
    """Nodes in a topological order that keeps the given order wherever it is already valid."""
    ns = list(nodes)
    index = {n.id: i for i, n in enumerate(ns)}
    waiting = {n.id: len(n.predecessors) for n in ns}
    succ: dict[int, list[int]] = {n.id: [] for n in ns}
    for n in ns:
        for p in n.predecessors:
            succ[p].append(n.id)
    heap = [index[i] for i, w in waiting.items() if w == 0]
    heapq.heapify(heap)
    out: list[DraftNode] = []
    while heap:
        n = ns[heapq.heappop(heap)]
        out.append(n)
        for s in succ[n.id]:
            waiting[s] -= 1
            if waiting[s] == 0:
                heapq.heappush(heap, index[s])
    if len(out) != len(ns):
        raise DraftError("the draft has a cycle")
    return out


def _simple_path(comp: list[DraftNode]) -> bool:
    """A chain headed by a source, with no batch and at most one embroider."""
    if not comp[0].stage.is_source:
        return False
    coordinated = 0
    for i, n in enumerate(comp):
        if n.stage.kind is StageKind.BATCHED_EMBROIDER:
            return False
        coordinated += n.stage.coordinated
        if i and n.predecessors != {comp[i - 1].id}:
            return False
    return coordinated <= 1


def _chain(stages: list[DraftNode]) -> list[DraftNode]:
    """Relink nodes (keeping their ids and stages) into a path in the given order."""
    out: list[DraftNode] = []
    for n in stages:
        preds = frozenset({out[-1].id}) if out else frozenset()
        out.append(DraftNode(n.id, n.stage, preds))
    return out


def _per_path(d: Draft, rebuild: Callable[[list[DraftNode]], list[DraftNode] | None]) -> Draft:
    """Apply ``rebuild`` to every simple-path component; the rebuilt nodes take the places of the old."""
    position = {n.id: i for i, n in enumerate(d.nodes)}
    slots: list[DraftNode | None] = list(d.nodes)
    changed = False
    for comp in d.components():
        if not _simple_path(comp):
            continue
        new = rebuild(comp)
        if new is None or new == comp:
            continue
        changed = True
        places = sorted(position[c.id] for c in comp)
        for i, pos in enumerate(places):
            slots[pos] = new[i] if i < len(new) else None  # a rebuild may fuse nodes away
    return Draft(n for n in slots if n is not None) if changed else d


def defer_embroidery(d: Draft) -> Draft:
    """Move a path's lone embroider to the end, so consensus sees only already-filtered elements.

    Before: ``src -> map.a -> EMB -> filter.f``;  after: ``src -> map.a -> filter.f -> EMB``.
    """

    def rebuild(comp: list[DraftNode]) -> list[DraftNode] | None:
        emb = [n for n in comp if n.stage.coordinated]
        if len(emb) != 1 or emb[0] is comp[-1]:
            return None
        return _chain([n for n in comp if n is not emb[0]] + emb)

    return _per_path(d, rebuild)


def selectivity(stats: WarpStats, op: str, source_cardinality: int) -> float:
    """The fraction of its source's elements filter ``op`` passed, clamped to [0, 1]; 1 if unknown."""
    seen = stats.estimated_cardinality(op)
    if seen <= 0 or source_cardinality <= 0:
        return 1.0
    return min(1.0, max(0.0, seen / source_cardinality))


def pushdown_filters(d: Draft, stats: WarpStats | None = None) -> Draft:
    """Rebuild a path as source, filters, maps, then its embroider (filters are assumed to read the
    source element: a modelled assumption, seed 000).

    Before: ``src -> map.a -> filter.f -> EMB``;  after: ``src -> filter.f -> map.a -> EMB``.
    With ``stats`` (as :func:`plan` calls it) the path's filter ops also run most selective first, as
    one fused stage keeping the first filter's node id.
    """

    def rebuild(comp: list[DraftNode]) -> list[DraftNode] | None:
        src = comp[0]
        filters = [n for n in comp[1:] if n.stage.is_filter]
        maps = [n for n in comp[1:] if n.stage.is_map]
        emb = [n for n in comp[1:] if n.stage.coordinated]
        if stats is not None and filters:
            base = stats.estimated_cardinality(src.stage.op_id)
            ops = [op for f in filters for op in f.stage.op_ids]
            ranked = sorted(range(len(ops)), key=lambda i: (selectivity(stats, ops[i], base), i))
            ordered = tuple(ops[i] for i in ranked)
            kind = StageKind.FILTER if len(ordered) == 1 else StageKind.FUSED_FILTER
            filters = [DraftNode(filters[0].id, Stage(kind, ordered))]
        return _chain([src, *filters, *maps, *emb])

    return _per_path(d, rebuild)


def _fusable(a: Stage, b: Stage) -> StageKind | None:
    if a.is_map and b.is_map:
        return StageKind.FUSED_MAP
    if a.is_filter and b.is_filter:
        return StageKind.FUSED_FILTER
    return None


def fuse_adjacent(d: Draft) -> Draft:
    """Merge a map (filter) into its only predecessor when that is a map (filter) with no other
    successor: one pass over the elements instead of two. The merged node keeps the first id.

    Before: ``src -> map.a -> map.b -> EMB``;  after: ``src -> FUSED_MAP(a, b) -> EMB``.
    """
    nodes = {n.id: n for n in d.nodes}
    order = [n.id for n in d.nodes]
    changed = False
    while True:
        succ: dict[int, list[int]] = {i: [] for i in order}
        for i in order:
            for p in nodes[i].predecessors:
                succ[p].append(i)
        target = None
        for i in order:
            b = nodes[i]
            if len(b.predecessors) != 1:
                continue
            (p,) = b.predecessors
            a = nodes[p]
            kind = _fusable(a.stage, b.stage)
            if kind is not None and succ[p] == [i]:
                target = (a, b, kind)
                break
        if target is None:
            break
        a, b, kind = target
        changed = True
        nodes[a.id] = DraftNode(a.id, Stage(kind, a.stage.op_ids + b.stage.op_ids), a.predecessors, a.inputs)
        del nodes[b.id]
        order.remove(b.id)
        for s in succ[b.id]:
            n = nodes[s]
            ins = tuple(frozenset((a.id if q == b.id else q, k) for q, k in i_) for i_ in n.inputs)
            preds = frozenset(a.id if q == b.id else q for q in n.predecessors)
            nodes[s] = DraftNode(n.id, n.stage, preds, ins)
    return Draft(nodes[i] for i in order) if changed else d


def coordinated_levels(d: Draft) -> dict[int, int]:
    """Level of every coordinated node: 0 if no coordinated node precedes it, else one more than the
    highest coordinated level among its ancestors (free nodes pass levels through)."""
    visible: dict[int, int] = {}
    levels: dict[int, int] = {}
    for n in d.nodes:
        below = max((visible[p] for p in n.predecessors), default=-1)
        if n.stage.coordinated:
            levels[n.id] = below + 1
            visible[n.id] = below + 1
        else:
            visible[n.id] = below
    return levels


def _groups(n: int, cap: int | None) -> list[int]:
    """Sizes of the fewest contiguous batches of at most ``cap`` (as even as possible)."""
    batches = 1 if cap is None else -(-n // cap)
    base, extra = divmod(n, batches)
    return [base + 1] * extra + [base] * (batches - extra)


def consolidate_embroideries(d: Draft, max_coupling: int | None = None) -> Draft:
    """Independent coordinated nodes at the same level become one ``BATCHED_EMBROIDER`` (one
    consensus round), or the fewest batches of at most ``max_coupling`` members.

    Before: ``a -> EMB.a``, ``b -> EMB.b``, ``c -> EMB.c -> map.m -> EMB.d`` (4 rounds);
    after: ``{a, b, c} -> BATCH(a, b, c)``, ``BATCH[c] -> map.m -> EMB.d`` (2 rounds, coupling 3).
    """
    if max_coupling is not None and (type(max_coupling) is not int or max_coupling < 1):
        raise DraftError(f"max_coupling must be a positive int or None, got {max_coupling!r}")
    levels = coordinated_levels(d)
    by_level: dict[int, list[DraftNode]] = {}
    for n in d.nodes:
        if n.id in levels:
            by_level.setdefault(levels[n.id], []).append(n)
    remap: dict[Port, Port] = {}
    removed: set[int] = set()
    placed: dict[int, list[DraftNode]] = {}  # id of the last member's node -> new nodes placed there
    next_id = d.max_id + 1
    for level in sorted(by_level):
        at = by_level[level]
        members = [(n, k) for n in at for k in range(n.stage.ports)]
        sizes = _groups(len(members), max_coupling)
        current = [[(n.id, k) for k in range(n.stage.ports)] for n in at]
        wanted: list[list[tuple[DraftNode, int]]] = []
        i = 0
        for size in sizes:
            wanted.append(members[i:i + size])
            i += size
        if [[(n.id, k) for n, k in g] for g in wanted] == current:
            continue
        for group in wanted:
            ops = tuple(n.stage.op_ids[k] for n, k in group)
            stage = Stage(StageKind.BATCHED_EMBROIDER if len(ops) > 1 else StageKind.EMBROIDER, ops)
            inputs = tuple(n.inputs[k] for n, k in group)
            new = DraftNode(next_id, stage, frozenset(p for ins in inputs for p, _ in ins), inputs)
            for port, (n, k) in enumerate(group):
                remap[(n.id, k)] = (next_id, port)
                removed.add(n.id)
            placed.setdefault(group[-1][0].id, []).append(new)
            next_id += 1
    if not remap:
        return d
    out: list[DraftNode] = []
    for n in d.nodes:
        if n.id not in removed:
            out.append(n)
        out.extend(placed.get(n.id, ()))
    fixed = []
    for n in out:
        ins = tuple(frozenset(remap.get(p, p) for p in i_) for i_ in n.inputs)
        fixed.append(DraftNode(n.id, n.stage, frozenset(q for i_ in ins for q, _ in i_), ins))
    return Draft(topo_sorted(fixed))


def _fixpoint(d: Draft, stats: WarpStats | None) -> Draft:
    for _ in range(MAX_PASSES):
        nxt = fuse_adjacent(pushdown_filters(defer_embroidery(d), stats))
        if nxt == d:
            return d
        d = nxt
    return d  # pragma: no cover - every pass shortens or settles a path


def _settle(d: Draft, stats: WarpStats | None, max_coupling: int | None) -> Draft:
    # Splitting a batch under a cap can leave a lone embroider on a simple path again, which the
    # path rewrites may then improve: alternate until neither changes anything.
    for _ in range(MAX_PASSES):
        nxt = consolidate_embroideries(_fixpoint(d, stats), max_coupling)
        if nxt == d:
            return d
        d = nxt
    return d  # pragma: no cover


def optimize(d: Draft) -> Draft:
    """Defer, push down and fuse to a fixpoint, then consolidate. Idempotent on every draft."""
    return _settle(d, None, None)


def plan(d: Draft, stats: WarpStats | None = None, *, max_coupling: int | None = None) -> Draft:
    """:func:`optimize` using ``stats``: filters most selective first, and levels batched into the
    fewest batches of at most ``max_coupling`` (so rounds are minimised first, then coupling)."""
    if max_coupling is not None and (type(max_coupling) is not int or max_coupling < 1):
        raise DraftError(f"max_coupling must be a positive int or None, got {max_coupling!r}")
    return _settle(d, stats if stats is not None else WarpStats(), max_coupling)


def _ancestor_sets(d: Draft) -> Counter[frozenset[str]]:
    return Counter(d.sink_ancestors().values())


def _signature(d: Draft) -> tuple[Counter[str], Counter[str], Counter[str], Counter[frozenset[str]]]:
    sources: Counter[str] = Counter()
    coordinated: Counter[str] = Counter()
    free: Counter[str] = Counter()
    for n in d.nodes:
        bag = sources if n.stage.is_source else coordinated if n.stage.coordinated else free
        bag.update(n.stage.op_ids)
    return sources, coordinated, free, _ancestor_sets(d)


def equivalent(a: Draft, b: Draft) -> bool:
    """Same sources, coordinated ops and free ops (multisets), and the same multiset of per-sink
    ancestor op sets (a map moved to another branch is a different computation)."""
    return _signature(a) == _signature(b)
