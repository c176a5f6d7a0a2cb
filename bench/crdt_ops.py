"""Per-operation cost of the replicated types as the state grows from 100 to 100,000 keys.

Operations run in batches of ``--ops`` (fresh keys, removed again afterwards), so a state of n keys
briefly holds up to n + ops keys while a put batch runs; remove-delta batches take min(n, ops) keys.

Prints one JSON line per (operation, size): our median µs/op beside the peer's, measured in the same
run, and the ratio. The point is the shape: put, remove and joining a one-mutation delta must stay
flat as the state grows (they are O(1) / O(delta)), while a full-state encode is O(n log n).

Peers (optional extra ``pip install -e '.[bench]'``): pycrdt (Rust Yrs bindings) ``Map`` for the
map operations and its update exchange for delta joins; mmh3 (C) for MurmurHash3.

    python bench/crdt_ops.py [--sizes 100,1000,10000,100000] [--ops 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from warpmesh.aio.tuning import install_gc_pause
from warpmesh.crdt import HyperLogLog, LWWRegister, ORMap, ORSet, digest, encoded_bytes, murmur3_x86_32

try:
    import pycrdt
except ImportError:  # pragma: no cover - optional peer
    pycrdt = None
try:
    import mmh3
except ImportError:  # pragma: no cover - optional peer
    mmh3 = None

ME, PEER = "bench-a@1", "bench-b@1"


def median_us(run: Callable[[], float], repeats: int) -> float:
    """``run`` returns seconds per op; the median over ``repeats`` runs, in µs."""
    return statistics.median(run() for _ in range(repeats)) * 1e6


def per_op(fn: Callable[[], Any], ops: int) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / ops


# --- ours --------------------------------------------------------------------------------------------


def board(n: int) -> ORMap[LWWRegister]:
    m: ORMap[LWWRegister] = ORMap(LWWRegister)
    for i in range(n):
        m.update(ME, f"task-{i}", lambda r, i=i: r.set(ME, i))
    return m


def ours_board(n: int, ops: int, repeats: int) -> dict[str, float]:
    local = board(n)
    peer = local.copy()
    out: dict[str, float] = {}
    round_ = [0]

    def fresh_keys() -> list[str]:
        round_[0] += 1
        return [f"new-{round_[0]}-{i}" for i in range(ops)]

    def put_then_remove() -> tuple[float, float]:
        keys = fresh_keys()
        t0 = time.perf_counter()
        for k in keys:
            local.update(ME, k, lambda r: r.set(ME, "result"))
        t1 = time.perf_counter()
        for k in keys:
            local.remove(k)
        t2 = time.perf_counter()
        return (t1 - t0) / ops, (t2 - t1) / ops

    samples = [put_then_remove() for _ in range(repeats)]
    out["ormap_put"] = statistics.median(s[0] for s in samples) * 1e6
    out["ormap_remove"] = statistics.median(s[1] for s in samples) * 1e6

    def join_put_deltas() -> float:
        keys = fresh_keys()
        deltas = [peer.update(PEER, k, lambda r: r.set(PEER, "result")) for k in keys]
        t = per_op(lambda: [local.join(d) for d in deltas], ops)
        local.join(peer.remove_all(keys))  # back to n keys for the next sample (untimed)
        return t

    def join_remove_deltas() -> float:
        victims = peer.keys()[:ops]
        deltas = [peer.remove(k) for k in victims]
        t = per_op(lambda: [local.join(d) for d in deltas], len(deltas))
        for k in victims:  # restore the size for the next repeat
            local.join(peer.update(PEER, k, lambda r: r.set(PEER, 0)))
        return t

    out["ormap_join_put_delta"] = median_us(join_put_deltas, repeats)
    out["ormap_join_remove_delta"] = median_us(join_remove_deltas, repeats)
    calls = max(1, 20_000 // n)  # several calls per sample for small states, so one sample is not noise
    out["ormap_encode_full_state_ms"] = (
        median_us(lambda: per_op(lambda: [encoded_bytes(local) for _ in range(calls)], calls), repeats) / 1000
    )
    out["ormap_digest_full_state_ms"] = (
        median_us(lambda: per_op(lambda: [digest(local) for _ in range(calls)], calls), repeats) / 1000
    )
    return out


def ours_queue(n: int, ops: int, repeats: int) -> dict[str, float]:
    q = ORSet()
    for i in range(n):
        q.add(ME, f"task-{i}")
    peer = q.copy()
    out: dict[str, float] = {}
    counter = [0]

    def add_then_remove() -> tuple[float, float]:
        counter[0] += 1
        keys = [f"n{counter[0]}-{i}" for i in range(ops)]
        t0 = time.perf_counter()
        for k in keys:
            q.add(ME, k)
        t1 = time.perf_counter()
        for k in keys:
            q.remove(k)
        t2 = time.perf_counter()
        return (t1 - t0) / ops, (t2 - t1) / ops

    samples = [add_then_remove() for _ in range(repeats)]
    out["orset_add"] = statistics.median(s[0] for s in samples) * 1e6
    out["orset_remove"] = statistics.median(s[1] for s in samples) * 1e6

    def join_add_deltas() -> float:
        counter[0] += 1
        keys = [f"p{counter[0]}-{i}" for i in range(ops)]
        deltas = [peer.add(PEER, k) for k in keys]
        t = per_op(lambda: [q.join(d) for d in deltas], ops)
        q.join(peer.remove_all(keys))  # back to n elements (untimed)
        return t

    out["orset_join_add_delta"] = median_us(join_add_deltas, repeats)
    return out


# --- peer: pycrdt (Yrs) ------------------------------------------------------------------------------


def peer_board(n: int, ops: int, repeats: int) -> dict[str, float]:
    if pycrdt is None:
        return {}
    doc = pycrdt.Doc()
    m = doc.get("board", type=pycrdt.Map)
    with doc.transaction():
        for i in range(n):
            m[f"task-{i}"] = i
    remote = pycrdt.Doc()
    remote.apply_update(doc.get_update())
    rm = remote.get("board", type=pycrdt.Map)
    out: dict[str, float] = {}
    round_ = [0]

    def put_then_remove() -> tuple[float, float]:
        round_[0] += 1
        keys = [f"new-{round_[0]}-{i}" for i in range(ops)]
        t0 = time.perf_counter()
        for k in keys:
            m[k] = "result"  # one transaction per op, like one CRDT mutation
        t1 = time.perf_counter()
        for k in keys:
            del m[k]
        t2 = time.perf_counter()
        return (t1 - t0) / ops, (t2 - t1) / ops

    samples = [put_then_remove() for _ in range(repeats)]
    out["ormap_put"] = statistics.median(s[0] for s in samples) * 1e6
    out["ormap_remove"] = statistics.median(s[1] for s in samples) * 1e6

    def join_put_deltas() -> float:
        round_[0] += 1
        keys = [f"peer-{round_[0]}-{i}" for i in range(ops)]
        updates = []
        for k in keys:
            sv = remote.get_state()
            rm[k] = "result"
            updates.append(remote.get_update(sv))
        t = per_op(lambda: [doc.apply_update(u) for u in updates], ops)
        sv = remote.get_state()
        with remote.transaction():
            for k in keys:
                del rm[k]
        doc.apply_update(remote.get_update(sv))  # back to n keys (untimed)
        return t

    def join_remove_deltas() -> float:
        round_[0] += 1
        victims = [k for k in list(rm.keys())[:ops]]
        updates = []
        for k in victims:
            sv = remote.get_state()
            del rm[k]
            updates.append(remote.get_update(sv))
        t = per_op(lambda: [doc.apply_update(u) for u in updates], len(updates))
        for k in victims:
            sv = remote.get_state()
            rm[k] = 0
            doc.apply_update(remote.get_update(sv))
        return t

    out["ormap_join_put_delta"] = median_us(join_put_deltas, repeats)
    out["ormap_join_remove_delta"] = median_us(join_remove_deltas, repeats)
    calls = max(1, 20_000 // n)
    out["ormap_encode_full_state_ms"] = (
        median_us(lambda: per_op(lambda: [doc.get_update() for _ in range(calls)], calls), repeats) / 1000
    )
    return out


def hash_rows(repeats: int) -> list[dict[str, Any]]:
    rows = []
    for size in (11, 64, 1024):
        data = b"t" * size
        ours = median_us(lambda data=data: per_op(lambda: [murmur3_x86_32(data) for _ in range(5000)], 5000), repeats)
        peer = None
        if mmh3 is not None:
            peer = median_us(
                lambda data=data: per_op(lambda: [mmh3.hash(data, 0, signed=False) for _ in range(5000)], 5000), repeats
            )
        rows.append(row("murmur3_x86_32", f"{size} bytes", ours, "mmh3 (C)", peer))
    hll = HyperLogLog()
    items = [f"doc-{i}" for i in range(20000)]
    ours = median_us(lambda: per_op(lambda: [hll.add(x) for x in items], len(items)), repeats)
    rows.append(row("hll_add", "p=14", ours, None, None))
    return rows


def row(op: str, size: Any, ours: float, peer_name: str | None, peer: float | None) -> dict[str, Any]:
    return {
        "bench": "crdt_ops",
        "op": op,
        "size": size,
        "ours_us": round(ours, 3),
        "peer": peer_name,
        "peer_us": None if peer is None else round(peer, 3),
        "ratio_ours_over_peer": None if not peer else round(ours / peer, 2),
    }


def main() -> None:
    install_gc_pause()  # as the runtimes do: encoding a big state is a bulk section
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,10000,100000")
    ap.add_argument("--ops", type=int, default=2000, help="operations per timed batch")
    ap.add_argument("--repeats", type=int, default=5, help="batches per figure (the median is reported)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    peer_name = "pycrdt Map (Yrs)" if pycrdt is not None else None
    flat: dict[str, list[float]] = {}
    for n in sizes:
        ours = ours_board(n, args.ops, args.repeats) | ours_queue(n, args.ops, args.repeats)
        peer = peer_board(n, args.ops, args.repeats)
        for op, v in ours.items():
            p = peer.get(op)
            unit_ms = op.endswith("_ms")
            r = row(op, n, v, peer_name if p is not None else None, p)
            if unit_ms:
                r["ours_ms"] = r.pop("ours_us")
                r["peer_ms"] = r.pop("peer_us")
            print(json.dumps(r), flush=True)
            flat.setdefault(op, []).append(v)
    for r in hash_rows(args.repeats):
        print(json.dumps(r), flush=True)
    # Flatness summary: largest / smallest size, per operation (≈1 means O(1) per op).
    summary = {
        op: round(vals[-1] / vals[0], 2) for op, vals in flat.items() if not op.endswith("_ms") and vals[0] > 0
    }
    print(json.dumps({"bench": "crdt_ops", "summary": f"cost at {sizes[-1]} / cost at {sizes[0]} keys", **summary}))


if __name__ == "__main__":
    main()
