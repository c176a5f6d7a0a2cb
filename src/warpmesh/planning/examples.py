"""The seed's example queries with ops that really run (used by the demo, the bench, the simulator
and ``warpmesh draft explain warpmesh.planning.examples:three_branch``).

Elements are plain msgpack values. Maps keep the source value readable (so filters read the source
element whatever runs first, the modelled assumption of ``pushdown_filters``), and embroiders seal
their batch into a total order (``sorted``), which commutes with the free stages around them.
"""

from __future__ import annotations

import random
from typing import Any

from warpmesh.planning.model import Draft, Warp

__all__ = [
    "RANDOM_OPS",
    "THOUSAND_DOCS_OPS",
    "THREE_BRANCH_OPS",
    "random_draft",
    "thousand_docs",
    "three_branch",
]


def _seal(batch: list[Any]) -> list[Any]:
    return sorted(batch, key=repr)


# -- "Rounds 4 -> 2, coupling 3": A + B + C, where C chains two embroideries -------------------------
def three_branch() -> Draft:
    """``A(src.a -> emb.a) + B(src.b -> emb.b) + C(src.c -> emb.c -> map.m -> emb.d)`` (seed 000)."""
    a = Warp.shuttle("source.a").embroider("embroider.a")
    b = Warp.shuttle("source.b").embroider("embroider.b")
    c = Warp.shuttle("source.c").embroider("embroider.c").map("map.m").embroider("embroider.d")
    return a.combine(b).combine(c)


THREE_BRANCH_OPS: dict[str, Any] = {
    "source.a": lambda: [f"a{i}" for i in range(20)],
    "source.b": lambda: [f"b{i}" for i in range(10)],
    "source.c": lambda: [f"c{i}" for i in range(30)],
    "embroider.a": _seal,
    "embroider.b": _seal,
    "embroider.c": _seal,
    "map.m": lambda x: f"{x}:m",
    "embroider.d": _seal,
}


# -- "1,000 docs -> about 50": src -> map.score -> embroider.rank -> filter.above-threshold ---------
def thousand_docs() -> Draft:
    """The unplanned query: consensus sees every doc; planned, only those above the threshold."""
    return Warp.shuttle("src").map("map.score").embroider("embroider.rank").filter("filter.above-threshold")


def _doc_number(x: str) -> int:
    return int(x.split("|", 1)[0].removeprefix("doc_"))


THOUSAND_DOCS_OPS: dict[str, Any] = {
    "src": lambda: [f"doc_{i}" for i in range(1, 1001)],
    "map.score": lambda x: f"{x.split('|', 1)[0]}|score={_doc_number(x) % 97}",
    "embroider.rank": _seal,
    "filter.above-threshold": lambda x: _doc_number(x) % 20 == 0,
}


# -- random drafts for the simulator ----------------------------------------------------------------
_SOURCES = ("s1", "s2", "s3")
_MAPS = ("m1", "m2", "m3")
_FILTERS = ("f1", "f2", "f3")
_EMBROIDERS = ("e1", "e2", "e3")


def random_draft(rng: random.Random, *, max_branches: int = 3, max_steps: int = 5) -> Draft:
    """A random multi-branch draft over :data:`RANDOM_OPS` (what the simulator plans and runs)."""
    d: Draft | None = None
    for _ in range(rng.randint(1, max_branches)):
        b = Warp.shuttle(rng.choice(_SOURCES))
        for _ in range(rng.randint(0, max_steps)):
            kind = rng.choice(("map", "filter", "embroider"))
            ops = {"map": _MAPS, "filter": _FILTERS, "embroider": _EMBROIDERS}[kind]
            b = getattr(b, kind)(rng.choice(ops))
        d = b if d is None else d.combine(b)
    assert d is not None
    return d


def _tag(m: str) -> Any:
    return lambda x: [x[0], x[1], [*x[2], m]]


def _keep(k: int) -> Any:
    return lambda x: x[1] % k != 0


RANDOM_OPS: dict[str, Any] = {
    **{s: (lambda s=s, n=n: [[s, i, []] for i in range(n)]) for s, n in zip(_SOURCES, (40, 25, 60), strict=True)},
    **{m: _tag(m) for m in _MAPS},
    **{f: _keep(k) for f, k in zip(_FILTERS, (2, 3, 5), strict=True)},
    **dict.fromkeys(_EMBROIDERS, _seal),
}
