"""Equal states encode to identical bytes whatever the insertion order and the hash seed, and the
wire layout of each type is pinned (it is protocol: peers of different builds must agree)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from warpmesh.crdt import (
    GCounter,
    GSet,
    HyperLogLog,
    LWWRegister,
    MVRegister,
    ORMap,
    ORSet,
    PNCounter,
    digest,
    encode,
)

BUILD = r"""
import json, random
from warpmesh.crdt import *

def build(seed):
    rng = random.Random(seed)
    reps = [f"node-{i}@{i * 7}" for i in range(12)]
    elems = [f"e{i}" for i in range(40)] + [i for i in range(10)] + [b"b", (1, "t"), True, 1.0, None]
    out = {}
    g, pn, gs, s, mv = GCounter(), PNCounter(), GSet(), ORSet(), MVRegister()
    m = ORMap(LWWRegister)
    h = HyperLogLog(10)
    deltas = []
    for step in range(400):
        r = rng.choice(reps)
        e = rng.choice(elems)
        g.inc(r, rng.randint(0, 3))
        (pn.inc if rng.random() < 0.5 else pn.dec)(r, rng.randint(0, 3))
        gs.add(e)
        deltas.append(s.add(r, e) if rng.random() < 0.6 else s.remove(e))
        m.update(r, e, lambda reg: reg.set(r, step)) if rng.random() < 0.6 else m.remove(e)
        mv.write(r, e)
        h.add(e)
    # Rebuild the ORSet on a fresh replica from its shuffled deltas: a different insertion order.
    rng.shuffle(deltas)
    s2 = ORSet()
    for d in deltas:
        s2.join(d)
    assert s2 == s
    for name, x in [("g", g), ("pn", pn), ("gs", gs), ("s", s), ("s2", s2), ("m", m), ("mv", mv), ("h", h)]:
        out[name] = digest(x).hex()
    return out

print(json.dumps(build(7), sort_keys=True))
"""


@pytest.mark.process
def test_digests_do_not_depend_on_the_hash_seed() -> None:
    outputs = set()
    for seed in ("0", "1", "4242"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        res = subprocess.run([sys.executable, "-c", BUILD], env=env, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        outputs.add(res.stdout)
    assert len(outputs) == 1
    digests = json.loads(outputs.pop())
    assert digests["s"] == digests["s2"]
    namespace: dict[str, object] = {}
    exec(BUILD.replace("print(json.dumps(build(7), sort_keys=True))", ""), namespace)
    assert namespace["build"](7) == digests  # type: ignore[operator]


def test_any_insertion_order_gives_the_same_bytes() -> None:
    ops = [(f"r{i % 5}@1", f"k{i % 17}", i) for i in range(200)]
    encodings = set()
    for seed in range(4):
        # Each replica's own deltas in order; replicas interleaved differently per seed.
        rng = random.Random(seed)
        writers = {f"r{i}@1": ORMap(GCounter) for i in range(5)}
        deltas = [writers[r].update(r, k, lambda c, r=r, n=n: c.inc(r, n % 3 + 1)) for r, k, n in ops]
        rng.shuffle(deltas)
        m = ORMap(GCounter)
        for d in deltas:
            m.join(d)
        encodings.add(bytes(digest(m)))
    assert len(encodings) == 1


def test_wire_layouts_are_pinned() -> None:
    g = GCounter({"b@1": 2, "a@1": 1})
    assert encode(g) == [1, [["a@1", 1], ["b@1", 2]]]
    pn = PNCounter()
    pn.dec("a@1", 3)
    assert encode(pn) == [2, [[], [["a@1", 3]]]]
    assert encode(GSet(["b", "a", 1])) == [3, [1, "a", "b"]]
    s = ORSet()
    s.add("a@1", "x")
    s.add("b@1", "y")
    assert encode(s) == [4, [[["a@1", 1, []], ["b@1", 1, []]], [["x", [[0, 1]]], ["y", [[1, 1]]]]]]
    assert encode(LWWRegister(3, "a@1", "v")) == [5, [3, "a@1", "v"]]
    assert encode(LWWRegister()) == [5, []]
    mv = MVRegister()
    mv.write("a@1", "v")
    assert encode(mv) == [6, [[["a@1", 1, []]], [[0, 1, "v"]]]]
    m = ORMap(LWWRegister)
    m.put("a@1", "k", LWWRegister(1, "a@1", "v"))
    assert encode(m) == [7, [5, [["a@1", 1, []]], [["k", [[0, 1, [5, [1, "a@1", "v"]]]]]]]]
    h = HyperLogLog(4)
    h.add("hello")  # 0x248BFA47 = 0010 0100...: index 2 (top 4 bits), rank 2 (first 1-bit of the rest)
    assert encode(h) == [8, [4, [2, 2]]]
