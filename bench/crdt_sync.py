"""Bytes on the wire to keep CRDT replicas in sync, as the replicated state grows.

Runs real :class:`~warpmesh.quilt.Quilter` peers (each on a :class:`~warpmesh.net.mux.MuxSeam`
channel, as the WarpNode boards are) over :class:`~warpmesh.net.memory.MemoryFabric` under
:func:`warpmesh.sim.loop.run_virtual`, and counts the payload bytes the fabric carries
(``MemoryFabric.bytes_sent``: every frame on every link, the 1-byte mux tag included; a TCP link adds
its constant 11-byte frame header per frame on top). For each state size (default 100, 10,000 and
100,000 elements, every replica starting from the same state):

* ``per_mutation``: a burst of single mutations, each flushed on its own (one mutation per loop
  iteration: the delta is broadcast and every peer's ack is back before the next mutation). Bytes on
  all links per mutation, acks included. Must stay flat as the state grows.
* ``per_mutation_coalesced``: the same mutations issued in one loop iteration, so the Quilter sends
  them as one delta frame. Bytes per mutation.
* ``delta_frame_bytes``: the size of one single-mutation delta frame as it goes to one peer.
* ``settled_round_bytes``: a converged mesh idling: all bytes divided by the number of anti-entropy
  digest rounds (a round is one digest to one random peer, and whatever answer it provokes).
* ``full_state_bytes``: the state's canonical encoding (what a full-state transfer ships).
* ``churn`` (ORMap of LWWRegisters, the Warp boards' type): bytes on all links to repair two kinds
  of churn, from the moment it heals until every replica's state digest is equal again, split by
  Quilter frame kind:

  - ``partition``: one peer is cut off while another makes ``--churn-mutations`` single mutations
    (more batches than a resend may cover, so the history comes back by repair), then the cut heals.
    Repair costs the difference, so it must stay flat as the state grows.
  - ``restart``: one peer crashes, loses its state and comes back under a new incarnation (empty),
    while the others keep the board. It must receive the board about once (``restart_over_full``),
    not once per peer.

Mutations: ORSet ``add`` of a new element and ``remove`` of an existing one; ORMap (of
LWWRegisters, like the WarpNode boards) ``put`` of a new key, ``overwrite`` of an existing key and
``remove``. Elements are fixed-width ids (``task-0000042``), so only the state size varies. The
state is built by the mutating replica itself, so its dot counter is as large as the state is (the
honest case: a counter of 100,000 costs more msgpack bytes than one of 100).

Reference figures (kuilt-warp report §4.6, §5.4): a settled anti-entropy round costs about 94-103 bytes;
a full state at 100k entries is about 3.5 MB. Medians over ``--repeats`` runs (different seeds).

    python bench/crdt_sync.py [--sizes 100,10000,100000] [--mutations 200] [--burst 100]
                              [--repeats 3] [--peers 3] [--churn-peers 4] [--churn-mutations 300] [--quick]

Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warpmesh.crdt import LWWRegister, ORMap, ORSet, encoded_bytes, replica_id
from warpmesh.net.memory import MemoryFabric
from warpmesh.net.mux import MuxSeam
from warpmesh.quilt import Quilter, QuilterConfig
from warpmesh.sim import run_virtual

#: kuilt-warp report §4.6 (``Writerside/topics/performance.md``) and §5.4.
REF_SETTLED_ROUND = (94, 103)
REF_FULL_STATE_100K = 3_500_000
CHANNEL_TAG = 0x11
#: Incarnations look like the TCP mesh's boot incarnations (microseconds since the epoch).
INCARNATION = 1_763_700_000_000_000

OPS = {
    "orset": ("add", "remove"),
    "ormap": ("put", "overwrite", "remove"),
}


def elem(i: int) -> str:
    return f"task-{i:07d}"


def build_state(kind: str, n: int, replica: str) -> Any:
    if kind == "orset":
        s = ORSet()
        for i in range(n):
            s.add(replica, elem(i))
        return s
    m: ORMap[LWWRegister] = ORMap(LWWRegister)
    for i in range(n):
        m.update(replica, elem(i), lambda r, i=i: r.set(replica, f"r{i:07d}", timestamp=i + 1))
    return m


def mutator(kind: str, op: str, n: int, replica: str) -> tuple[Callable[[int], Any], Callable[[int], Any]]:
    """``(measured(j), inverse(j))``: the j-th mutation of this op and the unmeasured mutation that
    undoes its effect on the state's size, so the state holds ``n`` elements throughout.

    ``j`` ranges over ``0..n-1`` for ops on existing elements (remove, overwrite).
    """
    ts = [n + 1_000_000]

    def tick() -> int:
        ts[0] += 1
        return ts[0]

    if kind == "orset":
        if op == "add":
            return (lambda j: lambda s: s.add(replica, elem(n + j)),
                    lambda j: lambda s: s.remove(elem(n + j)))
        return (lambda j: lambda s: s.remove(elem(j)),
                lambda j: lambda s: s.add(replica, elem(j)))

    def put(key: str, value: str) -> Callable[[ORMap[LWWRegister]], Any]:
        t = tick()
        return lambda m: m.update(replica, key, lambda r: r.set(replica, value, timestamp=t))

    if op == "put":
        return (lambda j: put(elem(n + j), f"r{j:07d}"), lambda j: lambda m: m.remove(elem(n + j)))
    if op == "overwrite":
        return (lambda j: put(elem(j), f"w{j:07d}"), lambda j: None)
    return (lambda j: lambda m: m.remove(elem(j)), lambda j: put(elem(j), f"r{j:07d}"))


@dataclass
class Mesh:
    fabric: MemoryFabric
    quilters: list[Quilter[Any]]
    muxes: list[MuxSeam]

    def stat(self, name: str) -> int:
        return sum(q.core.stats[name] for q in self.quilters)

    async def close(self) -> None:
        for q in self.quilters:
            await q.close()
        for m in self.muxes:
            await m.close()
        await self.fabric.close()


async def start_mesh(state: Any, peers: int, seed: int) -> Mesh:
    fabric = MemoryFabric(seed=seed)
    names = [f"peer-{i + 1}" for i in range(peers)]
    seams = [fabric.join(n) for n in names]
    muxes = [MuxSeam(s) for s in seams]
    quilters = []
    for i, (name, mux) in enumerate(zip(names, muxes)):
        q = Quilter(mux.channel(CHANNEL_TAG), state if i == 0 else state.copy(),
                    stream=replica_id(name, INCARNATION), config=QuilterConfig(),
                    rng=random.Random(seed * 1000 + i))
        quilters.append(await q.start())
    mesh = Mesh(fabric, quilters, muxes)
    await asyncio.sleep(5.0)  # first-contact digests match (equal states): nothing else moves
    if mesh.stat("states_out"):
        raise RuntimeError("replicas that start equal exchanged a full state: the mesh is not settled")
    return mesh


async def drained(mesh: Mesh, seq: int, *, limit: int = 100_000) -> None:
    """Spin the loop (virtual time does not move) until batch ``seq`` of peer 0 is acked by everyone."""
    core = mesh.quilters[0].core
    for _ in range(limit):
        if core.seq >= seq and core.buffered_batches == 0 and not any(q.core.has_pending for q in mesh.quilters):
            return
        await asyncio.sleep(0)
    raise RuntimeError(f"batch {seq} was not acked by every peer (buffered {core.buffered_batches})")


async def measure(kind: str, n: int, mutations: int, burst: int, peers: int, seed: int) -> dict[str, Any]:
    replica = replica_id("peer-1", INCARNATION)
    t_build = time.perf_counter()
    state = build_state(kind, n, replica)
    build_s = time.perf_counter() - t_build
    full_state = len(encoded_bytes(state))
    mesh = await start_mesh(state, peers, seed)
    q = mesh.quilters[0]
    out: dict[str, Any] = {"full_state_bytes": full_state, "build_s": round(build_s, 3)}
    loop = asyncio.get_running_loop()
    burst = min(burst, n)  # a burst touches distinct existing elements
    out["burst"] = burst
    for op in OPS[kind]:
        measured, inverse = mutator(kind, op, n, replica)
        # -- one mutation per loop iteration, each flushed and acked before the next ----------------
        t0, digests0 = loop.time(), mesh.stat("out_digest")
        total = frame = 0
        for i in range(mutations):
            j = i % n
            b0, d0 = mesh.fabric.bytes_sent, q.core.stats["bytes_delta"]
            q.mutate(measured(j))
            await drained(mesh, q.core.seq + 1)
            total += mesh.fabric.bytes_sent - b0
            frame += q.core.stats["bytes_delta"] - d0 + 1  # + the mux tag
            undo = inverse(j)
            if undo is not None:
                q.mutate(undo)
                await drained(mesh, q.core.seq + 1)
        if mesh.stat("out_digest") != digests0 or loop.time() != t0:
            raise RuntimeError("anti-entropy ran during the delta window: the figure would be polluted")
        # -- a burst of distinct mutations in one loop iteration: one frame -----------------------
        b0, seq0 = mesh.fabric.bytes_sent, q.core.seq
        for j in range(burst):
            q.mutate(measured(j))
        await drained(mesh, seq0 + 1)
        if q.core.seq != seq0 + 1:
            raise RuntimeError(f"a burst of {burst} mutations was sent as {q.core.seq - seq0} frames")
        coalesced = (mesh.fabric.bytes_sent - b0) / burst
        seq0 = q.core.seq
        for j in range(burst):
            undo = inverse(j)
            if undo is not None:
                q.mutate(undo)
        if q.core.has_pending:
            await drained(mesh, seq0 + 1)
        if len(q.state) != n:
            raise RuntimeError(f"the state holds {len(q.state)} elements, not {n}")
        out[op] = {"per_mutation": total / mutations, "delta_frame": frame / mutations, "coalesced": coalesced}
    # -- a settled mesh idling --------------------------------------------------------------------
    await asyncio.sleep(5.0)  # every peer has had a quiet round since the last mutation
    b0, r0 = mesh.fabric.bytes_sent, mesh.stat("out_digest")
    moved0 = {k: mesh.stat(k) for k in ("out_delta", "out_state", "out_resend", "out_resend_request")}
    await asyncio.sleep(60.0)
    rounds = mesh.stat("out_digest") - r0
    moved = {k: mesh.stat(k) - v for k, v in moved0.items()}
    if rounds == 0 or any(moved.values()):
        raise RuntimeError(f"the idle mesh was not settled: {rounds} rounds, other frames {moved}")
    out["settled_round"] = (mesh.fabric.bytes_sent - b0) / rounds
    out["settled_rounds"] = rounds
    await mesh.close()
    return out


_QUILT_KINDS = {1: "delta", 2: "ack", 3: "resend_request", 4: "digest", 5: "full_state", 6: "frontier",
                7: "summary", 8: "difference"}


def _quilt_kind(data: bytes) -> str:
    # payload = mux tag, frame version, frame kind, ...
    return _QUILT_KINDS.get(data[2], "other") if len(data) > 2 else "other"


async def _converged(quilters: list[Quilter[Any]], limit: float = 120.0) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 < limit:
        if len({q.core.state_digest() for q in quilters}) == 1:
            return loop.time() - t0
        await asyncio.sleep(0.05)
    raise RuntimeError("replicas did not converge after the churn healed")


async def measure_churn(n: int, peers: int, mutations: int, seed: int) -> dict[str, Any]:
    """Repair bytes after a partition and after a crash-restart, on an ORMap board of ``n`` entries."""
    replica = replica_id("peer-1", INCARNATION)
    state = build_state("ormap", n, replica)
    mesh = await start_mesh(state, peers, seed)
    fabric = mesh.fabric
    fabric.classify = _quilt_kind
    names = [f"peer-{i + 1}" for i in range(peers)]
    writer = mesh.quilters[0]
    out: dict[str, Any] = {"full_state_bytes": len(encoded_bytes(state))}

    def window() -> tuple[int, dict[str, int]]:
        return fabric.bytes_sent, dict(fabric.bytes_by_kind)

    def since(mark: tuple[int, dict[str, int]]) -> dict[str, Any]:
        kinds = {k: v - mark[1].get(k, 0) for k, v in fabric.bytes_by_kind.items() if v - mark[1].get(k, 0)}
        return {"bytes": fabric.bytes_sent - mark[0], "by_kind": dict(sorted(kinds.items()))}

    # -- partition: peer-N misses more batches than one resend covers ------------------------------
    cut = names[-1]
    fabric.isolate(cut)
    _, inverse = mutator("ormap", "put", n, replica)
    put, _ = mutator("ormap", "put", n, replica)
    for j in range(mutations):
        writer.mutate(put(j))
        await asyncio.sleep(0.002)  # one batch each
    for j in range(mutations):
        writer.mutate(inverse(j))  # and back to n entries, so the board size stays n
        await asyncio.sleep(0.002)
    mark = window()
    fabric.heal()
    seconds = await _converged(mesh.quilters)
    out["partition"] = since(mark) | {"seconds": round(seconds, 2), "batches_missed": 2 * mutations}
    # -- restart: peer-2 crashes, comes back empty under a new incarnation -------------------------
    victim = 1
    await mesh.quilters[victim].close()
    fabric.crash(names[victim])
    await asyncio.sleep(2.0)
    mark = window()
    seam = fabric.join(names[victim])
    mux = MuxSeam(seam)
    fresh: ORMap[LWWRegister] = ORMap(LWWRegister)
    q = Quilter(mux.channel(CHANNEL_TAG), fresh, stream=replica_id(names[victim], INCARNATION + 1),
                config=QuilterConfig(), rng=random.Random(seed * 1000 + 99))
    mesh.quilters[victim] = await q.start()
    mesh.muxes[victim] = mux
    seconds = await _converged(mesh.quilters)
    restart = since(mark)
    out["restart"] = restart | {"seconds": round(seconds, 2),
                                "over_full_state": round(restart["bytes"] / out["full_state_bytes"], 2)}
    await mesh.close()
    return out


def run_once(kind: str, n: int, mutations: int, burst: int, peers: int, seed: int) -> dict[str, Any]:
    return run_virtual(measure(kind, n, mutations, burst, peers, seed))


def med(xs: list[float], nd: int = 1) -> float:
    return round(statistics.median(xs), nd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,10000,100000", help="comma-separated state sizes")
    ap.add_argument("--mutations", type=int, default=200, help="single mutations per op and size")
    ap.add_argument("--burst", type=int, default=100,
                    help="mutations in the coalesced burst (at most the state size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peers", type=int, default=3)
    ap.add_argument("--churn-peers", type=int, default=4, help="peers in the churn case")
    ap.add_argument("--churn-mutations", type=int, default=300,
                    help="mutations a partitioned peer misses (twice as many batches: puts, then removes)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, one repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.mutations, args.burst, args.repeats = "10,100", 10, 10, 1
        args.churn_mutations = 150
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if not sizes or min(sizes) < 1 or args.mutations < 1 or args.burst < 1 or args.repeats < 1 or args.peers < 2:
        ap.error("sizes, mutations, burst and repeats must be >= 1 and peers >= 2")
    if args.churn_peers < 3 or args.churn_mutations < 1:
        ap.error("churn-peers must be >= 3 and churn-mutations >= 1")
    load_before = os.getloadavg()[0]
    t_start = time.perf_counter()
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    churn_samples: dict[int, list[dict[str, Any]]] = {}
    for r in range(args.repeats):  # interleaved: every size and kind once per repeat
        for kind in OPS:
            for n in sizes:
                samples.setdefault((kind, n), []).append(
                    run_once(kind, n, args.mutations, args.burst, args.peers, seed=1 + r))
        for n in sizes:
            churn_samples.setdefault(n, []).append(
                run_virtual(measure_churn(n, args.churn_peers, args.churn_mutations, seed=1 + r)))
    churn: dict[str, Any] = {"peers": args.churn_peers, "mutations_missed": 2 * args.churn_mutations}
    for case in ("partition", "restart"):
        churn[f"{case}_repair_bytes"] = {str(n): med([s[case]["bytes"] for s in churn_samples[n]], 0) for n in sizes}
        churn[f"{case}_by_kind"] = {str(n): churn_samples[n][0][case]["by_kind"] for n in sizes}
    churn["restart_over_full_state"] = {str(n): med([s["restart"]["over_full_state"] for s in churn_samples[n]], 2)
                                        for n in sizes}
    part = list(churn["partition_repair_bytes"].values())
    churn["partition_flatness_max_over_min"] = round(max(part) / max(1, min(part)), 3)

    per_mutation: dict[str, dict[str, float]] = {}
    coalesced: dict[str, dict[str, float]] = {}
    frames: dict[str, dict[str, float]] = {}
    flatness: dict[str, float] = {}
    settled: dict[str, dict[str, float]] = {}
    full: dict[str, dict[str, int]] = {}
    for kind, ops in OPS.items():
        for op in ops:
            name = f"{kind}_{op}"
            per_mutation[name] = {str(n): med([s[op]["per_mutation"] for s in samples[(kind, n)]]) for n in sizes}
            coalesced[name] = {str(n): med([s[op]["coalesced"] for s in samples[(kind, n)]]) for n in sizes}
            frames[name] = {str(n): med([s[op]["delta_frame"] for s in samples[(kind, n)]]) for n in sizes}
            vals = list(per_mutation[name].values())
            flatness[name] = round(max(vals) / min(vals), 3)
        settled[kind] = {str(n): med([s["settled_round"] for s in samples[(kind, n)]]) for n in sizes}
        full[kind] = {str(n): samples[(kind, n)][0]["full_state_bytes"] for n in sizes}

    all_settled = [v for d in settled.values() for v in d.values()]
    ours_round = round(statistics.median(all_settled), 1)
    big = max(sizes)
    line: dict[str, Any] = {
        "bench": "crdt_sync",
        "ours": ours_round,
        "peer": REF_SETTLED_ROUND[0],
        "peer_range": list(REF_SETTLED_ROUND),
        "peer_name": "kuilt Quilter (reference report §4.6/§5.4, not re-measured)",
        "ratio": round(ours_round / REF_SETTLED_ROUND[0], 3),
        "unit": "bytes per settled anti-entropy round (headline); per-mutation figures in bytes on all links",
        "runs": args.repeats,
        "peers": args.peers,
        "sizes": sizes,
        "mutations": args.mutations,
        "burst": args.burst,
        "transport": "MemoryFabric payload bytes, 1-byte mux tag included, TCP's 11-byte frame header not",
        "per_mutation": per_mutation,
        "per_mutation_coalesced": coalesced,
        "delta_frame_bytes": frames,
        "flatness_max_over_min": flatness,
        "flat": all(f <= 1.25 for f in flatness.values()),
        "settled_round_bytes": settled,
        "settled_round_ref": list(REF_SETTLED_ROUND),
        "full_state_bytes": full,
        "full_state_ref_100k": REF_FULL_STATE_100K,
        "churn": churn,
        f"full_state_over_settled_round_{big}": {k: round(full[k][str(big)] / settled[k][str(big)]) for k in OPS},
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "seconds": round(time.perf_counter() - t_start, 1),
        "quick": args.quick,
    }
    print(json.dumps(line, sort_keys=False))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
