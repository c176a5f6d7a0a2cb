"""What a draft computes (pure): how each stage applies its ops, and a reference evaluator.

Op semantics: a source op ``op() -> iterable`` (or an iterable given at submission); a map op
``op(x) -> y``; a filter op ``op(x) -> bool``; an embroider op ``op(batch: list) -> list``, applied to
the batch consensus committed, in committed order. Rewrites move embroiders past free stages, so an
embroider op must commit to the elements it is given without depending on which free stages ran
first (sealing, deduplicating, sorting do; the seed's "rank" into a total order does). The runtime
(:mod:`warpmesh.planning.runtime`) executes the same functions over the mesh; :func:`evaluate` is the
single-process reference the simulator compares it with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from warpmesh.planning.model import Draft, DraftError, Port, Stage, StageKind
from warpmesh.planning.stats import WarpStats

__all__ = ["OpTable", "apply_embroider", "apply_free", "evaluate", "sink_keys"]

OpTable = Mapping[str, Callable[..., Any]]


def _resolve(ops: OpTable, op: str) -> Callable[..., Any]:
    fn = ops.get(op)
    if fn is None:
        raise DraftError(f"op {op!r} is not registered on this peer")
    return fn


def apply_free(stage: Stage, ops: OpTable, elements: Iterable[Any],
               observe: Callable[[str, list[Any]], None] | None = None) -> list[Any]:
    """Run a (possibly fused) map or filter stage over ``elements``; report filter passes to
    ``observe(op, passed)``."""
    out = list(elements)
    for op in stage.op_ids:
        fn = _resolve(ops, op)
        if stage.is_map:
            out = [fn(x) for x in out]
        elif stage.is_filter:
            out = [x for x in out if fn(x)]
            if observe is not None:
                observe(op, out)
        else:
            raise DraftError(f"{stage.label()} is not a free stage")
    return out


def apply_embroider(op: str, ops: OpTable, batch: list[Any]) -> list[Any]:
    """Apply embroider ``op`` to a committed batch."""
    return list(_resolve(ops, op)(list(batch)))


def sink_keys(d: Draft) -> dict[Port, str]:
    """Each sink vertex's result key: its sorted ancestor op ids, so equivalent drafts (whatever
    their shape) key their outputs alike."""
    return {p: ",".join(sorted(s)) for p, s in d.sink_ancestors().items()}


def source_elements(stage: Stage, ops: OpTable, sources: Mapping[str, Iterable[Any]] | None) -> list[Any]:
    if sources is not None and stage.op_id in sources:
        return list(sources[stage.op_id])
    return list(_resolve(ops, stage.op_id)())


def evaluate(d: Draft, ops: OpTable, sources: Mapping[str, Iterable[Any]] | None = None,
             stats: WarpStats | None = None) -> dict[str, list[Any]]:
    """Run ``d`` in this process: sink key -> output elements (embroider batches in input order).
    Observes source elements and filter passes into ``stats`` if given."""
    outputs: dict[Port, list[Any]] = {}

    def observe(op: str, items: list[Any]) -> None:
        if stats is not None:
            stats.observe_all(op, items)

    for n in d.nodes:
        if n.stage.is_source:
            items = source_elements(n.stage, ops, sources)
            observe(n.stage.op_id, items)
            outputs[(n.id, 0)] = items
            continue
        for port in range(n.stage.ports):
            inp = [x for p in sorted(n.inputs[port]) for x in outputs[p]]
            member = n.stage.member(port)
            if member.kind is StageKind.EMBROIDER:
                outputs[(n.id, port)] = apply_embroider(member.op_id, ops, inp)
            else:
                outputs[(n.id, port)] = apply_free(member, ops, inp, observe)
    result: dict[str, list[Any]] = {}
    for p, key in sink_keys(d).items():
        result.setdefault(key, []).extend(outputs[p])
    return result
